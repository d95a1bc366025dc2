/* fuzz_smtp_ehlo.c - libFuzzer target: any bytes as an EHLO reply's
 * capability lines, and as a message body for the DATA encoder, whose
 * output (in blocks of 64 bytes) must be what a byte-at-a-time encoder
 * (tests/lib/body_ref.h) makes of the same body, and the 8-bit scan,
 * which must agree with a plain loop. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "body_ref.h"
#include "smtp.h"
#include "smtp_int.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct smtp_ehlo e;
	uint8_t *ref = malloc(2 * size + 5), *all = malloc(2 * size + 5 + 64);
	size_t off = 0, n, o = 0, want;
	bool bol = true, high = false;

	if (ref == NULL || all == NULL)
		abort();
	smtp_ehlo_parse((const char *)data, size, &e);
	if (!e.size && e.size_max != 0)
		abort();
	/* the encoder: terminates, and says what the reference says */
	while (off <= size) {
		n = smtp_body_encode(
		    (const char *)data, size, &off, &bol, (char *)all + o, 64);
		if (n == 0 || n > 64 || o + n > 2 * size + 5)
			abort();
		o += n;
	}
	want = body_encode_ref((const char *)data, size, (char *)ref);
	if (o != want || memcmp(all, ref, want) != 0)
		abort();
	for (size_t i = 0; i < size; i++)
		high = high || data[i] >= 0x80;
	if (smtp_body_8bit((const char *)data, size) != high)
		abort();
	free(ref);
	free(all);
	return 0;
}
