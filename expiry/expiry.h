/*
 * expiry.h - delay warnings (queuewarn) and bounces (queuereturn, 5xx,
 * `relayq bounce`) and success notices, as RFC 3464 DSNs.
 *
 * Two layers:
 * - expiry_dsn_build(): a pure function that turns a description of the
 *   original message, an event and its recipients into the bytes of a
 *   multipart/report notice.  No queue, no clock, no randomness unless
 *   asked for: the golden tests and the fuzzer drive it directly.
 * - expiry_next(), expiry_run(), expiry_after_results(),
 *   expiry_bounce_now(): the queue side, called by the runner (and by
 *   `relayq bounce`).  Every notice is a new message of class dsn, sender
 *   <>, inserted in the same queue transaction that records the event on
 *   the original (WARNED flag, recipients bounced, message removed), so a
 *   crash yields neither a lost notice nor two.
 *
 * Rules: never a notice to the null sender; NOTIFY=NEVER none; NOTIFY
 * without DELAY (or Precedence: bulk/junk/list) no delay notice; a notice
 * that cannot be delivered (class dsn) is logged and dropped at its own
 * queuereturn, copied to postmaster when notify_postmaster = yes; held
 * messages do not expire while held.
 *
 * Ownership: expiry_dsn_build() returns a malloc'ed buffer the caller
 * frees; every input pointer is only read during the call.
 */
#ifndef RELAYQ_EXPIRY_H
#define RELAYQ_EXPIRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cfg.h"
#include "queue.h"

/* ---- the pure DSN builder ---- */

/* What the notice reports; sets its Subject and text. */
enum expiry_event {
	EXPIRY_EV_DELAYED, /* queuewarn: Action: delayed */
	EXPIRY_EV_FAILED, /* 5xx, queuereturn, relayq bounce: failed */
	EXPIRY_EV_DELIVERED, /* NOTIFY=SUCCESS at final delivery (relayq,
				which hands every message on, sends none) */
	EXPIRY_EV_RELAYED, /* NOTIFY=SUCCESS, handed to a hop without DSN */
};

/* The RFC 3464 Action of one recipient (the same names). */
enum expiry_action {
	EXPIRY_ACT_FAILED,
	EXPIRY_ACT_DELAYED,
	EXPIRY_ACT_DELIVERED,
	EXPIRY_ACT_RELAYED,
	EXPIRY_ACT_EXPANDED,
};

/* One recipient of a notice.  Strings may be NULL unless noted. */
struct expiry_dsn_rcpt {
	const char *addr; /* the final recipient (required), without <> */
	/* ORCPT as received: "rfc822;u@example.org", xtext-encoded or not
	 * (decoded here); NULL: none was given. */
	const char *orcpt;
	enum expiry_action action;
	const char *status; /* enhanced status "5.1.1" (required) */
	const char *remote_mta; /* the host that answered, or NULL */
	/* The last reply as the server said it ("550 5.1.1 unknown"),
	 * remote text: bounded and stripped of CR/LF here; NULL: none. */
	const char *diag;
	/* Why, as a log line says it ("host H[IP] said: ... (in reply to
	 * RCPT TO command)", "connect to H: Connection refused"): the
	 * human-readable part; NULL: diag is used. */
	const char *reason;
	int64_t last_attempt; /* unix seconds; 0: never attempted */
	int64_t retry_until; /* delays: when it will be returned; else 0 */
};

/* The original message and the notice's parameters. */
struct expiry_dsn {
	enum expiry_event event;
	const char *hostname; /* the reporting MTA (required) */
	const char *origin; /* MAILER-DAEMON's domain; NULL: hostname */
	const char *queue_id; /* the original's queue ID, as mailq shows it */
	const char *sender; /* the original's envelope sender (the To:) */
	int64_t arrival; /* the original's arrival time, unix seconds */
	const char *envid; /* ENVID (xtext or not); NULL: none */
	bool ret_full; /* RET=FULL: the whole message, else headers */
	const char *msg; /* the original (headers and body) */
	size_t msglen;
	size_t size_limit; /* bounce_size_limit: most bytes of msg included */
	/* The clock: Date:, Message-ID: and the text's "for N hours". */
	int64_t now;
	/* The MIME boundary; NULL: made from now, queue_id and random
	 * bytes. */
	const char *boundary;
	const struct expiry_dsn_rcpt *rcpts;
	size_t nrcpts; /* >= 1 */
};

/*
 * Builds the complete notice (RFC 5322, CRLF line ends) into a malloc'ed
 * buffer the caller frees; *lenp gets its length (it is also
 * NUL-terminated).  Never fails (aborts on out of memory).
 */
char *expiry_dsn_build(const struct expiry_dsn *, size_t *lenp);

/*
 * Returns the length of the header section of MSG (up to and including
 * the empty line that ends it; all of MSG when there is none).
 */
size_t expiry_msg_header_len(const char *msg, size_t len);

/*
 * Finds header NAME (case-insensitive, without the colon) in the header
 * section of MSG; copies its unfolded, trimmed value into BUF (at most
 * BUFLEN-1 bytes, control characters made spaces) and returns true, or
 * returns false when absent.
 */
bool expiry_msg_header_get(
    const char *msg, size_t len, const char *name, char *buf, size_t buflen);

/* True when MSG says Precedence: bulk, junk or list (no delay notice). */
bool expiry_msg_is_bulk(const char *msg, size_t len);

/* ---- the queue side, for the runner ---- */

/*
 * When the next warning or return is due (unix seconds), from the
 * queue's expiry index; INT64_MAX when nothing is.  The runner arms one
 * timer for it, and calls again after every expiry_run() and whenever a
 * message enters the queue.
 */
int64_t expiry_next(struct queue *);

/*
 * Handles the warnings and returns due at NOW: one notice per message
 * per event, listing all its recipients concerned, inserted in the same
 * transaction that records the event.  A recipient in flight (leased) at
 * its message's return is left to its result: expiry_after_results()
 * returns it if that is a deferral.  Does at most a few hundred events
 * and 2,000 recipients per call (expiry_next() is then still due: the
 * runner calls again on the next loop turn): a message with more
 * recipients to warn about or return is handled a slice at a time, a
 * notice per slice, its event due until the last.  After a queue error it logs and waits 30s (through
 * expiry_next()).  Notices are scheduled now: check queue_due_next()
 * afterwards.
 */
void expiry_run(struct queue *, const struct cfg *, int64_t now);

/*
 * Called by the runner inside its results transaction TXN for message
 * ID whose recipients just changed state: inserts one bounce for the
 * recipients that just failed permanently (Status from the reply) and
 * one success notice for NOTIFY=SUCCESS recipients just delivered, and
 * marks them reported (QRCPT_NOTIFIED) so that no later call reports
 * them again.  Deferred recipients are returned here too when the
 * message was already returned (they were in flight) or its class has
 * timeout.queuereturn = now (sendmail's "bounce at the first temporary
 * failure").
 * Call it after the message's queue_rcpt_update()s and BEFORE its
 * queue_msg_reschedule() (which removes a message whose recipients are
 * all done: the notice needs the original's record and body).
 * Returns QUEUE_OK or the queue's error (then the txn must be aborted).
 */
enum queue_result expiry_after_results(
    struct queue_txn *, const struct cfg *, uint64_t id, int64_t now);
/*
 * The same, looking only at recipients IDX[0..N) of message ID (those
 * whose results the transaction just recorded): O(N) however many
 * recipients the message has, where expiry_after_results() walks them
 * all (a cursor step each).  The runner calls this after each commit's
 * results, and expiry_after_results() once a message is out of memory.
 */
enum queue_result expiry_after_rcpts(struct queue_txn *, const struct cfg *,
    uint64_t id, const uint32_t *idx, size_t n, int64_t now);

/*
 * `relayq bounce ID`: returns every recipient of message ID not yet
 * delivered to its sender now (Action: failed), and removes the message,
 * in one transaction.  *INFLIGHT: recipients in delivery now, left to
 * their attempt: returned (5.0.0) when it ends in a deferral, and the
 * message leaves the queue then.  Returns QUEUE_OK, QUEUE_NOTFOUND or
 * an error.
 */
enum queue_result expiry_bounce_now(
    struct queue *, const struct cfg *, uint64_t id, size_t *inflight);

#endif
