# TLS policy of direct delivery (issue 17): DANE against a DNSSEC-signed
# zone behind a validating unbound (nsd, unbound, ldnsutils); MTA-STS with
# an HTTPS policy server (python3 http.server) and a test CA.
add_e2e(e2e_dane ${CMAKE_CURRENT_LIST_DIR}/test_dane.py 180)
add_e2e(e2e_mta_sts ${CMAKE_CURRENT_LIST_DIR}/test_mta_sts.py 180)
add_e2e(e2e_tlsrpt ${CMAKE_CURRENT_LIST_DIR}/test_tlsrpt.py 180)
