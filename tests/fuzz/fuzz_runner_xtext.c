/*
 * fuzz_runner_xtext.c - libFuzzer target for the runner's RFC 3461 xtext
 * decoder (ENVID/ORCPT on their way from the queue to the SMTP client):
 * never reads or writes out of bounds, never grows its input.
 */
#include <stdlib.h>
#include <string.h>

#include "runner_int.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	char *s = xstrndup((const char *)data, size);
	char *d = runner_xtext_decode(s);

	if (strlen(d) > strlen(s))
		abort();
	free(d);
	free(s);
	return 0;
}
