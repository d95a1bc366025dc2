/*
 * fuzz_queue_body.c - libFuzzer target: any bytes as a stored body record
 * (version, method, raw length, crc32, data), decoded as a delivery does
 * (qrec_body_decode()).  Checks that a record is taken only whole: its
 * length is the one it states, its crc32 that of what it decoded to, and
 * the buffer ends with a NUL; and that a record made from the decoded
 * text (qrec_body_encode()) decodes again to the same bytes.  The first
 * input byte, when odd, makes the rest a valid record's data instead, so
 * the deflate decoder also sees streams that get past the header.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libdeflate.h>

#include "queue_int.h"

/* Decodes REC of N bytes; aborts on a decoded body that breaks the
 * record's promises. */
static void
body_check(const uint8_t *rec, size_t n)
{
	struct qbuf b = { NULL, 0, 0 };
	char *out = NULL, *again = NULL;
	size_t len = 0, len2 = 0;

	if (qrec_body_decode(1, rec, n, &out, &len) != QUEUE_OK)
		return;
	if (n < 14 || len != qbe64_get(rec + 2) || out[len] != '\0' ||
	    libdeflate_crc32(0, out, len) != qbe32_get(rec + 10))
		abort();
	qrec_body_encode(&b, out, len, 1);
	if (qrec_body_decode(2, b.p, b.n, &again, &len2) != QUEUE_OK ||
	    len2 != len || memcmp(again, out, len) != 0)
		abort();
	free(again);
	free(out);
	free(b.p);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int quiet;

	if (!quiet) {
		log_set_level(LOG_LVL_CRIT); /* no line per invalid record */
		quiet = 1;
	}
	if (size > 0 && (data[0] & 1)) {
		/* a zlib header and the input as deflate data, with a length
		 * and crc32 that match what it says when it decodes */
		uint8_t *rec = malloc(size + 14 + 2 + 4);
		char *raw = malloc(1 << 16);
		size_t got = 0;
		struct libdeflate_decompressor *d =
		    libdeflate_alloc_decompressor();

		if (rec == NULL || raw == NULL || d == NULL)
			abort();
		rec[0] = 1;
		rec[1] = 1;
		rec[14] = 0x78;
		rec[15] = 0x01;
		memcpy(rec + 16, data + 1, size - 1);
		memset(rec + 16 + size - 1, 0, 4);
		if (libdeflate_deflate_decompress(d, data + 1, size - 1, raw,
			1 << 16, &got) != LIBDEFLATE_SUCCESS)
			got = 0;
		qbe64_put(rec + 2, got);
		qbe32_put(rec + 10, libdeflate_crc32(0, raw, got));
		body_check(rec, 14 + 2 + (size - 1) + 4);
		libdeflate_free_decompressor(d);
		free(raw);
		free(rec);
		return 0;
	}
	body_check(data, size);
	return 0;
}
