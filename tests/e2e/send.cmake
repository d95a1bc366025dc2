add_e2e(e2e_send ${CMAKE_CURRENT_SOURCE_DIR}/test_send.py 120)
