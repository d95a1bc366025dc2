/*
 * queue_parse.h - private to queue/ (and its tests and fuzzer): the pure
 * parsers for a dropped message: header section, pickup envelope
 * (X-Sender/X-Receiver with RFC 3461 parameters), RFC 5322 address lists,
 * and the builder of the message as it is stored and sent.
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

/* An envelope recipient found by the parser. */
struct qp_rcpt {
	char *addr;
	char *orcpt; /* NULL when not given */
	unsigned notify; /* QNOTIFY_* bits, 0 when not given */
};

/* A span of the input to leave out of the stored message. */
struct qp_span {
	size_t off, len;
};

enum qp_status {
	QP_OK = 0,
	QP_BAD, /* the message cannot be queued; see why */
};

struct qp_result {
	const char *why; /* static text when QP_BAD */
	char *sender; /* NULL when neither X-Sender nor Sender/From gave one */
	char *envid; /* NULL when not given */
	int ret; /* QRET_* */
	int cls; /* enum cfg_class */
	struct qp_rcpt *rcpts;
	size_t nrcpt, rcap;
	size_t hdr_end; /* offset where the header section ends (at its
			   empty line, or the first non-header line) */
	bool have_blank; /* an empty line separates header and body */
	bool have_date, have_msgid;
	struct qp_span *drop; /* header fields to leave out, in order */
	size_t ndrop, dcap;
};

/*
 * Parses message BUF of LEN bytes (LF or CRLF line endings).  Unqualified
 * addresses get "@" QUALIFY (when QUALIFY is NULL they are errors).
 * Returns QP_OK and fills R, or QP_BAD with R->why set; in both cases
 * the caller calls qp_result_free(R).
 */
enum qp_status qp_message_parse(
    const char *buf, size_t len, const char *qualify, struct qp_result *r);
void qp_result_free(struct qp_result *r);

/*
 * Parses an RFC 5322 address list (display names, groups, comments,
 * quoted local parts, obsolete routes; folding already allowed) and
 * appends each addr-spec to R's recipients.  Returns false with *why set
 * on a syntax error or an address with a control character.
 */
bool qp_addrlist_parse(const char *s, size_t len, const char *qualify,
    struct qp_result *r, const char **why);

/*
 * Builds the stored message: RECEIVED (a complete header field, CRLF)
 * first, then the input's header fields minus R's drops, then DATE and
 * MSGID lines when R says they are missing (each NULL to skip), the empty
 * line and the body; all line endings CRLF, and a final CRLF added when
 * missing.  Returns a malloc'd buffer of *outlen bytes.
 */
char *qp_message_build(const char *buf, size_t len, const struct qp_result *r,
    const char *received, const char *date, const char *msgid, size_t *outlen);

#endif
