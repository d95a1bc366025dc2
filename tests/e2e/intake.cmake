# Spool intake against a hostile or careless local user (issue 10).
add_e2e(e2e_intake_harden ${CMAKE_CURRENT_LIST_DIR}/test_intake_harden.py
  240)
