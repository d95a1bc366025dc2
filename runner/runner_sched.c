/*
 * runner_sched.c - scheduling passes: when the runner looks for due
 * work, how much it takes, and the leased messages it keeps in memory.
 * Where a taken recipient goes next: runner_job.c (its job),
 * runner_dest.c (its destination's wait list).
 *
 * Runner-private: runner_sched_init(), runner_sched_destroy(),
 * runner_sched_arm(), runner_sched_kick(), runner_sched_pass(),
 * runner_sched_room(), runner_sched_busy(), runner_rmsg_release(),
 * runner_rmsg_end().
 *
 * The rules.  Leased messages are kept in memory up to a budget
 * (max_msgs: 4 x max_connections_total, between 2,000 and 20,000); a
 * message whose results wait for their commit counts as free (it leaves
 * memory at that commit).  A pass runs when a quarter of the budget is
 * free (or less than a quarter is in use), or when the commit timer
 * fires (runner_result.c) and any of it is free: then the take shares
 * the commit it would have cost.  It takes due work class by class as
 * runner_share.c decides: each class with due work its weighted share
 * of the free slots and of RUNNER_TAKE_RCPTS recipients, and what a
 * class leaves to the others in the order urgent, dsn, normal,
 * non-urgent.  A pass is one write transaction: a chunk of the waiting
 * results first, then the takes, which lease the due recipients for
 * delivery_lease (queue_txn_take_rcpts, so that a crash means a retry);
 * once it is committed (one fsync) the pass loads only the recipients
 * leased and appends them to the message in memory; a message with
 * more due recipients than the budget is taken a slice at a time, over
 * the next passes.  A pass with nothing to take commits nothing: the
 * results wait for the commit timer.
 *
 * Invariants: the loop never polls: ev_sched is armed at the next due
 * time (or not at all while the budget is (nearly) full: a finished job
 * kicks it), and work still due right after a pass that took nothing is
 * looked at again after a second; a message is in memory at most once,
 * and a recipient in it at most once (a take of a message in memory
 * adds only recipients not in it); a pass leases at most
 * RUNNER_TAKE_RCPTS recipients, so it costs O(RUNNER_TAKE_RCPTS)
 * whatever a message's size; a message leaves memory only once its
 * results are committed.
 */
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "runner_int.h"

#define TAKE_MAX 1024 /* ids per queue_txn_take_rcpts() call */

/* A message id's bucket of r->msgs (Fibonacci hashing). */
static unsigned
hash_id(uint64_t id)
{
	return (unsigned)((id * 0x9E3779B97F4A7C15ull) >> 52) % RUNNER_HASH;
}

static void sched_cb(evutil_socket_t, short, void *);
static void sched_arm_int(struct runner *, bool after_run);

/* Makes the scheduling timer. */
void
runner_sched_init(struct runner *r)
{
	r->ev_sched = evtimer_new(r->base, sched_cb, r);
}

/* Anything in flight or waiting (for --exit-when-idle)? */
bool
runner_sched_busy(const struct runner *r)
{
	/* Every waiting or active job holds its message in memory. */
	return r->nmsgs > 0 || r->active > 0;
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
runner_rmsg_release(struct runner *r, struct rmsg *m)
{
	if (--m->refs > 0)
		return;
	m->ends++;
	runner_result_msg_done(r, m->msg->id);
}

/* An end of message ID is committed: frees it unless a take gave it
 * new jobs meanwhile (their last one ends it again). */
void
runner_rmsg_end(struct runner *r, uint64_t id)
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
		runner_job_add(r, m, i, &jobs, &njobs, &ajobs);
	for (size_t k = 0; k < njobs; k++) {
		runner_dest_enqueue(jobs[k]->dest, jobs[k]);
		runner_dest_kick(r, jobs[k]->dest);
	}
	free(jobs);
	runner_rmsg_release(r, m);
}

/* A scheduling pass, for the runner_share_ops callbacks: its takes go
 * into TXN, and their recipients are loaded once it is committed. */
struct sched_pass {
	struct runner *r;
	int64_t now, lease_until;
	struct queue_txn *txn;
	struct queue_take *tk; /* what the takes leased, ntk of them */
	size_t ntk, atk;
	size_t room; /* message slots left */
};

/* runner_share_ops.take: takes up to N due messages of class C into the
 * pass's transaction, and at most *RCPTS recipients (taken down by those
 * leased); returns how many messages. */
static size_t
sched_pass_take(void *arg, enum cfg_class c, size_t n, size_t *rcpts)
{
	struct sched_pass *p = arg;
	size_t got, total = 0;

	while (n > 0 && *rcpts > 0) {
		size_t want = n < TAKE_MAX ? n : TAKE_MAX;

		if (p->ntk + want > p->atk) {
			p->atk = p->ntk + want;
			p->tk = xrealloc(p->tk, p->atk * sizeof(*p->tk));
		}
		got = queue_txn_take_rcpts(p->txn, c, p->now, p->lease_until,
		    p->tk + p->ntk, want, rcpts);
		p->ntk += got;
		/* a slot each (a slice of a message in memory takes none:
		 * the budget is a bound, not an exact count) */
		p->room -= got < p->room ? got : p->room;
		total += got;
		n -= got;
		if (got < want)
			break;
	}
	return total;
}

/* runner_share_ops.room: the free part of the in-memory budget. */
static size_t
sched_pass_room(void *arg)
{
	struct sched_pass *p = arg;

	return p->room;
}

/* The free part of the in-memory budget, counting as free the messages
 * whose end waits for the commit of their results (ENDS of them). */
static size_t
sched_room(const struct runner *r, size_t ends)
{
	size_t used = r->nmsgs > ends ? r->nmsgs - ends : 0;

	return r->max_msgs > used ? r->max_msgs - used : 0;
}

/* The free part of the in-memory budget, the messages whose end waits
 * for its commit counted as free (a finished job kicks a pass with it). */
size_t
runner_sched_room(const struct runner *r)
{
	return sched_room(r, r->nends);
}

/* Whether a pass may take now: a quarter of the budget is free, or less
 * than a quarter is in use (the messages ending counted as free). */
static bool
sched_room_enough(const struct runner *r)
{
	size_t chunk = r->max_msgs / 4, room = sched_room(r, r->nends);

	return room > 0 && (room >= chunk || r->max_msgs - room < chunk);
}

/* Whether any class has work due at NOW (one read of the schedule per
 * class); fills DUE. */
static bool
sched_due(struct runner *r, int64_t now, bool due[CFG_NCLASS])
{
	bool any = false;

	for (int i = 0; i < CFG_NCLASS; i++) {
		enum cfg_class c = runner_class_order[i];

		due[c] = queue_due_next_class(r->q, c) <= now;
		any = any || due[c];
	}
	return any;
}

/*
 * Takes due work in the transaction that commits a chunk of the waiting
 * results (one commit, one fsync, for both): the results first, so that
 * the slots of the messages they end count as free; the recipients
 * leased are loaded once it is committed.  IN: what is due and its
 * weights.  Returns the messages taken.
 */
static size_t
sched_take_txn(
    struct runner *r, struct sched_pass *p, struct runner_share_in *in)
{
	struct runner_share_ops ops = { sched_pass_take, sched_pass_room, p };
	int64_t now_us = rq_now_us();
	enum queue_result qr = QUEUE_ERR;
	size_t n, ends, took = 0;

	p->txn = queue_txn_begin(r->q);
	if (p->txn == NULL) {
		runner_result_commit(r, false);
		return 0;
	}
	qr = runner_result_put(r, p->txn, &n, &ends);
	if (qr != QUEUE_OK) {
		queue_txn_abort(p->txn);
		p->txn = NULL;
		runner_result_done(r, n, qr);
		return 0;
	}
	in->room = p->room = sched_room(r, ends);
	in->rcpts = RUNNER_TAKE_RCPTS;
	if (in->room > 0)
		took = runner_share_pass(in, &ops);
	qr = runner_result_txn_commit(r, p->txn);
	p->txn = NULL;
	/* the results' messages leave memory (or stay, retaken) first */
	runner_result_done(r, n, qr);
	if (qr == QUEUE_OK)
		for (size_t i = 0; i < p->ntk; i++)
			sched_take_one(r, &p->tk[i], now_us);
	free(p->tk);
	return qr == QUEUE_OK ? took : 0;
}

/*
 * A scheduling pass (see the rules above).  COMMIT: the commit timer's
 * (results must be committed now), else the scheduling timer's, which
 * leaves the results to the commit timer when there is nothing to take:
 * a message stays in memory until its results are committed, and a take
 * hands out none of its recipients in memory again (rmsg_add).
 */
void
runner_sched_pass(struct runner *r, bool commit)
{
	const struct cfg_scope *g = cfg_scope(r->rc->cfg, NULL);
	struct sched_pass p;
	struct runner_share_in in;
	size_t took = 0;
	bool room;

	if (!commit)
		r->sched_at = INT64_MAX;
	memset(&p, 0, sizeof(p));
	p.r = r;
	p.now = rq_now();
	if (r->stopping) {
		if (commit)
			runner_result_commit(r, false);
		return;
	}
	/* A pass that commits anyway takes what fits (it costs no fsync)
	 * once there is a slot per class: each class with due work takes
	 * at least one (runner_share_pass()). */
	room = commit ? runner_sched_room(r) >= CFG_NCLASS
		      : sched_room_enough(r);
	if (!room || !sched_due(r, p.now, in.due)) {
		if (commit) {
			/* arms the next pass and checks for idle itself */
			runner_result_commit(r, false);
			return;
		}
		sched_arm_int(r, true);
		runner_idle_check(r);
		return;
	}
	runner_share_weights(g, in.weight);
	p.lease_until = p.now +
	    cfg_time(g, CFG_DELIVERY_LEASE, CFG_NORMAL, false);
	took = sched_take_txn(r, &p, &in);
	/* Work taken and room left (e.g. every job failed at once): look
	 * again now (the next turn); nothing taken though due: in a
	 * second. */
	sched_arm_int(r, took == 0);
	runner_idle_check(r);
}

/* The scheduling timer: a pass. */
static void
sched_cb(evutil_socket_t fd, short what, void *arg)
{
	runner_sched_pass(arg, false);
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

	if (r->stopping)
		return;
	next = queue_due_next(r->q);
	if (next == INT64_MAX)
		return;
	if (next * 1000000 <= now_us) {
		if (r->nmsgs > 0 && !sched_room_enough(r))
			return;
		sched_at(r, after_run ? now_us + 1000000 : now_us);
		return;
	}
	sched_at(r, next * 1000000);
}

/* Arms ev_sched at the next due time (after a commit changed it). */
void
runner_sched_arm(struct runner *r)
{
	sched_arm_int(r, false);
}

/* Schedules a pass on the next loop turn. */
void
runner_sched_kick(struct runner *r)
{
	if (r->stopping)
		return;
	sched_at(r, 0);
}

/* Frees the scheduling timer. */
void
runner_sched_destroy(struct runner *r)
{
	if (r->ev_sched)
		event_free(r->ev_sched);
	r->ev_sched = NULL;
}
