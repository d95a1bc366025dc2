# DKIM signing at intake (issue 17): signatures checked by python3-dkim.
add_e2e(e2e_dkim ${CMAKE_CURRENT_SOURCE_DIR}/test_dkim.py 180)
