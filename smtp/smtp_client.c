/*
 * smtp_client.c - the mechanics of the asynchronous SMTP client: the
 * session state machine (phases, deadlines, buffers) and the client
 * object that owns every session.
 *
 * Public functions: smtp_event_base_new(), smtp_client_new(),
 * smtp_client_shutdown(), smtp_client_free().  Module functions:
 * smtp_phase_while(), smtp_phase_timeout(), smtp_conn_enter(),
 * smtp_conn_open(), smtp_conn_close(), smtp_conn_leave(),
 * smtp_conn_ready().
 *
 * A connection (struct smtp_conn) is one bufferevent, one enum smtp_phase
 * and one deadline timer.  Every transition goes through
 * smtp_conn_enter(), which sets the phase, arms the timer with that
 * phase's timeout (the phase tables below) and sends what the phase sends;
 * every reply goes through conn_reply(), which switches on the phase.
 * What a refusal, a timeout or a lost connection means is not decided
 * here: the handlers call smtp_policy.c, whose rules are stated at its
 * top.  Which connection a request gets, and the walk over its addresses,
 * are in smtp_conn.c.
 *
 * Socket I/O of a plaintext connection is done here, not by the
 * bufferevent (which still connects, holds the buffers and takes over
 * under TLS): what the state machine queues in the output is written at
 * the end of the loop turn that queued it (conn_flush_cb), so pipelined
 * commands go out in one writev() with no poll for writability first;
 * the bufferevent's write event is armed only when the socket takes less
 * than all (EAGAIN, a short write), and disarmed once it is drained.
 * Replies are read by the connection's own read event into the input
 * buffer (conn_sock_read_cb), one read() each, without the FIONREAD ioctl
 * libevent's reader makes first.  A delivery costs then one writev() per
 * burst, one read() per reply batch, and no epoll_ctl() at all.
 *
 * Invariants: the timer is armed once per phase (per command, per body
 * block), never by incoming bytes, so a trickling peer cannot stretch a
 * deadline; a closed connection is unlinked at once but freed only in
 * reap_cb(), so no callback frees its own session; done() is only ever
 * called from reap_cb(); whatever enters a direct connection's output
 * is written in the same loop turn or has the write event armed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "smtp_int.h"

#define BODY_BLOCK 65536 /* bytes queued per body block */
#define BODY_LOWAT 16384 /* queue the next block below this */
#define REPLY_PEEK SMTP_REPLY_BYTES_MAX
#define READ_BLOCK 4096 /* bytes read at most per read(2), as libevent */

/* The timeout key of each phase. */
static const enum cfg_key phase_key[SMTP_NPHASE] = {
	[SMTP_PH_TOKEN] = CFG_T_MISC,
	[SMTP_PH_CONNECT] = CFG_T_CONNECT,
	[SMTP_PH_GREETING] = CFG_T_INITIAL,
	[SMTP_PH_EHLO] = CFG_T_HELO,
	[SMTP_PH_HELO] = CFG_T_HELO,
	[SMTP_PH_STARTTLS] = CFG_T_STARTTLS,
	[SMTP_PH_TLS] = CFG_T_STARTTLS,
	[SMTP_PH_AUTH] = CFG_T_HELO,
	[SMTP_PH_MAIL] = CFG_T_MAIL,
	[SMTP_PH_RCPT] = CFG_T_RCPT,
	[SMTP_PH_DATA] = CFG_T_DATAINIT,
	[SMTP_PH_BODY] = CFG_T_DATABLOCK,
	[SMTP_PH_DOT] = CFG_T_DATAFINAL,
	[SMTP_PH_RSET] = CFG_T_RSET,
	[SMTP_PH_QUIT] = CFG_T_QUIT,
	[SMTP_PH_NOOP] = CFG_T_MISC,
};

/* What a phase was doing, for "timeout after ..." and "lost ... while". */
static const char *const phase_timeout[SMTP_NPHASE] = {
	[SMTP_PH_TOKEN] = "timeout while running the token command",
	[SMTP_PH_CONNECT] = "timeout while connecting",
	[SMTP_PH_GREETING] = "timeout while receiving the initial greeting",
	[SMTP_PH_EHLO] = "timeout after EHLO",
	[SMTP_PH_HELO] = "timeout after HELO",
	[SMTP_PH_STARTTLS] = "timeout after STARTTLS",
	[SMTP_PH_TLS] = "timeout during the TLS handshake",
	[SMTP_PH_AUTH] = "timeout after AUTH",
	[SMTP_PH_MAIL] = "timeout after MAIL FROM",
	[SMTP_PH_RCPT] = "timeout after RCPT TO",
	[SMTP_PH_DATA] = "timeout after DATA",
	[SMTP_PH_BODY] = "timeout while sending message content",
	[SMTP_PH_DOT] = "timeout after end of DATA",
	[SMTP_PH_RSET] = "timeout after RSET",
	[SMTP_PH_QUIT] = "timeout after QUIT",
	[SMTP_PH_NOOP] = "timeout after NOOP",
};
static const char *const phase_while[SMTP_NPHASE] = {
	[SMTP_PH_TOKEN] = "running the token command",
	[SMTP_PH_CONNECT] = "connecting",
	[SMTP_PH_GREETING] = "receiving the initial server greeting",
	[SMTP_PH_EHLO] = "performing the EHLO handshake",
	[SMTP_PH_HELO] = "performing the HELO handshake",
	[SMTP_PH_STARTTLS] = "sending STARTTLS",
	[SMTP_PH_TLS] = "performing the TLS handshake",
	[SMTP_PH_AUTH] = "performing the AUTH exchange",
	[SMTP_PH_MAIL] = "sending MAIL FROM",
	[SMTP_PH_RCPT] = "sending RCPT TO",
	[SMTP_PH_DATA] = "sending DATA command",
	[SMTP_PH_BODY] = "sending message body",
	[SMTP_PH_DOT] = "sending end of data -- message may be sent more "
			"than once",
	[SMTP_PH_RSET] = "sending RSET",
	[SMTP_PH_QUIT] = "sending QUIT",
	[SMTP_PH_NOOP] = "sending NOOP",
};

static void conn_read_cb(struct bufferevent *, void *);
static void conn_write_cb(struct bufferevent *, void *);
static void conn_event_cb(struct bufferevent *, short, void *);
static void conn_timer_cb(evutil_socket_t, short, void *);
static void conn_direct_stop(struct smtp_conn *);
static void txn_begin(struct smtp_conn *);
static void txn_next_send(struct smtp_conn *);

/* What PHASE was doing: "sending RCPT TO"; "idle" for none. */
const char *
smtp_phase_while(enum smtp_phase phase)
{
	return phase_while[phase] ? phase_while[phase] : "idle";
}

/* What PHASE's deadline says: "timeout after RCPT TO", or "timeout". */
const char *
smtp_phase_timeout(enum smtp_phase phase)
{
	return phase_timeout[phase] ? phase_timeout[phase] : "timeout";
}

/* ---- phases ---- */

/* The timeout of PHASE for CONN, in seconds. */
static int64_t
conn_timeout(const struct smtp_conn *conn, enum smtp_phase phase)
{
	const struct smtp_req *req = conn->req;

	if (phase == SMTP_PH_IDLE)
		return conn->cache_time;
	if (req == NULL || phase_key[phase] == 0)
		return conn->t_quit;
	return cfg_time(req->req.scope, phase_key[phase], req->req.cls,
	    req->req.first_attempt);
}

/* Queues the next block of the message body (with the final dot). */
static void
conn_body_fill(struct smtp_conn *conn)
{
	const struct smtp_req *req = conn->req;
	struct evbuffer *out = bufferevent_get_output(conn->bev);
	struct evbuffer_iovec v;
	size_t n, left = req->req.msglen - conn->body_off, blk = BODY_BLOCK;

	/* the encoding at most doubles the rest and adds CRLF ".\r\n": a
	 * small message reserves what it can need, not a whole block */
	if (left < (BODY_BLOCK - 5) / 2)
		blk = 2 * left + 5 < 8 ? 8 : 2 * left + 5;
	if (evbuffer_reserve_space(out, (ev_ssize_t)blk, &v, 1) < 1)
		abort();
	n = smtp_body_encode(req->req.msg, req->req.msglen, &conn->body_off,
	    &conn->body_bol, v.iov_base, blk);
	v.iov_len = n;
	evbuffer_commit_space(out, &v, 1);
	if (conn->body_off > req->req.msglen) {
		conn->body_done = true;
		bufferevent_setwatermark(conn->bev, EV_WRITE, 0, 0);
		txn_next_send(conn);
	}
}

/* Sets CONN's phase, arms its deadline and sends what PHASE sends. */
void
smtp_conn_enter(struct smtp_conn *conn, enum smtp_phase phase)
{
	struct evbuffer *out = bufferevent_get_output(conn->bev);
	struct timeval tv = { 0, 0 };

	if (phase != SMTP_PH_CONNECT && phase != SMTP_PH_GREETING)
		smtp_pending_remove(conn); /* greeted, or going away */
	conn->phase = phase;
	/* The loop's cached time may be stale, and the coarse clock lags by
	 * up to its step: never arm a deadline early. */
	event_base_update_cache_time(conn->client->base);
	tv.tv_sec = (time_t)conn_timeout(conn, phase);
	tv.tv_usec = conn->client->pad_us;
	evtimer_add(conn->timer, &tv);
	switch (phase) {
	case SMTP_PH_EHLO:
		evbuffer_add_printf(out, "EHLO %s\r\n", conn->helo);
		break;
	case SMTP_PH_HELO:
		evbuffer_add_printf(out, "HELO %s\r\n", conn->helo);
		break;
	case SMTP_PH_STARTTLS:
		evbuffer_add_printf(out, "STARTTLS\r\n");
		break;
	case SMTP_PH_MAIL:
		if (!conn->pipe_sent)
			smtp_cmd_mail(conn, conn->req, out);
		break;
	case SMTP_PH_RCPT:
		if (!conn->pipe_sent)
			smtp_cmd_rcpt(conn, conn->req, out,
			    conn->req->txn[conn->req->rcpt_pos]);
		break;
	case SMTP_PH_DATA:
		if (!conn->pipe_sent)
			evbuffer_add_printf(out, "DATA\r\n");
		break;
	case SMTP_PH_BODY:
		conn_body_fill(conn);
		break;
	case SMTP_PH_RSET:
		if (!(conn->pipe_sent && conn->reuse_rset))
			evbuffer_add_printf(out, "RSET\r\n");
		break;
	case SMTP_PH_QUIT:
		evbuffer_add_printf(out, "QUIT\r\n");
		break;
	case SMTP_PH_NOOP:
		evbuffer_add_printf(out, "NOOP\r\n");
		break;
	default:
		break;
	}
}

/* ---- opening and closing ---- */

/*
 * A socket for a new connection, keeping SMTP_FD_RESERVE descriptors
 * free (socket() gives the lowest free number, so FD or more are in
 * use); -1 with *ERR set when there is none to spare.
 */
static int
conn_socket(int family, int *err)
{
	struct rlimit rl;
	rlim_t reserve = SMTP_FD_RESERVE;
	int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0) {
		*err = errno;
		return -1;
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
	    rl.rlim_cur != RLIM_INFINITY) {
		if (rl.rlim_cur / 4 < reserve)
			reserve = rl.rlim_cur / 4;
		if ((rlim_t)fd + reserve >= rl.rlim_cur) {
			close(fd);
			*err = EMFILE;
			return -1;
		}
	}
	return fd;
}

/* Sets CONN's TLS level, implicit TLS and credentials identity from
 * its request: credentials require TLS unless auth_plaintext. */
static void
conn_tls_settings(struct smtp_conn *conn)
{
	const struct smtp_request *r = &conn->req->req;

	const struct smtp_addr *a = &conn->req->addrs[conn->req->addr_idx];

	conn->wrapper = cfg_tls_wrapper(r->scope, conn->port);
	conn->tls_level = (int)cfg_tls_level(r->scope, r->auth, conn->port);
	if (conn->tls_level == CFG_TLS_DANE ||
	    conn->tls_level == CFG_TLS_DANE_ONLY) {
		/* RFC 7672: the address's TLSA records decide. */
		if (a->dane == SMTP_DANE_MATCH ||
		    conn->tls_level == CFG_TLS_DANE_ONLY)
			conn->tls_level = CFG_TLS_DANE;
		else if (a->dane == SMTP_DANE_UNUSABLE || conn->wrapper ||
		    (r->auth != NULL && !cfg_int(r->scope, CFG_AUTH_PLAINTEXT)))
			conn->tls_level = CFG_TLS_ENCRYPT;
		else
			conn->tls_level = CFG_TLS_MAY;
	}
	if (a->sts_enforce && conn->tls_level <= CFG_TLS_ENCRYPT)
		conn->tls_level = CFG_TLS_VERIFY; /* MTA-STS enforce */
	if (r->tls_relaxed && conn->tls_level > CFG_TLS_MAY && !conn->wrapper)
		conn->tls_level = CFG_TLS_MAY;
	conn->auth_tls = r->auth != NULL &&
	    cfg_int(r->scope, CFG_TLS) < CFG_TLS_ENCRYPT &&
	    conn->tls_level == CFG_TLS_ENCRYPT && !conn->wrapper;
	conn->cafile = xstrdup(cfg_str(r->scope, CFG_TLS_CA_FILE));
	conn->auth_id = xstrdup(r->auth ? r->auth->id : "");
	conn->helo = xstrdup(smtp_req_helo(conn->req));
}

/* Makes a connection for REQ to addrs[req->addr_idx]. */
void
smtp_conn_open(struct smtp_req *req)
{
	struct smtp_client *client = req->client;
	const struct smtp_addr *a = &req->addrs[req->addr_idx];
	struct smtp_conn *conn;

	conn = xcalloc(1, sizeof(*conn));
	conn->client = client;
	smtp_dest_attach(conn, req->req.dest_key);
	conn->req = req;
	snprintf(conn->host, sizeof(conn->host), "%s", a->host);
	if (a->sa.ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const void *)&a->sa;

		inet_ntop(AF_INET6, &s6->sin6_addr, conn->ip, sizeof(conn->ip));
		conn->port = ntohs(s6->sin6_port);
	} else {
		const struct sockaddr_in *s4 = (const void *)&a->sa;

		inet_ntop(AF_INET, &s4->sin_addr, conn->ip, sizeof(conn->ip));
		conn->port = ntohs(s4->sin_port);
	}
	conn_tls_settings(conn);
	conn->plain_only = req->plain_retry;
	req->plain_retry = false;
	smtp_conn_settings(conn);
	smtp_conn_result(conn);
	conn->timer = evtimer_new(client->base, conn_timer_cb, conn);
	conn->bev = bufferevent_socket_new(
	    client->base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (conn->bev == NULL || conn->timer == NULL)
		abort();
	bufferevent_setcb(
	    conn->bev, conn_read_cb, conn_write_cb, conn_event_cb, conn);
	if (req->req.auth != NULL && req->req.auth->argv != NULL) {
		/* The token first: a failure costs no connection. */
		smtp_conn_enter(conn, SMTP_PH_TOKEN);
		smtp_token_start(conn);
		return;
	}
	smtp_conn_connect(conn);
}

/* Connects CONN (after its token command, if any); its socket is
 * polled only from here on (an unconnected socket polls as hung up). */
void
smtp_conn_connect(struct smtp_conn *conn)
{
	const struct smtp_addr *a = &conn->req->addrs[conn->req->addr_idx];
	int fd, err = 0;

	/* the socket only now: no events on it while a token is fetched */
	if ((fd = conn_socket(a->sa.ss_family, &err)) < 0) {
		smtp_connect_failed(conn, err);
		return;
	}
	bufferevent_setfd(conn->bev, fd);
	smtp_conn_enter(conn, SMTP_PH_CONNECT);
	smtp_pending_add(conn);
	bufferevent_enable(conn->bev, EV_READ | EV_WRITE);
	if (bufferevent_socket_connect(
		conn->bev, (const struct sockaddr *)&a->sa, (int)a->salen) < 0)
		smtp_connect_failed(conn, errno);
}

/* Closes CONN now, without QUIT; it is freed later by reap_cb. */
void
smtp_conn_close(struct smtp_conn *conn)
{
	if (conn->dead)
		return;
	conn->dead = true;
	if (conn->phase == SMTP_PH_IDLE)
		smtp_cache_remove(conn);
	smtp_pending_remove(conn);
	smtp_token_cancel(conn);
	smtp_token_forget(conn);
	conn->phase = SMTP_PH_CLOSED;
	evtimer_del(conn->timer);
	conn_direct_stop(conn);
	if (conn->bev != NULL) {
		bufferevent_free(conn->bev); /* frees the SSL too */
		conn->bev = NULL;
		conn->ssl = NULL;
	}
	if (conn->ssl != NULL) {
		SSL_free(conn->ssl);
		conn->ssl = NULL;
	}
	smtp_dest_detach(conn);
	event_active(conn->client->reap, EV_TIMEOUT, 1);
	if (conn->next != NULL) {
		/* riding behind a request that ended without rule 12 */
		struct smtp_req *next = conn->next;

		conn->next = NULL;
		smtp_next_rerun(next);
	}
}

/* Ends CONN's session: QUIT when POLITE and still in step, else close. */
void
smtp_conn_leave(struct smtp_conn *conn, bool polite)
{
	if (polite && conn->bev != NULL && !conn->dead) {
		conn->pipe_sent = false;
		smtp_conn_enter(conn, SMTP_PH_QUIT);
	} else {
		smtp_conn_close(conn);
	}
}

/* Takes CONN, idle, out of the cache and QUITs. */
static void
conn_idle_quit(struct smtp_conn *conn)
{
	smtp_cache_remove(conn);
	smtp_conn_enter(conn, SMTP_PH_QUIT);
}

/* ---- the handshake ---- */

/* Whether CONN's destination key is a domain routed by MX (not a
 * "[relay]:port" or a scoped relay key). */
static bool
conn_dest_is_domain(const struct smtp_conn *conn)
{
	const char *k = conn->req->req.dest_key;

	return k[0] != '\0' && strpbrk(k, "/[]: ") == NULL;
}

/* Starts the TLS handshake: after "220" to STARTTLS, or at once after
 * connect(2) with implicit TLS. */
static void
conn_tls_start(struct smtp_conn *conn)
{
	const struct smtp_addr *a = &conn->req->addrs[conn->req->addr_idx];
	bool dane = conn->tls_level == CFG_TLS_DANE;
	struct bufferevent *bev;
	char err[256];
	SSL *ssl;

	if (dane && a->ntlsa == 0) {
		/* dane-only without records: nothing could ever match */
		conn->policy_fail = true;
		snprintf(err, sizeof(err), "no secure TLSA record for %.200s",
		    conn->host);
		smtp_tls_setup_failed(conn, err);
		return;
	}
	/* DANE at a CNAME target: that is the base domain (SNI, a name),
	 * and the MX name a name too */
	ssl = smtp_tls_ssl_new(conn->client->tls, conn->cafile,
	    cfg_tls_client_cert(conn->req->req.scope),
	    dane && a->tlsa_base != NULL ? a->tlsa_base : conn->host,
	    dane ? a->tlsa : NULL, dane ? a->ntlsa : 0, err, sizeof(err));
	if (ssl != NULL && dane && a->tlsa_base != NULL)
		SSL_add1_host(ssl, conn->host);
	if (ssl != NULL && dane && conn_dest_is_domain(conn))
		/* DANE-TA: the next-hop domain is a name too (as Postfix) */
		SSL_add1_host(ssl, conn->req->req.dest_key);
	if (ssl == NULL) {
		smtp_tls_setup_failed(conn, err);
		return;
	}
	conn_direct_stop(conn); /* the filter reads and writes the socket */
	bev = bufferevent_openssl_filter_new(conn->client->base, conn->bev, ssl,
	    BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		SSL_free(ssl);
		smtp_tls_setup_failed(conn, NULL);
		return;
	}
	conn->bev = bev;
	conn->ssl = ssl;
	bufferevent_setcb(
	    bev, conn_read_cb, conn_write_cb, conn_event_cb, conn);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
	smtp_conn_enter(conn, SMTP_PH_TLS);
}

/* The TLS handshake succeeded: note what it gave, then EHLO again. */
static void
conn_tls_done(struct smtp_conn *conn)
{
	long vr = SSL_get_verify_result(conn->ssl);
	X509 *cert = SSL_get0_peer_certificate(conn->ssl);

	conn->tls_active = true;
	conn->tls_verified = cert != NULL && vr == X509_V_OK;
	conn->tls_dane[0] = '\0';
	if (conn->tls_level == CFG_TLS_DANE) {
		uint8_t u, sel, mt;

		conn->tls_verified = conn->tls_verified &&
		    SSL_get0_dane_authority(conn->ssl, NULL, NULL) >= 0 &&
		    SSL_get0_dane_tlsa(conn->ssl, &u, &sel, &mt, NULL, NULL) >=
			0;
		if (conn->tls_verified)
			snprintf(conn->tls_dane, sizeof(conn->tls_dane),
			    "%s %u %u %u", u == 3 ? "DANE-EE" : "DANE-TA",
			    (unsigned)u, (unsigned)sel, (unsigned)mt);
	}
	snprintf(conn->tls_proto, sizeof(conn->tls_proto), "%s",
	    SSL_get_version(conn->ssl));
	snprintf(conn->tls_cipher, sizeof(conn->tls_cipher), "%s",
	    SSL_get_cipher_name(conn->ssl));
	conn->tls_bits = SSL_get_cipher_bits(conn->ssl, NULL);
	if (smtp_tls_unpinned(conn, cert) ||
	    smtp_tls_unverified(conn, cert, vr))
		return;
	if (conn->req->addrs[conn->req->addr_idx].sts_testing &&
	    !conn->tls_verified)
		smtp_sts_testing_fail(conn, false, cert, vr);
	memset(&conn->ehlo, 0, sizeof(conn->ehlo));
	/* Implicit TLS comes before the greeting; STARTTLS after EHLO. */
	smtp_conn_enter(conn, conn->wrapper ? SMTP_PH_GREETING : SMTP_PH_EHLO);
}

/* The session is ready for mail: start the request's first transaction. */
void
smtp_conn_ready(struct smtp_conn *conn)
{
	smtp_conn_result(conn);
	conn->req->result.t_ready = rq_now_us();
	conn->req->session_seen = true;
	txn_begin(conn);
}

/* EHLO/HELO was accepted: STARTTLS, or refuse by policy, or AUTH, or
 * go on. */
static void
conn_after_ehlo(struct smtp_conn *conn)
{
	bool want = conn->tls_level != CFG_TLS_NONE && !conn->plain_only;

	if (!conn->tls_active && want && conn->ehlo.starttls) {
		smtp_conn_enter(conn, SMTP_PH_STARTTLS);
		return;
	}
	if (smtp_tls_missing(conn))
		return;
	if (!conn->tls_active && want && !conn->ehlo.starttls &&
	    conn->req->addrs[conn->req->addr_idx].sts_testing)
		smtp_sts_testing_fail(conn, true, NULL, 0);
	if (conn->req->req.auth != NULL && !conn->authed) {
		smtp_auth_start(conn);
		return;
	}
	smtp_conn_ready(conn);
}

/* ---- transactions ---- */

/* Picks the next transaction's recipients (at most max_recipients_per_
 * transaction of those without a result); false when none is left. */
static bool
txn_pick(struct smtp_req *req)
{
	size_t max, i;

	max = (size_t)cfg_int(req->req.scope, CFG_MAX_RCPTS_PER_TXN);
	if (max < 1)
		max = 1;
	req->ntxn = 0;
	for (i = 0; i < req->req.nrcpts && req->ntxn < max; i++)
		if (req->res[i].cls == 0)
			req->txn[req->ntxn++] = i;
	return req->ntxn > 0;
}

/* Counts and resets a new transaction of CONN's request. */
static void
txn_reset(struct smtp_conn *conn)
{
	struct smtp_req *req = conn->req;

	req->result.transactions++;
	req->rcpt_pos = 0;
	req->txn_accepted = 0;
	req->mail_failed = false;
	conn->dot_discard = false;
	conn->pipe_sent = false;
}

/*
 * Starts CONN's request's next transaction (RSET first on a cached
 * connection), or finishes the request when no recipient is left or the
 * server cannot take it.
 */
static void
txn_begin(struct smtp_conn *conn)
{
	struct smtp_req *req = conn->req;

	if (!txn_pick(req) || smtp_txn_refused(conn)) {
		smtp_conn_req_done(conn);
		return;
	}
	txn_reset(conn);
	conn->reuse_rset = conn->need_rset;
	conn->need_rset = false;
	if (!conn->reuse_rset)
		conn->in_txn = true;
	if (conn->ehlo.pipelining) {
		/* RFC 2920: RSET, MAIL, every RCPT and DATA in one write. */
		smtp_cmd_pipeline(conn, req, bufferevent_get_output(conn->bev),
		    conn->reuse_rset);
		conn->pipe_sent = true;
	}
	smtp_conn_enter(conn, conn->reuse_rset ? SMTP_PH_RSET : SMTP_PH_MAIL);
}

/*
 * The dot of CONN's last transaction is queued: a request that may ride
 * behind it (smtp_conn_next_take) has its MAIL FROM, RCPT TO and DATA
 * queued right after the dot, in the same write (RFC 2920 lets the
 * content start a group), unless the server cannot take it (rules 8, 9,
 * dealt with when its turn comes).
 */
static void
txn_next_send(struct smtp_conn *conn)
{
	struct smtp_req *next;

	if (conn->dot_discard || !smtp_conn_next_take(conn))
		return;
	next = conn->next;
	conn->next_sent = txn_pick(next) && smtp_txn_fits(conn, next);
	if (conn->next_sent)
		smtp_cmd_pipeline(
		    conn, next, bufferevent_get_output(conn->bev), false);
}

/*
 * The dot was answered: the request riding behind takes CONN over.  Its
 * commands went out with the dot: their replies are next (rule 12a until
 * MAIL FROM is answered); else its first transaction starts now, with
 * RSET as on any reused connection.
 */
static void
txn_next_begin(struct smtp_conn *conn)
{
	bool sent = conn->next_sent;
	struct smtp_req *req;

	conn->next_sent = false;
	smtp_conn_req_pass(conn);
	if (!sent) {
		conn->need_rset = true;
		smtp_conn_ready(conn);
		return;
	}
	req = conn->req;
	smtp_conn_result(conn);
	req->result.t_ready = rq_now_us();
	req->session_seen = true;
	txn_reset(conn);
	conn->reuse_rset = false;
	conn->in_txn = conn->chained = conn->pipe_sent = true;
	smtp_conn_enter(conn, SMTP_PH_MAIL);
}

/* The 354 came: send the body, a block at a time. */
static void
txn_body_start(struct smtp_conn *conn)
{
	conn->body_off = 0;
	conn->body_bol = true;
	conn->body_done = false;
	bufferevent_setwatermark(conn->bev, EV_WRITE, BODY_LOWAT, 0);
	smtp_conn_enter(conn, SMTP_PH_BODY);
}

/* ---- replies, one handler a phase (CLS: the reply's first digit) ---- */

/*
 * The greeting, EHLO and HELO: the next step of the handshake after a
 * 2xx, HELO after a 5xx to EHLO before TLS; else the session is refused.
 */
static void
reply_handshake(struct smtp_conn *conn, int cls, struct smtp_rcpt_result *why)
{
	enum smtp_phase ph = conn->phase;

	if (ph == SMTP_PH_HELO)
		memset(&conn->ehlo, 0, sizeof(conn->ehlo)); /* no extensions */
	if (cls == 2 && ph == SMTP_PH_GREETING)
		smtp_conn_enter(conn, SMTP_PH_EHLO);
	else if (cls == 2)
		conn_after_ehlo(conn);
	else if (ph == SMTP_PH_EHLO && cls == 5 && !conn->tls_active)
		smtp_conn_enter(conn, SMTP_PH_HELO);
	else
		smtp_session_refused(conn, why);
}

/* STARTTLS: the handshake, or plaintext if the policy allows. */
static void
reply_starttls(struct smtp_conn *conn, int cls, struct smtp_rcpt_result *why)
{
	if (cls == 2)
		conn_tls_start(conn);
	else if (smtp_starttls_refused(conn, why))
		smtp_conn_ready(conn);
}

/* MAIL FROM: the RCPTs, or RSET when refused and nothing is pipelined. */
static void
reply_mail(struct smtp_conn *conn, int cls, struct smtp_rcpt_result *why)
{
	conn->chained = false; /* the server has seen this transaction */
	if (cls != 2)
		smtp_sender_refused(conn->req, why);
	/* Pipelined RCPT replies are still due after a refusal. */
	if (cls == 2 || conn->pipe_sent) {
		conn->req->rcpt_pos = 0;
		smtp_conn_enter(conn, SMTP_PH_RCPT);
	} else {
		smtp_conn_enter(conn, SMTP_PH_RSET);
	}
}

/* RCPT TO: the next RCPT, then DATA (or RSET if nobody was accepted). */
static void
reply_rcpt(struct smtp_conn *conn, int cls, struct smtp_rcpt_result *why)
{
	struct smtp_req *req = conn->req;

	smtp_rcpt_replied(req, req->txn[req->rcpt_pos], cls, why);
	if (++req->rcpt_pos < req->ntxn)
		smtp_conn_enter(conn, SMTP_PH_RCPT);
	else if (!conn->pipe_sent && req->txn_accepted == 0)
		smtp_conn_enter(conn, SMTP_PH_RSET);
	else
		smtp_conn_enter(conn, SMTP_PH_DATA);
}

/* DATA: the body after a 354, unless nobody wants it. */
static void
reply_data(struct smtp_conn *conn, int cls, struct smtp_rcpt_result *why)
{
	struct smtp_req *req = conn->req;

	conn->pipe_sent = false;
	if (cls == 3 && (req->txn_accepted == 0 || req->mail_failed)) {
		/* A pipelined DATA nobody wanted: end it empty. */
		conn->dot_discard = true;
		evbuffer_add_printf(bufferevent_get_output(conn->bev), ".\r\n");
		smtp_conn_enter(conn, SMTP_PH_DOT);
	} else if (cls == 3) {
		txn_body_start(conn);
	} else {
		smtp_data_refused(req, cls, why);
		smtp_conn_enter(conn, SMTP_PH_RSET);
	}
}

/* The final dot: the next transaction (RSET after an empty one). */
static void
reply_dot(struct smtp_conn *conn, struct smtp_rcpt_result *why)
{
	if (conn->dot_discard) {
		smtp_conn_enter(conn, SMTP_PH_RSET);
		return;
	}
	smtp_dot_replied(conn->req, why);
	if (conn->next != NULL)
		txn_next_begin(conn);
	else
		txn_begin(conn);
}

/* RSET: MAIL FROM on a reused connection, else the next transaction. */
static void
reply_rset(struct smtp_conn *conn, int cls, struct smtp_rcpt_result *why)
{
	if (cls != 2) {
		smtp_session_refused(conn, why);
	} else if (conn->reuse_rset) {
		conn->reuse_rset = false;
		conn->in_txn = true;
		smtp_conn_enter(conn, SMTP_PH_MAIL);
	} else {
		txn_begin(conn);
	}
}

/* Handles the reply REPLY to CONN's phase. */
static void
conn_reply(struct smtp_conn *conn, const struct smtp_reply *reply)
{
	struct smtp_rcpt_result why;
	int cls = reply->code / 100;

	if (conn->req == NULL && conn->phase == SMTP_PH_GREETING && cls == 2 &&
	    !smtp_conn_adopt(conn)) {
		/* an orphan (smtp_conn.c): its request went elsewhere, and
		 * none is waiting for it */
		smtp_conn_enter(conn, SMTP_PH_QUIT);
		return;
	}
	if (conn->phase == SMTP_PH_QUIT || conn->req == NULL) {
		smtp_conn_close(conn);
		return;
	}
	smtp_why_reply(&why, conn, reply, conn->phase);
	if (smtp_reply_ends_session(conn, reply, &why))
		return;
	switch (conn->phase) {
	case SMTP_PH_GREETING:
	case SMTP_PH_EHLO:
	case SMTP_PH_HELO:
		reply_handshake(conn, cls, &why);
		break;
	case SMTP_PH_STARTTLS:
		reply_starttls(conn, cls, &why);
		break;
	case SMTP_PH_AUTH:
		smtp_auth_reply(conn, reply, &why);
		break;
	case SMTP_PH_MAIL:
		reply_mail(conn, cls, &why);
		break;
	case SMTP_PH_RCPT:
		reply_rcpt(conn, cls, &why);
		break;
	case SMTP_PH_DATA:
		reply_data(conn, cls, &why);
		break;
	case SMTP_PH_DOT:
		reply_dot(conn, &why);
		break;
	case SMTP_PH_RSET:
		reply_rset(conn, cls, &why);
		break;
	default:
		smtp_reply_unexpected(conn, reply);
		break;
	}
}

/* ---- bufferevent and timer callbacks ---- */

/*
 * Takes one complete reply for CONN off IN into *REPLY (noting EHLO's
 * capabilities); false when more bytes are needed or the reply failed
 * the session.
 */
static bool
conn_reply_take(
    struct smtp_conn *conn, struct evbuffer *in, struct smtp_reply *reply)
{
	size_t len = evbuffer_get_length(in), n, used;
	enum smtp_parse_result r;
	const char *p;

	n = len < REPLY_PEEK ? len : REPLY_PEEK;
	p = (const char *)evbuffer_pullup(in, (ssize_t)n);
	r = smtp_reply_parse(p, n, reply, &used);
	if (r == SMTP_PARSE_MORE)
		return false;
	if (r != SMTP_PARSE_OK) {
		smtp_reply_malformed(conn, r == SMTP_PARSE_BAD);
		return false;
	}
	if (conn->phase == SMTP_PH_EHLO && reply->code / 100 == 2)
		smtp_ehlo_parse(p, used, &conn->ehlo);
	if (conn->phase == SMTP_PH_STARTTLS && reply->code / 100 == 2 &&
	    len > used) {
		smtp_starttls_injected(conn);
		return false;
	}
	evbuffer_drain(in, used);
	return true;
}

/* Reads and handles every complete reply buffered for CONN. */
static void
conn_read_cb(struct bufferevent *bev, void *arg)
{
	struct smtp_conn *conn = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	while (!conn->dead && conn->bev == bev) {
		struct smtp_reply reply;

		if (evbuffer_get_length(in) == 0)
			return;
		if (conn->phase == SMTP_PH_IDLE) {
			smtp_conn_close(conn); /* e.g. 421 idle timeout */
			return;
		}
		if (!conn_reply_take(conn, in, &reply))
			return;
		/* The reply to the dot may beat the write callback that
		 * would have entered SMTP_PH_DOT. */
		if (conn->phase == SMTP_PH_BODY && conn->body_done)
			smtp_conn_enter(conn, SMTP_PH_DOT);
		conn_reply(conn, &reply);
	}
}

/* Queues more of the body when the output has drained enough; a direct
 * connection whose output is written goes back to writing at once. */
static void
conn_write_cb(struct bufferevent *bev, void *arg)
{
	struct smtp_conn *conn = arg;

	/* the event is no longer pending: disabling it costs no syscall */
	if (conn->direct &&
	    evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		bufferevent_disable(bev, EV_WRITE);
	if (conn->dead || conn->phase != SMTP_PH_BODY)
		return;
	if (!conn->body_done)
		smtp_conn_enter(conn, SMTP_PH_BODY);
	else if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		smtp_conn_enter(conn, SMTP_PH_DOT);
}

/* ---- plaintext socket I/O (see the top of this file) ---- */

/* Whether ERR is a socket error that only says "not now". */
static bool
conn_err_retriable(int err)
{
	return err == EAGAIN || err == EWOULDBLOCK || err == EINTR;
}

/*
 * Writes what CONN's output holds, in one writev(); what the socket does
 * not take is left to the bufferevent's write event.  Calls
 * conn_write_cb() as the bufferevent would, when the output is at or
 * below its low watermark after a write.
 */
static void
conn_out_write(struct smtp_conn *conn)
{
	struct bufferevent *bev = conn->bev;
	struct evbuffer *out = bufferevent_get_output(bev);
	size_t low = 0;
	int n, err;

	if (evbuffer_get_length(out) == 0)
		return;
	evbuffer_unfreeze(out, 1); /* the bufferevent keeps it frozen */
	n = evbuffer_write(out, bufferevent_getfd(bev));
	err = errno;
	evbuffer_freeze(out, 1);
	if (n < 0 && !conn_err_retriable(err)) {
		errno = err; /* conn_event_cb() reports it */
		conn_event_cb(bev, BEV_EVENT_ERROR | BEV_EVENT_WRITING, conn);
		return;
	}
	if (evbuffer_get_length(out) > 0)
		bufferevent_enable(bev, EV_WRITE); /* the rest when writable */
	if (n <= 0)
		return;
	bufferevent_getwatermark(bev, EV_WRITE, &low, NULL);
	if (evbuffer_get_length(out) <= low)
		conn_write_cb(bev, conn);
}

/* Writes CONN's output at the end of the loop turn that queued it. */
static void
conn_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_conn *conn = arg;

	(void)fd;
	(void)what;
	conn->flush_due = false;
	if (conn->dead || !conn->direct ||
	    (bufferevent_get_enabled(conn->bev) & EV_WRITE))
		return;
	conn_out_write(conn);
}

/* Bytes were queued in CONN's output: schedule conn_flush_cb(), unless
 * it is due already or the write event has the output. */
static void
conn_out_cb(
    struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct smtp_conn *conn = arg;

	(void)buf;
	if (info->n_added == 0 || conn->flush_due || !conn->direct ||
	    (bufferevent_get_enabled(conn->bev) & EV_WRITE))
		return;
	conn->flush_due = true;
	event_active(conn->flush, EV_TIMEOUT, 1);
}

/*
 * CONN's socket is readable: one read() into the input buffer, then the
 * replies it completes; end of file and errors go to conn_event_cb() as
 * the bufferevent would report them.
 */
static void
conn_sock_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_conn *conn = arg;
	struct bufferevent *bev = conn->bev;
	struct evbuffer *in;
	struct evbuffer_iovec v;
	ssize_t n;
	int err;

	(void)what;
	if (conn->dead || !conn->direct)
		return;
	in = bufferevent_get_input(bev);
	evbuffer_unfreeze(in, 0); /* the bufferevent keeps it frozen */
	if (evbuffer_reserve_space(in, READ_BLOCK, &v, 1) < 1)
		abort();
	n = read(fd, v.iov_base, READ_BLOCK);
	err = errno;
	if (n > 0) {
		v.iov_len = (size_t)n;
		evbuffer_commit_space(in, &v, 1);
	}
	evbuffer_freeze(in, 0);
	if (n > 0) {
		conn_read_cb(bev, conn);
		return;
	}
	if (n < 0 && conn_err_retriable(err))
		return;
	event_del(conn->rev);
	errno = err;
	conn_event_cb(bev,
	    BEV_EVENT_READING | (n == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR),
	    conn);
}

/* CONN, plaintext, connected: its socket I/O is done here from now on. */
static void
conn_direct_start(struct smtp_conn *conn)
{
	struct bufferevent *bev = conn->bev;
	struct event_base *base = conn->client->base;

	conn->rev = event_new(base, bufferevent_getfd(bev),
	    EV_READ | EV_PERSIST, conn_sock_read_cb, conn);
	conn->flush = event_new(base, -1, 0, conn_flush_cb, conn);
	conn->out_cb = evbuffer_add_cb(
	    bufferevent_get_output(bev), conn_out_cb, conn);
	if (conn->rev == NULL || conn->flush == NULL || conn->out_cb == NULL)
		abort();
	/* ours first, then the bufferevent's off: the poll set stays */
	event_add(conn->rev, NULL);
	bufferevent_disable(bev, EV_READ | EV_WRITE);
	conn->direct = true;
	if (evbuffer_get_length(bufferevent_get_output(bev)) > 0)
		conn_out_write(conn);
}

/* Ends CONN's direct I/O (TLS takes the socket, or CONN closes); its
 * events are freed by reap_cb(). */
static void
conn_direct_stop(struct smtp_conn *conn)
{
	if (!conn->direct)
		return;
	conn->direct = false;
	conn->flush_due = false;
	event_del(conn->rev);
	event_del(conn->flush);
	evbuffer_remove_cb_entry(
	    bufferevent_get_output(conn->bev), conn->out_cb);
	conn->out_cb = NULL;
}

/* connect(2) or the TLS handshake on BEV completed. */
static void
conn_connected(struct smtp_conn *conn, struct bufferevent *bev)
{
	if (conn->phase == SMTP_PH_CONNECT) {
		int one = 1;

		setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY,
		    &one, sizeof(one));
		if (conn->req == NULL && conn->wrapper) {
			smtp_conn_close(conn); /* an orphan: nothing to say */
		} else if (conn->wrapper) {
			conn_tls_start(conn); /* RFC 8314 implicit TLS */
		} else {
			conn_direct_start(conn);
			smtp_conn_enter(conn, SMTP_PH_GREETING);
		}
	} else if (conn->phase == SMTP_PH_TLS) {
		conn_tls_done(conn);
	}
}

/* Connection established, handshake done, EOF or error. */
static void
conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct smtp_conn *conn = arg;
	int err = EVUTIL_SOCKET_ERROR();

	if (conn->dead)
		return;
	if (what & BEV_EVENT_CONNECTED) {
		conn_connected(conn, bev);
		return;
	}
	if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
		return;
	if (conn->phase == SMTP_PH_IDLE || conn->phase == SMTP_PH_QUIT)
		smtp_conn_close(conn);
	else
		smtp_conn_lost(conn, bev, err);
}

/* A phase deadline passed. */
static void
conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_conn *conn = arg;

	if (conn->dead)
		return;
	if (conn->phase != SMTP_PH_IDLE) /* the cache time is no timeout */
		conn->client->timeouts[conn->phase]++;
	if (conn->phase == SMTP_PH_IDLE)
		conn_idle_quit(conn);
	else if (conn->phase == SMTP_PH_QUIT)
		smtp_conn_close(conn);
	else
		smtp_conn_timed_out(conn);
}

/* ---- the client ---- */

/* Frees dead connections and calls done() for finished requests. */
static void
reap_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_client *client = arg;
	struct smtp_conn *conn;
	struct smtp_req *req;

	while ((conn = TAILQ_FIRST(&client->dead)) != NULL) {
		TAILQ_REMOVE(&client->dead, conn, entry);
		if (conn->gone_key != NULL && client->close_cb != NULL)
			client->close_cb(client->close_arg, conn->gone_key);
		free(conn->gone_key);
		event_free(conn->timer);
		if (conn->rev != NULL)
			event_free(conn->rev);
		if (conn->flush != NULL)
			event_free(conn->flush);
		free(conn->cafile);
		free(conn->auth_id);
		free(conn->helo);
		free(conn);
	}
	while ((req = TAILQ_FIRST(&client->finished)) != NULL) {
		TAILQ_REMOVE(&client->finished, req, entry);
		req->req.done(req->req.arg, &req->result);
		smtp_req_free(req);
	}
	if (client->shutting_down && !client->sd_called && client->nconn == 0 &&
	    TAILQ_EMPTY(&client->finished)) {
		client->sd_called = true;
		if (client->sd_cb != NULL)
			client->sd_cb(client->sd_arg);
	}
}

/* Makes the client's event_base; see smtp.h. */
struct event_base *
smtp_event_base_new(void)
{
	return event_base_new();
}

/* The step of the coarse monotonic clock libevent's loop reads, in us
 * (at least 1 ms, at most 0.5 s; 10 ms when the kernel does not say). */
static long
coarse_step_us(void)
{
	struct timespec res;
	long us;

	if (clock_getres(CLOCK_MONOTONIC_COARSE, &res) != 0)
		return 10000;
	us = (long)res.tv_sec * 1000000 + (res.tv_nsec + 999) / 1000;
	return us < 1000 ? 1000 : us > 500000 ? 500000 : us;
}

struct smtp_client *
smtp_client_new(struct event_base *base, const char *helo_name)
{
	struct smtp_client *client = xcalloc(1, sizeof(*client));

	client->base = base;
	client->pad_us = coarse_step_us();
	client->helo = xstrdup(helo_name);
	client->tls = smtp_tls_new();
	TAILQ_INIT(&client->conns);
	TAILQ_INIT(&client->dead);
	TAILQ_INIT(&client->finished);
	client->reap = event_new(base, -1, 0, reap_cb, client);
	if (client->reap == NULL)
		abort();
	return client;
}

void
smtp_client_shutdown(struct smtp_client *client, bool abort_active,
    void (*done)(void *), void *arg)
{
	struct smtp_conn *conn, *next;

	client->shutting_down = true;
	client->sd_called = false;
	client->sd_cb = done;
	client->sd_arg = arg;
	if (abort_active)
		client->aborting = true;
	for (conn = TAILQ_FIRST(&client->conns); conn != NULL; conn = next) {
		next = TAILQ_NEXT(conn, entry);
		if (conn->phase == SMTP_PH_IDLE)
			conn_idle_quit(conn);
		else if (conn->req == NULL && conn->phase != SMTP_PH_QUIT)
			smtp_conn_close(conn); /* an orphan, not yet greeted */
		else if (abort_active && conn->req != NULL)
			smtp_conn_abort(conn);
	}
	event_active(client->reap, EV_TIMEOUT, 1);
}

void
smtp_client_free(struct smtp_client *client)
{
	struct smtp_conn *conn;

	if (client == NULL)
		return;
	client->shutting_down = client->aborting = true;
	client->sd_cb = NULL;
	while ((conn = TAILQ_FIRST(&client->conns)) != NULL) {
		if (conn->req != NULL)
			smtp_conn_abort(conn);
		else
			smtp_conn_close(conn);
	}
	reap_cb(-1, 0, client);
	smtp_kids_reap_all(client);
	smtp_dest_free_all(client);
	event_free(client->reap);
	smtp_tls_free(client->tls);
	free(client->helo);
	free(client);
}
