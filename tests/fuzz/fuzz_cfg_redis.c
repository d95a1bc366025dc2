/* fuzz_cfg_redis.c - libFuzzer target: any bytes as cluster_redis
 * (cfg_redis_addr_parse): never a crash; what it accepts is a numeric
 * address with a port, or an absolute unix socket path that fits. */
#include <arpa/inet.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cfg.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cfg_redis_addr a;
	const char *why;
	unsigned char buf[16];

	if (cfg_redis_addr_parse((const char *)data, size, &a, &why) != 0)
		return 0;
	if (a.unix_socket) {
		if (a.path[0] != '/' ||
		    strnlen(a.path, sizeof(a.path)) >= sizeof(a.path))
			abort();
	} else if (a.port == 0 ||
	    (inet_pton(AF_INET, a.ip, buf) != 1 &&
		inet_pton(AF_INET6, a.ip, buf) != 1)) {
		abort();
	}
	return 0;
}
