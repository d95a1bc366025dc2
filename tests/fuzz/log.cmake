# The log line escaper (issue 10, item 7).
add_fuzzer(fuzz_log_escape ${CMAKE_CURRENT_LIST_DIR}/fuzz_log_escape.c rq_cfg)
