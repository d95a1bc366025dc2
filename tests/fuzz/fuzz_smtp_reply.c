/* fuzz_smtp_reply.c - libFuzzer target: any bytes as SMTP server replies,
 * parsed one after another as the client's read loop does. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data;
	struct smtp_reply r;
	size_t used;

	while (size > 0) {
		enum smtp_parse_result res = smtp_reply_parse(
		    p, size, &r, &used);

		if (res != SMTP_PARSE_OK) {
			if (used != 0)
				abort();
			break;
		}
		if (used == 0 || used > size || r.code < 200 || r.code > 599 ||
		    strlen(r.text) >= sizeof(r.text) ||
		    r.nlines > SMTP_REPLY_LINES_MAX)
			abort();
		p += used;
		size -= used;
	}
	return 0;
}
