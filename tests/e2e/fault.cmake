# Tests of tests/faultsmtp, the fault-injecting SMTP server (owner: fault).
add_e2e(e2e_faultsmtp ${CMAKE_CURRENT_SOURCE_DIR}/test_faultsmtp.py 240)
