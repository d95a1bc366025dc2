/*
 * runner_dns.h - private to runner/: the asynchronous resolver (c-ares
 * driven by the daemon's event_base) and the route of a destination.
 *
 * A route is the ordered list of addresses to try for a destination:
 * MX hosts by preference (equal preferences shuffled), each host's
 * addresses in the resolver's order; or the A/AAAA of the domain when it
 * has no MX; or the relayhost.  Ownership: a route passed to a
 * dns_route_cb belongs to the callee, who frees it with runner_dns_route_free().
 */
#ifndef RELAYQ_RUNNER_DNS_H
#define RELAYQ_RUNNER_DNS_H

#include <sys/socket.h>

#include <event2/event.h>

#include "cfg.h"

enum route_status {
	ROUTE_OK = 0, /* hosts[] holds at least one address */
	ROUTE_DEFER, /* temporary: SERVFAIL, timeout, no reachable data */
	ROUTE_FAIL, /* permanent: NXDOMAIN, null MX, no MX and no address */
};

struct route_addr {
	char host[256]; /* the MX (or relay) host name */
	struct sockaddr_storage sa; /* with the port set */
	socklen_t salen;
	unsigned pref; /* the MX preference, 0 for A/AAAA or relayhost */
};

struct route {
	enum route_status status;
	char dsn[8]; /* enhanced status for DEFER/FAIL: "5.1.10" */
	char why[512]; /* human reason for DEFER/FAIL */
	size_t naddr;
	struct route_addr *addr;
};

struct dns;

typedef void dns_route_cb(void *arg, struct route *);

/*
 * A resolver on BASE; SERVER (may be NULL or have an empty host) points it
 * at one name server instead of /etc/resolv.conf.  Returns NULL with ERR
 * filled in on failure.
 */
struct dns *runner_dns_new(struct event_base *base,
    const struct cfg_hostport *server, char *err, size_t errlen);

/* Cancels every pending lookup (their callbacks run with ROUTE_DEFER). */
void runner_dns_free(struct dns *);

/*
 * Routes to HOST on PORT: with MX true, MX lookup with A/AAAA fallback
 * (a destination domain, or `relayhost = host:port`); with MX false,
 * the A/AAAA of HOST only (`[host]:port`, an IP literal works too).
 * CB runs later, never from inside this call.
 */
void runner_dns_route(struct dns *, const char *host, uint16_t port, bool mx,
    dns_route_cb *cb, void *arg);

/* Frees a route. */
void runner_dns_route_free(struct route *);

/* Sorts MX records by preference and shuffles equal preferences. */
struct dns_mx {
	char *host;
	unsigned pref;
};
void runner_dns_mx_order(struct dns_mx *mx, size_t n);

#endif
