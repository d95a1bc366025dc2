/* fuzz_interval.c - libFuzzer target: any bytes as an interval. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "cfg.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int64_t secs;
	const char *why;
	char buf[64];

	if (cfg_interval_parse(
		(const char *)data, size, 60, true, &secs, &why) == 0) {
		if (secs < 0)
			abort();
		cfg_interval_format(secs, buf, sizeof(buf));
	}
	return 0;
}
