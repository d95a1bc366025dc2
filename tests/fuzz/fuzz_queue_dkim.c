/*
 * fuzz_queue_dkim.c - libFuzzer target: any bytes as a stored message,
 * read as the DKIM signer reads it (intake_dkim_from(): header fields,
 * the From: domain, where the body starts).  Checks: the body offset is
 * within the message, the domain is lowercase and free of blanks and
 * control bytes, and no more fields are found than lines exist.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "queue_intake_int.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char dom[300];
	size_t body = 0, nf, lines = 1;

	nf = intake_dkim_from(
	    (const char *)data, size, dom, sizeof(dom), &body);
	if (body > size)
		abort();
	for (size_t i = 0; i < size; i++)
		lines += data[i] == '\n';
	if (nf > lines)
		abort();
	for (const char *p = dom; *p != '\0'; p++)
		if ((unsigned char)*p <= ' ' || *p == 0x7f ||
		    (*p >= 'A' && *p <= 'Z'))
			abort();
	return 0;
}
