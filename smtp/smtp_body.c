/*
 * smtp_body.c - the message as it goes over the wire after DATA:
 * smtp_body_encode() turns any line end into CRLF and dot-stuffs,
 * smtp_body_8bit() says whether BODY=8BITMIME is needed.
 *
 * Invariant: the output has only CRLF line ends and no line that is a
 * lone "." before the terminating one, whatever the input holds, so no
 * body can end DATA early (SMTP smuggling).
 *
 * Both run on every delivery, over bodies that are nearly always CRLF
 * text already (intake stores them so): the encoder copies each run of
 * bytes up to the next CR or LF with one memcpy, found with memchr, and
 * looks at single bytes only at line ends and line starts; the 8-bit
 * scan reads 64 bytes a step as words.  Each byte is searched at most
 * once for CR and once for LF, so the cost is linear whatever the input.
 */
#include <stdint.h>
#include <string.h>

#include "smtp_int.h"

size_t
smtp_body_encode(const char *msg, size_t len, size_t *off, bool *bol, char *out,
    size_t outlen)
{
	size_t o = 0, i = *off;
	bool b = *bol;
	/* no LF in [i, lf): where the last search for one stopped */
	size_t lf = i;

	while (i < len && o < outlen) {
		char c = msg[i];
		const char *cr;
		size_t end, n;

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
		/* the run of other bytes, up to the next CR or LF or the end
		 * of the output; LF searched no further than that */
		n = len - i < outlen - o ? len - i : outlen - o;
		if (lf <= i) {
			const char *p = memchr(msg + i, '\n', n);

			lf = p != NULL ? (size_t)(p - msg) : i + n;
		}
		end = lf < i + n ? lf : i + n;
		cr = memchr(msg + i, '\r', end - i);
		if (cr != NULL)
			end = (size_t)(cr - msg);
		memcpy(out + o, msg + i, end - i);
		o += end - i;
		i = end;
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
	const uint64_t high = 0x8080808080808080ULL;
	size_t i = 0;

	for (; i + 64 <= len; i += 64) {
		uint64_t w[8], acc = 0;

		memcpy(w, msg + i, sizeof(w));
		for (size_t k = 0; k < 8; k++)
			acc |= w[k];
		if (acc & high)
			return true;
	}
	for (; i < len; i++)
		if ((unsigned char)msg[i] >= 0x80)
			return true;
	return false;
}
