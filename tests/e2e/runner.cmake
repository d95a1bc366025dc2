# The runner's end-to-end tests (relayq run against real servers).
add_e2e(e2e_runner ${CMAKE_CURRENT_LIST_DIR}/test_runner.py 240)
add_e2e(e2e_runner_control ${CMAKE_CURRENT_LIST_DIR}/test_runner_control.py 120)
add_e2e(e2e_runner_dns ${CMAKE_CURRENT_LIST_DIR}/test_runner_dns.py 120)
add_e2e(e2e_runner_crash ${CMAKE_CURRENT_LIST_DIR}/test_runner_crash.py 300)
add_e2e(e2e_runner_chain ${CMAKE_CURRENT_LIST_DIR}/test_runner_chain.py 240)
