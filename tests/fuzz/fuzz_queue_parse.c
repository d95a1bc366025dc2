/*
 * fuzz_queue_parse.c - libFuzzer target: any bytes as a dropped spool
 * file.  Checks the parser's invariants: recipients are non-empty and
 * free of control bytes, and the stored message it builds has CRLF line
 * endings only.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "queue_parse.h"

/* Aborts if S holds a byte below 0x20 or 0x7f, or is empty. */
static void
check_addr(const char *s)
{
	if (s == NULL || s[0] == '\0')
		abort();
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct qp_result r;
	const char *buf = (const char *)data;

	if (qp_message_parse(buf, size, "fuzz.test", &r) == QP_OK) {
		size_t n;
		char *out;

		if (r.nrcpt == 0 || r.hdr_end > size)
			abort();
		for (size_t i = 0; i < r.nrcpt; i++)
			check_addr(r.rcpts[i].addr);
		if (r.sender != NULL && r.sender[0] != '\0')
			check_addr(r.sender);
		out = qp_message_build(buf, size, &r, "Received: x\r\n",
		    "Date: d\r\n", "Message-ID: <m@x>\r\n", &n);
		for (size_t i = 0; i < n; i++) {
			if (out[i] == '\n' && (i == 0 || out[i - 1] != '\r'))
				abort();
		}
		if (n < 2 || memcmp(out + n - 2, "\r\n", 2) != 0)
			abort();
		free(out);
	} else if (r.why == NULL) {
		abort();
	}
	qp_result_free(&r);
	return 0;
}
