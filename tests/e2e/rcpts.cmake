# A message with 100,000 recipients: the loop stays responsive (issue 10,
# item 4).
add_e2e(e2e_rcpts ${CMAKE_CURRENT_LIST_DIR}/test_rcpts.py 300)
