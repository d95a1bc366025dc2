/*
 * test_expiry_dsn.c - unit tests of the pure DSN builder: golden files of
 * whole notices (clock and MIME boundary fixed) in tests/e2e/golden/dsn/,
 * the header helpers, the size cap and the cleaning of remote text.
 *
 * Usage: test_expiry_dsn GOLDEN_DIR [--update]
 * With --update the golden files are rewritten instead of compared (then
 * review the diff).  tests/e2e/test_expiry_dsn_parse.py parses every
 * golden file with Python's email package.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "expiry.h"
#include "rqtest.h"

#define NOW 1795000000 /* Wed, 18 Nov 2026 11:06:40 +0000 */
#define ARRIVAL (NOW - 4 * 3600)
#define BOUNDARY "relayq-test-boundary"

static const char *golden_dir;
static bool update;

static const char orig[] =
    "Received: from localhost by relayq.test; Wed, 18 Nov 2026 07:06:40\r\n"
    "From: Alice <alice@example.org>\r\n"
    "To: bob@example.net, carol@example.net\r\n"
    "Subject: Quarterly report\r\n"
    "Message-ID: <q4@example.org>\r\n"
    "Priority: urgent\r\n"
    "\r\n"
    "Hello Bob,\r\n"
    "the numbers are in.\r\n";

/* Reads file PATH into a malloc'ed buffer; NULL when missing. */
static char *
slurp(const char *path, size_t *lenp)
{
	FILE *fp = fopen(path, "rb");
	char *p = NULL;
	size_t n = 0, cap = 0, r;

	if (fp == NULL)
		return NULL;
	do {
		if (n + 4096 > cap) {
			cap = cap ? cap * 2 : 8192;
			p = xrealloc(p, cap);
		}
		r = fread(p + n, 1, cap - n, fp);
		n += r;
	} while (r > 0);
	fclose(fp);
	*lenp = n;
	return p;
}

/* Builds D and compares it with (or, with --update, writes) golden NAME. */
static void
golden(const char *name, const struct expiry_dsn *d)
{
	char path[1024];
	size_t len, glen;
	char *out = expiry_dsn_build(d, &len), *want;

	snprintf(path, sizeof(path), "%s/%s.eml", golden_dir, name);
	/* Every line ends in CRLF, and no bare CR or LF anywhere. */
	for (size_t i = 0; i < len; i++) {
		if (out[i] == '\n' && (i == 0 || out[i - 1] != '\r')) {
			fprintf(stderr, "%s: bare LF at %zu\n", name, i);
			CHECK(0);
			break;
		}
		if (out[i] == '\r' && (i + 1 >= len || out[i + 1] != '\n')) {
			fprintf(stderr, "%s: bare CR at %zu\n", name, i);
			CHECK(0);
			break;
		}
	}
	CHECK(len >= 2 && out[len - 2] == '\r' && out[len - 1] == '\n');
	if (update) {
		FILE *fp = fopen(path, "wb");

		CHECK(fp != NULL);
		if (fp != NULL) {
			fwrite(out, 1, len, fp);
			CHECK(fclose(fp) == 0);
		}
		free(out);
		return;
	}
	want = slurp(path, &glen);
	if (want == NULL) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		CHECK(0);
	} else if (glen != len || memcmp(want, out, len) != 0) {
		fprintf(stderr,
		    "%s: differs from the golden file (run with --update "
		    "and review the diff); got:\n%s\n",
		    path, out);
		CHECK(0);
	} else {
		CHECK(1);
	}
	free(want);
	free(out);
}

/* A 5xx bounce of one recipient, headers returned, with ENVID/ORCPT. */
static void
test_failed_5xx(void)
{
	struct expiry_dsn_rcpt r = {
		.addr = "bob@example.net",
		.orcpt = "rfc822;bob+2Bwork@example.net",
		.action = EXPIRY_ACT_FAILED,
		.status = "5.1.1",
		.remote_mta = "mx.example.net[192.0.2.25]:25",
		.diag = "550 5.1.1 <bob@example.net>: Recipient address "
			"rejected: User unknown in virtual mailbox table",
		.reason = "host mx.example.net[192.0.2.25] said: 550 5.1.1 "
			  "<bob@example.net>: Recipient address rejected: "
			  "User unknown in virtual mailbox table (in reply "
			  "to RCPT TO command)",
		.last_attempt = NOW - 1,
	};
	struct expiry_dsn d = {
		.event = EXPIRY_EV_FAILED,
		.hostname = "relayq.test",
		.queue_id = "00000000000004D2",
		.sender = "alice@example.org",
		.arrival = ARRIVAL,
		.envid = "Q4+2Breport",
		.ret_full = false,
		.msg = orig,
		.msglen = sizeof(orig) - 1,
		.size_limit = 50 * 1024,
		.now = NOW,
		.boundary = BOUNDARY,
		.rcpts = &r,
		.nrcpts = 1,
	};

	golden("failed-5xx", &d);
}

/* A delay warning for two recipients. */
static void
test_delayed(void)
{
	struct expiry_dsn_rcpt r[2] = {
		{
		    .addr = "bob@example.net",
		    .action = EXPIRY_ACT_DELAYED,
		    .status = "4.2.0",
		    .remote_mta = "mx.example.net[192.0.2.25]:25",
		    .diag = "451 4.2.0 Try again later",
		    .reason = "host mx.example.net[192.0.2.25] said: 451 "
			      "4.2.0 Try again later (in reply to RCPT TO "
			      "command)",
		    .last_attempt = NOW - 60,
		    .retry_until = ARRIVAL + 5 * 86400,
		},
		{
		    .addr = "carol@example.net",
		    .action = EXPIRY_ACT_DELAYED,
		    .status = "4.4.1",
		    .reason = "connect to mx.example.net[192.0.2.25]:25: "
			      "Connection refused",
		    .last_attempt = NOW - 60,
		    .retry_until = ARRIVAL + 5 * 86400,
		},
	};
	struct expiry_dsn d = {
		.event = EXPIRY_EV_DELAYED,
		.hostname = "relayq.test",
		.queue_id = "00000000000004D2",
		.sender = "alice@example.org",
		.arrival = ARRIVAL,
		.msg = orig,
		.msglen = sizeof(orig) - 1,
		.size_limit = 50 * 1024,
		.now = NOW,
		.boundary = BOUNDARY,
		.rcpts = r,
		.nrcpts = 2,
	};

	golden("delayed", &d);
}

/* A queuereturn bounce (4.4.7) with the whole message (RET=FULL). */
static void
test_expired_full(void)
{
	struct expiry_dsn_rcpt r[2] = {
		{
		    .addr = "bob@example.net",
		    .action = EXPIRY_ACT_FAILED,
		    .status = "4.4.7",
		    .remote_mta = "mx.example.net[192.0.2.25]:25",
		    .diag = "451 4.2.0 Try again later",
		    .reason = "host mx.example.net[192.0.2.25] said: 451 "
			      "4.2.0 Try again later (in reply to RCPT TO "
			      "command)",
		    .last_attempt = NOW - 60,
		},
		{
		    .addr = "carol@example.net",
		    .action = EXPIRY_ACT_FAILED,
		    .status = "4.4.7",
		},
	};
	struct expiry_dsn d = {
		.event = EXPIRY_EV_FAILED,
		.hostname = "relayq.test",
		.queue_id = "00000000000004D2",
		.sender = "alice@example.org",
		.arrival = NOW - 5 * 86400,
		.ret_full = true,
		.msg = orig,
		.msglen = sizeof(orig) - 1,
		.size_limit = 50 * 1024,
		.now = NOW,
		.boundary = BOUNDARY,
		.rcpts = r,
		.nrcpts = 2,
	};

	golden("expired-full", &d);
}

/* Success notices: delivered, and relayed to a DSN-capable server. */
static void
test_success(void)
{
	struct expiry_dsn_rcpt r = {
		.addr = "bob@example.net",
		.action = EXPIRY_ACT_DELIVERED,
		.status = "2.0.0",
		.remote_mta = "mx.example.net[192.0.2.25]:25",
		.diag = "250 2.0.0 Ok: queued as 4AbC",
		.last_attempt = NOW,
	};
	struct expiry_dsn d = {
		.event = EXPIRY_EV_DELIVERED,
		.hostname = "relayq.test",
		.queue_id = "00000000000004D2",
		.sender = "alice@example.org",
		.arrival = ARRIVAL,
		.msg = orig,
		.msglen = sizeof(orig) - 1,
		.size_limit = 50 * 1024,
		.now = NOW,
		.boundary = BOUNDARY,
		.rcpts = &r,
		.nrcpts = 1,
	};

	golden("delivered", &d);
	r.action = EXPIRY_ACT_RELAYED;
	d.event = EXPIRY_EV_RELAYED;
	golden("relayed", &d);
}

/* A hostile reply, address and original: CR/LF injection, 8-bit bytes,
 * an over-long reply, bare LF line ends, no body. */
static void
test_hostile(void)
{
	static char diag[2000];
	static const char bad[] = "From: x@example.org\n"
				  "Subject: caf\xc3\xa9\n"
				  "Precedence: bulk\n"
				  "\n"
				  "body with bare LF\n"
				  "and a \xff byte\r"
				  "and a bare CR\n";
	struct expiry_dsn_rcpt r = {
		.addr = "evil@example.net\r\nBcc: victim@example.com",
		.orcpt = "rfc822;evil+0D+0ABcc:+20victim@example.com",
		.action = EXPIRY_ACT_FAILED,
		.status = "5.7.1\r\nX: y",
		.remote_mta = "mx\r\n.example.net",
		.diag = diag,
		.last_attempt = NOW,
	};
	struct expiry_dsn d = {
		.event = EXPIRY_EV_FAILED,
		.hostname = "relayq.test",
		.queue_id = "00000000000004D3",
		.sender = "x@example.org\r\nSubject: spoof",
		.arrival = ARRIVAL,
		.envid = "id+0D+0AX-Evil:+20yes",
		.ret_full = true,
		.msg = bad,
		.msglen = sizeof(bad) - 1,
		.size_limit = 50 * 1024,
		.now = NOW,
		.boundary = BOUNDARY,
		.rcpts = &r,
		.nrcpts = 1,
	};

	strcpy(diag, "554 5.7.1 rejected\r\nInjected: header\r\n");
	for (size_t i = strlen(diag); i < sizeof(diag) - 1; i++)
		diag[i] = "abcdefgh "[i % 9];
	diag[sizeof(diag) - 1] = '\0';
	golden("hostile", &d);
	CHECK(expiry_msg_is_bulk(bad, sizeof(bad) - 1));
}

/* The size cap: the original is cut at a line boundary. */
static void
test_size_cap(void)
{
	struct expiry_dsn_rcpt r = {
		.addr = "bob@example.net",
		.action = EXPIRY_ACT_FAILED,
		.status = "5.2.2",
		.diag = "552 5.2.2 mailbox full",
		.last_attempt = NOW,
	};
	struct expiry_dsn d = {
		.event = EXPIRY_EV_FAILED,
		.hostname = "relayq.test",
		.queue_id = "00000000000004D4",
		.sender = "alice@example.org",
		.arrival = ARRIVAL,
		.ret_full = true,
		.size_limit = 1024,
		.now = NOW,
		.boundary = BOUNDARY,
		.rcpts = &r,
		.nrcpts = 1,
	};
	char *big = xmalloc(64 * 1024), *out, *part, *end;
	size_t n = 0, len;

	n += (size_t)sprintf(
	    big, "From: a@example.org\r\nSubject: big\r\n\r\n");
	for (int i = 0; n + 80 < 64 * 1024; i++)
		n += (size_t)sprintf(big + n, "line %05d %s\r\n", i,
		    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
	d.msg = big;
	d.msglen = n;
	golden("size-cap", &d);

	/* The included original is at most 1024 bytes, ends at a line end,
	 * and holds as many whole lines as fit. */
	out = expiry_dsn_build(&d, &len);
	part = strstr(out, "Content-Type: message/rfc822\r\n\r\n");
	CHECK(part != NULL);
	if (part != NULL) {
		part += strlen("Content-Type: message/rfc822\r\n\r\n");
		end = strstr(part, "\r\n--" BOUNDARY "--");
		CHECK(end != NULL);
		if (end != NULL) {
			size_t inc = (size_t)(end - part);

			CHECK(inc <= 1024);
			CHECK(inc > 1024 - 67);
			CHECK(memcmp(part, big, inc) == 0);
			CHECK(part[inc - 1] == '\n');
		}
	}
	free(out);

	/* Headers only, same cap: the whole header section fits. */
	d.ret_full = false;
	out = expiry_dsn_build(&d, &len);
	CHECK(strstr(out, "Subject: big\r\n\r\n--" BOUNDARY "--") != NULL);
	CHECK(strstr(out, "line 00000") == NULL);
	free(out);
	free(big);
}

/* Without a boundary, a random one that the original does not hold. */
static void
test_random_boundary(void)
{
	struct expiry_dsn_rcpt r = { .addr = "b@example.net",
		.action = EXPIRY_ACT_FAILED,
		.status = "5.0.0" };
	struct expiry_dsn d = { .event = EXPIRY_EV_FAILED,
		.hostname = "h.test",
		.queue_id = "1",
		.sender = "a@example.org",
		.msg = orig,
		.msglen = sizeof(orig) - 1,
		.size_limit = 1024,
		.now = NOW,
		.rcpts = &r,
		.nrcpts = 1 };
	size_t l1, l2;
	char *a = expiry_dsn_build(&d, &l1), *b = expiry_dsn_build(&d, &l2);
	char *p = strstr(a, "boundary=\""), *q = strstr(b, "boundary=\"");

	CHECK(p != NULL && q != NULL);
	if (p != NULL && q != NULL)
		CHECK(strncmp(p, q, 40) != 0);
	free(a);
	free(b);
}

/* The header helpers. */
static void
test_headers(void)
{
	static const char m[] = "Subject: one\r\n"
				"X-Long: a\r\n"
				"\t b\r\n"
				"  c\r\n"
				"PRECEDENCE:  List \r\n"
				"Empty:\r\n"
				"\r\n"
				"Precedence: junk\r\n";
	static const struct {
		const char *name;
		const char *want; /* NULL: absent */
	} t[] = {
		{ "Subject", "one" },
		{ "subject", "one" },
		{ "X-Long", "a b c" },
		{ "Precedence", "List" },
		{ "Empty", "" },
		{ "Subj", NULL },
		{ "Missing", NULL },
	};
	char buf[64];

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		bool got = expiry_msg_header_get(
		    m, sizeof(m) - 1, t[i].name, buf, sizeof(buf));

		CHECK_INT(got, t[i].want != NULL);
		if (got && t[i].want != NULL)
			CHECK_STR(buf, t[i].want);
	}
	CHECK_INT(expiry_msg_header_len(m, sizeof(m) - 1),
	    strstr(m, "\r\n\r\n") + 4 - m);
	CHECK_INT(expiry_msg_header_len("A: b\n", 5), 5);
	CHECK_INT(expiry_msg_header_len("A: b\n\nx", 7), 6);
	CHECK(expiry_msg_is_bulk(m, sizeof(m) - 1));
	CHECK(!expiry_msg_is_bulk(orig, sizeof(orig) - 1));
	CHECK(expiry_msg_is_bulk("Precedence: BULK\r\n\r\n", 20));
	CHECK(expiry_msg_is_bulk("Precedence: junk (auto)\n\n", 25));
	CHECK(!expiry_msg_is_bulk("Precedence: bulkish\n\n", 21));
	CHECK(!expiry_msg_is_bulk("Precedence: first-class\n\n", 25));
	CHECK(!expiry_msg_is_bulk("\nPrecedence: bulk\n", 18));
}

int
main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(
		    stderr, "usage: test_expiry_dsn GOLDEN_DIR [--update]\n");
		return 2;
	}
	golden_dir = argv[1];
	update = argc > 2 && strcmp(argv[2], "--update") == 0;
	test_failed_5xx();
	test_delayed();
	test_expired_full();
	test_success();
	test_hostile();
	test_size_cap();
	test_random_boundary();
	test_headers();
	return rqtest_done();
}
