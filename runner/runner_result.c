/*
 * runner_result.c - what happens to a result: 2xx delivered, 5xx bounced,
 * 4xx and connection failures deferred with exponential backoff and
 * jitter; results are group-committed (one write transaction, one fsync,
 * for many sessions' results) together with the expiry hook, and only
 * logged in Postfix's layout.
 *
 * Runner-private: runner_result_job_done(), runner_result_job_fail(),
 * runner_result_commit(), runner_result_put(), runner_result_done(),
 * runner_result_txn_commit(), runner_result_msg_done(),
 * runner_result_backoff(), runner_result_format_delay().
 *
 * Invariants: nothing is acted upon before its commit (the log lines
 * are written just before it, so that they precede the queue's `removed`
 * as in Postfix; a failed commit is logged after them); a
 * result for a message deleted meanwhile (QUEUE_NOTFOUND) is dropped;
 * during a stop, temporary results of aborted sessions are not recorded
 * (the recipients keep their leases and are retried at once on restart,
 * without an attempt counted), nor are those the client did not try (put
 * back by runner_job.c); results wait at most COMMIT_RATIO times what a
 * commit takes, within [COMMIT_DELAY_US, COMMIT_DELAY_MAX_US] (so that
 * a slow fsync carries more of them, and the loop spends at most about
 * a tenth of its time committing them), or until a scheduling pass
 * takes work (its take goes in the same transaction, runner_sched.c);
 * a transaction takes about COMMIT_MAX of them (whole jobs), the rest
 * on the next loop turns; a result costs O(1) in its message's size,
 * and a message's recipients are walked once when it leaves memory.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "expiry.h"
#include "runner_int.h"

#define COMMIT_DELAY_US 25000 /* results wait at least this long */
#define COMMIT_DELAY_MAX_US 100000 /* and at most this long */
/* The wait is this many times a commit's duration (smoothed), so that
 * commits take at most about 1/(COMMIT_RATIO+1) of the loop's time. */
#define COMMIT_RATIO 10
#define COMMIT_MAX 2000 /* or this many */
#define NO_RCPT UINT32_MAX /* a pres that only reschedules */

static int64_t result_commit_delay(const struct runner *);

/* Whether no more results can come soon: no session, and every message
 * in memory done (its end waits for this commit). */
static bool
result_last(const struct runner *r)
{
	return r->active == 0 && r->nends >= r->nmsgs;
}

/* The commit timer: a chunk of the waiting results, in a scheduling
 * pass's transaction when it takes work (runner_sched.c).  Armed at once
 * when nothing more was coming (result_last()): if work came since, they
 * wait for the rest of their delay. */
static void
commit_cb(evutil_socket_t fd, short what, void *arg)
{
	struct runner *r = arg;
	int64_t left = r->pres_first_us + result_commit_delay(r) - rq_now_us();
	struct timeval tv = { 0, 0 };

	if (!result_last(r) && !r->stopping && r->pres_first_us != 0 &&
	    left > 0 && r->npres - r->phead < COMMIT_MAX) {
		tv.tv_usec = (suseconds_t)left;
		evtimer_add(r->ev_commit, &tv);
		return;
	}
	runner_sched_pass(r, true);
}

/* The retry delay after ATTEMPTS tries: retry.min * 2^(n-1), capped at
 * retry.max, +-10% jitter, never outside [retry.min, retry.max]. */
int64_t
runner_result_backoff(const struct cfg_scope *sc, uint32_t attempts)
{
	int64_t lo = cfg_time(sc, CFG_RETRY_MIN, CFG_NORMAL, false);
	int64_t hi = cfg_time(sc, CFG_RETRY_MAX, CFG_NORMAL, false);
	double d = (double)lo;

	if (hi < lo)
		hi = lo;
	for (uint32_t i = 1; i < attempts && d < (double)hi; i++)
		d *= 2;
	if (d > (double)hi)
		d = (double)hi;
	d *= 0.9 + 0.2 * drand48();
	d = floor(d + 0.5);
	if (d < (double)lo)
		d = (double)lo;
	if (d > (double)hi)
		d = (double)hi;
	return (int64_t)d;
}

/* Formats seconds as Postfix does in delay= ("0.12", "3.4", "1234"):
 * two decimals below 1 s, one below 10 s, none above, trailing zeros
 * dropped, rounded half up; no printf (five of these a delivery). */
void
runner_result_format_delay(char *buf, size_t len, double secs)
{
	char tmp[32], *p = tmp + sizeof(tmp);
	uint64_t v, frac = 0;
	int nd = 0; /* decimals in FRAC */
	size_t n;

	if (!(secs > 0))
		secs = 0;
	if (secs >= 1e15)
		secs = 1e15;
	if (secs >= 10) {
		v = (uint64_t)(secs + 0.5);
	} else if (secs >= 1) {
		v = (uint64_t)(secs * 10 + 0.5);
		frac = v % 10, v /= 10, nd = 1;
	} else {
		v = (uint64_t)(secs * 100 + 0.5);
		frac = v % 100, v /= 100, nd = 2;
	}
	for (; nd > 0 && frac % 10 == 0; nd--)
		frac /= 10;
	for (int i = 0; i < nd; i++, frac /= 10)
		*--p = (char)('0' + frac % 10);
	if (nd > 0)
		*--p = '.';
	do
		*--p = (char)('0' + v % 10);
	while ((v /= 10) > 0);
	n = (size_t)(tmp + sizeof(tmp) - p);
	if (len == 0)
		return;
	if (n >= len)
		n = len - 1;
	memcpy(buf, p, n);
	buf[n] = '\0';
}

/* Appends N bytes of S at *P, never past END; *P advances.  The
 * delivery line is made of these, not printf: one a recipient. */
static void
line_add(char **p, const char *end, const char *s, size_t n)
{
	size_t room = (size_t)(end - *p);

	if (n > room)
		n = room;
	memcpy(*p, s, n);
	*p += n;
}
#define LINE_LIT(p, end, s) line_add((p), (end), (s), sizeof(s) - 1)
#define LINE_STR(p, end, s) line_add((p), (end), (s), strlen(s))

/* Appends V in decimal at *P if it fits before END. */
static void
line_num(char **p, const char *end, uint64_t v)
{
	if (end - *p >= 20)
		*p += rq_utoa(*p, v);
}

/* Queues one result for the next commit. */
static void
pres_push(struct runner *r, uint64_t id, uint32_t idx, enum queue_rcpt_state st,
    int64_t next, const char *reply, const char *dsn, char *log)
{
	struct pres *p;

	if (r->npres == r->phead)
		r->pres_first_us = rq_now_us();
	if (r->npres == r->apres && r->phead > 0) {
		/* what was committed makes room (amortised O(1)) */
		memmove(r->pres, r->pres + r->phead,
		    (r->npres - r->phead) * sizeof(*r->pres));
		r->npres -= r->phead;
		r->phead = 0;
	}
	if (r->npres == r->apres) {
		r->apres = r->apres ? r->apres * 2 : 256;
		r->pres = xrealloc(r->pres, r->apres * sizeof(*r->pres));
	}
	p = &r->pres[r->npres++];
	memset(p, 0, sizeof(*p));
	p->id = id;
	p->idx = idx;
	p->state = st;
	p->next_attempt = next;
	p->reply = reply ? xstrdup(reply) : NULL;
	if (dsn != NULL) {
		size_t n = strnlen(dsn, sizeof(p->dsn) - 1);

		memcpy(p->dsn, dsn, n); /* the memset put the NUL */
	}
	p->log = log;
}

/* How long results wait for their commit: COMMIT_RATIO times what a
 * commit takes, within [COMMIT_DELAY_US, COMMIT_DELAY_MAX_US]. */
static int64_t
result_commit_delay(const struct runner *r)
{
	int64_t d = r->commit_us * COMMIT_RATIO;

	if (d < COMMIT_DELAY_US)
		return COMMIT_DELAY_US;
	return d > COMMIT_DELAY_MAX_US ? COMMIT_DELAY_MAX_US : d;
}

/* Commits on the next loop turn when many results wait or no more can
 * come soon (result_last()), else within result_commit_delay(); never
 * from here (a turn that gets many results does not commit them all at
 * once). */
static void
result_schedule_commit(struct runner *r)
{
	int64_t d = result_commit_delay(r);
	struct timeval tv = { 0, (suseconds_t)d }, zero = { 0, 0 };

	if (r->ev_commit == NULL)
		r->ev_commit = evtimer_new(r->base, commit_cb, r);
	if (r->npres - r->phead >= COMMIT_MAX || result_last(r))
		evtimer_add(r->ev_commit, &zero);
	else if (!evtimer_pending(r->ev_commit, NULL))
		evtimer_add(r->ev_commit, &tv);
}

/* What the log lines of one job's results share. */
struct result_ctx {
	const struct smtp_result *res; /* NULL: failed without a session */
	int fcls; /* without a session: class, status and reason */
	const char *fdsn, *fwhy;
	const struct cfg_scope *sc; /* for the backoff */
	int64_t now_us;
	char relay[400];
	char a[32], b[32], c[32], d[32], total[32]; /* delay=, delays= */
};

/* Fills CTX's relay and Postfix's delays (doc/design.md, "Delivery
 * log") for job J. */
static void
result_ctx_delays(struct result_ctx *ctx, const struct job *j)
{
	const struct smtp_result *res = ctx->res;
	const struct rmsg *m = j->m;
	const struct queue_msg *msg = m->msg;
	int64_t t_done = res ? res->t_done : ctx->now_us;
	double a, b, c, dd, total;

	if (res != NULL && res->ip[0] != '\0') {
		/* "%s[%s]:%u" */
		char *p = ctx->relay,
		     *end = ctx->relay + sizeof(ctx->relay) - 1;

		LINE_STR(&p, end, res->host);
		LINE_LIT(&p, end, "[");
		LINE_STR(&p, end, res->ip);
		LINE_LIT(&p, end, "]:");
		line_num(&p, end, res->port);
		*p = '\0';
	} else {
		memcpy(ctx->relay, "none", 5);
	}
	a = (double)(m->taken_us - msg->arrival * 1000000) / 1e6;
	b = (double)((j->submit_us ? j->submit_us : ctx->now_us) -
		m->taken_us) /
	    1e6;
	c = res ? (double)(res->t_ready - res->t_submit) / 1e6 : 0;
	dd = res ? (double)(res->t_done - res->t_ready) / 1e6 : 0;
	total = (double)(t_done - msg->arrival * 1000000) / 1e6;
	runner_result_format_delay(ctx->a, sizeof(ctx->a), a);
	runner_result_format_delay(ctx->b, sizeof(ctx->b), b);
	runner_result_format_delay(ctx->c, sizeof(ctx->c), c);
	runner_result_format_delay(ctx->d, sizeof(ctx->d), dd);
	runner_result_format_delay(ctx->total, sizeof(ctx->total), total);
}

/*
 * Queues the result of J's recipient I (its log line made now) for the
 * commit; false when nothing is recorded: not tried (put back by
 * runner_job.c), or temporary during a stop (it keeps its lease).
 */
static bool
result_rcpt_push(struct runner *r, const struct job *j, size_t i,
    const struct result_ctx *ctx)
{
	const struct smtp_result *res = ctx->res;
	const struct queue_msg *msg = j->m->msg;
	const struct queue_rcpt *q = &msg->rcpts[j->idx[i]];
	int cls = res ? res->rcpts[i].cls : ctx->fcls;
	const char *dsn = res ? res->rcpts[i].status : ctx->fdsn;
	const char *why = res ? res->rcpts[i].text : ctx->fwhy;
	/* The reason as Postfix states it ("host H[IP] said: ... (in
	 * reply to RCPT TO command)"): what mailq shows, and what expiry/
	 * splits into Remote-MTA and Diagnostic-Code. */
	const char *reply = why;
	enum queue_rcpt_state state;
	int64_t next = 0;
	const char *status;
	const char *delays[4] = { ctx->a, ctx->b, ctx->c, ctx->d };
	char *line, *p, *end, soft[16];
	size_t len;

	if (res != NULL && res->rcpts[i].local)
		return false; /* not tried: put back (runner_job.c) */
	if (cls != 2 && cls != 5 && dsn[0] != '4' && dsn[0] != '\0') {
		/* Deferred on a 2xx or 5xx reply (out of step, or a 554
		 * greeting): a 4.X.Y status, as Postfix's smtp makes it,
		 * so that a delay notice never says 2.0.0 or 5.7.1. */
		snprintf(soft, sizeof(soft), "4%s", dsn + 1);
		dsn = soft;
	}
	if (cls == 2) {
		state = RCPT_DELIVERED;
		status = "sent";
	} else if (cls == 5) {
		state = RCPT_BOUNCED;
		status = "bounced";
	} else {
		if (r->stopping)
			return false; /* keeps its lease; see above */
		state = RCPT_DEFERRED;
		status = "deferred";
		/* Rounded up: never earlier than the backoff. */
		next = (ctx->now_us +
			   runner_result_backoff(ctx->sc, q->attempts + 1) *
			       1000000 +
			   999999) /
		    1000000;
	}
	/* "%s: to=<%.400s>, relay=%s, delay=%s, delays=%s/%s/%s/%s, dsn=%s,
	 * status=%s (%s), tries=%u" */
	len = strlen(q->addr) + strlen(why) + sizeof(ctx->relay) + 256;
	line = xmalloc(len);
	p = line;
	end = line + len - 1;
	LINE_STR(&p, end, msg->idstr);
	LINE_LIT(&p, end, ": to=<");
	line_add(&p, end, q->addr, strnlen(q->addr, 400));
	LINE_LIT(&p, end, ">, relay=");
	LINE_STR(&p, end, ctx->relay);
	LINE_LIT(&p, end, ", delay=");
	LINE_STR(&p, end, ctx->total);
	for (size_t k = 0; k < 4; k++) {
		LINE_STR(&p, end, k == 0 ? ", delays=" : "/");
		LINE_STR(&p, end, delays[k]);
	}
	LINE_LIT(&p, end, ", dsn=");
	LINE_STR(&p, end, dsn);
	LINE_LIT(&p, end, ", status=");
	LINE_STR(&p, end, status);
	LINE_LIT(&p, end, " (");
	LINE_STR(&p, end, why);
	LINE_LIT(&p, end, "), tries=");
	line_num(&p, end, (uint64_t)q->attempts + 1);
	*p = '\0';
	pres_push(r, msg->id, q->idx, state, next, reply, dsn, line);
	r->pres[r->npres - 1].cls = (uint8_t)msg->cls;
	r->pres[r->npres - 1].delay_us = ctx->now_us - msg->arrival * 1000000;
	runner_http_result(r, msg, q, state, dsn, why);
	r->pres[r->npres - 1].relayed_dsn = res != NULL && cls == 2 &&
	    res->dsn_offered && (q->notify & QNOTIFY_SUCCESS);
	return true;
}

/* Records the results of one job (from SMTP or without a session). */
static void
result_record(struct runner *r, struct job *j, const struct smtp_result *res,
    int fcls, const char *fdsn, const char *fwhy)
{
	struct result_ctx ctx;
	bool any = false;

	ctx.res = res;
	ctx.fcls = fcls;
	ctx.fdsn = fdsn;
	ctx.fwhy = fwhy;
	ctx.sc = j->dest ? j->dest->scope : cfg_scope(r->rc->cfg, NULL);
	ctx.now_us = rq_now_us();
	result_ctx_delays(&ctx, j);
	if (res != NULL && !res->reused && res->tls_proto[0] != '\0')
		log_info("smtp",
		    "%s TLS connection established to %s: %s with cipher "
		    "%.96s (%d/%d bits)%s%s",
		    res->tls_verified ? "Verified" : "Untrusted", ctx.relay,
		    res->tls_proto, res->tls_cipher, res->tls_bits,
		    res->tls_bits, res->tls_dane[0] ? " " : "", res->tls_dane);
	for (size_t i = 0; i < j->nidx; i++)
		if (result_rcpt_push(r, j, i, &ctx))
			any = true;
	if (any)
		r->pres[r->npres - 1].job_end = true;
	result_schedule_commit(r);
}

/* Records the results the SMTP client gave for job J (a host found
 * down marks its destination first). */
void
runner_result_job_done(
    struct runner *r, struct job *j, const struct smtp_result *res)
{
	if (res->host_down && j->dest != NULL)
		runner_dest_host_down(r, j->dest, res);
	runner_tlsrpt_count(r, j->dest, res);
	result_record(r, j, res, 0, NULL, NULL);
}

/* Records a result for every recipient of J without a session: CLS 4 or
 * 5, enhanced status DSN, reason WHY. */
void
runner_result_job_fail(
    struct runner *r, struct job *j, int cls, const char *dsn, const char *why)
{
	result_record(r, j, NULL, cls, dsn, why);
}

/* Message ID left memory (its last job is done): its schedule is
 * recomputed, after its results, in their transaction. */
void
runner_result_msg_done(struct runner *r, uint64_t id)
{
	pres_push(r, id, NO_RCPT, RCPT_PENDING, 0, NULL, NULL, NULL);
	r->pres[r->npres - 1].job_end = true;
	r->pres[r->npres - 1].msg_end = true;
	r->nends++;
	result_schedule_commit(r);
}

/* A recorded result (or a message's end) for the hooks of a commit. */
struct hook {
	uint64_t id;
	uint32_t idx;
	bool end;
};

/* Orders hooks by message id (qsort). */
static int
hook_cmp(const void *a, const void *b)
{
	const struct hook *x = a, *y = b;

	return x->id < y->id ? -1 : x->id > y->id;
}

/*
 * Runs the hooks of the N entries in H, one message at a time, after all
 * the results: the notices for the recipients just recorded
 * (expiry_after_rcpts(), O(those), before the original may go); for a
 * message that left memory a walk of all its recipients for any notice
 * left and its new schedule, which removes it when nothing is left to
 * deliver (O(its recipients), once per stay in memory, not per commit).
 */
static enum queue_result
result_hooks(struct runner *r, struct queue_txn *txn, struct hook *h, size_t n,
    int64_t now)
{
	uint32_t *idx = xcalloc(n ? n : 1, sizeof(*idx));
	enum queue_result qr = QUEUE_OK;

	qsort(h, n, sizeof(*h), hook_cmp);
	for (size_t i = 0, j; i < n && qr == QUEUE_OK; i = j) {
		enum queue_result x;
		size_t ni = 0;
		bool end = false;

		for (j = i; j < n && h[j].id == h[i].id; j++) {
			if (h[j].end)
				end = true;
			else
				idx[ni++] = h[j].idx;
		}
		if (end) {
			x = expiry_after_results(txn, r->rc->cfg, h[i].id, now);
			if (x == QUEUE_OK)
				x = queue_msg_reschedule(txn, h[i].id);
		} else {
			x = expiry_after_rcpts(
			    txn, r->rc->cfg, h[i].id, idx, ni, now);
		}
		if (x != QUEUE_NOTFOUND && x != QUEUE_CORRUPT)
			qr = x;
	}
	free(idx);
	return qr;
}

/*
 * How many waiting results the next transaction takes: all with ALL,
 * else at least COMMIT_MAX (or what there is), ending with the last
 * result of a job, so that a job's results (and its notice) go in one
 * transaction.
 */
static size_t
result_chunk(const struct runner *r, bool all)
{
	const struct pres *p = r->pres + r->phead;
	size_t n, left = r->npres - r->phead;

	if (all || left <= COMMIT_MAX)
		return left;
	for (n = COMMIT_MAX; n < left; n++)
		if (p[n - 1].job_end)
			break;
	return n;
}

/* Logs the delivery lines of the N results at BASE: they go first, as
 * Postfix logs them before the queue manager's "removed" (which the
 * queue logs at the commit): every one of them did happen, committed or
 * not. */
static void
result_log_lines(const struct pres *base, size_t n)
{
	log_hold();
	for (size_t i = 0; i < n; i++)
		if (base[i].log != NULL)
			log_info("smtp", "%s", base[i].log);
	log_release();
}

/*
 * Writes the N results at BASE into TXN: each recipient's record, then
 * the hooks (notices, new schedules) of their messages; the results of
 * a message deleted meanwhile or set aside are dropped.  NOW: the time
 * of the commit (seconds).
 */
static enum queue_result
result_txn_put(struct runner *r, struct queue_txn *txn, const struct pres *base,
    size_t n, int64_t now)
{
	enum queue_result qr = QUEUE_OK;
	uint64_t gone = 0; /* a message found deleted */
	bool have_gone = false;
	size_t i, nh = 0;
	struct hook *hooks;

	hooks = xcalloc(n, sizeof(*hooks));
	for (i = 0; i < n && qr == QUEUE_OK; i++) {
		const struct pres *p = &base[i];
		enum queue_result x = QUEUE_OK;

		if (have_gone && p->id == gone)
			continue;
		if (p->idx != NO_RCPT)
			x = queue_rcpt_update(txn, p->id, p->idx, p->state,
			    p->next_attempt, p->reply, p->dsn);
		if (x == QUEUE_OK && p->relayed_dsn)
			x = queue_rcpt_flags_set(
			    txn, p->id, p->idx, QRCPT_RELAYED_DSN, 0);
		if (x == QUEUE_NOTFOUND || x == QUEUE_CORRUPT) {
			/* Deleted meanwhile, or set aside: drop its results. */
			gone = p->id;
			have_gone = true;
			continue;
		}
		qr = x;
		if (x == QUEUE_OK && p->idx != NO_RCPT)
			runner_http_tally(txn, p);
		if (x == QUEUE_OK) {
			hooks[nh].id = p->id;
			hooks[nh].idx = p->idx;
			hooks[nh++].end = p->msg_end;
		}
	}
	if (qr == QUEUE_OK)
		qr = result_hooks(r, txn, hooks, nh, now);
	free(hooks);
	return qr;
}

/* Commits TXN and adds its duration to the smoothed commit time that
 * sets how long results wait (result_commit_delay()). */
enum queue_result
runner_result_txn_commit(struct runner *r, struct queue_txn *txn)
{
	int64_t t0 = rq_now_us(), d;
	enum queue_result qr = queue_txn_commit(txn);

	d = rq_now_us() - t0;
	if (d < 0)
		d = 0;
	r->commit_us = r->commit_us == 0 ? d : (r->commit_us * 7 + d) / 8;
	return qr;
}

/* Writes the N results at BASE in a transaction of their own (see
 * result_txn_put()) and commits it. */
static enum queue_result
result_txn_write(
    struct runner *r, const struct pres *base, size_t n, int64_t now)
{
	struct queue_txn *txn = queue_txn_begin(r->q);
	enum queue_result qr;

	if (txn == NULL)
		return QUEUE_ERR;
	qr = result_txn_put(r, txn, base, n, now);
	if (qr != QUEUE_OK) {
		queue_txn_abort(txn);
		return qr;
	}
	return runner_result_txn_commit(r, txn);
}

/* The N results at the head of the list are done with (committed or
 * not): frees them, ends the messages that left memory, and reclaims
 * the list when it is empty. */
static void
result_chunk_drop(struct runner *r, size_t n)
{
	struct pres *base = r->pres + r->phead;

	for (size_t i = 0; i < n; i++) {
		free(base[i].log);
		free(base[i].reply);
		if (base[i].msg_end) {
			r->nends--;
			runner_rmsg_end(r, base[i].id);
		}
	}
	r->phead += n;
	r->pres_first_us = 0; /* the rest's age is not kept: it goes soon */
	if (r->phead == r->npres) {
		r->phead = r->npres = 0;
		if (r->apres > 65536) {
			free(r->pres);
			r->pres = NULL;
			r->apres = 0;
		}
	}
}

/* The chunk of N results at the head is done with, QR the result of its
 * commit: logs a failure, drops the chunk, and leaves the rest to the
 * next loop turn (other events go in between). */
static void
result_chunk_end(struct runner *r, size_t n, enum queue_result qr)
{
	struct timeval zero = { 0, 0 };

	if (qr != QUEUE_OK)
		log_err("qmgr",
		    "cannot commit %zu delivery results (queue error %d): "
		    "they are retried when their lease ends",
		    n, (int)qr);
	result_chunk_drop(r, n);
	if (r->npres > 0) {
		if (r->ev_commit == NULL)
			r->ev_commit = evtimer_new(r->base, commit_cb, r);
		evtimer_add(r->ev_commit, &zero);
	}
}

/*
 * Commits waiting results in one transaction (all of them with ALL, else
 * a chunk, the rest on the next loop turn): each recipient's result (one
 * record each: O(1) in the message's size), then once per message in
 * the chunk the expiry hook (notices) and its new schedule, which each
 * walk the message's recipient records once.  The delivery lines are
 * logged just before.
 */
void
runner_result_commit(struct runner *r, bool all)
{
	enum queue_result qr;
	int64_t now = rq_now();
	size_t n;

	if (r->ev_commit)
		evtimer_del(r->ev_commit);
	if (r->npres == r->phead)
		return;
	n = result_chunk(r, all);
	result_log_lines(r->pres + r->phead, n);
	qr = result_txn_write(r, r->pres + r->phead, n, now);
	result_chunk_end(r, n, qr);
	if (r->npres > 0)
		return;
	runner_sched_arm(r);
	runner_idle_check(r);
}

/*
 * Writes a chunk of the waiting results (as runner_result_commit()
 * would commit: their delivery lines are logged now) into TXN, a
 * scheduling pass's transaction; sets *N to the chunk's size (for
 * runner_result_done()) and *ENDS to its messages that leave memory
 * once it is committed.  Not QUEUE_OK: TXN must be aborted.
 */
enum queue_result
runner_result_put(
    struct runner *r, struct queue_txn *txn, size_t *n, size_t *ends)
{
	const struct pres *base = r->pres + r->phead;

	*n = r->npres - r->phead;
	*ends = 0;
	if (r->ev_commit)
		evtimer_del(r->ev_commit);
	if (*n == 0)
		return QUEUE_OK;
	*n = result_chunk(r, false);
	for (size_t i = 0; i < *n; i++)
		if (base[i].msg_end)
			(*ends)++;
	result_log_lines(base, *n);
	return result_txn_put(r, txn, base, *n, rq_now());
}

/*
 * The N results runner_result_put() wrote are over: QR is the result of
 * their transaction (its commit, or the put that aborted it).  When it
 * failed, they are written again in a transaction of their own (what
 * else was in it, the pass's take, may be what failed), and logged as
 * lost if that fails too.
 */
void
runner_result_done(struct runner *r, size_t n, enum queue_result qr)
{
	if (n == 0)
		return;
	if (qr != QUEUE_OK)
		qr = result_txn_write(r, r->pres + r->phead, n, rq_now());
	result_chunk_end(r, n, qr);
}
