# The queue (issue 3): intake, bad input, commands, crash test, map full.
add_e2e(e2e_queue ${CMAKE_CURRENT_SOURCE_DIR}/test_queue.py 120)
add_e2e(e2e_queue_crash ${CMAKE_CURRENT_SOURCE_DIR}/test_queue_crash.py 240)
add_e2e(e2e_queue_mapfull ${CMAKE_CURRENT_SOURCE_DIR}/test_queue_mapfull.py
  120)
# Hardened parsing (issue 10): loops, bare CR, long lines, recipients.
add_e2e(e2e_parse_harden ${CMAKE_CURRENT_SOURCE_DIR}/test_parse_harden.py
  600)
# A file found again by a rescan while in flight is queued once (issue 11).
add_e2e(e2e_intake_race ${CMAKE_CURRENT_SOURCE_DIR}/test_intake_race.py 300)
# mailq in postqueue -p's layout, postqueue -j's names, delete - (issue 13,
# item 8).
add_e2e(e2e_mailq ${CMAKE_CURRENT_SOURCE_DIR}/test_mailq.py 180)
