/*
 * queue_policy.c - the `policy` db: small records the runner keeps beside
 * the mail so that they survive a restart (MTA-STS policies, TLS-RPT
 * counts, issue 17), each an opaque value under a text key.
 *
 * Public: queue_policy_get(), queue_policy_put(), queue_policy_scan().
 * Invariants: keys are at most QUEUE_POLICY_KEY_MAX bytes (longer ones
 * are refused, never cut); values are written in the caller's write txn,
 * so they commit with whatever else it holds; reads use the shared read
 * txn and copy out before it is reset.
 */
#include <stdlib.h>
#include <string.h>

#include "queue_int.h"

#define QUEUE_POLICY_KEY_MAX 300

enum queue_result
queue_policy_get(struct queue *q, const char *key, char **val, size_t *len)
{
	size_t klen = strlen(key);
	MDB_val k = { klen, (void *)key }, v;
	MDB_txn *txn;
	int rc;

	*val = NULL;
	*len = 0;
	if (q->nopolicy || klen == 0 || klen > QUEUE_POLICY_KEY_MAX)
		return QUEUE_NOTFOUND;
	if ((txn = queue_rtxn_begin(q)) == NULL)
		return QUEUE_ERR;
	rc = mdb_get(txn, q->dbi[QDB_POLICY], &k, &v);
	if (rc == 0) {
		*val = xmalloc(v.mv_size + 1);
		memcpy(*val, v.mv_data, v.mv_size);
		(*val)[v.mv_size] = '\0';
		*len = v.mv_size;
	}
	queue_rtxn_done(q);
	if (rc == MDB_NOTFOUND)
		return QUEUE_NOTFOUND;
	return rc == 0 ? QUEUE_OK : QUEUE_ERR;
}

enum queue_result
queue_policy_put(
    struct queue_txn *t, const char *key, const void *val, size_t len)
{
	size_t klen = strlen(key);
	MDB_val k = { klen, (void *)key }, v = { len, (void *)val };
	int rc;

	if (t->err != QUEUE_OK)
		return t->err;
	if (klen == 0 || klen > QUEUE_POLICY_KEY_MAX)
		return QUEUE_ERR;
	if (val == NULL) {
		rc = mdb_del(t->txn, t->q->dbi[QDB_POLICY], &k, NULL);
		return rc == MDB_NOTFOUND ? QUEUE_OK
					  : queue_txn_fail(t, rc, "policy del");
	}
	rc = mdb_put(t->txn, t->q->dbi[QDB_POLICY], &k, &v, 0);
	return queue_txn_fail(t, rc, "policy put");
}

size_t
queue_policy_scan(
    struct queue *q, const char *prefix, queue_policy_cb cb, void *arg)
{
	size_t plen = strlen(prefix), n = 0;
	MDB_val k = { plen, (void *)prefix }, v;
	MDB_cursor *c;
	MDB_txn *txn;
	int rc;

	if (q->nopolicy || (txn = queue_rtxn_begin(q)) == NULL)
		return 0;
	if (mdb_cursor_open(txn, q->dbi[QDB_POLICY], &c) != 0) {
		queue_rtxn_done(q);
		return 0;
	}
	rc = plen ? mdb_cursor_get(c, &k, &v, MDB_SET_RANGE)
		  : mdb_cursor_get(c, &k, &v, MDB_FIRST);
	while (rc == 0 && k.mv_size >= plen &&
	    memcmp(k.mv_data, prefix, plen) == 0) {
		char key[QUEUE_POLICY_KEY_MAX + 1];
		size_t kl = k.mv_size < sizeof(key) - 1 ? k.mv_size
							: sizeof(key) - 1;

		memcpy(key, k.mv_data, kl);
		key[kl] = '\0';
		n++;
		if (!cb(key, v.mv_data, v.mv_size, arg))
			break;
		rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
	}
	mdb_cursor_close(c);
	queue_rtxn_done(q);
	return n;
}
