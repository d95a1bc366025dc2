/*
 * test_http_parse.c - the pure parts of the HTTP listener, table-driven:
 * http_listen addresses (and which are loopback: check-config's test),
 * the Authorization header against a token, the /api/queue query
 * values, the text writers (JSON, HTML, Prometheus label values and
 * numbers), the http_token file's first line (cfg), the names intake's
 * refusals are counted under (queue), and the bounded counters of
 * struct http_stats (the failure ring, a domain's last error, the delay
 * histogram).  The end-to-end counterparts are tests/e2e/test_http*.py.
 */
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "cfg_int.h"
#include "http.h"
#include "http_int.h"
#include "rqtest.h"

/* http_listen values: parses?, loopback?, host, port, socket path. */
static void
test_addr(void)
{
	static const struct {
		const char *in;
		int ok;
		int loopback;
		const char *host;
		unsigned port;
		const char *path;
	} t[] = {
		{ "127.0.0.1:9650", 1, 1, "127.0.0.1", 9650, "" },
		{ "127.1.2.3:80", 1, 1, "127.1.2.3", 80, "" },
		{ "localhost:9650", 1, 1, "127.0.0.1", 9650, "" },
		{ "LOCALHOST:1", 1, 1, "127.0.0.1", 1, "" },
		{ "[::1]:9650", 1, 1, "::1", 9650, "" },
		{ "/run/relayq/http.sock", 1, 1, "", 0,
		    "/run/relayq/http.sock" },
		{ ":9650", 1, 0, "", 9650, "" },
		{ "*:9650", 1, 0, "", 9650, "" },
		{ "0.0.0.0:9650", 1, 0, "", 9650, "" },
		{ "[::]:9650", 1, 0, "::", 9650, "" },
		{ "10.1.2.3:9650", 1, 0, "10.1.2.3", 9650, "" },
		{ "[2001:db8::1]:443", 1, 0, "2001:db8::1", 443, "" },
		{ "128.0.0.1:9650", 1, 0, "128.0.0.1", 9650, "" },
		{ "127.0.0.1", 0, 0, NULL, 0, NULL },
		{ "127.0.0.1:", 0, 0, NULL, 0, NULL },
		{ "127.0.0.1:0", 0, 0, NULL, 0, NULL },
		{ "127.0.0.1:65536", 0, 0, NULL, 0, NULL },
		{ "127.0.0.1:99999", 0, 0, NULL, 0, NULL },
		{ "127.0.0.1:96x0", 0, 0, NULL, 0, NULL },
		{ "127.0.0.1:-1", 0, 0, NULL, 0, NULL },
		{ "example.org:9650", 0, 0, NULL, 0, NULL },
		{ "127.0.0.1.5:9650", 0, 0, NULL, 0, NULL },
		{ "[::1:9650", 0, 0, NULL, 0, NULL },
		{ "[::1]9650", 0, 0, NULL, 0, NULL },
		{ "[]:9650", 0, 0, NULL, 0, NULL },
		{ "[127.0.0.1]:9650", 0, 0, NULL, 0, NULL },
		{ "::1:9650", 0, 0, NULL, 0, NULL },
		{ "", 0, 0, NULL, 0, NULL },
		{ "relative/path", 0, 0, NULL, 0, NULL },
	};
	char longpath[300];

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct http_addr a;
		const char *why = NULL;
		int r = http_addr_parse(t[i].in, &a, &why);

		if (!t[i].ok) {
			CHECK_INT(r, -1);
			CHECK(why != NULL);
			continue;
		}
		CHECK_INT(r, 0);
		CHECK_INT(a.loopback, t[i].loopback);
		CHECK_STR(a.host, t[i].host);
		CHECK_INT(a.port, t[i].port);
		CHECK_STR(a.path, t[i].path);
		CHECK_INT(a.unix_path, t[i].path[0] != '\0');
	}
	memset(longpath, 'a', sizeof(longpath) - 1);
	longpath[0] = '/';
	longpath[sizeof(longpath) - 1] = '\0';
	{
		struct http_addr a;
		const char *why = NULL;

		CHECK_INT(http_addr_parse(longpath, &a, &why), -1);
	}
}

/* Authorization header values against the token "s3cr.et-_~+/=". */
static void
test_auth(void)
{
	static const struct {
		const char *hdr;
		int ok;
	} t[] = {
		{ "Bearer s3cr.et-_~+/=", 1 },
		{ "bearer s3cr.et-_~+/=", 1 },
		{ "BEARER   s3cr.et-_~+/=", 1 },
		{ "Bearer s3cr.et-_~+/", 0 }, /* a prefix */
		{ "Bearer s3cr.et-_~+/==", 0 }, /* longer */
		{ "Bearer S3cr.et-_~+/=", 0 },
		{ "Bearer ", 0 },
		{ "Bearer", 0 },
		{ "s3cr.et-_~+/=", 0 },
		{ "Token s3cr.et-_~+/=", 0 },
		{ "", 0 },
		/* Basic: any user, the token as the password */
		/* "prom:s3cr.et-_~+/=" */
		{ "Basic cHJvbTpzM2NyLmV0LV9+Ky89", 1 },
		/* ":s3cr.et-_~+/=" */
		{ "Basic OnMzY3IuZXQtX34rLz0=", 1 },
		/* "prom:s3cr.et" */
		{ "Basic cHJvbTpzM2NyLmV0", 0 },
		/* "s3cr.et-_~+/=" without a colon */
		{ "Basic czNjci5ldC1ffisvPQ==", 0 },
		{ "Basic !!!!", 0 },
		{ "Basic cHJvbTpzM2NyLmV0LV9+Ky8", 0 }, /* not padded */
		{ "Basic =cHJvbTpzM2NyLmV0LV9+Ky89", 0 },
		{ "Basic ", 0 },
	};

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		bool r = http_auth_ok(t[i].hdr, "s3cr.et-_~+/=");

		if ((int)r != t[i].ok)
			fprintf(stderr, "auth \"%s\"\n", t[i].hdr);
		CHECK_INT(r, t[i].ok);
	}
	CHECK(!http_auth_ok(NULL, "x"));
	CHECK(!http_auth_ok("Bearer x", NULL));
	CHECK(!http_auth_ok("Bearer ", ""));
}

/* The Host names a listener without a token answers. */
static void
test_host(void)
{
	static const struct {
		const char *host;
		int ok;
	} t[] = {
		{ NULL, 1 },
		{ "127.0.0.1", 1 },
		{ "127.0.0.1:9650", 1 },
		{ "10.1.2.3:80", 1 },
		{ "[::1]", 1 },
		{ "[::1]:9650", 1 },
		{ "localhost", 1 },
		{ "LOCALHOST:9650", 1 },
		{ "localhost.:9650", 1 },
		{ "app.localhost", 1 },
		{ "mx1.example.org", 1 },
		{ "MX1.Example.ORG.:9650", 1 },
		{ "evil.example", 0 },
		{ "evil.example:9650", 0 },
		{ "mx1.example.org.evil.example", 0 },
		{ "localhost.evil.example", 0 },
		{ "evillocalhost", 0 },
		{ "", 0 },
		{ ":9650", 0 },
		{ ".", 0 },
		{ "127.0.0.1:", 0 },
		{ "127.0.0.1:99999", 0 },
		{ "127.0.0.1:80x", 0 },
		{ "[::1", 0 },
		{ "[::1]x", 0 },
		{ "[evil.example]", 0 },
		{ "[::1]:0", 0 },
	};

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		bool r = http_host_ok(t[i].host, "mx1.example.org");

		if ((int)r != t[i].ok)
			fprintf(stderr, "host \"%s\"\n",
			    t[i].host ? t[i].host : "(none)");
		CHECK_INT(r, t[i].ok);
	}
	CHECK(!http_host_ok("mx1.example.org", ""));
	CHECK(!http_host_ok("mx1.example.org", NULL));
	CHECK(http_host_ok("localhost", NULL));
}

/* /api/queue's query values. */
static void
test_query(void)
{
	static const struct {
		const char *cls;
		int ok, want;
	} c[] = {
		{ NULL, 1, -1 },
		{ "urgent", 1, CFG_URGENT },
		{ "normal", 1, CFG_NORMAL },
		{ "non-urgent", 1, CFG_NONURGENT },
		{ "dsn", 1, CFG_DSN },
		{ "Urgent", 0, 0 },
		{ "", 0, 0 },
		{ "bulk", 0, 0 },
	};
	static const struct {
		const char *st;
		int ok, want;
	} s[] = {
		{ NULL, 1, -1 },
		{ "pending", 1, RCPT_PENDING },
		{ "deferred", 1, RCPT_DEFERRED },
		{ "delivered", 1, RCPT_DELIVERED },
		{ "bounced", 1, RCPT_BOUNCED },
		{ "held", 1, QUEUE_NSTATE },
		{ "in_flight", 0, 0 },
		{ "", 0, 0 },
	};
	static const struct {
		const char *v;
		int ok;
		size_t want;
	} l[] = {
		{ NULL, 1, 100 },
		{ "1", 1, 1 },
		{ "1000", 1, 1000 },
		{ "0", 0, 0 },
		{ "1001", 0, 0 },
		{ "99999", 0, 0 },
		{ "-5", 0, 0 },
		{ "10x", 0, 0 },
		{ "", 0, 0 },
	};
	uint64_t id;
	size_t lim;
	int v;

	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		CHECK_INT(http_query_class(c[i].cls, &v), c[i].ok);
		if (c[i].ok)
			CHECK_INT(v, c[i].want);
	}
	for (size_t i = 0; i < sizeof(s) / sizeof(s[0]); i++) {
		CHECK_INT(http_query_state(s[i].st, &v), s[i].ok);
		if (s[i].ok)
			CHECK_INT(v, s[i].want);
	}
	for (size_t i = 0; i < sizeof(l) / sizeof(l[0]); i++) {
		CHECK_INT(http_query_limit(l[i].v, &lim), l[i].ok);
		if (l[i].ok)
			CHECK_INT(lim, l[i].want);
	}
	CHECK(http_query_after(NULL, &id) && id == 0);
	CHECK(http_query_after("000661631E40A67F", &id) &&
	    id == 0x000661631E40A67Full);
	CHECK(!http_query_after("xyz", &id));
	CHECK(!http_query_after("", &id));
}

/* Runs WRITE(buf, IN) and compares the output with WANT. */
static void
check_writer(void (*write)(struct evbuffer *, const char *), const char *in,
    const char *want)
{
	struct evbuffer *b = evbuffer_new();
	size_t n;
	char *s;

	write(b, in);
	n = evbuffer_get_length(b);
	s = calloc(1, n + 1);
	evbuffer_remove(b, s, n);
	CHECK_STR(s, want);
	free(s);
	evbuffer_free(b);
}

/* The writers: JSON as mailq --json, HTML, label values, numbers. */
static void
test_writers(void)
{
	static const struct {
		const char *in, *json, *html, *label;
	} t[] = {
		{ "plain", "\"plain\"", "plain", "plain" },
		{ "a\"b\\c", "\"a\\\"b\\\\c\"", "a&quot;b\\c", "a\\\"b\\\\c" },
		{ "<x>&'y'", "\"<x>&'y'\"", "&lt;x&gt;&amp;&#39;y&#39;",
		    "<x>&'y'" },
		{ "l1\nl2\r\t", "\"l1\\u000al2\\u000d\\u0009\"", "l1 l2  ",
		    "l1\\nl2\r\t" },
		{ "caf\xc3\xa9", "\"caf\xc3\xa9\"", "caf\xc3\xa9",
		    "caf\xc3\xa9" },
		/* a byte that is no UTF-8: its code point, as mailq */
		{ "\xe9t\xe9", "\"\\u00e9t\\u00e9\"", "\xe9t\xe9",
		    "\xe9t\xe9" },
		{ "\x7f", "\"\\u007f\"", " ", "\x7f" },
		{ "", "\"\"", "", "" },
	};
	static const struct {
		double v;
		const char *want;
	} num[] = {
		{ 0, "0" },
		{ 42, "42" },
		{ 17179869184.0, "17179869184" },
		{ 0.25, "0.25" },
		{ 1.5e-7, "1.4999999999999999e-07" },
		{ 1.0 / 0.0, "+Inf" },
		{ -1.0 / 0.0, "-Inf" },
		{ 0.0 / 0.0, "NaN" },
	};

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		check_writer(http_json_str, t[i].in, t[i].json);
		check_writer(http_html_str, t[i].in, t[i].html);
		check_writer(http_prom_label, t[i].in, t[i].label);
	}
	check_writer(http_json_str, NULL, "null");
	for (size_t i = 0; i < sizeof(num) / sizeof(num[0]); i++) {
		struct evbuffer *b = evbuffer_new();
		char s[64] = "";

		http_prom_value(b, num[i].v);
		evbuffer_remove(b, s, sizeof(s) - 1);
		CHECK_STR(s, num[i].want);
		evbuffer_free(b);
	}
}

/* The http_token file's first line (cfg_files.c). */
static void
test_token(void)
{
	static const struct {
		const char *in;
		const char *want; /* NULL: refused */
	} t[] = {
		{ "abc123\n", "abc123" },
		{ "  abc.DEF-_~+/=  \r\nsecond line\n", "abc.DEF-_~+/=" },
		{ "tok", "tok" },
		{ "\n", NULL },
		{ "", NULL },
		{ "   \n", NULL },
		{ "two words\n", NULL },
		{ "t\xc3\xa9st\n", NULL },
		{ "semi;colon", NULL },
		{ "quo\"te", NULL },
	};

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		size_t n = strlen(t[i].in);
		char *buf = malloc(n + 1);
		const char *tok = NULL, *why = NULL;
		int r;

		memcpy(buf, t[i].in, n);
		r = cfg_http_token_parse(buf, n, &tok, &why);
		if (t[i].want == NULL) {
			CHECK_INT(r, -1);
			CHECK(why != NULL);
		} else {
			CHECK_INT(r, 0);
			CHECK_STR(tok, t[i].want);
		}
		free(buf);
	}
	{
		char big[1100];

		memset(big, 'a', sizeof(big));
		{
			const char *tok, *why;
			char *buf = malloc(sizeof(big) + 1);

			memcpy(buf, big, sizeof(big));
			CHECK_INT(
			    cfg_http_token_parse(buf, sizeof(big), &tok, &why),
			    -1);
			free(buf);
		}
	}
}

/* A reload keeps the running listener: a new config may not drop the
 * token of one that is not loopback, whatever its own http_listen. */
static void
test_reload_keeps_token(void)
{
	static const char conf[] = "http_listen = 127.0.0.1:9650\n";
	struct cfg *cfg;
	char err[512];

	CHECK_INT(
	    cfg_parse_buf("n.conf", conf, strlen(conf), &cfg, err, sizeof(err)),
	    CFG_OK);
	CHECK_INT(http_cfg_check(cfg, err, sizeof(err)), 0);
	CHECK_INT(
	    http_cfg_check_at(cfg, "127.0.0.1:9650", err, sizeof(err)), 0);
	CHECK_INT(http_cfg_check_at(cfg, "0.0.0.0:9650", err, sizeof(err)), -1);
	CHECK(strstr(err, "the listener until a restart") != NULL);
	cfg_free(cfg);
}

/* The bad/ reasons intake's refusals are counted under (queue). */
static void
test_bad_reasons(void)
{
	static const struct {
		const char *why;
		const char *name;
	} t[] = {
		{ "not a regular file: fifo", "not_regular_file" },
		{ "not a regular file: symlink", "not_regular_file" },
		{ "file has 2 hard links", "not_regular_file" },
		{ "cannot open: Permission denied", "not_regular_file" },
		{ "empty file", "empty" },
		{ "message too large: 99 bytes, max_message_size is 10",
		    "too_large" },
		{ "no recipients", "no_recipients" },
		{ "too many recipients: more than 5 (max_recipients)",
		    "too_many_recipients" },
		{ "changed after it was queued as 0001 (the queued copy is "
		  "what was read)",
		    "changed" },
		{ "unparseable address", "malformed" },
		{ "not a message: no header field at the start", "malformed" },
		{ "", "malformed" },
	};

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		CHECK_STR(queue_bad_reason_name(queue_bad_reason(t[i].why)),
		    t[i].name);
	CHECK_STR(queue_bad_reason_name(QUEUE_NBAD), "malformed");
}

/* The histogram's buckets: a delay on a bound is in it, past the last
 * in +Inf; the tally slots of the classes do not overlap. */
static void
test_delay_buckets(void)
{
	static const struct {
		int64_t us;
		unsigned bucket;
	} t[] = {
		{ -5, 0 },
		{ 0, 0 },
		{ 500000, 0 },
		{ 1000000, 0 },
		{ 1000001, 1 },
		{ 3000000, 1 },
		{ 400000000, 6 },
		{ 172800000000, 13 },
		{ 604800000000, 15 },
		{ 604800000001, 16 },
		{ INT64_MAX, 16 },
	};
	bool used[QUEUE_TALLY_MAX] = { false };

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		CHECK_INT(http_delay_bucket(t[i].us), t[i].bucket);
	for (int c = 0; c < CFG_NCLASS; c++) {
		unsigned slots[HTTP_TALLY_CLASS], n = 0;

		for (int k = 0; k < HTTP_NRESULT; k++)
			slots[n++] = HTTP_TALLY_RESULT(c, k);
		for (int b = 0; b <= HTTP_DELAY_NB; b++)
			slots[n++] = HTTP_TALLY_DELAY(c, b);
		slots[n++] = HTTP_TALLY_DELAY_MS(c);
		CHECK_INT(n, HTTP_TALLY_CLASS);
		for (unsigned i = 0; i < n; i++) {
			CHECK(slots[i] >= QTALLY_RUNNER &&
			    slots[i] < QUEUE_TALLY_MAX && !used[slots[i]]);
			if (slots[i] < QUEUE_TALLY_MAX)
				used[slots[i]] = true;
		}
	}
}

/* What the status page keeps: the failure ring, the last error of a
 * domain, the results per step, bounded. */
static void
test_stats(void)
{
	struct http_stats *s = http_stats_new();
	int64_t now = 1700000000;
	char rcpt[64], dom[64];
	const struct http_err *e;

	http_stats_result(s, CFG_URGENT, HTTP_SENT, now * 1000000 + 500000, "A",
	    "u@x.example", "2.0.0", "250 ok");
	http_stats_result(s, CFG_URGENT, HTTP_SENT, now * 1000000, "A",
	    "u@x.example", "2.0.0", "250 ok");
	http_stats_result(s, CFG_URGENT, HTTP_SENT, now * 1000000, "A",
	    "u@x.example", "2.0.0", "250 ok");
	http_stats_result(s, CFG_NORMAL, HTTP_BOUNCED, now * 1000000, "B",
	    "v@Y.Example", "5.1.1", "550 no\r\nsuch user");
	http_stats_result(s, CFG_NORMAL, HTTP_DEFERRED, now * 1000000, "C",
	    "w@y.example", "4.4.1", "connection refused");
	CHECK_INT(s->nfails, 2);
	/* the domain is lower-cased, the reason stripped of CR/LF */
	e = http_stats_err(s, "y.example");
	CHECK(e != NULL);
	CHECK_STR(e ? e->why : NULL, "connection refused");
	CHECK_STR(e ? e->dsn : NULL, "4.4.1");
	CHECK_STR(s->fails[0].why, "550 no  such user");
	CHECK(http_stats_err(s, "x.example") == NULL);
	CHECK(http_stats_slot(s, now) != NULL &&
	    http_stats_slot(s, now)->n[HTTP_SENT] == 3);
	CHECK(http_stats_slot(s, now + HTTP_RING_STEP) == NULL);
	/* bounded: the ring keeps the last HTTP_FAIL_MAX, the domains the
	 * last HTTP_ERR_MAX */
	for (int i = 0; i < HTTP_ERR_MAX + 10; i++) {
		snprintf(rcpt, sizeof(rcpt), "r@d%d.example", i);
		http_stats_result(s, CFG_DSN, HTTP_DEFERRED, now * 1000000, "D",
		    rcpt, "4.0.0", rcpt);
	}
	CHECK_INT(s->nfails, HTTP_FAIL_MAX);
	CHECK_STR(s->fails[(s->fnext + HTTP_FAIL_MAX - 1) % HTTP_FAIL_MAX].rcpt,
	    rcpt);
	CHECK(http_stats_err(s, "y.example") == NULL); /* evicted */
	CHECK(http_stats_err(s, "d9.example") == NULL);
	snprintf(dom, sizeof(dom), "d%d.example", HTTP_ERR_MAX + 9);
	CHECK(http_stats_err(s, dom) != NULL);
	snprintf(dom, sizeof(dom), "d%d.example", 10);
	CHECK(http_stats_err(s, dom) != NULL);
	/* the chart samples */
	{
		uint64_t m[CFG_NCLASS] = { 1, 2, 3, 4 };

		http_stats_sample(s, m, now + 3 * HTTP_RING_STEP);
		CHECK(http_stats_slot(s, now + 3 * HTTP_RING_STEP)->sampled);
		CHECK_INT(
		    http_stats_slot(s, now + 3 * HTTP_RING_STEP)->msgs[3], 4);
		/* an hour later the slot is another's */
		CHECK(http_stats_slot(s,
			  now + 3 * HTTP_RING_STEP +
			      HTTP_RING * HTTP_RING_STEP) == NULL);
	}
	http_stats_free(s);
}

int
main(void)
{
	test_addr();
	test_auth();
	test_host();
	test_query();
	test_writers();
	test_token();
	test_reload_keeps_token();
	test_bad_reasons();
	test_delay_buckets();
	test_stats();
	return rqtest_done();
}
