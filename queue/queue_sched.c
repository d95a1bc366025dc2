/*
 * queue_sched.c - the delivery schedule: a message's schedule entry, what
 * is due, taking due recipients under a lease, recovering leases at
 * start-up, and what moves a message on or off the schedule
 * (reschedule, hold, release, flush).
 *
 * Public: queue_due_next(), queue_due_next_class(), queue_due_take(),
 * queue_due_take_rcpts(), queue_txn_take_rcpts(), queue_leases_recover(),
 * queue_msg_reschedule(), queue_msg_hold(), queue_msg_release(),
 * queue_msg_flush(); (to queue/, queue_int.h) queue_sched_set().
 *
 * Invariants: a message has a schedule entry cls|due|id exactly when it
 * is not held and has a recipient pending or deferred, and msg.due names
 * it; due is the earliest next_attempt of those recipients.  A message
 * is in the lease db exactly when a recipient has QRCPT_LEASED; a leased
 * recipient's next_attempt is the end of its lease, so a crash means a
 * retry, never a loss.
 *
 * Costs: what needs every recipient (reschedule, take, flush, release,
 * recover) walks their records reading the fixed head only (qwalk,
 * qrec_rcpt_peek); a take under a budget stops where it runs out and the
 * next starts there (take_at).
 */
#include <stdlib.h>
#include <string.h>

#include "queue_int.h"

/* ---- the schedule entry ---- */

enum queue_result
queue_sched_set(struct queue_txn *t, struct queue_msg *m, int64_t due)
{
	uint8_t k[17];
	MDB_val key = { 17, k }, val = { 0, (void *)"" };
	int rc;

	if (t->err != QUEUE_OK || m->due == due)
		return t->err;
	if (m->due != 0) {
		qkey_sched(k, m->cls, m->due, m->id);
		rc = mdb_del(t->txn, t->q->dbi[QDB_SCHED], &key, NULL);
		if (rc != MDB_NOTFOUND)
			queue_txn_fail(t, rc, "schedule");
	}
	m->due = due;
	if (due != 0) {
		qkey_sched(k, m->cls, due, m->id);
		queue_txn_fail(t,
		    mdb_put(t->txn, t->q->dbi[QDB_SCHED], &key, &val, 0),
		    "schedule");
	}
	return t->err;
}

/* What a walk over a message's recipients found, for its schedule. */
struct rsum {
	bool open; /* a recipient is pending or deferred */
	bool leased; /* ... and one of them is leased */
	int64_t due; /* their earliest next_attempt */
};

/* Adds recipient RC (its head, as it is now) to S. */
static void
rsum_add(struct rsum *s, const struct queue_rcpt *rc)
{
	if (rc->state != RCPT_PENDING && rc->state != RCPT_DEFERRED)
		return;
	if (!s->open || rc->next_attempt < s->due)
		s->due = rc->next_attempt;
	s->open = true;
	if (rc->flags & QRCPT_LEASED)
		s->leased = true;
}

/*
 * Sets M's schedule and lease entries from S (what a walk over all its
 * recipients found), writes its record, or removes it when no recipient
 * is left to deliver.
 */
static enum queue_result
resched_finish(struct queue_txn *t, struct queue_msg *m, const struct rsum *s)
{
	int64_t due = s->due;
	uint8_t k[8];
	MDB_val key = { 8, k }, val = { 0, (void *)"" };
	int rc;

	if (t->err != QUEUE_OK)
		return t->err;
	if (!s->open)
		return queue_msg_remove(t, m->id);
	if (due <= 0)
		due = 1;
	queue_sched_set(t, m, (m->flags & QMSG_HELD) ? 0 : due);
	qkey_id(k, m->id);
	if (s->leased) {
		rc = mdb_put(t->txn, t->q->dbi[QDB_LEASE], &key, &val, 0);
	} else {
		rc = mdb_del(t->txn, t->q->dbi[QDB_LEASE], &key, NULL);
		if (rc == MDB_NOTFOUND)
			rc = 0;
	}
	queue_txn_fail(t, rc, "lease");
	return queue_msg_put(t, m);
}

/* Sets aside message M whose walk W found an invalid record. */
static enum queue_result
walk_bad(struct queue_txn *t, struct qwalk *w, const struct queue_msg *m)
{
	qwalk_close(w);
	if (t->err != QUEUE_OK)
		return t->err;
	queue_msg_quarantine(t, m->id, "recipient");
	return QUEUE_CORRUPT;
}

/*
 * Walks envelope M's recipients within T: FN (may be NULL) may change
 * the current one through qwalk_rewrite() and returns its head as it
 * is then; the sum of those decides M's schedule (resched_finish).
 * One cursor step per recipient, no decoding of the strings.
 */
typedef enum queue_result (*walk_fn)(
    struct queue_txn *, struct qwalk *, struct queue_rcpt *head, void *arg);

static enum queue_result
resched_walk(struct queue_txn *t, struct queue_msg *m, walk_fn fn, void *arg)
{
	struct rsum s = { false, false, 0 };
	struct queue_rcpt head;
	struct qwalk w;

	if (t->err != QUEUE_OK)
		return t->err;
	qwalk_open(&w, t->txn, t->q->dbi[QDB_RCPT], m->id, 0);
	while (qwalk_next(&w)) {
		if (w.n > m->nrcpt ||
		    !qrec_rcpt_peek(w.val.mv_data, w.val.mv_size, &head))
			return walk_bad(t, &w, m);
		head.idx = w.idx;
		if (fn != NULL && fn(t, &w, &head, arg) != QUEUE_OK)
			return walk_bad(t, &w, m);
		rsum_add(&s, &head);
	}
	if (w.bad || w.n != m->nrcpt)
		return walk_bad(t, &w, m);
	qwalk_close(&w);
	return resched_finish(t, m, &s);
}

enum queue_result
queue_msg_reschedule(struct queue_txn *t, uint64_t id)
{
	struct queue_msg *m;
	enum queue_result r = queue_env_get(t, id, &m);

	if (r != QUEUE_OK)
		return r;
	r = resched_walk(t, m, NULL, NULL);
	queue_env_free(m);
	return r;
}

/* ---- what is due ---- */

int64_t
queue_due_next_class(struct queue *q, enum cfg_class cls)
{
	MDB_txn *txn = queue_rtxn_begin(q);
	MDB_cursor *c;
	uint8_t k[17];
	MDB_val key = { 17, k }, val;
	int64_t due = INT64_MAX;

	if (txn == NULL)
		return INT64_MAX;
	if (mdb_cursor_open(txn, q->dbi[QDB_SCHED], &c) == 0) {
		qkey_sched(k, cls, 0, 0);
		if (mdb_cursor_get(c, &key, &val, MDB_SET_RANGE) == 0 &&
		    key.mv_size == 17 && ((uint8_t *)key.mv_data)[0] == cls)
			due = (int64_t)qbe64_get((uint8_t *)key.mv_data + 1);
		mdb_cursor_close(c);
	}
	queue_rtxn_done(q);
	return due;
}

int64_t
queue_due_next(struct queue *q)
{
	int64_t due = INT64_MAX;

	for (int c = 0; c < CFG_NCLASS; c++) {
		int64_t d = queue_due_next_class(q, (enum cfg_class)c);

		if (d < due)
			due = d;
	}
	return due;
}

/* ---- taking due recipients under a lease ---- */

/* Whether recipient HEAD is due at NOW. */
static bool
rcpt_due(const struct queue_rcpt *head, int64_t now)
{
	return (head->state == RCPT_PENDING || head->state == RCPT_DEFERRED) &&
	    head->next_attempt <= now;
}

/* A take in progress over one message (see take_range()). */
struct take {
	int64_t now, lease_until;
	size_t *budget;
	size_t taken;
	uint32_t lo, hi; /* the bounds of the indexes leased */
	uint32_t stop; /* where the budget ran out */
	struct rsum s;
};

enum take_result { TAKE_DONE, TAKE_STOPPED, TAKE_BAD };

/*
 * Leases the due recipients of M with an index in [FROM, TO) while the
 * budget lasts, and adds each to the schedule sum; stops (TAKE_STOPPED,
 * TK->stop) at the first due recipient the budget has no room for.
 */
static enum take_result
take_range(struct queue_txn *t, const struct queue_msg *m, uint32_t from,
    uint32_t to, struct take *tk)
{
	struct queue_rcpt head, full;
	struct qwalk w;

	if (from >= to)
		return TAKE_DONE;
	qwalk_open(&w, t->txn, t->q->dbi[QDB_RCPT], m->id, from);
	while (qwalk_next(&w)) {
		if (w.idx >= to ||
		    !qrec_rcpt_peek(w.val.mv_data, w.val.mv_size, &head))
			break;
		head.idx = w.idx;
		if (rcpt_due(&head, tk->now) && *tk->budget == 0) {
			qwalk_close(&w);
			tk->stop = head.idx;
			return TAKE_STOPPED;
		}
		if (rcpt_due(&head, tk->now)) {
			/* what the runner will load is checked first */
			if (!qrec_rcpt_decode(
				w.val.mv_data, w.val.mv_size, &full))
				break;
			head.flags |= QRCPT_LEASED;
			head.next_attempt = tk->lease_until;
			if (queue_txn_fail(t,
				qwalk_rewrite(
				    &w, head.flags, head.next_attempt),
				"lease rcpt") != QUEUE_OK)
				break;
			if (tk->taken++ == 0 || head.idx < tk->lo)
				tk->lo = head.idx;
			if (head.idx + 1 > tk->hi)
				tk->hi = head.idx + 1;
			(*tk->budget)--;
		}
		rsum_add(&tk->s, &head);
		if (w.idx + 1 == to)
			break;
	}
	if (w.bad || w.n != to - from || t->err != QUEUE_OK) {
		qwalk_close(&w);
		return TAKE_BAD;
	}
	qwalk_close(&w);
	return TAKE_DONE;
}

/*
 * Leases the due recipients of message M (its schedule entry is due)
 * within *BUDGET, walking them from where the last take of its class
 * stopped to the end, then from the first.  When the budget runs out on
 * a due recipient the walk stops there (the next take starts at it): the
 * message keeps its entry, due now, and is in the lease db.  Otherwise
 * the walk has seen every recipient and sets the schedule from them.  So
 * a message with N recipients taken in slices costs O(N) steps in all,
 * plus O(1) per recipient leased.  Sets *LO and *HI to the bounds of the
 * indexes leased; returns how many.
 */
static size_t
take_msg(struct queue_txn *t, struct queue_msg *m, int64_t now,
    int64_t lease_until, size_t *budget, uint32_t *lo, uint32_t *hi)
{
	struct take tk;
	struct qwalk w = { 0 };
	uint32_t from = 0, n = (uint32_t)m->nrcpt;
	enum take_result r;
	uint8_t k[8];
	MDB_val key = { 8, k }, val = { 0, (void *)"" };

	memset(&tk, 0, sizeof(tk));
	tk.now = now;
	tk.lease_until = lease_until;
	tk.budget = budget;
	if (t->q->take_at[m->cls].id == m->id) {
		if (t->q->take_at[m->cls].idx < n)
			from = t->q->take_at[m->cls].idx;
		t->q->take_at[m->cls].id = 0;
	}
	r = take_range(t, m, from, n, &tk);
	if (r == TAKE_DONE)
		r = take_range(t, m, 0, from, &tk);
	if (r == TAKE_BAD) {
		walk_bad(t, &w, m);
		return 0;
	}
	*lo = tk.lo;
	*hi = tk.hi;
	if (tk.taken > 0)
		queue_stats_taken(t, m);
	if (r == TAKE_STOPPED) {
		/* the rest on the next call, from there */
		t->q->take_at[m->cls].id = m->id;
		t->q->take_at[m->cls].idx = tk.stop;
		qkey_id(k, m->id);
		queue_txn_fail(t,
		    mdb_put(t->txn, t->q->dbi[QDB_LEASE], &key, &val, 0),
		    "lease");
	} else {
		resched_finish(t, m, &tk.s);
	}
	return t->err == QUEUE_OK ? tk.taken : 0;
}

size_t
queue_txn_take_rcpts(struct queue_txn *t, enum cfg_class cls, int64_t now,
    int64_t lease_until, struct queue_take *out, size_t max, size_t *budget)
{
	struct queue *q = t->q;
	MDB_cursor *c;
	uint8_t k[17];
	MDB_val key = { 17, k }, val;
	uint64_t *cand;
	int64_t *cdue;
	size_t ncand = 0, n = 0;
	int rc;

	if (max == 0 || *budget == 0 || t->err != QUEUE_OK)
		return 0;
	cand = xcalloc(max, sizeof(*cand));
	cdue = xcalloc(max, sizeof(*cdue));
	if (mdb_cursor_open(t->txn, q->dbi[QDB_SCHED], &c) == 0) {
		qkey_sched(k, cls, 0, 0);
		rc = mdb_cursor_get(c, &key, &val, MDB_SET_RANGE);
		while (rc == 0 && ncand < max && key.mv_size == 17 &&
		    ((uint8_t *)key.mv_data)[0] == cls) {
			int64_t due = (int64_t)qbe64_get(
			    (uint8_t *)key.mv_data + 1);

			if (due > now)
				break;
			cdue[ncand] = due;
			cand[ncand++] = qbe64_get((uint8_t *)key.mv_data + 9);
			rc = mdb_cursor_get(c, &key, &val, MDB_NEXT);
		}
		mdb_cursor_close(c);
	}
	for (size_t i = 0; i < ncand && t->err == QUEUE_OK && *budget > 0;
	     i++) {
		struct queue_msg *m;
		enum queue_result r = queue_env_get(t, cand[i], &m);
		uint32_t lo = 0, hi = 0;
		size_t taken;

		if (r != QUEUE_OK || m->due != cdue[i] || m->cls != cls) {
			/* an orphaned or stale entry: drop it */
			qkey_sched(k, cls, cdue[i], cand[i]);
			key.mv_size = 17;
			key.mv_data = k;
			mdb_del(t->txn, q->dbi[QDB_SCHED], &key, NULL);
			if (r == QUEUE_OK && !(m->flags & QMSG_HELD)) {
				m->due = 0;
				resched_walk(t, m, NULL, NULL);
			}
			queue_env_free(m);
			continue;
		}
		taken = take_msg(t, m, now, lease_until, budget, &lo, &hi);
		if (taken > 0) {
			out[n].id = m->id;
			out[n].lo = lo;
			out[n].hi = hi;
			n++;
		}
		queue_env_free(m);
	}
	free(cand);
	free(cdue);
	return t->err == QUEUE_OK ? n : 0;
}

size_t
queue_due_take_rcpts(struct queue *q, enum cfg_class cls, int64_t now,
    int64_t lease_until, struct queue_take *out, size_t max, size_t *budget)
{
	struct queue_txn *t;
	size_t n;

	if (max == 0 || *budget == 0 || (t = queue_txn_begin(q)) == NULL)
		return 0;
	n = queue_txn_take_rcpts(t, cls, now, lease_until, out, max, budget);
	if (queue_txn_commit(t) != QUEUE_OK)
		return 0;
	return n;
}

size_t
queue_due_take(struct queue *q, enum cfg_class cls, int64_t now,
    int64_t lease_until, uint64_t *ids, size_t max)
{
	struct queue_take *tk = xcalloc(max ? max : 1, sizeof(*tk));
	size_t budget = SIZE_MAX;
	size_t n = queue_due_take_rcpts(
	    q, cls, now, lease_until, tk, max, &budget);

	for (size_t i = 0; i < n; i++)
		ids[i] = tk[i].id;
	free(tk);
	return n;
}

/* Makes the walk's current recipient due NOW when it is leased. */
static enum queue_result
recover_fn(
    struct queue_txn *t, struct qwalk *w, struct queue_rcpt *head, void *arg)
{
	size_t *nr = arg;

	if (!(head->flags & QRCPT_LEASED))
		return QUEUE_OK;
	head->flags &= ~QRCPT_LEASED;
	head->next_attempt = t->now;
	(*nr)++;
	return queue_txn_fail(
	    t, qwalk_rewrite(w, head->flags, head->next_attempt), "recover");
}

void
queue_leases_recover(struct queue *q)
{
	struct queue_txn *t = queue_txn_begin(q);
	MDB_cursor *c;
	MDB_val key, val;
	uint64_t *ids = NULL;
	size_t n = 0, cap = 0, nr = 0;
	int rc;

	if (t == NULL)
		return;
	if (mdb_cursor_open(t->txn, q->dbi[QDB_LEASE], &c) == 0) {
		rc = mdb_cursor_get(c, &key, &val, MDB_FIRST);
		while (rc == 0) {
			if (key.mv_size == 8) {
				if (n == cap) {
					cap = cap ? cap * 2 : 64;
					ids = xrealloc(ids, cap * sizeof(*ids));
				}
				ids[n++] = qbe64_get(key.mv_data);
			}
			rc = mdb_cursor_get(c, &key, &val, MDB_NEXT);
		}
		mdb_cursor_close(c);
	}
	for (size_t i = 0; i < n && t->err == QUEUE_OK; i++) {
		struct queue_msg *m;

		if (queue_env_get(t, ids[i], &m) != QUEUE_OK) {
			uint8_t k[8];

			qkey_id(k, ids[i]);
			key.mv_size = 8;
			key.mv_data = k;
			mdb_del(t->txn, q->dbi[QDB_LEASE], &key, NULL);
			continue;
		}
		resched_walk(t, m, recover_fn, &nr);
		queue_env_free(m);
	}
	free(ids);
	if (queue_txn_commit(t) == QUEUE_OK && nr > 0)
		log_info("qmgr",
		    "recovered %zu in-flight recipients of %zu "
		    "messages: due now",
		    nr, n);
}

/* ---- hold, release, flush ---- */

enum queue_result
queue_msg_hold(struct queue_txn *t, uint64_t id, bool *changed)
{
	struct queue_msg *m;
	enum queue_result r = queue_env_get(t, id, &m);

	if (r != QUEUE_OK)
		return r;
	if (changed != NULL)
		*changed = !(m->flags & QMSG_HELD);
	if (!(m->flags & QMSG_HELD)) {
		queue_sched_set(t, m, 0);
		queue_expiry_index(t, m, false);
		queue_stats_env(t, m, -1);
		m->flags |= QMSG_HELD;
		queue_stats_env(t, m, 1);
		queue_count_add(t, (uint8_t[]){ QCOUNT_HELD }, 1, 1);
		queue_msg_put(t, m);
		if (t->err == QUEUE_OK)
			queue_txn_log(t, "%s: hold", m->idstr);
	}
	queue_env_free(m);
	return t->err;
}

enum queue_result
queue_msg_release(struct queue_txn *t, uint64_t id, bool *changed)
{
	struct queue_msg *m;
	enum queue_result r = queue_env_get(t, id, &m);

	if (r != QUEUE_OK)
		return r;
	if (changed != NULL)
		*changed = (m->flags & QMSG_HELD) != 0;
	if (m->flags & QMSG_HELD) {
		queue_stats_env(t, m, -1);
		m->flags &= ~QMSG_HELD;
		queue_stats_env(t, m, 1);
		queue_count_add(t, (uint8_t[]){ QCOUNT_HELD }, 1, -1);
		queue_expiry_index(t, m, true);
		resched_walk(t, m, NULL, NULL);
		if (t->err == QUEUE_OK)
			queue_txn_log(t, "%s: released", m->idstr);
	}
	queue_env_free(m);
	return t->err;
}

/* A flush in progress (see flush_fn). */
struct flush {
	int64_t now;
	bool any;
};

/* Makes the walk's current recipient due now when it waits for a retry
 * (a leased one is in flight: left alone). */
static enum queue_result
flush_fn(
    struct queue_txn *t, struct qwalk *w, struct queue_rcpt *head, void *arg)
{
	struct flush *f = arg;

	if ((head->state != RCPT_PENDING && head->state != RCPT_DEFERRED) ||
	    head->next_attempt <= f->now || (head->flags & QRCPT_LEASED))
		return QUEUE_OK;
	head->next_attempt = f->now;
	f->any = true;
	return queue_txn_fail(
	    t, qwalk_rewrite(w, head->flags, head->next_attempt), "flush");
}

enum queue_result
queue_msg_flush(struct queue_txn *t, uint64_t id, int64_t now)
{
	struct queue_msg *m;
	enum queue_result r = queue_env_get(t, id, &m);
	struct flush f = { now, false };
	struct queue_rcpt head;
	struct qwalk w;

	if (r != QUEUE_OK)
		return r;
	/* a look first: a message with nothing waiting is not touched */
	qwalk_open(&w, t->txn, t->q->dbi[QDB_RCPT], id, 0);
	while (!f.any && qwalk_next(&w))
		if (qrec_rcpt_peek(w.val.mv_data, w.val.mv_size, &head) &&
		    (head.state == RCPT_PENDING ||
			head.state == RCPT_DEFERRED) &&
		    head.next_attempt > now && !(head.flags & QRCPT_LEASED))
			f.any = true;
	qwalk_close(&w);
	if (f.any)
		r = resched_walk(t, m, flush_fn, &f);
	queue_env_free(m);
	return r;
}
