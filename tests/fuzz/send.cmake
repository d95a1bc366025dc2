# send: the address, -f, -N and xtext parsers of tools/cmd_send.c.
add_fuzzer(fuzz_send_addr ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_send_addr.c
  rq_queue rq_cfg)
if(RELAYQ_FUZZ)
  target_include_directories(fuzz_send_addr PRIVATE ${PROJECT_SOURCE_DIR}/tools)
endif()
