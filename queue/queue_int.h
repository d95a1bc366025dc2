/*
 * queue_int.h - private to queue/: the LMDB handles, the keys and record
 * codecs, the write transaction with its count deltas, and what the
 * files of the module call in each other, grouped by the file that
 * defines it.  The only header that includes <lmdb.h>.
 */
#ifndef RELAYQ_QUEUE_INT_H
#define RELAYQ_QUEUE_INT_H

#include <lmdb.h>
#include <sys/types.h>

#include "queue.h"

#define QREC_VERSION 1 /* first byte of every msg, rcpt, hist, body record */
#define QUEUE_SCHEMA 1 /* meta "schema" */

/* Named databases (see doc/design.md, "Queue schema", and queue_rec.c). */
enum qdbi {
	QDB_MSG, /* id(8) -> envelope */
	QDB_RCPT, /* id(8)|idx(4) -> recipient */
	QDB_HIST, /* id(8)|idx(4)|attempt(4) -> one delivery attempt */
	QDB_BODY, /* id(8) -> version|method|rawlen(8)|crc(4)|data */
	QDB_SCHED, /* cls(1)|due(8)|id(8) -> "" */
	QDB_EXPIRY, /* when(8)|id(8)|kind(1) -> "" */
	QDB_LEASE, /* id(8) -> "" : messages with leased recipients */
	QDB_IDENT, /* dev(8)|ino(8)|size(8)|mtime_ns(8)|name -> id(8)|t(8) */
	QDB_COUNTS, /* enum qcount key -> u64 */
	QDB_META, /* "nextid", "schema", "mstates" -> u64 */
	QDB_CORRUPT, /* dbname NUL key -> the record set aside */
	QDB_POLICY, /* "sts:DOMAIN", "rpt:..." -> runner's record (issue 17) */
	QDB_N
};

/* The first byte of a key of the counts db, which says what it counts. */
enum qcount {
	QCOUNT_MSGS = 'M', /* 'M' class: messages */
	QCOUNT_BYTES = 'B', /* 'B' class: their sizes */
	QCOUNT_RCPTS = 'R', /* 'R' class state: recipients */
	QCOUNT_HELD = 'H', /* 'H': messages on hold */
	QCOUNT_DOMAIN = 'D', /* 'D' minute(8) domain: recipients not done */
	QCOUNT_MSTATE = 'S', /* 'S' class queue_msg_state: messages */
	QCOUNT_TALLY = 'T', /* 'T' slot(2): events so far (queue_tally_add) */
};

struct queue {
	MDB_env *env;
	MDB_dbi dbi[QDB_N];
	const struct cfg *cfg;
	bool readonly;
	bool nohist; /* read-only open of a queue made before `hist` existed */
	bool nopolicy; /* ... or before `policy` existed */
	char *dir;
	int wake_fd; /* inotify on queue_dir for the wakeup file */
	MDB_txn *rtxn; /* the reusable read txn (reset when idle) */
	struct queue_txn *wtxn; /* the open write txn, if any */
	int64_t last_trim; /* rq_now_us() of the last queue_rss_trim() */
	/* per class, where queue_due_take_rcpts() stopped for want of
	 * budget in message id (0: nowhere): the next take starts there */
	struct {
		uint64_t id;
		uint32_t idx;
	} take_at[CFG_NCLASS];
	void *map_base; /* where data.mdb is mapped (see queue_rss_trim) */
	size_t map_len, map_size;
	int statm_fd; /* /proc/self/statm, opened on the first trim */
};

/* A count delta, summed in the txn and applied at commit. */
struct qdelta {
	uint8_t key[300];
	uint16_t klen;
	bool used;
	int64_t delta;
};

struct queue_txn {
	struct queue *q;
	MDB_txn *txn;
	enum queue_result err;
	struct qdelta *deltas; /* open addressing table */
	size_t ndelta, dcap;
	uint64_t nextid; /* 0 until read */
	bool nextid_dirty;
	char **logs; /* lines logged after a successful commit */
	size_t nlog, logcap;
	int64_t now;
};

/* Big-endian integer codecs for keys and records. */
static inline void
qbe64_put(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--) {
		p[i] = (uint8_t)v;
		v >>= 8;
	}
}
static inline uint64_t
qbe64_get(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}
static inline void
qbe32_put(uint8_t *p, uint32_t v)
{
	for (int i = 3; i >= 0; i--) {
		p[i] = (uint8_t)v;
		v >>= 8;
	}
}
static inline uint32_t
qbe32_get(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | p[3];
}

/* ---- queue_rec.c: keys and records ---- */

/* Key builders. */
void qkey_id(uint8_t k[8], uint64_t id);
void qkey_rcpt(uint8_t k[12], uint64_t id, uint32_t idx);
void qkey_hist(uint8_t k[16], uint64_t id, uint32_t idx, uint32_t attempt);
void qkey_sched(uint8_t k[17], int cls, int64_t due, uint64_t id);
void qkey_expiry(uint8_t k[17], int64_t when, uint64_t id, int kind);
/* The counts key of the recipients not yet done of a message that
 * arrived at ARRIVAL for ADDR's domain (lower-cased); returns its
 * length. */
#define QKEY_DOMAIN_MAX (9 + 256)
size_t
qkey_domain(uint8_t k[QKEY_DOMAIN_MAX], int64_t arrival, const char *addr);

/* A growable record buffer. */
struct qbuf {
	uint8_t *p;
	size_t n, cap;
};
void qbuf_put(struct qbuf *, const void *, size_t);
void qbuf_u8(struct qbuf *, uint8_t);
void qbuf_u32(struct qbuf *, uint32_t);
void qbuf_u64(struct qbuf *, uint64_t);
/* A string: u32 length (0xffffffff for NULL), bytes, NUL. */
void qbuf_str(struct qbuf *, const char *);

/* Record codecs: decode returns false when the record is invalid.
 * A "view" decode points strings into the record (valid as long as the
 * record memory is); queue_msg_dup makes an owned copy. */
void qrec_msg_encode(struct qbuf *, const struct queue_msg *);
bool qrec_msg_decode(const void *, size_t, struct queue_msg *view);
void qrec_rcpt_encode(struct qbuf *, const struct queue_rcpt *);
bool qrec_rcpt_decode(const void *, size_t, struct queue_rcpt *view);
void qrec_hist_encode(struct qbuf *, const struct queue_attempt *);
bool qrec_hist_decode(const void *, size_t, struct queue_attempt *view);

/*
 * The fixed head of a recipient record (version, state, notify, flags,
 * attempts, next_attempt, last_attempt), read without decoding the
 * strings: the walks over every recipient of a message (take,
 * reschedule, flush, remove) read only this, so they cost a cursor step
 * per recipient and no allocation.  False when the head is invalid.
 */
bool qrec_rcpt_peek(const void *, size_t, struct queue_rcpt *head);
/* Byte offsets of the fields a walk rewrites in place (same size). */
#define QREC_RCPT_FLAGS 3
#define QREC_RCPT_NEXT 8

/* Encodes BODY as a body record, compressed with zlib LEVEL, into B (which
 * it resets); safe to call from any thread. */
void qrec_body_encode(struct qbuf *b, const char *body, size_t len, int level);
/* Inflates and checks body record REC of N bytes of message ID into a
 * malloc'd *buf of *len bytes (plus a NUL); QUEUE_CORRUPT, logged, when
 * it is invalid (its crc32 is the one checksum checked); safe to call
 * from any thread. */
enum queue_result qrec_body_decode(
    uint64_t id, const void *rec, size_t n, char **buf, size_t *len);
/* Frees the calling thread's compressors and decompressor (before the
 * thread ends). */
void qrec_thread_done(void);

/* ---- queue_env.c: the environment ---- */

/* The names of the dbs, by enum qdbi. */
extern const char *const queue_dbnames[QDB_N];
/* Creates DIR's missing parents (0755) and DIR with MODE exactly;
 * 0 when DIR exists already, else -1 with errno set (mkdir -p). */
int queue_dir_create(const char *dir, mode_t mode);
/*
 * Bytes the map can still take, less a reserve kept for deletes,
 * delivery results and DSNs (so the queue never locks up full).
 */
size_t queue_room_get(struct queue *);
/* Keeps the mapped queue out of RSS (rate-limited). */
void queue_rss_trim(struct queue *);

/* ---- queue_txn.c: transactions and count deltas ---- */

/* Begins/ends the shared read txn. */
MDB_txn *queue_rtxn_begin(struct queue *);
void queue_rtxn_done(struct queue *);
/* Looks up the record of message ID in db DB within TXN into *VAL
 * (valid until the txn writes); returns LMDB's code. */
int queue_rec_get(
    struct queue *, MDB_txn *txn, enum qdbi db, uint64_t id, MDB_val *val);
/* Sets the sticky error of T from an LMDB return code; returns it. */
enum queue_result queue_txn_fail(struct queue_txn *, int rc, const char *what);
/* Adds DELTA to count KEY (applied at commit). */
void queue_count_add(
    struct queue_txn *, const void *key, size_t klen, int64_t delta);
/* Count updates for a recipient entering (+1) or leaving (-1) a state. */
void queue_count_add_rcpt(struct queue_txn *, const struct queue_msg *,
    const struct queue_rcpt *, int sign);
/* Count updates for a message entering (+1) or leaving (-1). */
void
queue_count_add_msg(struct queue_txn *, const struct queue_msg *, int sign);
/* The same for its envelope alone (messages, bytes, held). */
void
queue_count_add_env(struct queue_txn *, const struct queue_msg *, int sign);
/* Queues a log line for after the commit (as relayq/qmgr, or as
 * relayq/SUBSYS), logged in the order queued. */
void queue_txn_log(struct queue_txn *, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void queue_txn_log_as(struct queue_txn *, const char *subsys, const char *fmt,
    ...) __attribute__((format(printf, 3, 4)));

/* ---- queue_id.c: queue ids ---- */

/* Allocates the next message id. */
uint64_t queue_id_next(struct queue_txn *);
/* Reserves N consecutive message ids (committed with T); returns the
 * first. */
uint64_t queue_id_reserve(struct queue_txn *, uint64_t n);

/* ---- queue_msg.c: whole messages ---- */

/* Deep-copies a view message (with its recipients) into owned memory. */
struct queue_msg *queue_msg_dup(const struct queue_msg *);
/*
 * Loads message ID (envelope and recipients, owned) within TXN; sets
 * aside an invalid record when the txn is a write txn (T non-NULL).
 * With PICK, only the recipients it picks are loaded (see
 * queue_txn_load_some()).
 */
enum queue_result
queue_msg_load_in(struct queue *, MDB_txn *, struct queue_txn *t, uint64_t id,
    queue_rcpt_pick pick, void *arg, struct queue_msg **out);
/*
 * Reads the envelope of ID within T as a view (its strings point into
 * the map: valid until the txn writes); sets aside an invalid one.
 */
enum queue_result
queue_env_view(struct queue_txn *, uint64_t id, struct queue_msg *view);
/*
 * Loads only the envelope of ID within T into an owned *out whose
 * rcpts is NULL (nrcpt is the message's count); freed by
 * queue_env_free().  Sets aside an invalid envelope.
 */
enum queue_result
queue_env_get(struct queue_txn *, uint64_t id, struct queue_msg **out);
void queue_env_free(struct queue_msg *);
/* Writes a message's envelope record. */
enum queue_result queue_msg_put(struct queue_txn *, const struct queue_msg *);
/* Stores an encoded body record REC of N bytes. */
enum queue_result
queue_body_put(struct queue_txn *, uint64_t id, const void *rec, size_t n);
/*
 * Inserts a complete message (m->id set by the caller or 0 to allocate):
 * records, body, schedule at arrival, expiry index, counts, the log line.
 */
enum queue_result queue_msg_store(struct queue_txn *, struct queue_msg *m,
    const char *body, size_t len, int level);
/* The same with the body already encoded (qrec_body_encode) into REC of
 * RECLEN bytes; LEN is the body's size. */
enum queue_result queue_msg_store_rec(struct queue_txn *, struct queue_msg *m,
    const void *rec, size_t reclen, size_t len);

/* ---- queue_rcpt.c: recipients and their history ---- */

/*
 * A cursor over the recipient records of one message in index order,
 * starting at index FROM: qwalk_next() stops at the message's end, and
 * sets bad (and stops) when the indexes do not run FROM, FROM+1, ... or
 * the read fails.  n counts the records visited.
 */
struct qwalk {
	MDB_cursor *c;
	uint64_t id;
	uint32_t idx; /* index of the current record */
	size_t n;
	uint8_t k[12]; /* the current key, copied */
	MDB_val key, val;
	bool first, done, bad;
};
void qwalk_open(struct qwalk *, MDB_txn *, MDB_dbi, uint64_t id, uint32_t from);
bool qwalk_next(struct qwalk *);
/* Replaces the flags and next_attempt of the current record in place. */
int qwalk_rewrite(struct qwalk *, unsigned flags, int64_t next_attempt);
void qwalk_close(struct qwalk *);
/* Writes one recipient record. */
enum queue_result
queue_rcpt_put(struct queue_txn *, uint64_t id, const struct queue_rcpt *);
/* Writes attempt A of recipient IDX and drops the one QUEUE_HIST_MAX
 * before it, so at most QUEUE_HIST_MAX are kept. */
enum queue_result queue_attempt_put(struct queue_txn *, uint64_t id,
    uint32_t idx, const struct queue_attempt *a);
/* Deletes every attempt record of message ID (all its recipients). */
void queue_attempts_remove(struct queue_txn *, uint64_t id);

/* ---- queue_sched.c: the schedule ---- */

/* Moves the message's schedule entry to DUE (0: none); updates m->due. */
enum queue_result
queue_sched_set(struct queue_txn *, struct queue_msg *, int64_t due);

/* ---- queue_expiry.c: the expiry index ---- */

/* Adds/removes the message's expiry entries (per warn_at/return_at). */
enum queue_result
queue_expiry_index(struct queue_txn *, const struct queue_msg *, bool add);
/* Computes warn_at/return_at for M from the cfg. */
void queue_expiry_times_set(const struct queue *, struct queue_msg *);

/* ---- queue_corrupt.c: records set aside ---- */

/* Sets aside what there is of message ID into the corrupt db. */
void queue_msg_quarantine(struct queue_txn *, uint64_t id, const char *why);

/* ---- queue_intake_bad.c: names from outside ---- */

/*
 * Copies S into OUT with every byte that is not printable ASCII written
 * as \xNN and a backslash as \\, for names and text from outside in log
 * lines and bad/ reasons; cut with "..." past QUEUE_ESC_MAX - 8 bytes
 * (room for any 255-byte file name).  Returns OUT.
 */
#define QUEUE_ESC_MAX 1040
const char *queue_name_escape(char out[QUEUE_ESC_MAX], const char *s);

/* ---- queue_stats.c: the message-state counts ---- */

/* The message-state counts of M (+1 / -1), called with the other counts
 * of its envelope; M's first take (writes M). */
void queue_stats_env(struct queue_txn *, const struct queue_msg *, int sign);
void queue_stats_taken(struct queue_txn *, struct queue_msg *);

#endif
