/*
 * smtp.h - the asynchronous SMTP client.
 *
 * One struct smtp_client per daemon, on the daemon's event_base: it owns
 * every connection (a cache of idle ones per destination key) and the
 * SSL_CTXs.  smtp_request_submit() hands it one message for one
 * destination; the client connects (or reuses an idle cached connection
 * for the same key), runs as many SMTP transactions as
 * max_recipients_per_transaction needs, and calls the request's done
 * callback exactly once, from the event loop, with one result per
 * recipient.  Nothing blocks and there are no threads.
 *
 * Ownership:
 * - smtp_client_new() returns a client the caller frees with
 *   smtp_client_free(); the event_base must outlive it.
 * - smtp_request_submit() copies the request struct, the address list,
 *   every string and the recipient array.  Two things are NOT copied and must
 *   stay valid until done() has been called: the message bytes (msg) and
 *   the settings (scope; i.e. keep the cfg alive across a reload until
 *   every request submitted with it is done).  The client never keeps a
 *   scope pointer after done(): an idle cached connection carries copies
 *   of the few values it still needs.
 * - The struct smtp_result passed to done() and everything it points to
 *   belong to the client and are valid only during the callback; copy
 *   what you keep.  done() may call smtp_request_submit() and the
 *   conn_count functions; it must not call smtp_client_free().
 */
#ifndef RELAYQ_SMTP_H
#define RELAYQ_SMTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "cfg.h"

struct event_base;
struct smtp_client;
struct smtp_result;

/* Bounds of the texts in a result (bytes, including the NUL). */
#define SMTP_TEXT_MAX 600 /* the reason, as a log line shows it */
#define SMTP_REPLY_MAX 520 /* the server's reply, for Diagnostic-Code */

/*
 * The phase of an SMTP session; smtp_phase_name() names each one as in
 * "timeout after RCPT TO" / "(in reply to RCPT TO command)".
 */
enum smtp_phase {
	SMTP_PH_NONE = 0, /* not started / nothing happened yet */
	SMTP_PH_TOKEN, /* running the token command, before connect */
	SMTP_PH_CONNECT, /* connect(2) */
	SMTP_PH_GREETING, /* waiting for the 220 greeting */
	SMTP_PH_EHLO,
	SMTP_PH_HELO,
	SMTP_PH_STARTTLS, /* the STARTTLS command's reply */
	SMTP_PH_TLS, /* the TLS handshake */
	SMTP_PH_AUTH, /* a reply to AUTH or to a SASL response */
	SMTP_PH_MAIL,
	SMTP_PH_RCPT,
	SMTP_PH_DATA, /* the DATA command's 354 */
	SMTP_PH_BODY, /* sending the message content (per block) */
	SMTP_PH_DOT, /* the reply to the final "." */
	SMTP_PH_RSET,
	SMTP_PH_QUIT,
	SMTP_PH_NOOP, /* other commands (timeout.misc) */
	SMTP_PH_IDLE, /* cached, between transactions */
	SMTP_PH_CLOSED,
};
#define SMTP_NPHASE (SMTP_PH_CLOSED + 1)

/* The phase's name: "connect", "greeting", "EHLO", "RCPT TO", "end of
 * DATA", ... (a static string). */
const char *smtp_phase_name(enum smtp_phase);

/* NOTIFY flags of RFC 3461; 0 = no NOTIFY parameter. */
enum smtp_notify {
	SMTP_NOTIFY_NEVER = 1,
	SMTP_NOTIFY_SUCCESS = 2,
	SMTP_NOTIFY_FAILURE = 4,
	SMTP_NOTIFY_DELAY = 8,
};

/* RET of RFC 3461. */
enum smtp_ret {
	SMTP_RET_NONE = 0,
	SMTP_RET_FULL,
	SMTP_RET_HDRS,
};

/* One usable TLSA record (RFC 6698, 7672) of an address: usage 2
 * (DANE-TA) or 3 (DANE-EE), selector 0 or 1, matching type 1 or 2 (or
 * 0 when the data fits). */
#define SMTP_TLSA_DATA_MAX 64
struct smtp_tlsa {
	uint8_t usage, selector, mtype;
	uint8_t len; /* bytes of data */
	unsigned char data[SMTP_TLSA_DATA_MAX];
};

/* What DNSSEC said of an address's TLSA records (tls = dane, dane-only). */
enum smtp_dane {
	SMTP_DANE_NONE = 0, /* none securely there: dane acts as may */
	SMTP_DANE_MATCH, /* usable records: TLS, and one must match */
	SMTP_DANE_UNUSABLE, /* secure records, none usable: TLS without
			       authentication (RFC 7672 2.2) */
};

/* One address of a destination, tried in the order given. */
struct smtp_addr {
	const char *host; /* name: TLS verify, SNI, logging (copied) */
	struct sockaddr_storage sa; /* AF_INET or AF_INET6, port set */
	socklen_t salen;
	/* DANE, with tls = dane or dane-only only (tlsa copied) */
	enum smtp_dane dane;
	const struct smtp_tlsa *tlsa;
	size_t ntlsa;
	/* the TLSA base domain when not HOST (HOST's CNAME target, where
	 * the records were): sent as SNI, and a name the certificate may
	 * carry besides HOST (RFC 7672 3.2.2); NULL: HOST (copied) */
	const char *tlsa_base;
	/* an MTA-STS policy in enforce mode covers the host (RFC 8461 4.2):
	 * STARTTLS and a certificate valid for the host name are required
	 * (as verify), unless DANE applies */
	bool sts_enforce;
	/* a policy in testing mode covers it: what enforce would refuse
	 * (no STARTTLS, a certificate that does not verify) is logged and
	 * reported (TLS-RPT), and the message goes anyway */
	bool sts_testing;
};

/* One recipient. */
struct smtp_rcpt {
	/* The address, without <>.  A non-ASCII sender or recipient makes
	 * the client send SMTPUTF8, or fail the message with 5.6.7 when
	 * the server does not offer it (as Postfix). */
	const char *addr;
	unsigned notify; /* enum smtp_notify bits; 0: none given */
	/* ORCPT as "addr-type;address" (e.g. "rfc822;u@example.org"),
	 * not xtext-encoded (the client encodes it); NULL: none. */
	const char *orcpt;
};

/* One message for one destination; see the ownership notes above. */
struct smtp_request {
	/* The destination: connections are cached and reused per key
	 * (e.g. the domain, or "[relayhost]:port"). */
	const char *dest_key;
	/* Tried in order: a connect failure, timeout, error greeting,
	 * EHLO/HELO failure, TLS failure, or a 421 / lost connection /
	 * timeout before the message content went out moves the
	 * recipients still without a result to the next address. */
	const struct smtp_addr *addrs;
	size_t naddrs; /* >= 1 */
	/* TLS at most as tls = may, whatever the scope says (a TLS-RPT
	 * report, RFC 8460 3: delivered despite TLS failures) */
	bool tls_relaxed;

	/* Effective settings: every timeout is cfg_time(scope, CFG_T_x,
	 * cls, first_attempt); tls, tls_ca_file, max_recipients_per_
	 * transaction, max_deliveries_per_connection and
	 * connection_cache_time come from scope too, and so do
	 * auth_mechanisms, auth_plaintext, tls_wrapper, tls_fingerprint and
	 * the client certificate (cfg_tls_client_cert: load the cfg's files
	 * with cfg_files_load() first). */
	const struct cfg_scope *scope;
	/* SMTP AUTH (RFC 4954) with these credentials after TLS, or NULL.
	 * Not copied, like scope: valid until done().  A connection is only
	 * ever reused by a request with the same credentials (auth->id). */
	const struct cfg_auth *auth;
	enum cfg_class cls;
	bool first_attempt;

	const char *sender; /* "" for the null sender <> */
	const struct smtp_rcpt *rcpts;
	size_t nrcpts; /* >= 1 */
	const char *envid; /* ENVID, not xtext-encoded; NULL: none */
	enum smtp_ret ret;

	/* The message (headers and body).  Line ends may be CRLF, bare LF
	 * or bare CR: each goes out as CRLF, dot-stuffed; a missing final
	 * line end is added.  Not copied: valid until done() is called. */
	const char *msg;
	size_t msglen;

	void (*done)(void *arg, const struct smtp_result *);
	void *arg;
};

/* The outcome for one recipient. */
struct smtp_rcpt_result {
	int cls; /* 2 delivered, 4 try again later, 5 permanent failure */
	int code; /* the server's reply code; 0 when it said nothing */
	char status[16]; /* enhanced status "X.Y.Z", always set */
	/* The reason as Postfix logs it, CR/LF stripped: "250 2.0.0 Ok:
	 * queued as X", "host H[IP] said: 550 5.1.1 ... (in reply to RCPT
	 * TO command)", "connect to H[IP]:25: Connection refused",
	 * "conversation with H[IP] timed out: timeout after RCPT TO". */
	char text[SMTP_TEXT_MAX];
	/* The server's reply alone ("550 5.1.1 <u@x>: unknown"), lines
	 * joined with a space, for a DSN's "Diagnostic-Code: smtp; ...";
	 * "" when the result did not come from a reply. */
	char reply[SMTP_REPLY_MAX];
	enum smtp_phase phase; /* where it happened */
	const char *phase_name; /* smtp_phase_name(phase) */
	/* Class 4 for a shortage of this host (no file descriptor or
	 * local port to spare, see smtp_request_submit()): nothing was
	 * tried, so it is no delivery attempt; the caller submits the
	 * recipient again later. */
	bool local;
};

/* A TLS failure of one session, for TLS-RPT (RFC 8460 4.3). */
#define SMTP_TLS_FAILS_MAX 8
struct smtp_tls_fail {
	char host[256];
	char ip[48];
	const char *type; /* result-type: "starttls-not-supported",
			     "certificate-host-mismatch", "certificate-expired",
			     "certificate-not-trusted", "validation-failure" */
};

/* The outcome of one request. */
struct smtp_result {
	size_t nrcpts;
	const struct smtp_rcpt_result *rcpts; /* same order as the request */

	/* The relay the final outcome came from (the last one tried);
	 * host "none", ip "" and port 0 when no address was tried. */
	char host[256];
	char ip[48];
	uint16_t port;

	/* TLS protocol ("TLSv1.3") and cipher, "" without TLS. */
	char tls_proto[32];
	char tls_cipher[96];
	int tls_bits;
	bool tls_verified; /* chain and name (or tls_fingerprint) good */
	/* The TLSA record that matched ("DANE-EE 3 1 1"), "" for none. */
	char tls_dane[32];
	/* The TLS failures of the sessions of this request, in order (the
	 * first SMTP_TLS_FAILS_MAX). */
	struct smtp_tls_fail tls_fails[SMTP_TLS_FAILS_MAX];
	size_t ntls_fails;
	/* The SASL mechanism the session logged in with ("PLAIN"), "". */
	char auth_mech[16];

	bool reused; /* the message went over a cached connection */
	/* A request the next hook submitted (SMTP_SUBMIT_NEXT, see
	 * smtp_client_on_next()) rode behind this one on its connection:
	 * with this done() that request is the connection's own. */
	bool next_taken;
	/* The server that took the message offered DSN, so NOTIFY and
	 * ORCPT went on with it (a DSN "relayed" rather than "delivered"). */
	bool dsn_offered;
	/* No address got as far as MAIL FROM (connect failure, timeout,
	 * error greeting, lost connection before MAIL), TLS policy failures
	 * aside: mark the host(s) down for timeout.hoststatus.  Every
	 * recipient then has class 4. */
	bool host_down;
	unsigned transactions; /* MAIL FROM transactions used */

	/* Microsecond timestamps (rq_now_us) for Postfix's delays=a/b/c/d:
	 * c = t_ready - t_submit (connection setup: connect, greeting,
	 * EHLO, TLS; ~0 on a reused connection), d = t_done - t_ready
	 * (message transmission).  t_ready == t_done if never ready. */
	int64_t t_submit;
	int64_t t_ready;
	int64_t t_done;
};

/* Whether ADDR can go inside <...> on a MAIL or RCPT command line (no
 * control byte; '<' and '>' only in a quoted string): a request with
 * one that cannot is refused (SMTP_SUBMIT_INVALID). */
bool smtp_path_ok(const char *addr);

enum smtp_submit_result {
	SMTP_SUBMIT_OK = 0, /* done() will be called exactly once */
	SMTP_SUBMIT_INVALID, /* bad request (no address/recipient...) */
	SMTP_SUBMIT_SHUTDOWN, /* smtp_client_shutdown() was called */
	/* as OK, and it rides behind the request of the connection whose
	 * next hook asked for it (smtp_client_on_next()) */
	SMTP_SUBMIT_NEXT,
};

/*
 * Makes an event_base for the client: libevent's default, whose loop
 * reads the coarse monotonic clock (a precise timer costs a
 * timerfd_settime() at every turn of the loop, about one a message
 * delivered).  That clock lags by up to its step (a few milliseconds), so
 * the client adds the step to every phase deadline: none fires early.
 * NULL on failure; freed with event_base_free().
 */
struct event_base *smtp_event_base_new(void);

/*
 * Makes a client on BASE that greets with HELO_NAME (copied).  Never
 * fails (aborts on out of memory); TLS contexts are made on first use.
 */
struct smtp_client *
smtp_client_new(struct event_base *base, const char *helo_name);

/*
 * Starts delivering REQ (see struct smtp_request for what is copied).
 * On SMTP_SUBMIT_OK, REQ->done is called exactly once, later, from the
 * event loop (never from inside smtp_request_submit()); otherwise never.
 * A new connection is not opened when fewer than SMTP_FD_RESERVE file
 * descriptors (at most a quarter of RLIMIT_NOFILE) would be left, nor
 * when the socket cannot be had: the recipients without a result then
 * get class 4 with `local` set, and no other address is tried.
 */
#define SMTP_FD_RESERVE 64
enum smtp_submit_result
smtp_request_submit(struct smtp_client *, const struct smtp_request *req);

/*
 * How many connections exist for destination KEY: connecting, busy and
 * idle cached ones (max_connections counts all three;
 * smtp_request_submit() reuses an idle one before it opens a new one).
 */
unsigned smtp_client_conn_count(struct smtp_client *, const char *key);

/* How many of those are idle in the cache (reusable right now). */
unsigned smtp_client_conn_idle(struct smtp_client *, const char *key);

/* All connections of the client, every key (max_connections_total). */
unsigned smtp_client_conn_total(struct smtp_client *);

/* What the client's metrics say (smtp_stats.c). */
struct smtp_client_stats {
	unsigned conns; /* every connection: connecting, busy and idle */
	unsigned idle; /* of those, idle in the cache */
	uint64_t timeouts[SMTP_NPHASE]; /* phase deadlines that passed */
};
void smtp_client_stats_get(struct smtp_client *, struct smtp_client_stats *);

/*
 * The next hook: NEXT(ARG, REQ_ARG) is called when a connection,
 * PIPELINING, is about to send the final dot of the last transaction of
 * the request whose arg is REQ_ARG, and may carry another request right
 * behind it (max_deliveries_per_connection, the cache time and
 * retirement allow it; no request of its destination has waited 1 s
 * (SMTP_PENDING_TAKE_US) on a connection that has not greeted, which
 * would be taken first).  A
 * request NEXT submits for the same dest_key, credentials and helo_name
 * returns SMTP_SUBMIT_NEXT:
 * its MAIL FROM, RCPT TO and DATA go out behind the dot in the same
 * write (RFC 2920: the content may be the first "command" of a group),
 * it needs no connection of its own, and its done() comes after that of
 * the request it rode behind, whose result says next_taken.  Should the
 * connection fail before the server answered its MAIL FROM, the request
 * runs again elsewhere, as after a cached connection's failed RSET (no
 * attempt counted).  NEXT may submit nothing, or a request that goes
 * the usual way (SMTP_SUBMIT_OK).  NULL turns it off.
 */
void smtp_client_on_next(
    struct smtp_client *, void (*next)(void *arg, void *req_arg), void *arg);

/*
 * The idle hook: IDLE(ARG, KEY) is called when a connection of
 * destination KEY has greeted (2xx) with no request of its own (another
 * connection took it meanwhile: see smtp_client_on_next()).  A request
 * IDLE submits for KEY with the credentials and helo_name that
 * connection was made for takes it (SMTP_SUBMIT_OK; no new connection):
 * its EHLO follows.  If IDLE submits none, the connection says QUIT.
 * KEY is valid during the call.  NULL turns it off.
 */
void smtp_client_on_idle(
    struct smtp_client *, void (*idle)(void *arg, const char *key), void *arg);

/*
 * Calls CLOSED(ARG, KEY) from the event loop (the reaper: never inside
 * a bufferevent callback) once a connection of destination KEY is gone
 * (the count above no longer has it); KEY is valid during the call.
 * CLOSED may submit requests.  NULL turns it off.  A cluster node
 * gives back the connection's lease here.
 */
void smtp_client_on_close(struct smtp_client *,
    void (*closed)(void *arg, const char *key), void *arg);

/*
 * Makes N connections of KEY leave (a cluster node lost their leases):
 * those already leaving count first, then idle ones QUIT now, then busy
 * ones QUIT after the request they are serving instead of going back to
 * the cache.  Returns how many are leaving (at most N).
 */
unsigned
smtp_client_conn_retire(struct smtp_client *, const char *key, unsigned n);

/*
 * Begins a graceful stop: new submits are refused, idle cached
 * connections are sent QUIT, and busy sessions finish their request (or,
 * with ABORT_ACTIVE, end now with class 4 "delivery aborted" results for
 * whatever was not yet accepted; their done() is called).  Connections
 * are not returned to the cache.  DONE(ARG) is called from the event
 * loop once no connection is left; then call smtp_client_free().
 * Calling it again with ABORT_ACTIVE escalates a graceful stop.
 */
void smtp_client_shutdown(struct smtp_client *, bool abort_active,
    void (*done)(void *arg), void *arg);

/*
 * Frees the client now: every connection is closed without QUIT and
 * every unfinished request's done() is called (class 4, "delivery
 * aborted") from inside this call.  NULL is a no-op.
 */
void smtp_client_free(struct smtp_client *);

/*
 * Checks that a client certificate and its key (tls_cert_file,
 * tls_key_file as loaded by cfg_files_load) parse and match, as the
 * client will use them; 0, or -1 with ERR set (no key material in it).
 */
int smtp_tls_cert_check(const struct cfg_pem *pem, char *err, size_t errlen);

/* ---- the pure parsers (smtp_parse.c), for tests and fuzzers ---- */

/* Bounds on what a server may send: longer replies are an error.  A
 * line may be of any length within them (its text is kept truncated),
 * as Postfix's smtp takes long lines: a 250 to the final dot with a long
 * text is a 250 (else the message would go again). */
#define SMTP_REPLY_BYTES_MAX 65536 /* one reply, line ends included */
#define SMTP_REPLY_LINES_MAX 1000 /* lines per multi-line reply */

enum smtp_parse_result {
	SMTP_PARSE_OK = 0, /* a complete reply */
	SMTP_PARSE_MORE, /* need more bytes */
	SMTP_PARSE_BAD, /* malformed: a line not "DDD-" / "DDD " / "DDD" */
	SMTP_PARSE_TOO_LONG, /* a line or the reply exceeds the bounds */
};

/* A parsed reply: code, optional enhanced status, joined text. */
struct smtp_reply {
	int code; /* 200..599 */
	/* "X.Y.Z" when the first line's text starts with one whose
	 * class matches the code (RFC 3463); else "" */
	char status[16];
	char text[SMTP_REPLY_MAX]; /* lines' text after code and status,
				      joined with " ", controls removed,
				      truncated */
	size_t nlines;
};

/*
 * Parses one complete reply from the start of BUF (LEN bytes).  On
 * SMTP_PARSE_OK fills *REPLY and sets *USED to the bytes consumed (every
 * line through the final CRLF; a bare LF ends a line too).  On
 * SMTP_PARSE_MORE nothing is consumed.  A reply over
 * SMTP_REPLY_BYTES_MAX bytes or SMTP_REPLY_LINES_MAX lines gives
 * SMTP_PARSE_TOO_LONG even before its line ends, so a caller's buffer
 * stays bounded.
 */
enum smtp_parse_result smtp_reply_parse(
    const char *buf, size_t len, struct smtp_reply *reply, size_t *used);

/* Capabilities from an EHLO reply. */
struct smtp_ehlo {
	bool pipelining;
	bool size; /* SIZE offered */
	uint64_t size_max; /* its limit; 0: none given */
	bool dsn;
	bool starttls;
	bool eightbitmime;
	bool enhancedstatuscodes;
	bool smtputf8;
	bool chunking;
	bool auth_offered; /* an AUTH keyword (RFC 4954) */
	unsigned auth; /* SMTP_AUTH_BIT(enum cfg_sasl) of those offered */
	char auth_list[96]; /* its mechanisms as offered, sanitized */
};
#define SMTP_AUTH_BIT(m) (1u << (m))

/*
 * Parses the EHLO reply's text lines: TEXT is the raw reply (every line
 * with its "250-"/"250 " prefix and line end, as received), LEN bytes.
 * The first line (the greeting name) is skipped; keywords are matched
 * without regard to case.  Unknown keywords and bad SIZE values are
 * ignored.  Always succeeds; *EHLO is zeroed first.
 */
void smtp_ehlo_parse(const char *text, size_t len, struct smtp_ehlo *ehlo);

/* ---- SASL (smtp_auth.c), pure, for tests and fuzzers ---- */

/*
 * The client's first SASL response for MECH (not base64): PLAIN
 * "\0user\0password" (RFC 4616), XOAUTH2 "user=U\1auth=Bearer T\1\1",
 * OAUTHBEARER "n,a=U,\1host=H\1port=P\1auth=Bearer T\1\1" (RFC 7628,
 * U with "," and "=" escaped); LOGIN has none (returns 0).  SECRET is
 * the password or the token.  Writes at most OUTLEN bytes into OUT;
 * returns the length, or 0 when it does not fit.
 */
size_t
smtp_sasl_response(enum cfg_sasl mech, const char *user, const char *secret,
    const char *host, uint16_t port, unsigned char *out, size_t outlen);

#endif
