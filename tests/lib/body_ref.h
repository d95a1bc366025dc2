/*
 * body_ref.h - the DATA encoder written the plain way, a byte at a time:
 * what smtp_body_encode() (smtp/smtp_body.c) must make of a body, for
 * the unit test and the fuzzer to compare it against.  Line ends (CRLF,
 * bare CR, bare LF) become CRLF, a dot that starts a line is doubled, a
 * last line without its end gets one, and ".\r\n" ends it all.
 */
#ifndef RQ_BODY_REF_H
#define RQ_BODY_REF_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

/* Encodes all LEN bytes of IN into OUT (2 * LEN + 5 bytes at least);
 * returns the length. */
static inline size_t
body_encode_ref(const char *in, size_t len, char *out)
{
	size_t o = 0;
	bool bol = true;

	for (size_t i = 0; i < len; i++) {
		if (in[i] == '\r' || in[i] == '\n') {
			if (in[i] == '\r' && i + 1 < len && in[i + 1] == '\n')
				i++;
			out[o++] = '\r';
			out[o++] = '\n';
			bol = true;
			continue;
		}
		if (bol && in[i] == '.')
			out[o++] = '.';
		out[o++] = in[i];
		bol = false;
	}
	if (!bol) {
		out[o++] = '\r';
		out[o++] = '\n';
	}
	memcpy(out + o, ".\r\n", 3);
	return o + 3;
}

#endif
