/*
 * queue_corrupt.c - records that fail validation: what there is of the
 * message is moved, keys and bytes, into the corrupt db with a log line,
 * never just deleted.
 *
 * Public (to queue/, queue_int.h): queue_msg_quarantine().
 *
 * Invariants: a key in the corrupt db is the db name, a NUL and the
 * original key; the counts of a message set aside are not corrected (its
 * envelope may be what was unreadable); its stale schedule and expiry
 * entries are dropped when next met.
 */
#include <stdlib.h>
#include <string.h>

#include "queue_int.h"

/* Moves every record of DB whose KLEN-byte key starts with id K(8) to
 * the corrupt db. */
static void
quarantine_range(
    struct queue_txn *t, enum qdbi db, const uint8_t k[8], size_t klen)
{
	size_t nl = strlen(queue_dbnames[db]);
	MDB_cursor *c;
	MDB_val key = { 8, (void *)(uintptr_t)k }, val;
	int rc;

	if (mdb_cursor_open(t->txn, t->q->dbi[db], &c) != 0)
		return;
	rc = mdb_cursor_get(c, &key, &val, MDB_SET_RANGE);
	while (
	    rc == 0 && key.mv_size == klen && memcmp(key.mv_data, k, 8) == 0) {
		uint8_t ck[32];
		MDB_val ckey = { nl + 1 + klen, ck };
		/* copy: the put below may move the source page */
		struct qbuf b = { NULL, 0, 0 };

		memcpy(ck, queue_dbnames[db], nl + 1);
		memcpy(ck + nl + 1, key.mv_data, klen);
		qbuf_put(&b, val.mv_data, val.mv_size);
		val.mv_data = b.p;
		mdb_put(t->txn, t->q->dbi[QDB_CORRUPT], &ckey, &val, 0);
		free(b.p);
		mdb_cursor_del(c, 0);
		rc = mdb_cursor_get(c, &key, &val, MDB_GET_CURRENT);
	}
	mdb_cursor_close(c);
}

void
queue_msg_quarantine(struct queue_txn *t, uint64_t id, const char *why)
{
	static const enum qdbi dbs[] = { QDB_MSG, QDB_BODY, QDB_LEASE };
	char idstr[17];
	uint8_t k[8];
	MDB_val key, val;

	queue_id_format(id, idstr);
	log_warn("qmgr",
	    "%s: invalid record (%s): set aside in the corrupt "
	    "db",
	    idstr, why);
	qkey_id(k, id);
	for (size_t i = 0; i < sizeof(dbs) / sizeof(dbs[0]); i++) {
		uint8_t ck[32];
		size_t nl = strlen(queue_dbnames[dbs[i]]);

		key.mv_size = 8;
		key.mv_data = k;
		if (mdb_get(t->txn, t->q->dbi[dbs[i]], &key, &val) != 0)
			continue;
		memcpy(ck, queue_dbnames[dbs[i]], nl + 1);
		memcpy(ck + nl + 1, k, 8);
		{
			MDB_val ckey = { nl + 9, ck };
			/* copy: the put below may move the source page */
			struct qbuf b = { NULL, 0, 0 };

			qbuf_put(&b, val.mv_data, val.mv_size);
			val.mv_data = b.p;
			mdb_put(t->txn, t->q->dbi[QDB_CORRUPT], &ckey, &val, 0);
			free(b.p);
		}
		mdb_del(t->txn, t->q->dbi[dbs[i]], &key, NULL);
	}
	quarantine_range(t, QDB_RCPT, k, 12);
	quarantine_range(t, QDB_HIST, k, 16);
}
