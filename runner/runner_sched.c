/*
 * runner_sched.c - what to deliver next: takes due messages from the
 * queue by class, groups each message's leased recipients by destination,
 * keeps per-destination wait lists, routes destinations, and hands jobs
 * to the SMTP client under max_connections, max_connections_total,
 * max_message_rate and timeout.hoststatus.
 *
 * Runner-private: sched_init(), sched_destroy(), sched_run(),
 * sched_arm(), sched_kick(), dest_kick(), sched_reload(),
 * sched_free_all(), sched_busy(), rmsg_release(), rmsg_end().
 *
 * Priorities: the free part of the in-memory budget is shared among the
 * classes that have due work by priority_weights (dsn counts with the
 * weight of normal), and a destination short of connection slots picks
 * its next job by smooth weighted round robin over its class lists, so
 * urgent goes first but a flood of one class never starves another.
 *
 * Invariants: the loop never polls: ev_sched is armed at the next due
 * time (or not at all while the budget is full: a finished job kicks it);
 * a message is in memory at most once, and a recipient in it at most once
 * (a take of a message in memory adds only recipients not in it); a
 * pass leases at most TAKE_RCPTS recipients and a job has at most that
 * many, so a pass, a submit and a job's results cost O(TAKE_RCPTS)
 * whatever a message's size; a message leaves memory only once its
 * results are committed; recipients the client did not try for a local
 * reason are put back, never charged; a destination is freed only when
 * it has no job waiting or in flight and no lookup pending.
 */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <event2/event.h>

#include "runner_int.h"

#define TAKE_MAX 1024 /* ids per queue_due_take_rcpts() call */
/* Recipients leased per scheduling pass: a pass (a loop turn) stays
 * short however many recipients the due messages have; a pass that used
 * it all runs again on the next turn. */
#define TAKE_RCPTS 2000
#define ROUTE_TTL 60 /* seconds a route is reused */
#define DEST_KEEP 300 /* seconds an unused destination is kept */
#define FD_CAP_US 10000000 /* connections capped after a local failure */
#define FD_WAIT_US 1000000 /* ... or none at all, with none open */

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

/*
 * RELAYQ_LOOP_PROBE=MS (a debugging aid, see relayq(8)): a timer every
 * MS milliseconds measures how late the loop runs it; the largest
 * lateness is logged at exit.  A turn that blocks the loop shows here.
 */
static struct {
	struct event *ev;
	struct timeval tv;
	int64_t due_us, max_late_us;
	uint64_t ticks, late100;
} probe;

static int64_t
mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void
probe_cb(evutil_socket_t fd, short what, void *arg)
{
	int64_t now = mono_us(), late = now - probe.due_us;

	if (late > probe.max_late_us)
		probe.max_late_us = late;
	if (late > 100000)
		probe.late100++;
	probe.ticks++;
	probe.due_us = now + probe.tv.tv_sec * 1000000 + probe.tv.tv_usec;
	evtimer_add(probe.ev, &probe.tv);
}

/* Raises the soft limit of open files to the hard one (as Postfix's
 * master does): connections are what the daemon needs many fds for. */
static void
sched_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= rl.rlim_max ||
	    rl.rlim_max == RLIM_INFINITY)
		return;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
		log_warn(NULL, "cannot raise the open file limit to %llu: %s",
		    (unsigned long long)rl.rlim_max, strerror(errno));
}

void
sched_init(struct runner *r)
{
	struct timeval tv = { 60, 0 };
	const char *pr = getenv("RELAYQ_LOOP_PROBE");

	sched_fd_limit();
	r->ev_sched = evtimer_new(r->base, sched_cb, r);
	r->ev_janitor = event_new(r->base, -1, EV_PERSIST, sched_janitor_cb, r);
	event_add(r->ev_janitor, &tv);
	if (pr != NULL && atoi(pr) > 0) {
		probe.tv.tv_sec = atoi(pr) / 1000;
		probe.tv.tv_usec = (atoi(pr) % 1000) * 1000;
		probe.ev = evtimer_new(r->base, probe_cb, NULL);
		probe.due_us = mono_us() + atoi(pr) * 1000;
		evtimer_add(probe.ev, &probe.tv);
	}
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

/*
 * Drops a job's reference to its message.  With the last, the message's
 * end goes to the results (its schedule is recomputed after its
 * results); it stays in memory until that commit (rmsg_end()), so that
 * a take meanwhile does not hand out its recipients again.
 */
void
rmsg_release(struct runner *r, struct rmsg *m)
{
	if (--m->refs > 0)
		return;
	m->ends++;
	result_msg_done(r, m->msg->id);
}

/* An end of message ID is committed: frees it unless a take gave it
 * new jobs meanwhile (their last one ends it again). */
void
rmsg_end(struct runner *r, uint64_t id)
{
	struct rmsg **pp, *m = rmsg_find(r, id);

	if (m == NULL || m->ends == 0)
		return;
	if (--m->ends > 0 || m->refs > 0)
		return;
	for (pp = &r->msgs[hash_id(id)]; *pp != m; pp = &(*pp)->hnext)
		;
	*pp = m->hnext;
	r->nmsgs--;
	queue_msg_free(m->msg);
	free(m->inmem);
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

/* The destination for DOMAIN under the current config, made if new. */
static struct dest *
dest_get(struct runner *r, const char *domain)
{
	const struct cfg_scope *sc = cfg_scope(r->rc->cfg, domain);
	const struct cfg_hostport *hp = cfg_hostport(sc, CFG_RELAYHOST);
	char key[600];
	struct dest *d;
	unsigned h;

	if (hp->host[0] != '\0') {
		const char *sn = cfg_scope_name(sc);

		snprintf(key, sizeof(key), "%s%s%s%s:%u", sn ? sn : "",
		    hp->no_mx ? "/[" : "/", hp->host, hp->no_mx ? "]" : "",
		    (unsigned)(hp->port ? hp->port
					: cfg_int(sc, CFG_SMTP_PORT)));
	} else {
		snprintf(key, sizeof(key), "%s", domain);
	}
	h = hash_str(key);
	for (d = r->dests[h]; d != NULL; d = d->hnext)
		if (strcmp(d->key, key) == 0)
			return d;
	d = xcalloc(1, sizeof(*d));
	d->key = xstrdup(key);
	d->runner = r;
	d->rc = r->rc;
	d->rc->refs++;
	d->scope = sc;
	if (hp->host[0] != '\0') {
		d->lookup = xstrdup(hp->host);
		d->port = hp->port ? hp->port
				   : (uint16_t)cfg_int(sc, CFG_SMTP_PORT);
		d->mx = !hp->no_mx;
	} else {
		d->lookup = xstrdup(domain);
		d->port = (uint16_t)cfg_int(sc, CFG_SMTP_PORT);
		d->mx = true;
	}
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

/* Puts job J back at the head of its destination's list for its class
 * (it goes next). */
static void
dest_putback(struct dest *d, struct job *j)
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

/* Fails every waiting job of D (route failure, host down). */
static void
dest_fail_all(
    struct runner *r, struct dest *d, int cls, const char *dsn, const char *why)
{
	struct job *j;

	while ((j = dest_pop(r, d)) != NULL) {
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

/*
 * The recipients of J that the client did not try for a local reason
 * (no file descriptor left): a new job for them, which the caller puts
 * back (no attempt is counted: it is the daemon's shortage, not the
 * message's); NULL when there are none, or when stopping (they keep
 * their leases and are retried at once on the next start).  Caps the
 * connections in all at those open now for a while (none for
 * FD_WAIT_US when none is open), so that the shortage is not hit again
 * at once.
 */
static struct job *
job_local_split(struct runner *r, struct job *j, const struct smtp_result *res)
{
	struct job *b;
	int64_t now = rq_now_us();
	size_t n = 0, first = 0;
	unsigned open;

	for (size_t i = 0; i < res->nrcpts && i < j->nidx; i++)
		if (res->rcpts[i].local && n++ == 0)
			first = i;
	if (n == 0)
		return NULL;
	open = smtp_client_conn_total(r->smtp);
	r->fd_cap = open;
	r->fd_cap_until = now + (open > 0 ? FD_CAP_US : FD_WAIT_US);
	log_warn(NULL,
	    "%s: %zu recipient%s put back, no attempt counted: %.200s; "
	    "at most %u connections for %d s",
	    j->m->msg->idstr, n, n == 1 ? "" : "s", res->rcpts[first].text,
	    open, (int)((r->fd_cap_until - now) / 1000000));
	if (r->stopping)
		return NULL;
	b = xcalloc(1, sizeof(*b));
	b->m = j->m;
	b->m->refs++;
	b->dest = j->dest;
	b->cls = j->cls;
	b->aidx = n;
	b->idx = xcalloc(n, sizeof(*b->idx));
	for (size_t i = 0; i < res->nrcpts && i < j->nidx; i++)
		if (res->rcpts[i].local)
			b->idx[b->nidx++] = j->idx[i];
	return b;
}

/* A request finished: record its results and fill the freed slot. */
static void
job_done_cb(void *arg, const struct smtp_result *res)
{
	struct job *j = arg, *back;
	struct dest *d = j->dest;
	struct runner *r = d->runner;

	d->active--;
	r->active--;
	back = job_local_split(r, j, res);
	result_job_done(r, j, res); /* all but those put back */
	job_free(r, j);
	if (back != NULL)
		dest_putback(d, back);
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
	if (r->fd_cap_until > rq_now_us() && maxt > r->fd_cap)
		maxt = r->fd_cap; /* short of file descriptors */
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

/*
 * Adds to message M in memory the recipients of MSG (leased ones just
 * loaded) that are not in memory yet (a lease that ran out while they
 * are in flight leases them again: they are not delivered twice); frees
 * MSG.  Returns the index in M->msg->rcpts of the first one added.
 */
static size_t
rmsg_add(struct runner *r, struct rmsg *m, struct queue_msg *msg)
{
	struct queue_msg *mm = m->msg;
	size_t first = mm->nrcpt, keep = 0;

	for (size_t i = 0; i < msg->nrcpt; i++) {
		struct queue_rcpt *q = &msg->rcpts[i];

		if (q->idx >= m->total ||
		    (m->inmem[q->idx / 8] & (1u << (q->idx % 8)))) {
			free(q->addr);
			free(q->orcpt);
			free(q->reply);
			continue;
		}
		m->inmem[q->idx / 8] |= (uint8_t)(1u << (q->idx % 8));
		msg->rcpts[keep++] = *q;
	}
	if (mm != msg && keep > 0) {
		mm->rcpts = xrealloc(
		    mm->rcpts, (mm->nrcpt + keep) * sizeof(*mm->rcpts));
		memcpy(mm->rcpts + mm->nrcpt, msg->rcpts,
		    keep * sizeof(*msg->rcpts));
	}
	if (mm != msg) {
		mm->nrcpt += keep;
		msg->nrcpt = 0; /* the strings moved to mm */
		queue_msg_free(msg);
	} else {
		mm->nrcpt = keep;
	}
	return mm == msg ? 0 : first;
}

/* Adds recipient I of M to this take's job for its destination. */
static struct job *
take_job(struct runner *r, struct rmsg *m, size_t i, struct job ***jobs,
    size_t *njobs, size_t *ajobs)
{
	struct queue_rcpt *q = &m->msg->rcpts[i];
	const char *at = strrchr(q->addr, '@');
	char dom[256];
	struct dest *d;
	struct job *j;
	size_t k, n;

	if (at == NULL || at[1] == '\0') {
		/* No domain to route to: permanent. */
		j = xcalloc(1, sizeof(*j));
		j->m = m;
		m->refs++;
		j->cls = m->msg->cls;
		j->idx = xmalloc(sizeof(*j->idx));
		j->idx[0] = (uint32_t)i;
		j->nidx = j->aidx = 1;
		j->dest = NULL;
		result_job_fail(
		    r, j, 5, "5.1.3", "bad address syntax: no domain");
		job_free(r, j);
		return NULL;
	}
	n = strlen(at + 1);
	if (n >= sizeof(dom))
		n = sizeof(dom) - 1;
	for (k = 0; k < n; k++)
		dom[k] = (char)tolower((unsigned char)at[1 + k]);
	dom[n] = '\0';
	d = dest_get(r, dom);
	if (d->build_gen == r->build_gen) {
		j = d->build; /* O(1): no search among this take's jobs */
	} else if ((j = d->wait_tail[m->msg->cls]) != NULL && j->m == m &&
	    j->nidx < TAKE_RCPTS) {
		/* a job of this message (an earlier slice) still waits for
		 * a connection: one job, not a small one per slice */
		d->build = j;
		d->build_gen = r->build_gen;
	} else {
		j = xcalloc(1, sizeof(*j));
		j->m = m;
		m->refs++;
		j->dest = d;
		j->cls = m->msg->cls;
		d->build = j;
		d->build_gen = r->build_gen;
		if (*njobs == *ajobs) {
			*ajobs = *ajobs ? *ajobs * 2 : 8;
			*jobs = xrealloc(*jobs, *ajobs * sizeof(**jobs));
		}
		(*jobs)[(*njobs)++] = j;
	}
	if (j->nidx == j->aidx) {
		j->aidx = j->aidx ? j->aidx * 2 : 8;
		j->idx = xrealloc(j->idx, j->aidx * sizeof(*j->idx));
	}
	j->idx[j->nidx++] = (uint32_t)i;
	if (j->nidx >= TAKE_RCPTS)
		d->build_gen = 0; /* full: the next one starts a new job */
	return j;
}

/*
 * Loads the recipients take TK leased and queues them per destination:
 * a new message in memory, or more of one already there (the next slice
 * of a message with many recipients).  O(recipients taken).
 */
static void
sched_take_one(struct runner *r, const struct queue_take *tk, int64_t now_us)
{
	struct queue_msg *msg;
	struct rmsg *m = rmsg_find(r, tk->id);
	struct job **jobs = NULL;
	size_t njobs = 0, ajobs = 0, total, first;

	if (queue_msg_load_leased(r->q, tk->id, tk->lo, tk->hi, &msg, &total) !=
	    QUEUE_OK)
		return;
	if (m == NULL) {
		m = xcalloc(1, sizeof(*m));
		m->msg = msg;
		m->total = total;
		m->inmem = xcalloc((total + 7) / 8, 1);
		m->taken_us = now_us;
		m->hnext = r->msgs[hash_id(tk->id)];
		r->msgs[hash_id(tk->id)] = m;
		r->nmsgs++;
	}
	m->refs++; /* ours, until every job is queued */
	first = rmsg_add(r, m, msg);
	r->build_gen++;
	for (size_t i = first; i < m->msg->nrcpt; i++)
		take_job(r, m, i, &jobs, &njobs, &ajobs);
	for (size_t k = 0; k < njobs; k++) {
		dest_enqueue(jobs[k]->dest, jobs[k]);
		dest_kick(r, jobs[k]->dest);
	}
	free(jobs);
	rmsg_release(r, m);
}

/* Takes up to N due messages of class C, and at most *BUDGET
 * recipients (taken down by those leased); returns how many messages. */
static size_t
sched_take(
    struct runner *r, enum cfg_class c, size_t n, int64_t now, size_t *budget)
{
	struct queue_take tk[TAKE_MAX];
	int64_t lease = cfg_time(
	    cfg_scope(r->rc->cfg, NULL), CFG_DELIVERY_LEASE, CFG_NORMAL, false);
	int64_t now_us = rq_now_us();
	size_t got, total = 0;

	while (n > 0 && *budget > 0) {
		size_t want = n < TAKE_MAX ? n : TAKE_MAX;

		got = queue_due_take_rcpts(
		    r->q, c, now, now + lease, tk, want, budget);
		for (size_t i = 0; i < got; i++)
			sched_take_one(r, &tk[i], now_us);
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
	size_t budget = TAKE_RCPTS;
	bool due[CFG_NCLASS], more[CFG_NCLASS];
	unsigned w[CFG_NCLASS], sumw = 0;
	int i;

	r->sched_at = INT64_MAX;
	if (r->stopping)
		return;
	/* The results so far first (a chunk of them: a backlog goes on
	 * over the next turns), so that they are seen soon.  Those still
	 * waiting are no matter: a message stays in memory until its
	 * results are committed, and a take hands out none of its
	 * recipients in memory again (rmsg_add). */
	result_commit(r, false);
	freeslots = r->max_msgs > r->nmsgs ? r->max_msgs - r->nmsgs : 0;
	if (freeslots > 0 && (freeslots >= chunk || r->nmsgs < chunk)) {
		for (i = 0; i < CFG_NCLASS; i++) {
			enum cfg_class c = order[i];

			due[c] = queue_due_next_class(r->q, c) <= now;
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
			/* the recipients too: each class its weighted share
			 * (a class's big message does not take all of them) */
			{
				size_t rb = TAKE_RCPTS * w[c] / sumw;

				if (rb == 0)
					rb = 1;
				if (rb > budget)
					rb = budget;
				budget -= rb;
				got = sched_take(r, c, share, now, &rb);
				budget += rb;
				more[c] = got == share || rb == 0;
			}
			took += got;
		}
		/* ...and what others left goes in priority order. */
		for (i = 0; i < CFG_NCLASS && budget > 0; i++) {
			enum cfg_class c = order[i];

			freeslots = r->max_msgs > r->nmsgs
			    ? r->max_msgs - r->nmsgs
			    : 0;
			if (freeslots == 0)
				break;
			if (more[c])
				took += sched_take(
				    r, c, freeslots, now, &budget);
		}
	}
	/* Work taken and room left (e.g. every job failed at once): look
	 * again now (the next turn); nothing taken though due: in a
	 * second. */
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
	next = queue_due_next(r->q);
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
	if (probe.ev != NULL) {
		log_info(NULL,
		    "loop probe: %llu ticks of %ld ms, late by at most %lld "
		    "ms, %llu late by over 100 ms",
		    (unsigned long long)probe.ticks,
		    (long)(probe.tv.tv_sec * 1000 + probe.tv.tv_usec / 1000),
		    (long long)(probe.max_late_us / 1000),
		    (unsigned long long)probe.late100);
		event_free(probe.ev);
		probe.ev = NULL;
	}
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
