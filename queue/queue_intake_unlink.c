/*
 * queue_intake_unlink.c - what happens to a file after its commit: the
 * unlinker threads unlink it (if it is still the file read) and fsync
 * incoming/; then its identity is deleted from the queue.
 *
 * Public (to the intake files, queue_intake_int.h):
 * intake_unlinkers_start(), intake_unlinkers_stop(), intake_unlink_push(),
 * intake_unlink_collect(), intake_ident_key(), intake_idents_delete(),
 * intake_idents_flush(), intake_idents_prune().
 *
 * Invariants: a file is unlinked only after the txn holding its message
 * and its identity (dev, ino, size, mtime, name) committed, and only if
 * it still has that identity; an identity entry is deleted only after
 * the unlink was made durable (fsync of incoming/ succeeded: after an
 * error the identities stay until the next start prunes them), so a
 * file found again with a recorded identity is a leftover of a crash
 * and is just unlinked.  A file written to after it was read and queued
 * goes to bad/.  The unlinks trail the commits by at most about
 * UNLINK_TRAIL names (a batch more: intake checks before each); the
 * names of a job stay in flight until the main thread has collected
 * the job: a burst is queued at the rate the readers and the commits
 * give, its files removed behind it, and the main thread never waits
 * for an unlink (intake_unlink_wake_arm()).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "queue_intake_int.h"

/* Committed files to unlink: names (flying, owned by the name set) and
 * their identity keys. */
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

#define UNLINK_CHUNK 32

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

		/* not to be saved: there is no "unlink if still this inode",
		 * and a file renamed over the name after the read is a
		 * message not yet queued (issue 18 measured it: 3% of
		 * intake's CPU) */
		if (fstatat(qi->din, j->names[i], &st, AT_SYMLINK_NOFOLLOW) !=
		    0)
			continue;
		if (intake_ident_key(ik, &st, j->names[i]) == n &&
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
		if (intake_bad_move(qi, j->names[i], &st, why) == BAD_MOVED)
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
		log_err("pickup",
		    "fsync %s: %s: the identities of %zu files removed are "
		    "kept (pruned at the next start, when their removal is "
		    "on disk)",
		    qi->incoming, strerror(err), n);
	qi->sync_failing = true;
}

/* Frees a job (not its names). */
static void
job_free(struct unlink_job *j)
{
	free(j->names);
	free(j->ids);
	free(j->keys.p);
	free(j->off);
	free(j->done.p);
	free(j);
}

/* An unlinker thread: takes chunks of the oldest job with names left;
 * whoever finishes a job fsyncs incoming/ (the identities may go only
 * once the unlinks are durable) and hands its identities and the job
 * back (its names' flights end in the main thread). */
static void *
unlinker(void *arg)
{
	struct queue_intake *qi = arg;
	struct qbuf done = { NULL, 0, 0 };

	pthread_mutex_lock(&qi->mu);
	for (;;) {
		struct unlink_job *j;
		size_t a, b;

		if (qi->th_stop)
			break; /* what is left is removed at the next start */
		for (j = qi->jobs; j != NULL && j->claimed == j->n; j = j->next)
			;
		if (j == NULL) {
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
		/* J's last chunk: off the list, sync, hand over */
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
		j->next = qi->finished;
		qi->finished = j;
		if (qi->want_wake) {
			qi->want_wake = false;
			(void)eventfd_write(qi->wakefd, 1);
		}
		pthread_cond_broadcast(&qi->cv);
	}
	pthread_mutex_unlock(&qi->mu);
	free(done.p);
	return NULL;
}

/* Hands a job to the unlinkers (or runs it here without threads); its
 * names count in the trail until collected. */
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
		for (size_t i = 0; i < j->n; i++)
			intake_flight_end(qi, j->names[i], false);
		job_free(j);
		return;
	}
	qi->trail += j->n;
	pthread_mutex_lock(&qi->mu);
	j->next = NULL;
	*qi->jobs_tail = j;
	qi->jobs_tail = &j->next;
	qi->njobs++;
	pthread_cond_broadcast(&qi->cv);
	pthread_mutex_unlock(&qi->mu);
}

/* Takes over the identities the unlinkers finished, and ends the
 * flights of the names of the jobs done. */
void
intake_unlink_collect(struct queue_intake *qi)
{
	struct unlink_job *fin;

	if (!qi->th_on)
		return;
	pthread_mutex_lock(&qi->mu);
	qbuf_put(&qi->idents, qi->done.p, qi->done.n);
	qi->done.n = 0;
	fin = qi->finished;
	qi->finished = NULL;
	pthread_mutex_unlock(&qi->mu);
	while (fin != NULL) {
		struct unlink_job *j = fin;

		fin = j->next;
		for (size_t i = 0; i < j->n; i++)
			intake_flight_end(qi, j->names[i], false);
		qi->trail -= j->n;
		job_free(j);
	}
}

bool
intake_unlink_wake_arm(struct queue_intake *qi)
{
	bool armed = false;

	if (!qi->th_on)
		return false;
	pthread_mutex_lock(&qi->mu);
	/* a job finished since the last collect is on qi->finished (its
	 * identities in qi->done, put there together) */
	if (qi->finished == NULL && qi->njobs > 0) {
		qi->want_wake = true;
		armed = true;
	}
	pthread_mutex_unlock(&qi->mu);
	return armed;
}

void
intake_unlink_wake_clear(struct queue_intake *qi)
{
	eventfd_t v;

	if (qi->wakefd >= 0)
		(void)eventfd_read(qi->wakefd, &v);
}

/* ---- identities ---- */

/* Builds the identity key of a spool file. */
size_t
intake_ident_key(uint8_t *k, const struct stat *st, const char *name)
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

/* Deletes the identities of files unlinked after the last commit. */
void
intake_idents_delete(struct queue_intake *qi, struct queue_txn *t)
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

/*
 * Deletes identities whose file is gone (unlinked, the unlink made
 * durable by the fsync before this, but the process ended before the
 * identity was deleted).  A file still there with its identity is left
 * to the first rescan, which unlinks it as already queued.
 */
static void
idents_prune_gone(struct queue_intake *qi)
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
			    intake_ident_key(ik, &st, name) == key.mv_size &&
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

void
intake_idents_prune(struct queue_intake *qi)
{
	struct statvfs v;

	/* unlinks done before a crash must be durable before identities go
	 * (not on a file system gone read-only: its state may not be the
	 * disk's) */
	if (fsync(qi->din) != 0)
		log_err("pickup", "fsync %s: %s: identities kept", qi->incoming,
		    strerror(errno));
	else if (fstatvfs(qi->din, &v) == 0 && (v.f_flag & ST_RDONLY))
		log_err(
		    "pickup", "%s is read-only: identities kept", qi->incoming);
	else
		idents_prune_gone(qi);
}

void
intake_idents_flush(struct queue_intake *qi)
{
	struct queue_txn *t;

	if (qi->idents.n > 0 && (t = queue_txn_begin(qi->q)) != NULL) {
		intake_idents_delete(qi, t);
		if (queue_txn_commit(t) == QUEUE_OK)
			qi->idents.n = 0;
	}
}

/* ---- the unlinker threads ---- */

void
intake_unlinkers_start(struct queue_intake *qi)
{
	pthread_mutex_init(&qi->mu, NULL);
	pthread_cond_init(&qi->cv, NULL);
	qi->jobs_tail = &qi->jobs;
	/* without it intake could not wait for the unlinkers: it unlinks
	 * in the main thread instead */
	qi->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (qi->wakefd < 0)
		return;
	for (qi->nth = 0; qi->nth < UNLINKERS; qi->nth++)
		if (pthread_create(&qi->th[qi->nth], NULL, unlinker, qi) != 0)
			break;
	qi->th_on = qi->nth > 0;
}

void
intake_unlinkers_stop(struct queue_intake *qi)
{
	if (qi->th_on) {
		pthread_mutex_lock(&qi->mu);
		qi->th_stop = true;
		pthread_cond_broadcast(&qi->cv);
		pthread_mutex_unlock(&qi->mu);
		for (int i = 0; i < qi->nth; i++)
			pthread_join(qi->th[i], NULL);
		intake_unlink_collect(qi);
		/* A stop does not wait for a trail of removals (on a slow disk
		 * it can take seconds): their files stay, and so do their
		 * identities, so the next start removes them as already
		 * queued; those removed already are pruned then. */
		if (qi->trail > 0)
			log_info("pickup",
			    "up to %zu spool files queued but not yet "
			    "removed: removed at the next start",
			    qi->trail);
		while (qi->jobs != NULL) {
			struct unlink_job *j = qi->jobs;

			qi->jobs = j->next;
			job_free(j); /* its names are the name set's */
		}
		qi->trail = 0;
		qi->th_on = false;
		pthread_mutex_destroy(&qi->mu);
		pthread_cond_destroy(&qi->cv);
		intake_idents_flush(qi);
	}
	if (qi->wakefd >= 0)
		close(qi->wakefd);
	qi->wakefd = -1;
	free(qi->done.p);
	free(qi->idents.p);
}

void
intake_unlink_push(struct queue_intake *qi, char **names, uint64_t *ids,
    size_t n, struct qbuf keys)
{
	struct unlink_job *j = xcalloc(1, sizeof(*j));

	j->names = names;
	j->ids = ids;
	j->n = n;
	j->keys = keys;
	job_push(qi, j);
}
