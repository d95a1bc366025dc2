/*
 * smtp_int.h - private interfaces between the files of the smtp module.
 *
 *   smtp_client.c  the session state machine (phases, deadlines, buffers)
 *                  and the client object
 *   smtp_policy.c  what each failure means (rules stated at its top)
 *   smtp_conn.c    the destination table, the idle cache, the walk over
 *                  a request's addresses
 *   smtp_req.c     a request: checks, copies, results, completion
 *   smtp_cmd.c     the text of MAIL FROM, RCPT TO and a pipelined batch
 *   smtp_auth.c    SMTP AUTH in the session; base64 and SASL responses
 *   smtp_token.c   the token command (XOAUTH2, OAUTHBEARER)
 *   smtp_tls.c     the SSL_CTX cache, client certificates, fingerprints
 *   smtp_body.c    the message as it goes out after DATA
 *   smtp_parse.c   the pure parsers (public: smtp.h)
 *
 * Ownership: the client owns every struct smtp_conn and smtp_req; a
 * request is attached to at most one connection at a time, as its
 * request (conn->req) or as the one riding behind it (conn->next), and
 * nothing else points back; a closed connection and a finished request
 * are freed only by the client's reaper, never inside a callback.
 */
#ifndef RELAYQ_SMTP_INT_H
#define RELAYQ_SMTP_INT_H

#include <sys/queue.h>

#include <event2/util.h>
#include <openssl/ssl.h>

#include "smtp.h"

struct bufferevent;
struct evbuffer;
struct evbuffer_cb_entry;
struct event;

#define SMTP_DEST_BUCKETS 1024
/* A request waits this long on a connection that has not greeted before
 * another connection of its destination may take it (smtp_conn.c): a
 * greeting normally comes sooner, and a connection whose request was
 * taken is wasted (it only says QUIT). */
#define SMTP_PENDING_TAKE_US 1000000

struct smtp_conn;

/* Connections and idle cache of one destination key (smtp_conn.c). */
struct smtp_dest {
	char *key;
	unsigned nconn, nidle;
	TAILQ_HEAD(, smtp_conn) idle;
	/* connections with a request that have not greeted yet (connect,
	 * greeting), oldest first: a connection that finishes its request
	 * takes the request of the first (smtp_conn_req_done) */
	TAILQ_HEAD(, smtp_conn) pending;
	struct smtp_dest *next; /* hash chain */
};

/* One submitted request, with its own copies (see smtp.h). */
struct smtp_req {
	struct smtp_client *client;
	struct smtp_request req; /* strings point into copies below */
	struct smtp_addr *addrs;
	struct smtp_rcpt *rcpts;
	struct smtp_rcpt_result *res;
	bool *accepted; /* accepted by RCPT in the current transaction */
	size_t addr_idx;
	bool plain_retry; /* tls=may: redo addrs[addr_idx] in plaintext */
	bool no_reuse; /* too many cached connections failed */
	bool eight_bit;
	bool utf8_addrs; /* an address needs SMTPUTF8 (RFC 6531) */
	int reuse_retries;
	/* The current transaction: recipient indexes txn[0..ntxn), the
	 * next rcpts without a result; rcpt_pos: whose RCPT reply is due. */
	size_t *txn;
	size_t ntxn, rcpt_pos, txn_accepted;
	bool mail_failed;
	struct smtp_rcpt_result last; /* the latest pre-session failure */
	bool last_policy; /* ... was a TLS policy failure */
	bool session_seen; /* some address got as far as MAIL FROM */
	bool stop_walk; /* rule 15: no other address is tried */
	struct smtp_result result;
	TAILQ_ENTRY(smtp_req) entry; /* client->finished */
};

/* One connection: one bufferevent, one phase, one deadline timer. */
struct smtp_conn {
	struct smtp_client *client;
	struct smtp_dest *dest;
	struct bufferevent *bev;
	struct event *timer;
	SSL *ssl;
	enum smtp_phase phase;
	struct smtp_req *req;
	/* The request riding behind req (smtp_client_on_next): it becomes
	 * req once the dot is answered; next_sent: its MAIL FROM, RCPT TO
	 * and DATA went out behind the dot. */
	struct smtp_req *next;
	bool next_sent;
	/* req rode behind the previous request and the server has not
	 * answered its MAIL FROM yet (rule 12a, as a reuse RSET) */
	bool chained;
	char host[256];
	char ip[48];
	uint16_t port;
	int tls_level; /* enum cfg_tls; CFG_TLS_DANE: a TLSA must match */
	char *cafile;
	bool plain_only; /* the tls=may plaintext retry */
	bool tls_active, tls_verified;
	char tls_proto[32], tls_cipher[96];
	int tls_bits;
	char tls_dane[32]; /* the TLSA that matched: "DANE-EE 3 1 1" */
	struct smtp_ehlo ehlo;
	unsigned deliveries;
	bool reused; /* taken from the cache for the current request */
	bool need_rset; /* taken from the cache: RSET first */
	bool reuse_rset; /* the outstanding RSET is that one */
	bool in_txn; /* a MAIL FROM went out on this connection */
	bool pipe_sent; /* MAIL..DATA of this transaction are written */
	bool dot_discard; /* the "." ends a transaction nobody wanted */
	bool body_done;
	bool policy_fail; /* a TLS requirement failed, not the host */
	bool dead;
	bool pending; /* on dest->pending */
	int64_t pending_us; /* since when (rq_now_us()) */
	bool retire; /* QUITs after its request (smtp_client_conn_retire) */
	char *gone_key; /* closed: its key, for the close hook */
	/* implicit TLS, SMTP AUTH */
	bool wrapper; /* TLS from the first byte (tls_wrapper, port 465) */
	bool auth_tls; /* TLS is required because of the credentials */
	bool authed; /* AUTH succeeded */
	char *auth_id; /* the credentials it is for ("" none): cache key */
	/* what EHLO/HELO said (helo_name of the request's scope, else the
	 * client's): cache key, with auth_id */
	char *helo;
	enum cfg_sasl auth_mech;
	int auth_step; /* smtp_auth.c's enum auth_step */
	char auth_err[160]; /* the server's decoded OAuth error, or "" */
	char *token; /* the token command's token (secret), until used */
	struct smtp_token *tok; /* the token command, while it runs */
	size_t body_off;
	bool body_bol;
	/* plaintext socket I/O done by smtp_client.c, not the bufferevent
	 * (from connect to STARTTLS or the end): the socket's read event,
	 * the write of the output at the end of the loop turn, the output's
	 * callback that schedules it */
	bool direct;
	bool flush_due;
	struct event *rev;
	struct event *flush;
	struct evbuffer_cb_entry *out_cb;
	/* copies of the settings an idle connection still needs */
	int64_t t_quit, cache_time, max_deliveries;
	TAILQ_ENTRY(smtp_conn) entry; /* client->conns or client->dead */
	TAILQ_ENTRY(smtp_conn) idle_entry; /* dest->idle */
	TAILQ_ENTRY(smtp_conn) pending_entry; /* dest->pending */
};

struct smtp_client {
	struct event_base *base;
	char *helo;
	struct smtp_tls *tls;
	struct smtp_dest *buckets[SMTP_DEST_BUCKETS];
	unsigned nconn;
	TAILQ_HEAD(, smtp_conn) conns;
	TAILQ_HEAD(, smtp_conn) dead;
	TAILQ_HEAD(, smtp_req) finished;
	struct event *reap;
	bool shutting_down, aborting, sd_called;
	pid_t *kids; /* token commands of closed sessions, to reap */
	size_t nkids;
	struct event *kids_ev;
	void (*sd_cb)(void *);
	void *sd_arg;
	void (*close_cb)(void *, const char *); /* smtp_client_on_close */
	void *close_arg;
	void (*next_cb)(void *, void *); /* smtp_client_on_next */
	void *next_arg;
	/* while next_cb runs: the connection a fitting request rides on */
	struct smtp_conn *next_to;
	void (*idle_cb)(void *, const char *); /* smtp_client_on_idle */
	void *idle_arg;
	/* while idle_cb runs: the orphan a fitting request takes */
	struct smtp_conn *adopt_to;
	uint64_t timeouts[SMTP_NPHASE]; /* deadlines passed (smtp_stats.c) */
	long pad_us; /* added to every deadline: the coarse clock's step */
};

/* ---- the session state machine (smtp_client.c) ---- */

/* What a phase was doing: "sending RCPT TO" ("idle" for none). */
const char *smtp_phase_while(enum smtp_phase);

/* What a phase's deadline says: "timeout after RCPT TO" ("timeout"). */
const char *smtp_phase_timeout(enum smtp_phase);

/* Sets CONN's phase, arms its deadline and sends what PHASE sends. */
void smtp_conn_enter(struct smtp_conn *, enum smtp_phase);

/* Makes a connection for REQ to addrs[req->addr_idx]. */
void smtp_conn_open(struct smtp_req *);

/* Closes CONN now, without QUIT; it is freed later by the reaper. */
void smtp_conn_close(struct smtp_conn *);

/* Ends CONN's session: QUIT when POLITE and still in step, else close. */
void smtp_conn_leave(struct smtp_conn *, bool polite);

/* The session is ready for mail: start the request's first transaction. */
void smtp_conn_ready(struct smtp_conn *);

/* Connects CONN (after its token command, if any). */
void smtp_conn_connect(struct smtp_conn *);

/* Puts CONN, connecting with a request, on its destination's pending
 * list (smtp_conn.c). */
void smtp_pending_add(struct smtp_conn *);

/* Takes CONN off its destination's pending list, if on it. */
void smtp_pending_remove(struct smtp_conn *);

/* ---- what failures mean (smtp_policy.c) ---- */

/* Fills R as the reason text FMT, class CLS, status STATUS, in PHASE. */
void smtp_why_set(struct smtp_rcpt_result *r, int cls, const char *status,
    enum smtp_phase phase, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Fills R from REPLY, the server's answer to PHASE on CONN (rule 1). */
void smtp_why_reply(struct smtp_rcpt_result *r, const struct smtp_conn *conn,
    const struct smtp_reply *reply, enum smtp_phase phase);

/* Rule 2: fails CONN and returns true if REPLY ends the session. */
bool smtp_reply_ends_session(struct smtp_conn *, const struct smtp_reply *reply,
    struct smtp_rcpt_result *why);

/* Rule 3: a greeting, EHLO, HELO or RSET refused with WHY. */
void smtp_session_refused(struct smtp_conn *, struct smtp_rcpt_result *why);

/* Rule 4: MAIL FROM refused with WHY. */
void smtp_sender_refused(struct smtp_req *, const struct smtp_rcpt_result *why);

/* Rule 5: the reply WHY (class CLS) to recipient I's RCPT TO. */
void smtp_rcpt_replied(
    struct smtp_req *, size_t i, int cls, const struct smtp_rcpt_result *why);

/* Rule 6: DATA answered with WHY (class CLS), not 354. */
void
smtp_data_refused(struct smtp_req *, int cls, struct smtp_rcpt_result *why);

/* Rule 7: the reply WHY to the final dot. */
void smtp_dot_replied(struct smtp_req *, const struct smtp_rcpt_result *why);

/* Rules 8, 9: whether CONN's request cannot go to this server at all. */
bool smtp_txn_refused(struct smtp_conn *);

/* Rules 8, 9 asked without an answer: whether REQ could go to CONN's
 * server (nothing is set). */
bool smtp_txn_fits(const struct smtp_conn *, const struct smtp_req *req);

/* Rule 12a: REQ, riding behind a request on a connection that failed
 * before the server answered REQ's MAIL FROM, runs again. */
void smtp_next_rerun(struct smtp_req *);

/* Rule 10a: fails CONN and returns true if TLS is required but absent. */
bool smtp_tls_missing(struct smtp_conn *);

/* Rule 10b: STARTTLS refused with WHY; true: go on in plaintext. */
bool smtp_starttls_refused(struct smtp_conn *, struct smtp_rcpt_result *why);

/* Rule 10c: bytes came after the reply to STARTTLS. */
void smtp_starttls_injected(struct smtp_conn *);

/* Rule 10e: fails CONN and returns true if its certificate must verify
 * and does not. */
bool smtp_tls_unverified(struct smtp_conn *, X509 *cert, long vr);

/* Rule 10i: notes, for an address under an MTA-STS policy in testing
 * mode, what enforce would have refused: no STARTTLS (CERT NULL, VR
 * ignored), or certificate CERT with verify result VR. */
void
smtp_sts_testing_fail(struct smtp_conn *, bool starttls, X509 *cert, long vr);

/* Rule 10f: TLS could not be set up here (ERR: why, or NULL). */
void smtp_tls_setup_failed(struct smtp_conn *, const char *err);

/* Rules 11, 16: connect(2) failed at once with ERRNUM. */
void smtp_connect_failed(struct smtp_conn *, int errnum);

/* Rules 10d, 11: the connection BEV closed or failed (socket error ERR). */
void smtp_conn_lost(struct smtp_conn *, struct bufferevent *bev, int err);

/* Rules 10d, 11: CONN's phase deadline passed. */
void smtp_conn_timed_out(struct smtp_conn *);

/* Rule 11: the reply was malformed (BAD) or too long. */
void smtp_reply_malformed(struct smtp_conn *, bool bad);

/* Rule 11: a reply REPLY came where none is due. */
void smtp_reply_unexpected(struct smtp_conn *, const struct smtp_reply *reply);

/* Rule 10g: fails CONN and returns true if its certificate does not
 * match tls_fingerprint. */
bool smtp_tls_unpinned(struct smtp_conn *, X509 *cert);

/* Rule 15a: credentials, but no AUTH we may use (M: our N choices). */
void
smtp_auth_unavailable(struct smtp_conn *, const enum cfg_sasl *m, size_t n);

/* Rule 15b: the server refused AUTH with WHY. */
void smtp_auth_refused(struct smtp_conn *, struct smtp_rcpt_result *why);

/* Rule 15c: the token command failed (WHY: how). */
void smtp_token_failed(struct smtp_conn *, const char *why);

/* Rule 14: ends CONN's request with "delivery aborted". */
void smtp_conn_abort(struct smtp_conn *);

/* Rule 12: ends CONN's part in its request after a failure WHY. */
void smtp_conn_fail(
    struct smtp_conn *, bool polite, const struct smtp_rcpt_result *why);

/* Rule 13: REQ has no address left (or the client aborts): finish it. */
void smtp_req_give_up(struct smtp_req *);

/* ---- connections per destination, the cache, the walk (smtp_conn.c) */

/* Counts CONN, new, as a connection of destination KEY. */
void smtp_dest_attach(struct smtp_conn *, const char *key);

/* Uncounts CONN, closed; frees its destination when it was the last. */
void smtp_dest_detach(struct smtp_conn *);

/* Frees every destination of CLIENT (when it is freed). */
void smtp_dest_free_all(struct smtp_client *);

/* Takes CONN, idle, off its destination's cache. */
void smtp_cache_remove(struct smtp_conn *);

/* Copies the settings CONN keeps from its current request. */
void smtp_conn_settings(struct smtp_conn *);

/* Copies CONN's relay and TLS facts into its request's result. */
void smtp_conn_result(struct smtp_conn *);

/* Finishes CONN's request; the connection goes to the cache or QUITs. */
void smtp_conn_req_done(struct smtp_conn *);

/* Finishes CONN's request; the one riding behind it takes its place. */
void smtp_conn_req_pass(struct smtp_conn *);

/* Whether CONN may carry a request behind its current one (see
 * smtp_client_on_next); then takes one waiting on a connection that has
 * not greeted, else asks the next hook.  True when CONN->next is set. */
bool smtp_conn_next_take(struct smtp_conn *);

/* Whether REQ may ride behind CONN's request (the next hook runs for
 * CONN): same destination, credentials and helo_name. */
bool smtp_conn_next_fits(const struct smtp_conn *, const struct smtp_req *);
/* Whether REQ may go on CONN, made for another request. */
bool smtp_conn_fits(const struct smtp_conn *, const struct smtp_req *);
/* An orphan that just greeted asks the idle hook for a request; true
 * when it got one (its handshake goes on). */
bool smtp_conn_adopt(struct smtp_conn *);

/* Starts (or restarts) REQ: on an idle cached connection if any. */
void smtp_req_run(struct smtp_req *);
/* What a connection for REQ says in EHLO/HELO: its scope's helo_name,
 * else the client's name. */
const char *smtp_req_helo(const struct smtp_req *);

/* Moves REQ to its next address after a pre-session failure. */
void smtp_addr_next(struct smtp_req *);

/* ---- requests (smtp_req.c) ---- */

/* Makes recipient I's result R unless it already has one. */
void
smtp_rcpt_set(struct smtp_req *, size_t i, const struct smtp_rcpt_result *r);

/* Gives every recipient without a result the result R. */
void smtp_rcpt_set_rest(struct smtp_req *, const struct smtp_rcpt_result *r);

/* Gives the accepted recipients of the transaction the result R. */
void smtp_txn_set_accepted(struct smtp_req *, const struct smtp_rcpt_result *r);

/* Voids the transaction in progress: nobody in it is accepted now. */
void smtp_txn_void(struct smtp_req *);

/* Queues REQ for its done() callback (called by the reaper). */
void smtp_req_complete(struct smtp_req *);

/* Frees REQ and its copies. */
void smtp_req_free(struct smtp_req *);

/* ---- commands (smtp_cmd.c) ---- */

/* Appends the MAIL FROM command of REQ, on CONN, to OUT. */
void smtp_cmd_mail(
    const struct smtp_conn *, const struct smtp_req *req, struct evbuffer *out);

/* Appends the RCPT TO command for REQ's recipient I to OUT. */
void smtp_cmd_rcpt(const struct smtp_conn *, const struct smtp_req *req,
    struct evbuffer *out, size_t i);

/* Appends REQ's whole transaction (RSET if RSET, MAIL, RCPTs, DATA). */
void smtp_cmd_pipeline(const struct smtp_conn *, const struct smtp_req *req,
    struct evbuffer *out, bool rset);

/* ---- SMTP AUTH (smtp_auth.c) and the token command (smtp_token.c) */

/* Starts AUTH on CONN: EHLO is done and TLS up where required. */
void smtp_auth_start(struct smtp_conn *);

/* Handles REPLY (WHY as a failure) to AUTH or a SASL response. */
void smtp_auth_reply(struct smtp_conn *, const struct smtp_reply *reply,
    struct smtp_rcpt_result *why);

/* Runs CONN's token command (SMTP_PH_TOKEN); then smtp_conn_connect()
 * or rule 15c. */
void smtp_token_start(struct smtp_conn *);

/* Stops CONN's token command if it runs (its child is reaped later). */
void smtp_token_cancel(struct smtp_conn *);

/* Zeroes and frees CONN's token. */
void smtp_token_forget(struct smtp_conn *);

/* Reaps the token commands of closed sessions (the client goes). */
void smtp_kids_reap_all(struct smtp_client *);

/* ---- TLS contexts (smtp_tls.c) ---- */

struct smtp_tls; /* a cache of SSL_CTXs, one per CA file */

/* Makes an empty cache; freed with smtp_tls_free(). */
struct smtp_tls *smtp_tls_new(void);
void smtp_tls_free(struct smtp_tls *);

/*
 * Returns a new SSL for a client connection to HOST (SNI unless HOST is
 * an IP literal; the name, or the IP, is what verification checks), with
 * the chain checked against CAFILE ("" = the system's CAs) but the
 * handshake never failing on it: the caller looks at
 * SSL_get_verify_result() afterwards; presenting the client certificate
 * PEM (NULL: none).  With TLSA records (NTLSA > 0) DANE checks the
 * peer instead (RFC 7672; DANE-EE without name checks).  NULL with ERR
 * set on failure.
 */
SSL *smtp_tls_ssl_new(struct smtp_tls *, const char *cafile,
    const struct cfg_pem *pem, const char *host, const struct smtp_tlsa *tlsa,
    size_t ntlsa, char *err, size_t errlen);

/*
 * Whether CERT's SHA-256 digest, or that of its public key (the DER
 * SubjectPublicKeyInfo), is one of the N digests FP.  DESC (may be
 * NULL) gets "SHA256:xx:..." of the certificate and of the key.
 */
bool smtp_tls_fingerprint_match(X509 *cert, const unsigned char (*fp)[32],
    size_t n, char *desc, size_t desclen);

/* Formats the last OpenSSL error (or "handshake failed") into ERR. */
void smtp_tls_error(char *err, size_t errlen, unsigned long code);

/* ---- the message body (smtp_body.c) ---- */

/*
 * Encodes the message MSG (LEN bytes) for DATA from offset *OFF: every
 * CR, LF or CRLF becomes CRLF, a line starting with "." gets another,
 * a missing final line end is added and, at the end, ".\r\n".  Writes
 * at most OUTLEN bytes (OUTLEN >= 8) into OUT; returns the count and
 * advances *OFF and *BOL (at beginning of line); *OFF > LEN once the
 * terminating dot is written.
 */
size_t smtp_body_encode(const char *msg, size_t len, size_t *off, bool *bol,
    char *out, size_t outlen);

/* Whether MSG has a byte >= 0x80 (BODY=8BITMIME). */
bool smtp_body_8bit(const char *msg, size_t len);

#endif
