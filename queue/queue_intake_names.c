/*
 * queue_intake_names.c - the names of incoming/: found by inotify and
 * by listings, pending in a FIFO, then in flight until their file is
 * gone; files that may still be written wait on a settle list.
 *
 * Public (to the intake files, queue_intake_int.h): intake_watch_start(),
 * intake_names_list(), intake_name_pop(), intake_flight_end(),
 * intake_settle_add(), intake_names_free().
 *
 * Invariants: a name is in the name set (which owns it) from when it is
 * found until its flight ends: pending (in the FIFO), then flying
 * (handed to a reader, filed, waiting for its unlink) until its file is
 * unlinked or was left for good (bad/, the settle list, already queued).
 * A listing never takes a name that is in the set, so a file is never
 * read twice: its identity, deleted once it is unlinked, could not stop
 * a second copy read before the unlink from being queued.  inotify
 * saying a file under a flying name is complete (another file renamed
 * over it) makes the name pending again when the flight ends; without
 * inotify a listing finds such a file later.  A name is in at most one
 * of the set and the settle list.  At most PENDING_MAX names are
 * pending; a listing waits until half of them are gone.  Main thread
 * only.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "queue_intake_int.h"

#define TOMB ((char *)1)
#define SETTLE_MAX 4096 /* files waiting to settle, looked at again */

/* ---- the name set ---- */

/* Finds NAME's slot (or the empty slot where it would go). */
static size_t
set_slot(const struct queue_intake *qi, const char *name, bool *found)
{
	size_t i = intake_name_hash(name) & (qi->scap - 1), tomb = SIZE_MAX;

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
	qi->sused = qi->slive = 0;
	for (size_t i = 0; i < ocap; i++)
		if (old[i] != NULL && old[i] != TOMB)
			set_insert(qi, old[i]);
	free(old);
}

/* Adds NAME (not in the set) to the set; grows it, or clears it of
 * tombstones, when half full. */
static void
set_insert(struct queue_intake *qi, char *name)
{
	bool found;
	size_t i;

	if ((qi->sused + 1) * 2 > qi->scap)
		set_rehash(qi,
		    (qi->slive + 1) * 4 > qi->scap ? qi->scap * 2 : qi->scap);
	i = set_slot(qi, name, &found);
	if (qi->set[i] == NULL)
		qi->sused++;
	qi->slive++;
	qi->set[i] = name;
}

/* Drops NAME from the set (not freed); shrinks a set mostly empty. */
static void
set_remove(struct queue_intake *qi, const char *name)
{
	bool found;
	size_t i = set_slot(qi, name, &found);

	if (!found)
		return;
	qi->set[i] = TOMB;
	qi->slive--;
	if (qi->scap > 4096 && qi->slive * 8 < qi->scap)
		set_rehash(qi, qi->scap / 4);
}

static bool settle_has(const struct queue_intake *, const char *);
static void settle_del(struct queue_intake *, const char *);

/*
 * Where a name in the set is, in the byte after its how: pending (in
 * the FIFO), or flying: handed to a reader, then filed, then waiting for
 * its unlink, until its file is gone from incoming/ or was left there
 * for good (bad/, settle list, already queued).  NS_AGAIN: flying, and
 * inotify said a file under that name is complete (another file renamed
 * over it): pending again once the flight ends.
 */
enum name_state { NS_PENDING, NS_FLYING, NS_AGAIN };

static uint8_t *
pname_flag(char *s)
{
	return (uint8_t *)s + strlen(s) + 1;
}

static uint8_t *
pname_state(char *s)
{
	return pname_flag(s) + 1;
}

/* Appends name S to the FIFO. */
static void
fifo_push(struct queue_intake *qi, char *s)
{
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
	qi->fifo[qi->tail++] = s;
}

/* Adds NAME to the pending names (HOW it was found) unless it is in
 * flight already; returns false when the pending list is full (a rescan
 * will find NAME). */
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
		s = qi->set[i];
		if (how == PN_READY) {
			*pname_flag(s) = PN_READY;
			if (*pname_state(s) == NS_FLYING)
				*pname_state(s) = NS_AGAIN;
		}
		return true;
	}
	n = strlen(name);
	s = xmalloc(n + 3);
	memcpy(s, name, n + 1);
	s[n + 1] = (char)how;
	s[n + 2] = NS_PENDING;
	fifo_push(qi, s);
	set_insert(qi, s);
	return true;
}

/* Takes the oldest pending name, now flying, or NULL; the set keeps
 * owning it until intake_flight_end().  *HOW says how it was found. */
char *
intake_name_pop(struct queue_intake *qi, enum pn_how *how)
{
	char *s;

	if (qi->head == qi->tail)
		return NULL;
	s = qi->fifo[qi->head++];
	*pname_state(s) = NS_FLYING;
	if (qi->head == qi->tail)
		qi->head = qi->tail = 0;
	*how = (enum pn_how)pname_flag(s)[0];
	return s;
}

/*
 * Ends the flight of name S (from intake_name_pop()): it is freed, or, when
 * AGAIN or an event came for it meanwhile, pending again (as complete).
 * Main thread only.
 */
void
intake_flight_end(struct queue_intake *qi, char *s, bool again)
{
	if (again || *pname_state(s) == NS_AGAIN) {
		if (qi->nsettle > 0)
			settle_del(qi, s);
		*pname_flag(s) = PN_READY;
		*pname_state(s) = NS_PENDING;
		fifo_push(qi, s);
		return;
	}
	set_remove(qi, s);
	free(s);
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

	return settle_find(qi, name, intake_name_hash(name), &at);
}

/* Drops NAME from the settle list. */
static void
settle_del(struct queue_intake *qi, const char *name)
{
	size_t at;

	if (!settle_find(qi, name, intake_name_hash(name), &at))
		return;
	free(qi->settle[at].name);
	memmove(qi->settle + at, qi->settle + at + 1,
	    (qi->nsettle - at - 1) * sizeof(*qi->settle));
	qi->nsettle--;
}

/* Puts NAME (taken over) on the settle list, to be looked at again at
 * DUE; when the list is full a later rescan finds it instead. */
void
intake_settle_add(struct queue_intake *qi, char *name, int64_t due)
{
	uint64_t h = intake_name_hash(name);
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

/* ---- finding names ---- */

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
		log_err("pickup", "%s: %s", qi->incoming, strerror(errno));
		if (fd >= 0)
			close(fd);
		return;
	}
	intake_stuck_rotate(qi);
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
			log_info("pickup", "removed stale %s/%.200s", qi->tmp,
			    de->d_name);
	}
	closedir(d);
}

void
intake_watch_start(struct queue_intake *qi)
{
	struct timespec ts;

	/* files changed after this may be half-written without an event
	 * saying otherwise; ctimes come from the coarse clock */
	clock_gettime(CLOCK_REALTIME_COARSE, &ts);
	qi->watch_since = intake_ts_ns(ts);
	qi->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (qi->ifd >= 0 &&
	    inotify_add_watch(qi->ifd, qi->incoming,
		IN_MOVED_TO | IN_CLOSE_WRITE | IN_CREATE | IN_ONLYDIR) < 0) {
		log_warn("pickup", "inotify %s: %s (rescans only)",
		    qi->incoming, strerror(errno));
		close(qi->ifd);
		qi->ifd = -1;
	}
}

/* A listing waits until the pending names are half gone, so that a
 * backlog larger than PENDING_MAX is not listed on every call. */
void
intake_names_list(struct queue_intake *qi)
{
	drain_inotify(qi);
	if (qi->rescan && qi->tail - qi->head < PENDING_MAX / 2) {
		qi->rescan = false;
		list_dir(qi);
		sweep_tmp(qi);
	}
	if (qi->nsettle > 0)
		settle_due(qi, rq_now());
}

void
intake_names_free(struct queue_intake *qi)
{
	for (size_t i = 0; i < qi->scap; i++)
		if (qi->set[i] != NULL && qi->set[i] != TOMB)
			free(qi->set[i]);
	for (size_t i = 0; i < qi->nsettle; i++)
		free(qi->settle[i].name);
	free(qi->settle);
	free(qi->fifo);
	free(qi->set);
}
