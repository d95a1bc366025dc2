# The machine's own MTA (issue 13): identity, aliases, sender map,
# sendmail -bs/-bv/-bi, flush and the network-up hook.
add_e2e(e2e_mta ${CMAKE_CURRENT_LIST_DIR}/test_mta.py 300)
