/*
 * fuzz_fault_script.c - libFuzzer target for the faultsmtp script parser:
 * any bytes must parse or be refused with a message, never crash, and a
 * parsed script must answer lookups.
 *
 * Public: LLVMFuzzerTestOneInput().
 */
#include <stdint.h>
#include <string.h>

#include "faultsmtp.h"

/* Parses DATA as a script and exercises the lookups. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fault_script *s;
	char err[256];

	if (fault_script_parse((const char *)data, size, &s, err,
		sizeof(err)) != FAULT_PARSE_OK) {
		if (strlen(err) == 0)
			__builtin_trap();
		return 0;
	}
	for (int c = 0; c < FC_NCMD; c++)
		(void)fault_script_match(s, (enum fault_cmd)c, 2, 1);
	(void)fault_script_rcpt(s, "a@b", 3);
	(void)fault_script_offers(s, "SIZE");
	fault_script_free(s);
	return 0;
}
