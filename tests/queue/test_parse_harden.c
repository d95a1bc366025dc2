/*
 * test_parse_harden.c - unit tests of the hardened message parsing of
 * queue/ (issue 10, items 4, 5 and 8), table-driven where the cases are
 * data: bare CRs made line ends, the hop count (Received: fields), a
 * header section without an empty line, a leading mbox From line, long
 * addresses and the reason given, recipients past the 64th header field,
 * duplicates collapsed as SMTP compares addresses (and their DSN
 * parameters merged), max_recipients, long header lines folded or
 * refused; then, against a real LMDB queue in a temporary directory,
 * intake of a looping message (bounced with 5.4.6 at intake, its notice
 * made by expiry/, never one to <>, nothing delivered) and of one with
 * too many recipients (bad/ with a reason).
 */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"
#include "expiry.h"
#include "intake_wait.h"
#include "queue.h"
#include "queue_parse.h"
#include "rqtest.h"

/* A malloc'd string of N copies of C. */
static char *
rep(char c, size_t n)
{
	char *s = xmalloc(n + 1);

	memset(s, c, n);
	s[n] = '\0';
	return s;
}

/* A malloc'd string from a printf format. */
static char *__attribute__((format(printf, 1, 2))) fmt(const char *f, ...)
{
	va_list ap;
	char *s;

	va_start(ap, f);
	if (vasprintf(&s, f, ap) < 0)
		abort();
	va_end(ap);
	return s;
}

/* Joins R's recipient addresses with spaces (malloc'd). */
static char *
rcpts_joined(const struct qp_result *r)
{
	size_t n = 1;
	char *s;

	for (size_t i = 0; i < r->nrcpt; i++)
		n += strlen(r->rcpts[i].addr) + 1;
	s = xcalloc(1, n);
	for (size_t i = 0; i < r->nrcpt; i++) {
		if (i > 0)
			strcat(s, " ");
		strcat(s, r->rcpts[i].addr);
	}
	return s;
}

/* Fixes bare CRs in a copy of IN and parses it (the intake's order). */
static enum qp_status
parse_copy(
    const char *in, size_t len, size_t max, struct qp_result *r, char **copy)
{
	*copy = xmalloc(len + 1);
	memcpy(*copy, in, len + 1);
	qp_bare_cr_fix(*copy, len);
	return qp_message_parse(*copy, len, "relayq.test", max, r);
}

/* ---- bare CR ---- */

static const struct {
	const char *in, *out;
	size_t n;
} crs[] = {
	{ "", "", 0 },
	{ "a\rb", "a\nb", 1 },
	{ "a\r\nb", "a\r\nb", 0 },
	{ "a\r\r\nb", "a\n\r\nb", 1 },
	{ "\r", "\n", 1 },
	{ "x\r", "x\n", 1 },
	{ "\r\r\r\n", "\n\n\r\n", 2 },
	{ "a\nb\n", "a\nb\n", 0 },
	{ "Subject: hi\rBcc: h@x\r\n", "Subject: hi\nBcc: h@x\r\n", 1 },
};

static void
test_bare_cr(void)
{
	for (size_t i = 0; i < sizeof(crs) / sizeof(crs[0]); i++) {
		size_t len = strlen(crs[i].in);
		char *s = xstrdup(crs[i].in);

		CHECK_INT(qp_bare_cr_fix(s, len), crs[i].n);
		CHECK_STR(s, crs[i].out);
		free(s);
	}
}

/* ---- the hop count ---- */

static const struct {
	const char *in;
	unsigned hops;
} hops[] = {
	{ "To: a@b.test\n\n", 0 },
	{ "Received: x\nReceived: y\nTo: a@b.test\n\nb\n", 2 },
	{ "received : x\nRECEIVED:\n\tby folded\nTo: a@b.test\n\n", 2 },
	{ "X-Received: x\nReceived-SPF: y\nTo: a@b.test\n\nReceived: body\n",
	    0 },
	{ "X-Sender: <s@a.test>\nX-Receiver: <r@b.test>\nReceived: a\n\n", 1 },
	{ "To: a@b.test\nnot a field\nReceived: x\n", 0 },
	{ "From mbox Sat Jan  1 00:00:00 2000\nReceived: a\nTo: a@b.test\n",
	    1 },
	{ "To: a@b.test\nReceived: a\rReceived: b\r\n\r\n", 2 },
	{ "Received: a\r\nTo: a@b.test\r\n\rReceived: b\r\n", 1 },
	{ "To: a@b.test\nReceived: a", 1 },
};

static void
test_hops(void)
{
	for (size_t i = 0; i < sizeof(hops) / sizeof(hops[0]); i++) {
		struct qp_result r;
		char *c;

		CHECK_INT(parse_copy(hops[i].in, strlen(hops[i].in), 0, &r, &c),
		    QP_OK);
		if (r.nreceived != hops[i].hops)
			fprintf(stderr, "hops case %zu\n", i);
		CHECK_INT(r.nreceived, hops[i].hops);
		qp_result_free(&r);
		free(c);
	}
}

/* ---- messages: recipients or the reason they are refused ---- */

struct mcase {
	char *in; /* malloc'd */
	size_t max; /* max_rcpt */
	const char *rcpts; /* joined; NULL: must be QP_BAD */
	const char *why; /* substring of the reason when bad */
};

static void
mcase_run(const struct mcase *m, size_t i)
{
	struct qp_result r;
	enum qp_status st;
	char *c, *got;

	st = parse_copy(m->in, strlen(m->in), m->max, &r, &c);
	got = rcpts_joined(&r);
	if (m->rcpts == NULL) {
		if (st != QP_BAD || strstr(r.why, m->why) == NULL)
			fprintf(stderr, "case %zu: %.200s (%.200s)\n", i,
			    st == QP_BAD ? r.why : "accepted", got);
		CHECK(st == QP_BAD && strstr(r.why, m->why) != NULL);
	} else {
		if (st != QP_OK || strcmp(got, m->rcpts) != 0)
			fprintf(stderr, "case %zu: %.200s\n", i,
			    st == QP_OK ? got : r.why);
		CHECK_INT(st, QP_OK);
		CHECK(strcmp(got, m->rcpts) == 0);
	}
	free(got);
	free(c);
	qp_result_free(&r);
}

static void
test_messages(void)
{
	char *l600 = rep('l', 600), *l64 = rep('l', 64), *d500 = rep('d', 500),
	     *x1000 = rep('x', 1000), *words = xstrdup(""), *many = NULL,
	     *ok64 = fmt("%s@b.test", l64), *joined;
	struct mcase cases[] = {
		/* header only, no empty line (interface.md) */
		{ xstrdup("To: a@b.test\nSubject: x"), 0, "a@b.test", NULL },
		{ xstrdup("To: a@b.test\nSubject: x\n"), 0, "a@b.test", NULL },
		{ xstrdup("To: a@b.test"), 0, "a@b.test", NULL },
		{ xstrdup("To: a@b.test\r\n"), 0, "a@b.test", NULL },
		/* a leading mbox From line, also after the envelope */
		{ xstrdup("From x@y.test Sat Jan  1 00:00:00 2000\n"
			  "To: a@b.test\n\nbody\n"),
		    0, "a@b.test", NULL },
		{ xstrdup("X-Sender: <s@a.test>\nX-Receiver: <r@b.test>\n"
			  "From s@a.test Sat Jan  1 00:00:00 2000\n"
			  "Subject: x\n\nb\n"),
		    0, "r@b.test", NULL },
		{ xstrdup("From x\nFrom y\nTo: a@b.test\n\n"), 0, NULL,
		    "not a message" },
		/* "From :" is a field (obsolete syntax), not an mbox line */
		{ xstrdup("From : s@a.test\nTo: a@b.test\n\n"), 0, "a@b.test",
		    NULL },
		/* duplicates: local part exact, domain in any case */
		{ xstrdup("To: a@B.test, A@b.test\nCc: a@b.TEST, <A@B.TEST>\n"
			  "Bcc: a@b.test\n\n"),
		    0, "a@B.test A@b.test", NULL },
		{ xstrdup("To: \"x@y\"@b.test, \"x@y\"@B.TEST, x@b.test\n\n"),
		    0, "\"x@y\"@b.test x@b.test", NULL },
		{ xstrdup("X-Receiver: <r@b.test>\nX-Receiver: <r@B.Test>\n"
			  "X-Receiver: <R@b.test>\n\n"),
		    0, "r@b.test R@b.test", NULL },
		/* max_recipients counts distinct recipients */
		{ xstrdup("To: a@b.test, c@d.test, e@f.test\n\n"), 2, NULL,
		    "too many recipients: more than 2 (max_recipients)" },
		{ xstrdup("To: a@b.test, a@B.TEST\nCc: c@d.test\n\n"), 2,
		    "a@b.test c@d.test", NULL },
		{ xstrdup("X-Receiver: <a@b.test>\nX-Receiver: <c@d.test>\n\n"),
		    1, NULL, "too many recipients" },
		/* long addresses: the reason says what is long */
		{ fmt("To: %s@b.test\n\n", l600), 0, NULL,
		    "address too long: a local part of 600 bytes" },
		{ fmt("X-Receiver: <%s@b.test>\n\n", l600), 0, NULL,
		    "address too long: a local part of 600 bytes" },
		{ fmt("To: Name <%s@b.test>\n\n", l600), 0, NULL,
		    "local part of 600 bytes" },
		{ fmt("X-Sender: <%s@b.test>\nTo: a@b.test\n\n", l600), 0, NULL,
		    "local part of 600 bytes" },
		{ fmt("To: %s@%s.test\n\n", l64, d500), 0, NULL,
		    "address too long: 570 bytes (at most 511)" },
		{ fmt("To: %s@b.test\n\n", l64), 0, ok64, NULL },
		/* long header lines: folded, unless there is no place */
		{ fmt("To: a@b.test\nSubject: %s\n\n", x1000), 0, NULL,
		    "header line too long: 1009 bytes in the Subject: field" },
		{ fmt("To: a@b.test\nX-Long: a\n\t%s\n\n", x1000), 0, NULL,
		    "1001 bytes in the X-Long: field" },
		{ fmt("To: a@b.test\nBcc: (%s) c@d.test\n\n", x1000), 0,
		    "a@b.test c@d.test", NULL },
		{ fmt("X-Receiver: <r@b.test> ORCPT=rfc822;%.400s\n"
		      "Subject: ok\n\n",
		      x1000),
		    0, "r@b.test", NULL },
		{ NULL, 0, NULL, NULL },
	};
	struct mcase extra[3];

	for (size_t i = 0; cases[i].in != NULL; i++) {
		mcase_run(&cases[i], i);
		free(cases[i].in);
	}

	/* a foldable long Subject: and To: list are fine */
	for (int i = 0; i < 300; i++) {
		char *w = fmt("%sword%d ", words, i);

		free(words);
		words = w;
	}
	extra[0].in = fmt("To: a@b.test\nSubject: %s\n\n", words);
	extra[0].max = 0;
	extra[0].rcpts = "a@b.test";
	many = xstrdup("");
	joined = xstrdup("");
	for (int i = 0; i < 100; i++) {
		char *w = fmt("%s%sr%d@b.test", many, i ? ", " : "", i);

		free(many);
		many = w;
		w = fmt("%s%sr%d@b.test", joined, i ? " " : "", i);
		free(joined);
		joined = w;
	}
	extra[1].in = fmt("To: %s\n\n", many);
	extra[1].max = 100;
	extra[1].rcpts = joined;
	extra[2].in = fmt("To: %s\n\n", many);
	extra[2].max = 99;
	extra[2].rcpts = NULL;
	extra[2].why = "more than 99";
	for (size_t i = 0; i < 3; i++) {
		mcase_run(&extra[i], 100 + i);
		free(extra[i].in);
	}
	free(many);
	free(joined);
	free(words);
	free(l600);
	free(l64);
	free(ok64);
	free(d500);
	free(x1000);
}

/* Past the 64th To:/Cc:/Bcc: field: every recipient is taken. */
static void
test_many_fields(void)
{
	static const size_t nf[] = { 64, 65, 70, 500 };

	for (size_t k = 0; k < sizeof(nf) / sizeof(nf[0]); k++) {
		char *msg = xstrdup("From: s@a.test\n");
		struct qp_result r;
		char *last = fmt("q%zu@c.test", nf[k] - 1);

		for (size_t i = 0; i < nf[k]; i++) {
			char *m = fmt("%s%s: r%zu@b.test, q%zu@c.test\n", msg,
			    i % 3 == 0	     ? "To"
				: i % 3 == 1 ? "Cc"
					     : "Bcc",
			    i, i);

			free(msg);
			msg = m;
		}
		CHECK_INT(
		    qp_message_parse(msg, strlen(msg), NULL, 0, &r), QP_OK);
		CHECK_INT(r.nrcpt, 2 * nf[k]);
		if (r.nrcpt == 2 * nf[k])
			CHECK_STR(r.rcpts[2 * nf[k] - 1].addr, last);
		qp_result_free(&r);
		free(last);
		free(msg);
	}
}

/* ---- DSN parameters of a recipient given twice ---- */

static const struct {
	const char *a, *b; /* the parameters of the two X-Receiver: lines */
	unsigned notify;
	const char *orcpt; /* NULL: none */
} merges[] = {
	{ "", "", 0, NULL },
	{ "NOTIFY=NEVER", "NOTIFY=NEVER", QNOTIFY_NEVER, NULL },
	{ "NOTIFY=NEVER", "NOTIFY=SUCCESS", QNOTIFY_SUCCESS, NULL },
	{ "NOTIFY=FAILURE", "NOTIFY=DELAY", QNOTIFY_FAILURE | QNOTIFY_DELAY,
	    NULL },
	{ "", "NOTIFY=SUCCESS",
	    QNOTIFY_SUCCESS | QNOTIFY_FAILURE | QNOTIFY_DELAY, NULL },
	{ "NOTIFY=NEVER", "", QNOTIFY_FAILURE | QNOTIFY_DELAY, NULL },
	{ "", "ORCPT=rfc822;b@x.test", 0, "rfc822;b@x.test" },
	{ "ORCPT=rfc822;a@x.test", "ORCPT=rfc822;b@x.test", 0,
	    "rfc822;a@x.test" },
	{ "NOTIFY=SUCCESS ORCPT=rfc822;a@x.test", "NOTIFY=SUCCESS",
	    QNOTIFY_SUCCESS, "rfc822;a@x.test" },
};

static void
test_merges(void)
{
	for (size_t i = 0; i < sizeof(merges) / sizeof(merges[0]); i++) {
		char *msg = fmt("X-Receiver: <r@b.test> %s\n"
				"X-Receiver: <r@B.TEST> %s\n\n",
		    merges[i].a, merges[i].b);
		struct qp_result r;

		CHECK_INT(
		    qp_message_parse(msg, strlen(msg), NULL, 0, &r), QP_OK);
		CHECK_INT(r.nrcpt, 1);
		if (r.nrcpt == 1) {
			CHECK_STR(r.rcpts[0].addr, "r@b.test");
			CHECK_INT(r.rcpts[0].notify, merges[i].notify);
			if (merges[i].orcpt == NULL)
				CHECK(r.rcpts[0].orcpt == NULL);
			else
				CHECK_STR(r.rcpts[0].orcpt, merges[i].orcpt);
		}
		qp_result_free(&r);
		free(msg);
	}
}

/* ---- what is stored is what was checked ---- */

/* Checks OUT (a built message): CRLF only, no bare CR, every header
 * line at most QP_LINE_MAX bytes; returns its header section unfolded
 * (malloc'd, without the Received: line the test put first). */
static char *
check_built(const char *out, size_t n)
{
	const char *end = strstr(out, "\r\n\r\n"), *p = out;
	char *u = xcalloc(1, n + 1);
	size_t k = 0;

	CHECK(end != NULL);
	for (size_t i = 0; i < n; i++) {
		if (out[i] == '\r')
			CHECK(i + 1 < n && out[i + 1] == '\n');
		if (out[i] == '\n')
			CHECK(i > 0 && out[i - 1] == '\r');
	}
	while (end != NULL && p < end + 2) {
		const char *e = strstr(p, "\r\n");

		CHECK(e - p <= QP_LINE_MAX);
		p = e + 2;
	}
	/* unfold: CRLF before white space goes */
	for (p = out; end != NULL && p < end + 2; p++) {
		if (p[0] == '\r' && p[1] == '\n' &&
		    (p[2] == ' ' || p[2] == '\t'))
			p++;
		else
			u[k++] = *p;
	}
	return u;
}

static void
test_stored(void)
{
	static const char *const longs[] = { "Subject", "To", "X-Tab" };
	struct qp_result r, r2;
	char *c, *out, *u, *want;
	size_t n;
	const char *in;

	/* a CR-hidden Bcc: the line end the receiver would see is one
	 * here too: the Bcc: field is removed */
	in = "X-Receiver: <r@b.test>\nSubject: hi\rBcc: hidden@x.test\n"
	     "To: r@b.test\n\nbody\rmore\r\n";
	CHECK_INT(parse_copy(in, strlen(in), 0, &r, &c), QP_OK);
	out = qp_message_build(
	    c, strlen(c), &r, "Received: x\r\n", NULL, NULL, &n);
	CHECK_STR(out,
	    "Received: x\r\nSubject: hi\r\nTo: r@b.test\r\n\r\n"
	    "body\r\nmore\r\n");
	free(out);
	free(c);
	qp_result_free(&r);
	/* without an envelope, that Bcc: is a recipient (and removed) */
	in = "Subject: hi\rBcc: hidden@x.test\nTo: r@b.test\n\nx\n";
	CHECK_INT(parse_copy(in, strlen(in), 0, &r, &c), QP_OK);
	u = rcpts_joined(&r);
	CHECK_STR(u, "hidden@x.test r@b.test");
	free(u);
	out = qp_message_build(c, strlen(c), &r, NULL, NULL, NULL, &n);
	CHECK(strstr(out, "Bcc") == NULL && strstr(out, "hidden") == NULL);
	free(out);
	free(c);
	qp_result_free(&r);
	/* Resent-To/Cc/Bcc replace To/Cc/Bcc (as sendmail -t); Resent-Bcc:
	 * is removed like Bcc:; a Resent-From: alone changes nothing */
	in = "To: old@b.test\nResent-From: f@a.test\nResent-To: new@b.test\n"
	     "Resent-Bcc: hid@x.test\nBcc: ob@x.test\n\nx\n";
	CHECK_INT(parse_copy(in, strlen(in), 0, &r, &c), QP_OK);
	u = rcpts_joined(&r);
	CHECK_STR(u, "new@b.test hid@x.test");
	free(u);
	out = qp_message_build(c, strlen(c), &r, NULL, NULL, NULL, &n);
	CHECK(strstr(out, "hid@") == NULL && strstr(out, "ob@") == NULL);
	CHECK(strstr(out, "Resent-To: new@b.test") != NULL);
	free(out);
	free(c);
	qp_result_free(&r);
	in = "To: old@b.test\nResent-From: f@a.test\n\nx\n";
	CHECK_INT(parse_copy(in, strlen(in), 0, &r, &c), QP_OK);
	u = rcpts_joined(&r);
	CHECK_STR(u, "old@b.test");
	free(u);
	free(c);
	qp_result_free(&r);
	/* with X-Receiver, Resent-Bcc: is removed and names no one */
	in = "X-Receiver: <r@b.test>\nResent-Bcc: hid@x.test\n\nx\n";
	CHECK_INT(parse_copy(in, strlen(in), 0, &r, &c), QP_OK);
	u = rcpts_joined(&r);
	CHECK_STR(u, "r@b.test");
	free(u);
	out = qp_message_build(c, strlen(c), &r, NULL, NULL, NULL, &n);
	CHECK(strstr(out, "hid@") == NULL);
	free(out);
	free(c);
	qp_result_free(&r);
	/* a bad Resent- list: the reason survives the parse */
	in = "Resent-To: <broken\n\nx\n";
	CHECK_INT(parse_copy(in, strlen(in), 0, &r, &c), QP_BAD);
	CHECK(r.why != NULL && r.why[0] != '\0');
	free(c);
	qp_result_free(&r);
	/* the mbox line is left out of what is stored */
	in = "X-Receiver: <r@b.test>\nFrom r@b.test Sat Jan  1 00:00:00 2000\n"
	     "Subject: s\n\nb\n";
	CHECK_INT(parse_copy(in, strlen(in), 0, &r, &c), QP_OK);
	out = qp_message_build(c, strlen(c), &r, NULL, NULL, NULL, &n);
	CHECK_STR(out, "Subject: s\r\n\r\nb\r\n");
	free(out);
	free(c);
	qp_result_free(&r);
	in = "From : s@a.test\nTo: r@b.test\n\nb\n";
	CHECK_INT(parse_copy(in, strlen(in), 0, &r, &c), QP_OK);
	CHECK_STR(r.sender, "s@a.test");
	out = qp_message_build(c, strlen(c), &r, NULL, NULL, NULL, &n);
	CHECK_STR(out, "From : s@a.test\r\nTo: r@b.test\r\n\r\nb\r\n");
	free(out);
	free(c);
	qp_result_free(&r);
	/* header only: an empty line is added, no body */
	in = "To: a@b.test\nSubject: x";
	CHECK_INT(parse_copy(in, strlen(in), 0, &r, &c), QP_OK);
	out = qp_message_build(c, strlen(c), &r, NULL, NULL, NULL, &n);
	CHECK_STR(out, "To: a@b.test\r\nSubject: x\r\n\r\n");
	free(out);
	free(c);
	qp_result_free(&r);

	/* an address list with no white space: folded after a comma */
	{
		char *val = xstrdup("");

		for (int i = 0; i < 300; i++) {
			char *v = fmt("%s%sw%d@b.test", val, i ? "," : "", i);

			free(val);
			val = v;
		}
		in = c = fmt("From: s@a.test\nTo: %s\n\nbody\n", val);
		CHECK_INT(qp_message_parse(in, strlen(in), NULL, 0, &r), QP_OK);
		CHECK_INT(r.nrcpt, 300);
		out = qp_message_build(
		    in, strlen(in), &r, NULL, NULL, NULL, &n);
		for (char *p2 = out, *e2; (e2 = strstr(p2, "\r\n")) != NULL;
		     p2 = e2 + 2)
			CHECK(e2 - p2 <= 998);
		CHECK(strstr(out, ",\r\n w") != NULL);
		CHECK_INT(qp_message_parse(out, n, NULL, 0, &r2), QP_OK);
		CHECK_INT(r2.nrcpt, 300);
		for (size_t i = 0; i < r.nrcpt && i < r2.nrcpt; i++)
			CHECK_STR(r2.rcpts[i].addr, r.rcpts[i].addr);
		qp_result_free(&r2);
		qp_result_free(&r);
		free(out);
		free(c);
		free(val);
	}

	/* a body line over 998 bytes is broken by CRLF SPACE (Postfix's
	 * smtp_line_length_limit): no line over 998, nothing lost */
	{
		char *line = xmalloc(2501), *p2, *joined;
		size_t jn = 0;

		memset(line, 'q', 2500);
		line[2500] = '\0';
		line[998] = 'A'; /* the first byte of the second piece */
		in = c = fmt("To: a@b.test\n\n%s\nshort\n", line);
		CHECK_INT(qp_message_parse(in, strlen(in), NULL, 0, &r), QP_OK);
		out = qp_message_build(
		    in, strlen(in), &r, NULL, NULL, NULL, &n);
		for (p2 = out; (u = strstr(p2, "\r\n")) != NULL; p2 = u + 2)
			CHECK(u - p2 <= 998);
		CHECK(strstr(out, "\r\n A") != NULL);
		joined = xmalloc(n + 1);
		for (size_t i = 0; i < n; i++) {
			if (i + 2 < n && memcmp(out + i, "\r\n ", 3) == 0) {
				i += 2;
				continue;
			}
			joined[jn++] = out[i];
		}
		joined[jn] = '\0';
		want = fmt("To: a@b.test\r\n\r\n%s\r\nshort\r\n", line);
		CHECK_STR(joined, want);
		free(want);
		free(joined);
		free(out);
		free(c);
		free(line);
		qp_result_free(&r);
	}

	/* long lines are folded; unfolding gives back what was parsed, and
	 * the stored message parses to the same recipients */
	for (size_t k = 0; k < sizeof(longs) / sizeof(longs[0]); k++) {
		char *val = xstrdup("");

		for (int i = 0; i < 400; i++) {
			char *v = fmt("%s%sw%d@b.test", val,
			    i == 0	 ? ""
				: k == 2 ? ",\t"
					 : ", ",
			    i);

			free(val);
			val = v;
		}
		in = c = fmt("From: s@a.test\n%s: %s\nCc: z@b.test\n\nbody\n",
		    longs[k], val);
		CHECK_INT(qp_message_parse(in, strlen(in), NULL, 0, &r), QP_OK);
		out = qp_message_build(
		    in, strlen(in), &r, NULL, NULL, NULL, &n);
		u = check_built(out, n);
		want = fmt("From: s@a.test\r\n%s: %s\r\nCc: z@b.test\r\n",
		    longs[k], val);
		CHECK(strcmp(u, want) == 0);
		CHECK(strstr(out, "\r\n ") != NULL ||
		    strstr(out, "\r\n\t") != NULL);
		CHECK_INT(qp_message_parse(out, n, NULL, 0, &r2), QP_OK);
		CHECK_INT(r2.nrcpt, r.nrcpt);
		for (size_t i = 0; i < r.nrcpt && i < r2.nrcpt; i++)
			CHECK_STR(r2.rcpts[i].addr, r.rcpts[i].addr);
		qp_result_free(&r2);
		qp_result_free(&r);
		free(want);
		free(u);
		free(out);
		free(c);
		free(val);
	}
}

/* ---- intake: loops and too many recipients ---- */

static char tmpdir[256];

static struct cfg *
make_cfg(const char *extra)
{
	char *text, err[512];
	struct cfg *cfg = NULL;

	text = fmt(
	    "spool_dir = %s/spool\nqueue_dir = %s/queue\nhostname = "
	    "relayq.test\nqueue_map_size = 64m\nmax_message_size = 1m\n%s",
	    tmpdir, tmpdir, extra);
	if (cfg_parse_buf("t.conf", text, strlen(text), &cfg, err,
		sizeof(err)) != CFG_OK) {
		fprintf(stderr, "cfg: %s\n", err);
		exit(2);
	}
	free(text);
	return cfg;
}

static void
drop(const char *name, const char *text)
{
	char *path = fmt("%s/spool/incoming/%s", tmpdir, name);
	FILE *fp = fopen(path, "w");

	fputs(text, fp);
	fclose(fp);
	free(path);
}

/* A message from SENDER to two recipients with NHOPS Received: fields. */
static char *
hop_msg(const char *sender, int nhops)
{
	char *m = fmt("X-Sender: <%s>\nX-Receiver: <r1@b.test>\n"
		      "X-Receiver: <r2@b.test> NOTIFY=NEVER\n",
	    sender);

	for (int i = 0; i < nhops; i++) {
		char *n = fmt(
		    "%sReceived: by hop%d.test; Sat, 1 Jan 2000\n", m, i);

		free(m);
		m = n;
	}
	{
		char *n = fmt("%sSubject: loop %d\n\nbody\n", m, nhops);

		free(m);
		m = n;
	}
	return m;
}

struct seen {
	size_t n;
	struct queue_msg *m[8];
};

static bool
seen_cb(const struct queue_msg *m, void *arg)
{
	struct seen *s = arg;
	struct queue_msg *c;

	if (s->n < 8) {
		c = xcalloc(1, sizeof(*c));
		*c = *m;
		c->sender = xstrdup(m->sender);
		c->rcpts = xcalloc(m->nrcpt, sizeof(*c->rcpts));
		for (size_t i = 0; i < m->nrcpt; i++) {
			c->rcpts[i] = m->rcpts[i];
			c->rcpts[i].addr = xstrdup(m->rcpts[i].addr);
			c->rcpts[i].orcpt = NULL;
			c->rcpts[i].reply = m->rcpts[i].reply
			    ? xstrdup(m->rcpts[i].reply)
			    : NULL;
		}
		c->envid = NULL;
		s->m[s->n] = c;
	}
	s->n++;
	return true;
}

static void
seen_free(struct seen *s)
{
	for (size_t i = 0; i < s->n && i < 8; i++)
		queue_msg_free(s->m[i]);
	s->n = 0;
}

/* True when a file in bad/ holds NEEDLE. */
static bool
bad_has(const char *needle)
{
	char *dir = fmt("%s/spool/bad", tmpdir), buf[4096];
	DIR *d = opendir(dir);
	struct dirent *de;
	bool found = false;

	while (d != NULL && !found && (de = readdir(d)) != NULL) {
		char *path = fmt("%s/%s", dir, de->d_name);
		FILE *fp = fopen(path, "r");
		size_t n;

		if (fp != NULL) {
			n = fread(buf, 1, sizeof(buf) - 1, fp);
			buf[n] = '\0';
			found = strstr(buf, needle) != NULL;
			fclose(fp);
		}
		free(path);
	}
	if (d != NULL)
		closedir(d);
	free(dir);
	return found;
}

static void
intake_all(struct queue_intake *qi)
{
	enum queue_intake_result ir;

	while ((ir = intake_run_wait(qi, 100)) == QI_MORE)
		;
	CHECK_INT(ir, QI_IDLE);
}

static void
test_intake(void)
{
	struct cfg *cfg = make_cfg("max_recipients = 3\n");
	char err[256], *m, *body;
	struct queue *q = queue_open(cfg, false, err, sizeof(err));
	struct queue_intake *qi = queue_intake_open(q, cfg);
	struct seen s = { 0 };
	int64_t now = rq_now();
	size_t len;

	/* 49 Received: queued as usual; 50: bounced at intake */
	drop("hops49", m = hop_msg("s@a.test", 49));
	free(m);
	intake_all(qi);
	queue_msgs_scan(q, 0, seen_cb, &s);
	CHECK_INT(s.n, 1);
	CHECK_INT(s.m[0]->rcpts[0].state, RCPT_PENDING);
	CHECK(queue_due_next(q) <= now + 1);
	{
		struct queue_txn *t = queue_txn_begin(q);

		CHECK_INT(queue_msg_remove(t, s.m[0]->id), QUEUE_OK);
		CHECK_INT(queue_txn_commit(t), QUEUE_OK);
	}
	seen_free(&s);
	drop("hops50", m = hop_msg("s@a.test", 50));
	free(m);
	intake_all(qi);
	queue_msgs_scan(q, 0, seen_cb, &s);
	CHECK_INT(s.n, 1);
	for (size_t i = 0; i < 2 && s.n == 1; i++) {
		const struct queue_rcpt *rc = &s.m[0]->rcpts[i];

		CHECK_INT(rc->state, RCPT_BOUNCED);
		CHECK_STR(rc->dsn_status, "5.4.6");
		CHECK(rc->reply != NULL &&
		    strstr(rc->reply, "mail forwarding loop detected") != NULL);
	}
	/* never delivered: not scheduled; returned now by expiry/ */
	CHECK(queue_due_next(q) == INT64_MAX);
	CHECK(queue_expiry_next(q) <= rq_now());
	seen_free(&s);
	expiry_run(q, cfg, rq_now());
	queue_msgs_scan(q, 0, seen_cb, &s);
	CHECK_INT(s.n, 1); /* the original is gone, its notice is there */
	if (s.n == 1) {
		CHECK_INT(s.m[0]->cls, CFG_DSN);
		CHECK_STR(s.m[0]->sender, "");
		CHECK_INT(s.m[0]->nrcpt, 1);
		CHECK_STR(s.m[0]->rcpts[0].addr, "s@a.test");
		CHECK_INT(
		    queue_body_load(q, s.m[0]->id, &body, &len), QUEUE_OK);
		CHECK(strstr(body, "Status: 5.4.6") != NULL);
		CHECK(strstr(body, "r1@b.test") != NULL);
		/* r2 said NOTIFY=NEVER: not in the notice */
		CHECK(
		    strstr(body, "Final-Recipient: rfc822; r2@b.test") == NULL);
		CHECK(strstr(body, "mail forwarding loop") != NULL);
		free(body);
		{
			struct queue_txn *t = queue_txn_begin(q);

			CHECK_INT(queue_msg_remove(t, s.m[0]->id), QUEUE_OK);
			CHECK_INT(queue_txn_commit(t), QUEUE_OK);
		}
	}
	seen_free(&s);
	/* from the null sender: bounced, and no notice at all */
	drop("hops60null", m = hop_msg("", 60));
	free(m);
	intake_all(qi);
	CHECK(queue_due_next(q) == INT64_MAX);
	expiry_run(q, cfg, rq_now());
	queue_msgs_scan(q, 0, seen_cb, &s);
	CHECK_INT(s.n, 0);
	seen_free(&s);

	/* max_recipients = 3: four go to bad/ with the reason; three (and
	 * a duplicate) are queued */
	drop("four", "To: a@b.test, c@b.test, d@b.test, e@b.test\n\nx\n");
	drop("three", "To: a@b.test, c@b.test, d@b.test, a@B.TEST\n\nx\n");
	intake_all(qi);
	CHECK(bad_has("too many recipients: more than 3 (max_recipients)"));
	queue_msgs_scan(q, 0, seen_cb, &s);
	CHECK_INT(s.n, 1);
	if (s.n == 1)
		CHECK_INT(s.m[0]->nrcpt, 3);
	seen_free(&s);

	queue_intake_close(qi);
	queue_close(q);
	cfg_free(cfg);
}

int
main(void)
{
	char cmd[400];

	snprintf(tmpdir, sizeof(tmpdir), "/tmp/rq-parse-test-XXXXXX");
	if (mkdtemp(tmpdir) == NULL)
		return 2;
	log_set_level(LOG_LVL_ERR);
	test_bare_cr();
	test_hops();
	test_messages();
	test_many_fields();
	test_merges();
	test_stored();
	test_intake();
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	if (system(cmd) != 0)
		return 2;
	return rqtest_done();
}
