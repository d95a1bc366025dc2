# Spool intake against a hostile or careless local user (issue 10).
add_e2e(e2e_intake_harden ${CMAKE_CURRENT_LIST_DIR}/test_intake_harden.py
  240)
# A burst queued ahead of slow removals; a crash while they trail (issue 18).
add_e2e(e2e_intake_slow_unlink
  ${CMAKE_CURRENT_LIST_DIR}/test_intake_slow_unlink.py 300)
