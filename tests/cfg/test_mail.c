/*
 * test_mail.c - unit tests of the shared mail syntax (cfg/mail_*.c),
 * table-driven: address lists in intake's syntax and in `relayq send`'s
 * (each MAIL_ADDR_* flag shown one way and the other), the null sender,
 * the address set as SMTP compares addresses, xtext (the runner's and the
 * DSN builder's decoding, send's and the client's encoding), NOTIFY
 * lists, and header field names.
 */
#include <stdlib.h>
#include <string.h>

#include "cfg.h"
#include "mail.h"
#include "rqtest.h"

/* The syntax flags of the two callers (queue/queue_parse.c and
 * tools/cmd_send.c pass these). */
#define INTAKE MAIL_ADDR_WORD_LIMIT
#define SEND \
	(MAIL_ADDR_LEX_FIRST | MAIL_ADDR_LAX_QUOTES | \
	    MAIL_ADDR_PLAIN_LITERAL | MAIL_ADDR_STRICT_DOTS | \
	    MAIL_ADDR_SOLID_DOMAIN | MAIL_ADDR_FLAT_GROUPS | \
	    MAIL_ADDR_QUALIFY_NO_AT)
#define SENDER (SEND | MAIL_ADDR_ONE)

/* Collects the addresses found, joined by " ". */
struct got {
	char s[4096];
	size_t n;
};

static enum mail_addr_result
collect(void *arg, const char *addr)
{
	struct got *g = arg;

	if (g->n++ > 0)
		strcat(g->s, " ");
	strcat(g->s, addr[0] != '\0' ? addr : "<>");
	return MAIL_ADDR_OK;
}

static const struct {
	unsigned flags;
	size_t max_len;
	const char *in;
	enum mail_addr_result want;
	const char *addrs; /* joined by " "; "<>" for the null sender */
} lists[] = {
	/* the grammar both share */
	{ INTAKE, 511, "Joe Q. Public <john.q.public@example.com>",
	    MAIL_ADDR_OK, "john.q.public@example.com" },
	{ SEND, 254, "Joe Q. Public <john.q.public@example.com>", MAIL_ADDR_OK,
	    "john.q.public@example.com" },
	{ INTAKE, 511, "A Group:Ed <c@a.test>,joe@where.test;, x@y.test",
	    MAIL_ADDR_OK, "c@a.test joe@where.test x@y.test" },
	{ SEND, 254, "A Group:Ed <c@a.test>,joe@where.test;, x@y.test",
	    MAIL_ADDR_OK, "c@a.test joe@where.test x@y.test" },
	{ INTAKE, 511, "<@route.test,@other.test:user@dom.test>", MAIL_ADDR_OK,
	    "user@dom.test" },
	{ SEND, 254, "Pete(A nice \\) chap) <pete(his)@silly.test(host)>",
	    MAIL_ADDR_OK, "pete@silly.test" },
	{ INTAKE, 511, "root, \"john doe\"@example.com", MAIL_ADDR_OK,
	    "root@q.test \"john doe\"@example.com" },
	{ SEND, 254, "root, a..b@c", MAIL_ADDR_OK, "root@q.test a..b@c" },
	{ INTAKE, 511, "x@y.test,\r\n z@w.test, x@y.test", MAIL_ADDR_OK,
	    "x@y.test z@w.test x@y.test" },
	{ INTAKE, 511, "a@b.test; c@d.test", MAIL_ADDR_BAD, "a@b.test" },
	{ SEND, 254, "a@b.test; c@d.test", MAIL_ADDR_BAD, "a@b.test" },
	{ INTAKE, 511, "<>", MAIL_ADDR_BAD, "" },
	{ SEND, 254, "<>", MAIL_ADDR_BAD, "" },
	{ INTAKE, 10, "abcdefgh@ij", MAIL_ADDR_TOOLONG, "" },
	{ SEND, 10, "abcdefgh@ij", MAIL_ADDR_TOOLONG, "" },
	{ INTAKE, 511, "a\"b\"@c", MAIL_ADDR_BAD, "" },
	/* MAIL_ADDR_LEX_FIRST: a lexical error anywhere comes first */
	{ INTAKE, 10, "abcdefgh@ij, (unterminated", MAIL_ADDR_TOOLONG, "" },
	{ SEND, 10, "abcdefgh@ij, (unterminated", MAIL_ADDR_BAD, "" },
	{ INTAKE, 511, "a@b, (unterminated", MAIL_ADDR_BAD, "a@b" },
	{ SEND, 254, "a@b, (unterminated", MAIL_ADDR_BAD, "" },
	/* MAIL_ADDR_LAX_QUOTES: a line break in quotes, escaped or not */
	{ INTAKE, 511, "\"a\\\r\n b\"@c", MAIL_ADDR_BAD, "" },
	{ SEND, 254, "\"a\\\r\n b\"@c", MAIL_ADDR_OK, "\"a\\ b\"@c" },
	{ INTAKE, 511, "\"a\nb\"@c", MAIL_ADDR_BAD, "" },
	{ SEND, 254, "\"a\nb\"@c", MAIL_ADDR_OK, "\"ab\"@c" },
	{ INTAKE, 511, "a@b\rc.test", MAIL_ADDR_BAD, "a@b" },
	{ SEND, 254, "a@b\rc.test", MAIL_ADDR_BAD, "a@b" },
	/* ... and a control byte refuses the address after its length */
	{ INTAKE, 5, "\"\x01\"@abcdef", MAIL_ADDR_BAD, "" },
	{ SEND, 5, "\"\x01\"@abcdef", MAIL_ADDR_TOOLONG, "" },
	{ SEND, 254, "\"\x01\"@abcdef", MAIL_ADDR_BAD, "" },
	/* MAIL_ADDR_PLAIN_LITERAL */
	{ INTAKE, 511, "a@[1[2]", MAIL_ADDR_OK, "a@[1[2]" },
	{ SEND, 254, "a@[1[2]", MAIL_ADDR_BAD, "" },
	/* no blank in a literal, in either syntax */
	{ INTAKE, 511, "a@[1 2]", MAIL_ADDR_BAD, "" },
	{ SEND, 254, "a@[1\t2]", MAIL_ADDR_BAD, "" },
	{ INTAKE, 511, "x@[$% <@@e [$]", MAIL_ADDR_BAD, "" },
	{ INTAKE, 511, "a@[10.0.0.1], b@[IPv6:::1]", MAIL_ADDR_OK,
	    "a@[10.0.0.1] b@[IPv6:::1]" },
	/* MAIL_ADDR_STRICT_DOTS */
	{ INTAKE, 511, ".a@b, a.@b", MAIL_ADDR_OK, ".a@b a.@b" },
	{ SEND, 254, ".a@b", MAIL_ADDR_BAD, "" },
	{ SEND, 254, "a.@b", MAIL_ADDR_BAD, "" },
	{ SEND, 254, "a.", MAIL_ADDR_OK, "a.@q.test" },
	/* MAIL_ADDR_SOLID_DOMAIN */
	{ INTAKE, 511, "a@b . c", MAIL_ADDR_OK, "a@b.c" },
	{ SEND, 254, "a@b . c", MAIL_ADDR_BAD, "a@b" },
	{ SEND, 254, "a@b. c", MAIL_ADDR_BAD, "" },
	/* MAIL_ADDR_FLAT_GROUPS */
	{ INTAKE, 511, ": a@b;", MAIL_ADDR_BAD, "" },
	{ SEND, 254, ": a@b;", MAIL_ADDR_OK, "a@b" },
	{ INTAKE, 511, "g: a@b c@d;", MAIL_ADDR_OK, "a@b c@d" },
	{ SEND, 254, "g: a@b c@d;", MAIL_ADDR_BAD, "a@b" },
	{ INTAKE, 511, "g: a@b; c@d", MAIL_ADDR_BAD, "a@b" },
	{ SEND, 254, "g: a@b; c@d", MAIL_ADDR_OK, "a@b c@d" },
	{ INTAKE, 511, "Undisclosed recipients:;", MAIL_ADDR_OK, "" },
	{ SEND, 254, "g: a@b", MAIL_ADDR_OK, "a@b" },
	/* MAIL_ADDR_QUALIFY_NO_AT */
	{ INTAKE, 511, "\"a@b\"", MAIL_ADDR_OK, "\"a@b\"@q.test" },
	{ SEND, 254, "\"a@b\"", MAIL_ADDR_OK, "\"a@b\"" },
	/* MAIL_ADDR_ONE: one mailbox, or the null sender */
	{ SENDER, 254, "", MAIL_ADDR_OK, "<>" },
	{ SENDER, 254, " (none) ", MAIL_ADDR_OK, "<>" },
	{ SENDER, 254, "<>", MAIL_ADDR_OK, "<>" },
	{ SENDER, 254, "Name <>", MAIL_ADDR_OK, "<>" },
	{ SENDER, 254, "Name <root>", MAIL_ADDR_OK, "root@q.test" },
	{ SENDER, 254, "a@b, c@d", MAIL_ADDR_BAD, "" },
	{ SENDER, 254, "g: a@b;", MAIL_ADDR_BAD, "" },
	{ SENDER, 5, "abcdef", MAIL_ADDR_TOOLONG, "" },
};

/* MAIL_ADDR_WORD_LIMIT: at most MAIL_ADDR_WORDS_MAX words and dots. */
static void
test_word_limit(void)
{
	static const unsigned flags[] = { INTAKE, SEND };
	char in[2 * (MAIL_ADDR_WORDS_MAX + 1) + 16] = "";

	for (int i = 0; i <= MAIL_ADDR_WORDS_MAX; i++)
		strcat(in, "w ");
	strcat(in, "<a@b>");
	for (size_t k = 0; k < 2; k++) {
		struct mail_addr_syntax syn = { flags[k], "q.test", 511 };
		struct mail_addr_error err;
		struct got g = { "", 0 };

		CHECK_INT(mail_addrlist_parse(
			      in, strlen(in), &syn, collect, &g, &err),
		    flags[k] == INTAKE ? MAIL_ADDR_BAD : MAIL_ADDR_OK);
		if (flags[k] == INTAKE)
			CHECK(strstr(err.why, "too many words") != NULL);
	}
	in[strlen(in) - 7] = '\0'; /* one word fewer: fine for both */
	strcat(in, "<a@b>");
	{
		struct mail_addr_syntax syn = { INTAKE, "q.test", 511 };
		struct mail_addr_error err;
		struct got g = { "", 0 };

		CHECK_INT(mail_addrlist_parse(
			      in, strlen(in), &syn, collect, &g, &err),
		    MAIL_ADDR_OK);
	}
}

static void
test_lists(void)
{
	for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
		struct mail_addr_syntax syn = { lists[i].flags, "q.test",
			lists[i].max_len };
		struct mail_addr_error err;
		struct got g = { "", 0 };
		enum mail_addr_result r;

		r = mail_addrlist_parse(
		    lists[i].in, strlen(lists[i].in), &syn, collect, &g, &err);
		if (r != lists[i].want || strcmp(g.s, lists[i].addrs) != 0)
			fprintf(
			    stderr, "case %zu: %d \"%s\"\n", i, (int)r, g.s);
		CHECK_INT(r, lists[i].want);
		CHECK_STR(g.s, lists[i].addrs);
		if (r == MAIL_ADDR_BAD)
			CHECK(err.why != NULL);
		if (r == MAIL_ADDR_TOOLONG)
			CHECK(err.len > lists[i].max_len);
	}
	{
		/* the length of the local part, for the reason given */
		struct mail_addr_syntax syn = { INTAKE, "q.test", 20 };
		struct mail_addr_error err;
		struct got g = { "", 0 };
		const char *in = "\"a@b\".cdefghijklmnop@example.org";

		CHECK_INT(mail_addrlist_parse(
			      in, strlen(in), &syn, collect, &g, &err),
		    MAIL_ADDR_TOOLONG);
		CHECK_INT(err.len, strlen(in));
		CHECK_INT(err.local, strlen(in) - strlen("@example.org"));
		in = "abcdefghijklmnopqrstuvwxyz";
		CHECK_INT(mail_addrlist_parse(
			      in, strlen(in), &syn, collect, &g, &err),
		    MAIL_ADDR_TOOLONG);
		CHECK_INT(err.len, strlen(in) + strlen("@q.test"));
		CHECK_INT(err.local, strlen(in));
	}
	{
		/* no qualifying domain: an address needs its own */
		struct mail_addr_syntax syn = { INTAKE, NULL, 511 };
		struct mail_addr_error err;
		struct got g = { "", 0 };

		CHECK_INT(
		    mail_addrlist_parse("root", 4, &syn, collect, &g, &err),
		    MAIL_ADDR_BAD);
		CHECK_STR(err.why, "unparseable address");
	}
}

/* Stops at the second address: what a callback's result does. */
static enum mail_addr_result
two_at_most(void *arg, const char *addr)
{
	(void)addr;
	return ++*(int *)arg > 2 ? MAIL_ADDR_TOOMANY : MAIL_ADDR_OK;
}

static void
test_callback_stops(void)
{
	struct mail_addr_syntax syn = { INTAKE, "q.test", 511 };
	struct mail_addr_error err;
	int n = 0;

	CHECK_INT(
	    mail_addrlist_parse("a, b, c, d", 10, &syn, two_at_most, &n, &err),
	    MAIL_ADDR_TOOMANY);
	CHECK_INT(n, 3);
}

static void
test_set(void)
{
	static const struct {
		const char *addr;
		size_t max;
		enum mail_set_result want;
		size_t idx;
	} puts_[] = {
		{ "a@Example.ORG", 0, MAIL_SET_ADDED, 0 },
		{ "a@example.org", 0, MAIL_SET_FOUND,
		    0 }, /* domain: any case */
		{ "A@example.org", 0, MAIL_SET_ADDED,
		    1 }, /* local part: exact */
		{ "\"x@Y\"@d", 0, MAIL_SET_ADDED, 2 },
		{ "\"x@y\"@D", 0, MAIL_SET_ADDED,
		    3 }, /* the quoted @ is local */
		{ "\"x@Y\"@D", 0, MAIL_SET_FOUND, 2 },
		{ "b@c", 4, MAIL_SET_FULL, 0 },
		{ "b@c", 5, MAIL_SET_ADDED, 4 },
	};
	struct mail_addr_set set;
	char name[32];

	memset(&set, 0, sizeof(set));
	for (size_t i = 0; i < sizeof(puts_) / sizeof(puts_[0]); i++) {
		size_t idx = 99;

		CHECK_INT(
		    mail_addr_set_put(&set, puts_[i].addr, puts_[i].max, &idx),
		    puts_[i].want);
		if (puts_[i].want != MAIL_SET_FULL)
			CHECK_INT(idx, puts_[i].idx);
	}
	CHECK_INT(set.n, 5);
	CHECK_STR(set.v[0], "a@Example.ORG"); /* as first given */
	for (int i = 0; i < 1000; i++) { /* the index grows */
		snprintf(name, sizeof(name), "u%d@D", i);
		CHECK_INT(
		    mail_addr_set_put(&set, name, 0, NULL), MAIL_SET_ADDED);
	}
	CHECK_INT(mail_addr_set_put(&set, "u500@d", 0, NULL), MAIL_SET_FOUND);
	mail_addr_set_free(&set);
	CHECK_INT(set.n, 0);
}

static void
test_xtext(void)
{
	static const struct {
		const char *in, *want;
	} enc[] = {
		{ "env+1 x=", "env+2B1+20x+3D" },
		{ "plain", "plain" },
		{ "\x01\x7f\xc3\xa9", "+01+7F+C3+A9" },
		{ "", "" },
	};
	static const struct {
		const char *in;
		unsigned flags;
		const char *want;
	} dec[] = {
		/* the runner's (uppercase hex, as RFC 3461 has it) */
		{ "env+2B1+20x", 0, "env+1 x" },
		{ "rfc822;a+2Bb@c", 0, "rfc822;a+b@c" },
		{ "plain", 0, "plain" },
		{ "bad+2", 0, "bad+2" },
		{ "bad+ZZ", 0, "bad+ZZ" },
		{ "+3D+2b", 0, "=+2b" },
		{ "", 0, "" },
		/* the DSN builder's (either case) */
		{ "+3D+2b", MAIL_XTEXT_ANYCASE, "=+" },
		{ "a+2", MAIL_XTEXT_ANYCASE, "a+2" },
	};
	static const struct {
		const char *in;
		bool want;
	} valid[] = {
		{ "abc+2B", true },
		{ "a=b", false },
		{ "a b", false },
		{ "\x7f", false },
		{ "\xc3\xa9", false },
		{ "", true },
	};
	size_t len;
	char *d;

	for (size_t i = 0; i < sizeof(enc) / sizeof(enc[0]); i++) {
		char *x = mail_xtext_encode(enc[i].in);

		CHECK_STR(x, enc[i].want);
		free(x);
	}
	for (size_t i = 0; i < sizeof(dec) / sizeof(dec[0]); i++) {
		d = mail_xtext_decode(
		    dec[i].in, strlen(dec[i].in), dec[i].flags, NULL);
		CHECK_STR(d, dec[i].want);
		free(d);
	}
	d = mail_xtext_decode("a+00b", 5, 0, &len); /* a NUL inside */
	CHECK_INT(len, 3);
	CHECK(memcmp(d, "a\0b", 4) == 0);
	free(d);
	for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++)
		CHECK_INT(mail_xtext_valid(valid[i].in, strlen(valid[i].in)),
		    valid[i].want);
}

static void
test_notify(void)
{
	static const struct {
		const char *in;
		unsigned flags;
		bool ok;
		const char *text; /* mail_notify_format() of the result */
	} cases[] = {
		{ "never", MAIL_NOTIFY_STRICT, true, "NEVER" },
		{ "Delay,success", MAIL_NOTIFY_STRICT, true, "SUCCESS,DELAY" },
		{ "success,failure,delay,success", 0, true,
		    "SUCCESS,FAILURE,DELAY" },
		{ "never,success", 0, false, NULL },
		{ "", 0, false, NULL },
		{ ",success", 0, false, NULL },
		{ "success,,delay", 0, false, NULL },
		{ "sometimes", 0, false, NULL },
		/* intake takes a trailing comma and NEVER twice; -N not */
		{ "SUCCESS,", 0, true, "SUCCESS" },
		{ "SUCCESS,", MAIL_NOTIFY_STRICT, false, NULL },
		{ "NEVER,NEVER", 0, true, "NEVER" },
		{ "NEVER,NEVER", MAIL_NOTIFY_STRICT, false, NULL },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		unsigned bits = 0;
		char buf[32];
		bool ok = mail_notify_parse(
		    cases[i].in, strlen(cases[i].in), cases[i].flags, &bits);

		CHECK_INT(ok, cases[i].ok);
		if (ok && cases[i].ok) {
			mail_notify_format(bits, buf, sizeof(buf));
			CHECK_STR(buf, cases[i].text);
		}
	}
}

static void
test_fields(void)
{
	static const struct {
		const char *line;
		size_t name_len;
		bool mbox;
	} lines[] = {
		{ "Subject: hi\n", 7, false },
		{ "Subject : hi\n", 7, false },
		{ "From me Mon Jan  1 00:00:00 2024\n", 4, true },
		{ "From : a@b\n", 4, false },
		{ "From \t:a@b\n", 4, false },
		{ "From \n", 4, true },
		{ "From:a@b\n", 4, false },
		{ ": x\n", 0, false },
		{ "X\xc3\xa9: y\n", 1, false },
		{ "", 0, false },
	};

	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
		size_t n = strlen(lines[i].line);

		CHECK_INT(
		    mail_field_name_len(lines[i].line, n), lines[i].name_len);
		CHECK_INT(mail_mbox_from_is(lines[i].line, n), lines[i].mbox);
	}
	CHECK(mail_field_is("X-Receiver", 10, "x-receiver"));
	CHECK(!mail_field_is("X-Receiver", 9, "X-Receiver"));
	CHECK(!mail_field_is("To", 2, "Tox"));
}

int
main(void)
{
	test_lists();
	test_word_limit();
	test_callback_stops();
	test_set();
	test_xtext();
	test_notify();
	test_fields();
	return rqtest_done();
}
