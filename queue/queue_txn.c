/*
 * queue_txn.c - transactions: the shared read txn, and the write txn with
 * its sticky first error, the count deltas it sums and applies at
 * commit, and the log lines it writes once committed.
 *
 * Public: queue_txn_begin(), queue_txn_commit(), queue_txn_abort(); (to
 * queue/, queue_int.h) queue_rtxn_begin(), queue_rtxn_done(), queue_rec_get(),
 * queue_txn_fail(), queue_txn_log(), queue_txn_log_as(),
 * queue_count_add(), queue_count_add_rcpt(), queue_count_add_env(),
 * queue_count_add_msg().
 *
 * Invariants: one write txn at a time per process (q->wtxn); its first
 * error sticks (t->err): later calls return it and the commit aborts, so
 * a caller checks once.  Counts change only through deltas summed in the
 * txn (one per key) and applied by its commit, so the counts db equals
 * what a walk of the queue would count.  Log lines are written only
 * after the commit succeeded, in the order queued.  MDB_NOSYNC is never
 * set: a commit is durable when it returns.  The read txn is reset when
 * a call is done with it, so no reader pins old pages across calls.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue_int.h"

/* ---- the read txn ---- */

MDB_txn *
queue_rtxn_begin(struct queue *q)
{
	int rc;

	if (q->rtxn != NULL) {
		rc = mdb_txn_renew(q->rtxn);
		if (rc == 0)
			return q->rtxn;
		mdb_txn_abort(q->rtxn);
		q->rtxn = NULL;
	}
	rc = mdb_txn_begin(q->env, NULL, MDB_RDONLY, &q->rtxn);
	if (rc == MDB_MAP_RESIZED) {
		mdb_env_set_mapsize(q->env, 0);
		rc = mdb_txn_begin(q->env, NULL, MDB_RDONLY, &q->rtxn);
	}
	if (rc != 0) {
		log_err("qmgr", "read transaction: %s", mdb_strerror(rc));
		q->rtxn = NULL;
		return NULL;
	}
	return q->rtxn;
}

void
queue_rtxn_done(struct queue *q)
{
	if (q->rtxn != NULL)
		mdb_txn_reset(q->rtxn);
	queue_rss_trim(q);
}

/* ---- lookups ---- */

int
queue_rec_get(
    struct queue *q, MDB_txn *txn, enum qdbi db, uint64_t id, MDB_val *val)
{
	uint8_t k[8];
	MDB_val key = { 8, k };

	qkey_id(k, id);
	return mdb_get(txn, q->dbi[db], &key, val);
}

/* ---- the write txn ---- */

struct queue_txn *
queue_txn_begin(struct queue *q)
{
	struct queue_txn *t;
	MDB_txn *txn;
	int rc;

	if (q->readonly || q->wtxn != NULL) {
		log_err("qmgr", "write transaction: %s",
		    q->readonly ? "queue opened read-only" : "already open");
		return NULL;
	}
	rc = mdb_txn_begin(q->env, NULL, 0, &txn);
	if (rc == MDB_MAP_RESIZED) {
		mdb_env_set_mapsize(q->env, 0);
		rc = mdb_txn_begin(q->env, NULL, 0, &txn);
	}
	if (rc != 0) {
		log_err("qmgr", "write transaction: %s", mdb_strerror(rc));
		return NULL;
	}
	t = xcalloc(1, sizeof(*t));
	t->q = q;
	t->txn = txn;
	t->now = rq_now();
	q->wtxn = t;
	return t;
}

enum queue_result
queue_txn_fail(struct queue_txn *t, int rc, const char *what)
{
	enum queue_result r;

	if (rc == 0)
		return QUEUE_OK;
	r = rc == MDB_MAP_FULL	  ? QUEUE_MAPFULL
	    : rc == MDB_NOTFOUND  ? QUEUE_NOTFOUND
	    : rc == MDB_CORRUPTED ? QUEUE_CORRUPT
				  : QUEUE_ERR;
	if (r == QUEUE_NOTFOUND)
		return r;
	if (t->err == QUEUE_OK) {
		t->err = r;
		if (r != QUEUE_MAPFULL)
			log_err("qmgr", "%s: %s", what, mdb_strerror(rc));
	}
	return r;
}

/* ---- count deltas ---- */

static uint64_t
delta_hash(const uint8_t *k, size_t n)
{
	uint64_t h = 1469598103934665603ull;

	for (size_t i = 0; i < n; i++)
		h = (h ^ k[i]) * 1099511628211ull;
	return h;
}

void
queue_count_add(
    struct queue_txn *t, const void *key, size_t klen, int64_t delta)
{
	size_t i;

	if (klen > sizeof(t->deltas[0].key))
		klen = sizeof(t->deltas[0].key);
	if ((t->ndelta + 1) * 2 > t->dcap) {
		struct qdelta *old = t->deltas;
		size_t ocap = t->dcap;

		t->dcap = ocap ? ocap * 2 : 64;
		t->deltas = xcalloc(t->dcap, sizeof(*t->deltas));
		t->ndelta = 0;
		for (size_t j = 0; j < ocap; j++)
			if (old[j].used)
				queue_count_add(
				    t, old[j].key, old[j].klen, old[j].delta);
		free(old);
	}
	i = delta_hash(key, klen) & (t->dcap - 1);
	while (t->deltas[i].used) {
		if (t->deltas[i].klen == klen &&
		    memcmp(t->deltas[i].key, key, klen) == 0) {
			t->deltas[i].delta += delta;
			return;
		}
		i = (i + 1) & (t->dcap - 1);
	}
	t->deltas[i].used = true;
	t->deltas[i].klen = (uint16_t)klen;
	memcpy(t->deltas[i].key, key, klen);
	t->deltas[i].delta = delta;
	t->ndelta++;
}

void
queue_count_add_rcpt(struct queue_txn *t, const struct queue_msg *m,
    const struct queue_rcpt *rc, int sign)
{
	uint8_t k[QKEY_DOMAIN_MAX];

	k[0] = QCOUNT_RCPTS;
	k[1] = (uint8_t)m->cls;
	k[2] = (uint8_t)rc->state;
	queue_count_add(t, k, 3, sign);
	if (rc->state != RCPT_PENDING && rc->state != RCPT_DEFERRED)
		return;
	queue_count_add(t, k, qkey_domain(k, m->arrival, rc->addr), sign);
}

void
queue_count_add_env(struct queue_txn *t, const struct queue_msg *m, int sign)
{
	uint8_t k[2];

	k[0] = QCOUNT_MSGS;
	k[1] = (uint8_t)m->cls;
	queue_count_add(t, k, 2, sign);
	k[0] = QCOUNT_BYTES;
	queue_count_add(t, k, 2, sign * (int64_t)m->size);
	if (m->flags & QMSG_HELD)
		queue_count_add(t, (uint8_t[]){ QCOUNT_HELD }, 1, sign);
	queue_stats_env(t, m, sign);
}

void
queue_count_add_msg(struct queue_txn *t, const struct queue_msg *m, int sign)
{
	queue_count_add_env(t, m, sign);
	for (size_t i = 0; i < m->nrcpt; i++)
		queue_count_add_rcpt(t, m, &m->rcpts[i], sign);
}

/* Applies the summed count deltas to the counts db. */
static void
counts_apply(struct queue_txn *t)
{
	MDB_dbi dbi = t->q->dbi[QDB_COUNTS];

	for (size_t i = 0; i < t->dcap && t->err == QUEUE_OK; i++) {
		struct qdelta *d = &t->deltas[i];
		MDB_val k = { d->klen, d->key }, v;
		int64_t cur = 0;
		uint8_t b[8];
		int rc;

		if (!d->used || d->delta == 0)
			continue;
		if (mdb_get(t->txn, dbi, &k, &v) == 0 && v.mv_size == 8)
			cur = (int64_t)qbe64_get(v.mv_data);
		cur += d->delta;
		if (cur <= 0) {
			rc = mdb_del(t->txn, dbi, &k, NULL);
			if (rc == MDB_NOTFOUND)
				rc = 0;
		} else {
			qbe64_put(b, (uint64_t)cur);
			v.mv_size = 8;
			v.mv_data = b;
			rc = mdb_put(t->txn, dbi, &k, &v, 0);
		}
		queue_txn_fail(t, rc, "counts");
	}
}

/* ---- log lines after the commit ---- */

/* Keeps a line for after the commit: SUBSYS, a NUL, the text. */
static void
txn_vlog(struct queue_txn *t, const char *subsys, const char *fmt, va_list ap)
{
	char buf[1024];
	size_t n = strlen(subsys) + 1, total;

	if (vsnprintf(buf + n, sizeof(buf) - n, fmt, ap) < 0)
		return;
	memcpy(buf, subsys, n);
	total = n + strlen(buf + n) + 1;
	if (t->nlog == t->logcap) {
		t->logcap = t->logcap ? t->logcap * 2 : 64;
		t->logs = xrealloc(t->logs, t->logcap * sizeof(*t->logs));
	}
	t->logs[t->nlog++] = memcpy(xmalloc(total), buf, total);
}

void
queue_txn_log(struct queue_txn *t, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	txn_vlog(t, "qmgr", fmt, ap);
	va_end(ap);
}

void
queue_txn_log_as(struct queue_txn *t, const char *subsys, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	txn_vlog(t, subsys, fmt, ap);
	va_end(ap);
}

/* ---- commit and abort ---- */

/* Frees a txn's memory (not the LMDB txn). */
static void
txn_free(struct queue_txn *t)
{
	for (size_t i = 0; i < t->nlog; i++)
		free(t->logs[i]);
	free(t->logs);
	free(t->deltas);
	t->q->wtxn = NULL;
	free(t);
}

enum queue_result
queue_txn_commit(struct queue_txn *t)
{
	enum queue_result r;
	int rc;

	if (t->err == QUEUE_OK && t->nextid_dirty) {
		MDB_val k = { 6, (void *)"nextid" }, v;
		uint8_t b[8];

		qbe64_put(b, t->nextid);
		v.mv_size = 8;
		v.mv_data = b;
		queue_txn_fail(t,
		    mdb_put(t->txn, t->q->dbi[QDB_META], &k, &v, 0), "nextid");
	}
	if (t->err == QUEUE_OK)
		counts_apply(t);
	if (t->err != QUEUE_OK) {
		mdb_txn_abort(t->txn);
		r = t->err;
		txn_free(t);
		return r;
	}
	rc = mdb_txn_commit(t->txn);
	if (rc != 0) {
		r = rc == MDB_MAP_FULL ? QUEUE_MAPFULL : QUEUE_ERR;
		if (r != QUEUE_MAPFULL)
			log_err("qmgr", "commit: %s", mdb_strerror(rc));
		txn_free(t);
		return r;
	}
	log_hold();
	for (size_t i = 0; i < t->nlog; i++)
		log_info(t->logs[i], "%s", t->logs[i] + strlen(t->logs[i]) + 1);
	log_release();
	queue_rss_trim(t->q);
	txn_free(t);
	return QUEUE_OK;
}

void
queue_txn_abort(struct queue_txn *t)
{
	if (t == NULL)
		return;
	mdb_txn_abort(t->txn);
	txn_free(t);
}
