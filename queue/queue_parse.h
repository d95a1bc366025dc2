/*
 * queue_parse.h - private to queue/ (and its tests and fuzzers, and
 * `relayq send`, which checks the header it writes as intake will): the
 * pure parsers for a dropped message: bare-CR repair, header section, hop
 * count, pickup envelope (X-Sender/X-Receiver with RFC 3461 parameters),
 * RFC 5322 address lists, and the builder of the message as it is stored
 * and sent (long header lines folded).
 *
 * Every function works on a buffer and a length, never reads past it,
 * and has no side effects besides its outputs.  Strings in results are
 * malloc'd and freed by qp_result_free().
 */
#ifndef RELAYQ_QUEUE_PARSE_H
#define RELAYQ_QUEUE_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mail.h"

/* The most recipients a message may have: what the queue's envelope
 * record holds (queue_rec.c, qrec_msg_decode()); max_recipients is at
 * most this. */
#define QP_RCPT_MAX 1000000
/* The longest header line sent, without its CRLF (RFC 5322 2.1.1);
 * longer ones are folded at white space, or refused. */
#define QP_LINE_MAX 998

/* An envelope recipient found by the parser. */
struct qp_rcpt {
	char *addr; /* owned by qp_result.addrs */
	char *orcpt; /* NULL when not given */
	unsigned notify; /* QNOTIFY_* bits, 0 when not given */
};

/* A span of the input (a whole header field) to leave out of the
 * stored message, or to store as REPL instead (a field whose addresses
 * intake rewrote; owned by the result). */
struct qp_span {
	size_t off, len;
	char *repl; /* NULL: left out */
	size_t rlen;
};

enum qp_status {
	QP_OK = 0,
	QP_BAD, /* the message cannot be queued; see why */
};

struct qp_result {
	const char *why; /* when QP_BAD: static text or whybuf */
	char whybuf[200];
	size_t max_rcpt; /* in: most distinct recipients; 0: QP_RCPT_MAX */
	char *sender; /* NULL when neither X-Sender nor Sender/From gave one */
	char *envid; /* NULL when not given */
	int ret; /* QRET_* */
	int cls; /* enum cfg_class */
	struct qp_rcpt *rcpts; /* distinct (see qp_message_parse()) */
	size_t nrcpt, rcap;
	struct mail_addr_set addrs; /* rcpts[i].addr is addrs.v[i] */
	size_t hdr_end; /* offset where the header section ends (at its
			   empty line, or the first non-header line) */
	bool have_blank; /* an empty line separates header and body */
	bool have_date, have_msgid;
	unsigned nreceived; /* Received: fields in the header section */
	struct qp_span *drop; /* header fields to leave out or replace,
				 in order */
	size_t ndrop, dcap;
};

struct mail_local;

/* How a message is read, and what intake changes in it. */
struct qp_ctx {
	const char *qualify; /* the domain of unqualified addresses (origin);
				NULL: they are errors */
	size_t max_rcpt; /* most distinct recipients; 0: QP_RCPT_MAX */
	/*
	 * Local mail (intake; NULL: none of this): recipients that are
	 * local are expanded by the alias table (ORCPT=rfc822;ORIGINAL
	 * added where one changed and none was given); the envelope sender
	 * and the addresses of From:, Sender:, Reply-To: and Return-Path:
	 * are rewritten by the sender map; unqualified addresses in those
	 * and in To: and Cc: get "@" qualify, in the text itself (each
	 * field otherwise byte for byte).
	 */
	const struct mail_local *ml;
};

/*
 * Makes every bare CR (one not followed by LF) of BUF an LF, in place, so
 * that a CR is a line end everywhere: in the parse, in what is stored and
 * in what a receiver reads.  Returns how many were changed.
 */
size_t qp_bare_cr_fix(char *buf, size_t len);

/*
 * Parses message BUF of LEN bytes (LF or CRLF line endings; run
 * qp_bare_cr_fix() first).  Unqualified addresses get "@" QUALIFY (when
 * QUALIFY is NULL they are errors).  Recipients are collapsed as SMTP
 * compares them (local part exactly, domain in any case; the first
 * ORCPT given, the union of the NOTIFY conditions asked for); more than
 * MAX_RCPT distinct ones (0: QP_RCPT_MAX) is an error.  A leading mbox
 * "From " line (first, or after the envelope headers) is left out; a
 * header section without an empty line after it is fine; a header line
 * over QP_LINE_MAX bytes that cannot be folded at white space is an
 * error.  R->cls is the priority class the Priority: header names
 * (urgent, normal, non-urgent; else normal).  Returns QP_OK and fills R, or QP_BAD with R->why set; in both
 * cases the caller calls qp_result_free(R).
 */
enum qp_status qp_message_parse(const char *buf, size_t len,
    const char *qualify, size_t max_rcpt, struct qp_result *r);
/* The same, with what CTX says (intake's rewriting: see struct qp_ctx). */
enum qp_status qp_message_parse_ctx(
    const char *buf, size_t len, const struct qp_ctx *ctx, struct qp_result *r);
void qp_result_free(struct qp_result *r);

/* The envelope sender SENDER (qualified) as CTX's sender map rewrites
 * it: a malloc'd string (a copy when nothing matches). */
char *qp_sender_rewrite(const struct qp_ctx *ctx, const char *sender);

/*
 * Parses an RFC 5322 address list (display names, groups, comments,
 * quoted local parts, obsolete routes; folding already allowed: the
 * shared parser of cfg/mail_addr.c in intake's syntax) and adds each
 * addr-spec to R's recipients (duplicates collapsed, at most
 * R->max_rcpt).  Returns false with *why set (static text or R->whybuf)
 * on a syntax error, an address with a control character, one too long
 * or too many recipients.
 */
bool qp_addrlist_parse(const char *s, size_t len, const char *qualify,
    struct qp_result *r, const char **why);

/*
 * Builds the stored message: RECEIVED (a complete header field, CRLF)
 * first, then the input's header fields minus R's drops (and with its
 * replacements), then DATE and
 * MSGID lines when R says they are missing (each NULL to skip), the empty
 * line and the body; all line endings CRLF, and a final CRLF added when
 * missing; header lines over QP_LINE_MAX bytes folded (CRLF inserted
 * before white space, which unfolding takes out again).  Returns a
 * malloc'd buffer of *outlen bytes.
 */
char *qp_message_build(const char *buf, size_t len, const struct qp_result *r,
    const char *received, const char *date, const char *msgid, size_t *outlen);

#endif
