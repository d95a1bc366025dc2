/*
 * test_cfg.c - table-driven unit tests for the config parser: the
 * interval syntax, every value type, fallbacks (domain -> global, class ->
 * plain -> class default, .first -> plain), and every error case.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfg.h"
#include "rqtest.h"

static const struct {
	const char *in;
	int64_t unit;
	bool now;
	int64_t want; /* -1: must fail */
	const char *why; /* substring of the error */
} intervals[] = {
	{ "3d22h4s", 60, false, 338404, NULL },
	{ "90s", 60, false, 90, NULL },
	{ "1w", 60, false, 604800, NULL },
	{ "5", 60, false, 300, NULL },
	{ "5", 3600, false, 18000, NULL },
	{ "5", 86400, false, 432000, NULL },
	{ "0", 3600, false, 0, NULL },
	{ "1h30m", 1, false, 5400, NULL },
	{ "2H", 1, false, 7200, NULL },
	{ "now", 86400, true, 0, NULL },
	{ "NOW", 86400, true, 0, NULL },
	{ "now", 86400, false, -1, "not allowed" },
	{ "", 60, false, -1, "empty" },
	{ "-5m", 60, false, -1, "negative" },
	{ "5q", 60, false, -1, "unknown unit" },
	{ "5m3", 60, false, -1, "without a unit" },
	{ "5m!", 60, false, -1, "trailing garbage" },
	{ "5 m", 60, false, -1, "trailing garbage" },
	{ "m5", 60, false, -1, "start with a number" },
	{ "99999999999999999999s", 1, false, -1, "overflows" },
	{ "9223372036854775807w", 1, false, -1, "overflows" },
	{ "153722867280912930w", 1, false, -1, "overflows" },
	{ "9223372036854775807s1s", 1, false, -1, "overflows" },
};

static void
test_intervals(void)
{
	for (size_t i = 0; i < sizeof(intervals) / sizeof(intervals[0]); i++) {
		int64_t secs = -2;
		const char *why = NULL;
		int r = cfg_interval_parse(intervals[i].in,
		    strlen(intervals[i].in), intervals[i].unit,
		    intervals[i].now, &secs, &why);

		if (intervals[i].want >= 0) {
			CHECK_INT(r, 0);
			CHECK_INT(secs, intervals[i].want);
		} else {
			CHECK_INT(r, -1);
			CHECK(why != NULL &&
			    strstr(why, intervals[i].why) != NULL);
			if (why == NULL ||
			    strstr(why, intervals[i].why) == NULL)
				fprintf(stderr, "  input \"%s\": %s\n",
				    intervals[i].in, why ? why : "(null)");
		}
	}
}

/* rq_utoa: decimal digits without a NUL, against printf. */
static void
test_utoa(void)
{
	static const uint64_t v[] = { 0, 7, 10, 99, 4096, 1000000007,
		UINT64_MAX };
	char got[32], want[32];

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		size_t n;

		memset(got, 'x', sizeof(got));
		n = rq_utoa(got, v[i]);
		snprintf(want, sizeof(want), "%llu", (unsigned long long)v[i]);
		CHECK_INT(n, strlen(want));
		CHECK(got[n] == 'x'); /* nothing beyond the digits */
		got[n] = '\0';
		CHECK_STR(got, want);
	}
}

static void
test_interval_format(void)
{
	static const struct {
		int64_t secs;
		const char *want;
	} t[] = { { 0, "0s" }, { 59, "59s" }, { 338404, "3d22h4s" },
		{ 604800, "1w" }, { 3661, "1h1m1s" } };
	char buf[64];

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		int64_t back;
		const char *why;

		cfg_interval_format(t[i].secs, buf, sizeof(buf));
		CHECK_STR(buf, t[i].want);
		CHECK_INT(
		    cfg_interval_parse(buf, strlen(buf), 1, false, &back, &why),
		    0);
		CHECK_INT(back, t[i].secs);
	}
}

static void
test_classes(void)
{
	CHECK_INT(cfg_class_parse("urgent", 6), CFG_URGENT);
	CHECK_INT(cfg_class_parse(" Non-Urgent \r\n", 14), CFG_NONURGENT);
	CHECK_INT(cfg_class_parse("NORMAL", 6), CFG_NORMAL);
	CHECK_INT(cfg_class_parse("high", 4), -1);
	CHECK_INT(cfg_class_parse("", 0), -1);
	CHECK_STR(cfg_class_name(CFG_NONURGENT), "non-urgent");
}

/* Parses TEXT; returns the cfg or NULL with the error in ERR. */
static struct cfg *
parse(const char *text, char *err, size_t len)
{
	struct cfg *cfg = NULL;

	err[0] = '\0';
	if (cfg_parse_buf("t.conf", text, strlen(text), &cfg, err, len) !=
	    CFG_OK)
		return NULL;
	return cfg;
}

static const struct {
	const char *text;
	const char *err; /* exact expected message */
} bad[] = {
	{ "bogus = 1\n", "t.conf:1: unknown key \"bogus\"" },
	{ "\n\nmax_connections = ten\n",
	    "t.conf:3: bad value for max_connections: \"ten\": not a number" },
	{ "max_connections = 5\nmax_connections = 6\n",
	    "t.conf:2: duplicate key \"max_connections\" (first set on line "
	    "1)" },
	{ "[domain]\n",
	    "t.conf:1: bad section: [domain] (expected [domain "
	    "NAME])" },
	{ "[global]\n",
	    "t.conf:1: bad section: [global] (expected [domain "
	    "NAME])" },
	{ "[domain a..b]\n",
	    "t.conf:1: bad domain name in section: "
	    "[domain a..b]" },
	{ "[domain x.test\n",
	    "t.conf:1: bad section header: [domain "
	    "x.test" },
	{ "[domain x.test]\n[domain X.TEST]\n",
	    "t.conf:2: duplicate section [domain x.test]" },
	{ "timeout.rcpt = 99999999999999999999\n",
	    "t.conf:1: bad value for timeout.rcpt: \"99999999999999999999\": "
	    "interval overflows" },
	{ "timeout.rcpt = -5\n",
	    "t.conf:1: bad value for timeout.rcpt: "
	    "\"-5\": negative interval" },
	{ "max_connections = -5\n",
	    "t.conf:1: bad value for "
	    "max_connections: \"-5\": negative value" },
	{ "timeout.rcpt = 5y\n",
	    "t.conf:1: bad value for timeout.rcpt: "
	    "\"5y\": unknown unit (use s, m, h, d or w)" },
	{ "timeout.rcpt = 5m junk\n",
	    "t.conf:1: bad value for "
	    "timeout.rcpt: \"5m junk\": trailing garbage" },
	{ "max_connections = 5x\n",
	    "t.conf:1: bad value for "
	    "max_connections: \"5x\": trailing garbage" },
	{ "max_connections = 0\n",
	    "t.conf:1: bad value for "
	    "max_connections: \"0\": out of range (1..100000)" },
	{ "max_message_size = 5q\n",
	    "t.conf:1: bad value for "
	    "max_message_size: \"5q\": unknown size unit (use k, m, g or t)" },
	{ "max_message_size = 99999999999g\n",
	    "t.conf:1: bad value for "
	    "max_message_size: \"99999999999g\": size overflows" },
	{ "timeout.queuewarn = now\n",
	    "t.conf:1: bad value for "
	    "timeout.queuewarn: \"now\": \"now\" is not allowed here" },
	{ "timeout.rcpt = now\n",
	    "t.conf:1: bad value for timeout.rcpt: "
	    "\"now\": \"now\" is not allowed here" },
	{ "spool_dir\n", "t.conf:1: expected \"key = value\": spool_dir" },
	{ "= 5\n", "t.conf:1: missing key before \"=\"" },
	{ "spool_dir = relative/path\n",
	    "t.conf:1: bad value for spool_dir: "
	    "\"relative/path\": not an absolute path" },
	{ "tls = sometimes\n",
	    "t.conf:1: bad value for tls: \"sometimes\": "
	    "expected none, may, encrypt, verify, dane or dane-only" },
	{ "notify_postmaster = maybe\n",
	    "t.conf:1: bad value for "
	    "notify_postmaster: \"maybe\": expected yes or no" },
	{ "relayhost = [x.test\n",
	    "t.conf:1: bad value for relayhost: "
	    "\"[x.test\": missing ]" },
	{ "relayhost = [x.test]:99999\n",
	    "t.conf:1: bad value for "
	    "relayhost: \"[x.test]:99999\": port out of range (1..65535)" },
	{ "relayhost = x.test:25x\n",
	    "t.conf:1: bad value for relayhost: "
	    "\"x.test:25x\": trailing garbage after port" },
	{ "relayhost = x te:25\n",
	    "t.conf:1: bad value for relayhost: "
	    "\"x te:25\": bad character in host name" },
	{ "max_message_rate = 100\n",
	    "t.conf:1: bad value for "
	    "max_message_rate: \"100\": expected N/unit, as 100/s" },
	{ "max_message_rate = 100/y\n",
	    "t.conf:1: bad value for "
	    "max_message_rate: \"100/y\": unknown unit (use s, m, h, d or "
	    "w)" },
	{ "priority_weights = urgent=8 high=2\n",
	    "t.conf:1: bad value for "
	    "priority_weights: \"urgent=8 high=2\": expected urgent=N "
	    "normal=N non-urgent=N" },
	{ "priority_weights = urgent=0 normal=0 non-urgent=0\n",
	    "t.conf:1: bad value for priority_weights: \"urgent=0 normal=0 "
	    "non-urgent=0\": all weights are zero" },
	{ "[domain x.test]\nspool_dir = /x\n",
	    "t.conf:2: spool_dir cannot be set in a [domain] section" },
	{ "[domain x.test]\ntimeout.queuewarn = 1h\n",
	    "t.conf:2: timeout.queuewarn cannot be set in a [domain] section" },
	{ "timeout.rcpt.sometimes = 5m\n",
	    "t.conf:1: unknown key \"timeout.rcpt.sometimes\"" },
	{ "timeout.queuewarn.first = 5m\n",
	    "t.conf:1: unknown key \"timeout.queuewarn.first\"" },
	{ "max_connections.urgent = 5\n",
	    "t.conf:1: unknown key \"max_connections.urgent\"" },
	{ "timeout.rcpt.first.first = 5m\n",
	    "t.conf:1: unknown key \"timeout.rcpt.first.first\"" },
	{ "timeout.iconnect = 5s\ntimeout.connect.first = 6s\n",
	    "t.conf:2: duplicate key \"timeout.connect.first\" (first set on "
	    "line 1)" },
	{ "retry.min = 2h\nretry.max = 1h\n",
	    "t.conf:2: retry.max (3600s) is less than retry.min (7200s)" },
	{ "[domain a.test]\nretry.min = 5h\n",
	    "t.conf:2: retry.max (14400s) is less than retry.min (18000s) in "
	    "[domain a.test]" },
	/* the key as written, not the one it is another name for */
	{ "timeout.iconnect = 5x\n",
	    "t.conf:1: bad value for timeout.iconnect: \"5x\": unknown unit "
	    "(use s, m, h, d or w)" },
};

static void
test_errors(void)
{
	char err[512];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct cfg *cfg = parse(bad[i].text, err, sizeof(err));

		CHECK(cfg == NULL);
		CHECK_STR(err, bad[i].err);
		cfg_free(cfg);
	}
	/* A NUL byte anywhere is an error, never a crash. */
	{
		const char text[] = "spool_dir = /a\0b\n";
		struct cfg *cfg = NULL;

		CHECK_INT(cfg_parse_buf("t.conf", text, sizeof(text) - 1, &cfg,
			      err, sizeof(err)),
		    CFG_ERR_SYNTAX);
		CHECK_STR(err, "t.conf:1: NUL byte in line");
	}
	/* A missing file names the file and no line. */
	{
		struct cfg *cfg = NULL;

		CHECK_INT(cfg_load("/nonexistent/relayq.conf", &cfg, err,
			      sizeof(err)),
		    CFG_ERR_FILE);
		CHECK_STR(err,
		    "/nonexistent/relayq.conf: No such file or "
		    "directory");
	}
}

static void
test_defaults(void)
{
	char err[256];
	struct cfg *cfg = parse("# empty\n\n", err, sizeof(err));
	const struct cfg_scope *g;

	CHECK(cfg != NULL);
	if (cfg == NULL)
		return;
	g = cfg_scope(cfg, NULL);
	CHECK_STR(cfg_str(g, CFG_SPOOL_DIR), "/var/spool/relayq");
	CHECK_STR(cfg_str(g, CFG_QUEUE_DIR), "/var/lib/relayq");
	CHECK(cfg_str(g, CFG_HOSTNAME)[0] != '\0');
	CHECK_INT(cfg_time(g, CFG_T_QUEUEWARN, CFG_URGENT, false), 3600);
	CHECK_INT(cfg_time(g, CFG_T_QUEUEWARN, CFG_NORMAL, false), 4 * 3600);
	CHECK_INT(
	    cfg_time(g, CFG_T_QUEUEWARN, CFG_NONURGENT, false), 12 * 3600);
	CHECK_INT(cfg_time(g, CFG_T_QUEUERETURN, CFG_URGENT, false), 2 * 86400);
	CHECK_INT(cfg_time(g, CFG_T_QUEUERETURN, CFG_NORMAL, false), 5 * 86400);
	CHECK_INT(
	    cfg_time(g, CFG_T_QUEUERETURN, CFG_NONURGENT, false), 7 * 86400);
	CHECK_INT(cfg_time(g, CFG_T_QUEUERETURN, CFG_DSN, false), 5 * 86400);
	CHECK_INT(cfg_time(g, CFG_T_CONNECT, CFG_NORMAL, false), 30);
	CHECK_INT(cfg_time(g, CFG_T_CONNECT, CFG_NORMAL, true), 10);
	CHECK_INT(cfg_time(g, CFG_T_INITIAL, CFG_NORMAL, false), 300);
	CHECK_INT(cfg_time(g, CFG_T_HELO, CFG_NORMAL, false), 300);
	CHECK_INT(cfg_time(g, CFG_T_MAIL, CFG_NORMAL, false), 300);
	CHECK_INT(cfg_time(g, CFG_T_RCPT, CFG_NORMAL, true), 300);
	CHECK_INT(cfg_time(g, CFG_T_DATAINIT, CFG_NORMAL, false), 120);
	CHECK_INT(cfg_time(g, CFG_T_DATABLOCK, CFG_NORMAL, false), 180);
	CHECK_INT(cfg_time(g, CFG_T_DATAFINAL, CFG_NORMAL, false), 600);
	CHECK_INT(cfg_time(g, CFG_T_RSET, CFG_NORMAL, false), 300);
	CHECK_INT(cfg_time(g, CFG_T_QUIT, CFG_NORMAL, false), 120);
	CHECK_INT(cfg_time(g, CFG_T_MISC, CFG_NORMAL, false), 120);
	CHECK_INT(cfg_time(g, CFG_T_STARTTLS, CFG_NORMAL, false), 60);
	CHECK_INT(cfg_time(g, CFG_T_HOSTSTATUS, CFG_NORMAL, false), 1800);
	CHECK_INT(cfg_time(g, CFG_RETRY_MIN, CFG_NORMAL, false), 300);
	CHECK_INT(cfg_time(g, CFG_RETRY_MAX, CFG_NORMAL, false), 4 * 3600);
	CHECK_INT(cfg_int(g, CFG_MAX_CONNECTIONS), 20);
	CHECK_INT(cfg_int(g, CFG_MAX_DELIVERIES_PER_CONN), 0);
	CHECK_INT(cfg_int(g, CFG_MAX_RCPTS_PER_TXN), 100);
	CHECK_INT(cfg_int(g, CFG_TLS), CFG_TLS_MAY);
	CHECK_INT(cfg_int(g, CFG_MAX_MESSAGE_SIZE), 50 * 1024 * 1024);
	CHECK_STR(cfg_str(g, CFG_LOG_FILE), "");
	CHECK_STR(cfg_str(g, CFG_RELAYHOST), "");
	CHECK_STR(cfg_hostport(g, CFG_RELAYHOST)->host, "");
	CHECK_INT(cfg_weight(g, CFG_URGENT), 8);
	CHECK_INT(cfg_weight(g, CFG_NORMAL), 4);
	CHECK_INT(cfg_weight(g, CFG_NONURGENT), 1);
	CHECK_INT(cfg_rate(g, CFG_MAX_MESSAGE_RATE).count, 0);
	cfg_free(cfg);
}

static void
test_fallbacks(void)
{
	char err[256];
	const char *text = "timeout.queuewarn = 2h\n"
			   "timeout.queuewarn.non-urgent = 1d\n"
			   "timeout.queuereturn.urgent = now\n"
			   "timeout.rcpt = 10\n"
			   "timeout.rcpt.first = 30s\n"
			   "timeout.mail.urgent = 20s\n"
			   "timeout.helo.first.urgent = 7s\n"
			   "timeout.helo.dsn.first = 8s\n"
			   "timeout.iconnect = 3s\n"
			   "relayhost = smart.test:587\n"
			   "priority_weights = urgent=5, non-urgent=2\n"
			   "max_message_size = 2MiB\n"
			   "max_message_rate = 1000/h\n"
			   "\n[domain slow.test]\n"
			   "timeout.rcpt = 20m\n"
			   "timeout.connect = 1m\n"
			   "relayhost = [10.0.0.1]:2525\n"
			   "tls = verify\n"
			   "\n[domain .sub.test]\n"
			   "max_connections = 2\n";
	struct cfg *cfg = parse(text, err, sizeof(err));
	const struct cfg_scope *g, *d, *s;

	CHECK(cfg != NULL);
	if (cfg == NULL) {
		fprintf(stderr, "  %s\n", err);
		return;
	}
	g = cfg_scope(cfg, NULL);
	/* The plain key sets every class not set on its own. */
	CHECK_INT(cfg_time(g, CFG_T_QUEUEWARN, CFG_URGENT, false), 7200);
	CHECK_INT(cfg_time(g, CFG_T_QUEUEWARN, CFG_NORMAL, false), 7200);
	CHECK_INT(cfg_time(g, CFG_T_QUEUEWARN, CFG_NONURGENT, false), 86400);
	CHECK_INT(cfg_time(g, CFG_T_QUEUEWARN, CFG_DSN, false), 7200);
	/* Class defaults apply where neither is set. */
	CHECK_INT(cfg_time(g, CFG_T_QUEUERETURN, CFG_URGENT, false), 0);
	CHECK_INT(
	    cfg_time(g, CFG_T_QUEUERETURN, CFG_NONURGENT, false), 7 * 86400);
	/* Bare numbers are minutes for SMTP timeouts. */
	CHECK_INT(cfg_time(g, CFG_T_RCPT, CFG_NORMAL, false), 600);
	CHECK_INT(cfg_time(g, CFG_T_RCPT, CFG_NORMAL, true), 30);
	CHECK_INT(cfg_time(g, CFG_T_MAIL, CFG_URGENT, false), 20);
	CHECK_INT(cfg_time(g, CFG_T_MAIL, CFG_URGENT, true), 20);
	CHECK_INT(cfg_time(g, CFG_T_MAIL, CFG_NORMAL, true), 300);
	CHECK_INT(cfg_time(g, CFG_T_HELO, CFG_URGENT, true), 7);
	CHECK_INT(cfg_time(g, CFG_T_HELO, CFG_URGENT, false), 300);
	CHECK_INT(cfg_time(g, CFG_T_HELO, CFG_DSN, true), 8);
	CHECK_INT(cfg_time(g, CFG_T_CONNECT, CFG_NORMAL, true), 3);
	CHECK_INT(cfg_time(g, CFG_T_CONNECT, CFG_NORMAL, false), 30);
	CHECK_STR(cfg_hostport(g, CFG_RELAYHOST)->host, "smart.test");
	CHECK_INT(cfg_hostport(g, CFG_RELAYHOST)->port, 587);
	CHECK(!cfg_hostport(g, CFG_RELAYHOST)->no_mx);
	CHECK_INT(cfg_weight(g, CFG_URGENT), 5);
	CHECK_INT(cfg_weight(g, CFG_NORMAL), 4);
	CHECK_INT(cfg_weight(g, CFG_NONURGENT), 2);
	CHECK_INT(cfg_int(g, CFG_MAX_MESSAGE_SIZE), 2 * 1024 * 1024);
	CHECK_INT(cfg_rate(g, CFG_MAX_MESSAGE_RATE).count, 1000);
	CHECK_INT(cfg_rate(g, CFG_MAX_MESSAGE_RATE).per, 3600);

	/* A domain section overrides global keys for that domain only. */
	d = cfg_scope(cfg, "SLOW.test");
	CHECK_STR(cfg_scope_name(d), "slow.test");
	CHECK_INT(cfg_time(d, CFG_T_RCPT, CFG_NORMAL, false), 1200);
	/* The global .first still applies on a first attempt. */
	CHECK_INT(cfg_time(d, CFG_T_RCPT, CFG_NORMAL, true), 30);
	CHECK_INT(cfg_time(d, CFG_T_CONNECT, CFG_NORMAL, false), 60);
	CHECK_INT(cfg_time(d, CFG_T_CONNECT, CFG_NORMAL, true), 3);
	CHECK_INT(cfg_time(d, CFG_T_MAIL, CFG_URGENT, false), 20);
	CHECK_STR(cfg_hostport(d, CFG_RELAYHOST)->host, "10.0.0.1");
	CHECK_INT(cfg_hostport(d, CFG_RELAYHOST)->port, 2525);
	CHECK(cfg_hostport(d, CFG_RELAYHOST)->no_mx);
	CHECK_INT(cfg_int(d, CFG_TLS), CFG_TLS_VERIFY);
	CHECK_INT(cfg_int(d, CFG_MAX_CONNECTIONS), 20);
	/* Global-only keys read the same through any scope. */
	CHECK_INT(cfg_time(d, CFG_T_QUEUEWARN, CFG_NONURGENT, false), 86400);
	/* A leading-dot section matches subdomains, not the domain. */
	s = cfg_scope(cfg, "a.b.sub.test");
	CHECK_INT(cfg_int(s, CFG_MAX_CONNECTIONS), 2);
	CHECK(cfg_scope(cfg, "sub.test") == g);
	CHECK(cfg_scope(cfg, "other.test") == g);
	CHECK(cfg_scope(cfg, "xslow.test") == g);
	cfg_free(cfg);
}

static void
test_syntax_variants(void)
{
	char err[256];
	struct cfg *cfg = parse("  # indented comment\r\n"
				"max_connections=7\r\n"
				"\tretry.min =   1m   \n"
				"relayhost = [ipv6:::1]:2525\n"
				"max_message_rate = 5/30s",
	    err, sizeof(err));
	const struct cfg_scope *g;

	CHECK(cfg != NULL);
	if (cfg == NULL) {
		fprintf(stderr, "  %s\n", err);
		return;
	}
	g = cfg_scope(cfg, NULL);
	CHECK_INT(cfg_int(g, CFG_MAX_CONNECTIONS), 7);
	CHECK_INT(cfg_time(g, CFG_RETRY_MIN, CFG_NORMAL, false), 60);
	CHECK_STR(cfg_hostport(g, CFG_RELAYHOST)->host, "::1");
	CHECK_INT(cfg_rate(g, CFG_MAX_MESSAGE_RATE).count, 5);
	CHECK_INT(cfg_rate(g, CFG_MAX_MESSAGE_RATE).per, 30);
	cfg_free(cfg);
}

int
main(void)
{
	test_intervals();
	test_interval_format();
	test_utoa();
	test_classes();
	test_errors();
	test_defaults();
	test_fallbacks();
	test_syntax_variants();
	return rqtest_done();
}
