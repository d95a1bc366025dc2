/*
 * faultsmtp.h - private header of faultsmtp, the scriptable fault-injecting
 * SMTP server the relayq tests talk to (see fault_main.c for the usage and
 * fault_script.c for the script language).
 *
 * Ownership: fault_script_parse() returns a script the caller frees with
 * fault_script_free(); sessions belong to the server and are freed by
 * fault_session_reap() or fault_server_shutdown().
 */
#ifndef FAULTSMTP_H
#define FAULTSMTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <openssl/ssl.h>

/* The commands (and pseudo-commands) a rule can be attached to. */
enum fault_cmd {
	FC_CONNECT = 0,
	FC_EHLO,
	FC_HELO,
	FC_MAIL,
	FC_RCPT,
	FC_DATA,
	FC_DOT,
	FC_RSET,
	FC_QUIT,
	FC_STARTTLS,
	FC_NOOP,
	FC_BLOCK,
	FC_OTHER, /* VRFY, HELP, unknown verbs: no rules */
	FC_NCMD
};

/* What the server does instead of (or around) its normal reply. */
enum fault_act {
	FA_NORMAL = 0, /* just the normal reply */
	FA_REPLY, /* reply CODE TEXT */
	FA_RAW, /* raw TEXT: bytes sent verbatim (escapes allowed) */
	FA_STALL, /* stall SECONDS, then the normal reply */
	FA_PARTIAL, /* partial TEXT stall SECONDS, then the rest */
	FA_DROP, /* close at once */
	FA_GARBAGE, /* a junk line instead of the reply */
	FA_ENDLESS, /* a reply line that never ends */
	FA_INJECT, /* STARTTLS: 220 plus TEXT in one write, then TLS */
	FA_TRICKLE, /* the normal reply, one byte every SECONDS */
	FA_BADTLS, /* STARTTLS: 220, then junk instead of a handshake */
	FA_TLSSTALL, /* STARTTLS: 220, then no handshake for SECONDS */
};

struct fault_action {
	enum fault_act kind;
	char *code; /* FA_REPLY: the reply code (any token) */
	char *text; /* FA_REPLY/RAW/PARTIAL/INJECT: unescaped text */
	size_t textlen;
	double secs; /* FA_STALL/PARTIAL/TRICKLE */
};

/* `on COMMAND [N] [conn K] ACTION` */
struct fault_rule {
	enum fault_cmd cmd;
	unsigned nth; /* 0: every time */
	unsigned conn; /* 0: every connection */
	unsigned line; /* script line, for ties and messages */
	struct fault_action act;
};

/* `rcpt ADDRESS reply CODE TEXT`: the normal answer for one recipient. */
struct fault_rcpt {
	char *addr;
	char *code;
	char *text;
};

struct fault_script {
	char *hostname; /* in EHLO/HELO replies */
	char *greet_code, *greet_text;
	char **ehlo; /* capability lines, without the code */
	size_t nehlo;
	bool ehlo_reject;
	struct fault_rule *rules;
	size_t nrules;
	struct fault_rcpt *rcpts;
	size_t nrcpts;
	uint64_t size_limit; /* from an offered `SIZE N`; 0 = none */
	double idle; /* `idle SECS`: 421 and close when idle; 0 = never */
};

enum fault_parse_result {
	FAULT_PARSE_OK = 0,
	FAULT_PARSE_ERR,
};

/*
 * Parses script text BUF of LEN bytes.  On success *out is a new script;
 * on error err holds "LINE: what is wrong" and *out is NULL.
 */
enum fault_parse_result fault_script_parse(const char *buf, size_t len,
    struct fault_script **out, char *err, size_t errlen);
void fault_script_free(struct fault_script *);

/* The first rule for CMD matching the Nth command on connection CONN. */
const struct fault_rule *fault_script_match(
    const struct fault_script *, enum fault_cmd, unsigned nth, unsigned conn);

/* The `rcpt` entry for ADDR (case-insensitive, without <>), or NULL. */
const struct fault_rcpt *
fault_script_rcpt(const struct fault_script *, const char *addr, size_t len);

/* True if the EHLO list offers KEYWORD (case-insensitive). */
bool fault_script_offers(const struct fault_script *, const char *keyword);

/* Whole-server state: one per process. */
struct fault_session;
struct fault_server {
	struct event_base *base;
	struct fault_script *script;
	SSL_CTX *tls; /* NULL without --cert/--key */
	const char *dump_dir; /* NULL: no dumps */
	FILE *events; /* NULL: no event log */
	unsigned nconn; /* connections accepted so far */
	struct fault_session *sessions; /* live ones */
	struct fault_session *dead; /* closed, not yet freed */
	struct event *reaper;
};

/* Starts a session on an accepted socket FD from peer text PEER. */
void fault_session_start(struct fault_server *, int fd, const char *peer);

/* Frees every session marked dead (the reaper event's job). */
void fault_session_reap(struct fault_server *);

/* Closes and frees every session (at exit). */
void fault_server_shutdown(struct fault_server *);

/* Appends one JSON event line to the event log (if any); DATA may be NULL. */
void fault_event(struct fault_server *, unsigned conn, const char *event,
    const char *data, size_t len);

/* Writes LEN bytes of S as a JSON string body (no quotes) to F. */
void fault_json_escape(FILE *f, const char *s, size_t len);

#endif
