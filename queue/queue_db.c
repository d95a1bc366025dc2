/*
 * queue_db.c - the LMDB environment of the queue: opening it, record
 * codecs, write transactions with their count deltas and post-commit log
 * lines, and loading, storing and removing whole messages.
 *
 * Public: queue_open(), queue_close(), queue_cfg_set(), queue_id_format(),
 * queue_id_parse(), queue_msg_load(), queue_msg_load_leased(),
 * queue_msg_free(), queue_body_load(), queue_txn_begin(),
 * queue_txn_commit(), queue_txn_abort(), queue_txn_load(),
 * queue_txn_load_some(), queue_txn_load_rcpts(), queue_txn_body_load(),
 * queue_msg_insert(), queue_msg_remove(), queue_state_name(); private
 * helpers in queue_int.h (among them the recipient walk, qwalk_*).
 *
 * Invariants: a message's msg record, recipient records, attempt history,
 * body, schedule entry, expiry entries and counts change together in one
 * write txn; a record is validated on every load and one that fails is
 * moved to the corrupt db (in a write txn) or skipped (read-only) with a
 * log line; MDB_NOSYNC is never set, so a commit is durable when it
 * returns.  queue_open() is called by the owner of queue_dir only (the
 * daemon after its switch, the commands after theirs), and refuses a
 * data.mdb or lock.mdb that is a link or another user's.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <libdeflate.h>

#include "queue_int.h"

static const char *const dbnames[QDB_N] = { "msg", "rcpt", "hist", "body",
	"sched", "expiry", "lease", "ident", "counts", "meta", "corrupt" };

/* ---- small helpers ---- */

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

const char *
queue_state_name(enum queue_rcpt_state s)
{
	static const char *const names[] = { "pending", "deferred", "delivered",
		"bounced" };

	return (unsigned)s < QUEUE_NSTATE ? names[s] : "pending";
}

void
queue_addr_domain(const char *addr, char *buf, size_t len)
{
	const char *at = strrchr(addr, '@');
	size_t i = 0;

	at = at ? at + 1 : "";
	for (; at[i] != '\0' && i + 1 < len; i++) {
		char c = at[i];

		buf[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
	}
	buf[i] = '\0';
}

void
qkey_id(uint8_t k[8], uint64_t id)
{
	qbe64_put(k, id);
}

void
qkey_rcpt(uint8_t k[12], uint64_t id, uint32_t idx)
{
	qbe64_put(k, id);
	qbe32_put(k + 8, idx);
}

void
qkey_hist(uint8_t k[16], uint64_t id, uint32_t idx, uint32_t attempt)
{
	qbe64_put(k, id);
	qbe32_put(k + 8, idx);
	qbe32_put(k + 12, attempt);
}

void
qkey_sched(uint8_t k[17], int cls, int64_t due, uint64_t id)
{
	k[0] = (uint8_t)cls;
	qbe64_put(k + 1, (uint64_t)due);
	qbe64_put(k + 9, id);
}

void
qkey_expiry(uint8_t k[17], int64_t when, uint64_t id, int kind)
{
	qbe64_put(k, (uint64_t)when);
	qbe64_put(k + 8, id);
	k[16] = (uint8_t)kind;
}

/* ---- record codecs ---- */

void
qbuf_put(struct qbuf *b, const void *p, size_t n)
{
	if (n == 0)
		return;
	if (b->n + n > b->cap) {
		while (b->n + n > b->cap)
			b->cap = b->cap ? b->cap * 2 : 256;
		b->p = xrealloc(b->p, b->cap);
	}
	memcpy(b->p + b->n, p, n);
	b->n += n;
}

void
qbuf_u8(struct qbuf *b, uint8_t v)
{
	qbuf_put(b, &v, 1);
}

void
qbuf_u32(struct qbuf *b, uint32_t v)
{
	uint8_t k[4];

	qbe32_put(k, v);
	qbuf_put(b, k, 4);
}

void
qbuf_u64(struct qbuf *b, uint64_t v)
{
	uint8_t k[8];

	qbe64_put(k, v);
	qbuf_put(b, k, 8);
}

void
qbuf_str(struct qbuf *b, const char *s)
{
	if (s == NULL) {
		qbuf_u32(b, 0xffffffffu);
		return;
	}
	qbuf_u32(b, (uint32_t)strlen(s));
	qbuf_put(b, s, strlen(s) + 1);
}

/* A bounds-checked reader over a record. */
struct qrd {
	const uint8_t *p;
	size_t n, off;
	bool bad;
};

static const uint8_t *
rd_take(struct qrd *r, size_t n)
{
	const uint8_t *p;

	if (r->bad || r->n - r->off < n) {
		r->bad = true;
		return NULL;
	}
	p = r->p + r->off;
	r->off += n;
	return p;
}

static uint8_t
rd_u8(struct qrd *r)
{
	const uint8_t *p = rd_take(r, 1);

	return p ? p[0] : 0;
}

static uint32_t
rd_u32(struct qrd *r)
{
	const uint8_t *p = rd_take(r, 4);

	return p ? qbe32_get(p) : 0;
}

static uint64_t
rd_u64(struct qrd *r)
{
	const uint8_t *p = rd_take(r, 8);

	return p ? qbe64_get(p) : 0;
}

/* Reads a string written by qbuf_str (NULL allowed when nullable). */
static char *
rd_str(struct qrd *r, bool nullable)
{
	uint32_t n = rd_u32(r);
	const uint8_t *p;

	if (r->bad)
		return NULL;
	if (n == 0xffffffffu) {
		if (!nullable)
			r->bad = true;
		return NULL;
	}
	p = rd_take(r, (size_t)n + 1);
	if (p == NULL || p[n] != '\0' || memchr(p, '\0', n) != NULL) {
		r->bad = true;
		return NULL;
	}
	return (char *)p;
}

void
qrec_msg_encode(struct qbuf *b, const struct queue_msg *m)
{
	b->n = 0;
	qbuf_u8(b, QREC_VERSION);
	qbuf_u8(b, (uint8_t)m->cls);
	qbuf_u8(b, (uint8_t)m->ret);
	qbuf_u8(b, 0);
	qbuf_u32(b, m->flags);
	qbuf_u32(b, m->uid);
	qbuf_u32(b, (uint32_t)m->nrcpt);
	qbuf_u64(b, (uint64_t)m->arrival);
	qbuf_u64(b, m->size);
	qbuf_u64(b, (uint64_t)m->due);
	qbuf_u64(b, (uint64_t)m->warn_at);
	qbuf_u64(b, (uint64_t)m->return_at);
	qbuf_str(b, m->sender);
	qbuf_str(b, m->envid);
}

bool
qrec_msg_decode(const void *p, size_t n, struct queue_msg *m)
{
	struct qrd r = { p, n, 0, false };

	memset(m, 0, sizeof(*m));
	if (rd_u8(&r) != QREC_VERSION)
		return false;
	m->cls = (enum cfg_class)rd_u8(&r);
	m->ret = rd_u8(&r);
	(void)rd_u8(&r);
	m->flags = rd_u32(&r);
	m->uid = rd_u32(&r);
	m->nrcpt = rd_u32(&r);
	m->arrival = (int64_t)rd_u64(&r);
	m->size = rd_u64(&r);
	m->due = (int64_t)rd_u64(&r);
	m->warn_at = (int64_t)rd_u64(&r);
	m->return_at = (int64_t)rd_u64(&r);
	m->sender = rd_str(&r, false);
	m->envid = rd_str(&r, true);
	if (r.bad || r.off != n)
		return false;
	if ((unsigned)m->cls >= CFG_NCLASS || m->ret > QRET_HDRS ||
	    m->nrcpt == 0 || m->nrcpt > 1000000 || m->arrival <= 0 ||
	    m->due < 0)
		return false;
	return true;
}

void
qrec_rcpt_encode(struct qbuf *b, const struct queue_rcpt *rc)
{
	char ds[16];

	b->n = 0;
	qbuf_u8(b, QREC_VERSION);
	qbuf_u8(b, (uint8_t)rc->state);
	qbuf_u8(b, (uint8_t)rc->notify);
	qbuf_u8(b, (uint8_t)rc->flags);
	qbuf_u32(b, rc->attempts);
	qbuf_u64(b, (uint64_t)rc->next_attempt);
	qbuf_u64(b, (uint64_t)rc->last_attempt);
	memset(ds, 0, sizeof(ds));
	memcpy(ds, rc->dsn_status, strnlen(rc->dsn_status, sizeof(ds) - 1));
	qbuf_put(b, ds, sizeof(ds));
	qbuf_str(b, rc->addr);
	qbuf_str(b, rc->orcpt);
	qbuf_str(b, rc->reply);
}

bool
qrec_rcpt_decode(const void *p, size_t n, struct queue_rcpt *rc)
{
	struct qrd r = { p, n, 0, false };
	const uint8_t *ds;

	memset(rc, 0, sizeof(*rc));
	if (rd_u8(&r) != QREC_VERSION)
		return false;
	rc->state = (enum queue_rcpt_state)rd_u8(&r);
	rc->notify = rd_u8(&r);
	rc->flags = rd_u8(&r);
	rc->attempts = rd_u32(&r);
	rc->next_attempt = (int64_t)rd_u64(&r);
	rc->last_attempt = (int64_t)rd_u64(&r);
	ds = rd_take(&r, 16);
	rc->addr = rd_str(&r, false);
	rc->orcpt = rd_str(&r, true);
	rc->reply = rd_str(&r, true);
	if (r.bad || r.off != n || ds == NULL || ds[15] != '\0')
		return false;
	memcpy(rc->dsn_status, ds, 16);
	if ((unsigned)rc->state >= QUEUE_NSTATE || rc->addr[0] == '\0')
		return false;
	return true;
}

bool
qrec_rcpt_peek(const void *p, size_t n, struct queue_rcpt *rc)
{
	const uint8_t *b = p;

	memset(rc, 0, sizeof(*rc));
	/* the head, the dsn status and three string lengths at least */
	if (n < 24 + 16 + 3 * 4 || b[0] != QREC_VERSION || b[1] >= QUEUE_NSTATE)
		return false;
	rc->state = (enum queue_rcpt_state)b[1];
	rc->notify = b[2];
	rc->flags = b[QREC_RCPT_FLAGS];
	rc->attempts = qbe32_get(b + 4);
	rc->next_attempt = (int64_t)qbe64_get(b + QREC_RCPT_NEXT);
	rc->last_attempt = (int64_t)qbe64_get(b + 16);
	return true;
}

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

void
qrec_hist_encode(struct qbuf *b, const struct queue_attempt *a)
{
	char ds[16];

	b->n = 0;
	qbuf_u8(b, QREC_VERSION);
	qbuf_u8(b, (uint8_t)a->state);
	qbuf_u8(b, 0);
	qbuf_u8(b, 0);
	qbuf_u64(b, (uint64_t)a->time);
	memset(ds, 0, sizeof(ds));
	memcpy(ds, a->dsn_status, strnlen(a->dsn_status, sizeof(ds) - 1));
	qbuf_put(b, ds, sizeof(ds));
	qbuf_str(b, a->reply);
}

bool
qrec_hist_decode(const void *p, size_t n, struct queue_attempt *a)
{
	struct qrd r = { p, n, 0, false };
	const uint8_t *ds;
	uint8_t pad1, pad2;

	memset(a, 0, sizeof(*a));
	if (rd_u8(&r) != QREC_VERSION)
		return false;
	a->state = (enum queue_rcpt_state)rd_u8(&r);
	pad1 = rd_u8(&r);
	pad2 = rd_u8(&r);
	a->time = (int64_t)rd_u64(&r);
	ds = rd_take(&r, 16);
	a->reply = rd_str(&r, true);
	if (r.bad || r.off != n || ds == NULL || ds[15] != '\0')
		return false;
	memcpy(a->dsn_status, ds, 16);
	if ((unsigned)a->state >= QUEUE_NSTATE || pad1 != 0 || pad2 != 0 ||
	    a->time < 0)
		return false;
	return true;
}

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

/* ---- the environment ---- */

/* Creates DIR and its parents with MODE. */
static int
mkdir_p(const char *dir, mode_t mode)
{
	char *p = xstrdup(dir);

	for (char *s = p + 1; *s != '\0'; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, 0755) < 0 && errno != EEXIST) {
			free(p);
			return -1;
		}
		*s = '/';
	}
	free(p);
	if (mkdir(dir, mode) < 0 && errno != EEXIST)
		return -1;
	return 0;
}

/*
 * Refuses data.mdb or lock.mdb when it is not a regular file of this
 * process's user with one link: LMDB opens them without O_NOFOLLOW, so a
 * link planted there would have it write through the link.  The caller
 * runs as the owner of queue_dir, which nobody else can write (checked
 * at start), so nothing changes between this check and LMDB's open.
 */
static bool
env_files_check(const char *dir, char *err, size_t errlen)
{
	static const char *const names[] = { "data.mdb", "lock.mdb" };
	char path[4096];
	struct stat st;

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		if (lstat(path, &st) != 0) {
			if (errno == ENOENT)
				continue;
			snprintf(err, errlen, "queue_dir %s: %s: %s", dir,
			    names[i], strerror(errno));
			return false;
		}
		if (!S_ISREG(st.st_mode) || st.st_nlink != 1) {
			snprintf(err, errlen,
			    "queue_dir %s: %s is not a regular file with one "
			    "link (a planted link?): refusing to open it",
			    dir, names[i]);
			return false;
		}
		if (st.st_uid != geteuid()) {
			snprintf(err, errlen,
			    "queue_dir %s: %s belongs to uid %u, not to uid "
			    "%u: refusing to open it",
			    dir, names[i], (unsigned)st.st_uid,
			    (unsigned)geteuid());
			return false;
		}
	}
	return true;
}

struct queue *
queue_open(const struct cfg *cfg, bool readonly, char *err, size_t errlen)
{
	const struct cfg_scope *sc = cfg_scope(cfg, NULL);
	const char *dir = cfg_str(sc, CFG_QUEUE_DIR);
	struct queue *q;
	MDB_txn *txn;
	int rc, dead;

	if (!readonly && mkdir_p(dir, 0700) < 0) {
		snprintf(err, errlen, "queue_dir %s: %s", dir, strerror(errno));
		return NULL;
	}
	if (readonly && access(dir, F_OK) < 0) {
		snprintf(err, errlen, "queue_dir %s: %s", dir, strerror(errno));
		return NULL;
	}
	if (!env_files_check(dir, err, errlen))
		return NULL;
	q = xcalloc(1, sizeof(*q));
	q->cfg = cfg;
	q->readonly = readonly;
	q->dir = xstrdup(dir);
	q->wake_fd = -1;
	if ((rc = mdb_env_create(&q->env)) != 0 ||
	    (rc = mdb_env_set_maxdbs(q->env, QDB_N + 2)) != 0 ||
	    (rc = mdb_env_set_mapsize(
		 q->env, (size_t)cfg_int(sc, CFG_QUEUE_MAP_SIZE))) != 0 ||
	    (rc = mdb_env_open(q->env, dir,
		 MDB_NOTLS | MDB_NORDAHEAD | (readonly ? MDB_RDONLY : 0),
		 0600)) != 0) {
		snprintf(
		    err, errlen, "queue_dir %s: %s", dir, mdb_strerror(rc));
		goto fail;
	}
	mdb_reader_check(q->env, &dead);
	rc = mdb_txn_begin(q->env, NULL, readonly ? MDB_RDONLY : 0, &txn);
	if (rc != 0) {
		snprintf(
		    err, errlen, "queue_dir %s: %s", dir, mdb_strerror(rc));
		goto fail;
	}
	for (int i = 0; i < QDB_N; i++) {
		rc = mdb_dbi_open(
		    txn, dbnames[i], readonly ? 0 : MDB_CREATE, &q->dbi[i]);
		if (rc == MDB_NOTFOUND && readonly && i == QDB_HIST) {
			/* a queue made before `hist`: the daemon creates it
			 * when it next opens the queue; no history till then */
			q->nohist = true;
			continue;
		}
		if (rc != 0) {
			mdb_txn_abort(txn);
			snprintf(err, errlen, "queue_dir %s: db %s: %s", dir,
			    dbnames[i],
			    rc == MDB_NOTFOUND ? "queue not initialised (run "
						 "relayq run once)"
					       : mdb_strerror(rc));
			goto fail;
		}
	}
	if (!readonly) {
		MDB_val k = { 6, (void *)"schema" }, v;
		uint8_t b[8];

		if (mdb_get(txn, q->dbi[QDB_META], &k, &v) == MDB_NOTFOUND) {
			qbe64_put(b, QUEUE_SCHEMA);
			v.mv_size = 8;
			v.mv_data = b;
			mdb_put(txn, q->dbi[QDB_META], &k, &v, 0);
		}
	}
	if ((rc = mdb_txn_commit(txn)) != 0) {
		snprintf(
		    err, errlen, "queue_dir %s: %s", dir, mdb_strerror(rc));
		goto fail;
	}
	return q;
fail:
	if (q->env != NULL)
		mdb_env_close(q->env);
	free(q->dir);
	free(q);
	return NULL;
}

void
queue_close(struct queue *q)
{
	if (q == NULL)
		return;
	if (q->wtxn != NULL)
		queue_txn_abort(q->wtxn);
	if (q->rtxn != NULL)
		mdb_txn_abort(q->rtxn);
	if (q->wake_fd >= 0)
		close(q->wake_fd);
	mdb_env_close(q->env);
	free(q->dir);
	free(q);
}

void
queue_cfg_set(struct queue *q, const struct cfg *cfg)
{
	size_t want = (size_t)cfg_int(cfg_scope(cfg, NULL), CFG_QUEUE_MAP_SIZE);
	MDB_envinfo info;

	q->cfg = cfg;
	/* grow the map when the new config asks for more (never shrink) */
	if (q->wtxn == NULL && q->rtxn != NULL) {
		mdb_txn_abort(q->rtxn);
		q->rtxn = NULL;
	}
	if (q->wtxn == NULL && mdb_env_info(q->env, &info) == 0 &&
	    want > info.me_mapsize)
		mdb_env_set_mapsize(q->env, want);
}

MDB_txn *
queue_rtxn(struct queue *q)
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
		log_err("queue", "read transaction: %s", mdb_strerror(rc));
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

/* Finds the mapping of queue_dir/data.mdb in /proc/self/maps. */
static void
map_locate(struct queue *q)
{
	char want[4200], line[4600], real[4096];
	FILE *fp;

	q->map_base = NULL;
	q->map_len = 0;
	if (realpath(q->dir, real) == NULL)
		return;
	snprintf(want, sizeof(want), "%s/data.mdb", real);
	if ((fp = fopen("/proc/self/maps", "re")) == NULL)
		return;
	while (fgets(line, sizeof(line), fp) != NULL) {
		unsigned long lo, hi;
		char *path = strchr(line, '/');
		size_t n;

		if (path == NULL || sscanf(line, "%lx-%lx", &lo, &hi) != 2)
			continue;
		n = strlen(path);
		if (n > 0 && path[n - 1] == '\n')
			path[--n] = '\0';
		if (strcmp(path, want) == 0 && hi - lo > q->map_len) {
			q->map_base = (void *)lo;
			q->map_len = hi - lo;
		}
	}
	fclose(fp);
}

/*
 * Drops the map's pages from this process's resident set (they stay in
 * the page cache and fault back in on use), at most every 25 ms: the
 * map is file-backed and shared, so touching a big queue would otherwise
 * make RSS grow with the queue.
 */
void
queue_rss_trim(struct queue *q)
{
	int64_t now = rq_now_us();
	MDB_envinfo info;
	MDB_stat st;
	size_t len;

	if (now - q->last_trim < 25000)
		return;
	q->last_trim = now;
	if (mdb_env_info(q->env, &info) != 0 || mdb_env_stat(q->env, &st) != 0)
		return;
	if (q->map_base == NULL || q->map_size != info.me_mapsize) {
		/* LMDB does not tell where it mapped the file (me_mapaddr is
		 * only set with MDB_FIXEDMAP): look it up, again after a
		 * resize */
		map_locate(q);
		q->map_size = info.me_mapsize;
	}
	len = ((size_t)info.me_last_pgno + 1) * st.ms_psize;
	if (q->map_base != NULL && len <= q->map_len)
		(void)madvise(q->map_base, len, MADV_DONTNEED);
}

/* ---- room left in the map ---- */

/* cfg_parse.c (map_room_worst) mirrors this to refuse a queue_map_size
 * too small for max_message_size: keep the two in step. */

size_t
queue_room(struct queue *q)
{
	MDB_envinfo info;
	MDB_stat st;
	size_t maxpg, used, freepg = 0, reserve;

	if (mdb_env_info(q->env, &info) != 0 || mdb_env_stat(q->env, &st) != 0)
		return 0;
	maxpg = info.me_mapsize / st.ms_psize;
	used = info.me_last_pgno + 1;
	if (used > maxpg / 2) {
		/* count the free pages: only when it may matter */
		MDB_txn *txn = queue_rtxn(q);
		MDB_cursor *c;
		MDB_val k, v;

		if (txn != NULL && mdb_cursor_open(txn, 0, &c) == 0) {
			int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);

			for (; rc == 0;
			     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT))
				if (v.mv_size >= sizeof(size_t))
					freepg += *(const size_t *)v.mv_data;
			mdb_cursor_close(c);
		}
		queue_rtxn_done(q);
	}
	/* kept back for deletes, delivery results and DSNs */
	reserve = maxpg / 10;
	if (reserve < 64)
		reserve = maxpg / 4 < 64 ? maxpg / 4 : 64;
	if (used - (freepg < used ? freepg : used) + reserve >= maxpg)
		return 0;
	return (maxpg - reserve - (used - (freepg < used ? freepg : used))) *
	    st.ms_psize;
}

/* ---- write transactions ---- */

struct queue_txn *
queue_txn_begin(struct queue *q)
{
	struct queue_txn *t;
	MDB_txn *txn;
	int rc;

	if (q->readonly || q->wtxn != NULL) {
		log_err("queue", "write transaction: %s",
		    q->readonly ? "queue opened read-only" : "already open");
		return NULL;
	}
	rc = mdb_txn_begin(q->env, NULL, 0, &txn);
	if (rc == MDB_MAP_RESIZED) {
		mdb_env_set_mapsize(q->env, 0);
		rc = mdb_txn_begin(q->env, NULL, 0, &txn);
	}
	if (rc != 0) {
		log_err("queue", "write transaction: %s", mdb_strerror(rc));
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
			log_err("queue", "%s: %s", what, mdb_strerror(rc));
	}
	return r;
}

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
queue_count_rcpt(struct queue_txn *t, const struct queue_msg *m,
    const struct queue_rcpt *rc, int sign)
{
	uint8_t k[9 + 256];
	char dom[256];
	size_t dn;

	k[0] = 'R';
	k[1] = (uint8_t)m->cls;
	k[2] = (uint8_t)rc->state;
	queue_count_add(t, k, 3, sign);
	if (rc->state != RCPT_PENDING && rc->state != RCPT_DEFERRED)
		return;
	queue_addr_domain(rc->addr, dom, sizeof(dom));
	dn = strlen(dom);
	k[0] = 'D';
	qbe64_put(k + 1, (uint64_t)(m->arrival / 60));
	memcpy(k + 9, dom, dn);
	queue_count_add(t, k, 9 + dn, sign);
}

void
queue_count_env(struct queue_txn *t, const struct queue_msg *m, int sign)
{
	uint8_t k[2];

	k[0] = 'M';
	k[1] = (uint8_t)m->cls;
	queue_count_add(t, k, 2, sign);
	k[0] = 'B';
	queue_count_add(t, k, 2, sign * (int64_t)m->size);
	if (m->flags & QMSG_HELD)
		queue_count_add(t, "H", 1, sign);
	queue_stats_env(t, m, sign);
}

void
queue_count_msg(struct queue_txn *t, const struct queue_msg *m, int sign)
{
	queue_count_env(t, m, sign);
	for (size_t i = 0; i < m->nrcpt; i++)
		queue_count_rcpt(t, m, &m->rcpts[i], sign);
}

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
			log_err("queue", "commit: %s", mdb_strerror(rc));
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

/* ---- loading ---- */

/* Moves every record of DB whose KLEN-byte key starts with id K(8) to
 * the corrupt db. */
static void
quarantine_range(
    struct queue_txn *t, enum qdbi db, const uint8_t k[8], size_t klen)
{
	size_t nl = strlen(dbnames[db]);
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

		memcpy(ck, dbnames[db], nl + 1);
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
queue_quarantine(struct queue_txn *t, uint64_t id, const char *why)
{
	static const enum qdbi dbs[] = { QDB_MSG, QDB_BODY, QDB_LEASE };
	char idstr[17];
	uint8_t k[8];
	MDB_val key, val;

	queue_id_format(id, idstr);
	log_warn("queue",
	    "%s: invalid record (%s): set aside in the corrupt "
	    "db",
	    idstr, why);
	qkey_id(k, id);
	for (size_t i = 0; i < sizeof(dbs) / sizeof(dbs[0]); i++) {
		uint8_t ck[32];
		size_t nl = strlen(dbnames[dbs[i]]);

		key.mv_size = 8;
		key.mv_data = k;
		if (mdb_get(t->txn, t->q->dbi[dbs[i]], &key, &val) != 0)
			continue;
		memcpy(ck, dbnames[dbs[i]], nl + 1);
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

enum queue_result
queue_load_in(struct queue *q, MDB_txn *txn, struct queue_txn *t, uint64_t id,
    queue_rcpt_pick pick, void *arg, struct queue_msg **out)
{
	uint8_t k[8];
	MDB_val key = { 8, k }, val;
	struct queue_msg view;
	struct queue_rcpt *rcpts = NULL, head;
	struct qwalk w;
	const char *why = NULL;
	size_t n = 0, cap = 0;
	int rc;

	*out = NULL;
	qkey_id(k, id);
	rc = mdb_get(txn, q->dbi[QDB_MSG], &key, &val);
	if (rc == MDB_NOTFOUND)
		return QUEUE_NOTFOUND;
	if (rc != 0) {
		log_err("queue", "load: %s", mdb_strerror(rc));
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
		queue_quarantine(t, id, why);
	} else {
		char idstr[17];

		queue_id_format(id, idstr);
		log_warn("queue", "%s: invalid %s record: skipped", idstr, why);
	}
	return QUEUE_CORRUPT;
}

enum queue_result
queue_msg_load(struct queue *q, uint64_t id, struct queue_msg **out)
{
	MDB_txn *txn = queue_rtxn(q);
	enum queue_result r;

	*out = NULL;
	if (txn == NULL)
		return QUEUE_ERR;
	r = queue_load_in(q, txn, NULL, id, NULL, NULL, out);
	queue_rtxn_done(q);
	return r;
}

enum queue_result
queue_msg_load_leased(struct queue *q, uint64_t id, uint32_t lo, uint32_t hi,
    struct queue_msg **out, size_t *total)
{
	MDB_txn *txn = queue_rtxn(q);
	uint8_t k[8];
	MDB_val key = { 8, k }, val;
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
	qkey_id(k, id);
	rc = mdb_get(txn, q->dbi[QDB_MSG], &key, &val);
	if (rc != 0) {
		queue_rtxn_done(q);
		if (rc == MDB_NOTFOUND)
			return QUEUE_NOTFOUND;
		log_err("queue", "load: %s", mdb_strerror(rc));
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
		log_warn("queue", "%s: invalid record: skipped", idstr);
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
	return queue_load_in(t->q, t->txn, t, id, NULL, NULL, out);
}

enum queue_result
queue_txn_load_some(struct queue_txn *t, uint64_t id, queue_rcpt_pick pick,
    void *arg, struct queue_msg **out)
{
	if (t->err != QUEUE_OK) {
		*out = NULL;
		return t->err;
	}
	return queue_load_in(t->q, t->txn, t, id, pick, arg, out);
}

enum queue_result
queue_txn_load_rcpts(struct queue_txn *t, uint64_t id, const uint32_t *idx,
    size_t n, queue_rcpt_pick pick, void *arg, struct queue_msg **out)
{
	uint8_t k[12];
	MDB_val key = { 8, k }, val;
	struct queue_msg view;
	struct queue_rcpt *rcpts, head;
	size_t got = 0;
	int rc;

	*out = NULL;
	if (t->err != QUEUE_OK)
		return t->err;
	qkey_id(k, id);
	rc = mdb_get(t->txn, t->q->dbi[QDB_MSG], &key, &val);
	if (rc != 0)
		return rc == MDB_NOTFOUND ? QUEUE_NOTFOUND
					  : queue_txn_fail(t, rc, "msg");
	if (!qrec_msg_decode(val.mv_data, val.mv_size, &view)) {
		queue_quarantine(t, id, "envelope");
		return QUEUE_CORRUPT;
	}
	view.id = id;
	queue_id_format(id, view.idstr);
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
			queue_quarantine(t, id, "recipient");
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
queue_env_get(struct queue_txn *t, uint64_t id, struct queue_msg **out)
{
	uint8_t k[8];
	MDB_val key = { 8, k }, val;
	struct queue_msg view, *m;
	int rc;

	*out = NULL;
	if (t->err != QUEUE_OK)
		return t->err;
	qkey_id(k, id);
	rc = mdb_get(t->txn, t->q->dbi[QDB_MSG], &key, &val);
	if (rc != 0)
		return rc == MDB_NOTFOUND ? QUEUE_NOTFOUND
					  : queue_txn_fail(t, rc, "msg");
	if (!qrec_msg_decode(val.mv_data, val.mv_size, &view)) {
		queue_quarantine(t, id, "envelope");
		return QUEUE_CORRUPT;
	}
	/* the envelope alone: no recipient array, whatever nrcpt says */
	m = xmalloc(sizeof(*m));
	*m = view;
	m->id = id;
	queue_id_format(id, m->idstr);
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

/* Inflates a body record into a malloc'd buffer. */
static enum queue_result
body_decode(uint64_t id, const MDB_val *val, char **buf, size_t *len)
{
	const uint8_t *p = val->mv_data;
	uint64_t raw;
	uLongf outlen;
	char idstr[17];
	char *out;

	queue_id_format(id, idstr);
	if (val->mv_size < 14 || p[0] != QREC_VERSION || p[1] > 1)
		goto bad;
	raw = qbe64_get(p + 2);
	if (raw > ((uint64_t)1 << 34))
		goto bad;
	out = malloc((size_t)raw + 1);
	if (out == NULL)
		return QUEUE_ERR;
	outlen = (uLongf)raw;
	if (p[1] == 0) {
		if (val->mv_size - 14 != raw) {
			free(out);
			goto bad;
		}
		memcpy(out, p + 14, (size_t)raw);
	} else if (uncompress((Bytef *)out, &outlen, p + 14,
		       (uLong)(val->mv_size - 14)) != Z_OK ||
	    outlen != raw) {
		free(out);
		goto bad;
	}
	if (crc32(0, (const Bytef *)out, (uInt)raw) != qbe32_get(p + 10)) {
		free(out);
		goto bad;
	}
	out[raw] = '\0';
	*buf = out;
	*len = (size_t)raw;
	return QUEUE_OK;
bad:
	log_warn("queue", "%s: invalid body record", idstr);
	return QUEUE_CORRUPT;
}

enum queue_result
queue_body_load(struct queue *q, uint64_t id, char **buf, size_t *len)
{
	MDB_txn *txn = queue_rtxn(q);
	uint8_t k[8];
	MDB_val key = { 8, k }, val;
	enum queue_result r;
	int rc;

	*buf = NULL;
	*len = 0;
	if (txn == NULL)
		return QUEUE_ERR;
	qkey_id(k, id);
	rc = mdb_get(txn, q->dbi[QDB_BODY], &key, &val);
	if (rc != 0)
		r = rc == MDB_NOTFOUND ? QUEUE_NOTFOUND : QUEUE_ERR;
	else
		r = body_decode(id, &val, buf, len);
	queue_rtxn_done(q);
	return r;
}

enum queue_result
queue_txn_body_load(struct queue_txn *t, uint64_t id, char **buf, size_t *len)
{
	uint8_t k[8];
	MDB_val key = { 8, k }, val;
	int rc;

	*buf = NULL;
	*len = 0;
	if (t->err != QUEUE_OK)
		return t->err;
	qkey_id(k, id);
	rc = mdb_get(t->txn, t->q->dbi[QDB_BODY], &key, &val);
	if (rc != 0)
		return rc == MDB_NOTFOUND ? QUEUE_NOTFOUND : QUEUE_ERR;
	return body_decode(id, &val, buf, len);
}

/* ---- storing ---- */

enum queue_result
queue_put_msg(struct queue_txn *t, const struct queue_msg *m)
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
queue_put_rcpt(struct queue_txn *t, uint64_t id, const struct queue_rcpt *rc)
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

enum queue_result
queue_put_hist(struct queue_txn *t, uint64_t id, uint32_t idx,
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

/*
 * qrec_body_encode()'s compressors, per thread and per level.  Bodies are
 * zlib streams (RFC 1950) written by libdeflate, which takes 40% less CPU
 * than zlib's deflate at the same level (4 KiB messages, level 1: 18 us
 * against 30 us here), and read by zlib's inflate.
 */
static __thread struct libdeflate_compressor *zc[13];

void
qrec_thread_done(void)
{
	for (size_t i = 0; i < sizeof(zc) / sizeof(zc[0]); i++) {
		libdeflate_free_compressor(zc[i]);
		zc[i] = NULL;
	}
}

void
qrec_body_encode(struct qbuf *b, const char *body, size_t len, int level)
{
	size_t bound, n;

	if (level < 1 || level > 12)
		level = 6;
	if (zc[level] == NULL &&
	    (zc[level] = libdeflate_alloc_compressor(level)) == NULL)
		abort();
	bound = libdeflate_zlib_compress_bound(zc[level], len);
	b->n = 0;
	qbuf_u8(b, QREC_VERSION);
	qbuf_u8(b, 1);
	qbuf_u64(b, len);
	qbuf_u32(b, libdeflate_crc32(0, body, len)); /* = zlib crc32() */
	if (b->cap < 14 + bound) {
		b->cap = 14 + bound;
		b->p = xrealloc(b->p, b->cap);
	}
	n = libdeflate_zlib_compress(zc[level], body, len, b->p + 14, bound);
	if (n == 0)
		abort(); /* cannot be: the buffer is the bound */
	b->n = 14 + n;
}

enum queue_result
queue_put_body_rec(struct queue_txn *t, uint64_t id, const void *rec, size_t n)
{
	uint8_t k[8];
	MDB_val key = { 8, k }, val = { n, (void *)(uintptr_t)rec };

	if (t->err != QUEUE_OK)
		return t->err;
	qkey_id(k, id);
	return queue_txn_fail(
	    t, mdb_put(t->txn, t->q->dbi[QDB_BODY], &key, &val, 0), "put body");
}

void
queue_expiry_times(const struct queue *q, struct queue_msg *m)
{
	const struct cfg_scope *sc = cfg_scope(q->cfg, NULL);
	int64_t w = cfg_time(sc, CFG_T_QUEUEWARN, m->cls, false);
	int64_t r = cfg_time(sc, CFG_T_QUEUERETURN, m->cls, false);

	m->warn_at = w > 0 ? m->arrival + w : 0;
	m->return_at = m->arrival + (r > 0 ? r : 0);
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
		queue_put_rcpt(t, m->id, rc);
	}
	queue_put_body_rec(t, m->id, rec, reclen);
	if (!(m->flags & QMSG_HELD) && due != INT64_MAX)
		queue_sched_set(t, m, due);
	if (!(m->flags & QMSG_HELD))
		queue_expiry_index(t, m, true);
	queue_put_msg(t, m);
	queue_count_msg(t, m, 1);
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
	queue_expiry_times(t->q, m);
	r = queue_msg_store(t, m, body, len, 6);
	if (r == QUEUE_OK && id_out != NULL)
		*id_out = m->id;
	queue_msg_free(m);
	return r;
}

/* Deletes KEY from DB, a missing key being fine. */
static void
del_key(struct queue_txn *t, enum qdbi db, const void *k, size_t n)
{
	MDB_val key = { n, (void *)k };
	int rc = mdb_del(t->txn, t->q->dbi[db], &key, NULL);

	if (rc != MDB_NOTFOUND)
		queue_txn_fail(t, rc, "delete");
}

/* Deletes every attempt record of message ID (all its recipients). */
static void
hist_remove(struct queue_txn *t, uint64_t id)
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
		queue_count_rcpt(t, m, &rc, -1);
		queue_txn_fail(t, mdb_cursor_del(w.c, 0), "delete rcpt");
		/* the cursor is now on the next record: MDB_NEXT returns it
		 * (LMDB's C_DEL) */
	}
	if (w.bad || (!bad && t->err == QUEUE_OK && w.n != m->nrcpt))
		bad = true;
	qwalk_close(&w);
	if (bad && t->err == QUEUE_OK) {
		/* what is left goes aside; the counts of it stay */
		queue_quarantine(t, id, "recipient");
		queue_env_free(m);
		return QUEUE_CORRUPT;
	}
	hist_remove(t, id);
	qkey_id(k, id);
	del_key(t, QDB_BODY, k, 8);
	del_key(t, QDB_LEASE, k, 8);
	queue_sched_set(t, m, 0);
	queue_expiry_index(t, m, false);
	del_key(t, QDB_MSG, k, 8);
	queue_count_env(t, m, -1);
	if (t->err == QUEUE_OK)
		queue_txn_log(t, "%s: removed", m->idstr);
	queue_env_free(m);
	return t->err;
}
