/*
 * fuzz_mail_param.c - libFuzzer target for the RFC 3461 parameters and
 * header field names (cfg/mail_param.c, cfg/mail_field.c).  The first
 * byte picks the parser.  Checks: xtext encoding gives valid xtext that
 * decodes back to its input; decoding never grows its input; a NOTIFY
 * list parsed, written and parsed again gives the same conditions; the
 * field helpers stay inside their input.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cfg.h"
#include "mail.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data + 1;
	size_t n = size - 1, len;
	char *str, *x, *d, buf[64];
	unsigned bits, again;

	if (size < 1)
		return 0;
	str = xstrndup(s, n); /* up to the first NUL */
	switch (data[0] & 3) {
	case 0:
		x = mail_xtext_encode(str);
		if (!mail_xtext_valid(x, strlen(x)))
			abort();
		d = mail_xtext_decode(x, strlen(x), data[0] >> 7, &len);
		if (len != strlen(str) || memcmp(d, str, len) != 0)
			abort();
		free(d);
		free(x);
		break;
	case 1:
		d = mail_xtext_decode(s, n, data[0] >> 7, &len);
		if (len > n || d[len] != '\0')
			abort();
		free(d);
		break;
	case 2:
		if (mail_notify_parse(s, n, data[0] >> 7, &bits)) {
			mail_notify_format(bits, buf, sizeof(buf));
			if (!mail_notify_parse(
				buf, strlen(buf), MAIL_NOTIFY_STRICT, &again) ||
			    again != bits)
				abort();
		}
		break;
	case 3:
		len = mail_field_name_len(s, n);
		if (len > n ||
		    (len < n && (unsigned char)s[len] > ' ' &&
			(unsigned char)s[len] < 0x7f && s[len] != ':'))
			abort();
		if (mail_field_is(s, len, "To") && len != 2)
			abort();
		(void)mail_mbox_from_is(s, n);
		break;
	}
	free(str);
	return 0;
}
