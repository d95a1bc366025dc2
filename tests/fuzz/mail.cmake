# The shared mail syntax (cfg/mail_*.c): address lists and sets under
# every combination of syntax flags; xtext, NOTIFY and header field
# names.
add_fuzzer(fuzz_mail_addr ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_mail_addr.c rq_cfg)
add_fuzzer(fuzz_mail_param ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_mail_param.c
  rq_cfg)
