# The queue's parsers: a dropped message's header section, pickup
# envelope and RFC 5322 address lists.
add_fuzzer(fuzz_queue_parse ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_queue_parse.c
  rq_queue rq_cfg)
add_fuzzer(fuzz_queue_addr ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_queue_addr.c
  rq_queue rq_cfg)
# The stored body record's decoder (what a delivery reads).
add_fuzzer(fuzz_queue_body ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_queue_body.c
  rq_queue rq_cfg)
