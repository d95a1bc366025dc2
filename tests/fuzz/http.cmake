# The HTTP listener's parsers and writers of untrusted text.
add_fuzzer(fuzz_http ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_http.c rq_http)
if(RELAYQ_FUZZ)
  target_include_directories(fuzz_http PRIVATE ${PROJECT_SOURCE_DIR}/http)
endif()
