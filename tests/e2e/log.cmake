# Log lines cannot be forged (issue 10, item 7).
add_e2e(e2e_log_escape ${CMAKE_CURRENT_LIST_DIR}/test_log_escape.py 60)
