/*
 * queue.h - the on-disk LMDB queue: messages, recipients, the delivery
 * schedule, the expiry index, exactly-once spool intake, and paged
 * inspection for the command-line tools.
 *
 * queue/ is the only code that includes <lmdb.h>; callers never see an
 * MDB_val.  The schema and its invariants are in doc/design.md ("Queue
 * schema").
 *
 * Ownership, in general: a struct queue_msg returned through an out
 * pointer belongs to the caller, who frees it with queue_msg_free(); a
 * message body returned by queue_body_load() is malloc'd and freed by the
 * caller with free(); a struct queue_msg passed to a scan callback belongs
 * to the scan and is valid only during the call.  Handles (queue,
 * queue_intake, queue_txn) are freed by their close/commit/abort call.
 *
 * Threads: a struct queue is used by one thread.  Processes: any number
 * (the daemon plus mailq, hold, ...) may open the same queue_dir at once.
 *
 * Spool file format (what `relayq send` writes; see interface.md): an
 * RFC 5322 message, optionally starting with the pickup-directory
 * envelope headers, which are removed on intake:
 *     X-Sender: <addr> [RET=FULL|HDRS] [ENVID=xtext]
 *     X-Receiver: <addr> [NOTIFY=NEVER|SUCCESS,FAILURE,DELAY] [ORCPT=type;xtext]
 * (X-Receiver repeats, one per recipient; `<>` is the null sender; the
 * parameters are those of RFC 3461 MAIL FROM / RCPT TO, xtext-encoded.)
 * Without X-Receiver the recipients come from To:/Cc:/Bcc: and without
 * X-Sender the sender from Sender:/From:, as `sendmail -t`.
 */
#ifndef RELAYQ_QUEUE_H
#define RELAYQ_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cfg.h"

enum queue_result {
	QUEUE_OK = 0,
	QUEUE_NOTFOUND, /* no such message or recipient (maybe just removed) */
	QUEUE_MAPFULL, /* the LMDB map is full; nothing was changed */
	QUEUE_CORRUPT, /* a record failed validation; it was set aside */
	QUEUE_ERR, /* any other error; logged */
};

enum queue_rcpt_state {
	RCPT_PENDING = 0, /* never tried */
	RCPT_DEFERRED, /* tried, temporary failure, will retry */
	RCPT_DELIVERED, /* done: accepted by the next hop */
	RCPT_BOUNCED, /* done: failed permanently or expired */
};
#define QUEUE_NSTATE 4

/* queue_msg.flags */
#define QMSG_HELD 0x01u /* on hold: not scheduled, does not expire */
#define QMSG_WARNED 0x02u /* the delay warning has been sent */
#define QMSG_RETURNED 0x04u /* the bounce (return) has been sent */
#define QMSG_TAKEN 0x08u /* taken for delivery at least once */
#define QMSG_ADMIN_RETURN \
	0x10u /* relayq bounce: what is in flight returns with 5.0.0 */
/* a TLS-RPT report: delivered despite TLS failures (RFC 8460 3): by MX,
 * with tls = may at most, no DANE, no MTA-STS */
#define QMSG_TLS_RELAXED 0x20u

/* queue_msg.ret (RFC 3461 RET=) */
#define QRET_NONE 0
#define QRET_FULL 1
#define QRET_HDRS 2

/* queue_rcpt.notify (RFC 3461 NOTIFY=); 0 means not given. */
#define QNOTIFY_NEVER 0x01u
#define QNOTIFY_SUCCESS 0x02u
#define QNOTIFY_FAILURE 0x04u
#define QNOTIFY_DELAY 0x08u

/* queue_rcpt.flags */
#define QRCPT_LEASED 0x01u /* taken by queue_due_take(): deliver this one */
#define QRCPT_NOTIFIED \
	0x02u /* a DSN has reported this recipient's final state */
#define QRCPT_RELAYED_DSN 0x04u /* the next hop took NOTIFY: no own notice */
#define QRCPT_WARNED 0x08u /* a delay warning has listed this recipient */

/* One recipient.  Strings are owned by the enclosing queue_msg. */
struct queue_rcpt {
	uint32_t idx; /* 0..nrcpt-1, stable for the message's life */
	char *addr; /* the envelope recipient, no angle brackets */
	char *orcpt; /* RFC 3461 ORCPT ("rfc822;a@b"), or NULL */
	unsigned notify; /* QNOTIFY_* bits, 0 = not given */
	unsigned flags; /* QRCPT_* */
	enum queue_rcpt_state state;
	uint32_t attempts;
	int64_t next_attempt; /* unix seconds; 0 when delivered/bounced */
	int64_t last_attempt; /* unix seconds; 0 = never tried */
	char *reply; /* last SMTP reply or error text, or NULL */
	char dsn_status[16]; /* last enhanced status "4.4.1", or "" */
};

/* One message's envelope (the body is loaded apart). */
struct queue_msg {
	uint64_t id;
	char idstr[17]; /* 16 uppercase hex digits */
	enum cfg_class cls;
	int64_t arrival; /* unix seconds */
	uint64_t size; /* bytes of the stored message (CRLF, as sent) */
	uint32_t uid; /* owner of the spool file (or of the inserter) */
	char *sender; /* "" for the null sender <> */
	char *envid; /* RFC 3461 ENVID, or NULL */
	int ret; /* QRET_* */
	unsigned flags; /* QMSG_* */
	int64_t due; /* schedule entry's time; 0 if not scheduled */
	int64_t warn_at; /* when the delay warning is due; 0 = never */
	int64_t return_at; /* when the message is returned; 0 = never */
	size_t nrcpt;
	struct queue_rcpt *rcpts;
};

struct queue;
struct queue_txn;
struct queue_intake;

/*
 * Opens (creating when !readonly) the queue in cfg's queue_dir, mode
 * 0700, with the map size of queue_map_size.  Returns NULL with err set
 * on failure.  The cfg must outlive the queue (see queue_cfg_set()).
 * readonly: for mailq/summary/show; no write transaction is allowed.
 */
struct queue *
queue_open(const struct cfg *, bool readonly, char *err, size_t errlen);
void queue_close(struct queue *);
/* Replaces the cfg (after a reload); the new one must outlive the queue. */
void queue_cfg_set(struct queue *, const struct cfg *);

/* ---- queue ids: 64-bit, shown as 16 uppercase hex digits ---- */

/* Writes ID as 16 uppercase hex digits plus NUL into buf[17]. */
void queue_id_format(uint64_t id, char buf[17]);
/* Parses 1-16 hex digits (any case); returns false on anything else. */
bool queue_id_parse(const char *s, uint64_t *id);

/* ---- intake, used by the daemon ---- */

enum queue_intake_result {
	QI_IDLE, /* nothing left to do until inotify or a rescan */
	QI_MORE, /* more files waiting: call again soon (next loop turn) */
	/* map full, min_free_space, or files still settling: files stay
	 * in incoming/; call again in a second */
	QI_PAUSED,
	/* waiting for the unlinkers (committed files not yet removed, or
	 * too many of them): call again when queue_intake_wake_fd() is
	 * readable */
	QI_WAIT,
};

/*
 * Creates the spool tree (incoming/ 1733, tmp/ 1733, bad/ 0700) when
 * missing, sets up inotify on incoming/ and schedules a full rescan for
 * the first run (which also finishes what a crash interrupted).  Returns
 * NULL with a log line on failure.  Freed by queue_intake_close().
 */
struct queue_intake *queue_intake_open(struct queue *, const struct cfg *);
/* The inotify fd the event loop watches for readability, or -1. */
int queue_intake_fd(const struct queue_intake *);
/* An fd readable when intake, having returned QI_WAIT, can go on (the
 * unlinkers finished a batch), or -1; queue_intake_run() empties it. */
int queue_intake_wake_fd(const struct queue_intake *);
/*
 * Drains inotify events and imports up to max_files files, many per
 * commit (intake_batch).  Returns quickly: QI_MORE means call again soon.
 */
enum queue_intake_result
queue_intake_run(struct queue_intake *, size_t max_files);
/* Makes the next run list the whole of incoming/ (the rescan timer). */
void queue_intake_rescan(struct queue_intake *);
/* Signs MSG (*LENP bytes, CRLF, malloc'd), a message relayq makes
 * itself (a TLS report), as intake signs mail (dkim_key_file, the table):
 * *MSGP may be replaced.  IDSTR names it in the log. */
void queue_dkim_sign(
    const struct cfg *cfg, const char *idstr, char **msgp, size_t *lenp);
/* Whether incoming/ and bad/ are still the directories intake opened
 * (not removed, or renamed and made anew); if not, WHY names the one. */
bool queue_intake_dirs_same(const struct queue_intake *, const char **why);
void queue_intake_close(struct queue_intake *);

/* ---- control notifications ---- */

/*
 * Tells a running daemon that the queue changed (hold, release, flush,
 * delete): call after the commit.  Works across processes and users
 * allowed to use the queue (it touches queue_dir/wakeup).
 */
void queue_wakeup_send(struct queue *);
/* An fd that becomes readable after queue_wakeup_send(); -1 if unavailable. */
int queue_wakeup_fd(struct queue *);
/* Clears the readable state of queue_wakeup_fd(). */
void queue_wakeup_drain(struct queue *);
/*
 * Flush notes (Postfix's `postqueue -f` forgets the host status of what
 * it flushes): `relayq flush` notes, in the transaction of the flush,
 * that message ID was flushed (ID 0: every message); the daemon takes
 * the notes on its wakeup (read and removed in one transaction): *ALL
 * when everything was flushed (or more than MAX messages were), else
 * the IDs into IDS[0..*N).  No note: *ALL false and *N 0.
 */
enum queue_result queue_flush_note(struct queue_txn *, uint64_t id);
enum queue_result queue_flush_take(
    struct queue *, bool *all, uint64_t *ids, size_t max, size_t *n);

/* ---- delivery scheduling, used by the runner ---- */

/* Earliest due time of any scheduled message, INT64_MAX if none. */
int64_t queue_due_next(struct queue *);
/* The same for one class. */
int64_t queue_due_next_class(struct queue *, enum cfg_class);

/*
 * Takes up to max messages of class CLS due at NOW, oldest due first, and
 * in one write transaction leases them: each due recipient (pending or
 * deferred with next_attempt <= now) gets QRCPT_LEASED and next_attempt
 * lease_until, and the message is rescheduled at lease_until.  A crash
 * thus leads to a retry, never to a loss.  Writes the ids to ids[];
 * returns how many.  The runner then loads each message and delivers its
 * QRCPT_LEASED recipients; queue_rcpt_update() clears the lease.
 */
size_t queue_due_take(struct queue *, enum cfg_class, int64_t now,
    int64_t lease_until, uint64_t *ids, size_t max);

/* A message queue_due_take_rcpts() leased recipients of: every one it
 * leased has its index in [lo, hi). */
struct queue_take {
	uint64_t id;
	uint32_t lo, hi;
};
/*
 * As queue_due_take(), but leases at most *budget recipients in all
 * (and takes *budget down by what it leased), so that the transaction
 * stays short however many recipients a message has: a message whose
 * due recipients did not all fit keeps the rest due now, and the next
 * call (the next loop turn) leases more of them.  Its cost is a cursor
 * step per recipient of each message looked at plus the work on the
 * recipients leased.  Writes the messages to out[]; returns how many.
 */
size_t queue_due_take_rcpts(struct queue *, enum cfg_class, int64_t now,
    int64_t lease_until, struct queue_take *out, size_t max, size_t *budget);
/*
 * As queue_due_take_rcpts(), inside the caller's write txn (so that a
 * take shares one commit, one fsync, with other writes, e.g. delivery
 * results); the leases hold once that txn commits, and nothing is
 * leased if it does not.  Returns 0 once the txn has an error.
 */
size_t queue_txn_take_rcpts(struct queue_txn *, enum cfg_class, int64_t now,
    int64_t lease_until, struct queue_take *out, size_t max, size_t *budget);
/* At start-up: every leased recipient becomes due now. */
void queue_leases_recover(struct queue *);

/* ---- reading single messages ---- */

/* Loads a message's envelope and recipients; *out freed by the caller. */
enum queue_result
queue_msg_load(struct queue *, uint64_t id, struct queue_msg **out);
/* Frees a message and its strings; NULL is fine. */
void queue_msg_free(struct queue_msg *);
/*
 * Loads message ID's envelope and those of its recipients with an index
 * in [lo, hi) that are leased (QRCPT_LEASED), in index order: (*out)->
 * nrcpt is how many were loaded (rcpts[i].idx their indexes), *total
 * the message's recipient count.  Costs O(hi - lo), not O(recipients).
 * *out freed by the caller with queue_msg_free().
 */
enum queue_result queue_msg_load_leased(struct queue *, uint64_t id,
    uint32_t lo, uint32_t hi, struct queue_msg **out, size_t *total);

/* How many delivery attempts are kept per recipient (the newest). */
#define QUEUE_HIST_MAX 20

/* One delivery attempt of a recipient, as queue_rcpt_update() recorded
 * it.  Owned by the array queue_attempts_load() returns. */
struct queue_attempt {
	uint32_t attempt; /* 1, 2, ...: the recipient's attempts count then */
	int64_t time; /* unix seconds */
	enum queue_rcpt_state state; /* the state it left the recipient in */
	char dsn_status[16]; /* enhanced status "4.4.1", or "" */
	char *reply; /* SMTP reply or error text (CR/LF stripped), or NULL */
};

/*
 * Loads the kept attempts (at most QUEUE_HIST_MAX, the newest) of
 * recipient IDX of message ID, oldest first, in one short read txn, into
 * a malloc'd *out of *n entries (NULL and 0 when there are none, as for a
 * message that does not exist); freed with queue_attempts_free().  An
 * invalid record is skipped with a log line.  QUEUE_ERR if the queue
 * cannot be read.
 */
enum queue_result queue_attempts_load(struct queue *, uint64_t id, uint32_t idx,
    struct queue_attempt **out, size_t *n);
/* Frees what queue_attempts_load() returned; NULL is fine. */
void queue_attempts_free(struct queue_attempt *, size_t n);
/*
 * Loads the message exactly as it is to be sent (CRLF line endings,
 * intake header edits applied) into a malloc'd *buf of *len bytes (plus
 * a NUL not counted), freed by the caller.
 */
enum queue_result
queue_body_load(struct queue *, uint64_t id, char **buf, size_t *len);

/* ---- write transactions: many changes, one commit (one fsync) ---- */

/*
 * Begins the one write transaction of this process (LMDB serialises
 * writers across processes).  Never keep one across an event-loop turn.
 * Returns NULL on error (logged).  Ends with commit or abort, which free
 * it.  The first error inside sticks: later calls return it, and commit
 * then aborts and returns it.
 */
struct queue_txn *queue_txn_begin(struct queue *);
/*
 * Records an attempt's result for recipient IDX: state, next attempt
 * (ignored unless RCPT_DEFERRED/PENDING), reply and dsn_status (either
 * may be NULL).  Increments attempts, clears QRCPT_LEASED, and adds the
 * attempt to the recipient's history (the QUEUE_HIST_MAX newest are
 * kept; see queue_attempts_load()).  Returns
 * QUEUE_NOTFOUND if the message was deleted meanwhile: not an error.
 * Call queue_msg_reschedule() after the last update of a message.
 */
enum queue_result queue_rcpt_update(struct queue_txn *, uint64_t id,
    uint32_t idx, enum queue_rcpt_state, int64_t next_attempt,
    const char *reply, const char *dsn_status);
/*
 * Sets and clears QRCPT_* flags of recipient IDX (other than
 * QRCPT_LEASED, which only the schedule changes); the flags are kept
 * across queue_rcpt_update().  QUEUE_NOTFOUND if there is no such
 * message or recipient.
 */
enum queue_result queue_rcpt_flags_set(struct queue_txn *, uint64_t id,
    uint32_t idx, unsigned set, unsigned clear);
/*
 * Recomputes the message's schedule entry from its recipients (earliest
 * next_attempt of those pending or deferred); removes the message (and
 * logs `removed`) when every recipient is delivered or bounced.
 */
enum queue_result queue_msg_reschedule(struct queue_txn *, uint64_t id);
/*
 * Inserts a message built in memory (e.g. a DSN: class CFG_DSN, sender
 * ""): env supplies cls, sender, envid, ret, flags, uid, arrival (0 =
 * now) and the recipients' addr/orcpt/notify; body is the complete
 * message with CRLF line endings, stored as is.  Schedules it now and
 * indexes its expiry by cfg.  The id goes to *id_out (may be NULL).
 * Logs the `from=<...>` line after the commit.
 */
enum queue_result
queue_msg_insert(struct queue_txn *, const struct queue_msg *env,
    const char *body, size_t len, uint64_t *id_out);
/* Sets and clears QMSG_* flags (held is better done by queue_msg_hold). */
enum queue_result queue_msg_flags_set(
    struct queue_txn *, uint64_t id, unsigned set, unsigned clear);
/* Removes a message with everything it has (logs `removed` on commit). */
enum queue_result queue_msg_remove(struct queue_txn *, uint64_t id);
/* Reads a message inside the write txn; *out freed by the caller. */
enum queue_result
queue_txn_load(struct queue_txn *, uint64_t id, struct queue_msg **out);
/*
 * Decides from a recipient's scalar fields (state, notify, flags,
 * attempts, next_attempt, last_attempt, idx; its strings are NULL) and
 * the envelope ENV (without recipients) whether queue_txn_load_some()
 * loads it.
 */
typedef bool (*queue_rcpt_pick)(
    const struct queue_msg *env, const struct queue_rcpt *head, void *arg);
/*
 * As queue_txn_load(), but with only the recipients PICK picks:
 * (*out)->nrcpt is how many (rcpts[i].idx their indexes).  The others
 * cost a cursor step each, no decoding, no allocation.
 */
enum queue_result queue_txn_load_some(struct queue_txn *, uint64_t id,
    queue_rcpt_pick pick, void *arg, struct queue_msg **out);
/*
 * The same for recipients IDX[0..N) of message ID only (those PICK picks;
 * PICK may be NULL): O(N), whatever the message's size.  A listed
 * recipient that does not exist is left out.
 */
enum queue_result
queue_txn_load_rcpts(struct queue_txn *, uint64_t id, const uint32_t *idx,
    size_t n, queue_rcpt_pick pick, void *arg, struct queue_msg **out);
/* Reads the body inside the write txn; as queue_body_load(). */
enum queue_result
queue_txn_body_load(struct queue_txn *, uint64_t id, char **buf, size_t *len);
/* Commits (one fsync) and frees the txn; returns the sticky error. */
enum queue_result queue_txn_commit(struct queue_txn *);
/* Aborts and frees the txn. */
void queue_txn_abort(struct queue_txn *);

/* ---- hold / release / flush (used by the commands) ---- */

/* Puts a message on hold: off the schedule and the expiry index.
 * *CHANGED (if not NULL) says whether it was not held before. */
enum queue_result
queue_msg_hold(struct queue_txn *, uint64_t id, bool *changed);
/* Releases a held message: rescheduled and its expiry entries restored.
 * *CHANGED (if not NULL) says whether it was held. */
enum queue_result
queue_msg_release(struct queue_txn *, uint64_t id, bool *changed);
/* Makes the message's deferred and pending recipients due at NOW. */
enum queue_result queue_msg_flush(struct queue_txn *, uint64_t id, int64_t now);

/* ---- expiry index (used by expiry/) ---- */

enum queue_expiry_kind { QEXP_WARN = 1, QEXP_RETURN = 2 };

struct queue_expiry_ev {
	uint64_t id;
	enum queue_expiry_kind kind;
	int64_t when;
};

/* Earliest warn/return time of any message, INT64_MAX if none. */
int64_t queue_expiry_next(struct queue *);
/* Up to max events due at NOW, earliest first, into evs[]; returns n. */
size_t queue_expiry_due_list(
    struct queue *, int64_t now, struct queue_expiry_ev *evs, size_t max);
/*
 * Removes the message's entry of that kind (after the DSN was inserted
 * in the same txn).  QUEUE_NOTFOUND if none.
 */
enum queue_result queue_expiry_clear(struct queue_txn *, uint64_t id, int kind);

/* ---- inspection: paged with short read transactions ---- */

/*
 * Scan callback: MSG (with recipients) is valid only during the call.
 * Return false to stop the scan.
 */
typedef bool (*queue_msgs_scan_cb)(const struct queue_msg *msg, void *arg);
/*
 * Calls CB for each message with id >= from_id in id (= arrival) order.
 * Reads in pages of a few hundred messages, one short read txn each, so
 * a scan never holds the database.  A record that fails validation is
 * skipped with a log line.  Returns the number of messages passed to CB.
 */
size_t queue_msgs_scan(
    struct queue *, uint64_t from_id, queue_msgs_scan_cb cb, void *arg);

/* Totals, kept up to date inside every write transaction. */
struct queue_counts {
	uint64_t msgs[CFG_NCLASS]; /* messages per class */
	uint64_t bytes[CFG_NCLASS]; /* their sizes */
	uint64_t rcpts[CFG_NCLASS][QUEUE_NSTATE]; /* recipients per state */
	uint64_t held; /* messages on hold */
};
enum queue_result queue_counts_get(struct queue *, struct queue_counts *);

/*
 * Calls CB for each (destination domain, arrival minute) with the number
 * of recipients not yet done (pending or deferred) of messages that
 * arrived in that minute (unix seconds / 60); for qshape-like summaries.
 * Paged like queue_msgs_scan().  DOMAIN is valid during the call.
 */
typedef void (*queue_domain_cb)(
    const char *domain, int64_t minute, uint64_t nrcpt, void *arg);
enum queue_result
queue_domain_counts_get(struct queue *, queue_domain_cb, void *);

/* The names of rcpt states ("pending", ...) and of the QRET_* values. */
const char *queue_state_name(enum queue_rcpt_state);

/* ---- showing a message (queue_show.c): mailq and /api/queue ---- */

/* Which messages a listing shows. */
struct queue_filter {
	int cls; /* a class, or -1: any */
	int state; /* a recipient state, -1: any, QUEUE_NSTATE: held */
	const char *domain; /* a recipient in it or below it; NULL: any */
	int64_t older; /* arrival at or before it; 0: any */
};
/* Whether M passes F: its class, its age, held, and a recipient in
 * F's state and domain at once. */
bool queue_msg_matches(const struct queue_filter *f, const struct queue_msg *m);
/* The queue Postfix would list M in (postqueue -j's queue_name): "hold"
 * when held, "active" while a recipient is leased, "deferred" once an
 * attempt was made, else "incoming". */
const char *queue_msg_queue_name(const struct queue_msg *m);
/* Writes M through PUT as one JSON object (no newline): relayq's
 * names, and postqueue -j's (queue_name, forced_expire, delay_reason)
 * beside them. */
void queue_msg_json(const struct queue_msg *m, rq_put_fn *put, void *arg);

/* ---- statistics: the daemon's metrics, `summary --json` ---- */

/*
 * The state a message is counted in: held; else pending until the
 * runner first takes it, deferred from then on (those in flight are
 * among the deferred: only the daemon knows which).
 */
enum queue_msg_state { QMS_PENDING, QMS_DEFERRED, QMS_HELD };
#define QUEUE_NMSTATE 3

struct queue_stats {
	/* false until the daemon has counted the states of a queue written
	 * before they were kept (queue_stats_rebuild): every message is
	 * then counted as pending */
	bool exact;
	uint64_t msgs[CFG_NCLASS][QUEUE_NMSTATE];
	uint64_t map_used, map_size; /* bytes in use (less free pages), map */
};
/* Messages per class and state and the map's use, in one read txn. */
enum queue_result queue_stats_get(struct queue *, struct queue_stats *);
/* Counts the states of every message once, when the queue was written
 * by a relayq that did not keep them (the daemon, at start-up). */
void queue_stats_rebuild(struct queue *);

/*
 * The oldest message of each class that is not on hold, found by a walk
 * of the envelopes in id order that resumes at the caller's cursor
 * (from[], zeroed at first) and takes at most MAX_STEPS records a call,
 * in one read txn; ST (from queue_stats_get) says which classes have
 * any.  found[c] false: not reached yet (call again); arrival[c] 0:
 * none.  The cursors restart when the number held changes.
 */
struct queue_oldest {
	uint64_t from[CFG_NCLASS];
	uint64_t held;
	bool found[CFG_NCLASS];
	int64_t arrival[CFG_NCLASS];
	/* that message's warning and return times (0: never) and whether
	 * its warning was sent */
	int64_t warn_at[CFG_NCLASS], return_at[CFG_NCLASS];
	bool warned[CFG_NCLASS];
};
enum queue_result queue_oldest_get(struct queue *, const struct queue_stats *,
    struct queue_oldest *, size_t max_steps);

/* Why intake moved a file to bad/, as counted (names for metrics). */
enum queue_bad_reason {
	QBAD_NOT_REGULAR, /* not a regular file, hard links, unopenable */
	QBAD_EMPTY,
	QBAD_TOO_LARGE,
	QBAD_NO_RECIPIENTS,
	QBAD_TOO_MANY_RECIPIENTS,
	QBAD_CHANGED, /* written to after it was queued */
	QBAD_MALFORMED, /* anything else the parser refused */
};
#define QUEUE_NBAD 7
/* The reason WHY (a bad/ reason text) is counted under. */
enum queue_bad_reason queue_bad_reason(const char *why);
/* "not_regular_file", "empty", ...: a label value. */
const char *queue_bad_reason_name(enum queue_bad_reason);

/*
 * Event tallies: counters kept in the queue, each added to in the write
 * transaction that carries its events, so they hold what was committed
 * and outlive the process (the daemon's metrics counters).  Slots
 * [0, QUEUE_TALLY_MAX): QTALLY_INTAKE (messages taken in, by intake),
 * QTALLY_DSN + an expiry event (notices queued, by expiry/), from
 * QTALLY_RUNNER on the runner's delivery results (runner_http.c), and
 * from QTALLY_FINAL on the final results given outside the runner, per
 * class: bounced by intake (a mail loop, QTALLY_LOOP + class) and
 * returned by expiry (status=expired, QTALLY_EXPIRED + class).
 */
#define QUEUE_TALLY_MAX 128
enum queue_tally_slot {
	QTALLY_INTAKE = 0,
	QTALLY_DSN = 1, /* 1..4 */
	QTALLY_RUNNER = 8,
	QTALLY_FINAL = 112,
	QTALLY_LOOP = QTALLY_FINAL, /* + class */
	QTALLY_EXPIRED = QTALLY_FINAL + CFG_NCLASS, /* + class */
};
_Static_assert(QTALLY_EXPIRED + CFG_NCLASS <= QUEUE_TALLY_MAX,
    "the final-result tallies fit");
/* Adds N to tally SLOT in T (applied at its commit). */
void queue_tally_add(struct queue_txn *, unsigned slot, uint64_t n);
/* Every tally, in one read txn, into OUT (absent: 0). */
enum queue_result
queue_tallies_get(struct queue *, uint64_t out[QUEUE_TALLY_MAX]);

/* What intake did since the queue_intake was opened. */
struct queue_intake_stats {
	uint64_t queued; /* messages committed */
	uint64_t rejected[QUEUE_NBAD]; /* files moved to bad/ */
};
void queue_intake_stats_get(
    const struct queue_intake *, struct queue_intake_stats *);
/* ---- policy records (queue_policy.c): the runner's small persistent
 * state beside the mail (MTA-STS policies, TLS-RPT counts), opaque
 * bytes under a text key; the caller versions and validates them ---- */

/* Reads record KEY into *VAL (malloc'd, *LEN bytes); QUEUE_NOTFOUND if
 * there is none. */
enum queue_result
queue_policy_get(struct queue *, const char *key, char **val, size_t *len);

/* Writes record KEY (VAL, LEN bytes), or removes it when VAL is NULL. */
enum queue_result queue_policy_put(
    struct queue_txn *, const char *key, const void *val, size_t len);

/* Calls CB(KEY, VAL, LEN, ARG) for each record whose key starts with
 * PREFIX, in key order, until CB returns false; returns how many it was
 * called for.  CB must not touch the queue. */
typedef bool (*queue_policy_cb)(
    const char *key, const void *val, size_t len, void *arg);
size_t queue_policy_scan(
    struct queue *, const char *prefix, queue_policy_cb cb, void *arg);

#endif
