# Log lines cannot be forged (issue 10, item 7).
add_e2e(e2e_log_escape ${CMAKE_CURRENT_LIST_DIR}/test_log_escape.py 60)
# Syslog with a real rsyslogd, pflogsumm over its file (issue 13, items 4
# and 5).
add_e2e(e2e_syslog ${CMAKE_CURRENT_LIST_DIR}/test_syslog.py 180)
