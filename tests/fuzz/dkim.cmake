# DKIM signing (issue 17): the dkim_key_table parser.
add_fuzzer(fuzz_cfg_dkim ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_cfg_dkim.c rq_cfg)
