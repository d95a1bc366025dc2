/*
 * cmd_send.h - private to `relayq send` (cmd_send.c), its SMTP dialogue
 * on standard input and output (`sendmail -bs`, cmd_send_bs.c) and its
 * alias modes (`-bv`, `-bi`, newaliases: cmd_newaliases.c): the command
 * line as parsed, and the one spool-writing path every submission goes
 * through (send_submit()).
 */
#ifndef RELAYQ_CMD_SEND_H
#define RELAYQ_CMD_SEND_H

#include <stdbool.h>
#include <stdio.h>

#include "tools.h"

/* What the command line asks for besides sending. */
enum send_mode {
	MODE_SEND = 0, /* -bm: read a message, the default */
	MODE_ALIASES, /* -bi, -I: check alias_file (newaliases) */
	MODE_VERIFY, /* -bv: print where each address would go */
	MODE_SMTP, /* -bs: SMTP on standard input and output */
	MODE_MAILQ, /* -bp: relayq mailq */
	MODE_FLUSH, /* -q, -qR..., -qI...: relayq flush */
	MODE_QINTERVAL, /* -q15m: not supported (ignored, as Postfix) */
};

/* The parsed command line (and, for -bs, one SMTP transaction). */
struct send_opts {
	const char *cfg_path;
	const char *sender; /* -f/-r, or NULL */
	const char *fullname; /* -F, or NULL */
	const char *notify; /* -N, or NULL */
	const char *ret; /* -R, or NULL */
	const char *envid; /* -V, or NULL */
	bool extract; /* -t */
	bool ignore_dots; /* -i / -oi */
	enum send_mode mode;
	int nrcpt; /* RCPT arguments at rcpts */
	char **rcpts;
	/* -bs: each RCPT TO's NOTIFY (NULL or "": -N's) and ORCPT
	 * (xtext "type;addr", NULL: none), by rcpts index; NULL: none */
	const char *const *rcpt_notify;
	const char *const *rcpt_orcpt;
};

/*
 * Submits one message read from IN to its end (with -i) or to a "."
 * line, with the envelope of O, into the spool: the path `relayq send`
 * takes (its checks, envelope headers, header edits, fsync and rename).
 * Returns a sysexits code: 0 once the message is in incoming/; on any
 * other, send_why() says why (and it is printed to standard error
 * unless send_quiet() was called).  Signals stay blocked from the
 * rename on (the exit status tells the truth); a caller that goes on
 * unblocks them once it has said the outcome.
 */
int send_submit(const struct cfg *, const struct send_opts *o, FILE *in);

/* Whether send takes ADDR (unqualified: with CFG's origin) as the
 * sender (one mailbox, or "" / "<>") or, SENDER false, as one
 * recipient. */
bool send_addr_ok(const struct cfg *, const char *addr, bool sender);

/* The reason of the last failure ("" after success). */
const char *send_why(void);

/* Whether the last failure was a message over max_message_size. */
bool send_too_large(void);

/* From now on failures are not printed: the caller says them (-bs puts
 * them in its replies). */
void send_quiet(void);

/* What SIGALRM (the -bs idle timeout) writes to standard output before
 * send ends (75): a 421 reply, as Postfix's smtpd says goodbye.  MSG
 * must live as long as the process. */
void send_alarm_farewell(const char *msg);

/* Runs -bs: an SMTP server on standard input and output that submits
 * each message with send_submit() (cmd_send_bs.c). */
int send_smtp_run(const struct cfg *, const struct send_opts *o);

/* Runs -bv: where each address of O would be delivered
 * (cmd_newaliases.c). */
int send_verify_run(struct cfg *, const struct send_opts *o);

/* Runs -bi / newaliases: checks alias_file (cmd_newaliases.c). */
int send_aliases_run(struct cfg *);

#endif
