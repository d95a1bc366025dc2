/*
 * queue_rcpt.c - recipients and their history: the walk over a
 * message's recipient records, a delivery result, recipient flags, and
 * the attempts each result adds to the history.
 *
 * Public: queue_rcpt_update(), queue_rcpt_flags_set(),
 * queue_attempts_load(), queue_attempts_free(); (to queue/, queue_int.h)
 * qwalk_open(), qwalk_next(), qwalk_rewrite(), qwalk_close(),
 * queue_rcpt_put(), queue_attempt_put(), queue_attempts_remove().
 *
 * Invariants: recipient indexes run 0..nrcpt-1 without gaps, and a walk
 * that finds otherwise says so (the caller sets the message aside).  A
 * result costs O(1) in the message's size: the envelope is only read
 * (for the counts), the one recipient record rewritten.  Each
 * queue_rcpt_update() adds one hist record (attempt = the new attempts
 * count) and drops the one QUEUE_HIST_MAX older, in the same txn.
 */
#include <stdlib.h>
#include <string.h>

#include "queue_int.h"

/* ---- the walk over a message's recipients ---- */

void
qwalk_open(
    struct qwalk *w, MDB_txn *txn, MDB_dbi dbi, uint64_t id, uint32_t from)
{
	memset(w, 0, sizeof(*w));
	w->id = id;
	w->idx = from;
	w->first = true;
	if (mdb_cursor_open(txn, dbi, &w->c) != 0) {
		w->c = NULL;
		w->bad = w->done = true;
	}
}

bool
qwalk_next(struct qwalk *w)
{
	int rc;

	if (w->done)
		return false;
	if (w->first) {
		qkey_rcpt(w->k, w->id, w->idx);
		w->key.mv_size = 12;
		w->key.mv_data = w->k;
		rc = mdb_cursor_get(w->c, &w->key, &w->val, MDB_SET_RANGE);
		w->first = false;
	} else {
		rc = mdb_cursor_get(w->c, &w->key, &w->val, MDB_NEXT);
		w->idx++;
	}
	if (rc != 0 || w->key.mv_size != 12 ||
	    qbe64_get(w->key.mv_data) != w->id) {
		w->bad = rc != 0 && rc != MDB_NOTFOUND;
		w->done = true;
		return false;
	}
	if (qbe32_get((const uint8_t *)w->key.mv_data + 8) != w->idx) {
		w->bad = w->done = true;
		return false;
	}
	/* copied: a write through the cursor may move the page */
	memcpy(w->k, w->key.mv_data, 12);
	w->key.mv_data = w->k;
	w->n++;
	return true;
}

int
qwalk_rewrite(struct qwalk *w, unsigned flags, int64_t next_attempt)
{
	static __thread struct qbuf b;
	MDB_val v;

	b.n = 0;
	qbuf_put(&b, w->val.mv_data, w->val.mv_size);
	b.p[QREC_RCPT_FLAGS] = (uint8_t)flags;
	qbe64_put(b.p + QREC_RCPT_NEXT, (uint64_t)next_attempt);
	v.mv_size = b.n;
	v.mv_data = b.p;
	return mdb_cursor_put(w->c, &w->key, &v, MDB_CURRENT);
}

void
qwalk_close(struct qwalk *w)
{
	if (w->c != NULL)
		mdb_cursor_close(w->c);
	w->c = NULL;
}

/* ---- recipient records ---- */

enum queue_result
queue_rcpt_put(struct queue_txn *t, uint64_t id, const struct queue_rcpt *rc)
{
	static __thread struct qbuf b;
	uint8_t k[12];
	MDB_val key = { 12, k }, val;

	if (t->err != QUEUE_OK)
		return t->err;
	qkey_rcpt(k, id, rc->idx);
	qrec_rcpt_encode(&b, rc);
	val.mv_size = b.n;
	val.mv_data = b.p;
	return queue_txn_fail(
	    t, mdb_put(t->txn, t->q->dbi[QDB_RCPT], &key, &val, 0), "put rcpt");
}

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
		queue_msg_quarantine(t, id, "recipient");
		return QUEUE_CORRUPT;
	}
	rc->idx = idx;
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
	r = queue_env_view(t, id, &m);
	if (r != QUEUE_OK)
		return r;
	r = rcpt_get(t, id, idx, &rc, &mem);
	if (r != QUEUE_OK) {
		free(mem);
		return r;
	}
	queue_count_add_rcpt(t, &m, &rc, -1);
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
	queue_count_add_rcpt(t, &m, &rc, 1);
	queue_rcpt_put(t, id, &rc);
	queue_attempt_put(t, id, idx, &a);
	free(mem);
	return t->err;
}

enum queue_result
queue_rcpt_flags_set(struct queue_txn *t, uint64_t id, uint32_t idx,
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
		r = queue_rcpt_put(t, id, &rc);
	}
	free(mem);
	return r;
}

/* ---- history ---- */

enum queue_result
queue_attempt_put(struct queue_txn *t, uint64_t id, uint32_t idx,
    const struct queue_attempt *a)
{
	static __thread struct qbuf b;
	uint8_t k[16];
	MDB_val key = { 16, k }, val;
	int rc;

	if (t->err != QUEUE_OK)
		return t->err;
	qkey_hist(k, id, idx, a->attempt);
	qrec_hist_encode(&b, a);
	val.mv_size = b.n;
	val.mv_data = b.p;
	if (queue_txn_fail(t,
		mdb_put(t->txn, t->q->dbi[QDB_HIST], &key, &val, 0),
		"put hist") != QUEUE_OK)
		return t->err;
	if (a->attempt <= QUEUE_HIST_MAX)
		return QUEUE_OK;
	/* one in, one out: attempt - QUEUE_HIST_MAX leaves (if it was
	 * ever written: a queue from before `hist` has none) */
	qkey_hist(k, id, idx, a->attempt - QUEUE_HIST_MAX);
	rc = mdb_del(t->txn, t->q->dbi[QDB_HIST], &key, NULL);
	if (rc != MDB_NOTFOUND)
		queue_txn_fail(t, rc, "trim hist");
	return t->err;
}

enum queue_result
queue_attempts_load(struct queue *q, uint64_t id, uint32_t idx,
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
	if ((txn = queue_rtxn_begin(q)) == NULL)
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
			log_warn("qmgr",
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
queue_attempts_free(struct queue_attempt *v, size_t n)
{
	for (size_t i = 0; v != NULL && i < n; i++)
		free(v[i].reply);
	free(v);
}

/* Deletes every attempt record of message ID (all its recipients). */
void
queue_attempts_remove(struct queue_txn *t, uint64_t id)
{
	uint8_t k[8];
	MDB_val key = { 8, k }, val;
	MDB_cursor *c;
	int rc;

	if (t->err != QUEUE_OK)
		return;
	rc = mdb_cursor_open(t->txn, t->q->dbi[QDB_HIST], &c);
	if (queue_txn_fail(t, rc, "hist cursor") != QUEUE_OK)
		return;
	qkey_id(k, id);
	rc = mdb_cursor_get(c, &key, &val, MDB_SET_RANGE);
	while (rc == 0 && key.mv_size == 16 && qbe64_get(key.mv_data) == id) {
		rc = mdb_cursor_del(c, 0);
		if (queue_txn_fail(t, rc, "delete hist") != QUEUE_OK)
			break;
		/* after a delete the cursor is on the next record, and
		 * MDB_NEXT returns that one (LMDB's C_DEL) */
		rc = mdb_cursor_get(c, &key, &val, MDB_NEXT);
	}
	if (rc != 0 && rc != MDB_NOTFOUND)
		queue_txn_fail(t, rc, "hist cursor");
	mdb_cursor_close(c);
}
