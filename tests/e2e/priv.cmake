# Privileges (issue 10): no root action through a user's path, a private
# spool.  Root-only; skipped otherwise.
add_e2e(e2e_privileges ${CMAKE_CURRENT_LIST_DIR}/test_privileges.py 240)
