/*
 * http_parse.c - the pure functions over untrusted text of the HTTP
 * listener: http_listen, the Authorization header, the /api/queue
 * query values.  No I/O, no allocation: unit-tested
 * (tests/http/test_http_parse.c) and fuzzed (tests/fuzz/fuzz_http.c).
 *
 * Public: http_addr_parse(), http_auth_ok(), http_host_ok(),
 * http_query_class(),
 * http_query_state(), http_query_limit(), http_query_after().
 *
 * Invariants: a token is compared in time that depends on its length
 * only, never on where it differs; an address is numeric (no name is
 * looked up but "localhost"), so check-config's loopback test is what
 * the daemon binds.
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http.h"

/* Parses a port (1..65535) of LEN bytes at S. */
static bool
port_parse(const char *s, size_t len, uint16_t *port)
{
	unsigned v = 0;

	if (len == 0 || len > 5)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v == 0 || v > 65535)
		return false;
	*port = (uint16_t)v;
	return true;
}

/* Parses http_listen S into A; see http.h. */
int
http_addr_parse(const char *s, struct http_addr *a, const char **why)
{
	const char *colon;
	size_t hlen;
	struct in_addr v4;
	struct in6_addr v6;

	memset(a, 0, sizeof(*a));
	if (s[0] == '/') {
		if (strlen(s) >= sizeof(a->path)) {
			*why = "socket path too long";
			return -1;
		}
		a->unix_path = true;
		a->loopback = true;
		memcpy(a->path, s, strlen(s) + 1);
		return 0;
	}
	if (s[0] == '[') {
		const char *end = strchr(s, ']');

		if (end == NULL || end[1] != ':') {
			*why = "expected [IPv6]:port";
			return -1;
		}
		hlen = (size_t)(end - s - 1);
		if (hlen == 0 || hlen >= sizeof(a->host)) {
			*why = "bad IPv6 address";
			return -1;
		}
		memcpy(a->host, s + 1, hlen);
		a->host[hlen] = '\0';
		if (inet_pton(AF_INET6, a->host, &v6) != 1) {
			*why = "bad IPv6 address";
			return -1;
		}
		if (!port_parse(end + 2, strlen(end + 2), &a->port)) {
			*why = "bad port (1 to 65535)";
			return -1;
		}
		a->loopback = IN6_IS_ADDR_LOOPBACK(&v6);
		return 0;
	}
	colon = strrchr(s, ':');
	if (colon == NULL) {
		*why = "expected host:port, [IPv6]:port or a socket path";
		return -1;
	}
	if (!port_parse(colon + 1, strlen(colon + 1), &a->port)) {
		*why = "bad port (1 to 65535)";
		return -1;
	}
	hlen = (size_t)(colon - s);
	if (hlen >= sizeof(a->host)) {
		*why = "bad address";
		return -1;
	}
	memcpy(a->host, s, hlen);
	a->host[hlen] = '\0';
	if (hlen == 0 || strcmp(a->host, "*") == 0 ||
	    strcmp(a->host, "0.0.0.0") == 0) {
		a->host[0] = '\0'; /* every address */
		return 0;
	}
	if (strcasecmp(a->host, "localhost") == 0) {
		snprintf(a->host, sizeof(a->host), "127.0.0.1");
		a->loopback = true;
		return 0;
	}
	if (inet_pton(AF_INET, a->host, &v4) != 1) {
		*why = "the host must be an IPv4 address, [IPv6], localhost "
		       "or empty (every address)";
		return -1;
	}
	a->loopback = (ntohl(v4.s_addr) >> 24) == 127;
	return 0;
}

/* Whether A (LEN bytes) equals TOKEN, in time independent of where
 * they differ. */
static bool
same(const char *a, size_t len, const char *token)
{
	size_t tlen = strlen(token);
	unsigned char d = len != tlen;

	for (size_t i = 0; i < tlen; i++)
		d |= (unsigned char)(token[i] ^ (i < len ? a[i] : 0));
	return d == 0;
}

/* Whether Authorization value AUTH carries TOKEN; see http.h. */
bool
http_auth_ok(const char *auth, const char *token)
{
	char buf[2048];
	const char *colon;
	size_t n;

	if (auth == NULL || token == NULL || token[0] == '\0')
		return false;
	if (strncasecmp(auth, "Bearer ", 7) == 0) {
		auth += 7;
		while (*auth == ' ')
			auth++;
		return same(auth, strlen(auth), token);
	}
	if (strncasecmp(auth, "Basic ", 6) != 0)
		return false;
	auth += 6;
	while (*auth == ' ')
		auth++;
	/* at most 2046 bytes: what fits whole quanta and a NUL in BUF */
	if (!rq_base64_decode(
		auth, strlen(auth), (unsigned char *)buf, sizeof(buf) - 2, &n))
		return false;
	buf[n] = '\0';
	if (memchr(buf, '\0', n) != NULL || (colon = strchr(buf, ':')) == NULL)
		return false;
	return same(colon + 1, (size_t)(buf + n - colon - 1), token);
}

/* Whether Host value HOST names this listener; see http.h. */
bool
http_host_ok(const char *host, const char *myname)
{
	char name[256];
	const char *end, *colon;
	size_t n;
	struct in_addr v4;
	struct in6_addr v6;

	if (host == NULL)
		return true;
	if (host[0] == '[') {
		end = strchr(host, ']');
		if (end == NULL || (size_t)(end - host - 1) >= sizeof(name))
			return false;
		n = (size_t)(end - host - 1);
		memcpy(name, host + 1, n);
		name[n] = '\0';
		if (end[1] != '\0' &&
		    (end[1] != ':' ||
			!port_parse(
			    end + 2, strlen(end + 2), &(uint16_t){ 0 })))
			return false;
		return inet_pton(AF_INET6, name, &v6) == 1;
	}
	colon = strchr(host, ':');
	n = colon ? (size_t)(colon - host) : strlen(host);
	if (n == 0 || n >= sizeof(name))
		return false;
	if (colon != NULL &&
	    !port_parse(colon + 1, strlen(colon + 1), &(uint16_t){ 0 }))
		return false;
	memcpy(name, host, n);
	name[n] = '\0';
	if (inet_pton(AF_INET, name, &v4) == 1)
		return true;
	if (name[n - 1] == '.') /* the root's dot */
		name[--n] = '\0';
	if (n == 0)
		return false;
	if (strcasecmp(name, "localhost") == 0 ||
	    (n > 10 && strcasecmp(name + n - 10, ".localhost") == 0))
		return true;
	return myname != NULL && myname[0] != '\0' &&
	    strcasecmp(name, myname) == 0;
}

/* Parses a class= value (NULL: any). */
bool
http_query_class(const char *s, int *cls)
{
	*cls = -1;
	if (s == NULL)
		return true;
	for (int c = 0; c < CFG_NCLASS; c++)
		if (strcmp(s, cfg_class_name(c)) == 0) {
			*cls = c;
			return true;
		}
	return false;
}

/* Parses a state= value (NULL: any; "held": QUEUE_NSTATE). */
bool
http_query_state(const char *s, int *state)
{
	*state = -1;
	if (s == NULL)
		return true;
	if (strcmp(s, "held") == 0) {
		*state = QUEUE_NSTATE;
		return true;
	}
	for (int i = 0; i < QUEUE_NSTATE; i++)
		if (strcmp(s, queue_state_name(i)) == 0) {
			*state = i;
			return true;
		}
	return false;
}

/* Parses a limit= value, 1 to 1000 (NULL: 100). */
bool
http_query_limit(const char *s, size_t *limit)
{
	unsigned v = 0;

	*limit = 100;
	if (s == NULL)
		return true;
	if (s[0] == '\0' || strlen(s) > 4)
		return false;
	for (const char *p = s; *p != '\0'; p++) {
		if (*p < '0' || *p > '9')
			return false;
		v = v * 10 + (unsigned)(*p - '0');
	}
	if (v < 1 || v > 1000)
		return false;
	*limit = v;
	return true;
}

/* Parses an after= queue ID (NULL: from the start). */
bool
http_query_after(const char *s, uint64_t *id)
{
	*id = 0;
	if (s == NULL)
		return true;
	return queue_id_parse(s, id);
}
