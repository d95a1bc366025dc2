# Resources (issue 10, item 9): fd shortage, map size against message size.
add_e2e(e2e_resources ${CMAKE_CURRENT_LIST_DIR}/test_resources.py 240)
