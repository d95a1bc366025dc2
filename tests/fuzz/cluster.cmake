# The cluster's address parser (issue 16): cluster_redis never names a
# host the daemon would have to resolve.
add_fuzzer(fuzz_cfg_redis ${CMAKE_CURRENT_LIST_DIR}/fuzz_cfg_redis.c rq_cfg)
