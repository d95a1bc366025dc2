/* fuzz_runner_sts.c - libFuzzer target: any bytes as an MTA-STS TXT
 * record, policy file and cache record (runner_sts_parse.c). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runner_sts.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data;
	char id[STS_ID_MAX + 1], rec[STS_MX_MAX * 260 + 128];
	struct sts_policy p, q;
	const char *why;
	size_t n;

	if (runner_sts_txt_parse(s, size, id) == 0 &&
	    (id[0] == '\0' || strlen(id) > STS_ID_MAX))
		abort();
	if (runner_sts_policy_parse(s, size, &p, &why) == 0) {
		if (p.nmx > STS_MX_MAX || p.max_age > STS_MAX_AGE_MAX ||
		    (p.mode != STS_MODE_NONE && p.nmx == 0))
			abort();
		(void)runner_sts_mx_match(&p, "mx.example.org");
		memset(p.id, 0, sizeof(p.id));
		p.expires = 0;
		n = runner_sts_record_format(&p, rec, sizeof(rec));
		if (n == 0 || runner_sts_record_parse(rec, n, &q) != 0 ||
		    q.nmx != p.nmx || q.mode != p.mode)
			abort();
	}
	if (runner_sts_record_parse(s, size, &q) == 0 && q.nmx > STS_MX_MAX)
		abort();
	return 0;
}
