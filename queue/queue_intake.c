/*
 * queue_intake.c - exactly-once intake of spool_dir/incoming/ into the
 * queue, and its commit loop: inotify plus rescans list the names
 * (queue_intake_names.c); reader threads check, read, parse, build and
 * compress each file off the write txn into a ring
 * (queue_intake_read.c); the main thread files the ring in order, many
 * files into one write txn (group commit) together with their
 * identities; files are unlinked only after the commit, by unlinker
 * threads (queue_intake_unlink.c); a file that cannot be queued goes to
 * bad/ (queue_intake_bad.c).
 *
 * Public: queue_intake_open(), queue_intake_fd(), queue_intake_wake_fd(),
 * queue_intake_run(),
 * queue_intake_rescan(), queue_intake_close(),
 * queue_intake_stats_get(); (to the intake files)
 * intake_id_room(), intake_id_take().
 *
 * One run: list (names from inotify, a due rescan, the settle list),
 * pause while the disk or the map has no room, fill a txn from the ring
 * (intake_fill()), commit, then roll back (intake_rollback(): the names
 * pending again) or hand off (intake_handoff(): the files to the
 * unlinkers).
 *
 * Invariants: a file is queued at most once and unlinked only after the
 * txn holding its message and its identity committed (see the other
 * intake files for how).  Intake pauses (files stay in incoming/) on
 * MDB_MAP_FULL (the txn is aborted; the batch shrinks, and grows back
 * after a commit), while the map has less room than a file needs (until
 * a twentieth of it is free), and while the file system of queue_dir or
 * spool_dir has less than min_free_space free.  A reader builds the
 * stored message with its queue id, so ids are handed out from ranges
 * reserved by an earlier, committed txn (see intake_id_take()): no other
 * writer can allocate them, and a range lost to a crash or a failed txn
 * is just never used.  Each class has ranges of its own, and a reader
 * takes its file's id once the parse has told the class: a class's
 * messages sit together in every tree keyed by id, so when one class is
 * delivered ahead of the others (a backlog drained by priority) its
 * removals free whole pages instead of rewriting pages the other
 * classes still fill.  Within a class ids grow with arrival, give or
 * take the files the readers prepare at once.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "priv.h"
#include "queue_intake_int.h"

#define IDRANGE 65536 /* ids reserved at a time */

/* ---- queue ids ---- */

/* Reserves the first id range of each class (a txn of its own; before
 * the readers start). */
static void
ids_initial(struct queue_intake *qi)
{
	struct queue_txn *t = queue_txn_begin(qi->q);
	uint64_t first[CFG_NCLASS];

	if (t == NULL)
		return;
	for (int c = 0; c < CFG_NCLASS; c++)
		first[c] = queue_id_reserve(t, IDRANGE);
	if (queue_txn_commit(t) != QUEUE_OK)
		return;
	for (int c = 0; c < CFG_NCLASS; c++) {
		qi->id_next[c] = first[c];
		qi->id_end[c] = first[c] + IDRANGE;
	}
}

/* The ids class C has left, usable and spare (under rmu). */
static uint64_t
ids_left(const struct queue_intake *qi, int c)
{
	return (qi->id_end[c] - qi->id_next[c]) +
	    (qi->id_spare_end[c] - qi->id_spare[c]);
}

bool
intake_id_room(const struct queue_intake *qi)
{
	for (int c = 0; c < CFG_NCLASS; c++)
		if (ids_left(qi, c) <= qi->noid)
			return false;
	return true;
}

/* Moves to the class's spare range when its usable one is used up. */
bool
intake_id_take(struct queue_intake *qi, enum cfg_class cls, uint64_t *id)
{
	int c = (unsigned)cls < CFG_NCLASS ? (int)cls : CFG_NORMAL;

	if (qi->id_next[c] == qi->id_end[c]) {
		if (qi->id_spare[c] == qi->id_spare_end[c])
			return false;
		qi->id_next[c] = qi->id_spare[c];
		qi->id_end[c] = qi->id_spare_end[c];
		qi->id_spare[c] = qi->id_spare_end[c] = 0;
	}
	*id = qi->id_next[c]++;
	return true;
}

/* The open txn reserves nothing (it failed, or committed). */
static void
ids_drop(struct queue_intake *qi)
{
	for (int c = 0; c < CFG_NCLASS; c++)
		qi->id_res[c] = qi->id_res_end[c] = 0;
}

/* Reserves in T the next id range of each class whose ids left run
 * low. */
static void
ids_reserve(struct queue_intake *qi, struct queue_txn *t)
{
	bool low[CFG_NCLASS];

	pthread_mutex_lock(&qi->rmu);
	for (int c = 0; c < CFG_NCLASS; c++)
		low[c] = qi->id_spare[c] == qi->id_spare_end[c] &&
		    qi->id_end[c] - qi->id_next[c] < IDRANGE / 2;
	pthread_mutex_unlock(&qi->rmu);
	ids_drop(qi);
	for (int c = 0; c < CFG_NCLASS; c++) {
		if (low[c]) {
			qi->id_res[c] = queue_id_reserve(t, IDRANGE);
			qi->id_res_end[c] = qi->id_res[c] + IDRANGE;
		}
	}
}

/* Whether the open txn reserves ids. */
static bool
ids_reserving(const struct queue_intake *qi)
{
	for (int c = 0; c < CFG_NCLASS; c++)
		if (qi->id_res[c] != qi->id_res_end[c])
			return true;
	return false;
}

/* T committed: its reservations become the spare ranges. */
static void
ids_committed(struct queue_intake *qi)
{
	pthread_mutex_lock(&qi->rmu);
	for (int c = 0; c < CFG_NCLASS; c++) {
		if (qi->id_res[c] != qi->id_res_end[c]) {
			qi->id_spare[c] = qi->id_res[c];
			qi->id_spare_end[c] = qi->id_res_end[c];
		}
	}
	pthread_mutex_unlock(&qi->rmu);
	ids_drop(qi);
}

/* ---- filing one file ---- */

/* A write txn being filled with prepared files (see intake_fill()). */
struct batch {
	struct queue_txn *t;
	size_t max; /* files at most */
	size_t budget; /* map room left */
	char **names; /* the files filed (flying), to unlink after commit */
	uint64_t *ids; /* their queue ids */
	size_t n;
	size_t nleft; /* of them, leftovers queued before (IMP_LEFTOVER) */
	struct qbuf keys; /* their identity keys: u16 len | key, repeated */
	bool noroom; /* stopped for want of map room */
};

/* Adds P's identity key to the keys of B's files to unlink. */
static void
batch_key_add(struct batch *b, const struct prep *p)
{
	uint8_t hdr[2] = { (uint8_t)(p->iklen >> 8), (uint8_t)p->iklen };

	qbuf_put(&b->keys, hdr, 2);
	qbuf_put(&b->keys, p->ik, p->iklen);
}

/* Files prepared file P into B's txn (main thread). */
static enum import_result
prep_store(struct queue_intake *qi, struct batch *b, struct prep *p)
{
	struct queue_txn *t = b->t;
	const struct stat *st = &p->st;
	MDB_val key, val;
	struct queue_msg m;
	char loop[160] = "";
	char ebuf[QUEUE_ESC_MAX], idstr[17];
	uint8_t iv[16]; /* the identity's value: id(8) time(8) */
	int rc;

	if (p->r != IMP_QUEUED)
		return p->r;
	/* a stored message takes at most about twice its size */
	if ((size_t)st->st_size * 2 + 4096 > b->budget)
		return IMP_NOROOM;
	b->budget -= (size_t)st->st_size * 2 + 4096;
	/* the identity first, with MDB_NOOVERWRITE: one lookup says whether
	 * the file was queued already and records it if not (the txn is
	 * aborted as a whole if storing the message fails after) */
	qbe64_put(iv, p->id);
	qbe64_put(iv + 8, (uint64_t)t->now);
	key.mv_size = p->iklen;
	key.mv_data = p->ik;
	val.mv_size = sizeof(iv);
	val.mv_data = iv;
	rc = mdb_put(t->txn, t->q->dbi[QDB_IDENT], &key, &val, MDB_NOOVERWRITE);
	if (rc == MDB_KEYEXIST && val.mv_size < 8) {
		/* a value too short to name a message: replaced, as any
		 * identity not recorded */
		val.mv_size = sizeof(iv);
		val.mv_data = iv;
		rc = mdb_put(t->txn, t->q->dbi[QDB_IDENT], &key, &val, 0);
	}
	if (rc != 0 && rc != MDB_KEYEXIST) {
		queue_txn_fail(t, rc, "ident");
		return IMP_RETRY;
	}
	if (rc == MDB_KEYEXIST) {
		uint64_t id = qbe64_get(val.mv_data);

		for (size_t i = 0; i < b->n; i++)
			if (b->ids[i] == id)
				return IMP_SKIP; /* already in this very txn */
		/* committed before a crash or a stop, not removed: the
		 * unlinkers finish the job (the main thread never waits for
		 * an unlink; after a crash there can be UNLINK_TRAIL) */
		queue_id_format(id, idstr);
		log_info("pickup", "%s: already queued as %s: to be removed",
		    queue_name_escape(ebuf, p->name), idstr);
		p->id = id;
		batch_key_add(b, p);
		return IMP_LEFTOVER;
	}
	memset(&m, 0, sizeof(m));
	m.id = p->id;
	m.cls = (enum cfg_class)p->pr.cls;
	m.arrival = p->now;
	m.uid = (uint32_t)st->st_uid;
	m.sender = p->pr.sender ? p->pr.sender : p->owner;
	m.envid = p->pr.envid;
	m.ret = p->pr.ret;
	m.nrcpt = p->pr.nrcpt;
	m.rcpts = xcalloc(p->pr.nrcpt, sizeof(*m.rcpts));
	for (size_t i = 0; i < p->pr.nrcpt; i++) {
		m.rcpts[i].addr = p->pr.rcpts[i].addr;
		m.rcpts[i].orcpt = p->pr.rcpts[i].orcpt;
		m.rcpts[i].notify = p->pr.rcpts[i].notify;
		m.rcpts[i].state = RCPT_PENDING;
		m.rcpts[i].next_attempt = p->now;
	}
	queue_expiry_times_set(qi->q, &m);
	if (p->pr.nreceived >= p->hoplimit) {
		/* A mail loop: every recipient bounced now with 5.4.6, as
		 * Postfix's cleanup does.  The return entry, due now, has
		 * expiry/ send the notice (never to <>) and remove the
		 * message in one txn; nothing is ever scheduled. */
		snprintf(loop, sizeof(loop),
		    "mail forwarding loop detected: %u Received: headers, "
		    "hopcount_limit is %lld",
		    p->pr.nreceived, (long long)p->hoplimit);
		for (size_t i = 0; i < m.nrcpt; i++) {
			m.rcpts[i].state = RCPT_BOUNCED;
			m.rcpts[i].next_attempt = 0;
			m.rcpts[i].reply = loop;
			memcpy(m.rcpts[i].dsn_status, "5.4.6", 6);
		}
		m.warn_at = 0;
		m.return_at = p->now;
		if (m.cls < CFG_NCLASS)
			queue_tally_add(
			    t, QTALLY_LOOP + (unsigned)m.cls, m.nrcpt);
	}
	/* who handed it in, as Postfix's pickup logs it; then the qmgr line */
	queue_id_format(m.id, idstr);
	/* the sender as the qmgr line has it (the log escapes what
	 * needs it and keeps UTF-8), so that both name it the same */
	queue_txn_log_as(t, "pickup", "%s: uid=%u from=<%.300s>", idstr,
	    (unsigned)st->st_uid, m.sender ? m.sender : "");
	queue_msg_store_rec(t, &m, p->rec.p, p->rec.n, p->rawlen);
	for (size_t i = 0; loop[0] != '\0' && i < m.nrcpt; i++)
		queue_txn_log(t,
		    "%s: to=<%.400s>, relay=none, delay=0, "
		    "delays=0/0/0/0, dsn=5.4.6, status=bounced (%s), "
		    "tries=0",
		    m.idstr, m.rcpts[i].addr, loop);
	free(m.rcpts);
	if (t->err != QUEUE_OK)
		return IMP_RETRY;
	batch_key_add(b, p);
	return IMP_QUEUED;
}

/* ---- pauses ---- */

/* Enters (and logs, once) the paused state of a full map. */
static enum queue_intake_result
intake_pause(struct queue_intake *qi)
{
	if (!qi->paused) {
		qi->paused = true;
		log_err("pickup",
		    "queue full (queue_map_size %lld bytes): intake paused, "
		    "files stay in incoming/",
		    (long long)cfg_int(
			cfg_scope(qi->q->cfg, NULL), CFG_QUEUE_MAP_SIZE));
	}
	return QI_PAUSED;
}

/*
 * Whether the file systems of queue_dir and spool_dir have at least
 * min_free_space free for unprivileged use (statvfs f_bavail, a few
 * microseconds, at each call); logs the pause and the resume once each.
 * Paused, intake resumes only with a tenth more free, so it does not
 * flap on the edge.
 */
static bool
space_ok(struct queue_intake *qi)
{
	const struct cfg_scope *g = cfg_scope(qi->q->cfg, NULL);
	int64_t min = cfg_int(g, CFG_MIN_FREE_SPACE);
	const char *dir = cfg_str(g, CFG_QUEUE_DIR);
	struct statvfs vq, vs;
	unsigned long long fq, fs, lo;
	const char *where;

	if (min <= 0) {
		qi->nospace = false;
		return true;
	}
	if (statvfs(dir, &vq) < 0 || fstatvfs(qi->din, &vs) < 0)
		return !qi->nospace; /* cannot tell: as it was */
	fq = (unsigned long long)vq.f_bavail * vq.f_frsize;
	fs = (unsigned long long)vs.f_bavail * vs.f_frsize;
	lo = fq < fs ? fq : fs;
	where = fq < fs ? dir : qi->incoming;
	if (!qi->nospace && lo < (unsigned long long)min) {
		qi->nospace = true;
		log_err("pickup",
		    "only %llu bytes free on the file system of %s, less "
		    "than min_free_space (%lld): intake paused, files stay "
		    "in incoming/",
		    lo, where, (long long)min);
	} else if (qi->nospace &&
	    lo >= (unsigned long long)min + (unsigned long long)min / 10) {
		qi->nospace = false;
		log_info("pickup",
		    "%llu bytes free on the file systems of the queue and "
		    "the spool again: intake resumed",
		    lo);
	}
	return !qi->nospace;
}

/* Nothing to do now: idle, or waiting for files to settle (the caller
 * comes back within a second). */
static enum queue_intake_result
intake_idle(const struct queue_intake *qi)
{
	return qi->nsettle > 0 ? QI_PAUSED : QI_IDLE;
}

/*
 * No file to take: the identities of the files the unlinkers removed
 * are deleted (a txn per job they finish: one for a whole burst's would
 * touch every leaf of the tree at once), and intake waits for them
 * (without blocking the caller's loop: a burst's removals can take
 * seconds); once they are done, intake is idle.
 */
static enum queue_intake_result
intake_rest(struct queue_intake *qi)
{
	intake_readers_tidy(qi);
	intake_unlink_collect(qi);
	intake_idents_flush(qi);
	if (qi->trail > 0)
		return intake_unlink_wake_arm(qi) ? QI_WAIT : QI_MORE;
	if (qi->head != qi->tail)
		return QI_MORE; /* a file came under a name unlinked */
	return intake_idle(qi);
}

/* ---- the commit loop ---- */

/* How many files the next txn may take: intake_batch, less after
 * MDB_MAP_FULL, at most MAX_FILES. */
static size_t
batch_size(struct queue_intake *qi, size_t max_files)
{
	size_t cfgbatch = (size_t)cfg_int(
	    cfg_scope(qi->q->cfg, NULL), CFG_INTAKE_BATCH);
	size_t n;

	if (qi->batch_limit == 0 || qi->batch_limit > cfgbatch)
		qi->batch_limit = cfgbatch;
	n = max_files < qi->batch_limit ? max_files : qi->batch_limit;
	return n == 0 ? 1 : n;
}

/*
 * Files prepared files from the ring into B's txn, in ring order, until
 * B is full, the ring is empty, the map has no room for the next one
 * (B->noroom; it stays first in the ring) or the txn failed.  A file
 * queued stays in flight with B; one to look at later goes on the
 * settle list; the flight of any other ends.
 */
static void
intake_fill(struct queue_intake *qi, struct batch *b)
{
	b->names = xcalloc(b->max, sizeof(*b->names));
	b->ids = xcalloc(b->max, sizeof(*b->ids));
	while (b->n < b->max && b->t->err == QUEUE_OK) {
		struct prep *p;
		enum import_result ir;

		intake_ring_feed(qi);
		if ((p = intake_ring_take(qi)) == NULL)
			break;
		ir = prep_store(qi, b, p);
		if (ir == IMP_NOROOM) {
			b->noroom = true; /* P stays first in the ring */
			break;
		}
		if (ir == IMP_QUEUED || ir == IMP_LEFTOVER ||
		    b->t->err != QUEUE_OK) {
			/* queued (now or before), or to put back when the
			 * txn fails: flying until unlinked */
			b->nleft += ir == IMP_LEFTOVER;
			b->ids[b->n] = p->id;
			b->names[b->n++] = p->name;
		} else if (ir == IMP_WAIT || ir == IMP_RETRY) {
			/* looked at later */
			intake_settle_add(qi, xstrdup(p->name), p->due);
			intake_flight_end(qi, p->name, false);
		} else {
			intake_flight_end(qi, p->name, false);
		}
		intake_ring_pop(qi);
	}
}

/* Frees what B holds (not the txn, not the names). */
static void
batch_free(struct batch *b)
{
	free(b->names);
	free(b->ids);
	free(b->keys.p);
}

/* Nothing was filed and nothing else needs the txn: it is aborted. */
static enum queue_intake_result
intake_empty(struct queue_intake *qi, struct batch *b)
{
	queue_txn_abort(b->t);
	batch_free(b);
	if (b->noroom)
		return intake_pause(qi);
	return qi->head == qi->tail && qi->rhead == qi->rtail && !qi->rescan
	    ? intake_rest(qi)
	    : QI_MORE;
}

/*
 * The commit failed (R): nothing was written, so every file stays and is
 * tried again (with new ids: the reservation went with the txn).  On
 * MDB_MAP_FULL the batch is halved first, then intake pauses.
 */
static enum queue_intake_result
intake_rollback(struct queue_intake *qi, struct batch *b, enum queue_result r)
{
	ids_drop(qi);
	for (size_t i = 0; i < b->n; i++)
		intake_flight_end(qi, b->names[i], true);
	batch_free(b);
	if (r == QUEUE_MAPFULL && qi->batch_limit > 1) {
		qi->batch_limit /= 2;
		return QI_MORE;
	}
	if (r == QUEUE_MAPFULL)
		return intake_pause(qi);
	if (!qi->paused) {
		qi->paused = true;
		log_err("pickup",
		    "intake paused by a queue error; files "
		    "stay in incoming/");
	}
	return QI_PAUSED;
}

/*
 * The commit succeeded: the files go to the unlinkers (unlinked only if
 * still the very file read), their identities in a later txn.  When
 * nothing else waits, intake rests (intake_rest()).
 */
static enum queue_intake_result
intake_handoff(struct queue_intake *qi, struct batch *b)
{
	size_t cfgbatch = (size_t)cfg_int(
	    cfg_scope(qi->q->cfg, NULL), CFG_INTAKE_BATCH);

	ids_committed(qi);
	qi->nqueued += b->n - b->nleft;
	if (qi->paused) {
		qi->paused = false;
		log_info("pickup", "queue has room again: intake resumed");
	}
	if (qi->batch_limit < cfgbatch)
		qi->batch_limit *= 2;
	qi->idents.n = 0; /* deleted in the txn */
	intake_unlink_push(qi, b->names, b->ids, b->n, b->keys);
	if (qi->head != qi->tail || qi->rhead != qi->rtail || qi->rescan)
		return QI_MORE;
	return intake_rest(qi);
}

enum queue_intake_result
queue_intake_run(struct queue_intake *qi, size_t max_files)
{
	struct batch b;
	enum queue_result r;
	bool ring_empty;

	intake_unlink_wake_clear(qi);
	intake_names_list(qi);
	intake_unlink_collect(qi);
	if (!space_ok(qi))
		return QI_PAUSED;
	if (qi->trail >= UNLINK_TRAIL && intake_unlink_wake_arm(qi))
		return QI_WAIT; /* the removals are too far behind */
	memset(&b, 0, sizeof(b));
	b.max = batch_size(qi, max_files);
	intake_ring_feed(qi);
	ring_empty = !intake_ring_head(qi);
	if (ring_empty && qi->head == qi->tail)
		return intake_rest(qi);
	b.budget = queue_room_get(qi->q);
	if (qi->paused &&
	    b.budget < (size_t)cfg_int(
			   cfg_scope(qi->q->cfg, NULL), CFG_QUEUE_MAP_SIZE) /
		    20)
		return QI_PAUSED; /* wait for real room: no flapping */
	if ((b.t = queue_txn_begin(qi->q)) == NULL)
		return QI_PAUSED;
	intake_idents_delete(qi, b.t);
	ids_reserve(qi, b.t);
	intake_fill(qi, &b);
	if (b.n == 0 && b.t->err == QUEUE_OK && qi->idents.n == 0 &&
	    !ids_reserving(qi))
		return intake_empty(qi, &b);
	queue_tally_add(b.t, QTALLY_INTAKE, b.n - b.nleft);
	r = queue_txn_commit(b.t);
	if (r != QUEUE_OK)
		return intake_rollback(qi, &b, r);
	return intake_handoff(qi, &b);
}

/* ---- opening and closing ---- */

struct queue_intake *
queue_intake_open(struct queue *q, const struct cfg *cfg)
{
	const struct cfg_scope *sc = cfg_scope(cfg, NULL);
	const char *spool = cfg_str(sc, CFG_SPOOL_DIR);
	const char *host = cfg_str(sc, CFG_HOSTNAME);
	struct queue_intake *qi = xcalloc(1, sizeof(*qi));
	char path[4096];

	qi->q = q;
	qi->din = qi->dbad = qi->ifd = qi->wakefd = -1;
	qi->rescan = true;
	qi->scap = 1024;
	pthread_mutex_init(&qi->rmu, NULL);
	pthread_cond_init(&qi->rwork, NULL);
	pthread_cond_init(&qi->rdone, NULL);
	pthread_mutex_init(&qi->badmu, NULL);
	pthread_mutex_init(&qi->stuckmu, NULL);
	qi->badseq = (uint64_t)rq_now_us();
	qi->set = xcalloc(qi->scap, sizeof(*qi->set));
	if (host[0] == '\0') {
		if (gethostname(qi->hostname, sizeof(qi->hostname) - 1) < 0)
			strcpy(qi->hostname, "localhost");
	} else {
		snprintf(qi->hostname, sizeof(qi->hostname), "%s", host);
	}
	snprintf(path, sizeof(path), "%s/incoming", spool);
	qi->incoming = xstrdup(path);
	snprintf(path, sizeof(path), "%s/bad", spool);
	qi->bad = xstrdup(path);
	/* The daemon gives these their modes at start (cfg/priv.c); this
	 * makes them for other callers: drop dirs 3733, see priv.h. */
	if (queue_dir_create(qi->incoming, PRIV_DROP_MODE) < 0 ||
	    queue_dir_create(qi->bad, 0700) < 0) {
		log_err("pickup", "spool %s: %s", spool, strerror(errno));
		goto fail;
	}
	snprintf(path, sizeof(path), "%s/tmp", spool);
	qi->tmp = xstrdup(path);
	if (queue_dir_create(path, PRIV_DROP_MODE) < 0) {
		log_err("pickup", "%s: %s", path, strerror(errno));
		goto fail;
	}
	qi->din = open(
	    qi->incoming, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	qi->dbad = open(
	    qi->bad, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (qi->din < 0 || qi->dbad < 0) {
		log_err("pickup", "spool %s: %s", spool, strerror(errno));
		goto fail;
	}
	intake_watch_start(qi);
	intake_bad_sweep(qi);
	intake_idents_prune(qi);
	ids_initial(qi);
	intake_unlinkers_start(qi);
	intake_readers_start(qi);
	return qi;
fail:
	queue_intake_close(qi);
	return NULL;
}

int
queue_intake_fd(const struct queue_intake *qi)
{
	return qi->ifd;
}

int
queue_intake_wake_fd(const struct queue_intake *qi)
{
	return qi->wakefd;
}

void
queue_intake_rescan(struct queue_intake *qi)
{
	qi->rescan = true;
}

/* Whether the directory at PATH is the one open as FD. */
static bool
dir_same(const char *path, int fd)
{
	struct stat a, b;

	return fd < 0 ||
	    (lstat(path, &a) == 0 && fstat(fd, &b) == 0 &&
		a.st_dev == b.st_dev && a.st_ino == b.st_ino);
}

bool
queue_intake_dirs_same(const struct queue_intake *qi, const char **why)
{
	if (!dir_same(qi->incoming, qi->din)) {
		*why = qi->incoming;
		return false;
	}
	if (!dir_same(qi->bad, qi->dbad)) {
		*why = qi->bad;
		return false;
	}
	return true;
}

void
queue_intake_close(struct queue_intake *qi)
{
	if (qi == NULL)
		return;
	intake_readers_stop(qi);
	intake_unlinkers_stop(qi);
	pthread_mutex_destroy(&qi->rmu);
	pthread_cond_destroy(&qi->rwork);
	pthread_cond_destroy(&qi->rdone);
	pthread_mutex_destroy(&qi->badmu);
	pthread_mutex_destroy(&qi->stuckmu);
	intake_names_free(qi);
	intake_stuck_free(qi);
	if (qi->din >= 0)
		close(qi->din);
	if (qi->dbad >= 0)
		close(qi->dbad);
	if (qi->ifd >= 0)
		close(qi->ifd);
	free(qi->incoming);
	free(qi->bad);
	free(qi->tmp);
	free(qi);
}

/* What intake did so far; see queue.h. */
void
queue_intake_stats_get(
    const struct queue_intake *qi, struct queue_intake_stats *st)
{
	memset(st, 0, sizeof(*st));
	if (qi == NULL)
		return;
	st->queued = qi->nqueued;
	for (int i = 0; i < QUEUE_NBAD; i++)
		st->rejected[i] = __atomic_load_n(
		    &qi->nbad[i], __ATOMIC_RELAXED);
}
