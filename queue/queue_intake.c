/*
 * queue_intake.c - exactly-once intake of spool_dir/incoming/ into the
 * queue: inotify plus rescans list the names; reader threads check each
 * file (lstat, regular, one link, settled, size, O_NOFOLLOW open, fstat
 * matches before and after the read), read, parse, build and compress it
 * off the write txn, in a ring the main thread drains in order; many
 * files go into one write txn (group commit) together with their
 * identities; files are unlinked only after the commit, by unlinker
 * threads.
 *
 * Public: queue_intake_open(), queue_intake_fd(), queue_intake_run(),
 * queue_intake_rescan(), queue_intake_close().
 *
 * Invariants: a file is unlinked only after the txn holding its message
 * and its identity (dev, ino, size, mtime, name) committed; an identity
 * entry is deleted only after that unlink was made durable (fsync of
 * incoming/ succeeded: after an error the identities stay until the next
 * start prunes them), so a file found again with a recorded identity is
 * a leftover of a crash and is just unlinked.  A file is taken at once
 * when inotify says it was renamed in (IN_MOVED_TO) or closed after
 * writing (IN_CLOSE_WRITE); one only a listing found is taken once it
 * looks complete (see file_settled()), and one that changes while it is
 * read is looked at again later: nothing is queued half-written or
 * twice.  A file that cannot be queued is renamed into bad/ untouched
 * under a name the daemon chooses (never the submitter's), with
 * NAME.reason beside it naming the original; both are created without
 * replacing anything (O_EXCL, RENAME_NOREPLACE), and no open in bad/ can
 * block.  An entry that cannot even be moved is logged once, not once
 * per rescan.  Names from outside are escaped in log lines.  Intake
 * pauses (files stay in incoming/) on MDB_MAP_FULL (the txn is aborted)
 * and while the file system of queue_dir or spool_dir has less than
 * min_free_space free.  A reader builds the stored message with its
 * queue id, so ids are handed out from ranges reserved by an earlier,
 * committed txn (see ids_take()): no other writer can allocate them, and
 * a range lost to a crash or a failed txn is just never used.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "priv.h"
#include "queue_int.h"
#include "queue_parse.h"

#define TOMB ((char *)1)

/* Committed files to unlink: names and their identity keys. */
struct unlink_job {
	struct unlink_job *next;
	char **names;
	uint64_t *ids; /* the queue id each name was queued as */
	size_t n;
	struct qbuf keys; /* u16 len | key per name */
	size_t *off; /* offset of each name's key in keys */
	size_t claimed, finished; /* names handed out / done (under mu) */
	struct qbuf done; /* identities of the files unlinked (under mu) */
};

#define UNLINKERS 8 /* unlink(2) is latency-bound: it scales with threads */
#define UNLINK_JOBS 4 /* committed batches the unlinks may trail by */
#define UNLINK_CHUNK 32

/* IMP_RETRY: changed while read, look again later; IMP_WAIT: only a
 * listing found it and it may still be written: look again at its due
 * time. */
enum import_result { IMP_QUEUED, IMP_SKIP, IMP_RETRY, IMP_WAIT, IMP_NOROOM };

/*
 * A file that only a listing after the first found (no IN_MOVED_TO or
 * IN_CLOSE_WRITE for it) is taken once it has not changed for
 * SETTLE_SECS seconds, so that a program writing straight into
 * incoming/ is not read half-way; one whose last change was a rename
 * (ctime after mtime) is taken at once.  Longer than the pauses of a
 * slow writer, short enough not to hold mail up for long.
 */
#define SETTLE_SECS 5
#define SETTLE_MAX 4096 /* files waiting to settle, looked at again */

/* A spool file on its way in, prepared by a reader thread (or by the
 * main thread when no reader took it yet). */
struct prep {
	char *name;
	uint64_t id; /* its queue id, from a committed reservation */
	int64_t now; /* arrival */
	int64_t maxsize; /* max_message_size when it was handed out */
	int64_t maxrcpt, hoplimit; /* max_recipients, hopcount_limit then */
	int64_t due; /* IMP_WAIT, IMP_RETRY: when to look again */
	uint8_t how; /* enum pn_how: how it was found */
	enum { PREP_NEW, PREP_BUSY, PREP_DONE } state;
	enum import_result r; /* IMP_QUEUED: ready to store */
	struct stat st;
	size_t iklen;
	uint8_t ik[440]; /* its identity key */
	struct qp_result pr;
	char *owner; /* the sender from the file owner, when pr has none */
	struct qbuf rec; /* the encoded body record */
	size_t rawlen; /* the stored message's size */
	size_t held; /* bytes counted in the ring's rbytes */
};

/* A file to look at again at DUE (unix seconds). */
struct settle {
	uint64_t h; /* name_hash(name): the list is sorted by it */
	int64_t due;
	char *name;
};

/* A set of non-zero 64-bit fingerprints (open addressing). */
struct fpset {
	uint64_t *v;
	size_t cap, n;
};

#define RING 2048 /* files handed to the readers ahead of the txn */
#define RING_BYTES (32u << 20) /* readers pause when this much is ready */
#define MAXREADERS 8
#define IDRANGE 65536 /* ids reserved at a time */

struct queue_intake {
	struct queue *q; /* its cfg (q->cfg) follows reloads */
	char *incoming, *bad, *tmp;
	int din, dbad; /* directory fds */
	int64_t tmp_swept; /* when tmp/ was last swept of stale files */
	int ifd; /* inotify */
	bool rescan;
	bool listed_once; /* the start-up listing is done */
	int64_t watch_since; /* when inotify began (coarse clock, ns) */
	bool paused;
	size_t batch_limit; /* shrinks on map full, grows back */
	/* pending names: a FIFO plus a hash set for de-duplication */
	char **fifo;
	size_t head, tail, fcap;
	char **set;
	size_t scap, sused; /* sused counts tombstones too */
	/* identities whose files are unlinked: deleted in the next txn */
	struct qbuf idents; /* u16 len | key, repeated */
	/* the unlinker thread: unlinks committed files and fsyncs incoming/
	 * while the next batch is read; hands back the identities */
	pthread_t th[UNLINKERS];
	int nth;
	bool th_on, th_stop;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct unlink_job *jobs, **jobs_tail;
	size_t njobs;
	struct qbuf done; /* identities unlinked and synced (under mu) */
	/* the readers: a ring of files, [rhead, rnext) handed out or done,
	 * [rnext, rtail) waiting for a reader; the main thread files them
	 * from rhead in order */
	pthread_t rth[MAXREADERS];
	int nreaders;
	bool rstop;
	bool rwaiting; /* the main thread waits for a file (under rmu) */
	pthread_mutex_t rmu;
	pthread_cond_t rwork, rdone;
	struct prep ring[RING];
	size_t rhead, rnext, rtail;
	size_t rbytes; /* memory held by prepared files not yet filed */
	/* queue ids: [id_next, id_end) usable; [id_spare, id_spare_end) a
	 * committed range for after it; [id_res, id_res_end) reserved in
	 * the open txn, usable once it commits */
	uint64_t id_next, id_end, id_spare, id_spare_end, id_res, id_res_end;
	bool noatime_no; /* O_NOATIME was refused once: stop asking */
	pthread_mutex_t badmu; /* bad_rename() without RENAME_NOREPLACE */
	uint64_t badseq; /* the next name tried in bad/ (atomic) */
	struct settle *settle; /* looked at again later: by name hash */
	size_t nsettle;
	/* entries that cannot be taken or moved, logged once: the ones met
	 * since the last listing and in the listing before (fingerprints) */
	pthread_mutex_t stuckmu;
	struct fpset stuck_cur, stuck_prev;
	bool stuck_full; /* "too many" was logged */
	bool nospace; /* paused for want of disk space (min_free_space) */
	bool sync_failing; /* an fsync of incoming/ failed: logged (mu) */
	char hostname[256];
	/* queue_intake_stats_get(): messages committed (main thread), files
	 * moved to bad/ by reason (any thread: atomic) */
	uint64_t nqueued, nbad[QUEUE_NBAD];
};

/* ---- the pending set ---- */

static uint64_t
name_hash(const char *s)
{
	uint64_t h = 1469598103934665603ull;

	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

/* Finds NAME's slot (or the empty slot where it would go). */
static size_t
set_slot(const struct queue_intake *qi, const char *name, bool *found)
{
	size_t i = name_hash(name) & (qi->scap - 1), tomb = SIZE_MAX;

	*found = false;
	while (qi->set[i] != NULL) {
		if (qi->set[i] == TOMB) {
			if (tomb == SIZE_MAX)
				tomb = i;
		} else if (strcmp(qi->set[i], name) == 0) {
			*found = true;
			return i;
		}
		i = (i + 1) & (qi->scap - 1);
	}
	return tomb != SIZE_MAX ? tomb : i;
}

static void set_insert(struct queue_intake *, char *);

/* Rebuilds the set at capacity CAP (dropping tombstones). */
static void
set_rehash(struct queue_intake *qi, size_t cap)
{
	char **old = qi->set;
	size_t ocap = qi->scap;

	qi->set = xcalloc(cap, sizeof(*qi->set));
	qi->scap = cap;
	qi->sused = 0;
	for (size_t i = 0; i < ocap; i++)
		if (old[i] != NULL && old[i] != TOMB)
			set_insert(qi, old[i]);
	free(old);
}

static void
set_insert(struct queue_intake *qi, char *name)
{
	bool found;
	size_t i;

	if ((qi->sused + 1) * 2 > qi->scap)
		set_rehash(qi, qi->scap * 2);
	i = set_slot(qi, name, &found);
	if (qi->set[i] == NULL)
		qi->sused++;
	qi->set[i] = name;
}

static void
set_remove(struct queue_intake *qi, const char *name)
{
	bool found;
	size_t i = set_slot(qi, name, &found);

	if (found)
		qi->set[i] = TOMB;
}

/*
 * The most names kept pending: beyond it a name is left for a later
 * listing, so the daemon's memory does not grow with a backlog of
 * millions of files in incoming/.
 */
#define PENDING_MAX 65536

static bool settle_has(const struct queue_intake *, const char *);
static void settle_del(struct queue_intake *, const char *);

/*
 * How a name came to be pending, kept in one byte after its NUL:
 * PN_READY when inotify said the file is complete (renamed in, or
 * closed after writing); PN_FIRST when the start-up listing found it
 * (complete unless it changed since intake began to watch); PN_LISTED
 * when a later listing found it (it must look settled).
 */
enum pn_how { PN_LISTED = 0, PN_READY = 1, PN_FIRST = 2 };

static uint8_t *
pname_flag(char *s)
{
	return (uint8_t *)s + strlen(s) + 1;
}

/* Adds NAME to the pending names (HOW it was found) unless it is there
 * already; returns false when the pending list is full (a rescan will
 * find NAME). */
static bool
pending_add(struct queue_intake *qi, const char *name, enum pn_how how)
{
	bool found;
	size_t i, n;
	char *s;

	if (name[0] == '.' || name[0] == '\0')
		return true;
	if (qi->nsettle > 0) {
		/* complete now: no more waiting */
		if (how == PN_READY)
			settle_del(qi, name);
		else if (settle_has(qi, name))
			return true; /* looked at again at its time */
	}
	if (qi->tail - qi->head >= PENDING_MAX) {
		qi->rescan = true;
		return false;
	}
	i = set_slot(qi, name, &found);
	if (found) {
		if (how == PN_READY)
			*pname_flag(qi->set[i]) = PN_READY;
		return true;
	}
	if (qi->tail == qi->fcap) {
		if (qi->head > 0) {
			memmove(qi->fifo, qi->fifo + qi->head,
			    (qi->tail - qi->head) * sizeof(*qi->fifo));
			qi->tail -= qi->head;
			qi->head = 0;
		}
		if (qi->tail == qi->fcap) {
			qi->fcap = qi->fcap ? qi->fcap * 2 : 1024;
			qi->fifo = xrealloc(
			    qi->fifo, qi->fcap * sizeof(*qi->fifo));
		}
	}
	n = strlen(name);
	s = xmalloc(n + 2);
	memcpy(s, name, n + 1);
	s[n + 1] = (char)how;
	qi->fifo[qi->tail++] = s;
	set_insert(qi, s);
	return true;
}

/* Takes the oldest pending name (the caller frees it), or NULL; *HOW
 * says how it was found. */
static char *
pending_pop(struct queue_intake *qi, enum pn_how *how)
{
	char *s;

	if (qi->head == qi->tail)
		return NULL;
	s = qi->fifo[qi->head++];
	set_remove(qi, s);
	if (qi->head == qi->tail) {
		qi->head = qi->tail = 0;
		if (qi->scap > 4096)
			set_rehash(qi, 1024);
	}
	*how = (enum pn_how)pname_flag(s)[0];
	return s;
}

/* ---- files looked at again later ---- */

/* Finds NAME (hash H) in the settle list: true and its index, or false
 * and where it would go. */
static bool
settle_find(
    const struct queue_intake *qi, const char *name, uint64_t h, size_t *at)
{
	size_t lo = 0, hi = qi->nsettle;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (qi->settle[mid].h < h)
			lo = mid + 1;
		else
			hi = mid;
	}
	*at = lo;
	for (size_t i = lo; i < qi->nsettle && qi->settle[i].h == h; i++)
		if (strcmp(qi->settle[i].name, name) == 0) {
			*at = i;
			return true;
		}
	return false;
}

static bool
settle_has(const struct queue_intake *qi, const char *name)
{
	size_t at;

	return settle_find(qi, name, name_hash(name), &at);
}

/* Drops NAME from the settle list. */
static void
settle_del(struct queue_intake *qi, const char *name)
{
	size_t at;

	if (!settle_find(qi, name, name_hash(name), &at))
		return;
	free(qi->settle[at].name);
	memmove(qi->settle + at, qi->settle + at + 1,
	    (qi->nsettle - at - 1) * sizeof(*qi->settle));
	qi->nsettle--;
}

/* Puts NAME (taken over) on the settle list, to be looked at again at
 * DUE; when the list is full a later rescan finds it instead. */
static void
settle_add(struct queue_intake *qi, char *name, int64_t due)
{
	uint64_t h = name_hash(name);
	size_t at;

	if (settle_find(qi, name, h, &at)) {
		qi->settle[at].due = due;
		free(name);
		return;
	}
	if (qi->nsettle == SETTLE_MAX) {
		free(name);
		return;
	}
	if (qi->settle == NULL)
		qi->settle = xcalloc(SETTLE_MAX, sizeof(*qi->settle));
	memmove(qi->settle + at + 1, qi->settle + at,
	    (qi->nsettle - at) * sizeof(*qi->settle));
	qi->settle[at].h = h;
	qi->settle[at].due = due;
	qi->settle[at].name = name;
	qi->nsettle++;
}

/* Makes the names whose time came pending again. */
static void
settle_due(struct queue_intake *qi, int64_t now)
{
	for (size_t i = 0; i < qi->nsettle;) {
		char *name = qi->settle[i].name;

		if (qi->settle[i].due > now) {
			i++;
			continue;
		}
		memmove(qi->settle + i, qi->settle + i + 1,
		    (qi->nsettle - i - 1) * sizeof(*qi->settle));
		qi->nsettle--;
		pending_add(qi, name, PN_LISTED);
		free(name);
	}
}

/* ---- entries that cannot be taken, logged once ---- */

#define STUCK_MAX 65536 /* fingerprints kept per generation */

static bool
fpset_has(const struct fpset *f, uint64_t k)
{
	if (f->cap == 0)
		return false;
	for (size_t i = k & (f->cap - 1); f->v[i] != 0;
	     i = (i + 1) & (f->cap - 1))
		if (f->v[i] == k)
			return true;
	return false;
}

/* Adds K (non-zero) to F; false when F holds STUCK_MAX already. */
static bool
fpset_add(struct fpset *f, uint64_t k)
{
	size_t i;

	if (fpset_has(f, k))
		return true;
	if (f->n >= STUCK_MAX)
		return false;
	if ((f->n + 1) * 2 > f->cap) {
		struct fpset g = { NULL, f->cap ? f->cap * 2 : 256, 0 };

		g.v = xcalloc(g.cap, sizeof(*g.v));
		for (size_t j = 0; j < f->cap; j++)
			if (f->v[j] != 0)
				fpset_add(&g, f->v[j]);
		free(f->v);
		*f = g;
	}
	for (i = k & (f->cap - 1); f->v[i] != 0; i = (i + 1) & (f->cap - 1))
		;
	f->v[i] = k;
	f->n++;
	return true;
}

/* A new listing begins: what was not met since the one before is
 * forgotten, so the memory stays bounded by what is still there. */
static void
stuck_rotate(struct queue_intake *qi)
{
	pthread_mutex_lock(&qi->stuckmu);
	free(qi->stuck_prev.v);
	qi->stuck_prev = qi->stuck_cur;
	memset(&qi->stuck_cur, 0, sizeof(qi->stuck_cur));
	pthread_mutex_unlock(&qi->stuckmu);
}

/* Logs a warning about entry NAME (lstat ST, or NULL) unless it was
 * logged while the entry was there before (any thread). */
static void
stuck_report(struct queue_intake *qi, const char *name, const struct stat *st,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void
stuck_report(struct queue_intake *qi, const char *name, const struct stat *st,
    const char *fmt, ...)
{
	uint64_t k = name_hash(name);
	bool seen, full = false;
	va_list ap;
	char line[1024];

	if (st != NULL)
		k ^= ((uint64_t)st->st_ino * 0x9e3779b97f4a7c15ull) ^
		    ((uint64_t)st->st_dev << 17);
	if (k == 0)
		k = 1;
	pthread_mutex_lock(&qi->stuckmu);
	seen = fpset_has(&qi->stuck_cur, k) || fpset_has(&qi->stuck_prev, k);
	if (!fpset_add(&qi->stuck_cur, k) && !seen) {
		seen = true;
		full = !qi->stuck_full;
		qi->stuck_full = true;
	}
	pthread_mutex_unlock(&qi->stuckmu);
	if (full)
		log_warn("queue",
		    "over %d entries in %s cannot be taken: no more of them "
		    "are logged",
		    STUCK_MAX, qi->incoming);
	if (seen)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	log_warn("queue", "%s", line);
}

/* A time in nanoseconds. */
static int64_t
ts_ns(struct timespec ts)
{
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- names from outside in log lines and reasons ---- */

#define ESC_MAX QUEUE_ESC_MAX

/* A name or text from a local user can neither break a log line nor
 * fake one; see queue_int.h. */
const char *
queue_name_escape(char out[QUEUE_ESC_MAX], const char *s)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (o + 8 > ESC_MAX) {
			memcpy(out + o, "...", 3);
			o += 3;
			break;
		}
		if (c == '\\') {
			out[o++] = '\\';
			out[o++] = '\\';
		} else if (c < 0x20 || c >= 0x7f) {
			out[o++] = '\\';
			out[o++] = 'x';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		} else {
			out[o++] = (char)c;
		}
	}
	out[o] = '\0';
	return out;
}

/* ---- the unlinker ---- */

static size_t ident_key(uint8_t *k, const struct stat *st, const char *name);
static void idents_delete(struct queue_intake *qi, struct queue_txn *t);
static void *reader(void *);
static void prep_clear(struct prep *, bool free_name);
enum bad_result { BAD_MOVED, BAD_GONE, BAD_STUCK };
static enum bad_result move_bad(struct queue_intake *, const char *name,
    uint64_t id, const struct stat *, const char *why);

/*
 * Unlinks names [a, b) of job J if each is still the file read; puts
 * the identities of the files unlinked into DONE.  A file written to
 * after it was read and queued (its writer did not finish before it
 * closed or renamed it) goes to bad/: queuing it again would send a
 * second, different copy.
 */
static void
job_unlink(struct queue_intake *qi, struct unlink_job *j, size_t a, size_t b,
    struct qbuf *done)
{
	for (size_t i = a; i < b; i++) {
		const uint8_t *k = j->keys.p + j->off[i];
		size_t n = (size_t)k[0] << 8 | k[1];
		struct stat st;
		uint8_t ik[440];
		char why[120], idstr[17];

		if (fstatat(qi->din, j->names[i], &st, AT_SYMLINK_NOFOLLOW) !=
		    0)
			continue;
		if (ident_key(ik, &st, j->names[i]) == n &&
		    memcmp(ik, k + 2, n) == 0) {
			if (unlinkat(qi->din, j->names[i], 0) == 0)
				qbuf_put(done, k, n + 2);
			continue;
		}
		if (n < 16 || qbe64_get(k + 2) != (uint64_t)st.st_dev ||
		    qbe64_get(k + 10) != (uint64_t)st.st_ino)
			continue; /* another file under that name now */
		queue_id_format(j->ids[i], idstr);
		snprintf(why, sizeof(why),
		    "changed after it was queued as %s (the queued copy is "
		    "what was read)",
		    idstr);
		if (move_bad(qi, j->names[i], 0, &st, why) == BAD_MOVED)
			qbuf_put(done, k, n + 2);
	}
}

/*
 * Hands over identities IDS (into OUT) when the fsync of incoming/ that
 * was to make their unlinks durable succeeded (RC 0); after an error
 * they stay in the queue: an fsync that succeeds later proves nothing
 * (the kernel reports a write-back error once; ext4 with its journal
 * aborted returns EIO, then 0), so they are pruned at the next start,
 * once the unlinks are known to be on disk.  Logged once per run of
 * errors.  Called with mu held (or without unlinker threads).
 */
static void
sync_done(struct queue_intake *qi, int rc, int err, const struct qbuf *ids,
    struct qbuf *out)
{
	size_t n = 0;

	if (rc == 0) {
		qi->sync_failing = false;
		qbuf_put(out, ids->p, ids->n);
		return;
	}
	for (size_t off = 0; off + 2 <= ids->n; n++)
		off += 2 + ((size_t)ids->p[off] << 8 | ids->p[off + 1]);
	if (!qi->sync_failing)
		log_err("queue",
		    "fsync %s: %s: the identities of %zu files removed are "
		    "kept (pruned at the next start, when their removal is "
		    "on disk)",
		    qi->incoming, strerror(err), n);
	qi->sync_failing = true;
}

/* Frees a job. */
static void
job_free(struct unlink_job *j)
{
	for (size_t i = 0; i < j->n; i++)
		free(j->names[i]);
	free(j->names);
	free(j->ids);
	free(j->keys.p);
	free(j->off);
	free(j->done.p);
	free(j);
}

/* An unlinker thread: takes chunks of the oldest job with names left;
 * whoever finishes a job fsyncs incoming/ (the identities may go only
 * once the unlinks are durable) and hands its identities back. */
static void *
unlinker(void *arg)
{
	struct queue_intake *qi = arg;
	struct qbuf done = { NULL, 0, 0 };

	pthread_mutex_lock(&qi->mu);
	for (;;) {
		struct unlink_job *j;
		size_t a, b;

		for (j = qi->jobs; j != NULL && j->claimed == j->n; j = j->next)
			;
		if (j == NULL) {
			if (qi->th_stop && qi->jobs == NULL)
				break;
			pthread_cond_wait(&qi->cv, &qi->mu);
			continue;
		}
		a = j->claimed;
		b = a + UNLINK_CHUNK < j->n ? a + UNLINK_CHUNK : j->n;
		j->claimed = b;
		pthread_mutex_unlock(&qi->mu);
		done.n = 0;
		job_unlink(qi, j, a, b, &done);
		pthread_mutex_lock(&qi->mu);
		qbuf_put(&j->done, done.p, done.n);
		j->finished += b - a;
		if (j->finished < j->n)
			continue;
		/* the last chunk of J: unlink J from the list, sync, hand over */
		{
			struct unlink_job **pp = &qi->jobs;

			while (*pp != j)
				pp = &(*pp)->next;
			*pp = j->next;
			if (qi->jobs_tail == &j->next)
				qi->jobs_tail = pp;
		}
		pthread_mutex_unlock(&qi->mu);
		{
			int rc = fsync(qi->din), err = errno;

			pthread_mutex_lock(&qi->mu);
			sync_done(qi, rc, err, &j->done, &qi->done);
		}
		qi->njobs--;
		job_free(j);
		pthread_cond_broadcast(&qi->cv);
	}
	pthread_mutex_unlock(&qi->mu);
	free(done.p);
	return NULL;
}

/* Hands a job to the unlinkers (or runs it here without threads); waits
 * while they are UNLINK_JOBS batches behind. */
static void
job_push(struct queue_intake *qi, struct unlink_job *j)
{
	if (j->n == 0) {
		job_free(j); /* nothing to unlink (only identities went) */
		return;
	}
	j->off = xcalloc(j->n + 1, sizeof(*j->off));
	for (size_t i = 0, o = 0; i < j->n; i++) {
		j->off[i] = o;
		o += 2 + ((size_t)j->keys.p[o] << 8 | j->keys.p[o + 1]);
	}
	if (!qi->th_on) {
		int rc, err;

		job_unlink(qi, j, 0, j->n, &j->done);
		rc = fsync(qi->din);
		err = errno;
		sync_done(qi, rc, err, &j->done, &qi->idents);
		job_free(j);
		return;
	}
	pthread_mutex_lock(&qi->mu);
	while (qi->njobs >= UNLINK_JOBS)
		pthread_cond_wait(&qi->cv, &qi->mu);
	j->next = NULL;
	*qi->jobs_tail = j;
	qi->jobs_tail = &j->next;
	qi->njobs++;
	pthread_cond_broadcast(&qi->cv);
	pthread_mutex_unlock(&qi->mu);
}

/* Takes over the identities the unlinker finished. */
static void
jobs_collect(struct queue_intake *qi, bool wait)
{
	if (!qi->th_on)
		return;
	pthread_mutex_lock(&qi->mu);
	while (wait && qi->njobs > 0)
		pthread_cond_wait(&qi->cv, &qi->mu);
	qbuf_put(&qi->idents, qi->done.p, qi->done.n);
	qi->done.n = 0;
	pthread_mutex_unlock(&qi->mu);
}

/* ---- opening ---- */

/* Creates DIR with MODE if missing (chmod so umask does not interfere). */
static int
mkdir_mode(const char *dir, mode_t mode)
{
	if (mkdir(dir, mode) == 0)
		return chmod(dir, mode);
	return errno == EEXIST ? 0 : -1;
}

/* Creates DIR's parents. */
static void
mkdir_parents(const char *dir)
{
	char *p = xstrdup(dir);

	for (char *s = p + 1; *s != '\0'; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		(void)mkdir(p, 0755);
		*s = '/';
	}
	free(p);
}

/*
 * Deletes identities whose file is gone (unlinked, and the unlink synced
 * above, but the process ended before the identity was deleted).  A file
 * still there with its identity is left to the first rescan, which
 * unlinks it as already queued.
 */
static void
idents_prune(struct queue_intake *qi)
{
	struct queue_txn *t = queue_txn_begin(qi->q);
	MDB_cursor *c;
	MDB_val key, val;
	size_t n = 0;
	int rc;

	if (t == NULL)
		return;
	if (mdb_cursor_open(t->txn, qi->q->dbi[QDB_IDENT], &c) != 0) {
		queue_txn_abort(t);
		return;
	}
	rc = mdb_cursor_get(c, &key, &val, MDB_FIRST);
	while (rc == 0) {
		char name[420];
		struct stat st;
		uint8_t ik[440];
		bool keep = false;

		if (key.mv_size > 32 && key.mv_size - 32 < sizeof(name)) {
			memcpy(name, (uint8_t *)key.mv_data + 32,
			    key.mv_size - 32);
			name[key.mv_size - 32] = '\0';
			keep = fstatat(qi->din, name, &st,
				   AT_SYMLINK_NOFOLLOW) == 0 &&
			    ident_key(ik, &st, name) == key.mv_size &&
			    memcmp(ik, key.mv_data, key.mv_size) == 0;
		}
		if (!keep) {
			mdb_cursor_del(c, 0);
			n++;
			rc = mdb_cursor_get(c, &key, &val, MDB_GET_CURRENT);
			if (rc != 0)
				rc = mdb_cursor_get(c, &key, &val, MDB_NEXT);
		} else {
			rc = mdb_cursor_get(c, &key, &val, MDB_NEXT);
		}
	}
	mdb_cursor_close(c);
	if (n > 0)
		queue_txn_commit(t);
	else
		queue_txn_abort(t);
}

/* Reserves the first id range (a txn of its own). */
static void
ids_initial(struct queue_intake *qi)
{
	struct queue_txn *t = queue_txn_begin(qi->q);
	uint64_t first;

	if (t == NULL)
		return;
	first = queue_id_reserve(t, IDRANGE);
	if (queue_txn_commit(t) == QUEUE_OK) {
		qi->id_next = first;
		qi->id_end = first + IDRANGE;
	}
}

struct queue_intake *
queue_intake_open(struct queue *q, const struct cfg *cfg)
{
	const struct cfg_scope *sc = cfg_scope(cfg, NULL);
	const char *spool = cfg_str(sc, CFG_SPOOL_DIR);
	const char *host = cfg_str(sc, CFG_HOSTNAME);
	struct queue_intake *qi = xcalloc(1, sizeof(*qi));
	char path[4096];

	qi->q = q;
	qi->din = qi->dbad = qi->ifd = -1;
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
	mkdir_parents(path);
	(void)mkdir_mode(spool, 0755);
	qi->incoming = xstrdup(path);
	snprintf(path, sizeof(path), "%s/bad", spool);
	qi->bad = xstrdup(path);
	/* The daemon gives these their modes at start (cfg/priv.c); this
	 * makes them for other callers: drop dirs 3733, see priv.h. */
	if (mkdir_mode(qi->incoming, PRIV_DROP_MODE) < 0 ||
	    mkdir_mode(qi->bad, 0700) < 0) {
		log_err("queue", "spool %s: %s", spool, strerror(errno));
		goto fail;
	}
	snprintf(path, sizeof(path), "%s/tmp", spool);
	qi->tmp = xstrdup(path);
	if (mkdir_mode(path, PRIV_DROP_MODE) < 0) {
		log_err("queue", "%s: %s", path, strerror(errno));
		goto fail;
	}
	qi->din = open(
	    qi->incoming, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	qi->dbad = open(
	    qi->bad, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (qi->din < 0 || qi->dbad < 0) {
		log_err("queue", "spool %s: %s", spool, strerror(errno));
		goto fail;
	}
	/* files changed after this may be half-written without an event
	 * saying otherwise; ctimes come from the coarse clock */
	{
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME_COARSE, &ts);
		qi->watch_since = ts_ns(ts);
	}
	qi->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (qi->ifd >= 0 &&
	    inotify_add_watch(qi->ifd, qi->incoming,
		IN_MOVED_TO | IN_CLOSE_WRITE | IN_CREATE | IN_ONLYDIR) < 0) {
		log_warn("queue", "inotify %s: %s (rescans only)", qi->incoming,
		    strerror(errno));
		close(qi->ifd);
		qi->ifd = -1;
	}
	/* unlinks done before a crash must be durable before identities go
	 * (not on a file system gone read-only: its state may not be the
	 * disk's) */
	if (fsync(qi->din) == 0) {
		struct statvfs v;

		if (fstatvfs(qi->din, &v) == 0 && (v.f_flag & ST_RDONLY))
			log_err("queue", "%s is read-only: identities kept",
			    qi->incoming);
		else
			idents_prune(qi);
	} else {
		log_err("queue", "fsync %s: %s: identities kept", qi->incoming,
		    strerror(errno));
	}
	ids_initial(qi);
	pthread_mutex_init(&qi->mu, NULL);
	pthread_cond_init(&qi->cv, NULL);
	qi->jobs_tail = &qi->jobs;
	for (qi->nth = 0; qi->nth < UNLINKERS; qi->nth++)
		if (pthread_create(&qi->th[qi->nth], NULL, unlinker, qi) != 0)
			break;
	qi->th_on = qi->nth > 0;
	{
		long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
		int want = ncpu < 1	? 1
		    : ncpu > MAXREADERS ? MAXREADERS
					: (int)ncpu;

		for (qi->nreaders = 0; qi->nreaders < want; qi->nreaders++)
			if (pthread_create(
				&qi->rth[qi->nreaders], NULL, reader, qi) != 0)
				break;
	}
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

void
queue_intake_rescan(struct queue_intake *qi)
{
	qi->rescan = true;
}

void
queue_intake_close(struct queue_intake *qi)
{
	char *s;
	enum pn_how how;

	if (qi == NULL)
		return;
	pthread_mutex_lock(&qi->rmu);
	qi->rstop = true;
	pthread_cond_broadcast(&qi->rwork);
	pthread_mutex_unlock(&qi->rmu);
	for (int i = 0; i < qi->nreaders; i++)
		pthread_join(qi->rth[i], NULL);
	/* files prepared but not filed stay in incoming/ for next time */
	for (; qi->rhead != qi->rtail; qi->rhead++)
		prep_clear(&qi->ring[qi->rhead % RING], true);
	pthread_mutex_destroy(&qi->rmu);
	pthread_cond_destroy(&qi->rwork);
	pthread_cond_destroy(&qi->rdone);
	pthread_mutex_destroy(&qi->badmu);
	pthread_mutex_destroy(&qi->stuckmu);
	if (qi->th_on) {
		pthread_mutex_lock(&qi->mu);
		qi->th_stop = true;
		pthread_cond_broadcast(&qi->cv);
		pthread_mutex_unlock(&qi->mu);
		for (int i = 0; i < qi->nth; i++)
			pthread_join(qi->th[i], NULL);
		jobs_collect(qi, false);
		qi->th_on = false;
		pthread_mutex_destroy(&qi->mu);
		pthread_cond_destroy(&qi->cv);
		if (qi->idents.n > 0) {
			struct queue_txn *t = queue_txn_begin(qi->q);

			if (t != NULL) {
				idents_delete(qi, t);
				queue_txn_commit(t);
			}
		}
	}
	free(qi->done.p);
	while ((s = pending_pop(qi, &how)) != NULL)
		free(s);
	for (size_t i = 0; i < qi->nsettle; i++)
		free(qi->settle[i].name);
	free(qi->settle);
	free(qi->stuck_cur.v);
	free(qi->stuck_prev.v);
	free(qi->fifo);
	free(qi->set);
	free(qi->idents.p);
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

/* ---- listing ---- */

/* Reads queued inotify events into the pending names. */
static void
drain_inotify(struct queue_intake *qi)
{
	char buf[65536]
	    __attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t n;

	if (qi->ifd < 0)
		return;
	while ((n = read(qi->ifd, buf, sizeof(buf))) > 0) {
		for (char *p = buf; p < buf + n;) {
			struct inotify_event *ev = (struct inotify_event *)p;
			struct stat st;

			/* renamed in or closed after writing: complete */
			if (ev->mask & IN_Q_OVERFLOW)
				qi->rescan = true;
			else if (ev->len == 0)
				;
			else if (!(ev->mask & IN_CREATE))
				pending_add(qi, ev->name, PN_READY);
			else if (fstatat(qi->din, ev->name, &st,
				     AT_SYMLINK_NOFOLLOW) == 0 &&
			    !S_ISREG(st.st_mode))
				/* no close-write will come for these */
				pending_add(qi, ev->name, PN_READY);
			p += sizeof(*ev) + ev->len;
		}
	}
}

/*
 * Lists the whole of incoming/ into the pending names.  What the first
 * listing finds is taken as it is unless it changed after intake began
 * to watch: nothing tells an older file still being written from a
 * finished one, and what is there at start-up is almost always a backlog
 * of finished files (Postfix's pickup takes its maildrop the same way).
 * Later listings find only files inotify did not report complete, and
 * those must settle first.
 */
static void
list_dir(struct queue_intake *qi)
{
	int fd = dup(qi->din);
	DIR *d;
	struct dirent *de;

	if (fd < 0 || (d = fdopendir(fd)) == NULL) {
		log_err("queue", "%s: %s", qi->incoming, strerror(errno));
		if (fd >= 0)
			close(fd);
		return;
	}
	stuck_rotate(qi);
	rewinddir(d);
	while ((de = readdir(d)) != NULL)
		if (!pending_add(
			qi, de->d_name, qi->listed_once ? PN_LISTED : PN_FIRST))
			break;
	qi->listed_once = true;
	closedir(d);
}

/*
 * Removes files left in tmp/ for over TMP_STALE seconds: what a writer
 * killed before its rename left behind (as maildir readers and Postfix's
 * postsuper do).  Runs with a rescan, at most once an hour.
 */
#define TMP_STALE (36 * 3600)
static void
sweep_tmp(struct queue_intake *qi)
{
	int64_t now = rq_now();
	int fd;
	DIR *d;
	struct dirent *de;

	if (now - qi->tmp_swept < 3600)
		return;
	qi->tmp_swept = now;
	fd = open(qi->tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || (d = fdopendir(fd)) == NULL) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((de = readdir(d)) != NULL) {
		struct stat st;

		if (de->d_name[0] == '.')
			continue;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) <
			0 ||
		    !S_ISREG(st.st_mode) || now - st.st_mtime < TMP_STALE)
			continue;
		if (unlinkat(dirfd(d), de->d_name, 0) == 0)
			log_info("queue", "removed stale %s/%.200s", qi->tmp,
			    de->d_name);
	}
	closedir(d);
}

/* ---- one file ---- */

/*
 * Renames incoming/NAME to bad/TARGET unless TARGET exists; where the
 * file system lacks RENAME_NOREPLACE, the check and the rename are one
 * step under badmu (bad/ is the daemon's alone).
 */
static int
bad_rename(struct queue_intake *qi, const char *name, const char *target)
{
	struct stat st;
	int rc;

	rc = renameat2(qi->din, name, qi->dbad, target, RENAME_NOREPLACE);
	if (rc == 0 || (errno != EINVAL && errno != ENOSYS))
		return rc;
	pthread_mutex_lock(&qi->badmu);
	if (fstatat(qi->dbad, target, &st, AT_SYMLINK_NOFOLLOW) == 0) {
		errno = EEXIST;
		rc = -1;
	} else {
		rc = renameat(qi->din, name, qi->dbad, target);
	}
	pthread_mutex_unlock(&qi->badmu);
	return rc;
}

/*
 * Moves entry NAME (its lstat ST) from incoming/ into bad/ untouched,
 * under a name the daemon picks: the queue ID it was given (ID, never
 * used for a message; as Postfix names corrupt/ files), else or on a
 * clash 16 hex digits from a counter; with NAME.reason beside it saying
 * WHY and naming the original (escaped).
 * The reason file is created first (O_EXCL: it never opens what is
 * there, so a planted FIFO cannot block), then the entry is renamed
 * without replacing anything; a clash just tries the next name.  An
 * entry that cannot be moved is logged once (any thread).
 */
static enum bad_result
move_bad(struct queue_intake *qi, const char *name, uint64_t id,
    const struct stat *st, const char *why)
{
	char target[20], rpath[32], ename[ESC_MAX], ewhy[ESC_MAX];
	char text[2 * ESC_MAX + 100];
	int fd = -1, err = 0, n;
	bool renamed = false;

	queue_name_escape(ename, name);
	queue_name_escape(ewhy, why);
	for (int tries = 0; tries < 1000 && !renamed; tries++) {
		uint64_t seq = tries == 0 && id != 0
		    ? id
		    : __atomic_fetch_add(&qi->badseq, 1, __ATOMIC_RELAXED);

		snprintf(
		    target, sizeof(target), "%016llX", (unsigned long long)seq);
		snprintf(rpath, sizeof(rpath), "%s.reason", target);
		fd = openat(qi->dbad, rpath,
		    O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_NONBLOCK |
			O_CLOEXEC | O_NOCTTY,
		    0600);
		if (fd < 0) {
			err = errno;
			if (err == EEXIST)
				continue;
			break;
		}
		if (bad_rename(qi, name, target) == 0) {
			renamed = true;
			break;
		}
		err = errno;
		close(fd);
		fd = -1;
		(void)unlinkat(qi->dbad, rpath, 0);
		if (err == ENOENT)
			return BAD_GONE; /* taken by someone else */
		if (err != EEXIST)
			break;
	}
	if (!renamed) {
		if (fd >= 0)
			close(fd);
		stuck_report(qi, name, st, "%s: cannot move to bad/: %s (%s)",
		    ename, strerror(err), ewhy);
		return BAD_STUCK;
	}
	n = snprintf(text, sizeof(text), "%s\nname: %s\nuid: %u\n", ewhy, ename,
	    st != NULL ? (unsigned)st->st_uid : 0u);
	if (n > (int)sizeof(text) - 1)
		n = (int)sizeof(text) - 1;
	if (write(fd, text, (size_t)n) != n || fsync(fd) < 0)
		log_err("queue", "bad/%s: %s", rpath, strerror(errno));
	close(fd);
	if (fsync(qi->dbad) < 0 || fsync(qi->din) < 0)
		log_err("queue", "bad/%s: fsync: %s", target, strerror(errno));
	log_warn("queue", "%s: moved to bad/%s (uid=%u): %s", ename, target,
	    st != NULL ? (unsigned)st->st_uid : 0u, ewhy);
	__atomic_fetch_add(
	    &qi->nbad[queue_bad_reason(why)], 1, __ATOMIC_RELAXED);
	return BAD_MOVED;
}

/* Builds the identity key of a spool file. */
static size_t
ident_key(uint8_t *k, const struct stat *st, const char *name)
{
	size_t n = strlen(name);

	if (n > 400)
		n = 400;
	qbe64_put(k, (uint64_t)st->st_dev);
	qbe64_put(k + 8, (uint64_t)st->st_ino);
	qbe64_put(k + 16, (uint64_t)st->st_size);
	qbe64_put(k + 24,
	    (uint64_t)st->st_mtim.tv_sec * 1000000000ull +
		(uint64_t)st->st_mtim.tv_nsec);
	memcpy(k + 32, name, n);
	return 32 + n;
}

/* The sender when the message names none: the file owner's login. */
static char *
owner_sender(uid_t uid, const char *host)
{
	struct passwd pw, *res = NULL;
	char buf[2048], out[600];

	if (getpwuid_r(uid, &pw, buf, sizeof(buf), &res) == 0 && res != NULL)
		snprintf(out, sizeof(out), "%.200s@%.255s", pw.pw_name, host);
	else
		snprintf(out, sizeof(out), "uid%u@%.255s", (unsigned)uid, host);
	return xstrdup(out);
}

/* Opens spool file NAME for reading without touching its atime (an
 * inode write per file saved) where the kernel lets us. */
static int
spool_open(struct queue_intake *qi, const char *name)
{
	int flags = O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY;
	int fd = -1;

	if (!__atomic_load_n(&qi->noatime_no, __ATOMIC_RELAXED)) {
		fd = openat(qi->din, name, flags | O_NOATIME);
		if (fd >= 0 || errno != EPERM)
			return fd;
		__atomic_store_n(&qi->noatime_no, true, __ATOMIC_RELAXED);
	}
	return openat(qi->din, name, flags);
}

/*
 * Whether a file only a listing found looks complete: its last change
 * was a rename or another change of its inode alone (ctime after mtime,
 * when RENAMED_OK; not for an empty file, which a writer may have just
 * created), or it has not changed for SETTLE_SECS (ctime, which no user
 * can set back).  Otherwise *DUE is when to look again.
 */
static bool
file_settled(const struct stat *st, bool renamed_ok, int64_t *due)
{
	struct timespec now;
	int64_t c = ts_ns(st->st_ctim), m = ts_ns(st->st_mtim), n;
	const int64_t settle = (int64_t)SETTLE_SECS * 1000000000;

	clock_gettime(CLOCK_REALTIME, &now);
	n = ts_ns(now);
	if ((renamed_ok && c > m && st->st_size > 0) || n - c >= settle ||
	    c - n > settle /* the clock went back */)
		return true;
	*due = (c + settle) / 1000000000 + 1;
	return false;
}

/* Whether the file read (FD) is still as lstat saw it (ST) before. */
static bool
file_same(int fd, const struct stat *st)
{
	struct stat fst;

	return fstat(fd, &fst) == 0 && S_ISREG(fst.st_mode) &&
	    fst.st_dev == st->st_dev && fst.st_ino == st->st_ino &&
	    fst.st_size == st->st_size &&
	    ts_ns(fst.st_mtim) == ts_ns(st->st_mtim) &&
	    ts_ns(fst.st_ctim) == ts_ns(st->st_ctim);
}

/*
 * Prepares spool file P->name (any thread): checks it, reads it, parses
 * it, builds the message as stored with P's id and arrival time, and
 * compresses it into P->rec.  Bad files go to bad/ here.
 */

static __thread char *buf; /* the file being read, per thread */
static __thread size_t bufcap;

static void
prep_run(struct queue_intake *qi, struct prep *p)
{
	struct stat *st = &p->st;
	size_t got = 0, blen;
	char why[200], received[600], date[100], msgid[400], tbuf[64];
	char idstr[17], *body, ename[ESC_MAX];
	struct tm tm;
	time_t now;
	int fd, err;

	p->r = IMP_SKIP;
	if (fstatat(qi->din, p->name, st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno != ENOENT)
			stuck_report(qi, p->name, NULL, "%s: %s",
			    queue_name_escape(ename, p->name), strerror(errno));
		return;
	}
	if (!S_ISREG(st->st_mode)) {
		move_bad(qi, p->name, p->id, st,
		    S_ISDIR(st->st_mode)       ? "not a regular file: directory"
			: S_ISLNK(st->st_mode) ? "not a regular file: symlink"
			: S_ISFIFO(st->st_mode) ? "not a regular file: fifo"
			: S_ISSOCK(st->st_mode) ? "not a regular file: socket"
						: "not a regular file: device");
		return;
	}
	if ((p->how == PN_LISTED ||
		(p->how == PN_FIRST &&
		    ts_ns(st->st_ctim) >= qi->watch_since)) &&
	    !file_settled(st, true, &p->due)) {
		p->r = IMP_WAIT; /* maybe still being written */
		return;
	}
	if (st->st_nlink > 1) {
		/* as Postfix's pickup: a second link may be anyone's file;
		 * but a writer that links the file in and then unlinks its
		 * other name gets the time to do so */
		if (!file_settled(st, false, &p->due)) {
			p->r = IMP_WAIT;
			return;
		}
		snprintf(why, sizeof(why), "file has %lu hard links",
		    (unsigned long)st->st_nlink);
		move_bad(qi, p->name, p->id, st, why);
		return;
	}
	if (st->st_size == 0) {
		move_bad(qi, p->name, p->id, st, "empty file");
		return;
	}
	if (st->st_size > p->maxsize) {
		snprintf(why, sizeof(why),
		    "message too large: %lld bytes, max_message_size is %lld",
		    (long long)st->st_size, (long long)p->maxsize);
		move_bad(qi, p->name, p->id, st, why);
		return;
	}
	p->iklen = ident_key(p->ik, st, p->name);
	fd = spool_open(qi, p->name);
	if (fd < 0) {
		err = errno;
		if (err == ENOENT)
			return;
		if (err == ELOOP) {
			move_bad(qi, p->name, p->id, st,
			    "not a regular file: symlink");
		} else if (err == EACCES || err == EPERM) {
			snprintf(
			    why, sizeof(why), "cannot open: %s", strerror(err));
			move_bad(qi, p->name, p->id, st, why);
		} else {
			/* EMFILE, a lease (EWOULDBLOCK), ...: the daemon's
			 * trouble, not the file's: again later */
			stuck_report(qi, p->name, st, "%s: %s",
			    queue_name_escape(ename, p->name), strerror(err));
			p->r = IMP_RETRY;
			p->due = rq_now() + SETTLE_SECS;
		}
		return;
	}
	if (!file_same(fd, st)) {
		close(fd);
		p->r = IMP_RETRY; /* it changed under us: look again later */
		p->due = rq_now() + 1;
		return;
	}
	if (bufcap < (size_t)st->st_size + 1) {
		free(buf);
		bufcap = (size_t)st->st_size + 1;
		buf = xmalloc(bufcap);
	}
	err = 0;
	while (got < (size_t)st->st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st->st_size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			err = errno;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	if (err != 0) {
		close(fd);
		stuck_report(qi, p->name, st, "%s: read: %s",
		    queue_name_escape(ename, p->name), strerror(err));
		p->r = IMP_RETRY;
		p->due = rq_now() + SETTLE_SECS;
		return;
	}
	/* written to while read: not this time (and not half of it) */
	if (got != (size_t)st->st_size || !file_same(fd, st)) {
		close(fd);
		p->r = IMP_RETRY;
		p->due = rq_now() + 1;
		return;
	}
	close(fd);
	/* a bare CR is a line end: for the parse, and in what is sent */
	qp_bare_cr_fix(buf, got);
	if (qp_message_parse(
		buf, got, qi->hostname, (size_t)p->maxrcpt, &p->pr) != QP_OK) {
		move_bad(qi, p->name, p->id, st, p->pr.why);
		qp_result_free(&p->pr);
		memset(&p->pr, 0, sizeof(p->pr));
		return;
	}
	if (p->pr.sender == NULL)
		p->owner = owner_sender(st->st_uid, qi->hostname);
	queue_id_format(p->id, idstr);
	now = (time_t)p->now;
	localtime_r(&now, &tm);
	strftime(tbuf, sizeof(tbuf), "%a, %d %b %Y %H:%M:%S %z", &tm);
	snprintf(received, sizeof(received),
	    "Received: by %s (relayq, from userid %u)\r\n\tid %s; %s\r\n",
	    qi->hostname, (unsigned)st->st_uid, idstr, tbuf);
	snprintf(date, sizeof(date), "Date: %s\r\n", tbuf);
	strftime(tbuf, sizeof(tbuf), "%Y%m%d%H%M%S", &tm);
	snprintf(msgid, sizeof(msgid), "Message-ID: <%s.%s@%s>\r\n", tbuf,
	    idstr, qi->hostname);
	body = qp_message_build(buf, got, &p->pr, received, date, msgid, &blen);
	qrec_body_encode(&p->rec, body, blen, 1);
	p->rawlen = blen;
	free(body);
	p->r = IMP_QUEUED;
	/* a big message leaves no big buffer behind in the thread */
	if (bufcap > (1u << 20)) {
		free(buf);
		buf = NULL;
		bufcap = 0;
	}
}

/* Frees what P holds (its name too when FREE_NAME) and empties it. */
static void
prep_clear(struct prep *p, bool free_name)
{
	if (free_name)
		free(p->name);
	qp_result_free(&p->pr);
	free(p->owner);
	free(p->rec.p);
	memset(p, 0, sizeof(*p));
}

/* Files prepared file P into txn T (main thread). */
static enum import_result
prep_store(struct queue_intake *qi, struct queue_txn *t, struct prep *p,
    uint64_t first_id, struct qbuf *keys, size_t *budget)
{
	const struct stat *st = &p->st;
	MDB_val key, val;
	struct queue_msg m;
	char loop[160] = "";
	char ebuf[ESC_MAX], idstr[17];

	if (p->r != IMP_QUEUED)
		return p->r;
	/* a stored message takes at most about twice its size */
	if ((size_t)st->st_size * 2 + 4096 > *budget)
		return IMP_NOROOM;
	*budget -= (size_t)st->st_size * 2 + 4096;
	key.mv_size = p->iklen;
	key.mv_data = p->ik;
	if (mdb_get(t->txn, t->q->dbi[QDB_IDENT], &key, &val) == 0 &&
	    val.mv_size >= 8) {
		uint64_t id = qbe64_get(val.mv_data);

		if (id >= first_id)
			return IMP_SKIP; /* already in this very txn */
		/* committed before a crash, not unlinked: finish the job */
		queue_id_format(id, idstr);
		if (unlinkat(qi->din, p->name, 0) == 0)
			log_info("queue", "%s: already queued as %s: removed",
			    queue_name_escape(ebuf, p->name), idstr);
		else if (errno != ENOENT)
			stuck_report(qi, p->name, st,
			    "%s: already queued as %s, cannot remove: %s",
			    queue_name_escape(ebuf, p->name), idstr,
			    strerror(errno));
		return IMP_SKIP;
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
	queue_expiry_times(qi->q, &m);
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
	}
	/* who handed it in, as Postfix's pickup logs it; then the qmgr line */
	queue_id_format(m.id, idstr);
	queue_txn_log_as(t, "pickup", "%s: uid=%u from=<%s>", idstr,
	    (unsigned)st->st_uid,
	    queue_name_escape(ebuf, m.sender ? m.sender : ""));
	queue_msg_store_rec(t, &m, p->rec.p, p->rec.n, p->rawlen);
	for (size_t i = 0; loop[0] != '\0' && i < m.nrcpt; i++)
		queue_txn_log(t,
		    "%s: to=<%.400s>, relay=none, delay=0, "
		    "delays=0/0/0/0, dsn=5.4.6, status=bounced (%s)",
		    m.idstr, m.rcpts[i].addr, loop);
	free(m.rcpts);
	{
		uint8_t v[16];
		MDB_val iv = { 16, v };

		qbe64_put(v, m.id);
		qbe64_put(v + 8, (uint64_t)t->now);
		key.mv_size = p->iklen;
		key.mv_data = p->ik;
		queue_txn_fail(t,
		    mdb_put(t->txn, t->q->dbi[QDB_IDENT], &key, &iv, 0),
		    "ident");
	}
	if (t->err != QUEUE_OK)
		return IMP_RETRY;
	{
		uint8_t hdr[2] = { (uint8_t)(p->iklen >> 8),
			(uint8_t)p->iklen };

		qbuf_put(keys, hdr, 2);
		qbuf_put(keys, p->ik, p->iklen);
	}
	return IMP_QUEUED;
}

/* ---- the readers ---- */

/* Prepares the oldest file no one took yet; called and returns with rmu
 * held (released while the file is worked on). */
static void
ring_run_next(struct queue_intake *qi)
{
	struct prep *p = &qi->ring[qi->rnext++ % RING];

	p->state = PREP_BUSY;
	pthread_mutex_unlock(&qi->rmu);
	prep_run(qi, p);
	pthread_mutex_lock(&qi->rmu);
	p->state = PREP_DONE;
	qi->rbytes += p->held = p->rec.cap;
}

/* A reader thread: prepares the oldest file no one took yet. */
static void *
reader(void *arg)
{
	struct queue_intake *qi = arg;

	pthread_mutex_lock(&qi->rmu);
	for (;;) {
		if (qi->rstop)
			break;
		if (qi->rnext == qi->rtail || qi->rbytes > RING_BYTES) {
			pthread_cond_wait(&qi->rwork, &qi->rmu);
			continue;
		}
		ring_run_next(qi);
		if (qi->rwaiting)
			pthread_cond_signal(&qi->rdone);
	}
	pthread_mutex_unlock(&qi->rmu);
	free(buf);
	buf = NULL;
	bufcap = 0;
	qrec_thread_done();
	return NULL;
}

/* Moves to the spare id range when the usable one is used up. */
static bool
ids_take(struct queue_intake *qi, uint64_t *id)
{
	if (qi->id_next == qi->id_end) {
		if (qi->id_spare == qi->id_spare_end)
			return false;
		qi->id_next = qi->id_spare;
		qi->id_end = qi->id_spare_end;
		qi->id_spare = qi->id_spare_end = 0;
	}
	*id = qi->id_next++;
	return true;
}

/* Reserves the next id range in T when the ids left run low. */
static void
ids_reserve(struct queue_intake *qi, struct queue_txn *t)
{
	qi->id_res = qi->id_res_end = 0;
	if (qi->id_spare != qi->id_spare_end ||
	    qi->id_end - qi->id_next >= IDRANGE / 2)
		return;
	qi->id_res = queue_id_reserve(t, IDRANGE);
	qi->id_res_end = qi->id_res + IDRANGE;
}

/* T committed: its reservation becomes the spare range. */
static void
ids_committed(struct queue_intake *qi)
{
	if (qi->id_res != qi->id_res_end) {
		qi->id_spare = qi->id_res;
		qi->id_spare_end = qi->id_res_end;
	}
	qi->id_res = qi->id_res_end = 0;
}

/* Hands pending names to the readers while the ring and the ids last. */
static void
ring_feed(struct queue_intake *qi)
{
	const struct cfg_scope *g = cfg_scope(qi->q->cfg, NULL);
	int64_t maxsize = cfg_int(g, CFG_MAX_MESSAGE_SIZE);
	int64_t now = rq_now();
	size_t added = 0;

	pthread_mutex_lock(&qi->rmu);
	while (qi->rtail - qi->rhead < RING) {
		struct prep *p = &qi->ring[qi->rtail % RING];
		uint64_t id;
		char *name;
		enum pn_how how;

		if (qi->head == qi->tail || !ids_take(qi, &id))
			break;
		name = pending_pop(qi, &how);
		memset(p, 0, sizeof(*p));
		p->name = name;
		p->how = (uint8_t)how;
		p->id = id;
		p->now = now;
		p->maxsize = maxsize;
		p->maxrcpt = cfg_int(g, CFG_MAX_RECIPIENTS);
		p->hoplimit = cfg_int(g, CFG_HOPCOUNT_LIMIT);
		p->state = PREP_NEW;
		qi->rtail++;
		added++;
	}
	if (added > 0)
		pthread_cond_broadcast(&qi->rwork);
	pthread_mutex_unlock(&qi->rmu);
}

/* The oldest file in the ring, prepared (here, if no reader took it). */
static struct prep *
ring_take(struct queue_intake *qi)
{
	struct prep *p;

	pthread_mutex_lock(&qi->rmu);
	if (qi->rhead == qi->rtail) {
		pthread_mutex_unlock(&qi->rmu);
		return NULL;
	}
	p = &qi->ring[qi->rhead % RING];
	/* rather than sleep until a reader is done with P, prepare files no
	 * reader took yet (P itself first, when it is one of them) */
	while (p->state != PREP_DONE) {
		if (qi->rnext == qi->rtail) {
			qi->rwaiting = true;
			pthread_cond_wait(&qi->rdone, &qi->rmu);
			qi->rwaiting = false;
			continue;
		}
		ring_run_next(qi);
	}
	/* P's memory goes now: readers held back by it may go on */
	if (qi->rbytes > RING_BYTES && qi->rbytes - p->held <= RING_BYTES)
		pthread_cond_broadcast(&qi->rwork);
	qi->rbytes -= p->held;
	p->held = 0;
	pthread_mutex_unlock(&qi->rmu);
	return p;
}

/* Drops the oldest file of the ring (taken by ring_take()). */
static void
ring_pop(struct queue_intake *qi)
{
	pthread_mutex_lock(&qi->rmu);
	qi->rhead++;
	pthread_mutex_unlock(&qi->rmu);
}

/* Deletes the identities of files unlinked after the last commit. */
static void
idents_delete(struct queue_intake *qi, struct queue_txn *t)
{
	for (size_t off = 0; off + 2 <= qi->idents.n && t->err == QUEUE_OK;) {
		size_t n = (size_t)qi->idents.p[off] << 8 |
		    qi->idents.p[off + 1];
		MDB_val key = { n, qi->idents.p + off + 2 };
		int rc = mdb_del(t->txn, t->q->dbi[QDB_IDENT], &key, NULL);

		if (rc != MDB_NOTFOUND)
			queue_txn_fail(t, rc, "ident");
		off += 2 + n;
	}
}

/* Enters (and logs, once) the paused state of a full map. */
static enum queue_intake_result
intake_pause(struct queue_intake *qi)
{
	if (!qi->paused) {
		qi->paused = true;
		log_err("queue",
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
		log_err("queue",
		    "only %llu bytes free on the file system of %s, less "
		    "than min_free_space (%lld): intake paused, files stay "
		    "in incoming/",
		    lo, where, (long long)min);
	} else if (qi->nospace &&
	    lo >= (unsigned long long)min + (unsigned long long)min / 10) {
		qi->nospace = false;
		log_info("queue",
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

enum queue_intake_result
queue_intake_run(struct queue_intake *qi, size_t max_files)
{
	size_t cfgbatch = (size_t)cfg_int(
	    cfg_scope(qi->q->cfg, NULL), CFG_INTAKE_BATCH);
	struct queue_txn *t;
	char **names;
	uint64_t *ids;
	size_t nnames = 0, batch;
	struct qbuf keys = { NULL, 0, 0 };
	enum queue_result r;
	uint64_t first_id;
	size_t budget;
	bool noroom = false, ring_empty;

	drain_inotify(qi);
	/* A listing waits until the pending names are half gone, so that a
	 * backlog larger than PENDING_MAX is not listed on every call. */
	if (qi->rescan && qi->tail - qi->head < PENDING_MAX / 2) {
		qi->rescan = false;
		list_dir(qi);
		sweep_tmp(qi);
	}
	if (qi->nsettle > 0)
		settle_due(qi, rq_now());
	if (!space_ok(qi)) {
		jobs_collect(qi, false);
		return QI_PAUSED;
	}
	if (qi->batch_limit == 0 || qi->batch_limit > cfgbatch)
		qi->batch_limit = cfgbatch;
	batch = max_files < qi->batch_limit ? max_files : qi->batch_limit;
	if (batch == 0)
		batch = 1;
	ring_feed(qi);
	pthread_mutex_lock(&qi->rmu);
	ring_empty = qi->rhead == qi->rtail;
	first_id = ring_empty ? 0 : qi->ring[qi->rhead % RING].id;
	pthread_mutex_unlock(&qi->rmu);
	jobs_collect(qi, ring_empty);
	if (ring_empty && qi->head == qi->tail) {
		if (qi->idents.n > 0 && (t = queue_txn_begin(qi->q)) != NULL) {
			idents_delete(qi, t);
			if (queue_txn_commit(t) == QUEUE_OK)
				qi->idents.n = 0;
		}
		return intake_idle(qi);
	}
	budget = queue_room(qi->q);
	if (qi->paused &&
	    budget < (size_t)cfg_int(
			 cfg_scope(qi->q->cfg, NULL), CFG_QUEUE_MAP_SIZE) /
		    20)
		return QI_PAUSED; /* wait for real room: no flapping */
	if ((t = queue_txn_begin(qi->q)) == NULL)
		return QI_PAUSED;
	idents_delete(qi, t);
	ids_reserve(qi, t);
	names = xcalloc(batch, sizeof(*names));
	ids = xcalloc(batch, sizeof(*ids));
	while (nnames < batch && t->err == QUEUE_OK) {
		struct prep *p;
		enum import_result ir;

		ring_feed(qi);
		if ((p = ring_take(qi)) == NULL)
			break;
		ir = prep_store(qi, t, p, first_id, &keys, &budget);
		if (ir == IMP_NOROOM) {
			noroom = true; /* P stays first in the ring */
			break;
		}
		if (ir == IMP_QUEUED || t->err != QUEUE_OK) {
			/* queued, or to put back when the txn fails */
			ids[nnames] = p->id;
			names[nnames++] = p->name;
			prep_clear(p, false);
		} else if (ir == IMP_WAIT || ir == IMP_RETRY) {
			settle_add(qi, p->name, p->due); /* looked at later */
			prep_clear(p, false);
		} else {
			prep_clear(p, true);
		}
		ring_pop(qi);
	}
	if (nnames == 0 && t->err == QUEUE_OK && qi->idents.n == 0 &&
	    qi->id_res == qi->id_res_end) {
		queue_txn_abort(t);
		free(names);
		free(ids);
		free(keys.p);
		if (noroom)
			return intake_pause(qi);
		return qi->head == qi->tail && qi->rhead == qi->rtail &&
			!qi->rescan
		    ? intake_idle(qi)
		    : QI_MORE;
	}
	r = queue_txn_commit(t);
	if (r != QUEUE_OK) {
		/* nothing was written: every file stays and is tried again
		 * (with new ids: the reservation went with the txn) */
		qi->id_res = qi->id_res_end = 0;
		for (size_t i = 0; i < nnames; i++) {
			pending_add(qi, names[i], PN_READY);
			free(names[i]);
		}
		free(names);
		free(ids);
		free(keys.p);
		if (r == QUEUE_MAPFULL && qi->batch_limit > 1) {
			qi->batch_limit /= 2;
			return QI_MORE;
		}
		if (r == QUEUE_MAPFULL)
			return intake_pause(qi);
		if (!qi->paused) {
			qi->paused = true;
			log_err("queue",
			    "intake paused by a queue error; files "
			    "stay in incoming/");
		}
		return QI_PAUSED;
	}
	ids_committed(qi);
	qi->nqueued += nnames;
	if (qi->paused) {
		qi->paused = false;
		log_info("queue", "queue has room again: intake resumed");
	}
	if (qi->batch_limit < cfgbatch)
		qi->batch_limit *= 2;
	/* committed: the files go (only if still the very file read), then,
	 * in a later txn, their identities */
	qi->idents.n = 0;
	{
		struct unlink_job *j = xcalloc(1, sizeof(*j));

		j->names = names;
		j->ids = ids;
		j->n = nnames;
		j->keys = keys;
		job_push(qi, j);
	}
	if (qi->head != qi->tail || qi->rhead != qi->rtail || qi->rescan)
		return QI_MORE;
	/* idle: let the unlinks finish and drop their identities */
	jobs_collect(qi, true);
	if (qi->idents.n > 0 && (t = queue_txn_begin(qi->q)) != NULL) {
		idents_delete(qi, t);
		if (queue_txn_commit(t) == QUEUE_OK)
			qi->idents.n = 0;
	}
	return intake_idle(qi);
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
