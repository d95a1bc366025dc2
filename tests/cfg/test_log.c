/*
 * test_log.c - table-driven unit tests for log_line_escape(): what a log
 * line may carry of a value from outside (a file name, an address, a
 * reply, header text), and that nothing can end the line or forge
 * another; and for the syslog_facility names (log_facility_parse(),
 * log_facility_name()).
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>

#include "cfg.h"
#include "rqtest.h"

static const struct {
	const char *in;
	size_t len; /* 0: strlen(in) */
	const char *want;
} cases[] = {
	{ "plain text, <a@b.test>: 250 2.0.0 Ok", 0,
	    "plain text, <a@b.test>: 250 2.0.0 Ok" },
	{ "", 0, "" },
	/* the forged line of the issue: a newline and a fake status */
	{ "m\nNov 29 03:07:40 h relayq/smtp[1]: X: to=<a@b>, status=sent", 0,
	    "m?Nov 29 03:07:40 h relayq/smtp[1]: X: to=<a@b>, status=sent" },
	{ "a\rb", 0, "a?b" },
	{ "a\r\nb", 0, "a??b" },
	{ "tab\there", 0, "tab?here" },
	{ "nul\0x", 5, "nul?x" },
	{ "\x01\x1b[31mred\x1b[0m", 0, "??[31mred?[0m" },
	{ "del\x7f", 0, "del?" },
	{ "space ~ tilde", 0, "space ~ tilde" },
	/* valid UTF-8 stays */
	{ "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa7", 0,
	    "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa7" },
	/* C1 controls: a lone byte, or UTF-8 U+0085 (NEL), U+009B (CSI) */
	{ "a\x85z", 0, "a?z" },
	{ "a\xc2\x85z\xc2\x9bz", 0, "a?z?z" },
	/* U+2028 LINE SEPARATOR, U+2029 PARAGRAPH SEPARATOR */
	{ "a\xe2\x80\xa8z\xe2\x80\xa9z", 0, "a?z?z" },
	/* invalid UTF-8: a lone continuation, a truncated sequence, an
	 * overlong '/', a surrogate, beyond U+10FFFF, 0xff */
	{ "a\x80z", 0, "a?z" },
	{ "a\xe2\x82z", 0, "a??z" },
	{ "a\xc0\xafz", 0, "a??z" },
	{ "a\xed\xa0\x80z", 0, "a???z" },
	{ "a\xf4\x90\x80\x80z", 0, "a????z" },
	{ "a\xffz", 0, "a?z" },
	/* a sequence cut at the end of the buffer */
	{ "end\xe2\x82", 0, "end??" },
};

static void
test_escape(void)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t len = cases[i].len ? cases[i].len : strlen(cases[i].in);
		char *buf = xmalloc(len + 1);
		size_t n;

		memcpy(buf, cases[i].in, len);
		n = log_line_escape(buf, len);
		buf[n] = '\0';
		CHECK(n <= len);
		CHECK_STR(buf, cases[i].want);
		for (size_t j = 0; j < n; j++)
			CHECK((unsigned char)buf[j] >= 0x20 &&
			    (unsigned char)buf[j] != 0x7f);
		free(buf);
	}
}

/* Every byte value, alone and after a valid lead byte: never a control
 * byte out, never longer than in. */
static void
test_all_bytes(void)
{
	for (int b = 0; b < 256; b++) {
		char in[4] = { 'x', (char)b, (char)0xc2, (char)b };
		char buf[4];
		size_t n;

		memcpy(buf, in, 4);
		n = log_line_escape(buf, 4);
		CHECK(n <= 4);
		for (size_t j = 0; j < n; j++)
			CHECK((unsigned char)buf[j] >= 0x20 &&
			    (unsigned char)buf[j] != 0x7f);
	}
}

static const struct {
	const char *name;
	int code; /* -1: refused */
} facilities[] = {
	{ "mail", LOG_MAIL },
	{ "MAIL", LOG_MAIL },
	{ "daemon", LOG_DAEMON },
	{ "user", LOG_USER },
	{ "local0", LOG_LOCAL0 },
	{ "local7", LOG_LOCAL7 },
	{ "local8", -1 },
	{ "kern", -1 },
	{ "auth", -1 },
	{ "", -1 },
	{ "mai", -1 },
	{ "mailx", -1 },
};

/* Names in, codes out, and each code's name back. */
static void
test_facility(void)
{
	for (size_t i = 0; i < sizeof(facilities) / sizeof(facilities[0]);
	     i++) {
		const char *n = facilities[i].name;
		int code = log_facility_parse(n, strlen(n));

		CHECK(code == facilities[i].code);
		if (code >= 0)
			CHECK(strcasecmp(log_facility_name(code), n) == 0);
	}
	/* LEN bounds the name: the first 4 bytes of "mailx" are "mail" */
	CHECK(log_facility_parse("mailx", 4) == LOG_MAIL);
	CHECK_STR(log_facility_name(LOG_KERN), "");
}

int
main(void)
{
	test_escape();
	test_all_bytes();
	test_facility();
	return rqtest_done();
}
