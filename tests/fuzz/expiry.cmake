# expiry: the DSN builder and its header helpers over arbitrary originals.
add_fuzzer(fuzz_expiry_dsn ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_expiry_dsn.c rq_expiry)
