# Smarthosts (issue 12): SMTP AUTH, implicit TLS, client certificates and
# fingerprints through the smtp client (smtpc against aiosmtpd); the
# daemon with sender routes, fallback relays and credential files; a real
# MTA (exim4, unpacked under the build directory) as the smarthost.
add_e2e(e2e_smtp_auth ${CMAKE_CURRENT_LIST_DIR}/test_smtp_auth.py 240)
add_e2e(e2e_runner_auth ${CMAKE_CURRENT_LIST_DIR}/test_runner_auth.py 300)
add_e2e(e2e_exim_auth ${CMAKE_CURRENT_LIST_DIR}/test_exim_auth.py 300)
