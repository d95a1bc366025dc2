/*
 * queue_scan.c - inspection for the commands: paged scans of every
 * message, the totals, the recipients not yet done per destination
 * domain and arrival minute, and the names of recipient states.
 *
 * Public: queue_msgs_scan(), queue_counts_get(), queue_domain_counts_get(),
 * queue_state_name().
 *
 * Invariants: a scan reads a page (SCAN_PAGE messages, 1,000 domain
 * counts) per short read txn and resumes after the last key seen, so no
 * reader pins old pages for long; an invalid record is skipped with a
 * log line.
 */
#include <stdlib.h>
#include <string.h>

#include "queue_int.h"

#define SCAN_PAGE 512

size_t
queue_msgs_scan(
    struct queue *q, uint64_t from_id, queue_msgs_scan_cb cb, void *arg)
{
	struct queue_rcpt *rcpts = NULL;
	size_t rcap = 0, total = 0;
	bool more = true;

	while (more) {
		MDB_txn *txn = queue_rtxn_begin(q);
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
			log_warn("qmgr", "%016llX: invalid record: skipped",
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
queue_counts_get(struct queue *q, struct queue_counts *cn)
{
	MDB_txn *txn = queue_rtxn_begin(q);
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
		if (k[0] == QCOUNT_DOMAIN) {
			/* skip the per-domain keys in one seek */
			static const uint8_t past = QCOUNT_DOMAIN + 1;
			MDB_val nk = { 1, (void *)&past };

			key = nk;
			rc = mdb_cursor_get(c, &key, &val, MDB_SET_RANGE);
			if (rc != 0)
				break;
			k = key.mv_data;
			if (val.mv_size != 8)
				continue;
			v = qbe64_get(val.mv_data);
		}
		if (k[0] == QCOUNT_MSGS && key.mv_size == 2 &&
		    k[1] < CFG_NCLASS)
			cn->msgs[k[1]] = v;
		else if (k[0] == QCOUNT_BYTES && key.mv_size == 2 &&
		    k[1] < CFG_NCLASS)
			cn->bytes[k[1]] = v;
		else if (k[0] == QCOUNT_RCPTS && key.mv_size == 3 &&
		    k[1] < CFG_NCLASS && k[2] < QUEUE_NSTATE)
			cn->rcpts[k[1]][k[2]] = v;
		else if (k[0] == QCOUNT_HELD && key.mv_size == 1)
			cn->held = v;
	}
	mdb_cursor_close(c);
	queue_rtxn_done(q);
	return QUEUE_OK;
}

enum queue_result
queue_domain_counts_get(struct queue *q, queue_domain_cb cb, void *arg)
{
	uint8_t from[300];
	size_t flen = 1;
	bool more = true, first = true;

	from[0] = QCOUNT_DOMAIN;
	while (more) {
		MDB_txn *txn = queue_rtxn_begin(q);
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

			if (key.mv_size < 9 || k[0] != QCOUNT_DOMAIN ||
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

const char *
queue_state_name(enum queue_rcpt_state s)
{
	static const char *const names[] = { "pending", "deferred", "delivered",
		"bounced" };

	return (unsigned)s < QUEUE_NSTATE ? names[s] : "pending";
}
