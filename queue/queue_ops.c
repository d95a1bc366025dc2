/*
 * queue_ops.c - what happens to queued messages: the schedule index
 * (take due work under a lease, reschedule, recover leases), recipient
 * results, hold / release / flush, the expiry index, paged inspection
 * (scan, counts) and the wakeup notifications between processes.
 *
 * Public: queue_next_due(), queue_next_due_class(), queue_take_due(),
 * queue_take_due_rcpts(), queue_recover_leases(), queue_rcpt_update(),
 * queue_rcpt_set_flags(),
 * queue_msg_reschedule(),
 * queue_msg_set_flags(), queue_msg_hold(), queue_msg_release(),
 * queue_msg_flush(), queue_expiry_next(), queue_expiry_due(),
 * queue_expiry_clear(), queue_scan(), queue_counts_get(),
 * queue_domain_counts(), queue_rcpt_history(), queue_history_free(),
 * queue_notify(), queue_wakeup_fd(), queue_wakeup_drain().
 *
 * Invariants: a message has a schedule entry cls|due|id exactly when it
 * is not held and has a recipient pending or deferred, and msg.due names
 * it; due is the earliest next_attempt of those recipients.  It has an
 * expiry entry for warn_at (return_at) exactly when that is non-zero, it
 * is not held, and the warning (return) was not sent.  A message is in
 * the lease db exactly when a recipient has QRCPT_LEASED.  Each
 * queue_rcpt_update() adds one hist record (attempt = the new attempts
 * count) and drops the one QUEUE_HIST_MAX older, in the same txn.
 *
 * Costs: a result reads the envelope and writes the one recipient (O(1)
 * in the message's size); what needs every recipient (reschedule, take,
 * flush, release, recover) walks their records reading the fixed head
 * only (qwalk, qrec_rcpt_peek); a take under a budget stops where it
 * runs out and the next starts there (take_at).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "queue_int.h"

#define SCAN_PAGE 512

/* ---- schedule ---- */

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

enum queue_result
queue_expiry_index(struct queue_txn *t, const struct queue_msg *m, bool add)
{
	struct {
		int64_t when;
		int kind;
		unsigned done;
	} e[2] = { { m->warn_at, QEXP_WARN, QMSG_WARNED },
		{ m->return_at, QEXP_RETURN, QMSG_RETURNED } };

	for (int i = 0; i < 2 && t->err == QUEUE_OK; i++) {
		uint8_t k[17];
		MDB_val key = { 17, k }, val = { 0, (void *)"" };
		int rc;

		if (e[i].when == 0)
			continue;
		qkey_expiry(k, e[i].when, m->id, e[i].kind);
		if (!add) {
			rc = mdb_del(t->txn, t->q->dbi[QDB_EXPIRY], &key, NULL);
			if (rc != MDB_NOTFOUND)
				queue_txn_fail(t, rc, "expiry index");
		} else if (!(m->flags & e[i].done) && !(m->flags & QMSG_HELD)) {
			queue_txn_fail(t,
			    mdb_put(
				t->txn, t->q->dbi[QDB_EXPIRY], &key, &val, 0),
			    "expiry index");
		}
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
	return queue_put_msg(t, m);
}

/* Sets aside message M whose walk W found an invalid record. */
static enum queue_result
walk_bad(struct queue_txn *t, struct qwalk *w, const struct queue_msg *m)
{
	qwalk_close(w);
	if (t->err != QUEUE_OK)
		return t->err;
	queue_quarantine(t, m->id, "recipient");
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

int64_t
queue_next_due_class(struct queue *q, enum cfg_class cls)
{
	MDB_txn *txn = queue_rtxn(q);
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
queue_next_due(struct queue *q)
{
	int64_t due = INT64_MAX;

	for (int c = 0; c < CFG_NCLASS; c++) {
		int64_t d = queue_next_due_class(q, (enum cfg_class)c);

		if (d < due)
			due = d;
	}
	return due;
}

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
queue_take_due_rcpts(struct queue *q, enum cfg_class cls, int64_t now,
    int64_t lease_until, struct queue_take *out, size_t max, size_t *budget)
{
	struct queue_txn *t;
	MDB_cursor *c;
	uint8_t k[17];
	MDB_val key = { 17, k }, val;
	uint64_t *cand;
	int64_t *cdue;
	size_t ncand = 0, n = 0;
	int rc;

	if (max == 0 || *budget == 0 || (t = queue_txn_begin(q)) == NULL)
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
	if (queue_txn_commit(t) != QUEUE_OK)
		return 0;
	return n;
}

size_t
queue_take_due(struct queue *q, enum cfg_class cls, int64_t now,
    int64_t lease_until, uint64_t *ids, size_t max)
{
	struct queue_take *tk = xcalloc(max ? max : 1, sizeof(*tk));
	size_t budget = SIZE_MAX;
	size_t n = queue_take_due_rcpts(
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
queue_recover_leases(struct queue *q)
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
		log_info("queue",
		    "recovered %zu in-flight recipients of %zu "
		    "messages: due now",
		    nr, n);
}

/* ---- recipient results and message flags ---- */

/* Loads one recipient record within T. */
static enum queue_result
rcpt_get(struct queue_txn *t, uint64_t id, uint32_t idx, struct queue_rcpt *rc,
    char **mem)
{
	uint8_t k[12];
	MDB_val key = { 12, k }, val;
	int rc2;

	qkey_rcpt(k, id, idx);
	rc2 = mdb_get(t->txn, t->q->dbi[QDB_RCPT], &key, &val);
	if (rc2 != 0)
		return rc2 == MDB_NOTFOUND ? QUEUE_NOTFOUND
					   : queue_txn_fail(t, rc2, "rcpt");
	/* copy: the record memory may move on the next put */
	*mem = xmalloc(val.mv_size);
	memcpy(*mem, val.mv_data, val.mv_size);
	if (!qrec_rcpt_decode(*mem, val.mv_size, rc)) {
		queue_quarantine(t, id, "recipient");
		return QUEUE_CORRUPT;
	}
	rc->idx = idx;
	return QUEUE_OK;
}

/* Reads the class and arrival of message ID (what the counts of a
 * recipient need) within T, without copying anything. */
static enum queue_result
env_peek(struct queue_txn *t, uint64_t id, struct queue_msg *out)
{
	uint8_t k[8];
	MDB_val key = { 8, k }, val;
	struct queue_msg view;
	int rc;

	if (t->err != QUEUE_OK)
		return t->err;
	qkey_id(k, id);
	rc = mdb_get(t->txn, t->q->dbi[QDB_MSG], &key, &val);
	if (rc != 0)
		return rc == MDB_NOTFOUND ? QUEUE_NOTFOUND
					  : queue_txn_fail(t, rc, "msg");
	if (!qrec_msg_decode(val.mv_data, val.mv_size, &view)) {
		queue_quarantine(t, id, "envelope");
		return QUEUE_CORRUPT;
	}
	memset(out, 0, sizeof(*out));
	out->id = id;
	out->cls = view.cls;
	out->arrival = view.arrival;
	return QUEUE_OK;
}

enum queue_result
queue_rcpt_update(struct queue_txn *t, uint64_t id, uint32_t idx,
    enum queue_rcpt_state st, int64_t next_attempt, const char *reply,
    const char *dsn_status)
{
	struct queue_msg m;
	struct queue_rcpt rc;
	struct queue_attempt a;
	char *mem = NULL, buf[1001];
	enum queue_result r;

	if ((unsigned)st >= QUEUE_NSTATE)
		return QUEUE_ERR;
	/* O(1) in the message's size: the envelope is only read (for the
	 * counts), the one recipient record rewritten */
	r = env_peek(t, id, &m);
	if (r != QUEUE_OK)
		return r;
	r = rcpt_get(t, id, idx, &rc, &mem);
	if (r != QUEUE_OK) {
		free(mem);
		return r;
	}
	queue_count_rcpt(t, &m, &rc, -1);
	rc.state = st;
	rc.attempts++;
	rc.last_attempt = t->now;
	rc.flags &= ~QRCPT_LEASED;
	rc.next_attempt = (st == RCPT_PENDING || st == RCPT_DEFERRED)
	    ? (next_attempt > 0 ? next_attempt : t->now)
	    : 0;
	/* the history keeps what this attempt said (NULL: nothing new),
	 * the recipient record the last thing said */
	memset(&a, 0, sizeof(a));
	a.attempt = rc.attempts;
	a.time = t->now;
	a.state = st;
	if (reply != NULL) {
		rq_sanitize(buf, sizeof(buf), reply, strlen(reply));
		rc.reply = buf;
		a.reply = buf;
	}
	if (dsn_status != NULL) {
		memset(rc.dsn_status, 0, sizeof(rc.dsn_status));
		memcpy(rc.dsn_status, dsn_status,
		    strnlen(dsn_status, sizeof(rc.dsn_status) - 1));
		memcpy(a.dsn_status, rc.dsn_status, sizeof(a.dsn_status));
	}
	queue_count_rcpt(t, &m, &rc, 1);
	queue_put_rcpt(t, id, &rc);
	queue_put_hist(t, id, idx, &a);
	free(mem);
	return t->err;
}

enum queue_result
queue_rcpt_set_flags(struct queue_txn *t, uint64_t id, uint32_t idx,
    unsigned set, unsigned clear)
{
	struct queue_rcpt rc;
	char *mem = NULL;
	enum queue_result r;

	if (t->err != QUEUE_OK)
		return t->err;
	r = rcpt_get(t, id, idx, &rc, &mem);
	if (r == QUEUE_OK) {
		set &= ~QRCPT_LEASED;
		clear &= ~QRCPT_LEASED;
		rc.flags = (rc.flags | set) & ~clear;
		r = queue_put_rcpt(t, id, &rc);
	}
	free(mem);
	return r;
}

enum queue_result
queue_msg_hold(struct queue_txn *t, uint64_t id)
{
	struct queue_msg *m;
	enum queue_result r = queue_env_get(t, id, &m);

	if (r != QUEUE_OK)
		return r;
	if (!(m->flags & QMSG_HELD)) {
		queue_sched_set(t, m, 0);
		queue_expiry_index(t, m, false);
		queue_stats_env(t, m, -1);
		m->flags |= QMSG_HELD;
		queue_stats_env(t, m, 1);
		queue_count_add(t, "H", 1, 1);
		queue_put_msg(t, m);
		if (t->err == QUEUE_OK)
			queue_txn_log(t, "%s: hold", m->idstr);
	}
	queue_env_free(m);
	return t->err;
}

enum queue_result
queue_msg_release(struct queue_txn *t, uint64_t id)
{
	struct queue_msg *m;
	enum queue_result r = queue_env_get(t, id, &m);

	if (r != QUEUE_OK)
		return r;
	if (m->flags & QMSG_HELD) {
		queue_stats_env(t, m, -1);
		m->flags &= ~QMSG_HELD;
		queue_stats_env(t, m, 1);
		queue_count_add(t, "H", 1, -1);
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

enum queue_result
queue_msg_set_flags(
    struct queue_txn *t, uint64_t id, unsigned set, unsigned clear)
{
	struct queue_msg *m;
	enum queue_result r;

	if ((set & QMSG_HELD) && queue_msg_hold(t, id) != QUEUE_OK)
		return t->err != QUEUE_OK ? t->err : QUEUE_NOTFOUND;
	if ((clear & QMSG_HELD) && queue_msg_release(t, id) != QUEUE_OK)
		return t->err != QUEUE_OK ? t->err : QUEUE_NOTFOUND;
	set &= ~QMSG_HELD;
	clear &= ~QMSG_HELD;
	r = queue_env_get(t, id, &m);
	if (r != QUEUE_OK)
		return r;
	/* the expiry entries follow the WARNED/RETURNED flags */
	queue_expiry_index(t, m, false);
	m->flags = (m->flags | set) & ~clear;
	queue_expiry_index(t, m, true);
	queue_put_msg(t, m);
	queue_env_free(m);
	return t->err;
}

/* ---- expiry index ---- */

int64_t
queue_expiry_next(struct queue *q)
{
	MDB_txn *txn = queue_rtxn(q);
	MDB_cursor *c;
	MDB_val key, val;
	int64_t when = INT64_MAX;

	if (txn == NULL)
		return INT64_MAX;
	if (mdb_cursor_open(txn, q->dbi[QDB_EXPIRY], &c) == 0) {
		if (mdb_cursor_get(c, &key, &val, MDB_FIRST) == 0 &&
		    key.mv_size == 17)
			when = (int64_t)qbe64_get(key.mv_data);
		mdb_cursor_close(c);
	}
	queue_rtxn_done(q);
	return when;
}

size_t
queue_expiry_due(
    struct queue *q, int64_t now, struct queue_expiry_ev *evs, size_t max)
{
	MDB_txn *txn = queue_rtxn(q);
	MDB_cursor *c;
	MDB_val key, val;
	size_t n = 0, norphan = 0;
	uint8_t(*orphans)[17] = NULL;
	int rc;

	if (txn == NULL)
		return 0;
	if (mdb_cursor_open(txn, q->dbi[QDB_EXPIRY], &c) == 0) {
		rc = mdb_cursor_get(c, &key, &val, MDB_FIRST);
		while (rc == 0 && n < max && key.mv_size == 17) {
			const uint8_t *k = key.mv_data;
			int64_t when = (int64_t)qbe64_get(k);
			uint8_t ik[8];
			MDB_val mk = { 8, ik }, mv;

			if (when > now)
				break;
			memcpy(ik, k + 8, 8);
			if (mdb_get(txn, q->dbi[QDB_MSG], &mk, &mv) != 0) {
				orphans = xrealloc(
				    orphans, (norphan + 1) * sizeof(*orphans));
				memcpy(orphans[norphan++], k, 17);
			} else {
				evs[n].id = qbe64_get(k + 8);
				evs[n].kind = (enum queue_expiry_kind)k[16];
				evs[n].when = when;
				n++;
			}
			rc = mdb_cursor_get(c, &key, &val, MDB_NEXT);
		}
		mdb_cursor_close(c);
	}
	queue_rtxn_done(q);
	if (norphan > 0 && !q->readonly && q->wtxn == NULL) {
		/* entries of messages set aside as corrupt */
		struct queue_txn *t = queue_txn_begin(q);

		for (size_t i = 0; t != NULL && i < norphan; i++) {
			MDB_val k2 = { 17, orphans[i] };

			mdb_del(t->txn, q->dbi[QDB_EXPIRY], &k2, NULL);
		}
		if (t != NULL)
			queue_txn_commit(t);
	}
	free(orphans);
	return n;
}

enum queue_result
queue_expiry_clear(struct queue_txn *t, uint64_t id, int kind)
{
	struct queue_msg *m;
	enum queue_result r = queue_env_get(t, id, &m);
	uint8_t k[17];
	MDB_val key = { 17, k };
	int64_t *when;
	int rc;

	if (r != QUEUE_OK)
		return r;
	when = kind == QEXP_WARN ? &m->warn_at : &m->return_at;
	if (*when == 0) {
		queue_env_free(m);
		return QUEUE_NOTFOUND;
	}
	qkey_expiry(k, *when, id, kind);
	rc = mdb_del(t->txn, t->q->dbi[QDB_EXPIRY], &key, NULL);
	if (rc != MDB_NOTFOUND)
		queue_txn_fail(t, rc, "expiry clear");
	*when = 0;
	queue_put_msg(t, m);
	queue_env_free(m);
	return t->err;
}

/* ---- inspection ---- */

size_t
queue_scan(struct queue *q, uint64_t from_id, queue_scan_cb cb, void *arg)
{
	struct queue_rcpt *rcpts = NULL;
	size_t rcap = 0, total = 0;
	bool more = true;

	while (more) {
		MDB_txn *txn = queue_rtxn(q);
		MDB_cursor *mc, *rcur;
		MDB_val key, val, rk, rv;
		uint8_t k[12];
		size_t page = 0;
		int rc;

		if (txn == NULL)
			break;
		if (mdb_cursor_open(txn, q->dbi[QDB_MSG], &mc) != 0) {
			queue_rtxn_done(q);
			break;
		}
		if (mdb_cursor_open(txn, q->dbi[QDB_RCPT], &rcur) != 0) {
			mdb_cursor_close(mc);
			queue_rtxn_done(q);
			break;
		}
		qkey_id(k, from_id);
		key.mv_size = 8;
		key.mv_data = k;
		rc = mdb_cursor_get(mc, &key, &val, MDB_SET_RANGE);
		more = false;
		while (rc == 0) {
			struct queue_msg m;
			uint64_t id;
			size_t n = 0;
			int rr;

			if (page == SCAN_PAGE) {
				more = true;
				break;
			}
			if (key.mv_size != 8)
				goto next;
			id = qbe64_get(key.mv_data);
			from_id = id + 1;
			page++;
			if (!qrec_msg_decode(val.mv_data, val.mv_size, &m))
				goto bad;
			m.id = id;
			queue_id_format(id, m.idstr);
			if (m.nrcpt > rcap) {
				rcap = m.nrcpt;
				rcpts = xrealloc(rcpts, rcap * sizeof(*rcpts));
			}
			qkey_rcpt(k, id, 0);
			rk.mv_size = 12;
			rk.mv_data = k;
			rr = mdb_cursor_get(rcur, &rk, &rv, MDB_SET_RANGE);
			while (rr == 0 && rk.mv_size == 12 &&
			    qbe64_get(rk.mv_data) == id && n < m.nrcpt) {
				if (qbe32_get((uint8_t *)rk.mv_data + 8) != n ||
				    !qrec_rcpt_decode(
					rv.mv_data, rv.mv_size, &rcpts[n]))
					break;
				rcpts[n].idx = (uint32_t)n;
				n++;
				rr = mdb_cursor_get(rcur, &rk, &rv, MDB_NEXT);
			}
			if (n != m.nrcpt)
				goto bad;
			m.rcpts = rcpts;
			total++;
			if (!cb(&m, arg)) {
				more = false;
				break;
			}
			goto next;
		bad:
			log_warn("queue", "%016llX: invalid record: skipped",
			    (unsigned long long)id);
		next:
			rc = mdb_cursor_get(mc, &key, &val, MDB_NEXT);
		}
		mdb_cursor_close(rcur);
		mdb_cursor_close(mc);
		queue_rtxn_done(q);
	}
	free(rcpts);
	return total;
}

enum queue_result
queue_rcpt_history(struct queue *q, uint64_t id, uint32_t idx,
    struct queue_attempt **out, size_t *n)
{
	struct queue_attempt *v = NULL;
	size_t nv = 0, cap = 0;
	MDB_txn *txn;
	MDB_cursor *c;
	uint8_t k[16];
	MDB_val key = { 16, k }, val;
	int rc;

	*out = NULL;
	*n = 0;
	if (q->nohist)
		return QUEUE_OK;
	if ((txn = queue_rtxn(q)) == NULL)
		return QUEUE_ERR;
	if (mdb_cursor_open(txn, q->dbi[QDB_HIST], &c) != 0) {
		queue_rtxn_done(q);
		return QUEUE_ERR;
	}
	qkey_hist(k, id, idx, 0);
	rc = mdb_cursor_get(c, &key, &val, MDB_SET_RANGE);
	for (; rc == 0 && key.mv_size == 16 && memcmp(key.mv_data, k, 12) == 0;
	     rc = mdb_cursor_get(c, &key, &val, MDB_NEXT)) {
		struct queue_attempt a;
		uint32_t no = qbe32_get((uint8_t *)key.mv_data + 12);

		if (!qrec_hist_decode(val.mv_data, val.mv_size, &a)) {
			log_warn("queue",
			    "%016llX: invalid hist record (recipient %u, "
			    "attempt %u): skipped",
			    (unsigned long long)id, idx, no);
			continue;
		}
		if (nv == cap) {
			cap = cap ? cap * 2 : QUEUE_HIST_MAX;
			v = xrealloc(v, cap * sizeof(*v));
		}
		a.attempt = no;
		a.reply = a.reply ? xstrdup(a.reply) : NULL;
		v[nv++] = a;
	}
	mdb_cursor_close(c);
	queue_rtxn_done(q);
	*out = v;
	*n = nv;
	return QUEUE_OK;
}

void
queue_history_free(struct queue_attempt *v, size_t n)
{
	for (size_t i = 0; v != NULL && i < n; i++)
		free(v[i].reply);
	free(v);
}

enum queue_result
queue_counts_get(struct queue *q, struct queue_counts *cn)
{
	MDB_txn *txn = queue_rtxn(q);
	MDB_cursor *c;
	MDB_val key, val;
	int rc;

	memset(cn, 0, sizeof(*cn));
	if (txn == NULL)
		return QUEUE_ERR;
	if (mdb_cursor_open(txn, q->dbi[QDB_COUNTS], &c) != 0) {
		queue_rtxn_done(q);
		return QUEUE_ERR;
	}
	rc = mdb_cursor_get(c, &key, &val, MDB_FIRST);
	for (; rc == 0; rc = mdb_cursor_get(c, &key, &val, MDB_NEXT)) {
		const uint8_t *k = key.mv_data;
		uint64_t v;

		if (val.mv_size != 8)
			continue;
		v = qbe64_get(val.mv_data);
		if (k[0] == 'D') {
			/* skip the per-domain keys in one seek */
			MDB_val nk = { 1, (void *)"E" };

			key = nk;
			rc = mdb_cursor_get(c, &key, &val, MDB_SET_RANGE);
			if (rc != 0)
				break;
			k = key.mv_data;
			if (val.mv_size != 8)
				continue;
			v = qbe64_get(val.mv_data);
		}
		if (k[0] == 'M' && key.mv_size == 2 && k[1] < CFG_NCLASS)
			cn->msgs[k[1]] = v;
		else if (k[0] == 'B' && key.mv_size == 2 && k[1] < CFG_NCLASS)
			cn->bytes[k[1]] = v;
		else if (k[0] == 'R' && key.mv_size == 3 && k[1] < CFG_NCLASS &&
		    k[2] < QUEUE_NSTATE)
			cn->rcpts[k[1]][k[2]] = v;
		else if (k[0] == 'H' && key.mv_size == 1)
			cn->held = v;
	}
	mdb_cursor_close(c);
	queue_rtxn_done(q);
	return QUEUE_OK;
}

enum queue_result
queue_domain_counts(struct queue *q, queue_domain_cb cb, void *arg)
{
	uint8_t from[300];
	size_t flen = 1;
	bool more = true, first = true;

	from[0] = 'D';
	while (more) {
		MDB_txn *txn = queue_rtxn(q);
		MDB_cursor *c;
		MDB_val key = { flen, from }, val;
		size_t page = 0;
		int rc;

		if (txn == NULL)
			return QUEUE_ERR;
		if (mdb_cursor_open(txn, q->dbi[QDB_COUNTS], &c) != 0) {
			queue_rtxn_done(q);
			return QUEUE_ERR;
		}
		rc = mdb_cursor_get(c, &key, &val, MDB_SET_RANGE);
		if (rc == 0 && !first && key.mv_size == flen &&
		    memcmp(key.mv_data, from, flen) == 0)
			rc = mdb_cursor_get(c, &key, &val, MDB_NEXT);
		first = false;
		more = false;
		for (; rc == 0; rc = mdb_cursor_get(c, &key, &val, MDB_NEXT)) {
			const uint8_t *k = key.mv_data;
			char dom[300];

			if (key.mv_size < 9 || k[0] != 'D' ||
			    key.mv_size > sizeof(from))
				break;
			if (page++ == 1000) {
				memcpy(from, k, key.mv_size);
				flen = key.mv_size;
				more = true;
				break;
			}
			if (val.mv_size != 8)
				continue;
			memcpy(dom, k + 9, key.mv_size - 9);
			dom[key.mv_size - 9] = '\0';
			cb(dom, (int64_t)qbe64_get(k + 1),
			    qbe64_get(val.mv_data), arg);
		}
		mdb_cursor_close(c);
		queue_rtxn_done(q);
	}
	return QUEUE_OK;
}

/* ---- wakeups between processes ---- */

/* The path of the wakeup file into buf. */
static void
wake_path(const struct queue *q, char *buf, size_t len)
{
	snprintf(buf, len, "%s/wakeup", q->dir);
}

/* Opens the wakeup file for writing: never through a link, never
 * blocked by a FIFO. */
static int
wake_open(const char *path)
{
	return open(path,
	    O_WRONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC,
	    0600);
}

void
queue_notify(struct queue *q)
{
	char path[4096];
	int fd;

	wake_path(q, path, sizeof(path));
	fd = wake_open(path);
	if (fd >= 0) {
		/* closing a file opened for writing is IN_CLOSE_WRITE */
		close(fd);
	}
}

int
queue_wakeup_fd(struct queue *q)
{
	char path[4096];
	struct stat st;
	int fd;

	if (q->wake_fd >= 0)
		return q->wake_fd;
	wake_path(q, path, sizeof(path));
	if (lstat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
		/* not ours to follow: the queue's owner replaces it */
		log_warn(
		    "queue", "%s is not a regular file: replacing it", path);
		(void)unlink(path);
	}
	fd = wake_open(path);
	if (fd >= 0)
		close(fd);
	q->wake_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (q->wake_fd < 0)
		return -1;
	if (inotify_add_watch(q->wake_fd, path,
		IN_CLOSE_WRITE | IN_ATTRIB | IN_DONT_FOLLOW) < 0) {
		log_warn("queue", "inotify %s: %s", path, strerror(errno));
		close(q->wake_fd);
		q->wake_fd = -1;
	}
	return q->wake_fd;
}

void
queue_wakeup_drain(struct queue *q)
{
	char buf[4096];

	if (q->wake_fd < 0)
		return;
	while (read(q->wake_fd, buf, sizeof(buf)) > 0)
		;
}
