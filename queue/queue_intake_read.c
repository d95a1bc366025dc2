/*
 * queue_intake_read.c - reading and preparing spool files off the write
 * txn: reader threads take the names handed out in a ring, check each
 * file before trusting it, read, parse and build the message as stored
 * (with its queue id), DKIM-sign it (queue_dkim.c) and compress it; the
 * main thread takes the ring in order.
 *
 * Public (to the intake files, queue_intake_int.h): intake_readers_start(),
 * intake_readers_stop(), intake_readers_tidy(), intake_ring_feed(),
 * intake_ring_head(), intake_ring_take(), intake_ring_pop(),
 * intake_prep_clear().
 *
 * Invariants: a file is read only if lstat says it is a regular file with
 * one link, not empty, not over max_message_size, and settled when only
 * a listing found it (see file_settled()); it is opened with O_NOFOLLOW
 * and O_NONBLOCK (a FIFO planted meanwhile cannot block a reader), and
 * fstat must match lstat before and after the read: a file that changed
 * is looked at again later, never queued half-written.  [rhead, rnext)
 * of the ring is handed out or done, [rnext, rtail) waits for a reader;
 * readers stop while RING_BYTES of prepared files wait to be filed.  The
 * main thread gives each dropped slot's record buffer back to a pool
 * (RECPOOL, under rmu) that the readers compress into next, and a
 * slot's parse result back to the reader that made it (gc): memory is
 * freed by the thread that allocated it, so no free in the main thread
 * waits on a reader's malloc arena.
 */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "queue_intake_int.h"

#define RING_BYTES (32u << 20) /* readers pause when this much is ready */

/* ---- one file ---- */

/* The sender when the message names none: the file owner's login at
 * origin, by the sender map (CTX). */
static char *
owner_sender(uid_t uid, const struct qp_ctx *ctx)
{
	struct passwd pw, *res = NULL;
	char buf[2048], out[600];

	if (getpwuid_r(uid, &pw, buf, sizeof(buf), &res) == 0 && res != NULL)
		snprintf(out, sizeof(out), "%.200s@%.255s", pw.pw_name,
		    ctx->qualify);
	else
		snprintf(out, sizeof(out), "uid%u@%.255s", (unsigned)uid,
		    ctx->qualify);
	return qp_sender_rewrite(ctx, out);
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
	int64_t c = intake_ts_ns(st->st_ctim), m = intake_ts_ns(st->st_mtim), n;
	const int64_t settle = (int64_t)SETTLE_SECS * 1000000000;

	clock_gettime(CLOCK_REALTIME, &now);
	n = intake_ts_ns(now);
	if ((renamed_ok && c > m && st->st_size > 0) || n - c >= settle ||
	    c - n > settle /* the clock went back */)
		return true;
	*due = (c + settle) / 1000000000 + 1;
	return false;
}

/*
 * Whether spool file NAME is open for writing now: a read lease cannot be
 * had then (F_SETLEASE, EAGAIN).  Taken and given back at once; the
 * daemon ignores SIGIO, the signal a lease break would send.  False when
 * the kernel does not say (a file of another user's, without CAP_LEASE:
 * the settle time alone decides).
 */
static bool
file_writing(struct queue_intake *qi, const char *name)
{
	int fd = spool_open(qi, name);
	bool busy;

	if (fd < 0)
		return false; /* the read that follows says why */
	busy = fcntl(fd, F_SETLEASE, F_RDLCK) != 0 && errno == EAGAIN;
	if (!busy)
		(void)fcntl(fd, F_SETLEASE, F_UNLCK);
	close(fd);
	return busy;
}

/* Whether the file read (FD) is still as lstat saw it (ST) before. */
static bool
file_same(int fd, const struct stat *st)
{
	struct stat fst;

	return fstat(fd, &fst) == 0 && S_ISREG(fst.st_mode) &&
	    fst.st_dev == st->st_dev && fst.st_ino == st->st_ino &&
	    fst.st_size == st->st_size &&
	    intake_ts_ns(fst.st_mtim) == intake_ts_ns(st->st_mtim) &&
	    intake_ts_ns(fst.st_ctim) == intake_ts_ns(st->st_ctim);
}

static __thread int reader_no = -1; /* this reader's number; main: -1 */
static __thread char *buf; /* the file being read, per thread */
static __thread size_t bufcap;

/* The arrival second the strings below were made for, per thread. */
static __thread int64_t tsec = -1;
static __thread char trfc[64], tstamp[32];

/* Formats arrival time NOW (unix seconds) for the Date: field (trfc) and
 * the Message-ID (tstamp), once per second and thread: the files of a
 * backlog share their arrival second. */
static void
time_strings(int64_t now)
{
	time_t t = (time_t)now;
	struct tm tm;

	if (now == tsec)
		return;
	localtime_r(&t, &tm);
	strftime(trfc, sizeof(trfc), "%a, %d %b %Y %H:%M:%S %z", &tm);
	strftime(tstamp, sizeof(tstamp), "%Y%m%d%H%M%S", &tm);
	tsec = now;
}

/* The strings of V (NULL-terminated) joined into OUT of CAP bytes, cut
 * to fit and NUL-terminated, as snprintf("%s%s...") would: these run
 * for every file, without a format parse. */
static void
strs_cat(char *out, size_t cap, const char *const *v)
{
	size_t n = 0;

	out[0] = '\0';
	for (; *v != NULL && n + 1 < cap; v++)
		n = rq_str_put(out, cap, n, *v);
}

/* UID in decimal, in OUT (16 bytes). */
static const char *
uid_str(uid_t uid, char out[16])
{
	char *p = out + 15;
	unsigned long v = (unsigned long)uid;

	*p = '\0';
	do {
		*--p = (char)('0' + v % 10);
		v /= 10;
	} while (v > 0 && p > out);
	return p;
}

/*
 * Prepares spool file P->name (any thread): checks it, reads it, parses
 * it, builds the message as stored with P's id and arrival time, and
 * compresses it into P->rec.  Bad files go to bad/ here.
 */
static void
prep_run(struct queue_intake *qi, struct prep *p)
{
	struct stat *st = &p->st;
	size_t got = 0, blen;
	char why[200], received[600], date[100], msgid[400];
	char idstr[17], *body, ename[QUEUE_ESC_MAX], uid[16];
	struct qp_ctx ctx;
	int fd, err;
	bool ok;

	p->r = IMP_SKIP;
	p->by = reader_no;
	if (fstatat(qi->din, p->name, st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno != ENOENT)
			intake_stuck_report(qi, p->name, NULL, "%s: %s",
			    queue_name_escape(ename, p->name), strerror(errno));
		return;
	}
	if (!S_ISREG(st->st_mode)) {
		intake_bad_move(qi, p->name, st,
		    S_ISDIR(st->st_mode)       ? "not a regular file: directory"
			: S_ISLNK(st->st_mode) ? "not a regular file: symlink"
			: S_ISFIFO(st->st_mode) ? "not a regular file: fifo"
			: S_ISSOCK(st->st_mode) ? "not a regular file: socket"
						: "not a regular file: device");
		return;
	}
	if ((p->how == PN_LISTED ||
		(p->how == PN_FIRST &&
		    intake_ts_ns(st->st_ctim) >= qi->watch_since)) &&
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
		intake_bad_move(qi, p->name, st, why);
		return;
	}
	/* found by a listing (no close or rename seen), or empty: not
	 * while a writer still has it open, however long it pauses */
	if ((p->how == PN_LISTED || st->st_size == 0) &&
	    file_writing(qi, p->name)) {
		p->r = IMP_WAIT;
		p->due = rq_now() + SETTLE_SECS;
		return;
	}
	if (st->st_size == 0) {
		intake_bad_move(qi, p->name, st, "empty file");
		return;
	}
	if (st->st_size > p->maxsize) {
		snprintf(why, sizeof(why),
		    "message too large: %lld bytes, max_message_size is %lld",
		    (long long)st->st_size, (long long)p->maxsize);
		intake_bad_move(qi, p->name, st, why);
		return;
	}
	p->iklen = intake_ident_key(p->ik, st, p->name);
	fd = spool_open(qi, p->name);
	if (fd < 0) {
		err = errno;
		if (err == ENOENT)
			return;
		if (err == ELOOP) {
			intake_bad_move(
			    qi, p->name, st, "not a regular file: symlink");
		} else if (err == EACCES || err == EPERM) {
			snprintf(
			    why, sizeof(why), "cannot open: %s", strerror(err));
			intake_bad_move(qi, p->name, st, why);
		} else {
			/* EMFILE, a lease (EWOULDBLOCK), ...: the daemon's
			 * trouble, not the file's: again later */
			intake_stuck_report(qi, p->name, st, "%s: %s",
			    queue_name_escape(ename, p->name), strerror(err));
			p->r = IMP_RETRY;
			p->due = rq_now() + SETTLE_SECS;
		}
		return;
	}
	/* before any read: a name swapped between the lstat and the open
	 * (say a hard link to a device its owner can open) is never read
	 * from; the fstat after the read alone would only catch it after */
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
		intake_stuck_report(qi, p->name, st, "%s: read: %s",
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
	/* origin qualifies; local recipients are aliased, the sender and
	 * its header fields mapped (struct qp_ctx) */
	ctx.ml = cfg_local_rules(p->local);
	ctx.qualify = ctx.ml->origin;
	ctx.max_rcpt = (size_t)p->maxrcpt;
	if (qp_message_parse_ctx(buf, got, &ctx, &p->pr) != QP_OK) {
		intake_bad_move(qi, p->name, st, p->pr.why);
		qp_result_free(&p->pr);
		memset(&p->pr, 0, sizeof(p->pr));
		return;
	}
	/* the id from the class's range: a class's messages sit together
	 * in the trees, so a class delivered ahead of the others frees
	 * whole pages (intake_id_room() kept one for this file) */
	pthread_mutex_lock(&qi->rmu);
	ok = intake_id_take(qi, (enum cfg_class)p->pr.cls, &p->id);
	pthread_mutex_unlock(&qi->rmu);
	if (!ok) {
		qp_result_free(&p->pr);
		memset(&p->pr, 0, sizeof(p->pr));
		p->r = IMP_RETRY;
		p->due = rq_now() + 1;
		return;
	}
	if (p->pr.sender == NULL)
		p->owner = owner_sender(st->st_uid, &ctx);
	queue_id_format(p->id, idstr);
	time_strings(p->now);
	/* "Received: by %s (relayq, from userid %u)\r\n\tid %s; %s\r\n",
	 * "Date: %s\r\n", "Message-ID: <%s.%s@%s>\r\n" */
	{
		const char *rv[] = { "Received: by ", qi->hostname,
			" (relayq, from userid ", uid_str(st->st_uid, uid),
			")\r\n\tid ", idstr, "; ", trfc, "\r\n", NULL };
		const char *dv[] = { "Date: ", trfc, "\r\n", NULL };
		const char *mv[] = { "Message-ID: <", tstamp, ".", idstr, "@",
			qi->hostname, ">\r\n", NULL };

		strs_cat(received, sizeof(received), rv);
		strs_cat(date, sizeof(date), dv);
		strs_cat(msgid, sizeof(msgid), mv);
	}
	body = qp_message_build(buf, got, &p->pr, received, date, msgid, &blen);
	/* the last change to the bytes: signed as they are stored and sent */
	intake_dkim_sign(p->dkim, idstr, &body, &blen);
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

/* Frees what P holds (not its name) and empties it. */
void
intake_prep_clear(struct prep *p)
{
	qp_result_free(&p->pr);
	free(p->owner);
	free(p->rec.p);
	cfg_local_release(p->local);
	cfg_dkim_release(p->dkim);
	memset(p, 0, sizeof(*p));
}

/* ---- the readers ---- */

/* Prepares the oldest file no one took yet; called and returns with rmu
 * held (released while the file is worked on). */
static void
ring_run_next(struct queue_intake *qi)
{
	struct prep *p = &qi->ring[qi->rnext++ % RING];

	p->state = PREP_BUSY;
	if (p->rec.p == NULL && qi->nrecpool > 0)
		p->rec = qi->recpool[--qi->nrecpool];
	pthread_mutex_unlock(&qi->rmu);
	prep_run(qi, p);
	pthread_mutex_lock(&qi->rmu);
	qi->noid--;
	p->state = PREP_DONE;
	qi->rbytes += p->held = p->rec.cap;
}

/* Frees the N parse results and owner strings at V. */
static void
gc_items_free(struct prep_gc_item *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		qp_result_free(&v[i].pr);
		free(v[i].owner);
	}
}

/* Frees what the main thread handed back to this reader (called and
 * returns with rmu held): the list is swapped for MINE, emptied, and
 * given back next time, so only the main thread grows either. */
static void
gc_run(struct queue_intake *qi, struct prep_gc *mine)
{
	struct prep_gc t = qi->gc[reader_no];

	qi->gc[reader_no] = *mine;
	*mine = t;
	pthread_mutex_unlock(&qi->rmu);
	gc_items_free(mine->v, mine->n);
	mine->n = 0;
	pthread_mutex_lock(&qi->rmu);
}

/* A reader thread: prepares the oldest file no one took yet, and frees
 * what the main thread is done with of the files it prepared. */
static void *
reader(void *arg)
{
	struct queue_intake *qi = arg;
	struct prep_gc mine = { NULL, 0, 0 };

	pthread_mutex_lock(&qi->rmu);
	reader_no = qi->rnum++;
	for (;;) {
		if (qi->rstop)
			break;
		if (qi->gc[reader_no].n > 0) {
			gc_run(qi, &mine);
			continue;
		}
		if (qi->rnext == qi->rtail || qi->rbytes > RING_BYTES) {
			pthread_cond_wait(&qi->rwork, &qi->rmu);
			continue;
		}
		ring_run_next(qi);
		if (qi->rwaiting)
			pthread_cond_signal(&qi->rdone);
	}
	pthread_mutex_unlock(&qi->rmu);
	free(mine.v);
	free(buf);
	buf = NULL;
	bufcap = 0;
	qrec_thread_done();
	return NULL;
}

/* Hands pending names to the readers while the ring and the ids last. */
void
intake_ring_feed(struct queue_intake *qi)
{
	const struct cfg_scope *g = cfg_scope(qi->q->cfg, NULL);
	int64_t maxsize = cfg_int(g, CFG_MAX_MESSAGE_SIZE);
	int64_t now = rq_now();
	size_t added = 0;

	pthread_mutex_lock(&qi->rmu);
	while (qi->rtail - qi->rhead < RING) {
		struct prep *p = &qi->ring[qi->rtail % RING];
		char *name;
		enum pn_how how;

		if (qi->head == qi->tail || !intake_id_room(qi))
			break;
		name = intake_name_pop(qi, &how);
		memset(p, 0, sizeof(*p));
		p->name = name;
		p->how = (uint8_t)how;
		qi->noid++;
		p->now = now;
		p->maxsize = maxsize;
		p->maxrcpt = cfg_int(g, CFG_MAX_RECIPIENTS);
		p->hoplimit = cfg_int(g, CFG_HOPCOUNT_LIMIT);
		p->local = cfg_local_hold(qi->q->cfg);
		p->dkim = cfg_dkim_hold(qi->q->cfg);
		p->state = PREP_NEW;
		qi->rtail++;
		added++;
	}
	if (added > 0)
		pthread_cond_broadcast(&qi->rwork);
	pthread_mutex_unlock(&qi->rmu);
}

/* The oldest file in the ring, prepared (here, if no reader took it). */
struct prep *
intake_ring_take(struct queue_intake *qi)
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

/* Drops the oldest file of the ring (taken by intake_ring_take()): what
 * it holds is freed, its record buffer kept for a reader to reuse. */
void
intake_ring_pop(struct queue_intake *qi)
{
	/* no reader touches the head slot: it is cleared outside rmu */
	struct prep *p = &qi->ring[qi->rhead % RING];
	struct qbuf rec = p->rec;
	struct prep_gc_item it = { p->pr, p->owner };
	int by = p->by;

	memset(&p->rec, 0, sizeof(p->rec));
	memset(&p->pr, 0, sizeof(p->pr));
	p->owner = NULL;
	intake_prep_clear(p);
	pthread_mutex_lock(&qi->rmu);
	if (by >= 0) {
		/* the reader frees what it allocated */
		struct prep_gc *g = &qi->gc[by];

		if (g->n == g->cap) {
			g->cap = g->cap ? 2 * g->cap : 64;
			g->v = xrealloc(g->v, g->cap * sizeof(*g->v));
		}
		g->v[g->n++] = it;
	}
	if (rec.p != NULL && rec.cap <= RECPOOL_MAXCAP &&
	    qi->nrecpool < RECPOOL) {
		qi->recpool[qi->nrecpool++] = rec;
		rec.p = NULL;
	}
	qi->rhead++;
	pthread_mutex_unlock(&qi->rmu);
	if (by < 0)
		gc_items_free(&it, 1);
	free(rec.p);
}

void
intake_readers_tidy(struct queue_intake *qi)
{
	pthread_mutex_lock(&qi->rmu);
	for (int i = 0; i < qi->rnum; i++)
		if (qi->gc[i].n > 0) {
			pthread_cond_broadcast(&qi->rwork);
			break;
		}
	pthread_mutex_unlock(&qi->rmu);
}

bool
intake_ring_head(struct queue_intake *qi)
{
	bool any;

	pthread_mutex_lock(&qi->rmu);
	any = qi->rhead != qi->rtail;
	pthread_mutex_unlock(&qi->rmu);
	return any;
}

void
intake_readers_start(struct queue_intake *qi)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	int want = ncpu < 1 ? 1 : ncpu > MAXREADERS ? MAXREADERS : (int)ncpu;

	for (qi->nreaders = 0; qi->nreaders < want; qi->nreaders++)
		if (pthread_create(&qi->rth[qi->nreaders], NULL, reader, qi) !=
		    0)
			break;
}

void
intake_readers_stop(struct queue_intake *qi)
{
	pthread_mutex_lock(&qi->rmu);
	qi->rstop = true;
	pthread_cond_broadcast(&qi->rwork);
	pthread_mutex_unlock(&qi->rmu);
	for (int i = 0; i < qi->nreaders; i++)
		pthread_join(qi->rth[i], NULL);
	for (int i = 0; i < MAXREADERS; i++) {
		struct prep_gc *g = &qi->gc[i];

		gc_items_free(g->v, g->n);
		free(g->v);
		memset(g, 0, sizeof(*g));
	}
	qi->rnum = 0;
	/* files prepared but not filed stay in incoming/ for next time */
	for (; qi->rhead != qi->rtail; qi->rhead++)
		intake_prep_clear(&qi->ring[qi->rhead % RING]);
	while (qi->nrecpool > 0)
		free(qi->recpool[--qi->nrecpool].p);
}
