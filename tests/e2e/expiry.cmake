# Expiry (issue 6): DSN parsing of the golden notices, and end-to-end
# warn/return/bounce tests against the fault server, split in two so that
# ctest -j runs them side by side (each ~30-40 s).
add_e2e(e2e_expiry_dsn_parse ${CMAKE_CURRENT_SOURCE_DIR}/test_expiry_dsn_parse.py 60)
foreach(part
    "times:test_per_class_warn_and_return,test_null_sender_and_notify_never,test_precedence_bulk_no_warning,test_hold_prevents_expiry"
    "rules:test_5xx_bounce_at_once_mixed_recipients,test_ret_full_and_size_cap,test_success_notice,test_relayed_notice,test_relayq_bounce,test_undeliverable_notice_expires_silently,test_crash_neither_lost_nor_twice")
  string(REPLACE ":" ";" _p "${part}")
  list(GET _p 0 _name)
  list(GET _p 1 _tests)
  string(REPLACE "," ";" _tests "${_tests}")
  add_test(NAME e2e_expiry_${_name} COMMAND ${SYS_PYTHON3}
    ${CMAKE_CURRENT_SOURCE_DIR}/test_expiry_e2e.py ${_tests})
  set_tests_properties(e2e_expiry_${_name} PROPERTIES
    ENVIRONMENT "${RELAYQ_E2E_ENV}" TIMEOUT 300)
endforeach()
