# libFuzzer targets for the smtp client's parsers (owner: smtp).
add_fuzzer(fuzz_smtp_reply fuzz_smtp_reply.c rq_smtp)
add_fuzzer(fuzz_smtp_ehlo fuzz_smtp_ehlo.c rq_smtp rq_test)
