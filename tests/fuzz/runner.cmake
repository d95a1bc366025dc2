# The runner's parser: the xtext decoder of ENVID/ORCPT.
add_fuzzer(fuzz_runner_xtext ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_runner_xtext.c
  rq_runner)
