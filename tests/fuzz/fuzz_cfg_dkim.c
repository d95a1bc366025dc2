/* fuzz_cfg_dkim.c - libFuzzer target: any bytes as a dkim_key_table;
 * every entry parsed must be well-formed: a lowercase sender domain
 * (".parent" allowed), a selector, an absolute key path, a signing
 * domain, and no sender named more than CFG_DKIM_SIGS_MAX times. */
#include <ctype.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cfg_int.h"

/* Whether S is non-empty and lowercase without blanks or controls. */
static int
word_ok(const char *s)
{
	if (s == NULL || s[0] == '\0')
		return 0;
	for (; *s != '\0'; s++)
		if ((unsigned char)*s <= ' ' || isupper((unsigned char)*s))
			return 0;
	return 1;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cfg_dkim_entry *v;
	size_t n;
	char err[512];

	if (cfg_dkim_table_parse("fuzz", (const char *)data, size, &v, &n, err,
		sizeof(err)) != CFG_OK)
		return 0;
	for (size_t i = 0; i < n; i++) {
		size_t same = 0;

		if (!word_ok(v[i].sender) || !word_ok(v[i].selector) ||
		    !word_ok(v[i].domain) || v[i].key_file[0] != '/' ||
		    v[i].domain[0] == '.' || v[i].line < 1)
			abort();
		for (size_t j = 0; j < n; j++)
			same += strcmp(v[i].sender, v[j].sender) == 0;
		if (same > CFG_DKIM_SIGS_MAX)
			abort();
	}
	cfg_dkim_entries_free(v, n);
	return 0;
}
