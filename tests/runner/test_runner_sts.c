/*
 * test_runner_sts.c - the pure parts of MTA-STS (runner_sts_parse.c),
 * table-driven: the TXT record, the policy file, MX patterns, and the
 * cache record's round trip.
 */
#include <stdlib.h>
#include <string.h>

#include "rqtest.h"
#include "runner_sts.h"

int
main(void)
{
	static const struct {
		const char *txt, *id; /* id NULL: refused */
	} txts[] = {
		{ "v=STSv1; id=20160831085700Z;", "20160831085700Z" },
		{ "v=STSv1;id=abc", "abc" },
		{ "v=STSv1; id=abc; ext=1", "abc" },
		{ "  v=STSv1 ;  id=X1  ;", "X1" },
		{ "v=STSv1;", NULL }, /* no id */
		{ "id=abc; v=STSv1;", NULL }, /* v= not first */
		{ "v=STSv2; id=abc;", NULL },
		{ "v=STSv1; id=a-b;", NULL }, /* not alnum */
		{ "v=STSv1; id=;", NULL },
		{ "v=STSv1; id=123456789012345678901234567890123;", NULL },
		{ "v=STSv1; id=a; id=b;", NULL },
		{ "", NULL },
	};
	static const struct {
		const char *text;
		int ok;
		enum sts_mode mode;
		long long age;
		size_t nmx;
	} pols[] = {
		{ "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\n"
		  "mx: *.example.net\r\nmax_age: 604800\r\n",
		    0, STS_MODE_ENFORCE, 604800, 2 },
		{ "version: STSv1\nmode: testing\nmx: a.b\nmax_age: 1\n", 0,
		    STS_MODE_TESTING, 1, 1 },
		{ "version: STSv1\nmode: none\nmax_age: 86400\n", 0,
		    STS_MODE_NONE, 86400, 0 },
		/* a mode in another case is still that mode (never open) */
		{ "version: STSv1\nmode: Enforce\nmx: a.b\nmax_age: 1\n", 0,
		    STS_MODE_ENFORCE, 1, 1 },
		{ "version: STSv1\nmode: enforce\nmx: a.b\nmax_age: "
		  "99999999\nfoo: bar\n",
		    0, STS_MODE_ENFORCE, STS_MAX_AGE_MAX, 1 },
		{ "version: STSv1\nmode: enforce\nmax_age: 1\n", -1, 0, 0, 0 },
		{ "mode: enforce\nmx: a.b\nmax_age: 1\n", -1, 0, 0, 0 },
		{ "version: STSv1\nmode: strict\nmx: a.b\nmax_age: 1\n", -1, 0,
		    0, 0 },
		{ "version: STSv1\nmode: enforce\nmx: a.b\n", -1, 0, 0, 0 },
		{ "version: STSv1\nmode: enforce\nmx: a.b\nmax_age: -1\n", -1,
		    0, 0, 0 },
		{ "version: STSv1\nmode: enforce\nmx: a b\nmax_age: 1\n", -1, 0,
		    0, 0 },
		{ "<html>\n", -1, 0, 0, 0 },
		{ "", -1, 0, 0, 0 },
	};
	static const struct {
		const char *host;
		bool match;
	} mxs[] = {
		{ "mail.example.com", true },
		{ "MAIL.Example.COM.", true },
		{ "x.example.net", true },
		{ "example.net", false }, /* "*." needs one label */
		{ "a.x.example.net", false }, /* ... exactly one */
		{ "mail.example.org", false },
		{ "xexample.net", false },
	};
	struct sts_policy p, q;
	char id[STS_ID_MAX + 1], rec[8192];
	const char *why;
	size_t i, n;

	for (i = 0; i < sizeof(txts) / sizeof(txts[0]); i++) {
		int r = runner_sts_txt_parse(
		    txts[i].txt, strlen(txts[i].txt), id);

		CHECK_INT(r, txts[i].id ? 0 : -1);
		if (txts[i].id && r == 0)
			CHECK_STR(id, txts[i].id);
	}
	for (i = 0; i < sizeof(pols) / sizeof(pols[0]); i++) {
		int r = runner_sts_policy_parse(
		    pols[i].text, strlen(pols[i].text), &p, &why);

		CHECK_INT(r, pols[i].ok);
		if (r == 0 && pols[i].ok == 0) {
			CHECK_INT(p.mode, pols[i].mode);
			CHECK_INT(p.max_age, pols[i].age);
			CHECK_INT(p.nmx, pols[i].nmx);
		}
	}
	CHECK_INT(runner_sts_policy_parse(
		      pols[0].text, strlen(pols[0].text), &p, &why),
	    0);
	for (i = 0; i < sizeof(mxs) / sizeof(mxs[0]); i++)
		CHECK_INT(runner_sts_mx_match(&p, mxs[i].host), mxs[i].match);

	/* the cache record: round trip, and damage refused */
	snprintf(p.id, sizeof(p.id), "abc123");
	p.expires = 1800000000;
	n = runner_sts_record_format(&p, rec, sizeof(rec));
	CHECK(n > 0);
	CHECK_INT(runner_sts_record_parse(rec, n, &q), 0);
	CHECK_STR(q.id, "abc123");
	CHECK_INT(q.mode, STS_MODE_ENFORCE);
	CHECK_INT(q.expires, 1800000000);
	CHECK_INT(q.nmx, 2);
	CHECK_STR(q.mx[1], "*.example.net");
	CHECK_INT(runner_sts_record_parse("sts2 a 2 1 1\n", 13, &q), -1);
	CHECK_INT(runner_sts_record_parse("sts1 a 7 1 1\n", 13, &q), -1);
	CHECK_INT(
	    runner_sts_record_parse("sts1 a 2 1 1\nbad host\n", 22, &q), -1);
	CHECK_INT(runner_sts_record_parse("sts1", 4, &q), -1);
	return rqtest_done();
}
