/*
 * fuzz_queue_addr.c - libFuzzer target: any bytes as an RFC 5322 address
 * list (To:/Cc:/Bcc: value).  Every address found must be non-empty, have
 * an @, and be free of control bytes.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "queue_parse.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct qp_result r;
	const char *why = NULL;
	bool ok;

	memset(&r, 0, sizeof(r));
	ok = qp_addrlist_parse((const char *)data, size,
	    size > 0 && (data[0] & 1) ? "q.test" : NULL, &r, &why);
	if (!ok && why == NULL)
		abort();
	for (size_t i = 0; i < r.nrcpt; i++) {
		const char *a = r.rcpts[i].addr;

		if (a[0] == '\0' || strchr(a, '@') == NULL)
			abort();
		for (; *a != '\0'; a++)
			if ((unsigned char)*a < 0x20 || *a == 0x7f)
				abort();
	}
	qp_result_free(&r);
	return 0;
}
