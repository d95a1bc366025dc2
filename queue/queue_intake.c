/*
 * queue_intake.c - exactly-once intake of spool_dir/incoming/ into the
 * queue: inotify plus rescans list the names; reader threads check each
 * file (lstat, regular, size, O_NOFOLLOW open, fstat matches), read,
 * parse, build and compress it off the write txn, in a ring the main
 * thread drains in order; many files go into one write txn (group
 * commit) together with their identities; files are unlinked only after
 * the commit, by unlinker threads.
 *
 * Public: queue_intake_open(), queue_intake_fd(), queue_intake_run(),
 * queue_intake_rescan(), queue_intake_close().
 *
 * Invariants: a file is unlinked only after the txn holding its message
 * and its identity (dev, ino, size, mtime, name) committed; an identity
 * entry is deleted only after that unlink was made durable (fsync of
 * incoming/), so a file found again with a recorded identity is a
 * leftover of a crash and is just unlinked.  A file that cannot be queued
 * is renamed into bad/ untouched with NAME.reason beside it.  On
 * MDB_MAP_FULL the txn is aborted and every file stays in incoming/.
 * A reader builds the stored message with its queue id, so ids are
 * handed out from ranges reserved by an earlier, committed txn (see
 * ids_take()): no other writer can allocate them, and a range lost to a
 * crash or a failed txn is just never used.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
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
	size_t n;
	struct qbuf keys; /* u16 len | key per name */
	size_t *off; /* offset of each name's key in keys */
	size_t claimed, finished; /* names handed out / done (under mu) */
	struct qbuf done; /* identities of the files unlinked (under mu) */
};

#define UNLINKERS 8 /* unlink(2) is latency-bound: it scales with threads */
#define UNLINK_JOBS 4 /* committed batches the unlinks may trail by */
#define UNLINK_CHUNK 32

enum import_result { IMP_QUEUED, IMP_SKIP, IMP_RETRY, IMP_NOROOM };

/* A spool file on its way in, prepared by a reader thread (or by the
 * main thread when no reader took it yet). */
struct prep {
	char *name;
	uint64_t id; /* its queue id, from a committed reservation */
	int64_t now; /* arrival */
	int64_t maxsize; /* max_message_size when it was handed out */
	int64_t maxrcpt, hoplimit; /* max_recipients, hopcount_limit then */
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
	pthread_mutex_t badmu; /* move_bad() picks free names in bad/ */
	char hostname[256];
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

/* Adds NAME to the pending names unless it is there already; returns
 * false when the pending list is full (a rescan will find NAME). */
static bool
pending_add(struct queue_intake *qi, const char *name)
{
	bool found;
	char *s;

	if (name[0] == '.' || name[0] == '\0')
		return true;
	if (qi->tail - qi->head >= PENDING_MAX) {
		qi->rescan = true;
		return false;
	}
	set_slot(qi, name, &found);
	if (found)
		return true;
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
	s = xstrdup(name);
	qi->fifo[qi->tail++] = s;
	set_insert(qi, s);
	return true;
}

/* Takes the oldest pending name (the caller frees it), or NULL. */
static char *
pending_pop(struct queue_intake *qi)
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
	return s;
}

/* ---- the unlinker ---- */

static size_t ident_key(uint8_t *k, const struct stat *st, const char *name);
static void idents_delete(struct queue_intake *qi, struct queue_txn *t);
static void *reader(void *);
static void prep_clear(struct prep *, bool free_name);

/* Unlinks names [a, b) of job J if each is still the file read; puts
 * the identities of the files unlinked into DONE. */
static void
job_unlink(struct queue_intake *qi, struct unlink_job *j, size_t a, size_t b,
    struct qbuf *done)
{
	for (size_t i = a; i < b; i++) {
		const uint8_t *k = j->keys.p + j->off[i];
		size_t n = (size_t)k[0] << 8 | k[1];
		struct stat st;
		uint8_t ik[440];

		if (fstatat(qi->din, j->names[i], &st, AT_SYMLINK_NOFOLLOW) ==
			0 &&
		    ident_key(ik, &st, j->names[i]) == n &&
		    memcmp(ik, k + 2, n) == 0 &&
		    unlinkat(qi->din, j->names[i], 0) == 0)
			qbuf_put(done, k, n + 2);
	}
}

/* Frees a job. */
static void
job_free(struct unlink_job *j)
{
	for (size_t i = 0; i < j->n; i++)
		free(j->names[i]);
	free(j->names);
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
		(void)fsync(qi->din);
		pthread_mutex_lock(&qi->mu);
		qbuf_put(&qi->done, j->done.p, j->done.n);
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
		job_unlink(qi, j, 0, j->n, &qi->idents);
		(void)fsync(qi->din);
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
	qi->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (qi->ifd >= 0 &&
	    inotify_add_watch(qi->ifd, qi->incoming,
		IN_MOVED_TO | IN_CLOSE_WRITE | IN_CREATE | IN_ONLYDIR) < 0) {
		log_warn("queue", "inotify %s: %s (rescans only)", qi->incoming,
		    strerror(errno));
		close(qi->ifd);
		qi->ifd = -1;
	}
	/* unlinks done before a crash must be durable before identities go */
	(void)fsync(qi->din);
	idents_prune(qi);
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
	while ((s = pending_pop(qi)) != NULL)
		free(s);
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

			if (ev->mask & IN_Q_OVERFLOW)
				qi->rescan = true;
			else if (ev->len == 0)
				;
			else if (!(ev->mask & IN_CREATE))
				pending_add(qi, ev->name);
			else if (fstatat(qi->din, ev->name, &st,
				     AT_SYMLINK_NOFOLLOW) == 0 &&
			    !S_ISREG(st.st_mode))
				/* no close-write will come for these */
				pending_add(qi, ev->name);
			p += sizeof(*ev) + ev->len;
		}
	}
}

/* Lists the whole of incoming/ into the pending names. */
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
	rewinddir(d);
	while ((de = readdir(d)) != NULL)
		if (!pending_add(qi, de->d_name))
			break;
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

/* Moves NAME into bad/ untouched with NAME.reason beside it. */
static void
move_bad(struct queue_intake *qi, const char *name, const char *why)
{
	char target[600], rpath[620];
	int fd;

	pthread_mutex_lock(&qi->badmu);
	snprintf(target, sizeof(target), "%s", name);
	for (int i = 1;
	     faccessat(qi->dbad, target, F_OK, AT_SYMLINK_NOFOLLOW) == 0; i++)
		snprintf(target, sizeof(target), "%.500s.%d", name, i);
	if (renameat(qi->din, name, qi->dbad, target) < 0) {
		if (errno != ENOENT)
			log_err("queue", "%.200s: cannot move to bad/: %s",
			    name, strerror(errno));
		pthread_mutex_unlock(&qi->badmu);
		return;
	}
	snprintf(rpath, sizeof(rpath), "%s.reason", target);
	fd = openat(qi->dbad, rpath,
	    O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd >= 0) {
		char line[300];
		int n = snprintf(line, sizeof(line), "%s\n", why);

		if (write(fd, line, (size_t)n) < 0)
			log_err(
			    "queue", "bad/%.200s: %s", rpath, strerror(errno));
		(void)fsync(fd);
		close(fd);
	}
	(void)fsync(qi->dbad);
	(void)fsync(qi->din);
	pthread_mutex_unlock(&qi->badmu);
	log_warn("queue", "%.200s: moved to bad/%.200s: %s", name, target, why);
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
 * Prepares spool file P->name (any thread): checks it, reads it, parses
 * it, builds the message as stored with P's id and arrival time, and
 * compresses it into P->rec.  Bad files go to bad/ here.
 */

static __thread char *buf; /* the file being read, per thread */
static __thread size_t bufcap;

static void
prep_run(struct queue_intake *qi, struct prep *p)
{
	struct stat fst, *st = &p->st;
	size_t got = 0, blen;
	char why[200], received[600], date[100], msgid[400], tbuf[64];
	char idstr[17], *body;
	struct tm tm;
	time_t now;
	int fd;

	p->r = IMP_SKIP;
	if (fstatat(qi->din, p->name, st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno != ENOENT)
			log_warn(
			    "queue", "%.200s: %s", p->name, strerror(errno));
		return;
	}
	if (!S_ISREG(st->st_mode)) {
		move_bad(qi, p->name,
		    S_ISDIR(st->st_mode)       ? "not a regular file: directory"
			: S_ISLNK(st->st_mode) ? "not a regular file: symlink"
			: S_ISFIFO(st->st_mode) ? "not a regular file: fifo"
			: S_ISSOCK(st->st_mode) ? "not a regular file: socket"
						: "not a regular file: device");
		return;
	}
	if (st->st_size == 0) {
		move_bad(qi, p->name, "empty file");
		return;
	}
	if (st->st_size > p->maxsize) {
		snprintf(why, sizeof(why),
		    "message too large: %lld bytes, max_message_size is %lld",
		    (long long)st->st_size, (long long)p->maxsize);
		move_bad(qi, p->name, why);
		return;
	}
	p->iklen = ident_key(p->ik, st, p->name);
	fd = spool_open(qi, p->name);
	if (fd < 0) {
		if (errno == ELOOP)
			move_bad(qi, p->name, "not a regular file: symlink");
		else if (errno != ENOENT)
			log_warn(
			    "queue", "%.200s: %s", p->name, strerror(errno));
		return;
	}
	if (fstat(fd, &fst) < 0 || !S_ISREG(fst.st_mode) ||
	    fst.st_dev != st->st_dev || fst.st_ino != st->st_ino ||
	    fst.st_size != st->st_size ||
	    fst.st_mtim.tv_sec != st->st_mtim.tv_sec ||
	    fst.st_mtim.tv_nsec != st->st_mtim.tv_nsec) {
		close(fd);
		p->r = IMP_RETRY; /* it changed under us: look again later */
		return;
	}
	if (bufcap < (size_t)st->st_size + 1) {
		free(buf);
		bufcap = (size_t)st->st_size + 1;
		buf = xmalloc(bufcap);
	}
	while (got < (size_t)st->st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st->st_size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	if (got != (size_t)st->st_size) {
		p->r = IMP_RETRY;
		return;
	}
	/* a bare CR is a line end: for the parse, and in what is sent */
	qp_bare_cr_fix(buf, got);
	if (qp_message_parse(
		buf, got, qi->hostname, (size_t)p->maxrcpt, &p->pr) != QP_OK) {
		move_bad(qi, p->name, p->pr.why);
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
		char idstr[17];

		if (id >= first_id)
			return IMP_SKIP; /* already in this very txn */
		/* committed before a crash, not unlinked: finish the job */
		queue_id_format(id, idstr);
		log_info("queue", "%.200s: already queued as %s: removed",
		    p->name, idstr);
		(void)unlinkat(qi->din, p->name, 0);
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

		if (qi->head == qi->tail || !ids_take(qi, &id))
			break;
		name = pending_pop(qi);
		memset(p, 0, sizeof(*p));
		p->name = name;
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

enum queue_intake_result
queue_intake_run(struct queue_intake *qi, size_t max_files)
{
	size_t cfgbatch = (size_t)cfg_int(
	    cfg_scope(qi->q->cfg, NULL), CFG_INTAKE_BATCH);
	struct queue_txn *t;
	char **names;
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
		return QI_IDLE;
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
			names[nnames++] = p->name;
			prep_clear(p, false);
		} else {
			if (ir == IMP_RETRY)
				qi->rescan =
				    true; /* seen on the next listing */
			prep_clear(p, true);
		}
		ring_pop(qi);
	}
	if (nnames == 0 && t->err == QUEUE_OK && qi->idents.n == 0 &&
	    qi->id_res == qi->id_res_end) {
		queue_txn_abort(t);
		free(names);
		free(keys.p);
		if (noroom)
			return intake_pause(qi);
		return qi->head == qi->tail && qi->rhead == qi->rtail &&
			!qi->rescan
		    ? QI_IDLE
		    : QI_MORE;
	}
	r = queue_txn_commit(t);
	if (r != QUEUE_OK) {
		/* nothing was written: every file stays and is tried again
		 * (with new ids: the reservation went with the txn) */
		qi->id_res = qi->id_res_end = 0;
		for (size_t i = 0; i < nnames; i++) {
			pending_add(qi, names[i]);
			free(names[i]);
		}
		free(names);
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
	return QI_IDLE;
}
