/* fuzz_runner_tlsa.c - libFuzzer target: any bytes as the DNS answer to
 * a TLSA query, read by runner_dns_tlsa_parse(), and to an address
 * query, whose CNAME chain runner_dns_cname_target() follows. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "runner_dns.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct smtp_tlsa out[ROUTE_TLSA_MAX];
	size_t nall = 0;
	int n = runner_dns_tlsa_parse(data, size, out, ROUTE_TLSA_MAX, &nall);

	if (n > ROUTE_TLSA_MAX || (n >= 0 && (size_t)n > nall))
		abort();
	for (int i = 0; i < n; i++)
		if ((out[i].usage != 2 && out[i].usage != 3) ||
		    out[i].selector > 1 || out[i].mtype > 2 ||
		    out[i].len == 0 || out[i].len > SMTP_TLSA_DATA_MAX)
			abort();
	/* the same bytes as an address answer that may hold a CNAME
	 * chain: a target that fits, NUL-terminated, never the name */
	{
		char target[256];

		if (runner_dns_cname_target(
			data, size, "mx.example", target, sizeof(target)) &&
		    (memchr(target, '\0', sizeof(target)) == NULL ||
			target[0] == '\0' ||
			strcasecmp(target, "mx.example") == 0))
			abort();
	}
	return 0;
}
