# libFuzzer targets for the runner's parsers (owner: runner).
add_fuzzer(fuzz_runner_tlsa fuzz_runner_tlsa.c rq_runner)
if(RELAYQ_FUZZ)
  target_include_directories(fuzz_runner_tlsa PRIVATE ${PROJECT_SOURCE_DIR}/runner)
endif()
add_fuzzer(fuzz_runner_sts fuzz_runner_sts.c rq_runner)
if(RELAYQ_FUZZ)
  target_include_directories(fuzz_runner_sts PRIVATE ${PROJECT_SOURCE_DIR}/runner)
endif()
