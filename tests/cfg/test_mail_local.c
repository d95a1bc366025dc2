/*
 * test_mail_local.c - unit tests of local mail (issue 13), table-driven:
 * the aliases(5) parser (continuation lines, comments, quoting, skipped
 * |command, /file and :include: targets, errors with FILE:LINE), alias
 * expansion (recursion, loops, \name, fallback, local domains), the
 * sender map (Postfix's smtp_generic_maps lookup order) and the address
 * spans that intake's header edits use.
 */
#include <stdlib.h>
#include <string.h>

#include "cfg.h"
#include "mail.h"
#include "rqtest.h"

#define ALIASES \
	"# comment\n" \
	"postmaster: root\n" \
	"root: admin@example.net,\n" \
	"  ops,\n" \
	"\tops2\n" \
	"ops: a@x.test, B@X.test\n" \
	"ops2: \"|/bin/cmd\"\n" \
	"l1: l2\n" \
	"l2: l1, end@x.test\n" \
	"self: \\self, copy@x.test\n" \
	"\"Quoted Name\": q@x.test\n" \
	"UPPER: up@x.test\n" \
	"skips: /var/mail/x, :include:/etc/list\n" \
	"deep1: deep2\ndeep2: deep3\ndeep3: d@x.test\n"

/* Collects the addresses handed on, joined by " ". */
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
	strcat(g->s, addr);
	return MAIL_ADDR_OK;
}

static const struct {
	const char *rcpt;
	const char *fallback; /* NULL: none */
	const char *want;
	size_t skipped, loops;
} expands[] = {
	{ "root@example.org", NULL, "admin@example.net a@x.test B@X.test", 1,
	    0 },
	{ "postmaster@example.org", NULL, "admin@example.net a@x.test B@X.test",
	    1, 0 },
	{ "POSTMASTER@Host.Example.Org", NULL,
	    "admin@example.net a@x.test B@X.test", 1, 0 },
	{ "postmaster@localhost", NULL, "admin@example.net a@x.test B@X.test",
	    1, 0 },
	{ "l1@example.org", NULL, "end@x.test", 0, 1 },
	{ "self@example.org", NULL, "self@example.org copy@x.test", 0, 0 },
	{ "quoted name@example.org", NULL, "q@x.test", 0, 0 },
	{ "upper@example.org", NULL, "up@x.test", 0, 0 },
	{ "nobody@example.org", NULL, "nobody@example.org", 0, 0 },
	{ "nobody@example.org", "fb@example.net", "fb@example.net", 0, 0 },
	{ "skips@example.org", NULL, "skips@example.org", 2, 0 },
	{ "skips@example.org", "fb@example.net", "fb@example.net", 2, 0 },
	{ "deep1@example.org", NULL, "d@x.test", 0, 0 },
	{ "root@remote.test", NULL, "root@remote.test", 0, 0 },
	{ "root@sub.example.org", NULL, "root@sub.example.org", 0, 0 },
};

static const struct {
	const char *text;
	bool ok;
	const char *err; /* the start of the message when not ok */
} parses[] = {
	{ "", true, NULL },
	{ "a: b\n", true, NULL },
	{ "a: b\r\n  , c\r\n", true, NULL },
	{ "  a: b\n", false, "t:1:" },
	{ "a b\n", false, "t:1:" },
	{ "a:\n", false, "t:1:" },
	{ "a: b\nc: <bad\n", false, "t:2:" },
	{ "a: b\n# x\n\nbad line\n", false, "t:4:" },
	{ "a@b: c\n", false, "t:1:" },
};

static void
test_aliases(void)
{
	struct mail_aliases *t = NULL;
	char err[512];

	CHECK_INT(mail_aliases_parse(
		      "t", ALIASES, strlen(ALIASES), &t, err, sizeof(err)),
	    MAIL_TABLE_OK);
	if (t == NULL)
		return;
	CHECK_INT(t->nwarn, 3);
	for (size_t i = 0; i < sizeof(expands) / sizeof(expands[0]); i++) {
		struct mail_local ml = { "example.org", "host.example.org", t,
			expands[i].fallback, NULL };
		struct got g = { "", 0 };
		struct mail_expand_info info;

		memset(&info, 0, sizeof(info));
		CHECK_INT(
		    mail_alias_expand(&ml, expands[i].rcpt, collect, &g, &info),
		    MAIL_ADDR_OK);
		CHECK_STR(g.s, expands[i].want);
		CHECK_INT(info.skipped, expands[i].skipped);
		CHECK_INT(info.loops, expands[i].loops);
	}
	mail_aliases_free(t);
	for (size_t i = 0; i < sizeof(parses) / sizeof(parses[0]); i++) {
		enum mail_table_result r = mail_aliases_parse("t",
		    parses[i].text, strlen(parses[i].text), &t, err,
		    sizeof(err));

		CHECK_INT(r, parses[i].ok ? MAIL_TABLE_OK : MAIL_TABLE_BAD);
		if (r == MAIL_TABLE_OK)
			mail_aliases_free(t);
		else
			CHECK(strncmp(err, parses[i].err,
				  strlen(parses[i].err)) == 0);
	}
}

#define MAP \
	"# generic\n" \
	"root alerts@example.com\n" \
	"www-data@host.example.org shop@example.com\n" \
	"@host.lan @example.com\n" \
	"Bob@Other.Test robert@example.com\n"

static const struct {
	const char *addr;
	const char *want; /* NULL: unchanged */
} maps[] = {
	{ "root@example.org", "alerts@example.com" },
	{ "ROOT@host.example.org", "alerts@example.com" },
	{ "root@remote.test", NULL }, /* user keys: local mail only */
	{ "www-data@host.example.org", "shop@example.com" },
	{ "www-data@example.org", NULL },
	{ "anyone@host.lan", "anyone@example.com" },
	{ "AnyOne@HOST.LAN", "AnyOne@example.com" },
	{ "bob@other.test", "robert@example.com" },
	{ "x@y.test", NULL },
};

static const struct {
	const char *text;
	const char *err; /* NULL: parses */
} map_parses[] = {
	{ "a b@c.d\n", NULL },
	{ "a\n", "t:1:" },
	{ "a b\n", "t:1:" },
	{ "a b@c.d e@f.g\n", "t:1:" },
	{ "a b@c.d\nA x@y.z\n", "t:2:" },
	{ "\"a\" b@c.d\n", "t:1:" },
	{ "@ b@c.d\n", "t:1:" },
	{ "a @bad..dom\n", "t:1:" },
	{ "a @[10.0.0.1]\n", NULL },
	{ "a @[\033]\n", "t:1:" },
	{ "a @[1 2]\n", "t:1:" },
	{ "a@[\\x] b@c.d\n", "t:1:" },
};

static void
test_map(void)
{
	struct mail_map *m = NULL;
	struct mail_local ml = { "example.org", "host.example.org", NULL, NULL,
		NULL };
	char err[512];

	CHECK_INT(mail_map_parse("t", MAP, strlen(MAP), &m, err, sizeof(err)),
	    MAIL_TABLE_OK);
	ml.sender_map = m;
	for (size_t i = 0; m != NULL && i < sizeof(maps) / sizeof(maps[0]);
	     i++) {
		char *r = mail_map_rewrite(&ml, maps[i].addr);

		if (maps[i].want == NULL)
			CHECK(r == NULL);
		else
			CHECK_STR(r, maps[i].want);
		free(r);
	}
	mail_map_free(m);
	for (size_t i = 0; i < sizeof(map_parses) / sizeof(map_parses[0]);
	     i++) {
		enum mail_table_result r = mail_map_parse("t",
		    map_parses[i].text, strlen(map_parses[i].text), &m, err,
		    sizeof(err));

		CHECK_INT(r,
		    map_parses[i].err == NULL ? MAIL_TABLE_OK : MAIL_TABLE_BAD);
		if (r == MAIL_TABLE_OK)
			mail_map_free(m);
		else
			CHECK(strncmp(err, map_parses[i].err,
				  strlen(map_parses[i].err)) == 0);
	}
}

/* Collects "addr=[written]" for each span. */
struct spans {
	const char *v;
	char s[2048];
};

static enum mail_addr_result
span_collect(void *arg, const char *addr, size_t off, size_t len)
{
	struct spans *sp = arg;
	size_t n = strlen(sp->s);

	snprintf(sp->s + n, sizeof(sp->s) - n, "%s%s=[%.*s]", n ? " " : "",
	    addr[0] ? addr : "<>", (int)len, sp->v + off);
	return MAIL_ADDR_OK;
}

static const struct {
	const char *value;
	const char *want;
} span_cases[] = {
	{ " root (Cron Daemon)", "root@example.org=[root]" },
	{ " \"Web Shop\" <bob@host.lan>, x@y.test",
	    "bob@host.lan=[bob@host.lan] x@y.test=[x@y.test]" },
	{ " Group: a@b.test, c;", "a@b.test=[a@b.test] c@example.org=[c]" },
	{ " <>", "" }, /* no address: nothing to edit */
};

static void
test_spans(void)
{
	const struct mail_addr_syntax syn = { MAIL_ADDR_WORD_LIMIT,
		"example.org", MAIL_ADDR_LEN_MAX };

	for (size_t i = 0; i < sizeof(span_cases) / sizeof(span_cases[0]);
	     i++) {
		struct spans sp = { span_cases[i].value, "" };
		struct mail_addr_error err;

		mail_addrlist_spans(
		    sp.v, strlen(sp.v), &syn, span_collect, &sp, &err);
		CHECK_STR(sp.s, span_cases[i].want);
	}
}

int
main(void)
{
	test_aliases();
	test_map();
	test_spans();
	return rqtest_done();
}
