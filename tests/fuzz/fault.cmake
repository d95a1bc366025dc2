# libFuzzer target for the faultsmtp script parser (owner: fault).
add_fuzzer(fuzz_fault_script
  ${PROJECT_SOURCE_DIR}/tests/faultsmtp/fuzz_fault_script.c faultsmtp_script)
