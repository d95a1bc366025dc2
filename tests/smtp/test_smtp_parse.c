/*
 * test_smtp_parse.c - table-driven unit tests for the smtp module's pure
 * functions: the reply parser, the EHLO keyword parser and the DATA
 * encoder (CRLF and dot-stuffing), also against a byte-at-a-time
 * reference over generated bodies, and the 8-bit scan.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "body_ref.h"
#include "rqtest.h"
#include "smtp_int.h"

struct reply_case {
	const char *in;
	enum smtp_parse_result want;
	int code;
	const char *status;
	const char *text;
	size_t used; /* 0: all of in */
};

static const struct reply_case reply_cases[] = {
	{ "220 mx.example.org ESMTP\r\n", SMTP_PARSE_OK, 220, "",
	    "mx.example.org ESMTP", 0 },
	{ "250 2.1.0 Ok\r\n", SMTP_PARSE_OK, 250, "2.1.0", "Ok", 0 },
	{ "550 5.1.1 <u@x>: Recipient address rejected\r\n", SMTP_PARSE_OK, 550,
	    "5.1.1", "<u@x>: Recipient address rejected", 0 },
	/* a status whose class does not match the code is text */
	{ "550 4.1.1 no\r\n", SMTP_PARSE_OK, 550, "", "4.1.1 no", 0 },
	{ "452 4.5.3 Too many recipients\r\n", SMTP_PARSE_OK, 452, "4.5.3",
	    "Too many recipients", 0 },
	{ "250-mx\r\n250-PIPELINING\r\n250 SIZE 1000\r\n", SMTP_PARSE_OK, 250,
	    "", "mx PIPELINING SIZE 1000", 0 },
	{ "550-5.7.1 first\r\n550-5.7.1 second\r\n550 5.7.1 third\r\n",
	    SMTP_PARSE_OK, 550, "5.7.1", "first second third", 0 },
	{ "250\r\n", SMTP_PARSE_OK, 250, "", "", 0 },
	{ "250 ok\n", SMTP_PARSE_OK, 250, "", "ok", 0 },
	{ "250 ok\r\n250 next\r\n", SMTP_PARSE_OK, 250, "", "ok", 8 },
	{ "354 go ahead\r\n", SMTP_PARSE_OK, 354, "", "go ahead", 0 },
	{ "250 a\tb\x01"
	  "c\r\n",
	    SMTP_PARSE_OK, 250, "", "a b c", 0 },
	{ "250 2.0.0\r\n", SMTP_PARSE_OK, 250, "2.0.0", "", 0 },
	{ "", SMTP_PARSE_MORE, 0, "", "", 0 },
	{ "250 partial", SMTP_PARSE_MORE, 0, "", "", 0 },
	{ "250-first\r\n250 sec", SMTP_PARSE_MORE, 0, "", "", 0 },
	{ "250-first\r\n", SMTP_PARSE_MORE, 0, "", "", 0 },
	{ "hello\r\n", SMTP_PARSE_BAD, 0, "", "", 0 },
	{ "25\r\n", SMTP_PARSE_BAD, 0, "", "", 0 },
	{ "2500 x\r\n", SMTP_PARSE_BAD, 0, "", "", 0 },
	{ "650 x\r\n", SMTP_PARSE_BAD, 0, "", "", 0 },
	{ "150 x\r\n", SMTP_PARSE_BAD, 0, "", "", 0 },
	{ "25a x\r\n", SMTP_PARSE_BAD, 0, "", "", 0 },
	{ "250-a\r\n251 b\r\n", SMTP_PARSE_BAD, 0, "", "", 0 },
	{ "250_x\r\n", SMTP_PARSE_BAD, 0, "", "", 0 },
	{ "\r\n", SMTP_PARSE_BAD, 0, "", "", 0 },
};

/* Checks the reply parser against the table. */
static void
test_reply_table(void)
{
	size_t i;

	for (i = 0; i < sizeof(reply_cases) / sizeof(reply_cases[0]); i++) {
		const struct reply_case *c = &reply_cases[i];
		struct smtp_reply r;
		size_t used = 99;
		enum smtp_parse_result got;

		got = smtp_reply_parse(c->in, strlen(c->in), &r, &used);
		if (got != c->want)
			fprintf(stderr, "case %zu: %s\n", i, c->in);
		CHECK_INT(got, c->want);
		if (got != SMTP_PARSE_OK) {
			CHECK_INT(used, 0);
			continue;
		}
		CHECK_INT(r.code, c->code);
		CHECK_STR(r.status, c->status);
		CHECK_STR(r.text, c->text);
		CHECK_INT(used, c->used ? c->used : strlen(c->in));
	}
}

/* Checks the bounds: long lines, many lines, endless input. */
static void
test_reply_bounds(void)
{
	char *buf = xmalloc(200000);
	struct smtp_reply r;
	size_t used, n;
	int i;

	/* a long line is fine (its text truncated): a 250 stays a 250 */
	memset(buf, 'x', 5000);
	memcpy(buf, "250 2.0.0 ", 10);
	memcpy(buf + 4998, "\r\n", 2);
	CHECK_INT(smtp_reply_parse(buf, 5000, &r, &used), SMTP_PARSE_OK);
	CHECK_INT(used, 5000);
	CHECK_INT(r.code, 250);
	CHECK_STR(r.status, "2.0.0");
	CHECK(strlen(r.text) < sizeof(r.text));
	/* exactly SMTP_REPLY_BYTES_MAX bytes with CRLF is fine */
	memset(buf, 'x', SMTP_REPLY_BYTES_MAX);
	memcpy(buf, "250 ", 4);
	memcpy(buf + SMTP_REPLY_BYTES_MAX - 2, "\r\n", 2);
	CHECK_INT(smtp_reply_parse(buf, SMTP_REPLY_BYTES_MAX, &r, &used),
	    SMTP_PARSE_OK);
	CHECK_INT(used, SMTP_REPLY_BYTES_MAX);
	/* one more byte is too long, even before the line ends */
	memset(buf, 'x', SMTP_REPLY_BYTES_MAX + 1);
	memcpy(buf, "250 ", 4);
	CHECK_INT(smtp_reply_parse(buf, SMTP_REPLY_BYTES_MAX, &r, &used),
	    SMTP_PARSE_TOO_LONG);
	CHECK_INT(smtp_reply_parse(buf, SMTP_REPLY_BYTES_MAX - 1, &r, &used),
	    SMTP_PARSE_MORE);
	/* so is a multi-line reply that ends past the bound */
	memcpy(buf, "250-", 4);
	memcpy(buf + 1000, "\r\n250-", 6);
	CHECK_INT(smtp_reply_parse(buf, SMTP_REPLY_BYTES_MAX + 1, &r, &used),
	    SMTP_PARSE_TOO_LONG);
	/* an endless line */
	memset(buf, 'A', 100000);
	CHECK_INT(
	    smtp_reply_parse(buf, 100000, &r, &used), SMTP_PARSE_TOO_LONG);
	/* SMTP_REPLY_LINES_MAX lines are fine, one more is not */
	for (n = 0, i = 0; i < SMTP_REPLY_LINES_MAX + 1; i++) {
		memcpy(buf + n, "250-abc\r\n", 9);
		n += 9;
	}
	memcpy(buf + n - 9 * 2 + 3, " ", 1);
	CHECK_INT(smtp_reply_parse(buf, n - 9, &r, &used), SMTP_PARSE_OK);
	CHECK_INT(r.nlines, SMTP_REPLY_LINES_MAX);
	memcpy(buf + n - 9 * 2 + 3, "-", 1);
	memcpy(buf + n - 9 + 3, " ", 1);
	CHECK_INT(smtp_reply_parse(buf, n, &r, &used), SMTP_PARSE_TOO_LONG);
	free(buf);
}

struct ehlo_case {
	const char *in;
	bool pipelining, size, dsn, starttls, eightbit, enh;
	uint64_t size_max;
};

static const struct ehlo_case ehlo_cases[] = {
	{ "250-mx.example.org\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
	  "250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n"
	  "250 DSN\r\n",
	    true, true, true, true, true, true, 10240000 },
	{ "250 mx.example.org\r\n", false, false, false, false, false, false,
	    0 },
	/* the greeting line's words are not keywords */
	{ "250-PIPELINING DSN\r\n250 SIZE\r\n", false, true, false, false,
	    false, false, 0 },
	{ "250-x\r\n250-pipelining\r\n250 size 5\r\n", true, true, false, false,
	    false, false, 5 },
	{ "250-x\r\n250-SIZE 99999999999999999999999\r\n250 DSNX\r\n", false,
	    true, false, false, false, false, 0 },
	{ "250-x\r\n250-SIZE abc\r\n250 STARTTLSX\r\n", false, true, false,
	    false, false, false, 0 },
	{ "250-x\n250-8BITMIME\n250 STARTTLS", false, false, false, true, true,
	    false, 0 },
};

/* Checks the EHLO keyword parser against the table. */
static void
test_ehlo_table(void)
{
	size_t i;

	for (i = 0; i < sizeof(ehlo_cases) / sizeof(ehlo_cases[0]); i++) {
		const struct ehlo_case *c = &ehlo_cases[i];
		struct smtp_ehlo e;

		smtp_ehlo_parse(c->in, strlen(c->in), &e);
		CHECK_INT(e.pipelining, c->pipelining);
		CHECK_INT(e.size, c->size);
		CHECK_INT(e.size_max, c->size_max);
		CHECK_INT(e.dsn, c->dsn);
		CHECK_INT(e.starttls, c->starttls);
		CHECK_INT(e.eightbitmime, c->eightbit);
		CHECK_INT(e.enhancedstatuscodes, c->enh);
	}
}

struct body_case {
	const char *in;
	const char *out;
};

static const struct body_case body_cases[] = {
	{ "a\r\nb\r\n", "a\r\nb\r\n.\r\n" },
	{ "", ".\r\n" },
	{ "a", "a\r\n.\r\n" },
	{ "a\nb\n", "a\r\nb\r\n.\r\n" },
	{ "a\rb\r", "a\r\nb\r\n.\r\n" },
	{ "a\r\r\nb", "a\r\n\r\nb\r\n.\r\n" },
	{ "a\n\rb", "a\r\n\r\nb\r\n.\r\n" },
	{ ".\r\n", "..\r\n.\r\n" },
	{ "a\r\n.\r\nMAIL FROM:<x>\r\n", "a\r\n..\r\nMAIL FROM:<x>\r\n.\r\n" },
	/* smuggling attempts: bare LF / CR around a dot */
	{ "a\n.\nb", "a\r\n..\r\nb\r\n.\r\n" },
	{ "a\r\n.\nb", "a\r\n..\r\nb\r\n.\r\n" },
	{ "a\n.\r\nb", "a\r\n..\r\nb\r\n.\r\n" },
	{ "a\r.\rb", "a\r\n..\r\nb\r\n.\r\n" },
	{ "..x\r\n.", "...x\r\n..\r\n.\r\n" },
	{ "x.\r\n", "x.\r\n.\r\n" },
};

/* Encodes IN in blocks of BLK bytes; returns the malloc'd output. */
static char *
body_encode_all(const char *in, size_t blk, size_t *outlen)
{
	size_t len = strlen(in), off = 0, o = 0, cap = 64 + 4 * len;
	char *out = xmalloc(cap);
	bool bol = true;

	while (off <= len) {
		size_t n = smtp_body_encode(in, len, &off, &bol, out + o,
		    blk < cap - o ? blk : cap - o);

		o += n;
		if (n == 0 && off <= len)
			abort();
	}
	*outlen = o;
	out[o] = '\0';
	return out;
}

/* Checks the DATA encoder, whole and in small blocks. */
static void
test_body_table(void)
{
	size_t i, blk, n;

	for (i = 0; i < sizeof(body_cases) / sizeof(body_cases[0]); i++) {
		for (blk = 8; blk <= 64; blk += 56) {
			char *out = body_encode_all(body_cases[i].in, blk, &n);

			CHECK_STR(out, body_cases[i].out);
			free(out);
		}
	}
	CHECK(!smtp_body_8bit("abc\r\n", 5));
	CHECK(smtp_body_8bit("ab\xc3\xa9", 4));
}

/* Bodies made of pieces (CRLF text, bare CR and LF, dots at line
 * starts, long lines, 8-bit bytes, NULs) as a seeded generator picks
 * them, each encoded in blocks of several sizes: the same bytes as the
 * reference. */
static void
test_body_generated(void)
{
	static const char *const pieces[] = { "abc", "\r\n", "\r", "\n", ".",
		"..", "\r\n.", "\n.\r", "\xc3\xa9", "x\0y",
		"0123456789012345678901234567890123456789012345678901234567" };
	static const size_t blks[] = { 8, 9, 13, 64, 100, 4096, 65536 };
	uint32_t seed = 12345;
	char *in = xmalloc(70000), *ref = xmalloc(2 * 70000 + 8);

	for (int round = 0; round < 300; round++) {
		size_t len = 0, want, n;
		size_t target = round < 200 ? (size_t)(round * 7) : 60000;

		while (len < target) {
			size_t k, pl;

			seed = seed * 1103515245u + 12345u;
			k = (seed >> 16) % (sizeof(pieces) / sizeof(pieces[0]));
			pl = k == 9 ? 3 : strlen(pieces[k]);
			if (len + pl > 70000)
				break;
			memcpy(in + len, pieces[k], pl);
			len += pl;
		}
		want = body_encode_ref(in, len, ref);
		for (size_t b = 0; b < sizeof(blks) / sizeof(blks[0]); b++) {
			size_t off = 0, o = 0, cap = 2 * len + 8;
			char *out = xmalloc(cap + blks[b]);
			bool bol = true;

			while (off <= len) {
				n = smtp_body_encode(
				    in, len, &off, &bol, out + o, blks[b]);
				if (n == 0)
					break;
				o += n;
			}
			CHECK_INT(o, want);
			CHECK(o == want && memcmp(out, ref, want) == 0);
			free(out);
		}
	}
	free(in);
	free(ref);
}

/* The 8-bit scan: one high byte anywhere (each offset of a few 64-byte
 * steps, and in the tail) is found; none, none found. */
static void
test_body_8bit(void)
{
	char buf[300];
	bool all = true;

	memset(buf, 'a', sizeof(buf));
	for (size_t len = 0; len <= sizeof(buf); len++)
		if (smtp_body_8bit(buf, len))
			all = false;
	CHECK(all);
	for (size_t at = 0; at < sizeof(buf); at++) {
		for (size_t len = at + 1; len <= sizeof(buf); len += 37) {
			buf[at] = (char)0x80;
			if (!smtp_body_8bit(buf, len) ||
			    smtp_body_8bit(buf, at))
				all = false;
			buf[at] = 'a';
		}
	}
	CHECK(all);
}

/* Checks that phase names exist for every phase. */
static void
test_phase_names(void)
{
	int p;

	for (p = 0; p < SMTP_NPHASE; p++)
		CHECK(smtp_phase_name(p) != NULL);
	CHECK_STR(smtp_phase_name(SMTP_PH_RCPT), "RCPT TO");
	CHECK_STR(smtp_phase_name(SMTP_PH_DOT), "end of DATA");
	CHECK_STR(smtp_phase_name(99), "unknown");
}

int
main(void)
{
	test_reply_table();
	test_reply_bounds();
	test_ehlo_table();
	test_body_table();
	test_body_generated();
	test_body_8bit();
	test_phase_names();
	return rqtest_done();
}
