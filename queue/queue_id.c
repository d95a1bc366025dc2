/*
 * queue_id.c - queue ids: 64-bit numbers from a counter in the meta db
 * (started from the creation time in microseconds, so ids grow with
 * arrival), shown as 16 uppercase hex digits.
 *
 * Public: queue_id_format(), queue_id_parse(); (to queue/, queue_int.h)
 * queue_id_next(), queue_id_reserve().
 *
 * Invariants: an id is handed out once: the counter moves on in the txn
 * that takes the id and is written by its commit, so the ids of a txn
 * that failed, or of a range reserved and left unused, are skipped,
 * never reused.
 */
#include "queue_int.h"

void
queue_id_format(uint64_t id, char buf[17])
{
	static const char hex[] = "0123456789ABCDEF";

	for (int i = 15; i >= 0; i--) {
		buf[i] = hex[id & 0xf];
		id >>= 4;
	}
	buf[16] = '\0';
}

bool
queue_id_parse(const char *s, uint64_t *id)
{
	uint64_t v = 0;
	size_t n = 0;

	for (; s[n] != '\0'; n++) {
		char c = s[n];
		int d;

		if (c >= '0' && c <= '9')
			d = c - '0';
		else if (c >= 'a' && c <= 'f')
			d = c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			d = c - 'A' + 10;
		else
			return false;
		if (n >= 16)
			return false;
		v = (v << 4) | (uint64_t)d;
	}
	if (n == 0)
		return false;
	*id = v;
	return true;
}

uint64_t
queue_id_next(struct queue_txn *t)
{
	if (t->nextid == 0) {
		MDB_val k = { 6, (void *)"nextid" }, v;

		if (mdb_get(t->txn, t->q->dbi[QDB_META], &k, &v) == 0 &&
		    v.mv_size == 8)
			t->nextid = qbe64_get(v.mv_data);
		if (t->nextid == 0)
			t->nextid = (uint64_t)rq_now_us();
	}
	t->nextid_dirty = true;
	return t->nextid++;
}

uint64_t
queue_id_reserve(struct queue_txn *t, uint64_t n)
{
	uint64_t first = queue_id_next(t);

	t->nextid = first + n;
	return first;
}
