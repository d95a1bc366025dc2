/* fuzz_cfg.c - libFuzzer target: any bytes as a config file. */
#include <stddef.h>
#include <stdint.h>

#include "cfg.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cfg *cfg;
	char err[512];

	if (cfg_parse_buf("fuzz.conf", (const char *)data, size, &cfg, err,
		sizeof(err)) == CFG_OK) {
		const struct cfg_scope *sc = cfg_scope(cfg, "example.com");

		(void)cfg_time(sc, CFG_T_RCPT, CFG_URGENT, true);
		(void)cfg_str(sc, CFG_RELAYHOST);
		cfg_free(cfg);
	}
	return 0;
}
