# Per-destination concurrency (issue 18 item 5): the runner against a
# receiver with a small listen backlog that accepts slowly.
add_e2e(e2e_runner_conc ${CMAKE_CURRENT_LIST_DIR}/test_runner_conc.py 180)
