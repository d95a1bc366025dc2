/*
 * runner_dns.c - MX and address lookups with c-ares, driven by the
 * daemon's libevent loop (the c-ares sockets get events, a timer follows
 * ares_timeout()), turned into the ordered route of a destination.
 *
 * Public (runner-private): runner_dns_new(), runner_dns_free(),
 * runner_dns_route(), runner_dns_route_free(), runner_dns_mx_order(),
 * runner_dns_tlsa_parse(), runner_dns_txt().
 *
 * Policy, as Postfix's smtp(8): MX hosts by preference, equal preferences
 * in random order; a domain with no MX (NODATA) is its own host; a null MX
 * (RFC 7505, "0 .") fails at once with 5.1.10; NXDOMAIN fails with 5.1.2;
 * SERVFAIL, timeouts and refusals defer (4.4.3).  A relayhost written
 * `[host]` is not MX-looked-up, and its lookup failures always defer: a
 * typo in the config must not bounce mail.
 *
 * DNSSEC (for tls = dane, dane-only): the validating resolver's AD bit
 * says an answer is secure; c-ares only sees AD in a reply when the
 * query set it (RFC 6840 5.7), so those queries are built here and sent
 * with ares_send().  A host is secure when its MX answer (or the domain's
 * NODATA, or no MX lookup at all for a `[host]`) and all its address
 * answers carried AD; only then are its TLSA records looked up, as
 * Postfix does.  A host whose addresses came through a (secure) CNAME
 * chain has its TLSA records looked up at the chain's target first,
 * then, when there are none there (or only insecure ones), at its own
 * name (RFC 7672 2.2.2); the target is then the TLSA base domain,
 * which the certificate may name too (route_addr.tlsa_base).  A failed
 * (SERVFAIL: bogus) TLSA lookup of a secure host marks it
 * ROUTE_DANE_FAIL: never to be tried in plaintext.  With
 * dnssec = validate those queries go to libunbound instead, on the same
 * event_base, which validates in-process from dnssec_trust_anchor
 * (forwarding to dns_server, or to /etc/resolv.conf's servers); its
 * verdict is written into the answer's AD bit (bogus: SERVFAIL), so the
 * rest of this file does not know the difference.
 *
 * Invariant: a callback never runs from inside runner_dns_route(); a finished
 * lookup is handed back from its own zero-timeout event, so the caller's
 * state is never re-entered.
 */
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <ares.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <openssl/sha.h>
#include <unbound-event.h>
#include <unbound.h>

#include "runner_dns.h"

#define DNS_MAX_ADDR 16 /* addresses tried per route */
#define DNS_MAX_MX 10 /* MX hosts looked up per domain */
#define DNS_CNAME_MAX 16 /* CNAME links followed to a TLSA base */

struct dns_sock {
	struct dns_sock *next;
	struct event *ev;
	ares_socket_t fd;
};

struct dns_job;

struct dns_host {
	struct dns_job *job;
	char *name;
	unsigned pref;
	struct ares_addrinfo *ai; /* NULL until answered or on error */
	int status; /* ARES_* of the address lookup */
	/* DANE lookups: raw A and AAAA answers, then TLSA */
	struct sockaddr_storage sa[DNS_MAX_ADDR];
	socklen_t salen[DNS_MAX_ADDR];
	size_t nsa;
	int qpending; /* A/AAAA queries not yet answered */
	bool secure; /* every address answer had AD */
	enum route_dane dane;
	struct smtp_tlsa tlsa[ROUTE_TLSA_MAX];
	size_t ntlsa;
	char *cname; /* the CNAME chain's target, when not NAME */
	bool tlsa_at_cname; /* the TLSA query out is the target's */
};

struct dns_job {
	struct dns_job *next, *prev;
	struct dns *dns;
	char name[256];
	uint16_t port;
	bool mx; /* MX lookup (else address only) */
	bool fallback; /* no MX: the domain is its own host */
	bool dane; /* DNSSEC-aware lookups and TLSA (see the top) */
	bool mx_secure; /* the MX answer (or NODATA) had AD */
	bool done;
	dns_route_cb *cb;
	void *arg;
	struct dns_host *hosts;
	size_t nhost;
	size_t pending;
	struct route *route;
	struct event *finish; /* hands the route back */
};

struct dns {
	struct event_base *base;
	ares_channel ch;
	struct ub_ctx *ub; /* dnssec = validate; NULL: trust the AD bit */
	struct event *timer;
	struct dns_sock *socks;
	struct dns_job *jobs;
	bool dying;
};

static void dns_timer_arm(struct dns *);

/* Frees a route and its address list. */
void
runner_dns_route_free(struct route *r)
{
	if (r == NULL)
		return;
	free(r->addr);
	free(r);
}

/* Sorts by preference (insertion sort: n is small), then shuffles runs. */
void
runner_dns_mx_order(struct dns_mx *mx, size_t n)
{
	size_t i, j, k;

	for (i = 1; i < n; i++) {
		struct dns_mx t = mx[i];

		for (j = i; j > 0 && mx[j - 1].pref > t.pref; j--)
			mx[j] = mx[j - 1];
		mx[j] = t;
	}
	for (i = 0; i < n; i = j) {
		for (j = i + 1; j < n && mx[j].pref == mx[i].pref; j++)
			;
		/* Fisher-Yates over [i, j). */
		for (k = j - 1; k > i; k--) {
			size_t r = i + (size_t)random() % (k - i + 1);
			struct dns_mx t = mx[k];

			mx[k] = mx[r];
			mx[r] = t;
		}
	}
}

/* Runs c-ares on a ready socket. */
static void
dns_sock_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dns *dns = arg;

	ares_process_fd(dns->ch, (what & EV_READ) ? fd : ARES_SOCKET_BAD,
	    (what & EV_WRITE) ? fd : ARES_SOCKET_BAD);
	dns_timer_arm(dns);
}

/* Lets c-ares handle its timeouts. */
static void
dns_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dns *dns = arg;

	ares_process_fd(dns->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	dns_timer_arm(dns);
}

/* Arms the timer at c-ares' next timeout, if any query is pending. */
static void
dns_timer_arm(struct dns *dns)
{
	struct timeval tv, *tvp;

	if (dns->dying)
		return;
	tvp = ares_timeout(dns->ch, NULL, &tv);
	if (tvp == NULL)
		evtimer_del(dns->timer);
	else
		evtimer_add(dns->timer, tvp);
}

/* c-ares tells which sockets to watch: keep one event per socket. */
static void
dns_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
	struct dns *dns = data;
	struct dns_sock **pp, *s;

	for (pp = &dns->socks; (s = *pp) != NULL; pp = &s->next)
		if (s->fd == fd)
			break;
	if (!readable && !writable) {
		if (s != NULL) {
			*pp = s->next;
			event_free(s->ev);
			free(s);
		}
		return;
	}
	if (s == NULL) {
		s = xcalloc(1, sizeof(*s));
		s->fd = fd;
		s->next = dns->socks;
		dns->socks = s;
	} else {
		event_free(s->ev);
	}
	s->ev = event_new(dns->base, fd,
	    (short)((readable ? EV_READ : 0) | (writable ? EV_WRITE : 0) |
		EV_PERSIST),
	    dns_sock_cb, dns);
	event_add(s->ev, NULL);
}

/* Makes DNS's validating libunbound context: trust anchors from TA,
 * forwarding to SERVER (or resolv.conf's); 0, or -1 with ERR set. */
static int
dns_ub_new(struct dns *dns, const struct cfg_hostport *server, const char *ta,
    char *err, size_t errlen)
{
	int rc;

	dns->ub = ub_ctx_create_event(dns->base);
	if (dns->ub == NULL) {
		snprintf(err, errlen, "libunbound: cannot create a context");
		return -1;
	}
	/* the forwarder is usually a resolver on this host */
	ub_ctx_set_option(dns->ub, "do-not-query-localhost:", "no");
	ub_ctx_set_option(dns->ub, "module-config:", "validator iterator");
	/* libunbound answers RFC 6761's test. itself (NXDOMAIN); c-ares
	 * asks the server: both modes must resolve the same names */
	ub_ctx_set_option(dns->ub, "local-zone:", "test. transparent");
	if (server != NULL && server->host[0] != '\0') {
		char fwd[300];

		snprintf(fwd, sizeof(fwd), "%s@%u", server->host,
		    server->port ? server->port : 53);
		rc = ub_ctx_set_fwd(dns->ub, fwd);
	} else {
		rc = ub_ctx_resolvconf(dns->ub, NULL);
	}
	if (rc == 0)
		rc = ub_ctx_add_ta_file(dns->ub, ta);
	if (rc != 0) {
		snprintf(err, errlen, "libunbound (trust anchors %s): %s", ta,
		    ub_strerror(rc));
		ub_ctx_delete(dns->ub);
		dns->ub = NULL;
		return -1;
	}
	return 0;
}

/* Creates the resolver; see runner_dns.h. */
struct dns *
runner_dns_new(struct event_base *base, const struct cfg_hostport *server,
    const char *ta, char *err, size_t errlen)
{
	static bool inited;
	struct ares_options o;
	struct dns *dns;
	int rc;

	if (!inited) {
		rc = ares_library_init(ARES_LIB_INIT_ALL);
		if (rc != ARES_SUCCESS) {
			snprintf(err, errlen, "c-ares: %s", ares_strerror(rc));
			return NULL;
		}
		inited = true;
	}
	dns = xcalloc(1, sizeof(*dns));
	dns->base = base;
	memset(&o, 0, sizeof(o));
	o.sock_state_cb = dns_sock_state;
	o.sock_state_cb_data = dns;
	o.timeout = 3000; /* ms, with ARES_OPT_TIMEOUTMS */
	o.tries = 2;
	rc = ares_init_options(&dns->ch, &o,
	    ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);
	if (rc != ARES_SUCCESS) {
		snprintf(err, errlen, "c-ares: %s", ares_strerror(rc));
		free(dns);
		return NULL;
	}
	if (server != NULL && server->host[0] != '\0') {
		char csv[300];

		snprintf(csv, sizeof(csv),
		    strchr(server->host, ':') ? "[%s]:%u" : "%s:%u",
		    server->host, server->port ? server->port : 53);
		rc = ares_set_servers_ports_csv(dns->ch, csv);
		if (rc != ARES_SUCCESS) {
			snprintf(err, errlen, "dns_server %s: %s", csv,
			    ares_strerror(rc));
			ares_destroy(dns->ch);
			free(dns);
			return NULL;
		}
	}
	if (ta != NULL && dns_ub_new(dns, server, ta, err, errlen) < 0) {
		ares_destroy(dns->ch);
		free(dns);
		return NULL;
	}
	dns->timer = evtimer_new(base, dns_timer_cb, dns);
	return dns;
}

/* Frees a job's lookup state (not its route). */
static void
dns_job_free(struct dns_job *j)
{
	struct dns *dns = j->dns;

	if (j->prev)
		j->prev->next = j->next;
	else
		dns->jobs = j->next;
	if (j->next)
		j->next->prev = j->prev;
	for (size_t i = 0; i < j->nhost; i++) {
		free(j->hosts[i].name);
		free(j->hosts[i].cname);
		if (j->hosts[i].ai)
			ares_freeaddrinfo(j->hosts[i].ai);
	}
	free(j->hosts);
	if (j->finish)
		event_free(j->finish);
	free(j);
}

/* The zero-timeout event: hands the route to the caller. */
static void
dns_finish_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dns_job *j = arg;
	struct route *r = j->route;
	dns_route_cb *cb = j->cb;
	void *cbarg = j->arg;

	j->route = NULL;
	dns_job_free(j);
	cb(cbarg, r);
}

/* Ends a job with its route: schedules the callback. */
static void
dns_job_done(struct dns_job *j)
{
	static const struct timeval zero;

	j->done = true;
	if (j->dns->dying)
		return;
	j->finish = evtimer_new(j->dns->base, dns_finish_cb, j);
	evtimer_add(j->finish, &zero);
}

/* Ends a job with a failure route. */
static void
dns_job_fail(struct dns_job *j, enum route_status st, const char *dsn,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void
dns_job_fail(struct dns_job *j, enum route_status st, const char *dsn,
    const char *fmt, ...)
{
	va_list ap;

	j->route = xcalloc(1, sizeof(*j->route));
	j->route->status = st;
	snprintf(j->route->dsn, sizeof(j->route->dsn), "%s", dsn);
	va_start(ap, fmt);
	vsnprintf(j->route->why, sizeof(j->route->why), fmt, ap);
	va_end(ap);
	dns_job_done(j);
}

/* Is an ares status temporary (try again later)? */
static bool
dns_temporary(int status)
{
	return status != ARES_ENOTFOUND && status != ARES_ENODATA &&
	    status != ARES_ENONAME && status != ARES_EBADNAME;
}

/* Appends H's IPv4 and IPv6 addresses (with PORT set) to route R, up
 * to DNS_MAX_ADDR in all. */
static void
route_addrs_add(struct route *r, const struct dns_host *h, uint16_t port)
{
	struct ares_addrinfo_node *n;

	for (size_t i = 0; i < h->nsa && r->naddr < DNS_MAX_ADDR; i++) {
		struct route_addr *a = &r->addr[r->naddr++];

		memcpy(&a->sa, &h->sa[i], h->salen[i]);
		a->salen = h->salen[i];
		snprintf(a->host, sizeof(a->host), "%s", h->name);
		a->pref = h->pref;
		a->secure = h->secure && h->job->mx_secure;
		a->dane = h->dane;
		memcpy(a->tlsa, h->tlsa, sizeof(a->tlsa));
		a->ntlsa = h->ntlsa;
		snprintf(a->tlsa_base, sizeof(a->tlsa_base), "%s",
		    h->tlsa_at_cname ? h->cname : "");
	}
	for (n = h->ai ? h->ai->nodes : NULL;
	     n != NULL && r->naddr < DNS_MAX_ADDR; n = n->ai_next) {
		struct route_addr *a = &r->addr[r->naddr];

		if (n->ai_family != AF_INET && n->ai_family != AF_INET6)
			continue;
		if (n->ai_addrlen > sizeof(a->sa))
			continue;
		memcpy(&a->sa, n->ai_addr, n->ai_addrlen);
		a->salen = n->ai_addrlen;
		if (n->ai_family == AF_INET)
			((struct sockaddr_in *)&a->sa)->sin_port = htons(port);
		else
			((struct sockaddr_in6 *)&a->sa)->sin6_port = htons(
			    port);
		snprintf(a->host, sizeof(a->host), "%s", h->name);
		a->pref = h->pref;
		r->naddr++;
	}
}

/*
 * Why route R of J has no address: a temporary failure (TEMP) or a
 * `[host]` defers; a domain without MX that does not exist or has no
 * address bounces; MX hosts that all do not exist defer.  LAST is the
 * last lookup's ares status.
 */
static void
route_no_addr(struct route *r, const struct dns_job *j, bool temp, int last)
{
	if (temp || !j->mx) {
		r->status = ROUTE_DEFER;
		snprintf(r->dsn, sizeof(r->dsn), "4.4.3");
		snprintf(r->why, sizeof(r->why),
		    "Host or domain name not found. Name service error for "
		    "name=%.200s type=A: %s",
		    j->nhost ? j->hosts[0].name : j->name, ares_strerror(last));
	} else if (j->fallback && last == ARES_ENOTFOUND) {
		r->status = ROUTE_FAIL;
		snprintf(r->dsn, sizeof(r->dsn), "5.1.2");
		snprintf(r->why, sizeof(r->why),
		    "Host or domain name not found. Name service error for "
		    "name=%.200s type=A: Host not found",
		    j->name);
	} else if (j->fallback) {
		r->status = ROUTE_FAIL;
		snprintf(r->dsn, sizeof(r->dsn), "5.4.4");
		snprintf(r->why, sizeof(r->why),
		    "Host or domain name not found. Name service error for "
		    "name=%.200s type=AAAA: Host found but no data record of "
		    "requested type",
		    j->name);
	} else {
		/* MX hosts that all do not exist: Postfix defers too. */
		r->status = ROUTE_DEFER;
		snprintf(r->dsn, sizeof(r->dsn), "4.4.4");
		snprintf(r->why, sizeof(r->why),
		    "no address for any MX host of %.200s", j->name);
	}
}

/* All address lookups answered: build the route in MX order. */
static void
dns_job_build(struct dns_job *j)
{
	struct route *r;
	size_t i;
	bool temp = false;
	int last = ARES_SUCCESS;

	r = xcalloc(1, sizeof(*r));
	r->addr = xcalloc(DNS_MAX_ADDR, sizeof(*r->addr));
	for (i = 0; i < j->nhost; i++) {
		struct dns_host *h = &j->hosts[i];

		if (h->status != ARES_SUCCESS) {
			temp |= dns_temporary(h->status);
			last = h->status;
			continue;
		}
		route_addrs_add(r, h, j->port);
	}
	if (r->naddr > 0)
		r->status = ROUTE_OK;
	else
		route_no_addr(r, j, temp, last);
	j->route = r;
	dns_job_done(j);
}

#define DNS_T_TLSA 52 /* RFC 6698 */

/* A query handed to libunbound: the c-ares style callback to call. */
struct dns_ubq {
	struct dns *dns;
	ares_callback cb;
	void *arg;
};

/* libunbound's answer: its verdict becomes the AD bit (secure), or a
 * SERVFAIL (bogus), and the c-ares style callback gets the packet. */
static void
dns_ub_cb(void *data, int rcode, void *packet, int len, int sec,
    char *why_bogus, int ratelimited)
{
	struct dns_ubq *q = data;
	unsigned char *buf;

	if (q->dns->dying) {
		free(q);
		return;
	}
	if (sec == 1 || (rcode != 0 && rcode != 3) || packet == NULL ||
	    len < 12) {
		q->cb(q->arg, ARES_ESERVFAIL, 0, NULL, 0);
		free(q);
		return;
	}
	buf = xmalloc((size_t)len);
	memcpy(buf, packet, (size_t)len);
	if (sec == 2)
		buf[3] |= 0x20;
	else
		buf[3] &= (unsigned char)~0x20;
	q->cb(q->arg, ARES_SUCCESS, 0, buf, len);
	free(buf);
	free(q);
}

/*
 * Sends a query for NAME and TYPE with the AD bit set (RFC 6840 5.7),
 * so that a validating resolver says whether its answer is secure (or,
 * with dnssec = validate, to libunbound); CB gets the raw answer (see
 * dns_answer_status()).
 */
static void
dns_send_ad(
    struct dns *dns, const char *name, int type, ares_callback cb, void *arg)
{
	unsigned char *q = NULL;
	int qlen = 0, rc;

	if (dns->ub != NULL) {
		struct dns_ubq *u = xcalloc(1, sizeof(*u));

		u->dns = dns;
		u->cb = cb;
		u->arg = arg;
		rc = ub_resolve_event(
		    dns->ub, name, type, ns_c_in, u, dns_ub_cb, NULL);
		if (rc != 0) {
			free(u);
			cb(arg, ARES_ESERVFAIL, 0, NULL, 0);
		}
		return;
	}

	rc = ares_create_query(name, ns_c_in, type, 0, 1, &q, &qlen, 0);
	if (rc != ARES_SUCCESS) {
		cb(arg, rc, 0, NULL, 0);
		return;
	}
	q[3] |= 0x20; /* AD */
	ares_send(dns->ch, q, qlen, cb, arg);
	ares_free_string(q);
}

/*
 * The status ares_query() would give for ares_send()'s STATUS and answer
 * ABUF (ALEN bytes): NXDOMAIN is ARES_ENOTFOUND, an empty NOERROR
 * ARES_ENODATA.  *AD gets the answer's AD bit (false on any failure).
 */
static int
dns_answer_status(int status, const unsigned char *abuf, int alen, bool *ad)
{
	*ad = false;
	if (status != ARES_SUCCESS)
		return status;
	if (abuf == NULL || alen < 12)
		return ARES_EBADRESP;
	switch (abuf[3] & 0x0f) {
	case 0:
		*ad = (abuf[3] & 0x20) != 0;
		return (abuf[6] | abuf[7]) == 0 ? ARES_ENODATA : ARES_SUCCESS;
	case 3:
		*ad = (abuf[3] & 0x20) != 0;
		return ARES_ENOTFOUND;
	case 2:
		return ARES_ESERVFAIL;
	case 4:
		return ARES_ENOTIMP;
	case 5:
		return ARES_EREFUSED;
	default:
		return ARES_EBADRESP;
	}
}

/* Skips the domain name at *POS of ABUF (LEN bytes); false if malformed. */
static bool
dns_name_skip(const unsigned char *abuf, size_t len, size_t *pos)
{
	size_t p = *pos;

	while (p < len) {
		unsigned c = abuf[p];

		if (c == 0) {
			*pos = p + 1;
			return true;
		}
		if ((c & 0xc0) == 0xc0) {
			if (p + 2 > len)
				return false;
			*pos = p + 2;
			return true;
		}
		if ((c & 0xc0) != 0)
			return false;
		p += 1 + c;
	}
	return false;
}

/* Reads TLSA records; see runner_dns.h. */
int
runner_dns_tlsa_parse(const unsigned char *abuf, size_t alen,
    struct smtp_tlsa *out, size_t max, size_t *nall)
{
	size_t pos = 12, qd, an, n = 0;

	*nall = 0;
	if (alen < 12)
		return -1;
	qd = (size_t)abuf[4] << 8 | abuf[5];
	an = (size_t)abuf[6] << 8 | abuf[7];
	for (size_t i = 0; i < qd; i++) {
		if (!dns_name_skip(abuf, alen, &pos) || pos + 4 > alen)
			return -1;
		pos += 4;
	}
	for (size_t i = 0; i < an; i++) {
		unsigned type, rdlen;
		const unsigned char *rd;

		if (!dns_name_skip(abuf, alen, &pos) || pos + 10 > alen)
			return -1;
		type = (unsigned)abuf[pos] << 8 | abuf[pos + 1];
		rdlen = (unsigned)abuf[pos + 8] << 8 | abuf[pos + 9];
		pos += 10;
		if (pos + rdlen > alen)
			return -1;
		rd = abuf + pos;
		pos += rdlen;
		if (type != DNS_T_TLSA)
			continue;
		if (rdlen < 3)
			return -1;
		++*nall;
		/* RFC 7672 3.1.3: PKIX-TA (0) and PKIX-EE (1) are unusable */
		if ((rd[0] != 2 && rd[0] != 3) || rd[1] > 1)
			continue;
		if (!((rd[2] == 1 && rdlen - 3 == 32) ||
			(rd[2] == 2 && rdlen - 3 == 64) ||
			(rd[2] == 0 && rdlen - 3 > 0)))
			continue;
		if (n < max && rd[2] == 0 && rdlen - 3 > SMTP_TLSA_DATA_MAX) {
			/* full data longer than kept (a key or a whole
			 * certificate): matched as its SHA-512 (type 2),
			 * which OpenSSL computes of the same bytes */
			out[n].usage = rd[0];
			out[n].selector = rd[1];
			out[n].mtype = 2;
			out[n].len = 64;
			SHA512(rd + 3, rdlen - 3, out[n].data);
			n++;
		} else if (n < max) {
			out[n].usage = rd[0];
			out[n].selector = rd[1];
			out[n].mtype = rd[2];
			out[n].len = (uint8_t)(rdlen - 3);
			memcpy(out[n].data, rd + 3, rdlen - 3);
			n++;
		}
	}
	return (int)n;
}

/* One host is done (addresses, and TLSA if it was secure). */
static void
dns_host_done(struct dns_host *h)
{
	struct dns_job *j = h->job;

	if (--j->pending == 0)
		dns_job_build(j);
}

static void dns_tlsa_cb(void *, int, int, unsigned char *, int);

/* Looks up H's TLSA records: at its CNAME target AT_CNAME, else at its
 * name. */
static void
dns_tlsa_send(struct dns_host *h, bool at_cname)
{
	char name[300];

	h->tlsa_at_cname = at_cname;
	snprintf(name, sizeof(name), "_%u._tcp.%s", (unsigned)h->job->port,
	    at_cname ? h->cname : h->name);
	dns_send_ad(h->job->dns, name, DNS_T_TLSA, dns_tlsa_cb, h);
}

/* The TLSA answer of a secure host arrived. */
static void
dns_tlsa_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct dns_host *h = arg;
	bool ad;
	size_t nall = 0;
	int n;

	(void)timeouts;
	if (status == ARES_EDESTRUCTION || h->job->dns->dying)
		return;
	status = dns_answer_status(status, abuf, alen, &ad);
	if (h->tlsa_at_cname &&
	    (status == ARES_ENODATA || status == ARES_ENOTFOUND ||
		(status == ARES_SUCCESS && !ad))) {
		/* none (securely) at the target: the name's own (RFC 7672
		 * 2.2.2) */
		dns_tlsa_send(h, false);
		return;
	}
	if (status == ARES_SUCCESS && ad) {
		n = runner_dns_tlsa_parse(
		    abuf, (size_t)alen, h->tlsa, ROUTE_TLSA_MAX, &nall);
		if (n < 0)
			h->dane = ROUTE_DANE_FAIL;
		else if (n > 0)
			h->dane = ROUTE_DANE_MATCH;
		else if (nall > 0)
			h->dane = ROUTE_DANE_UNUSABLE;
		h->ntlsa = n > 0 ? (size_t)n : 0;
	} else if (status != ARES_SUCCESS && status != ARES_ENODATA &&
	    status != ARES_ENOTFOUND) {
		h->dane = ROUTE_DANE_FAIL; /* SERVFAIL: bogus, or no answer */
	}
	/* else: secure denial, or an insecure answer: no DANE */
	dns_host_done(h);
}

/* Whether names A and B are the same (case, a final dot aside). */
static bool
dns_name_same(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);

	if (la > 0 && a[la - 1] == '.')
		la--;
	if (lb > 0 && b[lb - 1] == '.')
		lb--;
	return la == lb && strncasecmp(a, b, la) == 0;
}

/* The target of the CNAME chain in answer ABUF; see runner_dns.h. */
bool
runner_dns_cname_target(const unsigned char *abuf, size_t alen,
    const char *name, char *out, size_t outlen)
{
	ns_msg msg;
	ns_rr rr;
	char cur[NS_MAXDNAME], target[NS_MAXDNAME];
	int an;
	bool moved = false;

	if (alen > 65535 || ns_initparse(abuf, (int)alen, &msg) < 0)
		return false;
	snprintf(cur, sizeof(cur), "%s", name);
	an = ns_msg_count(msg, ns_s_an);
	/* resolvers follow a dozen links or so: a longer chain (or a
	 * loop) is not followed further, and the work stays linear */
	for (int pass = 0; pass < an && pass < DNS_CNAME_MAX; pass++) {
		bool step = false;

		for (int i = 0; i < an && !step; i++) {
			if (ns_parserr(&msg, ns_s_an, i, &rr) < 0)
				return false;
			if (ns_rr_type(rr) != ns_t_cname ||
			    !dns_name_same(ns_rr_name(rr), cur))
				continue;
			if (ns_name_uncompress(ns_msg_base(msg),
				ns_msg_end(msg), ns_rr_rdata(rr), target,
				sizeof(target)) < 0)
				return false;
			snprintf(cur, sizeof(cur), "%s", target);
			step = moved = true;
		}
		if (!step)
			break;
	}
	if (!moved || cur[0] == '\0' || dns_name_same(cur, name) ||
	    strlen(cur) >= outlen)
		return false;
	memcpy(out, cur, strlen(cur) + 1);
	return true;
}

/* Notes the target of the CNAME chain answer ABUF (to an address query
 * for H's name) followed, if any. */
static void
dns_host_cname(struct dns_host *h, const unsigned char *abuf, int alen)
{
	char target[NS_MAXDNAME];

	if (h->cname == NULL && alen > 0 &&
	    runner_dns_cname_target(
		abuf, (size_t)alen, h->name, target, sizeof(target)))
		h->cname = xstrdup(target);
}

/* Adds the addresses of A or AAAA answer ABUF to H. */
static void
dns_host_addrs(
    struct dns_host *h, int type, const unsigned char *abuf, int alen)
{
	uint16_t port = htons(h->job->port);
	int n = DNS_MAX_ADDR;

	dns_host_cname(h, abuf, alen);
	if (type == ns_t_a) {
		struct ares_addrttl t[DNS_MAX_ADDR];

		if (ares_parse_a_reply(abuf, alen, NULL, t, &n) != ARES_SUCCESS)
			return;
		for (int i = 0; i < n && h->nsa < DNS_MAX_ADDR; i++) {
			struct sockaddr_in *s = (void *)&h->sa[h->nsa];

			memset(s, 0, sizeof(*s));
			s->sin_family = AF_INET;
			s->sin_port = port;
			s->sin_addr = t[i].ipaddr;
			h->salen[h->nsa++] = sizeof(*s);
		}
	} else {
		struct ares_addr6ttl t[DNS_MAX_ADDR];

		if (ares_parse_aaaa_reply(abuf, alen, NULL, t, &n) !=
		    ARES_SUCCESS)
			return;
		for (int i = 0; i < n && h->nsa < DNS_MAX_ADDR; i++) {
			struct sockaddr_in6 *s = (void *)&h->sa[h->nsa];

			memset(s, 0, sizeof(*s));
			s->sin6_family = AF_INET6;
			s->sin6_port = port;
			memcpy(&s->sin6_addr, &t[i].ip6addr, 16);
			h->salen[h->nsa++] = sizeof(*s);
		}
	}
}

/* An A or AAAA answer of H arrived (TYPE in the callback's name). */
static void
dns_host_answer(struct dns_host *h, int type, int status,
    const unsigned char *abuf, int alen)
{
	struct dns_job *j = h->job;
	bool ad;

	if (status == ARES_EDESTRUCTION || j->dns->dying)
		return;
	status = dns_answer_status(status, abuf, alen, &ad);
	if (!ad)
		h->secure = false;
	if (status == ARES_SUCCESS)
		dns_host_addrs(h, type, abuf, alen);
	/* the host's status: success if any address came, else the worst */
	if (status == ARES_SUCCESS || h->status == ARES_SUCCESS)
		h->status = ARES_SUCCESS;
	else if (dns_temporary(status) || !dns_temporary(h->status))
		h->status = status;
	if (--h->qpending > 0)
		return;
	if (h->nsa == 0 && h->status == ARES_SUCCESS)
		h->status = ARES_ENODATA;
	if (h->nsa > 0 && h->secure && j->mx_secure) {
		dns_tlsa_send(h, h->cname != NULL);
		return;
	}
	dns_host_done(h);
}

static void
dns_a_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	(void)timeouts;
	dns_host_answer(arg, ns_t_a, status, abuf, alen);
}

static void
dns_aaaa_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	(void)timeouts;
	dns_host_answer(arg, ns_t_aaaa, status, abuf, alen);
}

/* Starts H's DNSSEC-aware address lookups (A and AAAA, with AD). */
static void
dns_host_dnssec(struct dns_host *h)
{
	h->secure = true;
	h->qpending = 2;
	h->status = ARES_ENODATA;
	dns_send_ad(h->job->dns, h->name, ns_t_a, dns_a_cb, h);
	dns_send_ad(h->job->dns, h->name, ns_t_aaaa, dns_aaaa_cb, h);
}

/* One host's addresses arrived; the last one builds the route. */
static void
dns_ai_cb(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
	struct dns_host *h = arg;
	struct dns_job *j = h->job;

	(void)timeouts;
	h->status = status;
	h->ai = res;
	if (status == ARES_EDESTRUCTION || j->dns->dying)
		return;
	if (--j->pending == 0)
		dns_job_build(j);
}

/* Starts the address lookups of every host of J. */
static void
dns_job_addrs(struct dns_job *j)
{
	struct ares_addrinfo_hints hints;
	size_t i, n = j->nhost;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	j->pending = n;
	for (i = 0; i < n; i++) {
		j->hosts[i].job = j;
		j->hosts[i].status = ARES_ENODATA;
	}
	if (n == 0) {
		dns_job_build(j);
		return;
	}
	if (j->dane) {
		/* A callback may run at once (a bad name). */
		for (i = 0; i < n; i++)
			dns_host_dnssec(&j->hosts[i]);
		return;
	}
	/* A callback may run at once (numeric host, /etc/hosts). */
	for (i = 0; i < n; i++)
		ares_getaddrinfo(j->dns->ch, j->hosts[i].name, NULL, &hints,
		    dns_ai_cb, &j->hosts[i]);
}

/*
 * Makes J's hosts of the MX records MX (freed here): the first
 * DNS_MAX_MX, by preference (equal ones shuffled).  A null MX (RFC 7505)
 * fails J instead: returns false then.
 */
static bool
dns_mx_hosts(struct dns_job *j, struct ares_mx_reply *mx)
{
	struct ares_mx_reply *m;
	struct dns_mx list[DNS_MAX_MX];
	size_t n = 0;

	for (m = mx; m != NULL; m = m->next) {
		const char *h = m->host ? m->host : "";

		if (h[0] == '\0' || strcmp(h, ".") == 0) {
			/* RFC 7505: a null MX means no mail at all. */
			ares_free_data(mx);
			dns_job_fail(j, ROUTE_FAIL, "5.1.10",
			    "Domain %.200s does not accept mail (nullMX)",
			    j->name);
			return false;
		}
		if (n < DNS_MAX_MX) {
			list[n].host = xstrdup(h);
			list[n].pref = m->priority;
			n++;
		}
	}
	ares_free_data(mx);
	runner_dns_mx_order(list, n);
	j->hosts = xcalloc(n, sizeof(*j->hosts));
	for (size_t i = 0; i < n; i++) {
		j->hosts[i].name = list[i].host;
		j->hosts[i].pref = list[i].pref;
	}
	j->nhost = n;
	return true;
}

/* The MX answer arrived. */
static void
dns_mx_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct dns_job *j = arg;
	struct ares_mx_reply *mx = NULL;

	(void)timeouts;
	if (status == ARES_EDESTRUCTION || j->dns->dying)
		return;
	status = dns_answer_status(status, abuf, alen, &j->mx_secure);
	if (status == ARES_SUCCESS) {
		status = ares_parse_mx_reply(abuf, alen, &mx);
		if (status == ARES_SUCCESS && mx == NULL)
			status = ARES_ENODATA;
	}
	if (status == ARES_ENOTFOUND) {
		dns_job_fail(j, ROUTE_FAIL, "5.1.2",
		    "Host or domain name not found. Name service error for "
		    "name=%.200s type=MX: Host not found",
		    j->name);
		return;
	}
	if (status == ARES_ENODATA) {
		/* No MX: the domain is its own mail host (RFC 5321 5.1). */
		j->fallback = true;
		j->hosts = xcalloc(1, sizeof(*j->hosts));
		j->hosts[0].name = xstrdup(j->name);
		j->nhost = 1;
		dns_job_addrs(j);
		return;
	}
	if (status != ARES_SUCCESS) {
		dns_job_fail(j, ROUTE_DEFER, "4.4.3",
		    "Host or domain name not found. Name service error for "
		    "name=%.200s type=MX: %s",
		    j->name, ares_strerror(status));
		return;
	}
	if (dns_mx_hosts(j, mx))
		dns_job_addrs(j);
}

/* Is HOST an IP address (no DNS, so no DNSSEC either)? */
static bool
dns_literal(const char *host)
{
	unsigned char b[16];

	return inet_pton(AF_INET, host, b) == 1 ||
	    inet_pton(AF_INET6, host, b) == 1;
}

/* Routes HOST; see runner_dns.h. */
void
runner_dns_route(struct dns *dns, const char *host, uint16_t port, bool mx,
    bool dane, dns_route_cb *cb, void *arg)
{
	struct dns_job *j = xcalloc(1, sizeof(*j));

	j->dns = dns;
	snprintf(j->name, sizeof(j->name), "%s", host);
	j->port = port;
	j->mx = mx;
	j->cb = cb;
	j->arg = arg;
	j->dane = dane && !dns_literal(host);
	j->mx_secure = !mx; /* a [host] has no MX answer to trust */
	j->next = dns->jobs;
	if (dns->jobs)
		dns->jobs->prev = j;
	dns->jobs = j;
	if (mx) {
		dns_send_ad(dns, j->name, ns_t_mx, dns_mx_cb, j);
	} else {
		j->hosts = xcalloc(1, sizeof(*j->hosts));
		j->hosts[0].name = xstrdup(j->name);
		j->nhost = 1;
		dns_job_addrs(j);
	}
	dns_timer_arm(dns);
}

/* A TXT lookup in flight. */
struct dns_txt {
	dns_txt_cb *cb;
	void *arg;
	char prefix[32];
};

/* The TXT answer arrived: pick the one record with the prefix. */
static void
dns_txt_answer(
    void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct dns_txt *t = arg;
	struct ares_txt_ext *txt = NULL, *x;
	enum dns_txt_status st = DNS_TXT_NONE;
	char *text = NULL;
	size_t plen = strlen(t->prefix), len = 0;
	int matches = 0;

	(void)timeouts;
	if (status == ARES_EDESTRUCTION) {
		free(t);
		return;
	}
	if (status == ARES_SUCCESS &&
	    ares_parse_txt_reply_ext(abuf, alen, &txt) == ARES_SUCCESS) {
		/* records come as strings, each record_start'ed */
		bool in = false;

		for (x = txt; x != NULL; x = x->next) {
			if (x->record_start) {
				in = x->length >= plen &&
				    memcmp(x->txt, t->prefix, plen) == 0;
				if (in && ++matches > 1)
					break;
			}
			if (!in || len + x->length > 4096)
				continue;
			text = realloc(text, len + x->length + 1);
			if (text == NULL)
				abort();
			memcpy(text + len, x->txt, x->length);
			len += x->length;
			text[len] = '\0';
		}
		ares_free_data(txt);
		st = matches == 1 && text != NULL ? DNS_TXT_OK : DNS_TXT_NONE;
	} else if (dns_temporary(status)) {
		st = DNS_TXT_TEMP;
	}
	t->cb(t->arg, st, st == DNS_TXT_OK ? text : NULL);
	free(text);
	free(t);
}

/* Looks up NAME's TXT record with PREFIX; see runner_dns.h. */
void
runner_dns_txt(struct dns *dns, const char *name, const char *prefix,
    dns_txt_cb *cb, void *arg)
{
	struct dns_txt *t = xcalloc(1, sizeof(*t));

	t->cb = cb;
	t->arg = arg;
	snprintf(t->prefix, sizeof(t->prefix), "%s", prefix);
	ares_query(dns->ch, name, ns_c_in, ns_t_txt, dns_txt_answer, t);
	dns_timer_arm(dns);
}

/* Frees the resolver; pending lookups are answered with ROUTE_DEFER. */
void
runner_dns_free(struct dns *dns)
{
	struct dns_sock *s;

	if (dns == NULL)
		return;
	dns->dying = true;
	ares_destroy(dns->ch);
	if (dns->ub != NULL)
		ub_ctx_delete(dns->ub); /* pending queries end unanswered */
	while (dns->jobs != NULL) {
		struct dns_job *j = dns->jobs;

		runner_dns_route_free(j->route);
		dns_job_free(j);
	}
	while ((s = dns->socks) != NULL) {
		dns->socks = s->next;
		event_free(s->ev);
		free(s);
	}
	event_free(dns->timer);
	free(dns);
}
