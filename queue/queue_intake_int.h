/*
 * queue_intake_int.h - private to the intake files of queue/: the state
 * of one intake (struct queue_intake) and the functions its files call
 * in each other.
 *
 * A name found in incoming/ goes through the files in this order:
 *   queue_intake_names.c   inotify and listings find it; it is pending,
 *                          then in flight until its file is gone
 *   queue_intake_read.c    a reader thread checks, reads, parses and
 *                          compresses the file into a ring slot
 *   queue_dkim.c           (from the reader) DKIM-signs the message as
 *                          built, just before it is compressed
 *   queue_intake.c         the main thread files the ring in order into
 *                          one write txn, commits, hands the names on
 *   queue_intake_unlink.c  unlinker threads unlink the committed files,
 *                          fsync incoming/; their identities go after
 *   queue_intake_bad.c     any of them may move an entry to bad/ with a
 *                          reason, or log once that it cannot
 * Threads: the main thread owns everything but what the ring (rmu), the
 * unlink jobs (mu), bad/ (badmu) and the logged-once set (stuckmu)
 * share with the reader and unlinker threads.
 */
#ifndef RELAYQ_QUEUE_INTAKE_INT_H
#define RELAYQ_QUEUE_INTAKE_INT_H

#include <pthread.h>
#include <sys/stat.h>
#include <time.h>

#include "queue_int.h"
#include "queue_parse.h"

#define RING 2048 /* files handed to the readers ahead of the txn */
#define MAXREADERS 8
/* Record buffers kept for the readers to reuse (a buffer allocated by a
 * reader and freed by the main thread costs both a trip through the
 * other's malloc arena); larger ones are freed. */
#define RECPOOL 64
#define RECPOOL_MAXCAP (64u << 10)
/* unlink(2) is latency-bound (on ext4 without a journal, mounted
 * discard, it waits for the block's discard): it scales with threads up
 * to about 8, where the disk sets the rate (design.md, "A seventh
 * round") */
#define UNLINKERS 8
/*
 * The most committed files whose removal may trail the commits (their
 * names stay in flight, about 130 bytes each): on a disk that removes
 * files more slowly than intake reads and commits them, a burst is
 * queued at intake's rate and its files removed behind it; past this
 * many, intake waits for the unlinkers (QI_WAIT), so it goes at the
 * disk's removal rate (design.md, "An eighth round").
 */
#define UNLINK_TRAIL 65536

/*
 * The most names kept pending: beyond it a name is left for a later
 * listing, so the daemon's memory does not grow with a backlog of
 * millions of files in incoming/.
 */
#define PENDING_MAX 65536

/*
 * A file that only a listing after the first found (no IN_MOVED_TO or
 * IN_CLOSE_WRITE for it) is taken once it has not changed for
 * SETTLE_SECS seconds, so that a program writing straight into
 * incoming/ is not read half-way; one whose last change was a rename
 * (ctime after mtime) is taken at once.  Longer than the pauses of a
 * slow writer, short enough not to hold mail up for long.
 */
#define SETTLE_SECS 5

/*
 * How a name came to be pending, kept in one byte after its NUL:
 * PN_READY when inotify said the file is complete (renamed in, or
 * closed after writing); PN_FIRST when the start-up listing found it
 * (complete unless it changed since intake began to watch); PN_LISTED
 * when a later listing found it (it must look settled).
 */
enum pn_how { PN_LISTED = 0, PN_READY = 1, PN_FIRST = 2 };

/* IMP_RETRY: changed while read, look again later; IMP_WAIT: only a
 * listing found it and it may still be written: look again at its due
 * time; IMP_LEFTOVER: queued before a crash or a stop and not removed:
 * removed by the unlinkers after this commit, as a file just queued. */
enum import_result {
	IMP_QUEUED,
	IMP_SKIP,
	IMP_RETRY,
	IMP_WAIT,
	IMP_NOROOM,
	IMP_LEFTOVER,
};

/* A spool file on its way in, prepared by a reader thread (or by the
 * main thread when no reader took it yet). */
struct prep {
	char *name; /* flying: owned by the name set */
	uint64_t id; /* its queue id, from a committed reservation of its
		      * class (taken after the parse; 0 before) */
	int64_t now; /* arrival */
	int64_t maxsize; /* max_message_size when it was handed out */
	int64_t maxrcpt, hoplimit; /* max_recipients, hopcount_limit then */
	/* the local-mail rules then (origin, aliases, sender map): a
	 * reference, so a reload may free their cfg while a reader uses
	 * them (released by intake_prep_clear()) */
	struct cfg_local *local;
	/* the DKIM keys then: a reference, so a reload may free their cfg
	 * while a reader signs (released by intake_prep_clear()) */
	struct cfg_dkim *dkim;
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
	int by; /* the reader that prepared it (its parse result and owner
		 * are freed there, not in the main thread); -1: the main
		 * thread */
};

/* What the main thread is done with, for the reader that allocated it
 * to free (struct queue_intake's gc, under rmu). */
struct prep_gc {
	struct prep_gc_item {
		struct qp_result pr;
		char *owner;
	} * v;
	size_t n, cap;
};

/* A file to look at again at DUE (unix seconds). */
struct settle {
	uint64_t h; /* intake_name_hash(name): the list is sorted by it */
	int64_t due;
	char *name;
};

/* A set of non-zero 64-bit fingerprints (open addressing). */
struct fpset {
	uint64_t *v;
	size_t cap, n;
};

struct unlink_job;

struct queue_intake {
	struct queue *q; /* its cfg (q->cfg) follows reloads */
	char *incoming, *bad, *tmp;
	int din, dbad; /* directory fds */
	char hostname[256];
	/* queue_intake_stats_get(): messages committed (main thread), files
	 * moved to bad/ by reason (any thread: atomic) */
	uint64_t nqueued, nbad[QUEUE_NBAD];
	/* the commit loop (queue_intake.c) */
	bool paused; /* for want of map room, or by a queue error */
	bool nospace; /* paused for want of disk space (min_free_space) */
	size_t batch_limit; /* shrinks on map full, grows back */
	/* queue ids, a range per class (enum cfg_class): [id_next, id_end)
	 * usable; [id_spare, id_spare_end) a committed range for after it;
	 * [id_res, id_res_end) reserved in the open txn, usable once it
	 * commits (main thread only).  A reader takes its file's id once
	 * the parse has told the class (intake_id_take()), so that a
	 * class's messages sit together in the queue's trees.  noid: files
	 * handed to the readers and not yet prepared; the ring is fed only
	 * while every class has an id for each of them.  id_next, id_end,
	 * id_spare, id_spare_end and noid are under rmu. */
	uint64_t id_next[CFG_NCLASS], id_end[CFG_NCLASS];
	uint64_t id_spare[CFG_NCLASS], id_spare_end[CFG_NCLASS];
	uint64_t id_res[CFG_NCLASS], id_res_end[CFG_NCLASS];
	size_t noid;
	/* names (queue_intake_names.c) */
	int ifd; /* inotify */
	bool rescan;
	bool listed_once; /* the start-up listing is done */
	int64_t watch_since; /* when inotify began (coarse clock, ns) */
	int64_t tmp_swept; /* when tmp/ was last swept of stale files */
	/* names in flight: pending in a FIFO, then in the ring, in a txn
	 * or waiting for their unlink; a hash set of all of them keeps a
	 * name from being taken twice (it owns the names) */
	char **fifo;
	size_t head, tail, fcap;
	char **set;
	size_t scap, sused; /* sused counts tombstones too */
	size_t slive; /* names in the set */
	struct settle *settle; /* looked at again later: by name hash */
	size_t nsettle;
	/* the readers (queue_intake_read.c): a ring of files, [rhead,
	 * rnext) handed out or done, [rnext, rtail) waiting for a reader;
	 * the main thread files them from rhead in order */
	pthread_t rth[MAXREADERS];
	int nreaders;
	int rnum; /* readers numbered so far (rmu) */
	/* per reader: parse results the main thread filed, freed by the
	 * reader (a free into another thread's arena takes its lock while
	 * that thread allocates: in the main thread, a wait per file) */
	struct prep_gc gc[MAXREADERS];
	bool rstop;
	bool rwaiting; /* the main thread waits for a file (under rmu) */
	pthread_mutex_t rmu;
	pthread_cond_t rwork, rdone;
	struct prep ring[RING];
	size_t rhead, rnext, rtail;
	size_t rbytes; /* memory held by prepared files not yet filed */
	struct qbuf recpool[RECPOOL]; /* record buffers to reuse (rmu) */
	size_t nrecpool;
	bool noatime_no; /* O_NOATIME was refused once: stop asking */
	/* the unlinkers (queue_intake_unlink.c): unlink committed files and
	 * fsync incoming/ while the next batch is read; hand back the
	 * identities and the jobs */
	pthread_t th[UNLINKERS];
	int nth;
	bool th_on, th_stop;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct unlink_job *jobs, **jobs_tail;
	size_t njobs;
	size_t trail; /* names handed to the unlinkers, not yet collected
		       * (main thread only) */
	int wakefd; /* eventfd: a job finished while want_wake (mu) */
	bool want_wake;
	struct unlink_job *finished; /* done: their flights end (under mu) */
	struct qbuf done; /* identities unlinked and synced (under mu) */
	bool sync_failing; /* an fsync of incoming/ failed: logged (mu) */
	/* identities whose files are unlinked: deleted in the next txn */
	struct qbuf idents; /* u16 len | key, repeated */
	/* bad/ (queue_intake_bad.c) */
	pthread_mutex_t badmu; /* bad_rename() without RENAME_NOREPLACE */
	uint64_t badseq; /* the next name tried in bad/ (atomic) */
	/* entries that cannot be taken or moved, logged once: the ones met
	 * since the last listing and in the listing before (fingerprints) */
	pthread_mutex_t stuckmu;
	struct fpset stuck_cur, stuck_prev;
	bool stuck_full; /* "too many" was logged */
};

/* A time in nanoseconds. */
static inline int64_t
intake_ts_ns(struct timespec ts)
{
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* FNV-1a of a name: the name set, the settle list, the logged-once set. */
static inline uint64_t
intake_name_hash(const char *s)
{
	uint64_t h = 1469598103934665603ull;

	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

/* ---- queue_intake_names.c: finding names, names in flight ---- */

/* Starts watching incoming/ with inotify (rescans only when it cannot). */
void intake_watch_start(struct queue_intake *);
/* Drains inotify, lists incoming/ when a rescan is due (and sweeps
 * tmp/), and makes the names due on the settle list pending again. */
void intake_names_list(struct queue_intake *);
/* Takes the oldest pending name, now flying (owned by the name set until
 * intake_flight_end()), or NULL; *HOW says how it was found. */
char *intake_name_pop(struct queue_intake *, enum pn_how *how);
/* Ends the flight of a name: freed, or pending again when AGAIN or when
 * inotify reported a file under it meanwhile.  Main thread only. */
void intake_flight_end(struct queue_intake *, char *name, bool again);
/* Puts NAME (taken over) on the settle list, to be looked at at DUE. */
void intake_settle_add(struct queue_intake *, char *name, int64_t due);
/* Frees the names (pending, flying, settling): at close only. */
void intake_names_free(struct queue_intake *);

/* ---- queue_intake_read.c: the readers and the ring ---- */

/* Wakes the readers to free what the main thread handed back to them
 * (intake going idle: nothing else would). */
void intake_readers_tidy(struct queue_intake *);
/* Starts one reader thread per CPU (at most MAXREADERS). */
void intake_readers_start(struct queue_intake *);
/* Stops the readers and empties the ring (the files stay). */
void intake_readers_stop(struct queue_intake *);
/* Hands pending names to the readers while the ring and the ids last. */
void intake_ring_feed(struct queue_intake *);
/* Whether the ring holds a file. */
bool intake_ring_head(struct queue_intake *);
/* The oldest file in the ring, prepared (here, if no reader took it). */
struct prep *intake_ring_take(struct queue_intake *);
/* Drops the oldest file of the ring (taken by intake_ring_take()),
 * freeing what it holds (not its name). */
void intake_ring_pop(struct queue_intake *);
/* Frees what P holds (not its name) and empties it. */
void intake_prep_clear(struct prep *);

/* ---- queue_dkim.c: DKIM signing at intake ---- */

/*
 * Signs the message *MSG (*LEN bytes, malloc'd, as stored: CRLF, header
 * section first) with DK's keys for its From: domain (DK NULL: none):
 * *MSG is then a new buffer with the DKIM-Signature fields prepended (the
 * old one freed) and *LEN its size.  Unchanged when there is no key
 * (logged once per domain) or signing fails (logged).  IDSTR names the
 * message in log lines.  Any thread.
 */
void intake_dkim_sign(
    const struct cfg_dkim *dk, const char *idstr, char **msg, size_t *len);
/* How intake_dkim_sign() reads MSG: returns its number of header
 * fields, the From: domain (lowercase, "" when none) into DOM, the
 * body's offset into *BODY.  Pure (the fuzzer's entry point). */
size_t intake_dkim_from(
    const char *msg, size_t len, char *dom, size_t domlen, size_t *body);

/* ---- queue_intake.c: the commit loop ---- */

/* Whether every class has a queue id left for one more file handed to
 * the readers (under rmu). */
bool intake_id_room(const struct queue_intake *);
/* The next queue id of class CLS from its committed ranges (under rmu);
 * false when none is left, which intake_id_room() keeps from happening
 * to a file it let in. */
bool intake_id_take(struct queue_intake *, enum cfg_class cls, uint64_t *id);

/* ---- queue_intake_unlink.c: unlinks after the commit, identities ---- */

/* Starts the unlinker threads (without them, unlinks are done inline). */
void intake_unlinkers_start(struct queue_intake *);
/* Lets the unlinkers finish, stops them, deletes what identities it
 * can. */
void intake_unlinkers_stop(struct queue_intake *);
/*
 * Hands the committed files NAMES[0..N) (flying), queued as IDS, with
 * their identity KEYS (u16 length | key each) to the unlinkers, which
 * take over the arrays; waits while they are a few batches behind.
 */
void intake_unlink_push(struct queue_intake *, char **names, uint64_t *ids,
    size_t n, struct qbuf keys);
/* Takes over the identities whose unlinks are durable, and ends the
 * flights of the names unlinked. */
void intake_unlink_collect(struct queue_intake *);
/*
 * Asks the unlinkers to make the wake fd readable when they finish the
 * next job; false (nothing asked) when one finished since the last
 * collect, so the caller goes on at once.
 */
bool intake_unlink_wake_arm(struct queue_intake *);
/* Empties the wake fd. */
void intake_unlink_wake_clear(struct queue_intake *);
/* Builds the identity key of a spool file (dev, ino, size, mtime, name);
 * returns its length (at most 432). */
size_t intake_ident_key(uint8_t *k, const struct stat *st, const char *name);
/* Deletes, in T, the identities of files unlinked after the last commit. */
void intake_idents_delete(struct queue_intake *, struct queue_txn *t);
/* The same in a txn of its own (when idle or closing). */
void intake_idents_flush(struct queue_intake *);
/* At start: deletes the identities whose file is gone. */
void intake_idents_prune(struct queue_intake *);

/* ---- queue_intake_bad.c: bad/ and entries logged once ---- */

enum bad_result { BAD_MOVED, BAD_GONE, BAD_STUCK };
/*
 * Moves entry NAME (its lstat ST, or NULL) to bad/ untouched, under a
 * name the daemon picks (16 hex digits), with NAME.reason saying
 * WHY; BAD_GONE when it went meanwhile, BAD_STUCK (logged once) when it
 * cannot be moved.  Any thread.
 */
enum bad_result intake_bad_move(struct queue_intake *, const char *name,
    const struct stat *, const char *why);
/* At start: removes empty NAME.reason files with no NAME (a stop
 * between the two steps of a move). */
void intake_bad_sweep(struct queue_intake *);
/* Logs a warning about entry NAME (lstat ST, or NULL) unless it was
 * logged while the entry was there before (any thread). */
void intake_stuck_report(struct queue_intake *, const char *name,
    const struct stat *st, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* A new listing begins: entries not met since the one before are
 * forgotten. */
void intake_stuck_rotate(struct queue_intake *);
/* Frees the logged-once sets. */
void intake_stuck_free(struct queue_intake *);

#endif
