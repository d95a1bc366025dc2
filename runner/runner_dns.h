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
#include "smtp.h"

enum route_status {
	ROUTE_OK = 0, /* hosts[] holds at least one address */
	ROUTE_DEFER, /* temporary: SERVFAIL, timeout, no reachable data */
	ROUTE_FAIL, /* permanent: NXDOMAIN, null MX, no MX and no address */
};

/* What DNSSEC said of a host's TLSA records (routes looked up for DANE). */
enum route_dane {
	ROUTE_DANE_NONE = 0, /* insecure, or secure with no TLSA record */
	ROUTE_DANE_MATCH, /* secure, usable records in tlsa[] */
	ROUTE_DANE_UNUSABLE, /* secure records, none of usage 2 or 3 */
	ROUTE_DANE_FAIL, /* the host is secure, its TLSA lookup failed or
			    was bogus: the host must be skipped */
};

#define ROUTE_TLSA_MAX 8 /* usable TLSA records kept per host */

struct route_addr {
	char host[256]; /* the MX (or relay) host name */
	struct sockaddr_storage sa; /* with the port set */
	socklen_t salen;
	unsigned pref; /* the MX preference, 0 for A/AAAA or relayhost */
	bool secure; /* MX and address answers were DNSSEC-secure (AD) */
	enum route_dane dane;
	struct smtp_tlsa tlsa[ROUTE_TLSA_MAX];
	size_t ntlsa;
	/* the TLSA base domain when it is not HOST: the target of HOST's
	 * CNAME chain, where the records were found (RFC 7672 2.2.2) */
	char tlsa_base[256];
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
 * at one name server instead of /etc/resolv.conf.  TA (NULL: trust the
 * resolver's AD bit) is the trust anchor file of dnssec = validate: the
 * DNSSEC-aware queries are then validated in-process by libunbound.
 * Returns NULL with ERR filled in on failure.
 */
struct dns *
runner_dns_new(struct event_base *base, const struct cfg_hostport *server,
    const char *ta, char *err, size_t errlen);

/* Cancels every pending lookup (their callbacks run with ROUTE_DEFER). */
void runner_dns_free(struct dns *);

/*
 * Routes to HOST on PORT: with MX true, MX lookup with A/AAAA fallback
 * (a destination domain, or `relayhost = host:port`); with MX false,
 * the A/AAAA of HOST only (`[host]:port`, an IP literal works too).
 * With DANE true every query asks for the resolver's AD bit, addresses
 * are looked up in the DNS only (A and AAAA queries), and each host
 * whose MX and address answers were secure gets its TLSA records
 * (_PORT._tcp.HOST) looked up too.  CB runs later, never from inside
 * this call.
 */
void runner_dns_route(struct dns *, const char *host, uint16_t port, bool mx,
    bool dane, dns_route_cb *cb, void *arg);

/*
 * Reads the TLSA records (RFC 6698) of DNS answer ABUF (ALEN bytes): the
 * usable ones for DANE (RFC 7672: usage 2 or 3, selector 0 or 1, matching
 * type 1 or 2 of the right length, or 0: up to SMTP_TLSA_DATA_MAX bytes
 * as they are, longer as their SHA-512 with type 2, the same match),
 * at most MAX into OUT.  Returns how many usable ones; *NALL gets how
 * many TLSA records there were in all; -1 when ABUF is malformed.
 */
int runner_dns_tlsa_parse(const unsigned char *abuf, size_t alen,
    struct smtp_tlsa *out, size_t max, size_t *nall);

/*
 * The target of the CNAME chain that DNS answer ABUF (ALEN bytes) to a
 * query for NAME follows: true with it in OUT (OUTLEN bytes), false when
 * there is none (no CNAME owned by NAME, a chain back to NAME, a
 * malformed answer, a target that does not fit).
 */
bool runner_dns_cname_target(const unsigned char *abuf, size_t alen,
    const char *name, char *out, size_t outlen);

/* The outcome of runner_dns_txt(). */
enum dns_txt_status {
	DNS_TXT_OK = 0, /* exactly one record with the prefix */
	DNS_TXT_NONE, /* none (or several: RFC 8461 3.1 counts that as none) */
	DNS_TXT_TEMP, /* SERVFAIL, timeout: try again later */
};

/* TEXT: the record's strings joined, NUL-terminated (NULL unless OK);
 * valid during the call only. */
typedef void dns_txt_cb(void *arg, enum dns_txt_status, const char *text);

/*
 * Looks up the TXT records of NAME and picks the one whose text starts
 * with PREFIX ("v=STSv1", "v=TLSRPTv1").  CB runs later (or, for a name
 * c-ares refuses at once, from inside this call).
 */
void runner_dns_txt(struct dns *, const char *name, const char *prefix,
    dns_txt_cb *cb, void *arg);

/* Frees a route. */
void runner_dns_route_free(struct route *);

/* Sorts MX records by preference and shuffles equal preferences. */
struct dns_mx {
	char *host;
	unsigned pref;
};
void runner_dns_mx_order(struct dns_mx *mx, size_t n);

#endif
