/*
 * cfg_cluster.c - the cluster keys: the checks of cluster_redis (an IP
 * address and port or a unix socket, never a host name: the daemon
 * must not block on a resolver, and hiredis would resolve one), of
 * cluster_name and cluster_node (they go into Redis keys and lease
 * names) and of cluster_fallback; and the answers cluster/ and runner/
 * read from them.  cfg_files.c reads cluster_password.
 *
 * Public: cfg_redis_addr_parse(), cfg_cluster_fallback(),
 * cfg_cluster_password().  cfg-private: cfg_cluster_check_redis(),
 * cfg_cluster_check_name(), cfg_cluster_check_fallback() (pure, reached
 * by the config fuzzer).
 */
#include <arpa/inet.h>
#include <string.h>

#include "cfg_int.h"

#define NAME_MAX_ 64 /* bytes of cluster_name and cluster_node */

int
cfg_redis_addr_parse(
    const char *s, size_t len, struct cfg_redis_addr *out, const char **why)
{
	const char *colon, *ip;
	size_t iplen;
	unsigned long port = 0;
	unsigned char buf[16];

	memset(out, 0, sizeof(*out));
	if (len > 5 && memcmp(s, "unix:", 5) == 0) {
		if (s[5] != '/' || len - 5 >= sizeof(out->path)) {
			*why =
			    "unix: needs an absolute path of at most 107 bytes";
			return -1;
		}
		out->unix_socket = true;
		memcpy(out->path, s + 5, len - 5);
		return 0;
	}
	colon = NULL;
	for (size_t i = len; i > 0; i--)
		if (s[i - 1] == ':') {
			colon = s + i - 1;
			break;
		}
	if (colon == NULL || colon + 1 == s + len) {
		*why = "expected IP:port, [IPv6]:port or unix:/path";
		return -1;
	}
	for (const char *p = colon + 1; p < s + len; p++) {
		if (*p < '0' || *p > '9' || port > 65535) {
			*why = "bad port";
			return -1;
		}
		port = port * 10 + (unsigned long)(*p - '0');
	}
	if (port == 0 || port > 65535) {
		*why = "bad port";
		return -1;
	}
	ip = s;
	iplen = (size_t)(colon - s);
	if (iplen >= 2 && ip[0] == '[' && ip[iplen - 1] == ']') {
		ip++;
		iplen -= 2;
	}
	if (iplen == 0 || iplen >= sizeof(out->ip)) {
		*why = "expected an IP address, not a host name";
		return -1;
	}
	memcpy(out->ip, ip, iplen);
	out->ip[iplen] = '\0';
	if (inet_pton(AF_INET, out->ip, buf) != 1 &&
	    inet_pton(AF_INET6, out->ip, buf) != 1) {
		*why = "expected an IP address, not a host name (relayq never "
		       "resolves the Redis address)";
		return -1;
	}
	out->port = (uint16_t)port;
	return 0;
}

int
cfg_cluster_check_redis(const char *s, size_t len, const char **why)
{
	struct cfg_redis_addr a;

	return len == 0 ? 0 : cfg_redis_addr_parse(s, len, &a, why);
}

int
cfg_cluster_check_name(const char *s, size_t len, const char **why)
{
	if (len > NAME_MAX_) {
		*why = "longer than 64 bytes";
		return -1;
	}
	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			(c >= '0' && c <= '9') || c == '.' || c == '_' ||
			c == '-')) {
			*why = "only letters, digits, '.', '_' and '-'";
			return -1;
		}
	}
	return 0;
}

int
cfg_cluster_check_fallback(const char *s, size_t len, const char **why)
{
	if ((len == 5 && memcmp(s, "share", 5) == 0) ||
	    (len == 5 && memcmp(s, "local", 5) == 0) ||
	    (len == 4 && memcmp(s, "hold", 4) == 0))
		return 0;
	*why = "expected share, local or hold";
	return -1;
}

enum cfg_cluster_fallback
cfg_cluster_fallback(const struct cfg *cfg)
{
	const char *s = cfg_str(&cfg->global, CFG_CLUSTER_FALLBACK);

	if (strcmp(s, "local") == 0)
		return CFG_CLUSTER_LOCAL;
	if (strcmp(s, "hold") == 0)
		return CFG_CLUSTER_HOLD;
	return CFG_CLUSTER_SHARE;
}

const char *
cfg_cluster_password(const struct cfg *cfg)
{
	return cfg->files ? cfg->files->cluster_password : NULL;
}
