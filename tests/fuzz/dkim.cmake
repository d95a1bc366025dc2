# DKIM signing (issue 17): the dkim_key_table parser.
add_fuzzer(fuzz_cfg_dkim ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_cfg_dkim.c rq_cfg)
# the signer's reading of a stored message: header fields, From: domain
add_fuzzer(fuzz_queue_dkim ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_queue_dkim.c
  rq_queue rq_cfg)
