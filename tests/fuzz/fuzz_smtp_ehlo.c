/* fuzz_smtp_ehlo.c - libFuzzer target: any bytes as an EHLO reply's
 * capability lines, and as a message body for the DATA encoder. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp.h"
#include "smtp_int.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct smtp_ehlo e;
	char out[64];
	size_t off = 0, n, i;
	bool bol = true, prev_cr = false;
	unsigned long long dots = 0;

	smtp_ehlo_parse((const char *)data, size, &e);
	if (!e.size && e.size_max != 0)
		abort();
	/* the encoder: CR only before LF, and it terminates */
	while (off <= size) {
		n = smtp_body_encode(
		    (const char *)data, size, &off, &bol, out, sizeof(out));
		if (n == 0 || n > sizeof(out))
			abort();
		for (i = 0; i < n; i++) {
			if (prev_cr && out[i] != '\n')
				abort();
			prev_cr = out[i] == '\r';
			dots += out[i] == '.';
		}
	}
	(void)dots;
	return 0;
}
