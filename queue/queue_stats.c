/*
 * queue_stats.c - what the daemon's metrics, its status page and
 * `relayq summary --json` read of the queue besides the counts
 * (queue_counts_get): messages per class and state, the oldest message
 * of each class, how full the map is, and the names intake's refusals
 * are counted under.
 *
 * Public: queue_stats_get(), queue_stats_rebuild(), queue_oldest_get(),
 * queue_bad_reason(), queue_bad_reason_name(), queue_tally_add(),
 * queue_tallies_get().  Queue-private:
 * queue_stats_env(), queue_stats_taken().
 *
 * Invariants: counts key QCOUNT_MSTATE class state (state a queue_msg_state) is
 * the number of messages of that class in that state, kept in the same
 * transactions as the other counts (queue_count_add_env() calls
 * queue_stats_env(); hold and release move a message between states;
 * the first take marks it QMSG_TAKEN and moves it from pending to
 * deferred); meta "mstates" says they are complete: a queue written
 * before they existed gets them from one walk of the envelopes when the
 * daemon starts (queue_stats_rebuild), and until then readers report
 * every message as pending.  The oldest-message walk reads envelope
 * heads in id (= arrival, within a class) order and is bounded by a
 * step budget per call; it resumes where the caller's cursor says.
 * Tallies (counts key QCOUNT_TALLY slot) only grow, each in the
 * transaction of its events: what they say was committed.
 */
#include <string.h>

#include "queue_int.h"

#define MSTATES_KEY "mstates"

/* Message ids of one class grow with arrival: intake takes them from
 * ranges it reserved in order, notices (class dsn) from nextid. */

/* A message's state in the counts: held, else deferred once taken. */
static enum queue_msg_state
msg_state(unsigned flags)
{
	if (flags & QMSG_HELD)
		return QMS_HELD;
	return (flags & QMSG_TAKEN) ? QMS_DEFERRED : QMS_PENDING;
}

/* Adds SIGN to the count of M's class and state. */
void
queue_stats_env(struct queue_txn *t, const struct queue_msg *m, int sign)
{
	uint8_t k[3] = { QCOUNT_MSTATE, (uint8_t)m->cls,
		(uint8_t)msg_state(m->flags) };

	queue_count_add(t, k, 3, sign);
}

/* The runner takes M for the first time: it is deferred from now on
 * (written here, so that whatever reads M next in T sees the flag). */
void
queue_stats_taken(struct queue_txn *t, struct queue_msg *m)
{
	if (m->flags & QMSG_TAKEN)
		return;
	queue_stats_env(t, m, -1);
	m->flags |= QMSG_TAKEN;
	queue_stats_env(t, m, 1);
	queue_msg_put(t, m);
}

/* Reads the u64 at KEY of db DBI in TXN into *V (0 when absent). */
static bool
get_u64(MDB_txn *txn, MDB_dbi dbi, const void *key, size_t klen, uint64_t *v)
{
	MDB_val k = { klen, (void *)key }, val;

	*v = 0;
	if (mdb_get(txn, dbi, &k, &val) != 0 || val.mv_size != 8)
		return false;
	*v = qbe64_get(val.mv_data);
	return true;
}

/* The pages on LMDB's free list (reusable without growing the file). */
static size_t
free_pages(MDB_txn *txn)
{
	MDB_cursor *c;
	MDB_val k, v;
	size_t n = 0;

	if (mdb_cursor_open(txn, 0, &c) != 0)
		return 0;
	for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT))
		if (v.mv_size >= sizeof(size_t))
			n += *(const size_t *)v.mv_data;
	mdb_cursor_close(c);
	return n;
}

/* Messages per class and state and the map's use; see queue.h. */
enum queue_result
queue_stats_get(struct queue *q, struct queue_stats *st)
{
	MDB_envinfo info;
	MDB_stat ms;
	MDB_txn *txn;
	uint64_t v, total[CFG_NCLASS] = { 0 };
	size_t used;

	memset(st, 0, sizeof(*st));
	if ((txn = queue_rtxn_begin(q)) == NULL)
		return QUEUE_ERR;
	st->exact = get_u64(
	    txn, q->dbi[QDB_META], MSTATES_KEY, strlen(MSTATES_KEY), &v);
	for (int c = 0; c < CFG_NCLASS; c++) {
		uint8_t k[3] = { QCOUNT_MSTATE, (uint8_t)c, 0 };
		uint8_t mk[2] = { QCOUNT_MSGS, (uint8_t)c };

		for (int s = 0; s < QUEUE_NMSTATE; s++) {
			k[2] = (uint8_t)s;
			get_u64(txn, q->dbi[QDB_COUNTS], k, 3, &st->msgs[c][s]);
		}
		get_u64(txn, q->dbi[QDB_COUNTS], mk, 2, &total[c]);
	}
	if (mdb_env_info(q->env, &info) == 0 &&
	    mdb_env_stat(q->env, &ms) == 0) {
		used = info.me_last_pgno + 1;
		v = free_pages(txn);
		st->map_used = (used > v ? used - v : 0) *
		    (uint64_t)ms.ms_psize;
		st->map_size = info.me_mapsize;
	}
	queue_rtxn_done(q);
	if (!st->exact) {
		/* not counted yet (see queue_stats_rebuild): all pending */
		for (int c = 0; c < CFG_NCLASS; c++) {
			memset(st->msgs[c], 0, sizeof(st->msgs[c]));
			st->msgs[c][QMS_PENDING] = total[c];
		}
	}
	return QUEUE_OK;
}

/* Counts the message states of an older queue once; see queue.h. */
void
queue_stats_rebuild(struct queue *q)
{
	uint64_t n[CFG_NCLASS][QUEUE_NMSTATE], v;
	struct queue_txn *t;
	MDB_cursor *c;
	MDB_val key, val;
	uint8_t b[8];
	size_t msgs = 0;
	int rc;

	if ((t = queue_txn_begin(q)) == NULL)
		return;
	if (get_u64(t->txn, q->dbi[QDB_META], MSTATES_KEY, strlen(MSTATES_KEY),
		&v)) {
		queue_txn_abort(t);
		return;
	}
	memset(n, 0, sizeof(n));
	if ((rc = mdb_cursor_open(t->txn, q->dbi[QDB_MSG], &c)) != 0) {
		queue_txn_fail(t, rc, "msg");
		queue_txn_abort(t);
		return;
	}
	for (rc = mdb_cursor_get(c, &key, &val, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(c, &key, &val, MDB_NEXT)) {
		const uint8_t *p = val.mv_data;

		if (val.mv_size < 8 || p[0] != QREC_VERSION ||
		    p[1] >= CFG_NCLASS)
			continue; /* set aside when next met */
		n[p[1]][msg_state(qbe32_get(p + 4))]++;
		msgs++;
	}
	mdb_cursor_close(c);
	for (int cl = 0; cl < CFG_NCLASS; cl++)
		for (int s = 0; s < QUEUE_NMSTATE; s++) {
			uint8_t k[3] = { QCOUNT_MSTATE, (uint8_t)cl,
				(uint8_t)s };
			MDB_val mk = { 3, k }, mv = { 8, b };

			qbe64_put(b, n[cl][s]);
			queue_txn_fail(t,
			    mdb_put(t->txn, q->dbi[QDB_COUNTS], &mk, &mv, 0),
			    "counts");
		}
	{
		MDB_val mk = { strlen(MSTATES_KEY), (void *)MSTATES_KEY };
		MDB_val mv = { 8, b };

		qbe64_put(b, 1);
		queue_txn_fail(
		    t, mdb_put(t->txn, q->dbi[QDB_META], &mk, &mv, 0), "meta");
	}
	if (queue_txn_commit(t) == QUEUE_OK)
		log_info("qmgr", "counted the states of %zu messages", msgs);
}

/*
 * Looks for class C's oldest message not on hold from O->from[C] on, in
 * TXN's msg cursor CUR, for at most *STEPS records (taken down).  The
 * envelope: arrival at byte 16, warn_at 40, return_at 48 (queue_rec.c).
 */
static void
oldest_walk(MDB_cursor *cur, struct queue_oldest *o, int c, size_t *steps)
{
	uint8_t k[8];
	MDB_val key = { 8, k }, val;
	int rc;

	qbe64_put(k, o->from[c]);
	for (rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE); rc == 0;
	     rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
		const uint8_t *p = val.mv_data;

		if (key.mv_size != 8)
			continue;
		if (*steps == 0) {
			/* out of steps: resume here next time */
			o->from[c] = qbe64_get(key.mv_data);
			return;
		}
		(*steps)--;
		if (val.mv_size < 56 || p[0] != QREC_VERSION || p[1] != c ||
		    (qbe32_get(p + 4) & QMSG_HELD))
			continue;
		o->from[c] = qbe64_get(key.mv_data);
		o->arrival[c] = (int64_t)qbe64_get(p + 16);
		o->warn_at[c] = (int64_t)qbe64_get(p + 40);
		o->return_at[c] = (int64_t)qbe64_get(p + 48);
		o->warned[c] = (qbe32_get(p + 4) & QMSG_WARNED) != 0;
		o->found[c] = true;
		return;
	}
	/* none (the counts said there was one: it left meanwhile) */
	o->found[c] = true;
	o->arrival[c] = 0;
}

/* The oldest message of each class not on hold, by a bounded walk;
 * see queue.h. */
enum queue_result
queue_oldest_get(struct queue *q, const struct queue_stats *st,
    struct queue_oldest *o, size_t max_steps)
{
	MDB_txn *txn;
	MDB_cursor *cur;
	uint64_t held = 0;

	for (int c = 0; c < CFG_NCLASS; c++)
		held += st->msgs[c][QMS_HELD];
	if (held != o->held) {
		/* a release may bring back an older one: from the start */
		memset(o->from, 0, sizeof(o->from));
		o->held = held;
	}
	if ((txn = queue_rtxn_begin(q)) == NULL)
		return QUEUE_ERR;
	if (mdb_cursor_open(txn, q->dbi[QDB_MSG], &cur) != 0) {
		queue_rtxn_done(q);
		return QUEUE_ERR;
	}
	for (int c = 0; c < CFG_NCLASS; c++) {
		o->found[c] = false;
		o->arrival[c] = o->warn_at[c] = o->return_at[c] = 0;
		o->warned[c] = false;
		if (st->msgs[c][QMS_PENDING] + st->msgs[c][QMS_DEFERRED] == 0) {
			o->found[c] = true; /* none waiting */
			continue;
		}
		oldest_walk(cur, o, c, &max_steps);
	}
	mdb_cursor_close(cur);
	queue_rtxn_done(q);
	return QUEUE_OK;
}

/* The reasons intake's refusals are counted under, by the start of the
 * text move_bad() is given (queue_intake.c, queue_parse.c). */
static const struct {
	const char *prefix;
	enum queue_bad_reason reason;
} bad_prefixes[] = {
	{ "not a regular file", QBAD_NOT_REGULAR },
	{ "file has ", QBAD_NOT_REGULAR }, /* hard links */
	{ "cannot open", QBAD_NOT_REGULAR },
	{ "empty file", QBAD_EMPTY },
	{ "message too large", QBAD_TOO_LARGE },
	{ "no recipients", QBAD_NO_RECIPIENTS },
	{ "too many recipients", QBAD_TOO_MANY_RECIPIENTS },
	{ "changed after it was queued", QBAD_CHANGED },
};

/* The reason a bad/ text WHY is counted under. */
enum queue_bad_reason
queue_bad_reason(const char *why)
{
	for (size_t i = 0; i < sizeof(bad_prefixes) / sizeof(bad_prefixes[0]);
	     i++)
		if (strncmp(why, bad_prefixes[i].prefix,
			strlen(bad_prefixes[i].prefix)) == 0)
			return bad_prefixes[i].reason;
	return QBAD_MALFORMED;
}

/* The label value of reason R. */
const char *
queue_bad_reason_name(enum queue_bad_reason r)
{
	static const char *const names[QUEUE_NBAD] = {
		[QBAD_NOT_REGULAR] = "not_regular_file",
		[QBAD_EMPTY] = "empty",
		[QBAD_TOO_LARGE] = "too_large",
		[QBAD_NO_RECIPIENTS] = "no_recipients",
		[QBAD_TOO_MANY_RECIPIENTS] = "too_many_recipients",
		[QBAD_CHANGED] = "changed",
		[QBAD_MALFORMED] = "malformed",
	};

	return (unsigned)r < QUEUE_NBAD ? names[r] : "malformed";
}

/* Adds N to tally SLOT in T; see queue.h. */
void
queue_tally_add(struct queue_txn *t, unsigned slot, uint64_t n)
{
	uint8_t k[3] = { QCOUNT_TALLY, (uint8_t)(slot >> 8), (uint8_t)slot };

	if (slot < QUEUE_TALLY_MAX && n > 0)
		queue_count_add(t, k, 3, (int64_t)n);
}

/* Every tally into OUT, in one read txn; see queue.h. */
enum queue_result
queue_tallies_get(struct queue *q, uint64_t out[QUEUE_TALLY_MAX])
{
	uint8_t k[3] = { QCOUNT_TALLY, 0, 0 };
	MDB_val key = { 3, k }, val;
	MDB_cursor *c;
	MDB_txn *txn;
	int rc;

	memset(out, 0, QUEUE_TALLY_MAX * sizeof(*out));
	if ((txn = queue_rtxn_begin(q)) == NULL)
		return QUEUE_ERR;
	if (mdb_cursor_open(txn, q->dbi[QDB_COUNTS], &c) != 0) {
		queue_rtxn_done(q);
		return QUEUE_ERR;
	}
	for (rc = mdb_cursor_get(c, &key, &val, MDB_SET_RANGE); rc == 0;
	     rc = mdb_cursor_get(c, &key, &val, MDB_NEXT)) {
		const uint8_t *p = key.mv_data;
		unsigned slot;

		if (key.mv_size != 3 || p[0] != QCOUNT_TALLY)
			break;
		slot = (unsigned)p[1] << 8 | p[2];
		if (slot < QUEUE_TALLY_MAX && val.mv_size == 8)
			out[slot] = qbe64_get(val.mv_data);
	}
	mdb_cursor_close(c);
	queue_rtxn_done(q);
	return QUEUE_OK;
}
