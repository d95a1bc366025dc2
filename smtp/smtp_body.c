/*
 * smtp_body.c - the message as it goes over the wire after DATA:
 * smtp_body_encode() turns any line end into CRLF and dot-stuffs,
 * smtp_body_8bit() says whether BODY=8BITMIME is needed.
 *
 * Invariant: the output has only CRLF line ends and no line that is a
 * lone "." before the terminating one, whatever the input holds, so no
 * body can end DATA early (SMTP smuggling).
 */
#include <string.h>

#include "smtp_int.h"

size_t
smtp_body_encode(const char *msg, size_t len, size_t *off, bool *bol, char *out,
    size_t outlen)
{
	size_t o = 0, i = *off;
	bool b = *bol;

	while (i < len && o < outlen) {
		char c = msg[i];

		if (c == '\r' || c == '\n') {
			if (o + 2 > outlen)
				break;
			out[o++] = '\r';
			out[o++] = '\n';
			i += (c == '\r' && i + 1 < len && msg[i + 1] == '\n')
			    ? 2
			    : 1;
			b = true;
			continue;
		}
		if (b && c == '.') {
			if (o + 2 > outlen)
				break;
			out[o++] = '.';
			out[o++] = '.';
			i++;
			b = false;
			continue;
		}
		b = false;
		while (
		    i < len && o < outlen && msg[i] != '\r' && msg[i] != '\n')
			out[o++] = msg[i++];
	}
	if (i == len && o + (b ? 0 : 2) + 3 <= outlen) {
		if (!b) {
			out[o++] = '\r';
			out[o++] = '\n';
			b = true;
		}
		memcpy(out + o, ".\r\n", 3);
		o += 3;
		i = len + 1;
	}
	*off = i;
	*bol = b;
	return o;
}

bool
smtp_body_8bit(const char *msg, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if ((unsigned char)msg[i] >= 0x80)
			return true;
	return false;
}
