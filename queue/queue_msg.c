/*
 * queue_msg.c - whole messages: loading them (with every recipient, with
 * those a filter picks, with a range of leased ones, the envelope alone,
 * the body), storing and inserting them, their flags, and removing them.
 *
 * Public: queue_msg_load(), queue_msg_load_leased(), queue_msg_free(),
 * queue_body_load(), queue_txn_load(), queue_txn_load_some(),
 * queue_txn_load_rcpts(), queue_txn_body_load(), queue_msg_insert(),
 * queue_msg_flags_set(), queue_msg_remove(); (to queue/, queue_int.h)
 * queue_msg_dup(), queue_msg_load_in(), queue_env_view(), queue_env_get(),
 * queue_env_free(), queue_msg_put(), queue_body_put(),
 * queue_msg_store(), queue_msg_store_rec().
 *
 * Invariants: a message's msg record, recipient records, attempt
 * history, body, schedule entry, expiry entries and counts are written
 * or removed together in one write txn; a message leaves the queue
 * (`removed` logged) in the txn where its last recipient is done, or
 * when deleted.  A record that fails validation on a load is set aside
 * (queue_corrupt.c) in a write txn, or skipped with a log line when
 * read-only.  A message returned through an out pointer is the caller's.
 */
#include <stdlib.h>
#include <string.h>

#include "queue_int.h"

/* ---- copies ---- */

struct queue_msg *
queue_msg_dup(const struct queue_msg *v)
{
	struct queue_msg *m = xcalloc(1, sizeof(*m));

	*m = *v;
	m->sender = xstrdup(v->sender ? v->sender : "");
	m->envid = v->envid ? xstrdup(v->envid) : NULL;
	queue_id_format(m->id, m->idstr);
	m->rcpts = xcalloc(v->nrcpt ? v->nrcpt : 1, sizeof(*m->rcpts));
	for (size_t i = 0; i < v->nrcpt && v->rcpts != NULL; i++) {
		m->rcpts[i] = v->rcpts[i];
		m->rcpts[i].addr = xstrdup(v->rcpts[i].addr);
		m->rcpts[i].orcpt = v->rcpts[i].orcpt
		    ? xstrdup(v->rcpts[i].orcpt)
		    : NULL;
		m->rcpts[i].reply = v->rcpts[i].reply
		    ? xstrdup(v->rcpts[i].reply)
		    : NULL;
	}
	return m;
}

void
queue_msg_free(struct queue_msg *m)
{
	if (m == NULL)
		return;
	for (size_t i = 0; i < m->nrcpt && m->rcpts != NULL; i++) {
		free(m->rcpts[i].addr);
		free(m->rcpts[i].orcpt);
		free(m->rcpts[i].reply);
	}
	free(m->rcpts);
	free(m->sender);
	free(m->envid);
	free(m);
}

/* ---- loading ---- */

enum queue_result
queue_msg_load_in(struct queue *q, MDB_txn *txn, struct queue_txn *t,
    uint64_t id, queue_rcpt_pick pick, void *arg, struct queue_msg **out)
{
	MDB_val val;
	struct queue_msg view;
	struct queue_rcpt *rcpts = NULL, head;
	struct qwalk w;
	const char *why = NULL;
	size_t n = 0, cap = 0;
	int rc;

	*out = NULL;
	rc = queue_rec_get(q, txn, QDB_MSG, id, &val);
	if (rc == MDB_NOTFOUND)
		return QUEUE_NOTFOUND;
	if (rc != 0) {
		log_err("qmgr", "load: %s", mdb_strerror(rc));
		return QUEUE_ERR;
	}
	if (!qrec_msg_decode(val.mv_data, val.mv_size, &view)) {
		why = "envelope";
		goto bad;
	}
	view.id = id;
	queue_id_format(id, view.idstr);
	if (pick == NULL) {
		cap = view.nrcpt;
		rcpts = xcalloc(cap, sizeof(*rcpts));
	}
	qwalk_open(&w, txn, q->dbi[QDB_RCPT], id, 0);
	while (why == NULL && qwalk_next(&w)) {
		if (w.n > view.nrcpt) {
			why = "recipient count";
			break;
		}
		if (pick != NULL) {
			if (!qrec_rcpt_peek(
				w.val.mv_data, w.val.mv_size, &head)) {
				why = "recipient";
				break;
			}
			head.idx = w.idx;
			if (!pick(&view, &head, arg))
				continue;
			if (n == cap) {
				cap = cap ? cap * 2 : 16;
				rcpts = xrealloc(rcpts, cap * sizeof(*rcpts));
			}
		}
		if (!qrec_rcpt_decode(
			w.val.mv_data, w.val.mv_size, &rcpts[n])) {
			why = "recipient";
			break;
		}
		rcpts[n++].idx = w.idx;
	}
	if (why == NULL && w.bad)
		why = "recipient";
	if (why == NULL && w.n != view.nrcpt)
		why = "recipient count";
	qwalk_close(&w);
	if (why != NULL)
		goto bad;
	view.rcpts = rcpts;
	view.nrcpt = n;
	*out = queue_msg_dup(&view);
	free(rcpts);
	return QUEUE_OK;
bad:
	free(rcpts);
	if (t != NULL) {
		queue_msg_quarantine(t, id, why);
	} else {
		char idstr[17];

		queue_id_format(id, idstr);
		log_warn("qmgr", "%s: invalid %s record: skipped", idstr, why);
	}
	return QUEUE_CORRUPT;
}

enum queue_result
queue_msg_load(struct queue *q, uint64_t id, struct queue_msg **out)
{
	MDB_txn *txn = queue_rtxn_begin(q);
	enum queue_result r;

	*out = NULL;
	if (txn == NULL)
		return QUEUE_ERR;
	r = queue_msg_load_in(q, txn, NULL, id, NULL, NULL, out);
	queue_rtxn_done(q);
	return r;
}

enum queue_result
queue_msg_load_leased(struct queue *q, uint64_t id, uint32_t lo, uint32_t hi,
    struct queue_msg **out, size_t *total)
{
	MDB_txn *txn = queue_rtxn_begin(q);
	MDB_val val;
	struct queue_msg view;
	struct queue_rcpt *rcpts = NULL, head;
	struct qwalk w;
	size_t n = 0, cap = 0;
	bool bad = false;
	int rc;

	*out = NULL;
	*total = 0;
	if (txn == NULL)
		return QUEUE_ERR;
	rc = queue_rec_get(q, txn, QDB_MSG, id, &val);
	if (rc != 0) {
		queue_rtxn_done(q);
		if (rc == MDB_NOTFOUND)
			return QUEUE_NOTFOUND;
		log_err("qmgr", "load: %s", mdb_strerror(rc));
		return QUEUE_ERR;
	}
	if (!qrec_msg_decode(val.mv_data, val.mv_size, &view))
		bad = true;
	view.id = id;
	if (!bad && hi > view.nrcpt)
		hi = (uint32_t)view.nrcpt;
	qwalk_open(&w, txn, q->dbi[QDB_RCPT], id, lo);
	while (!bad && lo < hi && qwalk_next(&w)) {
		if (!qrec_rcpt_peek(w.val.mv_data, w.val.mv_size, &head)) {
			bad = true;
			break;
		}
		if (head.flags & QRCPT_LEASED) {
			if (n == cap) {
				cap = cap ? cap * 2 : 16;
				rcpts = xrealloc(rcpts, cap * sizeof(*rcpts));
			}
			if (!qrec_rcpt_decode(
				w.val.mv_data, w.val.mv_size, &rcpts[n])) {
				bad = true;
				break;
			}
			rcpts[n++].idx = w.idx;
		}
		if (w.idx + 1 >= hi)
			break;
	}
	if (!bad && lo < hi && (w.bad || w.n != hi - lo))
		bad = true;
	qwalk_close(&w);
	if (bad) {
		char idstr[17];

		queue_rtxn_done(q);
		free(rcpts);
		queue_id_format(id, idstr);
		log_warn("qmgr", "%s: invalid record: skipped", idstr);
		return QUEUE_CORRUPT;
	}
	*total = view.nrcpt;
	view.rcpts = rcpts;
	view.nrcpt = n;
	*out = queue_msg_dup(&view);
	free(rcpts);
	queue_rtxn_done(q);
	return QUEUE_OK;
}

enum queue_result
queue_txn_load(struct queue_txn *t, uint64_t id, struct queue_msg **out)
{
	if (t->err != QUEUE_OK) {
		*out = NULL;
		return t->err;
	}
	return queue_msg_load_in(t->q, t->txn, t, id, NULL, NULL, out);
}

enum queue_result
queue_txn_load_some(struct queue_txn *t, uint64_t id, queue_rcpt_pick pick,
    void *arg, struct queue_msg **out)
{
	if (t->err != QUEUE_OK) {
		*out = NULL;
		return t->err;
	}
	return queue_msg_load_in(t->q, t->txn, t, id, pick, arg, out);
}

enum queue_result
queue_txn_load_rcpts(struct queue_txn *t, uint64_t id, const uint32_t *idx,
    size_t n, queue_rcpt_pick pick, void *arg, struct queue_msg **out)
{
	uint8_t k[12];
	struct queue_msg view;
	struct queue_rcpt *rcpts, head;
	size_t got = 0;
	enum queue_result r;
	int rc;

	*out = NULL;
	if ((r = queue_env_view(t, id, &view)) != QUEUE_OK)
		return r;
	rcpts = xcalloc(n ? n : 1, sizeof(*rcpts));
	for (size_t i = 0; i < n; i++) {
		MDB_val rk = { 12, k }, rv;

		if (idx[i] >= view.nrcpt)
			continue;
		qkey_rcpt(k, id, idx[i]);
		rc = mdb_get(t->txn, t->q->dbi[QDB_RCPT], &rk, &rv);
		if (rc == MDB_NOTFOUND)
			continue;
		if (rc != 0) {
			free(rcpts);
			return queue_txn_fail(t, rc, "rcpt");
		}
		if (!qrec_rcpt_peek(rv.mv_data, rv.mv_size, &head) ||
		    !qrec_rcpt_decode(rv.mv_data, rv.mv_size, &rcpts[got])) {
			free(rcpts);
			queue_msg_quarantine(t, id, "recipient");
			return QUEUE_CORRUPT;
		}
		head.idx = idx[i];
		if (pick != NULL && !pick(&view, &head, arg))
			continue;
		rcpts[got++].idx = idx[i];
	}
	view.rcpts = rcpts;
	view.nrcpt = got;
	*out = queue_msg_dup(&view);
	free(rcpts);
	return QUEUE_OK;
}

enum queue_result
queue_env_view(struct queue_txn *t, uint64_t id, struct queue_msg *view)
{
	MDB_val val;
	int rc;

	if (t->err != QUEUE_OK)
		return t->err;
	rc = queue_rec_get(t->q, t->txn, QDB_MSG, id, &val);
	if (rc != 0)
		return rc == MDB_NOTFOUND ? QUEUE_NOTFOUND
					  : queue_txn_fail(t, rc, "msg");
	if (!qrec_msg_decode(val.mv_data, val.mv_size, view)) {
		queue_msg_quarantine(t, id, "envelope");
		return QUEUE_CORRUPT;
	}
	view->id = id;
	queue_id_format(id, view->idstr);
	return QUEUE_OK;
}

enum queue_result
queue_env_get(struct queue_txn *t, uint64_t id, struct queue_msg **out)
{
	struct queue_msg view, *m;
	enum queue_result r;

	*out = NULL;
	if ((r = queue_env_view(t, id, &view)) != QUEUE_OK)
		return r;
	/* the envelope alone: no recipient array, whatever nrcpt says */
	m = xmalloc(sizeof(*m));
	*m = view;
	m->sender = xstrdup(view.sender ? view.sender : "");
	m->envid = view.envid ? xstrdup(view.envid) : NULL;
	m->rcpts = NULL;
	*out = m;
	return QUEUE_OK;
}

void
queue_env_free(struct queue_msg *m)
{
	if (m == NULL)
		return;
	free(m->sender);
	free(m->envid);
	free(m);
}

enum queue_result
queue_body_load(struct queue *q, uint64_t id, char **buf, size_t *len)
{
	MDB_txn *txn = queue_rtxn_begin(q);
	MDB_val val;
	enum queue_result r;
	int rc;

	*buf = NULL;
	*len = 0;
	if (txn == NULL)
		return QUEUE_ERR;
	rc = queue_rec_get(q, txn, QDB_BODY, id, &val);
	if (rc != 0)
		r = rc == MDB_NOTFOUND ? QUEUE_NOTFOUND : QUEUE_ERR;
	else
		r = qrec_body_decode(id, val.mv_data, val.mv_size, buf, len);
	queue_rtxn_done(q);
	return r;
}

enum queue_result
queue_txn_body_load(struct queue_txn *t, uint64_t id, char **buf, size_t *len)
{
	MDB_val val;
	int rc;

	*buf = NULL;
	*len = 0;
	if (t->err != QUEUE_OK)
		return t->err;
	rc = queue_rec_get(t->q, t->txn, QDB_BODY, id, &val);
	if (rc != 0)
		return rc == MDB_NOTFOUND ? QUEUE_NOTFOUND : QUEUE_ERR;
	return qrec_body_decode(id, val.mv_data, val.mv_size, buf, len);
}

/* ---- storing ---- */

enum queue_result
queue_msg_put(struct queue_txn *t, const struct queue_msg *m)
{
	static __thread struct qbuf b;
	uint8_t k[8];
	MDB_val key = { 8, k }, val;

	if (t->err != QUEUE_OK)
		return t->err;
	qkey_id(k, m->id);
	qrec_msg_encode(&b, m);
	val.mv_size = b.n;
	val.mv_data = b.p;
	return queue_txn_fail(
	    t, mdb_put(t->txn, t->q->dbi[QDB_MSG], &key, &val, 0), "put msg");
}

enum queue_result
queue_body_put(struct queue_txn *t, uint64_t id, const void *rec, size_t n)
{
	uint8_t k[8];
	MDB_val key = { 8, k }, val = { n, (void *)(uintptr_t)rec };

	if (t->err != QUEUE_OK)
		return t->err;
	qkey_id(k, id);
	return queue_txn_fail(
	    t, mdb_put(t->txn, t->q->dbi[QDB_BODY], &key, &val, 0), "put body");
}

enum queue_result
queue_msg_store_rec(struct queue_txn *t, struct queue_msg *m, const void *rec,
    size_t reclen, size_t len)
{
	int64_t due = INT64_MAX;

	if (t->err != QUEUE_OK)
		return t->err;
	if (m->id == 0)
		m->id = queue_id_next(t);
	queue_id_format(m->id, m->idstr);
	m->size = len;
	m->due = 0;
	for (size_t i = 0; i < m->nrcpt; i++) {
		struct queue_rcpt *rc = &m->rcpts[i];

		rc->idx = (uint32_t)i;
		if (rc->state == RCPT_PENDING || rc->state == RCPT_DEFERRED) {
			if (rc->next_attempt <= 0)
				rc->next_attempt = m->arrival;
			if (rc->next_attempt < due)
				due = rc->next_attempt;
		}
		queue_rcpt_put(t, m->id, rc);
	}
	queue_body_put(t, m->id, rec, reclen);
	if (!(m->flags & QMSG_HELD) && due != INT64_MAX)
		queue_sched_set(t, m, due);
	if (!(m->flags & QMSG_HELD))
		queue_expiry_index(t, m, true);
	queue_msg_put(t, m);
	queue_count_add_msg(t, m, 1);
	if (t->err == QUEUE_OK)
		queue_txn_log(t,
		    "%s: from=<%.300s>, size=%llu, nrcpt=%zu, "
		    "priority=%s",
		    m->idstr, m->sender ? m->sender : "",
		    (unsigned long long)m->size, m->nrcpt,
		    cfg_class_name(m->cls));
	return t->err;
}

enum queue_result
queue_msg_store(struct queue_txn *t, struct queue_msg *m, const char *body,
    size_t len, int level)
{
	static __thread struct qbuf b;

	if (t->err != QUEUE_OK)
		return t->err;
	qrec_body_encode(&b, body, len, level);
	return queue_msg_store_rec(t, m, b.p, b.n, len);
}

enum queue_result
queue_msg_insert(struct queue_txn *t, const struct queue_msg *env,
    const char *body, size_t len, uint64_t *id_out)
{
	struct queue_msg *m;
	enum queue_result r;

	if (t->err != QUEUE_OK)
		return t->err;
	if (env->nrcpt == 0 || (unsigned)env->cls >= CFG_NCLASS)
		return QUEUE_ERR;
	m = queue_msg_dup(env);
	m->id = 0;
	m->flags &= ~QMSG_HELD;
	if (m->arrival <= 0)
		m->arrival = t->now;
	for (size_t i = 0; i < m->nrcpt; i++) {
		m->rcpts[i].state = RCPT_PENDING;
		m->rcpts[i].flags = 0;
		m->rcpts[i].attempts = 0;
		m->rcpts[i].next_attempt = m->arrival;
		m->rcpts[i].last_attempt = 0;
	}
	queue_expiry_times_set(t->q, m);
	r = queue_msg_store(t, m, body, len, 6);
	if (r == QUEUE_OK && id_out != NULL)
		*id_out = m->id;
	queue_msg_free(m);
	return r;
}

/* ---- flags ---- */

enum queue_result
queue_msg_flags_set(
    struct queue_txn *t, uint64_t id, unsigned set, unsigned clear)
{
	struct queue_msg *m;
	enum queue_result r;

	if ((set & QMSG_HELD) && queue_msg_hold(t, id, NULL) != QUEUE_OK)
		return t->err != QUEUE_OK ? t->err : QUEUE_NOTFOUND;
	if ((clear & QMSG_HELD) && queue_msg_release(t, id, NULL) != QUEUE_OK)
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
	queue_msg_put(t, m);
	queue_env_free(m);
	return t->err;
}

/* ---- removing ---- */

/* Deletes KEY from DB, a missing key being fine. */
static void
del_key(struct queue_txn *t, enum qdbi db, const void *k, size_t n)
{
	MDB_val key = { n, (void *)k };
	int rc = mdb_del(t->txn, t->q->dbi[db], &key, NULL);

	if (rc != MDB_NOTFOUND)
		queue_txn_fail(t, rc, "delete");
}

enum queue_result
queue_msg_remove(struct queue_txn *t, uint64_t id)
{
	struct queue_msg *m;
	struct queue_rcpt rc;
	enum queue_result r;
	struct qwalk w;
	bool bad = false;
	uint8_t k[8];

	r = queue_env_get(t, id, &m);
	if (r != QUEUE_OK)
		return r;
	/* one walk takes each recipient's counts out and deletes it (only
	 * one not done counts by domain: its address is decoded) */
	qwalk_open(&w, t->txn, t->q->dbi[QDB_RCPT], id, 0);
	while (t->err == QUEUE_OK && qwalk_next(&w)) {
		if (!qrec_rcpt_peek(w.val.mv_data, w.val.mv_size, &rc) ||
		    ((rc.state == RCPT_PENDING || rc.state == RCPT_DEFERRED) &&
			!qrec_rcpt_decode(w.val.mv_data, w.val.mv_size, &rc))) {
			bad = true;
			break;
		}
		queue_count_add_rcpt(t, m, &rc, -1);
		queue_txn_fail(t, mdb_cursor_del(w.c, 0), "delete rcpt");
		/* the cursor is now on the next record: MDB_NEXT returns it
		 * (LMDB's C_DEL) */
	}
	if (w.bad || (!bad && t->err == QUEUE_OK && w.n != m->nrcpt))
		bad = true;
	qwalk_close(&w);
	if (bad && t->err == QUEUE_OK) {
		/* what is left goes aside; the counts of it stay */
		queue_msg_quarantine(t, id, "recipient");
		queue_env_free(m);
		return QUEUE_CORRUPT;
	}
	queue_attempts_remove(t, id);
	qkey_id(k, id);
	del_key(t, QDB_BODY, k, 8);
	del_key(t, QDB_LEASE, k, 8);
	queue_sched_set(t, m, 0);
	queue_expiry_index(t, m, false);
	del_key(t, QDB_MSG, k, 8);
	queue_count_add_env(t, m, -1);
	if (t->err == QUEUE_OK)
		queue_txn_log(t, "%s: removed", m->idstr);
	queue_env_free(m);
	return t->err;
}
