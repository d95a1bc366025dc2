/*
 * queue_expiry.c - the expiry index: when a message's delay warning and
 * its return are due, what is due now, and clearing an entry once its
 * notice is queued.
 *
 * Public: queue_expiry_next(), queue_expiry_due_list(), queue_expiry_clear();
 * (to queue/, queue_int.h) queue_expiry_index(), queue_expiry_times_set().
 *
 * Invariants: a message has an expiry entry for warn_at (return_at)
 * exactly when that is non-zero, it is not held, and the warning
 * (return) was not sent; the entries of a message set aside as corrupt
 * are dropped when next met.
 */
#include <stdlib.h>
#include <string.h>

#include "queue_int.h"

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

void
queue_expiry_times_set(const struct queue *q, struct queue_msg *m)
{
	const struct cfg_scope *sc = cfg_scope(q->cfg, NULL);
	int64_t w = cfg_time(sc, CFG_T_QUEUEWARN, m->cls, false);
	int64_t r = cfg_time(sc, CFG_T_QUEUERETURN, m->cls, false);

	m->warn_at = w > 0 ? m->arrival + w : 0;
	m->return_at = m->arrival + (r > 0 ? r : 0);
}

int64_t
queue_expiry_next(struct queue *q)
{
	MDB_txn *txn = queue_rtxn_begin(q);
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
queue_expiry_due_list(
    struct queue *q, int64_t now, struct queue_expiry_ev *evs, size_t max)
{
	MDB_txn *txn = queue_rtxn_begin(q);
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
	queue_msg_put(t, m);
	queue_env_free(m);
	return t->err;
}
