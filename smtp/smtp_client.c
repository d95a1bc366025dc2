/*
 * smtp_client.c - the asynchronous SMTP client: sessions, the connection
 * cache and the request life cycle.
 *
 * Public functions: smtp_event_base_new(), smtp_client_new(), smtp_submit(),
 * smtp_client_conn_count(), smtp_client_conn_idle(),
 * smtp_client_conn_total(), smtp_client_shutdown(), smtp_client_free().
 *
 * A connection (struct conn) is one bufferevent, one enum smtp_phase and
 * one deadline timer.  Every transition goes through conn_enter(), which
 * sets the phase, arms the timer with that phase's timeout and sends what
 * the phase sends; every reply goes through conn_reply(), which switches
 * on the phase.  The timer is armed once per phase (per command, per
 * body block), never by incoming bytes, so a trickling peer cannot
 * stretch a deadline.
 *
 * A request (struct job) is attached to at most one connection at a time.
 * Invariants: a recipient's result is written once (res[i].cls != 0 means
 * final); done() is only ever called from reap_cb(), never from inside a
 * bufferevent callback or smtp_submit(); a closed connection is unlinked
 * at once but freed only in reap_cb(), so no callback frees its own
 * session.
 */
#include <sys/queue.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "smtp_int.h"

#define DEST_BUCKETS 1024
#define BODY_BLOCK 65536 /* bytes queued per body block */
#define BODY_LOWAT 16384 /* queue the next block below this */
#define REPLY_PEEK (SMTP_LINE_MAX * SMTP_REPLY_LINES_MAX)
#define REUSE_RETRIES 3

struct conn;

/* Connections and cache of one destination key. */
struct dest {
	char *key;
	unsigned nconn, nidle;
	TAILQ_HEAD(, conn) idle;
	struct dest *next; /* hash chain */
};

/* One submitted request, with its own copies (see smtp.h). */
struct job {
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
	struct smtp_result result;
	TAILQ_ENTRY(job) entry; /* client->finished */
};

struct conn {
	struct smtp_client *client;
	struct dest *dest;
	struct bufferevent *bev;
	struct event *timer;
	SSL *ssl;
	enum smtp_phase phase;
	struct job *job;
	char host[256];
	char ip[48];
	uint16_t port;
	int tls_level; /* enum cfg_tls */
	char *cafile;
	bool plain_only; /* the tls=may plaintext retry */
	bool tls_active, tls_verified;
	char tls_proto[32], tls_cipher[96];
	int tls_bits;
	struct smtp_ehlo ehlo;
	unsigned deliveries;
	bool reused; /* taken from the cache for the current job */
	bool need_rset; /* taken from the cache: RSET first */
	bool reuse_rset; /* the outstanding RSET is that one */
	bool in_txn; /* a MAIL FROM went out on this connection */
	bool pipe_sent; /* MAIL..DATA of this transaction are written */
	bool dot_discard; /* the "." ends a transaction nobody wanted */
	bool body_done;
	bool policy_fail; /* a TLS requirement failed, not the host */
	bool dead;
	size_t body_off;
	bool body_bol;
	/* copies of the settings an idle connection still needs */
	int64_t t_quit, cache_time, max_deliveries;
	TAILQ_ENTRY(conn) entry; /* client->conns or client->dead */
	TAILQ_ENTRY(conn) idle_entry; /* dest->idle */
};

struct smtp_client {
	struct event_base *base;
	char *helo;
	struct smtp_tls *tls;
	struct dest *buckets[DEST_BUCKETS];
	unsigned nconn;
	TAILQ_HEAD(, conn) conns;
	TAILQ_HEAD(, conn) dead;
	TAILQ_HEAD(, job) finished;
	struct event *reap;
	bool shutting_down, aborting, sd_called;
	void (*sd_cb)(void *);
	void *sd_arg;
};

/* The timeout key of each phase. */
static const enum cfg_key phase_key[SMTP_NPHASE] = {
	[SMTP_PH_CONNECT] = CFG_T_CONNECT,
	[SMTP_PH_GREETING] = CFG_T_INITIAL,
	[SMTP_PH_EHLO] = CFG_T_HELO,
	[SMTP_PH_HELO] = CFG_T_HELO,
	[SMTP_PH_STARTTLS] = CFG_T_STARTTLS,
	[SMTP_PH_TLS] = CFG_T_STARTTLS,
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
	[SMTP_PH_CONNECT] = "timeout while connecting",
	[SMTP_PH_GREETING] = "timeout while receiving the initial greeting",
	[SMTP_PH_EHLO] = "timeout after EHLO",
	[SMTP_PH_HELO] = "timeout after HELO",
	[SMTP_PH_STARTTLS] = "timeout after STARTTLS",
	[SMTP_PH_TLS] = "timeout during the TLS handshake",
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
	[SMTP_PH_CONNECT] = "connecting",
	[SMTP_PH_GREETING] = "receiving the initial server greeting",
	[SMTP_PH_EHLO] = "performing the EHLO handshake",
	[SMTP_PH_HELO] = "performing the HELO handshake",
	[SMTP_PH_STARTTLS] = "sending STARTTLS",
	[SMTP_PH_TLS] = "performing the TLS handshake",
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

static void conn_enter(struct conn *, enum smtp_phase);
static void conn_read_cb(struct bufferevent *, void *);
static void conn_write_cb(struct bufferevent *, void *);
static void conn_event_cb(struct bufferevent *, short, void *);
static void
conn_fail(struct conn *, bool polite, const struct smtp_rcpt_result *why);
static void conn_timer_cb(evutil_socket_t, short, void *);
static void job_run(struct job *);
static void txn_begin(struct conn *);

/* ---- destinations ---- */

/* The bucket of KEY (FNV-1a). */
static unsigned
dest_hash(const char *key)
{
	uint32_t h = 2166136261u;

	for (; *key != '\0'; key++)
		h = (h ^ (unsigned char)*key) * 16777619u;
	return h % DEST_BUCKETS;
}

/* Finds the destination KEY; makes it when CREATE. */
static struct dest *
dest_get(struct smtp_client *client, const char *key, bool create)
{
	unsigned b = dest_hash(key);
	struct dest *d;

	for (d = client->buckets[b]; d != NULL; d = d->next)
		if (strcmp(d->key, key) == 0)
			return d;
	if (!create)
		return NULL;
	d = xcalloc(1, sizeof(*d));
	d->key = xstrdup(key);
	TAILQ_INIT(&d->idle);
	d->next = client->buckets[b];
	client->buckets[b] = d;
	return d;
}

/* Unlinks and frees D, which has no connection left. */
static void
dest_free(struct smtp_client *client, struct dest *d)
{
	struct dest **pp = &client->buckets[dest_hash(d->key)];

	while (*pp != d)
		pp = &(*pp)->next;
	*pp = d->next;
	free(d->key);
	free(d);
}

/* ---- results ---- */

/* Fills R as the reason text FMT, class CLS, status STATUS, in PHASE. */
static void __attribute__((format(printf, 5, 6)))
why_set(struct smtp_rcpt_result *r, int cls, const char *status,
    enum smtp_phase phase, const char *fmt, ...)
{
	va_list ap;
	char buf[SMTP_TEXT_MAX];

	memset(r, 0, sizeof(*r));
	r->cls = cls;
	snprintf(r->status, sizeof(r->status), "%s", status);
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	rq_sanitize(r->text, sizeof(r->text), buf, strlen(buf));
	r->phase = phase;
	r->phase_name = smtp_phase_name(phase);
}

/* Fills R from REPLY, the server's answer to PHASE. */
static void
why_reply(struct smtp_rcpt_result *r, const struct conn *conn,
    const struct smtp_reply *reply, enum smtp_phase phase)
{
	int cls = reply->code / 100;
	char st[16], buf[SMTP_REPLY_MAX + 32];

	if (cls != 2 && cls != 5)
		cls = 4;
	if (reply->status[0] != '\0')
		snprintf(st, sizeof(st), "%s", reply->status);
	else
		snprintf(st, sizeof(st), "%d.0.0", cls);
	snprintf(buf, sizeof(buf), "%d %s%s%s", reply->code, st,
	    reply->text[0] ? " " : "", reply->text);
	if (cls == 2)
		why_set(r, 2, st, phase, "%s", buf);
	else
		why_set(r, cls, st, phase,
		    "host %s[%s] said: %s (in reply to %s command)", conn->host,
		    conn->ip, buf, smtp_phase_name(phase));
	r->code = reply->code;
	rq_sanitize(r->reply, sizeof(r->reply), buf, strlen(buf));
}

/* Makes recipient I's result R unless it already has one. */
static void
rcpt_set(struct job *job, size_t i, const struct smtp_rcpt_result *r)
{
	if (job->res[i].cls == 0)
		job->res[i] = *r;
}

/* Gives every recipient without a result the result R. */
static void
rcpt_set_rest(struct job *job, const struct smtp_rcpt_result *r)
{
	size_t i;

	for (i = 0; i < job->req.nrcpts; i++)
		rcpt_set(job, i, r);
}

/* Queues JOB for its done() callback (called from reap_cb). */
static void
job_complete(struct job *job)
{
	struct smtp_client *client = job->client;

	job->result.nrcpts = job->req.nrcpts;
	job->result.rcpts = job->res;
	job->result.t_done = rq_now_us();
	if (job->result.t_ready == 0)
		job->result.t_ready = job->result.t_done;
	TAILQ_INSERT_TAIL(&client->finished, job, entry);
	event_active(client->reap, EV_TIMEOUT, 1);
}

/* Frees JOB and its copies. */
static void
job_free(struct job *job)
{
	size_t i;

	for (i = 0; i < job->req.naddrs; i++)
		free((char *)job->addrs[i].host);
	for (i = 0; i < job->req.nrcpts; i++) {
		free((char *)job->rcpts[i].addr);
		free((char *)job->rcpts[i].orcpt);
	}
	free(job->addrs);
	free(job->rcpts);
	free(job->res);
	free(job->accepted);
	free(job->txn);
	free((char *)job->req.dest_key);
	free((char *)job->req.sender);
	free((char *)job->req.envid);
	free(job);
}

/* ---- connections ---- */

/* Closes CONN now, without QUIT; it is freed later by reap_cb. */
static void
conn_close(struct conn *conn)
{
	struct smtp_client *client = conn->client;
	struct dest *d = conn->dest;

	if (conn->dead)
		return;
	conn->dead = true;
	if (conn->phase == SMTP_PH_IDLE) {
		TAILQ_REMOVE(&d->idle, conn, idle_entry);
		d->nidle--;
	}
	conn->phase = SMTP_PH_CLOSED;
	evtimer_del(conn->timer);
	if (conn->bev != NULL) {
		bufferevent_free(conn->bev); /* frees the SSL too */
		conn->bev = NULL;
		conn->ssl = NULL;
	}
	if (conn->ssl != NULL) {
		SSL_free(conn->ssl);
		conn->ssl = NULL;
	}
	TAILQ_REMOVE(&client->conns, conn, entry);
	TAILQ_INSERT_TAIL(&client->dead, conn, entry);
	client->nconn--;
	if (--d->nconn == 0)
		dest_free(client, d);
	conn->dest = NULL;
	event_active(client->reap, EV_TIMEOUT, 1);
}

/* The timeout of PHASE for CONN, in seconds. */
static int64_t
conn_timeout(const struct conn *conn, enum smtp_phase phase)
{
	const struct job *job = conn->job;

	if (phase == SMTP_PH_IDLE)
		return conn->cache_time;
	if (job == NULL || phase_key[phase] == 0)
		return conn->t_quit;
	return cfg_time(job->req.scope, phase_key[phase], job->req.cls,
	    job->req.first_attempt);
}

/* Copies the settings CONN keeps from its current job. */
static void
conn_settings(struct conn *conn)
{
	const struct smtp_request *req = &conn->job->req;

	conn->t_quit = cfg_time(
	    req->scope, CFG_T_QUIT, req->cls, req->first_attempt);
	conn->cache_time = cfg_time(
	    req->scope, CFG_CONN_CACHE_TIME, req->cls, false);
	conn->max_deliveries = cfg_int(req->scope, CFG_MAX_DELIVERIES_PER_CONN);
}

/* Copies CONN's relay and TLS facts into its job's result. */
static void
conn_result(struct conn *conn)
{
	struct smtp_result *res = &conn->job->result;

	snprintf(res->host, sizeof(res->host), "%s", conn->host);
	snprintf(res->ip, sizeof(res->ip), "%s", conn->ip);
	res->port = conn->port;
	res->reused = conn->reused;
	res->dsn_offered = conn->ehlo.dsn;
	snprintf(res->tls_proto, sizeof(res->tls_proto), "%s",
	    conn->tls_active ? conn->tls_proto : "");
	snprintf(res->tls_cipher, sizeof(res->tls_cipher), "%s",
	    conn->tls_active ? conn->tls_cipher : "");
	res->tls_bits = conn->tls_active ? conn->tls_bits : 0;
	res->tls_verified = conn->tls_active && conn->tls_verified;
}

/* Appends "xtext" (RFC 3461) of S to BUF. */
static void
xtext_add(struct evbuffer *buf, const char *s)
{
	for (; *s != '\0'; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch < 33 || ch > 126 || ch == '+' || ch == '=')
			evbuffer_add_printf(buf, "+%02X", ch);
		else
			evbuffer_add(buf, s, 1);
	}
}

/* Appends the MAIL FROM command of CONN's job to OUT. */
static void
cmd_mail(struct conn *conn, struct evbuffer *out)
{
	const struct job *job = conn->job;

	evbuffer_add_printf(out, "MAIL FROM:<%s>", job->req.sender);
	if (conn->ehlo.size)
		evbuffer_add_printf(out, " SIZE=%zu", job->req.msglen);
	if (conn->ehlo.eightbitmime && job->eight_bit)
		evbuffer_add_printf(out, " BODY=8BITMIME");
	if (job->utf8_addrs)
		evbuffer_add_printf(out, " SMTPUTF8");
	if (conn->ehlo.dsn) {
		if (job->req.ret == SMTP_RET_FULL)
			evbuffer_add_printf(out, " RET=FULL");
		else if (job->req.ret == SMTP_RET_HDRS)
			evbuffer_add_printf(out, " RET=HDRS");
		if (job->req.envid != NULL) {
			evbuffer_add_printf(out, " ENVID=");
			xtext_add(out, job->req.envid);
		}
	}
	evbuffer_add(out, "\r\n", 2);
}

/* Appends the RCPT TO command for recipient I to OUT. */
static void
cmd_rcpt(struct conn *conn, struct evbuffer *out, size_t i)
{
	const struct smtp_rcpt *r = &conn->job->rcpts[i];

	evbuffer_add_printf(out, "RCPT TO:<%s>", r->addr);
	if (conn->ehlo.dsn && r->notify != 0) {
		if (r->notify & SMTP_NOTIFY_NEVER) {
			evbuffer_add_printf(out, " NOTIFY=NEVER");
		} else {
			const char *sep = " NOTIFY=";

			if (r->notify & SMTP_NOTIFY_SUCCESS) {
				evbuffer_add_printf(out, "%sSUCCESS", sep);
				sep = ",";
			}
			if (r->notify & SMTP_NOTIFY_FAILURE) {
				evbuffer_add_printf(out, "%sFAILURE", sep);
				sep = ",";
			}
			if (r->notify & SMTP_NOTIFY_DELAY)
				evbuffer_add_printf(out, "%sDELAY", sep);
		}
	}
	if (conn->ehlo.dsn && r->orcpt != NULL) {
		const char *semi = strchr(r->orcpt, ';');

		if (semi != NULL) {
			evbuffer_add_printf(out, " ORCPT=%.*s;",
			    (int)(semi - r->orcpt), r->orcpt);
			xtext_add(out, semi + 1);
		}
	}
	evbuffer_add(out, "\r\n", 2);
}

/* Queues the next block of the message body (with the final dot). */
static void
conn_body_fill(struct conn *conn)
{
	const struct job *job = conn->job;
	struct evbuffer *out = bufferevent_get_output(conn->bev);
	struct evbuffer_iovec v;
	size_t n;

	if (evbuffer_reserve_space(out, BODY_BLOCK, &v, 1) < 1)
		abort();
	n = smtp_body_encode(job->req.msg, job->req.msglen, &conn->body_off,
	    &conn->body_bol, v.iov_base, BODY_BLOCK);
	v.iov_len = n;
	evbuffer_commit_space(out, &v, 1);
	if (conn->body_off > job->req.msglen) {
		conn->body_done = true;
		bufferevent_setwatermark(conn->bev, EV_WRITE, 0, 0);
	}
}

/* Sets CONN's phase, arms its deadline and sends what PHASE sends. */
static void
conn_enter(struct conn *conn, enum smtp_phase phase)
{
	struct evbuffer *out = bufferevent_get_output(conn->bev);
	struct timeval tv = { 0, 0 };

	conn->phase = phase;
	/* The loop's cached time may be stale: never arm a deadline early. */
	event_base_update_cache_time(conn->client->base);
	tv.tv_sec = (time_t)conn_timeout(conn, phase);
	evtimer_add(conn->timer, &tv);
	switch (phase) {
	case SMTP_PH_EHLO:
		evbuffer_add_printf(out, "EHLO %s\r\n", conn->client->helo);
		break;
	case SMTP_PH_HELO:
		evbuffer_add_printf(out, "HELO %s\r\n", conn->client->helo);
		break;
	case SMTP_PH_STARTTLS:
		evbuffer_add_printf(out, "STARTTLS\r\n");
		break;
	case SMTP_PH_MAIL:
		if (!conn->pipe_sent)
			cmd_mail(conn, out);
		break;
	case SMTP_PH_RCPT:
		if (!conn->pipe_sent)
			cmd_rcpt(
			    conn, out, conn->job->txn[conn->job->rcpt_pos]);
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

/* Whether connect(2) failed for want of something of this host's. */
static bool
errno_local(int err)
{
	return err == EMFILE || err == ENFILE || err == ENOBUFS ||
	    err == ENOMEM || err == EADDRNOTAVAIL || err == EAGAIN;
}

/* Makes a connection for JOB to addrs[job->addr_idx]. */
static void
conn_open(struct job *job)
{
	struct smtp_client *client = job->client;
	const struct smtp_addr *a = &job->addrs[job->addr_idx];
	struct conn *conn;
	struct smtp_rcpt_result why;
	int fd, err = 0;

	conn = xcalloc(1, sizeof(*conn));
	conn->client = client;
	conn->dest = dest_get(client, job->req.dest_key, true);
	conn->dest->nconn++;
	client->nconn++;
	TAILQ_INSERT_TAIL(&client->conns, conn, entry);
	conn->job = job;
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
	conn->tls_level = (int)cfg_int(job->req.scope, CFG_TLS);
	conn->cafile = xstrdup(cfg_str(job->req.scope, CFG_TLS_CA_FILE));
	conn->plain_only = job->plain_retry;
	job->plain_retry = false;
	conn_settings(conn);
	conn_result(conn);
	conn->timer = evtimer_new(client->base, conn_timer_cb, conn);
	if (conn->timer == NULL)
		abort();
	if ((fd = conn_socket(a->sa.ss_family, &err)) < 0)
		goto local;
	conn->bev = bufferevent_socket_new(
	    client->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (conn->bev == NULL)
		abort();
	bufferevent_setcb(
	    conn->bev, conn_read_cb, conn_write_cb, conn_event_cb, conn);
	bufferevent_enable(conn->bev, EV_READ | EV_WRITE);
	conn_enter(conn, SMTP_PH_CONNECT);
	if (bufferevent_socket_connect(conn->bev,
		(const struct sockaddr *)&a->sa, (int)a->salen) < 0) {
		err = errno;
		if (errno_local(err))
			goto local;
		why_set(&why, 4, "4.4.1", SMTP_PH_CONNECT,
		    "connect to %s[%s]:%u: %s", conn->host, conn->ip,
		    conn->port, strerror(err));
		conn_fail(conn, false, &why);
	}
	return;
local:
	/* This host's shortage, not the destination's: no other address,
	 * no host status, and the recipients left are not charged. */
	why_set(&why, 4, "4.3.0", SMTP_PH_CONNECT,
	    "local resource shortage: cannot connect to %s[%s]:%u: %s",
	    conn->host, conn->ip, conn->port, strerror(err));
	why.local = true;
	conn->job = NULL;
	conn_close(conn);
	rcpt_set_rest(job, &why);
	job_complete(job);
}

/* Moves JOB to its next address after a pre-session failure. */
static void
job_next_addr(struct job *job)
{
	if (job->client->aborting) {
		why_set(&job->last, 4, "4.3.2", SMTP_PH_NONE,
		    "delivery aborted: the client is shutting down");
		job->last_policy = true;
	} else if (job->plain_retry) {
		conn_open(job);
		return;
	} else if (++job->addr_idx < job->req.naddrs) {
		conn_open(job);
		return;
	}
	job->result.host_down = !job->last_policy && !job->session_seen;
	rcpt_set_rest(job, &job->last);
	job_complete(job);
}

/* Finishes CONN's job; the connection goes to the cache or QUITs. */
static void
conn_job_done(struct conn *conn)
{
	struct job *job = conn->job;
	struct dest *d = conn->dest;

	conn->job = NULL;
	conn->deliveries++;
	job_complete(job);
	if (conn->client->shutting_down || conn->cache_time <= 0 ||
	    (conn->max_deliveries > 0 &&
		conn->deliveries >= (uint64_t)conn->max_deliveries)) {
		conn_enter(conn, SMTP_PH_QUIT);
		return;
	}
	conn->reused = conn->need_rset = conn->in_txn = false;
	TAILQ_INSERT_HEAD(&d->idle, conn, idle_entry);
	d->nidle++;
	conn_enter(conn, SMTP_PH_IDLE);
}

/*
 * Ends CONN's part in its job after a failure WHY: a cached connection
 * that failed before the transaction re-runs the job on a fresh one; a
 * failure before any MAIL FROM moves to the next address; later, every
 * recipient without a result gets WHY.  POLITE: the session is still in
 * step, so QUIT rather than just close.
 */
static void
conn_fail(struct conn *conn, bool polite, const struct smtp_rcpt_result *why)
{
	struct job *job = conn->job;
	bool reuse = conn->reuse_rset, in_txn = conn->in_txn;
	enum smtp_phase ph = conn->phase;
	size_t i;

	conn->job = NULL;
	if (polite && conn->bev != NULL && !conn->dead) {
		conn->pipe_sent = false;
		conn_enter(conn, SMTP_PH_QUIT);
	} else {
		conn_close(conn);
	}
	if (job == NULL)
		return;
	/* The transaction in progress is void: it may be redone. */
	for (i = 0; i < job->ntxn; i++)
		job->accepted[job->txn[i]] = false;
	job->ntxn = job->txn_accepted = 0;
	job->mail_failed = false;
	if (reuse && !job->client->aborting) {
		job->result.transactions--;
		if (++job->reuse_retries >= REUSE_RETRIES)
			job->no_reuse = true;
		job_run(job);
		return;
	}
	/* Before MAIL FROM, or lost/timed out/421 before the message
	 * content went out: the recipients left try the next address
	 * (as Postfix does with a soft error on a non-final server). */
	if (!in_txn || ph == SMTP_PH_MAIL || ph == SMTP_PH_RCPT ||
	    ph == SMTP_PH_DATA || ph == SMTP_PH_RSET) {
		job->last = *why;
		job->last_policy = conn->policy_fail;
		job_next_addr(job);
		return;
	}
	rcpt_set_rest(job, why);
	job_complete(job);
}

/* Fails CONN with a timeout/loss/protocol text for its phase. */
static void __attribute__((format(printf, 4, 5))) conn_fail_text(
    struct conn *conn, bool polite, const char *status, const char *fmt, ...)
{
	struct smtp_rcpt_result why;
	char buf[SMTP_TEXT_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	why_set(&why, 4, status, conn->phase, "%s", buf);
	conn_fail(conn, polite, &why);
}

/* Starts the TLS handshake after "220" to STARTTLS. */
static void
conn_tls_start(struct conn *conn)
{
	struct bufferevent *bev;
	char err[256];
	SSL *ssl;

	ssl = smtp_tls_ssl_new(
	    conn->client->tls, conn->cafile, conn->host, err, sizeof(err));
	if (ssl == NULL) {
		conn_fail_text(conn, false, "4.7.5", "TLS setup for %s[%s]: %s",
		    conn->host, conn->ip, err);
		return;
	}
	bev = bufferevent_openssl_filter_new(conn->client->base, conn->bev, ssl,
	    BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		SSL_free(ssl);
		conn_fail_text(conn, false, "4.7.5", "TLS setup for %s[%s]",
		    conn->host, conn->ip);
		return;
	}
	conn->bev = bev;
	conn->ssl = ssl;
	bufferevent_setcb(
	    bev, conn_read_cb, conn_write_cb, conn_event_cb, conn);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
	conn_enter(conn, SMTP_PH_TLS);
}

/* The TLS handshake succeeded: check the level, then EHLO again. */
static void
conn_tls_done(struct conn *conn)
{
	long vr = SSL_get_verify_result(conn->ssl);
	X509 *cert = SSL_get0_peer_certificate(conn->ssl);

	conn->tls_active = true;
	conn->tls_verified = cert != NULL && vr == X509_V_OK;
	snprintf(conn->tls_proto, sizeof(conn->tls_proto), "%s",
	    SSL_get_version(conn->ssl));
	snprintf(conn->tls_cipher, sizeof(conn->tls_cipher), "%s",
	    SSL_get_cipher_name(conn->ssl));
	conn->tls_bits = SSL_get_cipher_bits(conn->ssl, NULL);
	if (conn->tls_level == CFG_TLS_VERIFY && !conn->tls_verified) {
		conn->policy_fail = true;
		conn_fail_text(conn, true, "4.7.5",
		    "Server certificate not verified: %s[%s]: %s", conn->host,
		    conn->ip,
		    cert == NULL ? "no certificate"
				 : X509_verify_cert_error_string(vr));
		return;
	}
	memset(&conn->ehlo, 0, sizeof(conn->ehlo));
	conn_enter(conn, SMTP_PH_EHLO);
}

/* The session is ready for mail: start the job's first transaction. */
static void
conn_ready(struct conn *conn)
{
	conn_result(conn);
	conn->job->result.t_ready = rq_now_us();
	conn->job->session_seen = true;
	txn_begin(conn);
}

/* EHLO/HELO was accepted: STARTTLS, or refuse by policy, or go on. */
static void
conn_after_ehlo(struct conn *conn)
{
	bool want = conn->tls_level != CFG_TLS_NONE && !conn->plain_only;

	if (!conn->tls_active && want && conn->ehlo.starttls) {
		conn_enter(conn, SMTP_PH_STARTTLS);
		return;
	}
	if (!conn->tls_active && conn->tls_level >= CFG_TLS_ENCRYPT) {
		conn->policy_fail = true;
		conn_fail_text(conn, true, "4.7.4",
		    "TLS is required, but was not offered by host %s[%s]",
		    conn->host, conn->ip);
		return;
	}
	conn_ready(conn);
}

/*
 * Starts CONN's job's next transaction (RSET first on a cached
 * connection), or finishes the job when no recipient is left.
 */
static void
txn_begin(struct conn *conn)
{
	struct job *job = conn->job;
	struct evbuffer *out;
	size_t max, i;

	max = (size_t)cfg_int(job->req.scope, CFG_MAX_RCPTS_PER_TXN);
	if (max < 1)
		max = 1;
	job->ntxn = 0;
	for (i = 0; i < job->req.nrcpts && job->ntxn < max; i++)
		if (job->res[i].cls == 0)
			job->txn[job->ntxn++] = i;
	if (job->ntxn == 0) {
		conn_job_done(conn);
		return;
	}
	if (conn->ehlo.size && conn->ehlo.size_max > 0 &&
	    job->req.msglen > conn->ehlo.size_max) {
		struct smtp_rcpt_result why;

		why_set(&why, 5, "5.3.4", SMTP_PH_MAIL,
		    "message size %zu exceeds size limit %llu of server "
		    "%s[%s]",
		    job->req.msglen, (unsigned long long)conn->ehlo.size_max,
		    conn->host, conn->ip);
		rcpt_set_rest(job, &why);
		conn_job_done(conn);
		return;
	}
	if (job->utf8_addrs && !conn->ehlo.smtputf8) {
		struct smtp_rcpt_result why;

		why_set(&why, 5, "5.6.7", SMTP_PH_MAIL,
		    "SMTPUTF8 is required, but was not offered by host %s[%s]",
		    conn->host, conn->ip);
		rcpt_set_rest(job, &why);
		conn_job_done(conn);
		return;
	}
	job->result.transactions++;
	job->rcpt_pos = 0;
	job->txn_accepted = 0;
	job->mail_failed = false;
	conn->dot_discard = false;
	conn->pipe_sent = false;
	conn->reuse_rset = conn->need_rset;
	conn->need_rset = false;
	if (!conn->reuse_rset)
		conn->in_txn = true;
	if (conn->ehlo.pipelining) {
		/* RFC 2920: RSET, MAIL, every RCPT and DATA in one write. */
		out = bufferevent_get_output(conn->bev);
		if (conn->reuse_rset)
			evbuffer_add_printf(out, "RSET\r\n");
		cmd_mail(conn, out);
		for (i = 0; i < job->ntxn; i++)
			cmd_rcpt(conn, out, job->txn[i]);
		evbuffer_add_printf(out, "DATA\r\n");
		conn->pipe_sent = true;
	}
	conn_enter(conn, conn->reuse_rset ? SMTP_PH_RSET : SMTP_PH_MAIL);
}

/* Gives the accepted recipients of the transaction the result WHY. */
static void
txn_set_accepted(struct job *job, const struct smtp_rcpt_result *why)
{
	size_t i;

	for (i = 0; i < job->ntxn; i++)
		if (job->accepted[job->txn[i]])
			rcpt_set(job, job->txn[i], why);
}

/* Handles the reply REPLY to CONN's phase. */
static void
conn_reply(struct conn *conn, const struct smtp_reply *reply)
{
	struct job *job = conn->job;
	struct smtp_rcpt_result why;
	enum smtp_phase ph = conn->phase;
	int cls = reply->code / 100;
	size_t i;

	if (ph == SMTP_PH_QUIT) {
		conn_close(conn);
		return;
	}
	if (job == NULL) {
		conn_close(conn);
		return;
	}
	why_reply(&why, conn, reply, ph);
	if (reply->code == 421 || (cls == 3 && ph != SMTP_PH_DATA)) {
		why.cls = 4;
		conn_fail(conn, false, &why);
		return;
	}
	switch (ph) {
	case SMTP_PH_GREETING:
		if (cls == 2)
			conn_enter(conn, SMTP_PH_EHLO);
		else
			conn_fail(conn, true, (why.cls = 4, &why));
		break;
	case SMTP_PH_EHLO:
		if (cls == 2)
			conn_after_ehlo(conn);
		else if (cls == 5 && !conn->tls_active)
			conn_enter(conn, SMTP_PH_HELO);
		else
			conn_fail(conn, true, (why.cls = 4, &why));
		break;
	case SMTP_PH_HELO:
		memset(&conn->ehlo, 0, sizeof(conn->ehlo));
		if (cls == 2)
			conn_after_ehlo(conn);
		else
			conn_fail(conn, true, (why.cls = 4, &why));
		break;
	case SMTP_PH_STARTTLS:
		if (cls == 2)
			conn_tls_start(conn);
		else if (conn->tls_level == CFG_TLS_MAY)
			conn_ready(conn);
		else
			conn_fail(conn, true,
			    (conn->policy_fail = true, why.cls = 4, &why));
		break;
	case SMTP_PH_MAIL:
		if (cls == 2) {
			job->rcpt_pos = 0;
			conn_enter(conn, SMTP_PH_RCPT);
			break;
		}
		/* The sender is refused: so is every recipient left. */
		rcpt_set_rest(job, &why);
		job->mail_failed = true;
		if (conn->pipe_sent) {
			job->rcpt_pos = 0;
			conn_enter(conn, SMTP_PH_RCPT);
		} else {
			conn_enter(conn, SMTP_PH_RSET);
		}
		break;
	case SMTP_PH_RCPT:
		i = job->txn[job->rcpt_pos];
		if (job->res[i].cls == 0) {
			if (cls == 2) {
				job->accepted[i] = true;
				job->txn_accepted++;
			} else {
				rcpt_set(job, i, &why);
			}
		}
		if (++job->rcpt_pos < job->ntxn)
			conn_enter(conn, SMTP_PH_RCPT);
		else if (!conn->pipe_sent && job->txn_accepted == 0)
			conn_enter(conn, SMTP_PH_RSET);
		else
			conn_enter(conn, SMTP_PH_DATA);
		break;
	case SMTP_PH_DATA:
		conn->pipe_sent = false;
		if (cls == 3 && (job->txn_accepted == 0 || job->mail_failed)) {
			/* A pipelined DATA nobody wanted: end it empty. */
			conn->dot_discard = true;
			evbuffer_add_printf(
			    bufferevent_get_output(conn->bev), ".\r\n");
			conn_enter(conn, SMTP_PH_DOT);
		} else if (cls == 3) {
			conn->body_off = 0;
			conn->body_bol = true;
			conn->body_done = false;
			bufferevent_setwatermark(
			    conn->bev, EV_WRITE, BODY_LOWAT, 0);
			conn_enter(conn, SMTP_PH_BODY);
		} else {
			if (cls == 2)
				why.cls = 4;
			txn_set_accepted(job, &why);
			conn_enter(conn, SMTP_PH_RSET);
		}
		break;
	case SMTP_PH_DOT:
		if (conn->dot_discard) {
			conn_enter(conn, SMTP_PH_RSET);
			break;
		}
		txn_set_accepted(job, &why);
		txn_begin(conn);
		break;
	case SMTP_PH_RSET:
		if (cls != 2) {
			conn_fail(conn, true, (why.cls = 4, &why));
		} else if (conn->reuse_rset) {
			conn->reuse_rset = false;
			conn->in_txn = true;
			conn_enter(conn, SMTP_PH_MAIL);
		} else {
			txn_begin(conn);
		}
		break;
	default:
		conn_fail_text(conn, false, "4.5.0",
		    "host %s[%s] sent an unexpected reply while %s: %d %s",
		    conn->host, conn->ip,
		    phase_while[ph] ? phase_while[ph] : "idle", reply->code,
		    reply->text);
		break;
	}
}

/* Reads and handles every complete reply buffered for CONN. */
static void
conn_read_cb(struct bufferevent *bev, void *arg)
{
	struct conn *conn = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	while (!conn->dead && conn->bev == bev) {
		size_t len = evbuffer_get_length(in), n, used;
		struct smtp_reply reply;
		enum smtp_parse_result r;
		const char *p;

		if (len == 0)
			return;
		if (conn->phase == SMTP_PH_IDLE) {
			conn_close(conn); /* e.g. 421 idle timeout */
			return;
		}
		n = len < REPLY_PEEK ? len : REPLY_PEEK;
		p = (const char *)evbuffer_pullup(in, (ssize_t)n);
		r = smtp_reply_parse(p, n, &reply, &used);
		if (r == SMTP_PARSE_MORE)
			return;
		if (r != SMTP_PARSE_OK) {
			log_warn("smtp", "%s[%s]: %s reply while %s",
			    conn->host, conn->ip,
			    r == SMTP_PARSE_BAD ? "malformed" : "overlong",
			    phase_while[conn->phase] ? phase_while[conn->phase]
						     : "idle");
			conn_fail_text(conn, false, "4.5.0",
			    "host %s[%s] sent a %s reply (in reply to %s "
			    "command)",
			    conn->host, conn->ip,
			    r == SMTP_PARSE_BAD ? "malformed" : "overlong",
			    smtp_phase_name(conn->phase));
			return;
		}
		if (conn->phase == SMTP_PH_EHLO && reply.code / 100 == 2)
			smtp_ehlo_parse(p, used, &conn->ehlo);
		if (conn->phase == SMTP_PH_STARTTLS && reply.code / 100 == 2 &&
		    len > used) {
			log_warn("smtp",
			    "%s[%s]: data after the STARTTLS reply: possible "
			    "command injection",
			    conn->host, conn->ip);
			conn->policy_fail = true;
			conn_fail_text(conn, false, "4.7.0",
			    "host %s[%s] sent data after its reply to "
			    "STARTTLS (possible command injection)",
			    conn->host, conn->ip);
			return;
		}
		evbuffer_drain(in, used);
		/* The reply to the dot may beat the write callback that
		 * would have entered SMTP_PH_DOT. */
		if (conn->phase == SMTP_PH_BODY && conn->body_done)
			conn_enter(conn, SMTP_PH_DOT);
		conn_reply(conn, &reply);
	}
}

/* Queues more of the body when the output has drained enough. */
static void
conn_write_cb(struct bufferevent *bev, void *arg)
{
	struct conn *conn = arg;

	if (conn->dead || conn->phase != SMTP_PH_BODY)
		return;
	if (!conn->body_done)
		conn_enter(conn, SMTP_PH_BODY);
	else if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		conn_enter(conn, SMTP_PH_DOT);
}

/* Connection established, handshake done, EOF or error. */
static void
conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct conn *conn = arg;
	int err = EVUTIL_SOCKET_ERROR();

	if (conn->dead)
		return;
	if (what & BEV_EVENT_CONNECTED) {
		if (conn->phase == SMTP_PH_CONNECT) {
			int one = 1;

			setsockopt(bufferevent_getfd(bev), IPPROTO_TCP,
			    TCP_NODELAY, &one, sizeof(one));
			conn_enter(conn, SMTP_PH_GREETING);
		} else if (conn->phase == SMTP_PH_TLS) {
			conn_tls_done(conn);
		}
		return;
	}
	if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
		return;
	switch (conn->phase) {
	case SMTP_PH_CONNECT:
		conn_fail_text(conn, false, "4.4.1", "connect to %s[%s]:%u: %s",
		    conn->host, conn->ip, conn->port,
		    err ? strerror(err) : "Connection failed");
		break;
	case SMTP_PH_TLS: {
		char buf[256];

		smtp_tls_error(
		    buf, sizeof(buf), bufferevent_get_openssl_error(bev));
		if (conn->tls_level == CFG_TLS_MAY && conn->job != NULL)
			conn->job->plain_retry = true;
		conn->policy_fail = true;
		conn_fail_text(conn, false, "4.7.5",
		    "TLS handshake with %s[%s] failed: %s", conn->host,
		    conn->ip, buf);
		break;
	}
	case SMTP_PH_IDLE:
	case SMTP_PH_QUIT:
		conn_close(conn);
		break;
	default:
		conn_fail_text(conn, false, "4.4.2",
		    "lost connection with %s[%s] while %s", conn->host,
		    conn->ip,
		    phase_while[conn->phase] ? phase_while[conn->phase]
					     : "idle");
		break;
	}
}

/* A phase deadline passed. */
static void
conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *conn = arg;

	if (conn->dead)
		return;
	switch (conn->phase) {
	case SMTP_PH_IDLE:
		TAILQ_REMOVE(&conn->dest->idle, conn, idle_entry);
		conn->dest->nidle--;
		conn_enter(conn, SMTP_PH_QUIT);
		break;
	case SMTP_PH_QUIT:
		conn_close(conn);
		break;
	case SMTP_PH_CONNECT:
		conn_fail_text(conn, false, "4.4.1",
		    "connect to %s[%s]:%u: Connection timed out (%s)",
		    conn->host, conn->ip, conn->port,
		    phase_timeout[conn->phase]);
		break;
	default:
		if (conn->phase == SMTP_PH_TLS) {
			conn->policy_fail = true;
			if (conn->tls_level == CFG_TLS_MAY && conn->job != NULL)
				conn->job->plain_retry = true;
		}
		conn_fail_text(conn, false, "4.4.2",
		    "conversation with %s[%s] timed out: %s", conn->host,
		    conn->ip,
		    phase_timeout[conn->phase] ? phase_timeout[conn->phase]
					       : "timeout");
		break;
	}
}

/* ---- the client ---- */

/* Frees dead connections and calls done() for finished jobs. */
static void
reap_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_client *client = arg;
	struct conn *conn;
	struct job *job;

	while ((conn = TAILQ_FIRST(&client->dead)) != NULL) {
		TAILQ_REMOVE(&client->dead, conn, entry);
		event_free(conn->timer);
		free(conn->cafile);
		free(conn);
	}
	while ((job = TAILQ_FIRST(&client->finished)) != NULL) {
		TAILQ_REMOVE(&client->finished, job, entry);
		job->req.done(job->req.arg, &job->result);
		job_free(job);
	}
	if (client->shutting_down && !client->sd_called && client->nconn == 0 &&
	    TAILQ_EMPTY(&client->finished)) {
		client->sd_called = true;
		if (client->sd_cb != NULL)
			client->sd_cb(client->sd_arg);
	}
}

/* Makes an event_base with a precise timer; see smtp.h. */
struct event_base *
smtp_event_base_new(void)
{
	struct event_config *ec = event_config_new();
	struct event_base *base;

	if (ec == NULL)
		return NULL;
	event_config_set_flag(ec, EVENT_BASE_FLAG_PRECISE_TIMER);
	base = event_base_new_with_config(ec);
	event_config_free(ec);
	return base;
}

struct smtp_client *
smtp_client_new(struct event_base *base, const char *helo_name)
{
	struct smtp_client *client = xcalloc(1, sizeof(*client));

	client->base = base;
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

/* Starts (or restarts) JOB: on an idle cached connection if any. */
static void
job_run(struct job *job)
{
	struct smtp_client *client = job->client;
	struct dest *d = dest_get(client, job->req.dest_key, false);
	struct conn *conn;

	if (client->aborting) {
		job_next_addr(job);
		return;
	}
	if (d != NULL && !job->no_reuse && (conn = TAILQ_FIRST(&d->idle))) {
		TAILQ_REMOVE(&d->idle, conn, idle_entry);
		d->nidle--;
		conn->phase = SMTP_PH_NONE; /* off the idle list */
		conn->job = job;
		conn->reused = true;
		conn->need_rset = true;
		conn_settings(conn);
		conn_result(conn);
		job->result.t_ready = rq_now_us();
		job->session_seen = true;
		txn_begin(conn);
		return;
	}
	job->addr_idx = 0;
	conn_open(job);
}

/* Whether S is safe inside <...> on a command line. */
static bool
addr_ok(const char *s)
{
	if (s == NULL)
		return false;
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || *s == '<' || *s == '>' ||
		    *s == 0x7f)
			return false;
	return true;
}

enum smtp_submit_result
smtp_submit(struct smtp_client *client, const struct smtp_request *req)
{
	struct job *job;
	size_t i;

	if (client->shutting_down)
		return SMTP_SUBMIT_SHUTDOWN;
	if (req->naddrs == 0 || req->nrcpts == 0 || req->addrs == NULL ||
	    req->rcpts == NULL || req->dest_key == NULL || req->scope == NULL ||
	    req->done == NULL || (req->msg == NULL && req->msglen > 0) ||
	    !addr_ok(req->sender) ||
	    (req->envid != NULL && !addr_ok(req->envid)))
		return SMTP_SUBMIT_INVALID;
	for (i = 0; i < req->naddrs; i++) {
		const struct smtp_addr *a = &req->addrs[i];

		if ((a->sa.ss_family != AF_INET &&
			a->sa.ss_family != AF_INET6) ||
		    a->host == NULL)
			return SMTP_SUBMIT_INVALID;
	}
	for (i = 0; i < req->nrcpts; i++)
		if (!addr_ok(req->rcpts[i].addr) ||
		    (req->rcpts[i].orcpt != NULL &&
			!addr_ok(req->rcpts[i].orcpt)))
			return SMTP_SUBMIT_INVALID;

	job = xcalloc(1, sizeof(*job));
	job->client = client;
	job->req = *req;
	job->req.dest_key = xstrdup(req->dest_key);
	job->req.sender = xstrdup(req->sender);
	job->req.envid = req->envid ? xstrdup(req->envid) : NULL;
	job->addrs = xcalloc(req->naddrs, sizeof(*job->addrs));
	for (i = 0; i < req->naddrs; i++) {
		job->addrs[i] = req->addrs[i];
		job->addrs[i].host = xstrdup(req->addrs[i].host);
	}
	job->rcpts = xcalloc(req->nrcpts, sizeof(*job->rcpts));
	for (i = 0; i < req->nrcpts; i++) {
		job->rcpts[i] = req->rcpts[i];
		job->rcpts[i].addr = xstrdup(req->rcpts[i].addr);
		job->rcpts[i].orcpt = req->rcpts[i].orcpt
		    ? xstrdup(req->rcpts[i].orcpt)
		    : NULL;
	}
	job->req.addrs = job->addrs;
	job->req.rcpts = job->rcpts;
	job->res = xcalloc(req->nrcpts, sizeof(*job->res));
	job->accepted = xcalloc(req->nrcpts, sizeof(*job->accepted));
	job->txn = xcalloc(req->nrcpts, sizeof(*job->txn));
	job->eight_bit = smtp_body_8bit(req->msg, req->msglen);
	job->utf8_addrs = smtp_body_8bit(req->sender, strlen(req->sender));
	for (i = 0; i < req->nrcpts; i++)
		if (smtp_body_8bit(
			req->rcpts[i].addr, strlen(req->rcpts[i].addr)))
			job->utf8_addrs = true;
	job->result.t_submit = rq_now_us();
	snprintf(job->result.host, sizeof(job->result.host), "none");
	job_run(job);
	return SMTP_SUBMIT_OK;
}

unsigned
smtp_client_conn_count(struct smtp_client *client, const char *key)
{
	struct dest *d = dest_get(client, key, false);

	return d ? d->nconn : 0;
}

unsigned
smtp_client_conn_idle(struct smtp_client *client, const char *key)
{
	struct dest *d = dest_get(client, key, false);

	return d ? d->nidle : 0;
}

unsigned
smtp_client_conn_total(struct smtp_client *client)
{
	return client->nconn;
}

void
smtp_client_shutdown(struct smtp_client *client, bool abort_active,
    void (*done)(void *), void *arg)
{
	struct conn *conn, *next;

	client->shutting_down = true;
	client->sd_called = false;
	client->sd_cb = done;
	client->sd_arg = arg;
	if (abort_active)
		client->aborting = true;
	for (conn = TAILQ_FIRST(&client->conns); conn != NULL; conn = next) {
		next = TAILQ_NEXT(conn, entry);
		if (conn->phase == SMTP_PH_IDLE) {
			TAILQ_REMOVE(&conn->dest->idle, conn, idle_entry);
			conn->dest->nidle--;
			conn_enter(conn, SMTP_PH_QUIT);
		} else if (abort_active && conn->job != NULL) {
			conn_fail_text(conn, false, "4.3.2",
			    "delivery aborted: the client is shutting down");
		}
	}
	event_active(client->reap, EV_TIMEOUT, 1);
}

void
smtp_client_free(struct smtp_client *client)
{
	struct conn *conn;
	unsigned b;

	if (client == NULL)
		return;
	client->shutting_down = client->aborting = true;
	client->sd_cb = NULL;
	while ((conn = TAILQ_FIRST(&client->conns)) != NULL) {
		if (conn->job != NULL)
			conn_fail_text(conn, false, "4.3.2",
			    "delivery aborted: the client is shutting down");
		else
			conn_close(conn);
	}
	reap_cb(-1, 0, client);
	for (b = 0; b < DEST_BUCKETS; b++)
		while (client->buckets[b] != NULL)
			dest_free(client, client->buckets[b]);
	event_free(client->reap);
	smtp_tls_free(client->tls);
	free(client->helo);
	free(client);
}
