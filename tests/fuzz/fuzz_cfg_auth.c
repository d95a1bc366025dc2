/* fuzz_cfg_auth.c - libFuzzer target: any bytes as an auth_file and as a
 * sender_relayhost file; every entry parsed must be well-formed. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cfg_int.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = malloc(size + 1), err[512];
	struct cfg_auth *v;
	struct cfg_sender_route *s;
	size_t n, i;

	memcpy(buf, data, size);
	if (cfg_auth_parse("fuzz", buf, size, &v, &n, err, sizeof(err)) ==
	    CFG_OK) {
		for (i = 0; i < n; i++) {
			if (v[i].key[0] == '\0' || v[i].user[0] == '\0' ||
			    (v[i].password == NULL) == (v[i].argv == NULL))
				abort();
			if (v[i].password != NULL && v[i].password[0] == '\0')
				abort();
			if (v[i].argv != NULL && v[i].argv[0][0] != '/')
				abort();
		}
		cfg_auth_table_free(v, n);
	}
	if (cfg_sender_map_parse("fuzz", (const char *)data, size, &s, &n, err,
		sizeof(err)) == CFG_OK) {
		for (i = 0; i < n; i++)
			if (s[i].relay.host[0] == '\0' ||
			    (i > 0 && strcmp(s[i - 1].key, s[i].key) >= 0))
				abort();
		for (i = 0; i < n; i++) {
			free((char *)s[i].key);
			free((char *)s[i].text);
		}
		free(s);
	}
	free(buf);
	return 0;
}
