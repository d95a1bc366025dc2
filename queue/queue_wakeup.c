/*
 * queue_wakeup.c - wakeups between processes: a command that changed the
 * queue (hold, release, flush, delete) touches queue_dir/wakeup, and the
 * daemon, watching it with inotify, looks at the queue again; and the
 * flush notes, which tell the daemon which destinations to forget the
 * host status of (Postfix's `postqueue -f`): `flush` writes them in the
 * transaction of the flush itself (meta "flush.all", a counter, for a
 * flush of everything; "flush." id(8) per message named), the daemon
 * takes them (reads and deletes them in one transaction) on its wakeup.
 *
 * Public: queue_wakeup_send(), queue_wakeup_fd(), queue_wakeup_drain(),
 * queue_flush_note(), queue_flush_take().
 *
 * Invariants: the wakeup file is opened with O_NOFOLLOW|O_NONBLOCK, never
 * through a link, never blocked by a FIFO; one that is not a regular
 * file is replaced by the queue's owner.  A flush note exists exactly
 * when its flush committed and the daemon has not taken it yet (host
 * status lives in the daemon's memory only, so a crash after the take
 * loses nothing a restart would keep).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "queue_int.h"

/* The path of the wakeup file into buf. */
static void
wake_path(const struct queue *q, char *buf, size_t len)
{
	snprintf(buf, len, "%s/wakeup", q->dir);
}

/* Opens the wakeup file for writing: never through a link, never
 * blocked by a FIFO. */
static int
wake_open(const char *path)
{
	return open(path,
	    O_WRONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC,
	    0600);
}

void
queue_wakeup_send(struct queue *q)
{
	char path[4096];
	int fd;

	wake_path(q, path, sizeof(path));
	fd = wake_open(path);
	if (fd >= 0) {
		/* closing a file opened for writing is IN_CLOSE_WRITE */
		close(fd);
	}
}

int
queue_wakeup_fd(struct queue *q)
{
	char path[4096];
	struct stat st;
	int fd;

	if (q->wake_fd >= 0)
		return q->wake_fd;
	wake_path(q, path, sizeof(path));
	if (lstat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
		/* not ours to follow: the queue's owner replaces it */
		log_warn(
		    "queue", "%s is not a regular file: replacing it", path);
		(void)unlink(path);
	}
	fd = wake_open(path);
	if (fd >= 0)
		close(fd);
	q->wake_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (q->wake_fd < 0)
		return -1;
	if (inotify_add_watch(q->wake_fd, path,
		IN_CLOSE_WRITE | IN_ATTRIB | IN_DONT_FOLLOW) < 0) {
		log_warn("queue", "inotify %s: %s", path, strerror(errno));
		close(q->wake_fd);
		q->wake_fd = -1;
	}
	return q->wake_fd;
}

void
queue_wakeup_drain(struct queue *q)
{
	char buf[4096];

	if (q->wake_fd < 0)
		return;
	while (read(q->wake_fd, buf, sizeof(buf)) > 0)
		;
}

#define FLUSH_PFX "flush." /* meta keys of the flush notes */
#define FLUSH_PFXLEN 6

/* Notes in T that message ID (0: every message) was flushed. */
enum queue_result
queue_flush_note(struct queue_txn *t, uint64_t id)
{
	uint8_t k[FLUSH_PFXLEN + 8], v[8];
	MDB_val key = { FLUSH_PFXLEN + 8, k }, val = { 8, v };

	if (t->err != QUEUE_OK)
		return t->err;
	memcpy(k, FLUSH_PFX, FLUSH_PFXLEN);
	if (id == 0) {
		MDB_val old;

		memcpy(k + FLUSH_PFXLEN, "all", 3);
		key.mv_size = FLUSH_PFXLEN + 3;
		qbe64_put(v, 1);
		if (mdb_get(t->txn, t->q->dbi[QDB_META], &key, &old) == 0 &&
		    old.mv_size == 8)
			qbe64_put(v, qbe64_get(old.mv_data) + 1);
	} else {
		qbe64_put(k + FLUSH_PFXLEN, id);
		qbe64_put(v, (uint64_t)rq_now());
	}
	queue_txn_fail(t, mdb_put(t->txn, t->q->dbi[QDB_META], &key, &val, 0),
	    "flush note");
	return t->err;
}

/* Takes the flush notes; see queue.h. */
enum queue_result
queue_flush_take(
    struct queue *q, bool *all, uint64_t *ids, size_t max, size_t *n)
{
	struct queue_txn *t;
	MDB_cursor *c = NULL;
	MDB_val key = { FLUSH_PFXLEN, (void *)FLUSH_PFX }, val;
	bool any = false;
	int rc;

	*all = false;
	*n = 0;
	if ((t = queue_txn_begin(q)) == NULL)
		return QUEUE_ERR;
	rc = mdb_cursor_open(t->txn, q->dbi[QDB_META], &c);
	for (rc = rc ? rc : mdb_cursor_get(c, &key, &val, MDB_SET_RANGE);
	     rc == 0 && key.mv_size >= FLUSH_PFXLEN &&
	     memcmp(key.mv_data, FLUSH_PFX, FLUSH_PFXLEN) == 0;
	     rc = mdb_cursor_get(c, &key, &val, MDB_NEXT)) {
		any = true;
		if (key.mv_size == FLUSH_PFXLEN + 8 && *n < max)
			ids[(*n)++] = qbe64_get(
			    (const uint8_t *)key.mv_data + FLUSH_PFXLEN);
		else
			*all = true; /* "all", or more than the caller takes */
		rc = mdb_cursor_del(c, 0);
		if (rc != 0)
			break;
	}
	if (c != NULL)
		mdb_cursor_close(c);
	if (rc != 0 && rc != MDB_NOTFOUND)
		queue_txn_fail(t, rc, "flush notes");
	if (!any && t->err == QUEUE_OK) {
		queue_txn_abort(t);
		return QUEUE_OK;
	}
	return queue_txn_commit(t);
}
