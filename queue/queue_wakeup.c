/*
 * queue_wakeup.c - wakeups between processes: a command that changed the
 * queue (hold, release, flush, delete) touches queue_dir/wakeup, and the
 * daemon, watching it with inotify, looks at the queue again.
 *
 * Public: queue_wakeup_send(), queue_wakeup_fd(), queue_wakeup_drain().
 *
 * Invariants: the wakeup file is opened with O_NOFOLLOW|O_NONBLOCK, never
 * through a link, never blocked by a FIFO; one that is not a regular
 * file is replaced by the queue's owner.
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
