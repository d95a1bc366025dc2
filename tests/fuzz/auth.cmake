# Smarthost (issue 12): the auth_file and sender_relayhost parsers, and
# the SMTP AUTH parsers (EHLO's AUTH list, 334 challenges, base64).
add_fuzzer(fuzz_cfg_auth ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_cfg_auth.c rq_cfg)
add_fuzzer(fuzz_smtp_auth ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_smtp_auth.c rq_smtp)
