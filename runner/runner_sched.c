/*
 * runner_sched.c - what to deliver next: takes due messages from the
 * queue by class, groups each message's leased recipients by destination
 * (runner_route.c chooses it), keeps per-destination wait lists, routes
 * destinations, and hands jobs to the SMTP client under max_connections,
 * max_connections_total, max_message_rate and timeout.hoststatus; a job
 * whose destination cannot be reached moves to its fallback relay.
 *
 * Runner-private: sched_init(), sched_destroy(), sched_run(),
 * sched_arm(), sched_kick(), dest_kick(), sched_reload(),
 * sched_free_all(), sched_busy(), rmsg_release(), dest_get().
 *
 * Priorities: the free part of the in-memory budget is shared among the
 * classes that have due work by priority_weights (dsn counts with the
 * weight of normal), and a destination short of connection slots picks
 * its next job by smooth weighted round robin over its class lists, so
 * urgent goes first but a flood of one class never starves another.
 *
 * Invariants: the loop never polls: ev_sched is armed at the next due
 * time (or not at all while the budget is full: a finished job kicks it);
 * a message is in memory at most once (re-taken ids are skipped); a
 * destination is freed only when it has no job waiting or in flight and
 * no lookup pending.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "runner_int.h"

#define TAKE_MAX 1024 /* ids per queue_take_due() call */
#define ROUTE_TTL 60 /* seconds a route is reused */
#define DEST_KEEP 300 /* seconds an unused destination is kept */

static unsigned
hash_str(const char *s)
{
	unsigned h = 2166136261u;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h % RUNNER_HASH;
}

static unsigned
hash_id(uint64_t id)
{
	return (unsigned)((id * 0x9E3779B97F4A7C15ull) >> 52) % RUNNER_HASH;
}

static void sched_cb(evutil_socket_t, short, void *);
static void sched_janitor_cb(evutil_socket_t, short, void *);
static void dest_free(struct runner *, struct dest *);
static void sched_arm_int(struct runner *, bool after_run);

void
sched_init(struct runner *r)
{
	struct timeval tv = { 60, 0 };

	r->ev_sched = evtimer_new(r->base, sched_cb, r);
	r->ev_janitor = event_new(r->base, -1, EV_PERSIST, sched_janitor_cb, r);
	event_add(r->ev_janitor, &tv);
}

/* Anything in flight or waiting (for --exit-when-idle)? */
bool
sched_busy(const struct runner *r)
{
	/* Every waiting or active job holds its message in memory. */
	return r->nmsgs > 0 || r->active > 0;
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

/* The janitor: frees destinations unused for DEST_KEEP seconds (their
 * route, rate bucket and host status are then no longer needed). */
static void
sched_janitor_cb(evutil_socket_t fd, short what, void *arg)
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

/* Finds a leased message in memory. */
static struct rmsg *
rmsg_find(struct runner *r, uint64_t id)
{
	struct rmsg *m;

	for (m = r->msgs[hash_id(id)]; m != NULL; m = m->hnext)
		if (m->msg->id == id)
			return m;
	return NULL;
}

/* Drops a job's reference to its message; frees it with the last. */
void
rmsg_release(struct runner *r, struct rmsg *m)
{
	struct rmsg **pp;

	if (--m->refs > 0)
		return;
	for (pp = &r->msgs[hash_id(m->msg->id)]; *pp != m; pp = &(*pp)->hnext)
		;
	*pp = m->hnext;
	r->nmsgs--;
	queue_msg_free(m->msg);
	free(m->body);
	free(m);
}

/* Frees a job and drops its message reference. */
void
job_free(struct runner *r, struct job *j)
{
	rmsg_release(r, j->m);
	free(j->idx);
	free(j);
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
	if (d->timer)
		event_free(d->timer);
	route_free(d->route);
	free(d->addrs);
	rcfg_unref(d->rc);
	free(d->key);
	free(d->lookup);
	free(d);
}

static void dest_timer_cb(evutil_socket_t, short, void *);

/* The destination KEY under the current config, made if new: LOOKUP
 * routed on PORT (MX lookup when MX), scope SC, credentials AUTH,
 * fallback position FB (see runner_route.c, which makes the keys). */
struct dest *
dest_get(struct runner *r, const char *key, const struct cfg_scope *sc,
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
static void
dest_enqueue(struct dest *d, struct job *j)
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

/* Pops the next job by smooth weighted round robin over the classes. */
static struct job *
dest_pop(struct runner *r, struct dest *d)
{
	static const int order[CFG_NCLASS] = { CFG_URGENT, CFG_DSN, CFG_NORMAL,
		CFG_NONURGENT };
	const struct cfg_scope *g = cfg_scope(d->rc->cfg, NULL);
	int total = 0, best = -1, i;
	struct job *j;

	for (i = 0; i < CFG_NCLASS; i++) {
		int c = order[i];
		int w = (int)cfg_weight(g, c == CFG_DSN ? CFG_NORMAL : c);

		if (d->wait_head[c] == NULL)
			continue;
		d->wrr[c] += w;
		total += w;
		if (best < 0 || d->wrr[c] > d->wrr[best])
			best = c;
	}
	if (best < 0)
		return NULL;
	d->wrr[best] -= total;
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
static void
job_move(struct runner *r, struct job *j, struct dest *fd, const char *why)
{
	log_info("smtp", "%s: %.300s; trying fallback relay %s%s%s:%u",
	    j->m->msg->idstr, why, fd->mx ? "" : "[", fd->lookup,
	    fd->mx ? "" : "]", (unsigned)fd->port);
	j->dest = fd;
	dest_enqueue(fd, j);
	dest_kick(r, fd);
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
		if (cls == 4 &&
		    (fd = route_fallback(r, d, j->m->msg->sender)) != NULL) {
			job_move(r, j, fd, why);
			continue;
		}
		result_job_fail(r, j, cls, dsn, why);
		job_free(r, j);
	}
	memset(d->wrr, 0, sizeof(d->wrr));
}

/* The resolver answered for D. */
static void
dest_route_cb(void *arg, struct route *rt)
{
	struct dest *d = arg;
	struct runner *r = d->runner;

	if (rt->status != ROUTE_OK) {
		d->rstate = DR_NONE;
		dest_fail_all(
		    r, d, rt->status == ROUTE_FAIL ? 5 : 4, rt->dsn, rt->why);
		route_free(rt);
		dest_kick(r, d);
		return;
	}
	route_free(d->route);
	free(d->addrs);
	d->route = rt;
	d->addrs = xcalloc(rt->naddr, sizeof(*d->addrs));
	for (size_t i = 0; i < rt->naddr; i++) {
		d->addrs[i].host = rt->addr[i].host;
		d->addrs[i].sa = rt->addr[i].sa;
		d->addrs[i].salen = rt->addr[i].salen;
	}
	d->route_until = rq_now() + ROUTE_TTL;
	d->rstate = DR_OK;
	dest_kick(r, d);
}

/* The rate or hoststatus timer of a destination. */
static void
dest_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dest *d = arg;

	dest_kick(d->runner, d);
}

/* Decodes RFC 3461 xtext ("+2B" -> "+"); a malformed "+" stays as is.
 * The queue keeps ENVID and ORCPT as received (xtext); the SMTP client
 * wants them plain and encodes them itself.  Returns a new string. */
char *
runner_xtext_decode(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = strlen(s), o = 0;
	char *out = xmalloc(n + 1);

	for (size_t i = 0; i < n; i++) {
		const char *h1, *h2;

		if (s[i] == '+' && i + 2 < n &&
		    (h1 = strchr(hex, s[i + 1])) != NULL &&
		    (h2 = strchr(hex, s[i + 2])) != NULL) {
			out[o++] = (char)((h1 - hex) * 16 + (h2 - hex));
			i += 2;
		} else {
			out[o++] = s[i];
		}
	}
	out[o] = '\0';
	return out;
}

/* Submits job J to the SMTP client. */
static void job_done_cb(void *arg, const struct smtp_result *res);

static void
job_submit(struct runner *r, struct job *j)
{
	struct dest *d = j->dest;
	struct rmsg *m = j->m;
	struct smtp_request req;
	struct smtp_rcpt *rc;
	enum queue_result qr;
	enum smtp_submit_result sr;
	char *envid;
	bool first = true;

	if (m->body == NULL) {
		qr = queue_body_load(r->q, m->msg->id, &m->body, &m->bodylen);
		if (qr == QUEUE_NOTFOUND) {
			/* Deleted meanwhile: nothing to deliver. */
			job_free(r, j);
			return;
		}
		if (qr != QUEUE_OK) {
			result_job_fail(
			    r, j, 4, "4.3.0", "queue file read error");
			job_free(r, j);
			return;
		}
	}
	rc = xcalloc(j->nidx, sizeof(*rc));
	for (size_t i = 0; i < j->nidx; i++) {
		const struct queue_rcpt *q = &m->msg->rcpts[j->idx[i]];

		rc[i].addr = q->addr;
		rc[i].notify = q->notify;
		rc[i].orcpt = q->orcpt ? runner_xtext_decode(q->orcpt) : NULL;
		if (q->attempts > 0)
			first = false;
	}
	memset(&req, 0, sizeof(req));
	req.dest_key = d->key;
	req.auth = d->auth;
	req.addrs = d->addrs;
	req.naddrs = d->route->naddr;
	req.scope = d->scope;
	req.cls = m->msg->cls;
	req.first_attempt = first;
	req.sender = m->msg->sender;
	req.rcpts = rc;
	req.nrcpts = j->nidx;
	envid = m->msg->envid ? runner_xtext_decode(m->msg->envid) : NULL;
	req.envid = envid;
	req.ret = m->msg->ret == QRET_FULL ? SMTP_RET_FULL
	    : m->msg->ret == QRET_HDRS	   ? SMTP_RET_HDRS
					   : SMTP_RET_NONE;
	req.msg = m->body;
	req.msglen = m->bodylen;
	req.done = job_done_cb;
	req.arg = j;
	j->submit_us = rq_now_us();
	sr = smtp_request_submit(r->smtp, &req);
	for (size_t i = 0; i < j->nidx; i++)
		free((char *)rc[i].orcpt);
	free(rc);
	free(envid);
	if (sr == SMTP_SUBMIT_OK) {
		d->active++;
		r->active++;
		return;
	}
	if (sr == SMTP_SUBMIT_SHUTDOWN) {
		job_free(r, j); /* keeps its lease: retried after restart */
		return;
	}
	result_job_fail(r, j, 4, "4.3.0", "internal error: invalid request");
	job_free(r, j);
}

/* Wakes destinations waiting for a global connection slot. */
static void
sched_ready_kick(struct runner *r)
{
	struct dest *d;

	while ((d = r->ready) != NULL) {
		unsigned before = r->active;

		r->ready = d->rnext;
		d->queued = false;
		d->rnext = NULL;
		dest_kick(r, d);
		if (r->active == before && d->queued)
			break; /* still no slot */
	}
}

/* A request finished: record its results and fill the freed slot. */
static void
job_done_cb(void *arg, const struct smtp_result *res)
{
	struct job *j = arg;
	struct dest *d = j->dest;
	struct runner *r = d->runner;
	struct dest *fd;

	d->active--;
	r->active--;
	if (res->host_down &&
	    (fd = route_fallback(r, d, j->m->msg->sender)) != NULL) {
		/* Unreachable: the next fallback relay takes the job. */
		route_mark_down(r, d, res);
		job_move(r, j, fd, res->nrcpts ? res->rcpts[0].text : "");
		dest_kick(r, d);
		sched_ready_kick(r);
		return;
	}
	result_job_done(r, j, res);
	job_free(r, j);
	dest_kick(r, d);
	sched_ready_kick(r);
	if (r->max_msgs - r->nmsgs >= r->max_msgs / 4)
		sched_kick(r);
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
	dns_route(r->dns, d->lookup, d->port, d->mx, dest_route_cb, d);
}

/* Submits what D may submit now; arms its timer when it must wait. */
void
dest_kick(struct runner *r, struct dest *d)
{
	const struct cfg_scope *sc = d->scope;
	const struct cfg_scope *g = cfg_scope(d->rc->cfg, NULL);
	unsigned maxc = (unsigned)cfg_int(sc, CFG_MAX_CONNECTIONS);
	unsigned maxt = (unsigned)cfg_int(g, CFG_MAX_CONNECTIONS_TOTAL);
	struct cfg_rate rate = cfg_rate(sc, CFG_MAX_MESSAGE_RATE);
	int64_t now = rq_now();

	if (r->stopping)
		return;
	d->last_used = now;
	if (d->nwait == 0) {
		if (d->retired && dest_idle(d, now))
			dest_free(r, d);
		return;
	}
	if (d->down_until > now) {
		char why[SMTP_TEXT_MAX + 64];

		snprintf(why, sizeof(why), "delivery temporarily suspended: %s",
		    d->down_why);
		dest_fail_all(r, d, 4, d->down_dsn, why);
		return;
	}
	if (d->rstate == DR_RESOLVING)
		return;
	if (d->rstate == DR_NONE || d->route_until < now) {
		if (d->active == 0 || d->rstate == DR_NONE) {
			dest_resolve(r, d);
			return;
		}
	}
	while (d->nwait > 0 && d->active < maxc) {
		unsigned idle = smtp_client_conn_idle(r->smtp, d->key);
		struct job *j;

		if (idle == 0) {
			if (smtp_client_conn_count(r->smtp, d->key) >= maxc) {
				/* A connection of ours is closing: look again
				 * once it is gone. */
				dest_retry_soon(d);
				break;
			}
			if (smtp_client_conn_total(r->smtp) >= maxt) {
				/* Idle connections of other destinations
				 * close after connection_cache_time. */
				dest_retry_soon(d);
				if (!d->queued) {
					d->queued = true;
					d->rnext = NULL;
					struct dest **pp = &r->ready;

					while (*pp)
						pp = &(*pp)->rnext;
					*pp = d;
				}
				break;
			}
		}
		if (rate.count > 0) {
			int64_t us = rq_now_us();
			double per_us = (double)rate.count /
			    ((double)rate.per * 1e6);

			d->tokens += (double)(us - d->tokens_us) * per_us;
			if (d->tokens > rate.count)
				d->tokens = rate.count;
			d->tokens_us = us;
			if (d->tokens < 1.0) {
				/* Over the rate: wait, not a failure. */
				double wait = (1.0 - d->tokens) / per_us;
				struct timeval tv = { (time_t)(wait / 1e6),
					(suseconds_t)((int64_t)wait % 1000000) +
					    1 };

				evtimer_add(d->timer, &tv);
				break;
			}
			d->tokens -= 1.0;
		}
		j = dest_pop(r, d);
		job_submit(r, j);
	}
}

/* Loads message ID and queues its leased recipients per destination. */
static void
sched_take_one(struct runner *r, uint64_t id, int64_t now_us)
{
	struct queue_msg *msg;
	struct rmsg *m;
	struct job **jobs;
	size_t njobs = 0;

	if (rmsg_find(r, id) != NULL)
		return; /* already in memory (a lease ran out meanwhile) */
	if (queue_msg_load(r->q, id, &msg) != QUEUE_OK)
		return;
	m = xcalloc(1, sizeof(*m));
	m->msg = msg;
	m->taken_us = now_us;
	m->refs = 1; /* ours, until every job is queued */
	m->hnext = r->msgs[hash_id(id)];
	r->msgs[hash_id(id)] = m;
	r->nmsgs++;
	jobs = xcalloc(msg->nrcpt ? msg->nrcpt : 1, sizeof(*jobs));
	for (size_t i = 0; i < msg->nrcpt; i++) {
		struct queue_rcpt *q = &msg->rcpts[i];
		const char *at = strrchr(q->addr, '@');
		char dom[256];
		struct dest *d;
		struct job *j = NULL;
		size_t k, n;

		if (!(q->flags & QRCPT_LEASED))
			continue;
		if (at == NULL || at[1] == '\0') {
			/* No domain to route to: permanent. */
			j = xcalloc(1, sizeof(*j));
			j->m = m;
			m->refs++;
			j->cls = msg->cls;
			j->idx = xmalloc(sizeof(*j->idx));
			j->idx[0] = (uint32_t)i;
			j->nidx = 1;
			j->dest = NULL;
			result_job_fail(
			    r, j, 5, "5.1.3", "bad address syntax: no domain");
			job_free(r, j);
			continue;
		}
		n = strlen(at + 1);
		if (n >= sizeof(dom))
			n = sizeof(dom) - 1;
		for (k = 0; k < n; k++)
			dom[k] = (char)tolower((unsigned char)at[1 + k]);
		dom[n] = '\0';
		d = route_dest(r, dom, msg->sender);
		for (k = 0; k < njobs; k++)
			if (jobs[k]->dest == d) {
				j = jobs[k];
				break;
			}
		if (j == NULL) {
			j = xcalloc(1, sizeof(*j));
			j->m = m;
			m->refs++;
			j->dest = d;
			j->cls = msg->cls;
			j->idx = xcalloc(msg->nrcpt, sizeof(*j->idx));
			jobs[njobs++] = j;
		}
		j->idx[j->nidx++] = (uint32_t)i;
	}
	for (size_t k = 0; k < njobs; k++) {
		dest_enqueue(jobs[k]->dest, jobs[k]);
		dest_kick(r, jobs[k]->dest);
	}
	free(jobs);
	rmsg_release(r, m);
}

/* Takes up to N due messages of class C; returns how many it got. */
static size_t
sched_take(struct runner *r, enum cfg_class c, size_t n, int64_t now)
{
	uint64_t ids[TAKE_MAX];
	int64_t lease = cfg_time(
	    cfg_scope(r->rc->cfg, NULL), CFG_DELIVERY_LEASE, CFG_NORMAL, false);
	int64_t now_us = rq_now_us();
	size_t got, total = 0;

	while (n > 0) {
		size_t want = n < TAKE_MAX ? n : TAKE_MAX;

		got = queue_take_due(r->q, c, now, now + lease, ids, want);
		for (size_t i = 0; i < got; i++)
			sched_take_one(r, ids[i], now_us);
		total += got;
		n -= got;
		if (got < want)
			break;
	}
	return total;
}

/* One scheduling pass: take due work within the in-memory budget. */
void
sched_run(struct runner *r)
{
	static const enum cfg_class order[CFG_NCLASS] = { CFG_URGENT, CFG_DSN,
		CFG_NORMAL, CFG_NONURGENT };
	const struct cfg_scope *g = cfg_scope(r->rc->cfg, NULL);
	int64_t now = rq_now();
	size_t freeslots, chunk = r->max_msgs / 4, took = 0;
	bool due[CFG_NCLASS], more[CFG_NCLASS];
	unsigned w[CFG_NCLASS], sumw = 0;
	int i;

	r->sched_at = INT64_MAX;
	if (r->stopping)
		return;
	result_commit(r); /* takes see every result so far */
	freeslots = r->max_msgs > r->nmsgs ? r->max_msgs - r->nmsgs : 0;
	if (freeslots > 0 && (freeslots >= chunk || r->nmsgs < chunk)) {
		for (i = 0; i < CFG_NCLASS; i++) {
			enum cfg_class c = order[i];

			due[c] = queue_next_due_class(r->q, c) <= now;
			w[c] = due[c]
			    ? cfg_weight(g, c == CFG_DSN ? CFG_NORMAL : c)
			    : 0;
			if (due[c] && w[c] == 0)
				w[c] = 1;
			sumw += w[c];
			more[c] = false;
		}
		/* Each class with due work gets its weighted share... */
		for (i = 0; i < CFG_NCLASS && sumw > 0; i++) {
			enum cfg_class c = order[i];
			size_t share, got;

			if (!due[c])
				continue;
			share = freeslots * w[c] / sumw;
			if (share == 0)
				share = 1;
			got = sched_take(r, c, share, now);
			more[c] = got == share;
			took += got;
		}
		/* ...and what others left goes in priority order. */
		for (i = 0; i < CFG_NCLASS; i++) {
			enum cfg_class c = order[i];

			freeslots = r->max_msgs > r->nmsgs
			    ? r->max_msgs - r->nmsgs
			    : 0;
			if (freeslots == 0)
				break;
			if (more[c])
				took += sched_take(r, c, freeslots, now);
		}
	}
	/* Work taken and room left (e.g. every job failed at once): look
	 * again now; nothing taken though due: in a second. */
	sched_arm_int(r, took == 0);
	runner_idle_check(r);
}

static void
sched_cb(evutil_socket_t fd, short what, void *arg)
{
	sched_run(arg);
}

/* Arms ev_sched for AT_US unless it fires earlier already. */
static void
sched_at(struct runner *r, int64_t at_us)
{
	int64_t now_us = rq_now_us(), d;
	struct timeval tv;

	if (r->sched_at <= at_us && evtimer_pending(r->ev_sched, NULL))
		return;
	d = at_us > now_us ? at_us - now_us : 0;
	tv.tv_sec = (time_t)(d / 1000000);
	tv.tv_usec = (suseconds_t)(d % 1000000);
	r->sched_at = at_us;
	evtimer_add(r->ev_sched, &tv);
}

/*
 * Arms ev_sched at the next due time.  While the in-memory budget is
 * (nearly) full nothing is armed: a finished job kicks a pass.  AFTER_RUN:
 * a pass just ran, so work still due now waits a second (no busy loop).
 */
static void
sched_arm_int(struct runner *r, bool after_run)
{
	int64_t next, now_us = rq_now_us();
	size_t chunk = r->max_msgs / 4;

	if (r->stopping)
		return;
	next = queue_next_due(r->q);
	if (next == INT64_MAX)
		return;
	if (next * 1000000 <= now_us) {
		if (r->nmsgs > 0 && r->max_msgs - r->nmsgs < chunk)
			return;
		sched_at(r, after_run ? now_us + 1000000 : now_us);
		return;
	}
	sched_at(r, next * 1000000);
}

void
sched_arm(struct runner *r)
{
	sched_arm_int(r, false);
}

/* Schedules a pass on the next loop turn. */
void
sched_kick(struct runner *r)
{
	if (r->stopping)
		return;
	sched_at(r, 0);
}

/* After a reload: destinations keep their old settings until empty. */
void
sched_reload(struct runner *r)
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

/* Drops every waiting job (they keep their leases); see runner_stop. */
void
sched_free_all(struct runner *r)
{
	for (struct dest *d = r->all_dests; d != NULL; d = d->next) {
		for (int c = 0; c < CFG_NCLASS; c++) {
			struct job *j, *next;

			for (j = d->wait_head[c]; j != NULL; j = next) {
				next = j->next;
				job_free(r, j);
			}
			d->wait_head[c] = d->wait_tail[c] = NULL;
		}
		d->nwait = 0;
	}
}

/* Frees every destination (after the client and resolver are gone). */
void
sched_destroy(struct runner *r)
{
	sched_free_all(r);
	while (r->all_dests != NULL) {
		struct dest *d = r->all_dests;

		d->rstate = DR_NONE;
		d->retired = true;
		r->all_dests = d->next;
		d->next = NULL;
		r->ready = NULL;
		if (d->timer)
			event_free(d->timer);
		route_free(d->route);
		free(d->addrs);
		rcfg_unref(d->rc);
		free(d->key);
		free(d->lookup);
		free(d);
	}
	memset(r->dests, 0, sizeof(r->dests));
	if (r->ev_sched)
		event_free(r->ev_sched);
	r->ev_sched = NULL;
	if (r->ev_janitor)
		event_free(r->ev_janitor);
	r->ev_janitor = NULL;
}
