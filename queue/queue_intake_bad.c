/*
 * queue_intake_bad.c - bad/: entries of incoming/ that cannot be queued
 * are moved there untouched, under names the daemon picks, each with a
 * NAME.reason; entries that cannot even be moved are logged once; names
 * from outside are escaped in log lines and reasons.
 *
 * Public (to the intake files, queue_intake_int.h): intake_bad_move(),
 * intake_stuck_report(), intake_stuck_rotate(), intake_stuck_free();
 * (to queue/, queue_int.h) queue_name_escape().
 *
 * Invariants: a name in bad/ is 16 hex digits from a counter (a file's
 * queue id is taken only once its parse succeeded), never the
 * submitter's; NAME.reason is created first
 * with O_EXCL|O_NOFOLLOW|O_NONBLOCK (it never opens what is there, so a
 * planted FIFO cannot block a thread) and the entry is renamed without
 * replacing anything (RENAME_NOREPLACE, or a check and a rename under
 * badmu): no clash overwrites an earlier bad file or its reason.  An
 * entry that cannot be taken or moved is logged once while it stays:
 * fingerprints (name hash, dev, ino) are kept for two listings, at most
 * STUCK_MAX a listing.  Any thread.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "queue_intake_int.h"

/* ---- names from outside in log lines and reasons ---- */

/* A name or text from a local user can neither break a log line nor
 * fake one; see queue_int.h. */
const char *
queue_name_escape(char out[QUEUE_ESC_MAX], const char *s)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (o + 8 > QUEUE_ESC_MAX) {
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

/* ---- moves to bad/ ---- */

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

/* Whether bad/TARGET is the entry ST describes (no ST: not known). */
static bool
bad_moved_is(struct queue_intake *qi, const char *target, const struct stat *st)
{
	struct stat now;

	if (st == NULL)
		return true;
	return fstatat(qi->dbad, target, &now, AT_SYMLINK_NOFOLLOW) == 0 &&
	    now.st_dev == st->st_dev && now.st_ino == st->st_ino;
}

/*
 * Removes what a daemon killed between a reason file and its move left
 * in bad/: an empty NAME.reason with no NAME beside it (start-up only).
 */
void
intake_bad_sweep(struct queue_intake *qi)
{
	int fd = openat(qi->dbad, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *de;

	if (d == NULL) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((de = readdir(d)) != NULL) {
		size_t n = strlen(de->d_name);
		char entry[64];
		struct stat st;

		if (n != 16 + 7 || strcmp(de->d_name + 16, ".reason") != 0)
			continue;
		memcpy(entry, de->d_name, 16);
		entry[16] = '\0';
		if (fstatat(qi->dbad, entry, &st, AT_SYMLINK_NOFOLLOW) == 0 ||
		    errno != ENOENT ||
		    fstatat(qi->dbad, de->d_name, &st, AT_SYMLINK_NOFOLLOW) !=
			0 ||
		    !S_ISREG(st.st_mode) || st.st_size != 0)
			continue;
		if (unlinkat(qi->dbad, de->d_name, 0) == 0)
			log_info("pickup",
			    "removed bad/%s: left empty by a "
			    "stop before its move",
			    de->d_name);
	}
	closedir(d);
}

/*
 * Moves entry NAME (its lstat ST) from incoming/ into bad/ untouched,
 * under a name the daemon picks: 16 hex digits from a counter (the next
 * on a clash); with NAME.reason beside it saying
 * WHY and naming the original (escaped).
 * The reason file is created first (O_EXCL: it never opens what is
 * there, so a planted FIFO cannot block), then the entry is renamed
 * without replacing anything; a clash just tries the next name.  An
 * entry that cannot be moved is logged once (any thread).
 */
enum bad_result
intake_bad_move(struct queue_intake *qi, const char *name,
    const struct stat *st, const char *why)
{
	char target[20], rpath[32], ename[QUEUE_ESC_MAX], ewhy[QUEUE_ESC_MAX];
	char text[2 * QUEUE_ESC_MAX + 100];
	int fd = -1, err = 0, n;
	bool renamed = false;

	queue_name_escape(ename, name);
	queue_name_escape(ewhy, why);
	for (int tries = 0; tries < 1000 && !renamed; tries++) {
		uint64_t seq = __atomic_fetch_add(
		    &qi->badseq, 1, __ATOMIC_RELAXED);

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
		intake_stuck_report(qi, name, st,
		    "%s: cannot move to bad/: %s (%s)", ename, strerror(err),
		    ewhy);
		return BAD_STUCK;
	}
	if (!bad_moved_is(qi, target, st)) {
		/* another entry took the name between the check and the
		 * move: it was not judged; back where it was, to be looked
		 * at as itself (else kept here, saying so) */
		if (renameat2(qi->dbad, target, qi->din, name,
			RENAME_NOREPLACE) == 0) {
			close(fd);
			(void)unlinkat(qi->dbad, rpath, 0);
			return BAD_GONE;
		}
		queue_name_escape(ewhy,
		    "replaced under its name while it was checked; not "
		    "looked at");
		why = "replaced";
	}
	n = snprintf(text, sizeof(text), "%s\nname: %s\nuid: %u\n", ewhy, ename,
	    st != NULL ? (unsigned)st->st_uid : 0u);
	if (n > (int)sizeof(text) - 1)
		n = (int)sizeof(text) - 1;
	if (write(fd, text, (size_t)n) != n || fsync(fd) < 0)
		log_err("pickup", "bad/%s: %s", rpath, strerror(errno));
	close(fd);
	if (fsync(qi->dbad) < 0 || fsync(qi->din) < 0)
		log_err("pickup", "bad/%s: fsync: %s", target, strerror(errno));
	log_warn("pickup", "%s: moved to bad/%s (uid=%u): %s", ename, target,
	    st != NULL ? (unsigned)st->st_uid : 0u, ewhy);
	__atomic_fetch_add(
	    &qi->nbad[queue_bad_reason(why)], 1, __ATOMIC_RELAXED);
	return BAD_MOVED;
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
void
intake_stuck_rotate(struct queue_intake *qi)
{
	pthread_mutex_lock(&qi->stuckmu);
	free(qi->stuck_prev.v);
	qi->stuck_prev = qi->stuck_cur;
	memset(&qi->stuck_cur, 0, sizeof(qi->stuck_cur));
	pthread_mutex_unlock(&qi->stuckmu);
}

/* Logs a warning about entry NAME (lstat ST, or NULL) unless it was
 * logged while the entry was there before (any thread). */
void
intake_stuck_report(struct queue_intake *qi, const char *name,
    const struct stat *st, const char *fmt, ...)
{
	uint64_t k = intake_name_hash(name);
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
		log_warn("pickup",
		    "over %d entries in %s cannot be taken: no more of them "
		    "are logged",
		    STUCK_MAX, qi->incoming);
	if (seen)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	log_warn("pickup", "%s", line);
}

void
intake_stuck_free(struct queue_intake *qi)
{
	free(qi->stuck_cur.v);
	free(qi->stuck_prev.v);
}
