# End-to-end tests of the smtp client (owner: smtp), driven by
# tests/smtp/smtpc against faultsmtp, smtp-sink and aiosmtpd.
add_e2e(e2e_smtp_fault ${CMAKE_CURRENT_SOURCE_DIR}/test_smtp_fault.py 300)
add_e2e(e2e_smtp_sink ${CMAKE_CURRENT_SOURCE_DIR}/test_smtp_sink.py 120)
add_e2e(e2e_smtp_tls ${CMAKE_CURRENT_SOURCE_DIR}/test_smtp_tls.py 120)
