/*
 * cluster.c - several nodes as one MTA: connection leases, rate tokens
 * and host status shared through Redis, the heartbeat, and what a node
 * does while Redis is away (cluster_fallback).  cluster_link.c carries
 * the calls; cluster_lua.c holds the scripts.
 *
 * Public: cluster_conf_get(), cluster_new(), cluster_free(),
 * cluster_conn_may(), cluster_conn_closed(), cluster_rate_take(),
 * cluster_host_down(), cluster_stats_get().  Module:
 * cluster_link_changed().
 *
 * The rules.
 *
 * 1. Leases.  A node opens a connection to a destination only under a
 *    lease: a member of the destination's lease set in Redis, which
 *    holds at most max_connections unexpired members (the acquire
 *    script).  A node asks for as many leases as its waiting jobs
 *    could use, up to the limit, but at most as many again as it holds
 *    (1, 2, 4...: a node whose jobs wait for rate tokens rather than
 *    connections does not take every slot), in one call; a refusal is
 *    asked again after a backoff (BACKOFF_MIN_US doubling to
 *    BACKOFF_MAX_US, a quarter of it random).  A
 *    lease counts for the destination, not for one connection: a node
 *    holds at least as many as it has connections there, a closing
 *    connection's lease serves the next one, and leases no connection
 *    needs are given back when no job waits (at once) or after
 *    SPARE_KEEP_US unused (the tick).  Fairness: a refused node marks
 *    the destination contended (its wait key); while it is, a node
 *    holding more than its share (limit / live nodes, at least 1)
 *    closes the excess after their message (idle ones at once), gives
 *    their leases back and takes no more than its share.  KumoMTA has
 *    none: a busy node keeps every slot it got.
 * 2. Expiry.  A lease expires cluster_lease_time after it was last
 *    renewed, on Redis' clock (TIME inside the script); every TICK_US
 *    a live node renews all of its leases in one call (the tick
 *    script), so a killed node's slots are free again within
 *    cluster_lease_time, whatever its SMTP timeouts (KumoMTA holds a
 *    lease for the sum of its timeouts).  A lease the renewal finds
 *    gone (Redis restarted empty, or the node was silent too long) is
 *    taken again while there is room; one that is not makes a
 *    connection close after the message it is sending (retire hook).
 * 3. Rates.  max_message_rate is a GCRA (the rate script) in Redis:
 *    burst = the count, one token every per/count.  A node reserves, in
 *    one call, the tokens its waiting jobs could use that fall due
 *    within HORIZON_US, each with its own due time, and sends each
 *    message at its token's time; after a call that got none it asks
 *    again when at least a few are due (half a horizon's worth), so a
 *    rate costs about two calls per horizon whatever the number of
 *    nodes.  A token not used within half a token interval of its time
 *    (TOKEN_SLACK_US if that is more: a loop turn busy with a commit
 *    must not waste fast rates) is dropped, so while the nodes keep the
 *    bucket busy no second holds more than count + 1 messages (count +
 *    1 + count / 100 for rates over 50 a second).
 * 4. Host status.  A node that finds a destination down sets its down
 *    key for timeout.hoststatus; the acquire script checks it before it
 *    grants a lease, so the other nodes defer that destination's jobs
 *    ("delivery temporarily suspended") without connecting; a node
 *    that holds leases there (and so asks for none) reads the key in
 *    its tick, within TICK_US.
 * 5. Heartbeat.  The tick also records the node in P:nodes and its
 *    queue counts in P:node:N (every PUBLISH_EVERY ticks), and answers
 *    how many nodes are live (a heartbeat within LIVE_MS).
 * 6. Fallback.  Until the first connection attempt ends, no new
 *    connection is opened.  While Redis cannot be reached (the link's
 *    deadlines: within a second), cluster_fallback rules: share = each
 *    node limit / live nodes (rounded down, at least 1; the live count
 *    of the last tick, 1 if there never was one), for connections and
 *    rates: a node over its share closes the excess after their
 *    message, and for a settling time (cluster_lease_time, at most
 *    SETTLE_MAX_US) a node that was in the cluster opens no more than
 *    the leases it held when Redis went away, so the nodes never hold more than the limit
 *    between them while they move to their shares (unless a message
 *    outlasts the settling time); local = the full limits; hold = no
 *    new connections (rates at the share).  When Redis answers again, the node claims leases
 *    for the connections it has (its old leases if they are still
 *    there), gives back the others, and for GRACE_US takes new leases
 *    only up to its share (with the live count from before the outage:
 *    an emptied Redis counts the nodes as they come back), so that
 *    nodes coming back a moment apart never open more than the limit
 *    between them.  Each switch is
 *    logged once.
 *
 * Invariants: in shared mode a node's connections to a destination
 * never outnumber its leases there but for the moment after a lease is
 * lost (closed after their message); hooks are called only from the
 * dispatcher (its own loop turn), never from a runner call or a hiredis
 * callback; a destination's state is freed only when it holds nothing,
 * has no call out and no connection; a destination told to wait is
 * woken again: by the answer of its call out, by its timer (armed for
 * the deadline it waits for, again when a wake for another deadline
 * comes first), by one of its connections closing, or by the link's
 * change (wake_all).
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "cluster_int.h"

#define TICK_US 500000 /* heartbeat and renewals */
#define LIVE_MS 2000 /* a node is live with a heartbeat this fresh */
#define PUBLISH_EVERY 4 /* ticks between queue counts published */
#define GRACE_US 3000000 /* after an outage: new leases at the share */
#define BACKOFF_MIN_US 25000 /* after a refused lease */
#define BACKOFF_MAX_US 200000
#define ACQUIRE_MAX 64 /* leases asked for in one call */
#define HORIZON_US 100000 /* tokens reserved at most this far ahead */
#define RESERVE_MAX 256 /* tokens asked for in one call */
#define TOKEN_SLACK_US 10000 /* a token may be this late, at least */
#define SPARE_KEEP_US 1000000 /* an unused lease is kept this long */
#define DEST_KEEP_US 60000000 /* a destination's state, unused */
#define CONTENDED_US 1000000 /* a wait key seen: share for this long */
#define SETTLE_MAX_US 10000000 /* fallback: the leases held bound this */

/* ---- argument lists ---- */

struct args {
	char **v;
	size_t *len;
	int n, a;
};

/* Appends LEN bytes of S to A. */
static void
args_addn(struct args *a, const char *s, size_t len)
{
	if (a->n == a->a) {
		a->a = a->a ? a->a * 2 : 16;
		a->v = xrealloc(a->v, (size_t)a->a * sizeof(*a->v));
		a->len = xrealloc(a->len, (size_t)a->a * sizeof(*a->len));
	}
	a->v[a->n] = xstrndup(s, len);
	a->len[a->n++] = len;
}

/* Appends a formatted argument to A. */
static void __attribute__((format(printf, 2, 3)))
args_add(struct args *a, const char *fmt, ...)
{
	char buf[1400];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(buf))
		n = (int)sizeof(buf) - 1;
	args_addn(a, buf, (size_t)n);
}

/* Frees A's arguments. */
static void
args_free(struct args *a)
{
	for (int i = 0; i < a->n; i++)
		free(a->v[i]);
	free(a->v);
	free(a->len);
	memset(a, 0, sizeof(*a));
}

/* Sends A as script S (or a command) with DONE(ARG). */
static struct ccall *
args_call(struct cluster *c, enum cluster_script s, struct args *a,
    cluster_done_fn done, void *arg)
{
	struct ccall *call = cluster_call(
	    c, s, a->n, (const char *const *)a->v, a->len, done, arg);

	args_free(a);
	return call;
}

/* ---- destinations ---- */

/* FNV-1a of KEY, a bucket. */
static unsigned
key_hash(const char *key)
{
	unsigned h = 2166136261u;

	for (; *key; key++)
		h = (h ^ (unsigned char)*key) * 16777619u;
	return h % CLUSTER_HASH;
}

/* The state of destination KEY, or NULL. */
static struct cdest *
dest_find(struct cluster *c, const char *key)
{
	struct cdest *d;

	for (d = c->dests[key_hash(key)]; d != NULL; d = d->hnext)
		if (strcmp(d->key, key) == 0)
			return d;
	return NULL;
}

static void dest_timer_cb(evutil_socket_t, short, void *);

/* The state of destination KEY, made if new. */
static struct cdest *
dest_get(struct cluster *c, const char *key)
{
	struct cdest *d = dest_find(c, key);
	unsigned h;

	if (d != NULL)
		return d;
	h = key_hash(key);
	d = xcalloc(1, sizeof(*d));
	d->c = c;
	d->key = xstrdup(key);
	d->backoff_us = BACKOFF_MIN_US;
	d->timer = evtimer_new(c->base, dest_timer_cb, d);
	d->hnext = c->dests[h];
	c->dests[h] = d;
	TAILQ_INSERT_TAIL(&c->all, d, entry);
	return d;
}

/* Frees D (it holds nothing and has no call out). */
static void
dest_free(struct cluster *c, struct cdest *d)
{
	struct cdest **pp = &c->dests[key_hash(d->key)];

	while (*pp != d)
		pp = &(*pp)->hnext;
	*pp = d->hnext;
	TAILQ_REMOVE(&c->all, d, entry);
	for (pp = &c->wake_head; *pp != NULL; pp = &(*pp)->wnext)
		if (*pp == d) {
			*pp = d->wnext;
			break;
		}
	event_free(d->timer);
	free(d->ids);
	free(d->tok);
	free(d->key);
	free(d);
}

/* Tells the runner about D from the dispatcher (its own loop turn). */
static void
dest_wake(struct cluster *c, struct cdest *d)
{
	d->wake = true;
	if (!d->woken) {
		d->woken = true;
		d->wnext = c->wake_head;
		c->wake_head = d;
	}
	event_active(c->ev_dispatch, EV_TIMEOUT, 1);
}

/* Wakes D at AT (mono us) unless it wakes earlier anyway.  D has one
 * timer for all its deadlines (a backoff, a token, the next rate
 * call): a wake for an earlier one finds AT not reached, and whoever
 * waits for AT must then call again (or D would sleep for good). */
static void
dest_timer_at(struct cdest *d, int64_t at)
{
	int64_t us = at - rq_mono_us();
	struct timeval tv;

	if (evtimer_pending(d->timer, NULL) && d->timer_at <= at)
		return;
	if (us < 0)
		us = 0;
	tv.tv_sec = (time_t)(us / 1000000);
	tv.tv_usec = (suseconds_t)(us % 1000000);
	d->timer_at = at;
	evtimer_add(d->timer, &tv);
}

/* A backoff or a token's time came. */
static void
dest_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct cdest *d = arg;

	dest_wake(d->c, d);
}

static size_t lease_target(const struct cluster *, const struct cdest *);
static unsigned share_of(const struct cluster *, unsigned limit);

/* How many of its OPEN connections D may keep: its lease target when
 * Redis answers; its share under cluster_fallback share; all of them
 * otherwise (local, hold). */
static size_t
conn_target(const struct cluster *c, const struct cdest *d, unsigned open)
{
	if (cluster_link_up(c))
		return lease_target(c, d);
	if (c->conf.fallback == CFG_CLUSTER_SHARE && d->limit > 0)
		return share_of(c, d->limit);
	return open;
}

/* The dispatcher: the hooks, for every destination with news. */
static void
dispatch_cb(evutil_socket_t fd, short what, void *arg)
{
	struct cluster *c = arg;
	const struct cluster_hooks *h = &c->hooks;
	struct cdest *d;

	if (c->wake_all) {
		c->wake_all = false;
		h->wake(h->arg, NULL);
	}
	while ((d = c->wake_head) != NULL) {
		c->wake_head = d->wnext;
		d->woken = false;
		if (d->down) {
			d->down = false;
			h->down(h->arg, d->key, d->down_until, d->down_dsn,
			    d->down_why);
		}
		if (d->retire) {
			unsigned open = h->conns(h->arg, d->key);
			size_t keep = conn_target(c, d, open);

			d->retire = false;
			if (open > keep)
				h->retire(
				    h->arg, d->key, open - (unsigned)keep);
		}
		if (d->wake) {
			d->wake = false;
			h->wake(h->arg, d->key);
		}
	}
}

/* ---- leases ---- */

/* Appends the name of lease ID to A. */
static void
args_lease(struct args *a, const struct cluster *c, uint64_t id)
{
	args_add(a, "%s%llu", c->lease_prefix, (unsigned long long)id);
}

/* The lease number of NAME (LEN bytes) if it is one of this node's. */
static bool
lease_id(const struct cluster *c, const char *name, size_t len, uint64_t *id)
{
	size_t pl = strlen(c->lease_prefix);
	char *end;

	if (len <= pl || memcmp(name, c->lease_prefix, pl) != 0)
		return false;
	*id = strtoull(name + pl, &end, 10);
	return end == name + len;
}

/* Gives back D's last N leases. */
static void
lease_release(struct cluster *c, struct cdest *d, size_t n)
{
	struct args a = { 0 };

	if (n > d->held)
		n = d->held;
	if (n == 0)
		return;
	args_add(&a, "ZREM");
	args_add(&a, "%s:lease:%s", c->name, d->key);
	for (size_t i = d->held - n; i < d->held; i++)
		args_lease(&a, c, d->ids[i]);
	d->held -= n;
	(void)args_call(c, CS_NONE, &a, NULL, NULL);
}

/* Adds lease ID to D's. */
static void
lease_add(struct cdest *d, uint64_t id)
{
	if (d->held == d->aids) {
		d->aids = d->aids ? d->aids * 2 : 8;
		d->ids = xrealloc(d->ids, d->aids * sizeof(*d->ids));
	}
	d->ids[d->held++] = id;
}

/* Share of LIMIT while Redis is away: limit / live nodes, at least 1. */
static unsigned
share_of(const struct cluster *c, unsigned limit)
{
	unsigned live = c->live_nodes ? c->live_nodes : 1;

	return limit / live ? limit / live : 1;
}

/* Whether another node waits for a lease of D. */
static bool
contended(const struct cdest *d)
{
	return d->contended_us > rq_mono_us();
}

/* The leases D's connections may keep: all it holds, or its share
 * while another node waits. */
static size_t
lease_target(const struct cluster *c, const struct cdest *d)
{
	size_t share = share_of(c, d->limit);

	return contended(d) && d->held > share ? share : d->held;
}

/* D's down key holds TEXT ("DSN REASON") for PTTL ms more: the
 * dispatcher tells the runner (rule 4). */
static void
dest_down_set(
    struct cluster *c, struct cdest *d, const char *text, long long pttl)
{
	const char *sp = strchr(text, ' ');

	snprintf(d->down_dsn, sizeof(d->down_dsn), "%.*s",
	    sp ? (int)(sp - text) : 5, sp ? text : "4.4.1");
	snprintf(d->down_why, sizeof(d->down_why), "%s", sp ? sp + 1 : text);
	d->down_until = rq_now() + (pttl > 0 ? (pttl + 999) / 1000 : 1);
	d->down = true;
	dest_wake(c, d);
}

/* The acquire script answered for call CALL (of destination D). */
static void
acquire_done(struct cluster *c, struct ccall *call, const redisReply *reply)
{
	struct cdest *d = call->arg;
	size_t granted = 0;

	d->acquiring = d->adopting = false;
	if (reply == NULL || reply->type != REDIS_REPLY_ARRAY ||
	    reply->elements < 1 ||
	    reply->element[0]->type != REDIS_REPLY_INTEGER) {
		if (reply != NULL)
			log_warn("cluster",
			    "acquire for %.200s: unexpected reply", d->key);
		dest_wake(c, d);
		return;
	}
	if (reply->element[0]->integer == 0 && reply->elements >= 3 &&
	    reply->element[1]->type == REDIS_REPLY_STRING) {
		/* rule 4: another node found it down */
		d->retry_us = rq_mono_us() + BACKOFF_MAX_US;
		dest_down_set(
		    c, d, reply->element[1]->str, reply->element[2]->integer);
		return;
	}
	if (call->adopt)
		d->held = 0; /* what Redis still grants is what is held */
	for (size_t i = 0; i + 1 < reply->elements && i < call->nids; i++) {
		if (reply->element[i + 1]->integer == 1) {
			lease_add(d, call->ids[i]);
			granted++;
		}
	}
	if (call->adopt) {
		d->retire = true; /* the dispatcher closes what has none */
	} else if (granted == 0) {
		/* rule 1: every slot is taken: ask again later */
		d->retry_us = rq_mono_us() + d->backoff_us +
		    (int64_t)(random() % (d->backoff_us / 4 + 1));
		dest_timer_at(d, d->retry_us);
		if (d->backoff_us < BACKOFF_MAX_US)
			d->backoff_us *= 2;
	} else {
		d->backoff_us = BACKOFF_MIN_US;
	}
	if (granted > 0)
		d->last_go_us = rq_mono_us(); /* kept for the jobs */
	dest_wake(c, d);
}

/* Asks for the leases IDS (N) of D: new ones, or with ADOPT all the node
 * should hold there; CHECK_DOWN: refuse when the destination is down. */
static void
acquire_send(struct cluster *c, struct cdest *d, uint64_t *ids, size_t n,
    bool adopt, bool check_down)
{
	struct args a = { 0 };
	struct ccall *call;

	args_add(&a, "5");
	args_add(&a, "%s:lease:%s", c->name, d->key);
	args_add(&a, "%s:down:%s", c->name, d->key);
	args_add(&a, "%s:dests", c->name);
	args_add(&a, "%s:dinfo:%s", c->name, d->key);
	args_add(&a, "%s:wait:%s", c->name, d->key);
	args_add(&a, "%lld", (long long)c->conf.lease_ms);
	args_add(&a, "%u", d->limit);
	args_add(&a, "%d", check_down ? 1 : 0);
	args_add(&a, "%s", d->key);
	for (size_t i = 0; i < n; i++)
		args_lease(&a, c, ids[i]);
	call = args_call(c, CS_ACQUIRE, &a, acquire_done, d);
	if (call == NULL) {
		free(ids);
		return;
	}
	call->ids = ids;
	call->nids = n;
	call->adopt = adopt;
	d->acquiring = true;
	d->adopting = adopt;
}

enum cluster_answer
cluster_conn_may(struct cluster *c, const char *key, unsigned open,
    unsigned limit, unsigned want)
{
	struct cdest *d = dest_get(c, key);
	int64_t now = rq_mono_us();
	unsigned cap;
	size_t n;
	uint64_t *ids;

	d->limit = limit;
	d->last_used_us = now;
	if (!cluster_link_up(c)) {
		/* rule 6 */
		if (!c->tried)
			return CLUSTER_WAIT;
		switch (c->conf.fallback) {
		case CFG_CLUSTER_LOCAL:
			return CLUSTER_GO;
		case CFG_CLUSTER_SHARE:
			/* while others close what is over their share, no
			 * more than the leases held when Redis went away */
			cap = share_of(c, limit);
			if (now < c->settle_until_us && cap > d->fb_held)
				cap = (unsigned)d->fb_held;
			return open < cap ? CLUSTER_GO : CLUSTER_WAIT;
		case CFG_CLUSTER_HOLD:
			return CLUSTER_WAIT;
		}
		return CLUSTER_WAIT;
	}
	if (d->adopting)
		return CLUSTER_WAIT;
	if (lease_target(c, d) > open) {
		d->last_go_us = now;
		return CLUSTER_GO;
	}
	if (d->acquiring)
		return CLUSTER_WAIT;
	if (now < d->retry_us) {
		/* woken for another deadline: this one again */
		dest_timer_at(d, d->retry_us);
		return CLUSTER_WAIT;
	}
	cap = now < c->grace_until_us || contended(d) ? share_of(c, limit)
						      : limit;
	if (d->held >= cap)
		return CLUSTER_WAIT; /* its own closing connections free one */
	n = want ? want : 1;
	if (n > cap - d->held)
		n = cap - d->held;
	if (n > d->held && d->held > 0)
		n = d->held; /* slow start */
	else if (d->held == 0)
		n = 1;
	if (n > ACQUIRE_MAX)
		n = ACQUIRE_MAX;
	ids = xcalloc(n, sizeof(*ids));
	for (size_t i = 0; i < n; i++)
		ids[i] = ++c->next_id;
	acquire_send(c, d, ids, n, false, true);
	return CLUSTER_WAIT;
}

void
cluster_conn_closed(
    struct cluster *c, const char *key, unsigned open, bool jobs)
{
	struct cdest *d = dest_find(c, key);
	size_t keep;

	if (d == NULL || !cluster_link_up(c) || d->adopting)
		return;
	keep = jobs ? lease_target(c, d) : 0;
	if (keep < open)
		keep = open;
	if (d->held > keep)
		lease_release(c, d, d->held - keep);
	if (d->held > open)
		dest_wake(c, d); /* a lease for the next job */
}

/* ---- rates ---- */

/* Drops D's tokens whose time passed more than half an interval ago
 * (or TOKEN_SLACK_US, if more: rule 3). */
static void
tokens_expire(struct cluster *c, struct cdest *d, int64_t now)
{
	int64_t slack = d->tok_T / 2 > TOKEN_SLACK_US ? d->tok_T / 2
						      : TOKEN_SLACK_US;

	while (d->ntok > 0 && d->tok[d->tok_head] + slack < now) {
		d->tok_head = (d->tok_head + 1) % d->atok;
		d->ntok--;
		c->st.tokens_dropped++;
	}
}

/* Appends a token due at AT to D's ring. */
static void
token_push(struct cdest *d, int64_t at)
{
	if (d->ntok == d->atok) {
		size_t na = d->atok ? d->atok * 2 : 16;
		int64_t *t = xcalloc(na, sizeof(*t));

		for (size_t i = 0; i < d->ntok; i++)
			t[i] = d->tok[(d->tok_head + i) % d->atok];
		free(d->tok);
		d->tok = t;
		d->atok = na;
		d->tok_head = 0;
	}
	d->tok[(d->tok_head + d->ntok) % d->atok] = at;
	d->ntok++;
}

/* The rate script answered for D (its reply: count, first, next). */
static void
rate_done(struct cluster *c, struct ccall *call, const redisReply *reply)
{
	struct cdest *d = call->arg;
	int64_t now = rq_mono_us(), T = d->tok_T;
	long long n, first, next;

	d->reserving = false;
	if (reply == NULL || reply->type != REDIS_REPLY_ARRAY ||
	    reply->elements < 3) {
		if (reply != NULL)
			log_warn("cluster", "rate for %.200s: unexpected reply",
			    d->key);
		dest_wake(c, d);
		return;
	}
	n = reply->element[0]->integer;
	first = reply->element[1]->integer;
	next = reply->element[2]->integer;
	/* due times count from now, after the reply: never early */
	for (long long j = 0; j < n; j++)
		token_push(d, now + (first + j * T > 0 ? first + j * T : 0));
	if (n == 0) {
		/* ask again when a few are due (rule 3) */
		int64_t k = HORIZON_US / (2 * T);

		if (k < 1)
			k = 1;
		if (k > (int64_t)call->nids)
			k = (int64_t)call->nids;
		d->rate_retry_us = now + next - HORIZON_US + (k - 1) * T;
		if (d->rate_retry_us < now + 1000)
			d->rate_retry_us = now + 1000;
		dest_timer_at(d, d->rate_retry_us);
	} else if (d->ntok > 0) {
		dest_timer_at(d, d->tok[d->tok_head]);
	}
	dest_wake(c, d);
}

/* Reserves up to WANT tokens of D's RATE. */
static void
reserve_send(struct cluster *c, struct cdest *d, const struct cfg_rate *rate,
    size_t want)
{
	struct args a = { 0 };
	struct ccall *call;
	int64_t T = ((int64_t)rate->per * 1000000 + rate->count - 1) /
	    rate->count;

	if (want > RESERVE_MAX)
		want = RESERVE_MAX;
	d->tok_T = T;
	args_add(&a, "3");
	args_add(&a, "%s:rate:%s", c->name, d->key);
	args_add(&a, "%s:dests", c->name);
	args_add(&a, "%s:dinfo:%s", c->name, d->key);
	args_add(&a, "%lld", (long long)T);
	args_add(&a, "%lld", (long long)T * (rate->count - 1));
	args_add(&a, "%zu", want);
	args_add(&a, "%d", HORIZON_US);
	args_add(&a, "%s", d->key);
	args_add(&a, "%u/%us", rate->count, rate->per);
	call = args_call(c, CS_RATE, &a, rate_done, d);
	if (call == NULL)
		return;
	call->nids = want; /* the batch asked for (rate_done) */
	d->reserving = true;
}

enum cluster_answer
cluster_rate_take(
    struct cluster *c, const char *key, struct cfg_rate *rate, unsigned want)
{
	struct cdest *d;
	int64_t now;

	if (!cluster_link_up(c)) {
		if (!c->tried)
			return CLUSTER_WAIT;
		if (c->conf.fallback != CFG_CLUSTER_LOCAL)
			rate->count = share_of(c, rate->count);
		return CLUSTER_LOCAL;
	}
	d = dest_get(c, key);
	now = rq_mono_us();
	d->last_used_us = now;
	tokens_expire(c, d, now);
	if (d->ntok > 0 && d->tok[d->tok_head] <= now) {
		d->tok_head = (d->tok_head + 1) % d->atok;
		d->ntok--;
		c->st.tokens_taken++;
		return CLUSTER_GO;
	}
	if (d->ntok > 0) {
		dest_timer_at(d, d->tok[d->tok_head]);
		return CLUSTER_WAIT;
	}
	if (d->reserving)
		return CLUSTER_WAIT;
	if (now < d->rate_retry_us) {
		dest_timer_at(d, d->rate_retry_us); /* as above */
		return CLUSTER_WAIT;
	}
	reserve_send(c, d, rate, want ? want : 1);
	return CLUSTER_WAIT;
}

/* ---- host status ---- */

void
cluster_host_down(struct cluster *c, const char *key, int64_t secs,
    const char *dsn, const char *why)
{
	struct args a = { 0 };

	if (!cluster_link_up(c) || secs <= 0)
		return;
	args_add(&a, "SET");
	args_add(&a, "%s:down:%s", c->name, key);
	args_add(&a, "%.15s %.380s", dsn[0] ? dsn : "4.4.1", why);
	args_add(&a, "PX");
	args_add(&a, "%lld", (long long)secs * 1000);
	(void)args_call(c, CS_NONE, &a, NULL, NULL);
}

/* ---- the heartbeat ---- */

/* The tick script answered: live nodes, then per destination the
 * leases lost, whether another node waits, and its down mark. */
static void
tick_done(struct cluster *c, struct ccall *call, const redisReply *reply)
{
	unsigned live;

	if (reply == NULL || reply->type != REDIS_REPLY_ARRAY ||
	    reply->elements < 1)
		return;
	live = reply->element[0]->integer > 0
	    ? (unsigned)reply->element[0]->integer
	    : 1;
	/* back from an outage, a Redis restarted empty counts the nodes as
	 * they return: the share keeps the count from before meanwhile */
	if ((live >= c->live_nodes || rq_mono_us() >= c->grace_until_us) &&
	    live != c->live_nodes) {
		/* the count the shares of cluster_fallback use: logged,
		 * so that an admin (and a test) knows what it was */
		log_info("cluster", "%u live node%s in the cluster %s (was %u)",
		    live, live == 1 ? "" : "s", c->name, c->live_nodes);
		c->live_nodes = live;
	}
	for (size_t k = 0; k < call->nkeys && 4 * k + 4 < reply->elements;
	     k++) {
		const redisReply *lost = reply->element[4 * k + 1];
		const redisReply *wait = reply->element[4 * k + 2];
		const redisReply *down = reply->element[4 * k + 3];
		const redisReply *pttl = reply->element[4 * k + 4];
		struct cdest *d = dest_find(c, call->keys[k]);
		size_t gone = 0;

		if (d == NULL || d->adopting || lost->type != REDIS_REPLY_ARRAY)
			continue;
		/* rule 4: leases held do not skip the check of the down
		 * key: it is read here, every tick */
		if (down->type == REDIS_REPLY_STRING && down->len > 0 &&
		    pttl->type == REDIS_REPLY_INTEGER &&
		    rq_now() >= d->down_until)
			dest_down_set(c, d, down->str, pttl->integer);
		if (wait->type == REDIS_REPLY_INTEGER && wait->integer == 1) {
			/* rule 1: another node waits: keep to the share */
			d->contended_us = rq_mono_us() + CONTENDED_US;
			if (d->held > share_of(c, d->limit)) {
				d->retire = true;
				dest_wake(c, d);
			}
		}
		for (size_t i = 0; i < lost->elements; i++) {
			uint64_t id;

			if (!lease_id(c, lost->element[i]->str,
				lost->element[i]->len, &id))
				continue;
			for (size_t j = 0; j < d->held; j++)
				if (d->ids[j] == id) {
					d->ids[j] = d->ids[--d->held];
					gone++;
					break;
				}
		}
		if (gone > 0) {
			log_warn("cluster",
			    "%.200s: %zu connection lease%s lost: as many "
			    "connections close after their message",
			    d->key, gone, gone == 1 ? "" : "s");
			d->retire = true;
			dest_wake(c, d);
		}
	}
}

/* Adds the heartbeat's hash fields to A (and their number first). */
static void
tick_fields(struct cluster *c, struct args *a)
{
	struct cluster_counts n = { 0 };
	struct cluster_stats st;

	if (c->tick_n % PUBLISH_EVERY != 1) {
		args_add(a, "0");
		return;
	}
	c->hooks.counts(c->hooks.arg, &n);
	cluster_stats_get(c, &st);
	args_add(a, "9");
	args_add(a, "msgs");
	args_add(a, "%llu", (unsigned long long)n.msgs);
	args_add(a, "pending");
	args_add(a, "%llu", (unsigned long long)n.pending);
	args_add(a, "deferred");
	args_add(a, "%llu", (unsigned long long)n.deferred);
	args_add(a, "held");
	args_add(a, "%llu", (unsigned long long)n.held);
	args_add(a, "conns");
	args_add(a, "%llu", (unsigned long long)n.conns);
	args_add(a, "leases");
	args_add(a, "%llu", (unsigned long long)st.leases);
	args_add(a, "pid");
	args_add(a, "%ld", (long)getpid());
	args_add(a, "version");
	args_add(a, "%s", RELAYQ_VERSION);
	args_add(a, "published");
	args_add(a, "%lld", (long long)rq_now());
}

/* Gives back leases no connection needs, closes connections without
 * one, forgets destinations unused for DEST_KEEP_US. */
static void
tick_reconcile(struct cluster *c, int64_t now)
{
	struct cdest *d, *next;

	for (d = TAILQ_FIRST(&c->all); d != NULL; d = next) {
		unsigned open = c->hooks.conns(c->hooks.arg, d->key);
		size_t keep;

		next = TAILQ_NEXT(d, entry);
		tokens_expire(c, d, now);
		if (d->contended_us != 0 && d->contended_us <= now) {
			d->contended_us = 0; /* nobody waits: more may go */
			dest_wake(c, d);
		}
		if (d->acquiring)
			continue;
		keep = now - d->last_go_us > SPARE_KEEP_US ? 0
							   : lease_target(c, d);
		if (keep < open)
			keep = open;
		if (d->held > keep)
			lease_release(c, d, d->held - keep);
		else if (d->held < open) {
			d->retire = true;
			dest_wake(c, d);
		}
		if (d->held == 0 && d->ntok == 0 && !d->reserving &&
		    open == 0 && !d->woken &&
		    now - d->last_used_us > DEST_KEEP_US)
			dest_free(c, d);
	}
}

/* The tick: heartbeat, renewals, the node count (rule 2, 5). */
static void
tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct cluster *c = arg;
	struct args a = { 0 };
	struct cdest *d;
	char **keys;
	size_t nkeys = 0, k = 0;
	struct ccall *call;

	if (c->settle_until_us != 0 && rq_mono_us() >= c->settle_until_us) {
		/* the settling time (or the grace) is over: waiting
		 * destinations may use their share (or more) now */
		c->settle_until_us = 0;
		c->wake_all = true;
		event_active(c->ev_dispatch, EV_TIMEOUT, 1);
	}
	if (c->grace_until_us != 0 && rq_mono_us() >= c->grace_until_us) {
		c->grace_until_us = 0;
		c->wake_all = true;
		event_active(c->ev_dispatch, EV_TIMEOUT, 1);
	}
	if (!cluster_link_up(c))
		return;
	c->tick_n++;
	tick_reconcile(c, rq_mono_us());
	TAILQ_FOREACH(d, &c->all, entry)
	if (d->held > 0 && !d->adopting)
		nkeys++;
	args_add(&a, "%zu", 3 * nkeys + 2);
	args_add(&a, "%s:nodes", c->name);
	args_add(&a, "%s:node:%s", c->name, c->node);
	keys = xcalloc(nkeys + 1, sizeof(*keys));
	TAILQ_FOREACH(d, &c->all, entry)
	if (d->held > 0 && !d->adopting) {
		args_add(&a, "%s:lease:%s", c->name, d->key);
		args_add(&a, "%s:wait:%s", c->name, d->key);
		args_add(&a, "%s:down:%s", c->name, d->key);
		keys[k++] = xstrdup(d->key);
	}
	args_add(&a, "%s", c->node);
	args_add(&a, "%lld", (long long)c->conf.lease_ms);
	args_add(&a, "%d", LIVE_MS);
	tick_fields(c, &a);
	TAILQ_FOREACH(d, &c->all, entry)
	if (d->held > 0 && !d->adopting) {
		args_add(&a, "%u", d->limit);
		args_add(&a, "%zu", d->held);
		for (size_t i = 0; i < d->held; i++)
			args_lease(&a, c, d->ids[i]);
	}
	call = args_call(c, CS_TICK, &a, tick_done, NULL);
	if (call == NULL) {
		for (size_t i = 0; i < nkeys; i++)
			free(keys[i]);
		free(keys);
		return;
	}
	call->keys = keys;
	call->nkeys = nkeys;
}

/* ---- the link's transitions ---- */

/* Redis answers again: claim leases for the connections the node has,
 * give back the others (rule 6). */
static void
adopt_all(struct cluster *c)
{
	struct cdest *d;

	TAILQ_FOREACH(d, &c->all, entry)
	{
		unsigned open = c->hooks.conns(c->hooks.arg, d->key);
		size_t keep = d->held < open ? d->held : open;
		uint64_t *ids;

		d->acquiring = d->adopting = d->reserving = false;
		d->retry_us = 0;
		d->backoff_us = BACKOFF_MIN_US;
		if (d->held > keep)
			lease_release(c, d, d->held - keep);
		if (open == 0 || d->limit == 0)
			continue;
		ids = xcalloc(open, sizeof(*ids));
		for (size_t i = 0; i < open; i++)
			ids[i] = i < keep ? d->ids[i] : ++c->next_id;
		acquire_send(c, d, ids, open, true, false);
	}
}

void
cluster_link_changed(struct cluster *c, bool up, const char *why)
{
	static const char *const fb[] = { "share", "local", "hold" };
	struct cdest *d;

	if (up) {
		if (c->announced != 1)
			log_info("cluster",
			    "Redis at %s reachable: limits shared by the "
			    "cluster %s as node %s",
			    c->addr_text, c->name, c->node);
		c->announced = 1;
		if (c->fallen)
			c->grace_until_us = rq_mono_us() + GRACE_US;
		c->up_once = true;
		adopt_all(c);
		event_active(c->ev_tick, EV_TIMEOUT, 1);
	} else {
		if (c->announced != 2) {
			log_warn("cluster",
			    "Redis at %s unreachable (%.200s): "
			    "cluster_fallback %s until it answers",
			    c->addr_text, why ? why : "?",
			    fb[c->conf.fallback]);
			c->st.fallbacks++;
		}
		if (c->announced != 2 && c->up_once) {
			int64_t settle = c->conf.lease_ms * 1000;

			/* rule 6: the leases held now bound the node until the
			 * others are down to their share */
			c->settle_until_us = rq_mono_us() +
			    (settle < SETTLE_MAX_US ? settle : SETTLE_MAX_US);
			TAILQ_FOREACH(d, &c->all, entry)
			{
				d->fb_held = d->held;
				d->retire = true; /* down to the share */
				dest_wake(c, d);
			}
		}
		c->announced = 2;
		c->fallen = true;
		TAILQ_FOREACH(d, &c->all, entry)
		{
			d->ntok = 0; /* the node's own bucket meanwhile */
			d->rate_retry_us = 0;
		}
	}
	c->wake_all = true;
	event_active(c->ev_dispatch, EV_TIMEOUT, 1);
}

/* ---- the cluster ---- */

bool
cluster_conf_get(const struct cfg *cfg, const char *host,
    struct cluster_conf *conf, char *nodebuf, size_t nodelen)
{
	const struct cfg_scope *g = cfg_scope(cfg, NULL);
	const char *s = cfg_str(g, CFG_CLUSTER_REDIS), *why;
	size_t i;

	memset(conf, 0, sizeof(*conf));
	if (s[0] == '\0' ||
	    cfg_redis_addr_parse(s, strlen(s), &conf->addr, &why) < 0)
		return false;
	conf->password = cfg_cluster_password(cfg);
	conf->name = cfg_str(g, CFG_CLUSTER_NAME);
	s = cfg_str(g, CFG_CLUSTER_NODE);
	if (s[0] == '\0')
		s = host;
	/* a host name may hold what a node name may not */
	for (i = 0; s[i] != '\0' && i + 1 < nodelen && i < 64; i++)
		nodebuf[i] = isalnum((unsigned char)s[i]) || s[i] == '.' ||
			s[i] == '-'
		    ? s[i]
		    : '_';
	nodebuf[i] = '\0';
	if (i == 0)
		snprintf(nodebuf, nodelen, "node");
	conf->node = nodebuf;
	conf->lease_ms = cfg_time(
			     g, CFG_CLUSTER_LEASE_TIME, CFG_NORMAL, false) *
	    1000;
	conf->fallback = cfg_cluster_fallback(cfg);
	return true;
}

struct cluster *
cluster_new(struct event_base *base, const struct cluster_conf *conf,
    const struct cluster_hooks *hooks)
{
	struct cluster *c = xcalloc(1, sizeof(*c));
	struct timeval tick = { 0, TICK_US };

	c->base = base;
	c->conf = *conf;
	c->password = conf->password ? xstrdup(conf->password) : NULL;
	c->name = xstrdup(conf->name);
	c->node = xstrdup(conf->node);
	c->conf.password = c->password;
	c->conf.name = c->name;
	c->conf.node = c->node;
	c->hooks = *hooks;
	if (conf->addr.unix_socket)
		snprintf(c->addr_text, sizeof(c->addr_text), "unix:%s",
		    conf->addr.path);
	else
		snprintf(c->addr_text, sizeof(c->addr_text),
		    strchr(conf->addr.ip, ':') ? "[%s]:%u" : "%s:%u",
		    conf->addr.ip, (unsigned)conf->addr.port);
	/* lease names of an earlier run of this node never match */
	snprintf(c->lease_prefix, sizeof(c->lease_prefix), "%s#%llx#", c->node,
	    (unsigned long long)rq_now_us());
	TAILQ_INIT(&c->calls);
	TAILQ_INIT(&c->all);
	c->ev_dispatch = event_new(base, -1, 0, dispatch_cb, c);
	c->ev_tick = event_new(base, -1, EV_PERSIST, tick_cb, c);
	event_add(c->ev_tick, &tick);
	cluster_link_start(c);
	return c;
}

void
cluster_free(struct cluster *c)
{
	struct cdest *d;
	struct args a = { 0 };

	if (c == NULL)
		return;
	if (cluster_link_up(c)) {
		TAILQ_FOREACH(d, &c->all, entry)
		lease_release(c, d, d->held);
		args_add(&a, "ZREM");
		args_add(&a, "%s:nodes", c->name);
		args_add(&a, "%s", c->node);
		(void)args_call(c, CS_NONE, &a, NULL, NULL);
	}
	cluster_link_stop(c);
	while ((d = TAILQ_FIRST(&c->all)) != NULL)
		dest_free(c, d);
	event_free(c->ev_dispatch);
	event_free(c->ev_tick);
	if (c->password != NULL)
		rq_cleanse(c->password, strlen(c->password));
	free(c->password);
	free(c->name);
	free(c->node);
	free(c);
}

void
cluster_stats_get(const struct cluster *c, struct cluster_stats *st)
{
	const struct cdest *d;

	*st = c->st;
	st->shared = cluster_link_up(c);
	st->live_nodes = c->live_nodes;
	st->leases = st->tokens = 0;
	TAILQ_FOREACH(d, &c->all, entry)
	{
		st->leases += d->held;
		st->tokens += d->ntok;
	}
}
