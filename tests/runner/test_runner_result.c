/*
 * test_runner_result.c - the pure parts of the runner's result handling:
 * the retry backoff (bounds, growth, jitter) and Postfix's delay format
 * (the xtext decoding of ENVID/ORCPT is tests/cfg/test_mail.c's).
 */
#include <stdlib.h>
#include <string.h>

#include "rqtest.h"
#include "runner_int.h"

static const char conf[] = "retry.min = 10s\nretry.max = 300s\n";

int
main(void)
{
	struct cfg *cfg;
	char err[256], buf[32];
	const struct cfg_scope *sc;
	static const struct {
		double secs;
		const char *want;
	} fmt[] = {
		{ 0, "0" },
		{ 0.004, "0" },
		{ 0.01, "0.01" },
		{ 0.1, "0.1" },
		{ 0.126, "0.13" },
		{ 1, "1" },
		{ 2.34, "2.3" },
		{ 9.99, "10" },
		{ 12.4, "12" },
		{ 3600.2, "3600" },
		{ -1, "0" },
		{ 0.996, "1" },
		{ 9.96, "10" },
		{ 9.94, "9.9" },
		{ 12.496, "12" },
		{ 0.3, "0.3" },
		{ 1.05, "1.1" },
		{ 0.205, "0.21" },
		{ 86400 * 5.0, "432000" },
	};

	CHECK_INT(
	    cfg_parse_buf("t.conf", conf, strlen(conf), &cfg, err, sizeof(err)),
	    CFG_OK);
	sc = cfg_scope(cfg, NULL);
	srand48(1);
	for (uint32_t n = 1; n <= 12; n++) {
		int64_t lo = 10, hi = 300, base = 10, mn = hi, mx = 0;

		for (uint32_t i = 1; i < n && base < hi; i++)
			base *= 2;
		if (base > hi)
			base = hi;
		for (int k = 0; k < 2000; k++) {
			int64_t d = runner_result_backoff(sc, n);

			if (d < mn)
				mn = d;
			if (d > mx)
				mx = d;
		}
		/* never outside [min, max], within +-10% of the base */
		CHECK(mn >= lo);
		CHECK(mx <= hi);
		CHECK(mn >= (int64_t)(base * 0.9) - 1);
		CHECK(mx <= (int64_t)(base * 1.1) + 1);
		/* the jitter does vary (except pinned at a bound) */
		if (base >= 20 && base < hi)
			CHECK(mx > mn);
	}
	for (size_t i = 0; i < sizeof(fmt) / sizeof(fmt[0]); i++) {
		runner_result_format_delay(buf, sizeof(buf), fmt[i].secs);
		CHECK_STR(buf, fmt[i].want);
	}
	cfg_free(cfg);
	return rqtest_done();
}
