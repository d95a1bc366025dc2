# The cluster (issue 16): three relayq nodes sharing limits and host
# status through a real redis-server on 127.0.0.1.
add_e2e(e2e_cluster ${CMAKE_CURRENT_LIST_DIR}/test_cluster.py 900)
