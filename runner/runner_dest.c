/*
 * runner_dest.c - destinations: where jobs wait for a connection, and
 * the limits that decide when one may go.
 *
 * Runner-private: runner_dest_init(), runner_dest_destroy(),
 * runner_dest_get(), runner_dest_enqueue(), runner_dest_putback(),
 * runner_dest_job_move(), runner_dest_kick(), runner_dest_ready_kick(),
 * runner_dest_host_down(), runner_dest_host_clear(),
 * runner_dest_feedback(), runner_dest_reload(), runner_dest_jobs_drop(),
 * runner_dest_find(), runner_dest_next(), runner_dest_idle().
 *
 * The rules.  Which destination a recipient's job goes to is
 * runner_route.c's choice: its lowercased domain (routed by MX), or a
 * relay (the [domain] relayhost, the sender's route, the relayhost) with
 * the credentials it logs in with, one per scope, relay and credentials,
 * so domains behind one smarthost share its connections but different
 * credentials never do; a fallback relay is a destination of its own.  A
 * destination keeps a wait list per class and picks its next job by
 * smooth weighted round robin (runner_share.c).  A job goes to the SMTP
 * client when all of these hold, checked in this order each time the
 * destination is kicked:
 *
 * - it is not down: a result with host_down marks it down for
 *   timeout.hoststatus (the job that got it goes on to the next
 *   fallback relay, runner_job.c), and meanwhile its jobs go at once,
 *   without a connection, to the next fallback_relay of the
 *   destination's scope (runner_route_fallback), or are deferred when
 *   there is none ("delivery temporarily suspended: REASON");
 * - it has a route: resolved on first use and again once ROUTE_TTL
 *   seconds old (while nothing is in flight); a lookup that fails
 *   bounces (5) every job waiting, or, when it fails for now (4), sends
 *   each to the next fallback relay or defers it; with tls = dane or
 *   dane-only (DANE, RFC 7672) hosts whose TLSA lookup failed are left
 *   out of the route, and with dane-only those without secure TLSA
 *   records too; with an MTA-STS policy in enforce mode (runner_sts.c,
 *   for a domain routed by MX with tls = may or dane, mta_sts = yes),
 *   MX hosts that do not match the policy, unless DANE applies to the
 *   route (DANE wins); no host left defers every job with 4.7.5;
 * - fewer than its concurrency window of its requests are in flight,
 *   and it has an idle cached connection or room for a new one under
 *   that window and max_connections_total (capped at the
 *   connections open while the runner is short of file descriptors,
 *   see runner_job.c); one that waits only for the total goes on the
 *   runner's ready list, kicked when any request ends.  The window
 *   starts at initial_destination_concurrency and moves between 1 and
 *   max_connections on each finished request's feedback
 *   (runner_share.c's rules, runner_dest_feedback());
 * - a token of its max_message_rate bucket (burst = the count); over
 *   the rate it waits on its timer: it is not a failure.
 *
 * In a cluster (runner_cluster.c) max_connections and max_message_rate
 * are the cluster's: a new connection needs a lease and a message a
 * token from Redis (the cluster wakes the destination when they come),
 * a host marked down is marked for every node, and another node's mark
 * defers the jobs here as if this node had found it.
 *
 * Invariants: a destination is freed only when it has no job waiting or
 * in flight and no lookup pending; the janitor frees, once a minute,
 * those unused for DEST_KEEP seconds (bucket full again, not down);
 * after a reload the existing ones are retired: they keep their old
 * (refcounted) settings until their last job is done, new jobs go to
 * new ones, and they send no job to a fallback relay (a deferred job is
 * routed afresh on its retry).  Nothing here polls but a destination waiting for
 * connections that are closing (the client does not report their end),
 * which looks again every 200 ms while jobs wait.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "runner_int.h"

#define ROUTE_TTL 60 /* seconds a route is reused */
#define DEST_KEEP 300 /* seconds an unused destination is kept */

/* FNV-1a of a destination key, a bucket of r->dests. */
static unsigned
hash_str(const char *s)
{
	unsigned h = 2166136261u;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h % RUNNER_HASH;
}

/* Is D unused and worth nothing any more (no state to keep)? */
static bool
dest_idle(const struct dest *d, int64_t now)
{
	struct cfg_rate rate = cfg_rate(d->scope, CFG_MAX_MESSAGE_RATE);

	return d->nwait == 0 && d->active == 0 && d->rstate != DR_RESOLVING &&
	    d->down_until <= now &&
	    (d->retired || now - d->last_used >= DEST_KEEP + (int64_t)rate.per);
}

/* Frees D's memory and drops its config (D is in no list any more). */
static void
dest_release(struct dest *d)
{
	if (d->timer)
		event_free(d->timer);
	runner_dns_route_free(d->route);
	free(d->addrs);
	free(d->sts);
	runner_rcfg_unref(d->rc);
	free(d->key);
	free(d->lookup);
	free(d);
}

/* Frees a destination (no job, no lookup, nothing active). */
static void
dest_free(struct runner *r, struct dest *d)
{
	struct dest **pp;

	if (!d->retired) {
		for (pp = &r->dests[hash_str(d->key)]; *pp != NULL;
		     pp = &(*pp)->hnext)
			if (*pp == d) {
				*pp = d->hnext;
				break;
			}
	}
	for (pp = &r->all_dests; *pp != NULL; pp = &(*pp)->next)
		if (*pp == d) {
			*pp = d->next;
			break;
		}
	for (pp = &r->ready; *pp != NULL; pp = &(*pp)->rnext)
		if (*pp == d) {
			*pp = d->rnext;
			break;
		}
	dest_release(d);
}

/* The janitor: frees destinations unused for DEST_KEEP seconds (their
 * route, rate bucket and host status are then no longer needed). */
static void
dest_janitor_cb(evutil_socket_t fd, short what, void *arg)
{
	struct runner *r = arg;
	struct dest *d, *next;
	int64_t now = rq_now();

	for (d = r->all_dests; d != NULL; d = next) {
		next = d->next;
		if (dest_idle(d, now))
			dest_free(r, d);
	}
}

/* Starts the janitor. */
void
runner_dest_init(struct runner *r)
{
	struct timeval tv = { 60, 0 };

	r->ev_janitor = event_new(r->base, -1, EV_PERSIST, dest_janitor_cb, r);
	event_add(r->ev_janitor, &tv);
}

/* The rate or hoststatus timer of a destination. */
static void
dest_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dest *d = arg;

	runner_dest_kick(d->runner, d);
}

/* The destination KEY under the current config, made if new: LOOKUP
 * routed on PORT (MX lookup when MX), scope SC, credentials AUTH,
 * fallback position FB (see runner_route.c, which makes the keys). */
struct dest *
runner_dest_get(struct runner *r, const char *key, const struct cfg_scope *sc,
    const char *lookup, uint16_t port, bool mx, const struct cfg_auth *auth,
    int fb)
{
	struct dest *d;
	unsigned h = hash_str(key);

	for (d = r->dests[h]; d != NULL; d = d->hnext)
		if (strcmp(d->key, key) == 0)
			return d;
	d = xcalloc(1, sizeof(*d));
	d->key = xstrdup(key);
	d->runner = r;
	d->rc = r->rc;
	d->rc->refs++;
	d->scope = sc;
	d->lookup = xstrdup(lookup);
	d->port = port;
	d->mx = mx;
	d->auth = auth;
	d->fb = fb;
	runner_conc_init(&d->conc,
	    (unsigned)cfg_int(sc, CFG_INITIAL_DEST_CONCURRENCY),
	    (unsigned)cfg_int(sc, CFG_MAX_CONNECTIONS));
	d->tokens = cfg_rate(sc, CFG_MAX_MESSAGE_RATE).count;
	d->tokens_us = rq_now_us();
	d->timer = evtimer_new(r->base, dest_timer_cb, d);
	d->hnext = r->dests[h];
	r->dests[h] = d;
	d->next = r->all_dests;
	r->all_dests = d;
	return d;
}

/* Appends a job to its destination's list for its class. */
void
runner_dest_enqueue(struct dest *d, struct job *j)
{
	int c = j->cls;

	j->next = NULL;
	if (d->wait_tail[c])
		d->wait_tail[c]->next = j;
	else
		d->wait_head[c] = j;
	d->wait_tail[c] = j;
	d->nwait++;
}

/* Puts job J back at the head of its destination's list for its class
 * (it goes next). */
void
runner_dest_putback(struct dest *d, struct job *j)
{
	int c = j->cls;

	j->next = d->wait_head[c];
	d->wait_head[c] = j;
	if (d->wait_tail[c] == NULL)
		d->wait_tail[c] = j;
	d->nwait++;
}

/* Pops the next job by smooth weighted round robin over the classes. */
static struct job *
dest_pop(struct runner *r, struct dest *d)
{
	unsigned w[CFG_NCLASS];
	bool waiting[CFG_NCLASS];
	int best, c;
	struct job *j;

	runner_share_weights(cfg_scope(d->rc->cfg, NULL), w);
	for (c = 0; c < CFG_NCLASS; c++)
		waiting[c] = d->wait_head[c] != NULL;
	best = runner_share_wrr_pick(d->wrr, w, waiting);
	if (best < 0)
		return NULL;
	j = d->wait_head[best];
	d->wait_head[best] = j->next;
	if (d->wait_head[best] == NULL)
		d->wait_tail[best] = NULL;
	d->nwait--;
	j->next = NULL;
	return j;
}

/* Moves job J to destination FD (a fallback relay) and kicks it; WHY:
 * what became of it where it was. */
void
runner_dest_job_move(
    struct runner *r, struct job *j, struct dest *fd, const char *why)
{
	log_info("smtp", "%s: %.300s; trying fallback relay %s%s%s:%u",
	    j->m->msg->idstr, why, fd->mx ? "" : "[", fd->lookup,
	    fd->mx ? "" : "]", (unsigned)fd->port);
	j->dest = fd;
	runner_dest_enqueue(fd, j);
	runner_dest_kick(r, fd);
}

/* Fails every waiting job of D (route failure, host down); a temporary
 * failure sends a job to its next fallback relay instead, if any. */
static void
dest_fail_all(
    struct runner *r, struct dest *d, int cls, const char *dsn, const char *why)
{
	struct job *j;
	struct dest *fd;

	while ((j = dest_pop(r, d)) != NULL) {
		if (cls == 4 && (fd = runner_route_fallback(r, d)) != NULL) {
			runner_dest_job_move(r, j, fd, why);
			continue;
		}
		runner_result_job_fail(r, j, cls, dsn, why);
		runner_job_free(r, j);
	}
	memset(d->wrr, 0, sizeof(d->wrr));
}

/* Whether D's tls setting is DANE (tls = dane or dane-only). */
static bool
dest_dane(const struct dest *d)
{
	return !d->tls_relaxed && cfg_int(d->scope, CFG_TLS) >= CFG_TLS_DANE &&
	    cfg_str(d->scope, CFG_TLS_FINGERPRINT)[0] == '\0';
}

/*
 * Drops from route RT of D the hosts DANE forbids (see the top): a
 * failed TLSA lookup always, no usable secure TLSA with dane-only;
 * logs each.  Returns how many addresses are left (RT->why says why
 * when none is).
 */
static size_t
dest_route_dane(const struct dest *d, struct route *rt)
{
	bool only = cfg_int(d->scope, CFG_TLS) == CFG_TLS_DANE_ONLY;
	size_t i, n = 0;

	if (!dest_dane(d))
		return rt->naddr;
	for (i = 0; i < rt->naddr; i++) {
		struct route_addr *a = &rt->addr[i];
		const char *why = NULL;

		if (a->dane == ROUTE_DANE_FAIL)
			why = "TLSA lookup failed (bogus or no answer)";
		else if (only && a->dane == ROUTE_DANE_NONE)
			why = a->secure ? "no TLSA record"
					: "no DNSSEC-secure MX and address";
		if (why == NULL) {
			if (n != i)
				rt->addr[n] = *a;
			n++;
			continue;
		}
		log_info("smtp", "DANE: %.200s: skipping host %.255s: %s",
		    d->lookup, a->host, why);
		snprintf(rt->why, sizeof(rt->why),
		    "DANE: no usable MX host for %.200s: %.200s: %s", d->lookup,
		    a->host, why);
	}
	rt->naddr = n;
	return n;
}

/* Whether MTA-STS applies to D: a domain routed by MX (not a relay),
 * mta_sts = yes, tls = may or dane, no tls_fingerprint. */
static bool
dest_sts_applies(const struct dest *d)
{
	int tls = (int)cfg_int(d->scope, CFG_TLS);

	return d->mx && !d->tls_relaxed && strchr(d->key, '/') == NULL &&
	    cfg_int(d->scope, CFG_MTA_STS) != 0 &&
	    (tls == CFG_TLS_MAY || tls == CFG_TLS_DANE) &&
	    cfg_str(d->scope, CFG_TLS_FINGERPRINT)[0] == '\0';
}

/*
 * Applies D's MTA-STS policy to route RT (RFC 8461 4.1, 5): DANE wins
 * where the route has secure TLSA records; testing only logs what
 * enforce would do; enforce drops the MX hosts the policy does not name
 * and sets *ENFORCE (TLS with a valid certificate required).  Returns
 * how many addresses are left (RT->why says why when none is).
 */
static size_t
dest_route_sts(
    const struct dest *d, struct route *rt, bool *enforce, bool *testing)
{
	const struct sts_policy *p = d->sts;
	size_t i, n = 0;

	*enforce = *testing = false;
	if (p == NULL)
		return rt->naddr;
	for (i = 0; i < rt->naddr; i++)
		if (rt->addr[i].dane == ROUTE_DANE_MATCH ||
		    rt->addr[i].dane == ROUTE_DANE_UNUSABLE)
			return rt->naddr; /* DANE wins (RFC 8461 2) */
	for (i = 0; i < rt->naddr; i++) {
		struct route_addr *a = &rt->addr[i];

		if (runner_sts_mx_match(p, a->host)) {
			if (n != i)
				rt->addr[n] = *a;
			n++;
			continue;
		}
		log_info("smtp",
		    "MTA-STS: %.200s: MX host %.255s is not in the policy (id "
		    "%s, mode %s)%s",
		    d->lookup, a->host, p->id, runner_sts_mode_name(p->mode),
		    p->mode == STS_MODE_ENFORCE ? ": skipped" : "");
		snprintf(rt->why, sizeof(rt->why),
		    "MTA-STS: no MX host of %.200s matches its policy (id %s): "
		    "%.200s",
		    d->lookup, p->id, a->host);
		if (p->mode != STS_MODE_ENFORCE)
			n++; /* testing: report only */
	}
	if (p->mode != STS_MODE_ENFORCE) {
		*testing = p->mode == STS_MODE_TESTING;
		return rt->naddr;
	}
	*enforce = true;
	rt->naddr = n;
	return n;
}

static void dest_route_cb(void *arg, struct route *rt);

/* The MTA-STS policy of D arrived (P NULL: none): route D now. */
static void
dest_sts_cb(void *arg, const struct sts_policy *p)
{
	struct dest *d = arg;

	free(d->sts);
	d->sts = NULL;
	if (p != NULL) {
		d->sts = xmalloc(sizeof(*d->sts));
		*d->sts = *p;
	}
	runner_dns_route(d->runner->dns, d->lookup, d->port, d->mx,
	    dest_dane(d), dest_route_cb, d);
}

/* The resolver answered for D. */
static void
dest_route_cb(void *arg, struct route *rt)
{
	struct dest *d = arg;
	struct runner *r = d->runner;
	bool enforce = false, testing = false;

	if (rt->status != ROUTE_OK) {
		d->rstate = DR_NONE;
		dest_fail_all(
		    r, d, rt->status == ROUTE_FAIL ? 5 : 4, rt->dsn, rt->why);
		runner_dns_route_free(rt);
		runner_dest_kick(r, d);
		return;
	}
	if (dest_route_dane(d, rt) == 0 ||
	    dest_route_sts(d, rt, &enforce, &testing) == 0) {
		d->rstate = DR_NONE;
		dest_fail_all(r, d, 4, "4.7.5", rt->why);
		runner_dns_route_free(rt);
		runner_dest_kick(r, d);
		return;
	}
	runner_dns_route_free(d->route);
	free(d->addrs);
	d->route = rt;
	d->addrs = xcalloc(rt->naddr, sizeof(*d->addrs));
	for (size_t i = 0; i < rt->naddr; i++) {
		d->addrs[i].host = rt->addr[i].host;
		d->addrs[i].sa = rt->addr[i].sa;
		d->addrs[i].salen = rt->addr[i].salen;
		d->addrs[i].dane = rt->addr[i].dane == ROUTE_DANE_MATCH
		    ? SMTP_DANE_MATCH
		    : rt->addr[i].dane == ROUTE_DANE_UNUSABLE
		    ? SMTP_DANE_UNUSABLE
		    : SMTP_DANE_NONE;
		d->addrs[i].tlsa = rt->addr[i].tlsa;
		d->addrs[i].ntlsa = rt->addr[i].ntlsa;
		d->addrs[i].tlsa_base = rt->addr[i].tlsa_base[0] != '\0'
		    ? rt->addr[i].tlsa_base
		    : NULL;
		d->addrs[i].sts_enforce = enforce;
		d->addrs[i].sts_testing = testing;
	}
	d->route_until = rq_now() + ROUTE_TTL;
	d->rstate = DR_OK;
	runner_dest_kick(r, d);
}

/* Wakes destinations waiting for a global connection slot. */
void
runner_dest_ready_kick(struct runner *r)
{
	struct dest *d;

	while ((d = r->ready) != NULL) {
		unsigned before = r->active;

		r->ready = d->rnext;
		d->queued = false;
		d->rnext = NULL;
		runner_dest_kick(r, d);
		if (r->active == before && d->queued)
			break; /* still no slot */
	}
}

/* A result says D's host is down (no address accepted a session): D
 * defers its jobs without a connection for timeout.hoststatus. */
void
runner_dest_host_down(
    struct runner *r, struct dest *d, const struct smtp_result *res)
{
	int64_t hs = cfg_time(d->scope, CFG_T_HOSTSTATUS, CFG_NORMAL, false);

	if (hs > 0 && !r->stopping) {
		d->down_until = rq_now() + hs;
		snprintf(d->down_why, sizeof(d->down_why), "%s",
		    res->nrcpts ? res->rcpts[0].text : "host down");
		snprintf(d->down_dsn, sizeof(d->down_dsn), "%s",
		    res->nrcpts ? res->rcpts[0].status : "4.4.1");
		runner_cluster_host_down(r, d, hs); /* for every node */
	}
}

/* Forgets D's host status (every destination's when D is NULL). */
void
runner_dest_host_clear(struct runner *r, struct dest *d)
{
	struct dest *e;

	for (e = d != NULL ? d : r->all_dests; e != NULL;
	     e = d != NULL ? NULL : e->next)
		e->down_until = 0;
}

/* A request of D ended with RES (D's active count not yet taken down
 * for it): feeds its outcome to D's concurrency window. */
void
runner_dest_feedback(struct dest *d, const struct smtp_result *res)
{
	enum runner_conc_event ev = CONC_NEUTRAL;

	if (res->host_down)
		ev = CONC_FAILURE;
	else if (res->transactions > 0)
		ev = CONC_SUCCESS;
	runner_conc_feedback(&d->conc, ev, runner_dest_busy(d),
	    (unsigned)cfg_int(d->scope, CFG_INITIAL_DEST_CONCURRENCY),
	    (unsigned)cfg_int(d->scope, CFG_MAX_CONNECTIONS));
}

/* Looks at D again shortly: it waits for connections that are closing
 * (their end has no callback); only armed while jobs wait. */
static void
dest_retry_soon(struct dest *d)
{
	struct timeval tv = { 0, 200000 };

	if (!evtimer_pending(d->timer, NULL))
		evtimer_add(d->timer, &tv);
}

/* Starts routing D. */
static void
dest_resolve(struct runner *r, struct dest *d)
{
	d->rstate = DR_RESOLVING;
	if (dest_sts_applies(d)) {
		runner_sts_lookup(r->sts, d->scope, d->lookup, dest_sts_cb, d);
		return;
	}
	free(d->sts);
	d->sts = NULL;
	runner_dns_route(
	    r->dns, d->lookup, d->port, d->mx, dest_dane(d), dest_route_cb, d);
}

/*
 * May D submit at all now (at NOW, in seconds)?  No when nothing waits
 * (a retired D is freed then), when it is down (its jobs are deferred),
 * or while its route is being looked up (started here when missing or
 * stale).
 */
static bool
dest_may_submit(struct runner *r, struct dest *d, int64_t now)
{
	if (d->nwait == 0) {
		if (d->retired && dest_idle(d, now))
			dest_free(r, d);
		return false;
	}
	if (d->down_until > now) {
		char why[SMTP_TEXT_MAX + 64];

		snprintf(why, sizeof(why), "delivery temporarily suspended: %s",
		    d->down_why);
		dest_fail_all(r, d, 4, d->down_dsn, why);
		return false;
	}
	if (d->rstate == DR_RESOLVING)
		return false;
	if (d->rstate == DR_NONE || d->route_until < now) {
		if (d->active == 0 || d->rstate == DR_NONE) {
			dest_resolve(r, d);
			return false;
		}
	}
	return true;
}

/* Puts D at the end of the runner's ready list (once). */
static void
dest_ready_add(struct runner *r, struct dest *d)
{
	struct dest **pp = &r->ready;

	if (d->queued)
		return;
	d->queued = true;
	d->rnext = NULL;
	while (*pp)
		pp = &(*pp)->rnext;
	*pp = d;
}

/* Has D an idle connection or room for a new one (MAXC of its own,
 * MAXT in all)?  If not, it looks again shortly. */
static bool
dest_conn_free(struct runner *r, struct dest *d, unsigned maxc, unsigned maxt)
{
	if (smtp_client_conn_idle(r->smtp, d->key) > 0)
		return true;
	if (smtp_client_conn_count(r->smtp, d->key) >= maxc) {
		/* A connection of ours is closing: look again once it is
		 * gone. */
		dest_retry_soon(d);
		return false;
	}
	if (smtp_client_conn_total(r->smtp) >= maxt) {
		/* Idle connections of other destinations close after
		 * connection_cache_time. */
		dest_retry_soon(d);
		dest_ready_add(r, d);
		return false;
	}
	/* In a cluster, under a lease: the cluster wakes D when one comes
	 * (a retired D, whose key another D now holds, looks again). */
	if (!runner_cluster_conn_may(r, d)) {
		if (d->retired)
			dest_retry_soon(d);
		return false;
	}
	return true;
}

/* Takes a token of D's max_message_rate bucket RATE (refilled first);
 * without one, arms D's timer for when the next is there. */
static bool
dest_rate_take(struct dest *d, struct cfg_rate rate)
{
	int64_t us;
	double per_us;

	if (rate.count == 0)
		return true;
	switch (runner_cluster_rate(d->runner, d, &rate)) {
	case RUNNER_RATE_GO:
		return true;
	case RUNNER_RATE_WAIT:
		return false;
	case RUNNER_RATE_LOCAL:
		break; /* alone, or Redis away: RATE is this node's part */
	}
	us = rq_now_us();
	per_us = (double)rate.count / ((double)rate.per * 1e6);
	d->tokens += (double)(us - d->tokens_us) * per_us;
	if (d->tokens > rate.count)
		d->tokens = rate.count;
	d->tokens_us = us;
	if (d->tokens < 1.0) {
		/* Over the rate: wait, not a failure. */
		double wait = (1.0 - d->tokens) / per_us;
		struct timeval tv = { (time_t)(wait / 1e6),
			(suseconds_t)((int64_t)wait % 1000000) + 1 };

		evtimer_add(d->timer, &tv);
		return false;
	}
	d->tokens -= 1.0;
	return true;
}

/* The connections D may use at once: max_connections, and no more than
 * the receiver has shown it takes (its window). */
static unsigned
dest_conn_max(const struct dest *d)
{
	unsigned maxc = (unsigned)cfg_int(d->scope, CFG_MAX_CONNECTIONS);

	return maxc > d->conc.window ? d->conc.window : maxc;
}

/* Submits what D may submit now; arms its timer when it must wait. */
void
runner_dest_kick(struct runner *r, struct dest *d)
{
	const struct cfg_scope *g = cfg_scope(d->rc->cfg, NULL);
	unsigned maxc = dest_conn_max(d);
	unsigned maxt = (unsigned)cfg_int(g, CFG_MAX_CONNECTIONS_TOTAL);
	struct cfg_rate rate = cfg_rate(d->scope, CFG_MAX_MESSAGE_RATE);
	int64_t now = rq_now();

	if (r->stopping)
		return;
	if (r->fd_cap_until > rq_now_us() && maxt > r->fd_cap)
		maxt = r->fd_cap; /* short of file descriptors */
	d->last_used = now;
	if (!dest_may_submit(r, d, now))
		return;
	while (d->nwait > 0 && runner_dest_busy(d) < maxc) {
		if (!dest_conn_free(r, d, maxc, maxt) ||
		    !dest_rate_take(d, rate))
			break;
		runner_job_submit(r, dest_pop(r, d));
	}
}

/*
 * Submits D's next job for a connection that is already there (the next
 * and idle hooks): the connection limits do not apply to it; whether the
 * destination may submit at all (a route, not down), and its rate, do.
 */
static void
dest_submit_on_conn(struct runner *r, struct dest *d)
{
	if (r->stopping || d->nwait == 0 || d->rstate != DR_OK ||
	    d->down_until > rq_now() ||
	    !dest_rate_take(d, cfg_rate(d->scope, CFG_MAX_MESSAGE_RATE)))
		return;
	d->last_used = rq_now();
	runner_job_submit(r, dest_pop(r, d));
}

/*
 * The SMTP client's next hook: the connection of job REQ_ARG is about to
 * send its dot and may carry another job of the same destination behind
 * it (its MAIL FROM, RCPT TO and DATA go out with the dot).  That job
 * takes no connection, so the window and the connection limits do not
 * apply; whether the destination may submit at all, and its rate, do.
 */
void
runner_dest_next(void *arg, void *req_arg)
{
	struct job *j = req_arg;

	dest_submit_on_conn(arg, j->dest);
}

/*
 * The SMTP client's idle hook: a connection of KEY greeted with no job
 * (the one it was opened for went behind another connection's dot
 * meanwhile).  It takes the destination's next job when the window has
 * room for it, as a connection opened for it would have; else it QUITs.
 * It is already open, so the connection limits (and a cluster's lease)
 * do not apply to it; the destination's state and rate do.
 */
void
runner_dest_idle(void *arg, const char *key)
{
	struct runner *r = arg;
	struct dest *d = runner_dest_find(r, key);

	if (d != NULL && runner_dest_busy(d) < dest_conn_max(d))
		dest_submit_on_conn(r, d);
}

/* After a reload: destinations keep their old settings until empty. */
void
runner_dest_reload(struct runner *r)
{
	struct dest *d, *next;

	for (unsigned h = 0; h < RUNNER_HASH; h++) {
		for (d = r->dests[h]; d != NULL; d = next) {
			next = d->hnext;
			d->retired = true;
			d->hnext = NULL;
		}
		r->dests[h] = NULL;
	}
	for (d = r->all_dests; d != NULL; d = next) {
		next = d->next;
		if (d->nwait == 0 && d->active == 0 &&
		    d->rstate != DR_RESOLVING)
			dest_free(r, d);
	}
}

/* The current destination KEY, or NULL. */
struct dest *
runner_dest_find(struct runner *r, const char *key)
{
	struct dest *d;

	for (d = r->dests[hash_str(key)]; d != NULL; d = d->hnext)
		if (strcmp(d->key, key) == 0)
			return d;
	return NULL;
}

/* Drops every waiting job (they keep their leases); see runner_stop. */
void
runner_dest_jobs_drop(struct runner *r)
{
	for (struct dest *d = r->all_dests; d != NULL; d = d->next) {
		for (int c = 0; c < CFG_NCLASS; c++) {
			struct job *j, *next;

			for (j = d->wait_head[c]; j != NULL; j = next) {
				next = j->next;
				runner_job_free(r, j);
			}
			d->wait_head[c] = d->wait_tail[c] = NULL;
		}
		d->nwait = 0;
	}
}

/* Frees every destination and the janitor (after the client and
 * resolver are gone). */
void
runner_dest_destroy(struct runner *r)
{
	runner_dest_jobs_drop(r);
	while (r->all_dests != NULL) {
		struct dest *d = r->all_dests;

		d->rstate = DR_NONE;
		d->retired = true;
		r->all_dests = d->next;
		d->next = NULL;
		r->ready = NULL;
		dest_release(d);
	}
	memset(r->dests, 0, sizeof(r->dests));
	if (r->ev_janitor)
		event_free(r->ev_janitor);
	r->ev_janitor = NULL;
}
