# The shared mail syntax (cfg/mail_*.c): address lists and sets under
# every combination of syntax flags; xtext, NOTIFY and header field
# names.
add_fuzzer(fuzz_mail_addr ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_mail_addr.c rq_cfg)
add_fuzzer(fuzz_mail_param ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_mail_param.c
  rq_cfg)
# Local mail (issue 13): the aliases(5) parser and expansion, the sender
# map and the address spans of header rewriting.
add_fuzzer(fuzz_mail_alias ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_mail_alias.c
  rq_cfg)
add_fuzzer(fuzz_mail_map ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_mail_map.c rq_cfg)
