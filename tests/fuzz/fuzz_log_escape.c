/*
 * fuzz_log_escape.c - libFuzzer target: any bytes through
 * log_line_escape(); what comes out is never longer, has no control byte
 * and is left as it is by a second pass.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cfg.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *a = malloc(size + 1), *b = malloc(size + 1);
	size_t n, m;

	if (a == NULL || b == NULL)
		abort();
	memcpy(a, data, size);
	n = log_line_escape(a, size);
	if (n > size)
		abort();
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)a[i] < 0x20 || (unsigned char)a[i] == 0x7f)
			abort();
	memcpy(b, a, n);
	m = log_line_escape(b, n);
	if (m != n || memcmp(a, b, n) != 0)
		abort();
	free(a);
	free(b);
	return 0;
}
