# TLS policy of direct delivery (issue 17): DANE against a DNSSEC-signed
# zone behind a validating unbound (nsd, unbound, ldnsutils).
add_e2e(e2e_dane ${CMAKE_CURRENT_LIST_DIR}/test_dane.py 180)
