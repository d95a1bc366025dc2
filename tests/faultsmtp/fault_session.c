/*
 * fault_session.c - one faultsmtp connection: a small but honest SMTP
 * server state machine (RFC 5321 sequencing, EHLO/HELO, MAIL/RCPT
 * parameters checked against what EHLO offered, DATA with dot-stuffed
 * data stored raw, STARTTLS), with the script's faults applied per
 * command.
 *
 * Public: fault_session_start(), fault_session_reap(),
 * fault_server_shutdown().
 *
 * Invariants:
 * - Each command is decided at once (normal reply, script rule, state
 *   change, dump written) and then delivered by deliver(), which may take
 *   time (stall, trickle); while a delivery is in progress (busy) no
 *   further input is interpreted, but the socket is still read, so a
 *   client that gives up is seen at once.  Buffered input is capped at
 *   IN_CAP bytes, pending output at OUT_CAP: memory stays bounded whatever
 *   the client sends.
 * - A session is never freed inside its own callback: session_close()
 *   moves it to the server's dead list and the reaper event frees it.
 * - A command line is interpreted only once its end is seen; a line over
 *   LINE_MAX bytes is discarded and answered 500.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>

#include "cfg.h"
#include "faultsmtp.h"

#define LINE_MAX_LEN 4096 /* longest command line interpreted */
#define IN_CAP (1024 * 1024) /* input buffered while busy */
#define OUT_CAP (256 * 1024) /* output queued before input waits */
#define ENDLESS_CHUNK (16 * 1024)
#define TRICKLE_READ 1024 /* bytes per tick for `on BLOCK trickle` */

enum sess_phase {
	SP_GREET, /* before the greeting is out */
	SP_CMD, /* reading commands */
	SP_DATA, /* reading message data */
	SP_TLS, /* TLS handshake under way */
	SP_ENDLESS, /* sending an endless line */
	SP_CLOSING, /* flushing the output, then close */
	SP_DEAD,
};

/* What happens after a reply is out. */
enum sess_post {
	POST_NONE,
	POST_CLOSE,
	POST_TLS,
	POST_BADTLS,
};

/* What the session timer is doing. */
enum sess_wait {
	W_NONE,
	W_STALL, /* pending is sent when it fires */
	W_TRICKLE, /* one byte of pending per tick */
	W_READPAUSE, /* reading stopped (on BLOCK stall/partial) */
	W_READTRICKLE, /* reading TRICKLE_READ bytes per tick */
	W_ENDLESS, /* refill the endless line */
	W_FLUSH, /* closing once the output is out */
	W_TLSSTALL, /* 220 sent, handshake held back */
};

struct fault_session {
	struct fault_server *srv;
	struct fault_session *next, **prevp;
	struct bufferevent *bev;
	struct event *timer;
	struct event *idle; /* `idle SECS` timer, or NULL */
	unsigned id; /* 1-based accept order */
	enum sess_phase phase;
	enum sess_wait wait;
	enum sess_post post;
	bool busy; /* a delivery is under way: don't interpret input */
	bool refused; /* greeting was not 2xx: only QUIT is served */
	bool greeted, esmtp, tls, in_txn;
	bool toolong; /* discarding the rest of an overlong line */
	bool read_off; /* we disabled EV_READ */
	unsigned nrcpt;
	unsigned count[FC_NCMD];
	unsigned nmsg; /* messages begun on this connection */
	double wait_secs;
	double flush_until;
	struct evbuffer *pending; /* reply bytes still to send */
	struct evbuffer *env; /* MAIL and accepted RCPT lines */
	/* message data */
	FILE *dump;
	char *dump_tmp;
	uint64_t dsize;
	int eom; /* bytes of "\r\n.\r\n" matched */
	bool data_seen;
	size_t read_budget; /* W_READTRICKLE: bytes still allowed */
	char closereason[128];
};

/* A reply before it goes on the wire: CODE and TEXT, \n between lines. */
struct reply {
	const char *code;
	const char *text;
	size_t textlen;
	char buf[LINE_MAX_LEN];
};

static void session_input(struct fault_session *);
static void session_close(struct fault_session *, const char *why);
static void read_cb(struct bufferevent *, void *);
static void write_cb(struct bufferevent *, void *);
static void event_cb(struct bufferevent *, short, void *);

static const char garbage_line[] =
    "\x01\xfe garbage \x7f\xff this is not SMTP {}\xc3\x28\r\n";

/* Sets a normal reply, with the enhanced code only if it is offered. */
static void __attribute__((format(printf, 4, 5)))
reply_set(struct fault_session *s, struct reply *r, const char *code,
    const char *fmt, ...)
{
	va_list ap;
	const char *t;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(r->buf, sizeof(r->buf), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(r->buf))
		n = sizeof(r->buf) - 1;
	t = r->buf;
	/* "x.y.z text": drop the enhanced code unless it is offered */
	if (!fault_script_offers(s->srv->script, "ENHANCEDSTATUSCODES") &&
	    n > 6 && t[1] == '.' && t[3] == '.' && strchr(t, ' ') != NULL) {
		t = strchr(t, ' ') + 1;
		n -= (int)(t - r->buf);
	}
	r->code = code;
	r->text = t;
	r->textlen = (size_t)n;
}

/* Appends CODE TEXT as wire lines (CODE-... for all but the last line). */
static void
wire_build(struct evbuffer *w, const char *code, const char *text, size_t len)
{
	size_t pos = 0;

	if (len == 0) {
		evbuffer_add_printf(w, "%s\r\n", code);
		return;
	}
	while (pos < len) {
		const char *nl = memchr(text + pos, '\n', len - pos);
		size_t ll = nl ? (size_t)(nl - (text + pos)) : len - pos;
		bool last = nl == NULL || pos + ll + 1 >= len;

		evbuffer_add_printf(w, "%s%c", code, last ? ' ' : '-');
		evbuffer_add(w, text + pos, ll);
		evbuffer_add(w, "\r\n", 2);
		pos += ll + 1;
	}
}

/* Logs an event for this session. */
static void
sess_event(struct fault_session *s, const char *ev, const void *d, size_t n)
{
	fault_event(s->srv, s->id, ev, d, n);
}

/* Sends BUF's bytes now (logged as a reply) and empties BUF. */
static void
send_buf(struct fault_session *s, struct evbuffer *buf)
{
	size_t n = evbuffer_get_length(buf);
	char tmp[1000];
	size_t k = n < sizeof(tmp) ? n : sizeof(tmp);

	if (n == 0)
		return;
	evbuffer_copyout(buf, tmp, k);
	sess_event(s, "reply", tmp, k);
	bufferevent_write_buffer(s->bev, buf);
}

/* Sends LEN bytes at P now (logged as a reply). */
static void
send_bytes(struct fault_session *s, const void *p, size_t len)
{
	sess_event(s, "reply", p, len < 1000 ? len : 1000);
	bufferevent_write(s->bev, p, len);
}

/* Arms timer EV for SECS seconds. */
static void
timer_set(struct event *ev, double secs)
{
	struct timeval tv;

	tv.tv_sec = (time_t)secs;
	tv.tv_usec = (suseconds_t)((secs - (double)tv.tv_sec) * 1e6);
	evtimer_add(ev, &tv);
}

/* Arms the session timer for SECS seconds. */
static void
timer_arm(struct fault_session *s, double secs)
{
	timer_set(s->timer, secs);
}

/* Current time in seconds. */
static double
now_secs(void)
{
	return (double)rq_now_us() / 1e6;
}

/* Enables or disables reading as the caps and pauses demand. */
static void
update_read(struct fault_session *s)
{
	bool want;

	if (s->phase == SP_DEAD)
		return;
	want = s->wait != W_READPAUSE && s->wait != W_TLSSTALL &&
	    evbuffer_get_length(bufferevent_get_input(s->bev)) < IN_CAP;
	if (want && s->read_off) {
		bufferevent_enable(s->bev, EV_READ);
		s->read_off = false;
	} else if (!want && !s->read_off) {
		bufferevent_disable(s->bev, EV_READ);
		s->read_off = true;
	}
}

/* Resets the mail transaction (RSET, EHLO, after the dot). */
static void
txn_reset(struct fault_session *s)
{
	s->in_txn = false;
	s->nrcpt = 0;
	evbuffer_drain(s->env, evbuffer_get_length(s->env));
}

/* Drops an unfinished dump file. */
static void
dump_discard(struct fault_session *s)
{
	if (s->dump != NULL) {
		fclose(s->dump);
		s->dump = NULL;
	}
	if (s->dump_tmp != NULL) {
		unlink(s->dump_tmp);
		free(s->dump_tmp);
		s->dump_tmp = NULL;
	}
}

/* Starts message data: opens the dump file if dumps are on. */
static void
dump_begin(struct fault_session *s)
{
	const char *dir = s->srv->dump_dir;

	s->nmsg++;
	s->dsize = 0;
	s->eom = 2; /* the CRLF ending the DATA line counts */
	s->data_seen = false;
	if (dir == NULL)
		return;
	if (asprintf(&s->dump_tmp, "%s/.%u-%u.tmp", dir, s->id, s->nmsg) < 0)
		abort();
	s->dump = fopen(s->dump_tmp, "wb");
	if (s->dump == NULL) {
		log_warn("faultsmtp", "cannot create %s: %s", s->dump_tmp,
		    strerror(errno));
		free(s->dump_tmp);
		s->dump_tmp = NULL;
	}
}

/* Writes the env sidecar and renames the message into place. */
static void
dump_commit(struct fault_session *s)
{
	char *eml = NULL, *env = NULL, *envtmp = NULL;
	const char *dir = s->srv->dump_dir;
	FILE *f;
	bool ok;

	if (s->dump == NULL)
		return;
	ok = fclose(s->dump) == 0;
	s->dump = NULL;
	if (asprintf(&eml, "%s/%u-%u.eml", dir, s->id, s->nmsg) < 0 ||
	    asprintf(&env, "%s/%u-%u.env", dir, s->id, s->nmsg) < 0 ||
	    asprintf(&envtmp, "%s/.%u-%u.envtmp", dir, s->id, s->nmsg) < 0)
		abort();
	f = fopen(envtmp, "wb");
	if (f != NULL) {
		size_t n = evbuffer_get_length(s->env);

		if (n > 0 && fwrite(evbuffer_pullup(s->env, -1), 1, n, f) != n)
			ok = false;
		if (fclose(f) != 0)
			ok = false;
		if (rename(envtmp, env) != 0)
			ok = false;
	} else {
		ok = false;
	}
	if (rename(s->dump_tmp, eml) != 0)
		ok = false;
	if (!ok)
		log_warn("faultsmtp", "cannot write dump %s: %s", eml,
		    strerror(errno));
	free(s->dump_tmp);
	s->dump_tmp = NULL;
	free(eml);
	free(env);
	free(envtmp);
}

/* (Re)starts the `idle` timer: the client has that long to say something. */
static void
idle_arm(struct fault_session *s)
{
	if (s->idle != NULL)
		timer_set(s->idle, s->srv->script->idle);
}

/* Takes the post-reply step: close, TLS, or go on reading. */
static void
post_run(struct fault_session *s, enum sess_post post)
{
	SSL *ssl;
	struct bufferevent *f;
	struct evbuffer *in;
	size_t n;

	switch (post) {
	case POST_NONE:
		s->busy = false;
		idle_arm(s);
		return;
	case POST_CLOSE:
		s->phase = SP_CLOSING;
		s->wait = W_FLUSH;
		s->flush_until = now_secs() + 2;
		timer_arm(s, 0.01);
		return;
	case POST_BADTLS:
		send_bytes(s, "\x15\x03\x01\x00\x02\x02\x28 not TLS\r\n", 17);
		snprintf(s->closereason, sizeof(s->closereason), "badtls");
		post_run(s, POST_CLOSE);
		return;
	case POST_TLS:
		break;
	}
	in = bufferevent_get_input(s->bev);
	n = evbuffer_get_length(in);
	if (n > 0) {
		char msg[100];

		/* like Postfix: plaintext after STARTTLS is never trusted */
		snprintf(msg, sizeof(msg),
		    "discarded %zu plaintext bytes sent after STARTTLS", n);
		evbuffer_drain(in, n);
		sess_event(s, "tls", msg, strlen(msg));
	}
	ssl = SSL_new(s->srv->tls);
	if (ssl == NULL) {
		session_close(s, "SSL_new failed");
		return;
	}
	f = bufferevent_openssl_filter_new(s->srv->base, s->bev, ssl,
	    BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	if (f == NULL) {
		SSL_free(ssl);
		session_close(s, "bufferevent_openssl_filter_new failed");
		return;
	}
	bufferevent_openssl_set_allow_dirty_shutdown(f, 1);
	s->bev = f;
	s->read_off = false;
	bufferevent_setcb(f, read_cb, write_cb, event_cb, s);
	bufferevent_setwatermark(f, EV_WRITE, OUT_CAP / 4, 0);
	bufferevent_enable(f, EV_READ | EV_WRITE);
	s->phase = SP_TLS;
	s->busy = true;
	sess_event(s, "tls", "handshake started", 17);
}

/* Starts sending an endless line that begins with CODE. */
static void
endless_start(struct fault_session *s, const char *code)
{
	char head[32];

	snprintf(head, sizeof(head), "%.3s ", code);
	send_bytes(s, head, strlen(head));
	s->phase = SP_ENDLESS;
	s->busy = true;
	s->wait = W_ENDLESS;
	timer_arm(s, 0);
}

/*
 * Delivers the decided answer WIRE (a complete reply) by way of ACT,
 * then runs POST.  Consumes WIRE's contents.
 */
static void
deliver(struct fault_session *s, const struct fault_action *act,
    struct evbuffer *wire, enum sess_post post)
{
	enum fault_act kind = act ? act->kind : FA_NORMAL;
	char code[4] = "250";

	evbuffer_copyout(wire, code, 3);
	s->busy = true;
	s->post = post;
	switch (kind) {
	case FA_NORMAL:
	case FA_REPLY:
	case FA_RAW:
		send_buf(s, wire);
		post_run(s, post);
		return;
	case FA_INJECT:
	case FA_BADTLS:
		/* a 220 whatever the state: these test the client's side */
		evbuffer_drain(wire, evbuffer_get_length(wire));
		evbuffer_add_printf(wire, "220 %sReady to start TLS\r\n",
		    fault_script_offers(s->srv->script, "ENHANCEDSTATUSCODES")
			? "2.0.0 "
			: "");
		if (kind == FA_BADTLS) {
			send_buf(s, wire);
			post_run(s, POST_BADTLS);
			return;
		}
		evbuffer_add(wire, act->text, act->textlen);
		send_buf(s, wire);
		post_run(s, s->srv->tls && !s->tls ? POST_TLS : POST_NONE);
		return;
	case FA_TLSSTALL:
		send_buf(s, wire);
		if (post != POST_TLS) {
			post_run(s, post);
			return;
		}
		/* leave the ClientHello in the kernel until the stall ends */
		s->wait = W_TLSSTALL;
		update_read(s);
		timer_arm(s, act->secs);
		return;
	case FA_STALL:
		evbuffer_add_buffer(s->pending, wire);
		s->wait = W_STALL;
		timer_arm(s, act->secs);
		return;
	case FA_PARTIAL: {
		size_t n = evbuffer_get_length(wire);
		const unsigned char *w = evbuffer_pullup(wire, -1);

		send_bytes(s, act->text, act->textlen);
		if (w != NULL && act->textlen <= n &&
		    memcmp(w, act->text, act->textlen) == 0)
			evbuffer_drain(wire, act->textlen);
		else
			evbuffer_prepend(wire, "\r\n", 2);
		evbuffer_add_buffer(s->pending, wire);
		s->wait = W_STALL;
		timer_arm(s, act->secs);
		return;
	}
	case FA_TRICKLE: {
		char tmp[1000];
		size_t k = evbuffer_copyout(wire, tmp, sizeof(tmp));

		sess_event(s, "reply", tmp, k);
		evbuffer_add_buffer(s->pending, wire);
		s->wait = W_TRICKLE;
		s->wait_secs = act->secs;
		timer_arm(s, 0);
		return;
	}
	case FA_DROP:
		evbuffer_drain(wire, evbuffer_get_length(wire));
		session_close(s, "drop");
		return;
	case FA_GARBAGE:
		evbuffer_drain(wire, evbuffer_get_length(wire));
		send_bytes(s, garbage_line, sizeof(garbage_line) - 1);
		post_run(s, POST_NONE);
		return;
	case FA_ENDLESS:
		evbuffer_drain(wire, evbuffer_get_length(wire));
		endless_start(s, code);
		return;
	}
	abort();
}

/* Finds the address inside "<...>" (or the bare word) after ARG; a '>'
 * in a quoted string ("a>b"@x) does not end it. */
static bool
addr_parse(const char *arg, size_t len, const char **a, size_t *alen,
    const char **params)
{
	const char *p = arg, *end = arg + len, *q;

	while (p < end && *p == ' ')
		p++;
	if (p < end && *p == '<') {
		bool quoted = false;

		for (q = p + 1; q < end && (quoted || *q != '>'); q++)
			if (quoted && *q == '\\' && q + 1 < end)
				q++;
			else if (*q == '"')
				quoted = !quoted;
		if (q == end)
			return false;
		*a = p + 1;
		*alen = (size_t)(q - p - 1);
		q++;
	} else {
		q = p;
		while (q < end && *q != ' ')
			q++;
		if (q == p)
			return false;
		*a = p;
		*alen = (size_t)(q - p);
	}
	if (q < end && *q != ' ')
		return false;
	*params = q;
	return true;
}

/*
 * Checks ESMTP parameters P (up to END) against what EHLO offered; returns
 * true if all are fine, else sets R (555, or 552 for SIZE over the limit).
 */
static bool
params_check(struct fault_session *s, struct reply *r, const char *p,
    const char *end, bool is_mail)
{
	static const struct {
		const char *name, *needs;
		bool mail;
	} known[] = {
		{ "SIZE", "SIZE", true },
		{ "BODY", "8BITMIME", true },
		{ "RET", "DSN", true },
		{ "ENVID", "DSN", true },
		{ "SMTPUTF8", "SMTPUTF8", true },
		{ "AUTH", "AUTH", true },
		{ "NOTIFY", "DSN", false },
		{ "ORCPT", "DSN", false },
	};
	const struct fault_script *sc = s->srv->script;

	while (p < end) {
		const char *w, *eq;
		size_t wl, kl, i;

		while (p < end && *p == ' ')
			p++;
		if (p == end)
			break;
		w = p;
		while (p < end && *p != ' ')
			p++;
		wl = (size_t)(p - w);
		eq = memchr(w, '=', wl);
		kl = eq ? (size_t)(eq - w) : wl;
		for (i = 0; i < sizeof(known) / sizeof(*known); i++)
			if (known[i].mail == is_mail &&
			    strlen(known[i].name) == kl &&
			    strncasecmp(w, known[i].name, kl) == 0)
				break;
		if (!s->esmtp || i == sizeof(known) / sizeof(*known) ||
		    !fault_script_offers(sc, known[i].needs)) {
			reply_set(s, r, "555", "5.5.4 Unsupported option: %.*s",
			    (int)(kl > 100 ? 100 : kl), w);
			return false;
		}
		if (i == 0 && eq != NULL && sc->size_limit > 0 &&
		    strtoull(eq + 1, NULL, 10) > sc->size_limit) {
			reply_set(s, r, "552",
			    "5.3.4 Message size exceeds fixed limit");
			return false;
		}
	}
	return true;
}

/* Builds the EHLO reply text: hostname, then the offered keywords. */
static void
ehlo_reply(struct fault_session *s, struct reply *r)
{
	const struct fault_script *sc = s->srv->script;
	size_t n;

	n = (size_t)snprintf(r->buf, sizeof(r->buf), "%s", sc->hostname);
	for (size_t i = 0; i < sc->nehlo && n < sizeof(r->buf); i++) {
		if (s->tls && strcasecmp(sc->ehlo[i], "STARTTLS") == 0)
			continue;
		n += (size_t)snprintf(
		    r->buf + n, sizeof(r->buf) - n, "\n%s", sc->ehlo[i]);
	}
	if (n >= sizeof(r->buf))
		n = sizeof(r->buf) - 1;
	r->code = "250";
	r->text = r->buf;
	r->textlen = n;
}

/* Maps a command verb to its rule class. */
static enum fault_cmd
verb_cmd(const char *v, size_t n)
{
	static const struct {
		const char *name;
		enum fault_cmd cmd;
	} verbs[] = {
		{ "EHLO", FC_EHLO },
		{ "HELO", FC_HELO },
		{ "MAIL", FC_MAIL },
		{ "RCPT", FC_RCPT },
		{ "DATA", FC_DATA },
		{ "RSET", FC_RSET },
		{ "QUIT", FC_QUIT },
		{ "STARTTLS", FC_STARTTLS },
		{ "NOOP", FC_NOOP },
	};

	for (size_t i = 0; i < sizeof(verbs) / sizeof(*verbs); i++)
		if (strlen(verbs[i].name) == n &&
		    strncasecmp(v, verbs[i].name, n) == 0)
			return verbs[i].cmd;
	return FC_OTHER;
}

/*
 * Computes the normal reply to command line L (LEN bytes, verb class C)
 * in the current state, as a real server would give it.
 */
static void
normal_reply(struct fault_session *s, enum fault_cmd c, const char *l,
    size_t len, struct reply *r)
{
	const char *end = l + len, *a, *params;
	size_t alen;

	if (s->refused && c != FC_QUIT) {
		reply_set(s, r, "503", "5.5.1 Error: greeting was a refusal");
		return;
	}
	switch (c) {
	case FC_EHLO:
	case FC_HELO:
		if (c == FC_EHLO && s->srv->script->ehlo_reject) {
			reply_set(
			    s, r, "502", "5.5.2 Error: command not recognized");
		} else if (len < 6 || l[4] != ' ') {
			reply_set(
			    s, r, "501", "5.5.4 Syntax: %.4s hostname", l);
		} else if (c == FC_EHLO) {
			ehlo_reply(s, r);
		} else {
			reply_set(s, r, "250", "%s", s->srv->script->hostname);
			/* no enhanced code in a HELO reply */
			r->text = r->buf;
			r->textlen = strlen(r->buf);
		}
		return;
	case FC_MAIL:
		if (!s->greeted)
			reply_set(
			    s, r, "503", "5.5.1 Error: send HELO/EHLO first");
		else if (s->in_txn)
			reply_set(
			    s, r, "503", "5.5.1 Error: nested MAIL command");
		else if (len < 10 || strncasecmp(l, "MAIL FROM:", 10) != 0 ||
		    !addr_parse(l + 10, len - 10, &a, &alen, &params))
			reply_set(
			    s, r, "501", "5.5.4 Syntax: MAIL FROM:<address>");
		else if (params_check(s, r, params, end, true))
			reply_set(s, r, "250", "2.1.0 Ok");
		return;
	case FC_RCPT:
		if (!s->in_txn)
			reply_set(
			    s, r, "503", "5.5.1 Error: need MAIL command");
		else if (len < 8 || strncasecmp(l, "RCPT TO:", 8) != 0 ||
		    !addr_parse(l + 8, len - 8, &a, &alen, &params))
			reply_set(
			    s, r, "501", "5.5.4 Syntax: RCPT TO:<address>");
		else if (params_check(s, r, params, end, false)) {
			const struct fault_rcpt *fr;

			fr = fault_script_rcpt(s->srv->script, a, alen);
			if (fr != NULL) {
				r->code = fr->code;
				r->text = fr->text;
				r->textlen = strlen(fr->text);
			} else {
				reply_set(s, r, "250", "2.1.5 Ok");
			}
		}
		return;
	case FC_DATA:
		if (!s->in_txn)
			reply_set(
			    s, r, "503", "5.5.1 Error: need MAIL command");
		else if (s->nrcpt == 0)
			reply_set(
			    s, r, "554", "5.5.1 Error: no valid recipients");
		else
			reply_set(
			    s, r, "354", "End data with <CR><LF>.<CR><LF>");
		return;
	case FC_RSET:
		reply_set(s, r, "250", "2.0.0 Ok");
		return;
	case FC_NOOP:
		reply_set(s, r, "250", "2.0.0 Ok");
		return;
	case FC_QUIT:
		reply_set(s, r, "221", "2.0.0 Bye");
		return;
	case FC_STARTTLS:
		if (s->tls)
			reply_set(
			    s, r, "554", "5.5.1 Error: TLS already active");
		else if (!fault_script_offers(s->srv->script, "STARTTLS"))
			reply_set(s, r, "502",
			    "5.5.1 Error: command not implemented");
		else if (!s->greeted)
			reply_set(s, r, "503", "5.5.1 Error: send EHLO first");
		else if (s->srv->tls == NULL)
			reply_set(s, r, "454", "4.7.0 TLS not available");
		else
			reply_set(s, r, "220", "2.0.0 Ready to start TLS");
		return;
	default:
		break;
	}
	if (len >= 4 && strncasecmp(l, "VRFY", 4) == 0)
		reply_set(
		    s, r, "252", "2.0.0 Send some mail, I'll try my best");
	else if (len >= 4 && strncasecmp(l, "HELP", 4) == 0)
		reply_set(s, r, "214", "2.0.0 faultsmtp: read the script");
	else
		reply_set(s, r, "502", "5.5.2 Error: command not recognized");
}

/*
 * Applies the state change of command C (line L) answered with a reply
 * of class CLS ('2', '3', ..., or 0 for none); returns the post step.
 */
static enum sess_post
apply_state(struct fault_session *s, enum fault_cmd c, const char *l,
    size_t len, int cls, const char *code)
{
	enum sess_post post = POST_NONE;

	if (strncmp(code, "421", 3) == 0) {
		post = POST_CLOSE;
		snprintf(s->closereason, sizeof(s->closereason), "421");
	}
	switch (c) {
	case FC_EHLO:
	case FC_HELO:
		if (cls == '2') {
			s->greeted = true;
			s->esmtp = c == FC_EHLO;
			txn_reset(s);
		}
		break;
	case FC_MAIL:
		if (cls == '2') {
			txn_reset(s);
			s->in_txn = true;
			evbuffer_add(s->env, l, len);
			evbuffer_add(s->env, "\n", 1);
		}
		break;
	case FC_RCPT:
		if (cls == '2' && s->in_txn) {
			s->nrcpt++;
			evbuffer_add(s->env, l, len);
			evbuffer_add(s->env, "\n", 1);
		}
		break;
	case FC_DATA:
		if (cls == '3') {
			s->phase = SP_DATA;
			dump_begin(s);
		}
		break;
	case FC_RSET:
		if (cls == '2')
			txn_reset(s);
		break;
	case FC_QUIT:
		post = POST_CLOSE;
		snprintf(s->closereason, sizeof(s->closereason), "quit");
		break;
	case FC_STARTTLS:
		if (strncmp(code, "220", 3) == 0 && s->srv->tls != NULL &&
		    !s->tls)
			post = POST_TLS;
		break;
	default:
		break;
	}
	return post;
}

/* Sends a reply outside the rules (overlong lines). */
static void
reply_direct(struct fault_session *s, const char *code, const char *text)
{
	struct evbuffer *w = evbuffer_new();

	wire_build(w, code, text, strlen(text));
	send_buf(s, w);
	evbuffer_free(w);
}

/*
 * Decides and delivers the answer to command C (line L, LEN bytes):
 * the normal reply, overridden or delayed by the script's rule.
 */
static void
command_answer(struct fault_session *s, enum fault_cmd c, const char *l,
    size_t len, struct reply *r)
{
	const struct fault_rule *rule = NULL;
	const struct fault_action *act;
	struct evbuffer *w = evbuffer_new();
	enum sess_post post;
	const char *code;
	int cls;

	if (c != FC_OTHER) {
		s->count[c]++;
		rule = fault_script_match(
		    s->srv->script, c, s->count[c], s->id);
	}
	act = rule ? &rule->act : NULL;
	if (act != NULL && act->kind == FA_REPLY)
		wire_build(w, act->code, act->text, act->textlen);
	else if (act != NULL && act->kind == FA_RAW)
		evbuffer_add(w, act->text, act->textlen);
	else
		wire_build(w, r->code, r->text, r->textlen);
	if (act != NULL &&
	    (act->kind == FA_DROP || act->kind == FA_GARBAGE ||
		act->kind == FA_ENDLESS)) {
		cls = 0;
		code = "000";
	} else {
		char c3[4] = "";

		evbuffer_copyout(w, c3, 3);
		cls = c3[0];
		code = strncmp(c3, "421", 3) == 0 ? "421"
		    : strncmp(c3, "220", 3) == 0  ? "220"
						  : "000";
	}
	if (c == FC_DOT) {
		s->phase = SP_CMD;
		if (cls == '2')
			dump_commit(s);
		else
			dump_discard(s);
		txn_reset(s);
		post = strcmp(code, "421") == 0 ? POST_CLOSE : POST_NONE;
	} else {
		post = apply_state(s, c, l, len, cls, code);
	}
	deliver(s, act, w, post);
	evbuffer_free(w);
}

/* Interprets one complete command line L of LEN bytes. */
static void
command_run(struct fault_session *s, const char *l, size_t len)
{
	struct reply r;
	size_t vl = 0;
	enum fault_cmd c;

	sess_event(s, "cmd", l, len < 1000 ? len : 1000);
	while (vl < len && l[vl] != ' ')
		vl++;
	c = verb_cmd(l, vl);
	normal_reply(s, c, l, len, &r);
	command_answer(s, c, l, len, &r);
}

/* The dot arrived: answer it (250 unless the script or SIZE says not). */
static void
data_end(struct fault_session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	struct reply r;
	uint64_t limit = s->srv->script->size_limit;

	sess_event(s, "cmd", ".", 1);
	if (evbuffer_get_length(in) > 0) {
		char ahead[1000];
		ev_ssize_t n = evbuffer_copyout(in, ahead, sizeof(ahead));

		sess_event(s, "pipelined", ahead, n > 0 ? (size_t)n : 0);
	}
	if (limit > 0 && s->dsize > limit + 3)
		reply_set(
		    s, &r, "552", "5.3.4 Message size exceeds fixed limit");
	else
		reply_set(
		    s, &r, "250", "2.0.0 Ok: queued as %u-%u", s->id, s->nmsg);
	command_answer(s, FC_DOT, ".", 1, &r);
}

/* The first data bytes arrived: apply the script's BLOCK rule. */
static void
data_block(struct fault_session *s)
{
	const struct fault_rule *rule;
	const struct fault_action *a;
	struct evbuffer *w;

	s->data_seen = true;
	sess_event(s, "data", "start", 5);
	s->count[FC_BLOCK]++;
	rule = fault_script_match(
	    s->srv->script, FC_BLOCK, s->count[FC_BLOCK], s->id);
	if (rule == NULL)
		return;
	a = &rule->act;
	switch (a->kind) {
	case FA_PARTIAL:
		send_bytes(s, a->text, a->textlen);
		/* FALLTHROUGH */
	case FA_STALL:
		s->wait = W_READPAUSE;
		s->busy = true;
		timer_arm(s, a->secs);
		return;
	case FA_TRICKLE:
		s->wait = W_READTRICKLE;
		s->wait_secs = a->secs;
		s->read_budget = TRICKLE_READ;
		bufferevent_setwatermark(s->bev, EV_READ, 0, TRICKLE_READ);
		timer_arm(s, a->secs);
		return;
	case FA_REPLY:
	case FA_RAW:
		w = evbuffer_new();
		if (a->kind == FA_REPLY)
			wire_build(w, a->code, a->text, a->textlen);
		else
			evbuffer_add(w, a->text, a->textlen);
		s->busy = true;
		send_buf(s, w);
		evbuffer_free(w);
		dump_discard(s);
		post_run(s, POST_CLOSE);
		return;
	case FA_DROP:
		dump_discard(s);
		session_close(s, "drop");
		return;
	case FA_GARBAGE:
		send_bytes(s, garbage_line, sizeof(garbage_line) - 1);
		return;
	case FA_ENDLESS:
		dump_discard(s);
		endless_start(s, "250");
		return;
	default:
		return;
	}
}

/* Consumes message data from the input until the dot or a pause. */
static void
data_read(struct fault_session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);

	while (s->phase == SP_DATA && !s->busy) {
		struct evbuffer_iovec v;
		const unsigned char *p;
		size_t n, i;
		int st = s->eom;

		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
			return;
		if (!s->data_seen) {
			data_block(s);
			continue;
		}
		p = v.iov_base;
		n = v.iov_len;
		if (s->wait == W_READTRICKLE) {
			if (s->read_budget == 0)
				return;
			if (n > s->read_budget)
				n = s->read_budget;
		}
		for (i = 0; i < n && st != 5; i++) {
			switch (p[i]) {
			case '\r':
				st = st == 3 ? 4 : 1;
				break;
			case '\n':
				st = st == 1 ? 2 : st == 4 ? 5 : 0;
				break;
			case '.':
				st = st == 2 ? 3 : 0;
				break;
			default:
				st = 0;
				break;
			}
		}
		s->eom = st;
		if (s->dump != NULL && fwrite(p, 1, i, s->dump) != i) {
			log_warn(
			    "faultsmtp", "dump write: %s", strerror(errno));
			dump_discard(s);
		}
		s->dsize += i;
		if (s->wait == W_READTRICKLE)
			s->read_budget -= i;
		evbuffer_drain(in, i);
		if (st == 5) {
			if (s->wait == W_READTRICKLE) {
				evtimer_del(s->timer);
				s->wait = W_NONE;
				bufferevent_setwatermark(s->bev, EV_READ, 0, 0);
			}
			data_end(s);
		}
	}
}

/* Reads and runs command lines until input runs out or a delivery waits. */
static void
cmd_read(struct fault_session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	char line[LINE_MAX_LEN + 1];

	while (s->phase == SP_CMD && !s->busy) {
		struct evbuffer_ptr eol;
		size_t eol_len = 0, len;

		if (evbuffer_get_length(bufferevent_get_output(s->bev)) >
		    OUT_CAP)
			return; /* the client is not reading: wait for it */
		eol = evbuffer_search_eol(
		    in, NULL, &eol_len, EVBUFFER_EOL_CRLF);
		if (eol.pos < 0) {
			len = evbuffer_get_length(in);
			if (len > LINE_MAX_LEN) {
				if (!s->toolong) {
					evbuffer_copyout(in, line, 1000);
					sess_event(s, "cmd", line, 1000);
				}
				s->toolong = true;
				evbuffer_drain(in, len);
			}
			return;
		}
		len = (size_t)eol.pos;
		if (s->toolong || len > LINE_MAX_LEN) {
			if (!s->toolong) {
				evbuffer_copyout(in, line, 1000);
				sess_event(s, "cmd", line, 1000);
			}
			s->toolong = false;
			evbuffer_drain(in, len + eol_len);
			reply_direct(s, "500", "5.5.0 Error: line too long");
			continue;
		}
		evbuffer_remove(in, line, len);
		evbuffer_drain(in, eol_len);
		line[len] = '\0';
		command_run(s, line, len);
	}
}

/* Interprets whatever input is buffered, as far as the state allows. */
static void
session_input(struct fault_session *s)
{
	/* each reader returns in its own phase only when it can do no more */
	while (!s->busy) {
		if (s->phase == SP_CMD) {
			cmd_read(s);
			if (s->phase == SP_CMD)
				break;
		} else if (s->phase == SP_DATA) {
			data_read(s);
			if (s->phase == SP_DATA)
				break;
		} else {
			break;
		}
	}
	if (s->phase != SP_DEAD)
		update_read(s);
}

/* Input arrived. */
static void
read_cb(struct bufferevent *bev, void *arg)
{
	struct fault_session *s = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	if (s->phase == SP_ENDLESS || s->phase == SP_CLOSING) {
		evbuffer_drain(in, evbuffer_get_length(in));
		return;
	}
	idle_arm(s);
	session_input(s);
}

/* Output drained below the low watermark: input may go on. */
static void
write_cb(struct bufferevent *bev, void *arg)
{
	struct fault_session *s = arg;

	if (s->phase == SP_CMD && !s->busy)
		session_input(s);
}

/* Formats the pending OpenSSL errors of the session into BUF. */
static void
tls_errors(struct fault_session *s, char *buf, size_t len)
{
	unsigned long e;
	size_t n = 0;

	buf[0] = '\0';
	while ((e = bufferevent_get_openssl_error(s->bev)) != 0) {
		char one[256];

		ERR_error_string_n(e, one, sizeof(one));
		if (n < len)
			n += (size_t)snprintf(
			    buf + n, len - n, "%s%s", n ? "; " : "", one);
	}
}

/* Connection events: EOF, errors, TLS handshake done. */
static void
event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct fault_session *s = arg;
	char why[600];

	if (what & BEV_EVENT_CONNECTED) {
		SSL *ssl = bufferevent_openssl_get_ssl(bev);

		snprintf(why, sizeof(why), "handshake ok %s %s",
		    ssl ? SSL_get_version(ssl) : "?",
		    ssl ? SSL_get_cipher_name(ssl) : "?");
		sess_event(s, "tls", why, strlen(why));
		s->tls = true;
		s->phase = SP_CMD;
		s->busy = false;
		s->greeted = false;
		s->esmtp = false;
		txn_reset(s);
		session_input(s);
		return;
	}
	if (what & BEV_EVENT_EOF) {
		/* we were closing anyway: keep our reason (quit, 421, ...) */
		if (s->phase == SP_CLOSING && s->closereason[0] != '\0')
			session_close(s, s->closereason);
		else if (s->phase == SP_TLS)
			session_close(s, "client closed during TLS handshake");
		else
			session_close(s, "client closed");
		return;
	}
	if (what & BEV_EVENT_ERROR) {
		char tls[400];

		tls_errors(s, tls, sizeof(tls));
		if (s->phase == SP_TLS || tls[0] != '\0') {
			snprintf(why, sizeof(why), "tls error: %s",
			    tls[0] ? tls : strerror(errno));
			sess_event(s, "tls", why, strlen(why));
		} else {
			snprintf(
			    why, sizeof(why), "error: %s", strerror(errno));
		}
		session_close(s, why);
	}
}

/* True once everything written has left, including under a TLS filter. */
static bool
output_empty(struct fault_session *s)
{
	struct bufferevent *u = bufferevent_get_underlying(s->bev);

	if (evbuffer_get_length(bufferevent_get_output(s->bev)) > 0)
		return false;
	return u == NULL || evbuffer_get_length(bufferevent_get_output(u)) == 0;
}

/* The session timer: stalls, trickles, pauses, endless lines, flushing. */
static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fault_session *s = arg;
	struct evbuffer *out;
	char b;

	switch (s->wait) {
	case W_NONE:
		return;
	case W_STALL:
		s->wait = W_NONE;
		send_buf(s, s->pending);
		post_run(s, s->post);
		break;
	case W_TRICKLE:
		if (evbuffer_remove(s->pending, &b, 1) == 1)
			bufferevent_write(s->bev, &b, 1);
		if (evbuffer_get_length(s->pending) > 0) {
			timer_arm(s, s->wait_secs);
			return;
		}
		s->wait = W_NONE;
		post_run(s, s->post);
		break;
	case W_READPAUSE:
		s->wait = W_NONE;
		s->busy = false;
		break;
	case W_TLSSTALL:
		s->wait = W_NONE;
		update_read(s);
		post_run(s, POST_TLS);
		return;
	case W_READTRICKLE:
		s->read_budget = TRICKLE_READ;
		timer_arm(s, s->wait_secs);
		break;
	case W_ENDLESS:
		out = bufferevent_get_output(s->bev);
		if (evbuffer_get_length(out) < 4 * ENDLESS_CHUNK) {
			char chunk[ENDLESS_CHUNK];

			memset(chunk, 'x', sizeof(chunk));
			bufferevent_write(s->bev, chunk, sizeof(chunk));
		}
		timer_arm(s, 0.01);
		return;
	case W_FLUSH:
		if (output_empty(s) || now_secs() > s->flush_until) {
			session_close(s,
			    s->closereason[0] ? s->closereason
					      : "server closed");
			return;
		}
		timer_arm(s, 0.01);
		return;
	}
	if (s->phase == SP_CMD || s->phase == SP_DATA)
		session_input(s);
}

/* Nothing came from the client for `idle` seconds: 421 and close. */
static void
idle_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fault_session *s = arg;
	char text[300];

	if (s->busy || (s->phase != SP_CMD && s->phase != SP_DATA)) {
		idle_arm(s); /* our own stalls don't count */
		return;
	}
	snprintf(text, sizeof(text), "4.4.2 %.200s Error: timeout exceeded",
	    s->srv->script->hostname);
	reply_direct(s, "421", text);
	s->busy = true;
	snprintf(s->closereason, sizeof(s->closereason), "idle timeout");
	post_run(s, POST_CLOSE);
}

/* Starts a session on an accepted socket; see faultsmtp.h. */
void
fault_session_start(struct fault_server *srv, int fd, const char *peer)
{
	struct fault_session *s = xcalloc(1, sizeof(*s));
	const struct fault_script *sc = srv->script;
	struct evbuffer *w;
	const struct fault_rule *rule;
	int cls;

	s->srv = srv;
	s->id = ++srv->nconn;
	s->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
	s->timer = evtimer_new(srv->base, timer_cb, s);
	if (sc->idle > 0)
		s->idle = evtimer_new(srv->base, idle_cb, s);
	s->pending = evbuffer_new();
	s->env = evbuffer_new();
	if (s->bev == NULL || s->timer == NULL || s->pending == NULL ||
	    s->env == NULL)
		abort();
	s->next = srv->sessions;
	if (s->next != NULL)
		s->next->prevp = &s->next;
	s->prevp = &srv->sessions;
	srv->sessions = s;
	bufferevent_setcb(s->bev, read_cb, write_cb, event_cb, s);
	bufferevent_setwatermark(s->bev, EV_WRITE, OUT_CAP / 4, 0);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
	sess_event(s, "connect", peer, strlen(peer));

	/* the greeting is the CONNECT command's normal reply */
	s->phase = SP_GREET;
	s->count[FC_CONNECT] = 1;
	rule = fault_script_match(sc, FC_CONNECT, 1, s->id);
	w = evbuffer_new();
	if (rule != NULL && rule->act.kind == FA_REPLY)
		wire_build(
		    w, rule->act.code, rule->act.text, rule->act.textlen);
	else if (rule != NULL && rule->act.kind == FA_RAW)
		evbuffer_add(w, rule->act.text, rule->act.textlen);
	else
		wire_build(
		    w, sc->greet_code, sc->greet_text, strlen(sc->greet_text));
	{
		char c3[4] = "";

		evbuffer_copyout(w, c3, 3);
		cls = c3[0];
		s->phase = SP_CMD;
		s->refused = cls != '2';
		deliver(s, rule ? &rule->act : NULL, w,
		    strncmp(c3, "421", 3) == 0 ? POST_CLOSE : POST_NONE);
	}
	evbuffer_free(w);
	if (s->phase == SP_CMD && !s->busy)
		session_input(s);
}

/* Ends a session: logs why, detaches it, and queues it for the reaper. */
static void
session_close(struct fault_session *s, const char *why)
{
	if (s->phase == SP_DEAD)
		return;
	sess_event(s, "close", why, strlen(why));
	/* best effort: replies queued before a drop still go out */
	if (bufferevent_get_underlying(s->bev) == NULL) {
		evutil_socket_t fd = bufferevent_getfd(s->bev);
		struct evbuffer *out = bufferevent_get_output(s->bev);

		/* libevent freezes the drain side of a socket's output */
		evbuffer_unfreeze(out, 1);
		if (fd >= 0)
			evbuffer_write(out, fd);
	}
	s->phase = SP_DEAD;
	bufferevent_setcb(s->bev, NULL, NULL, NULL, NULL);
	bufferevent_disable(s->bev, EV_READ | EV_WRITE);
	evtimer_del(s->timer);
	if (s->idle != NULL)
		evtimer_del(s->idle);
	*s->prevp = s->next;
	if (s->next != NULL)
		s->next->prevp = s->prevp;
	s->next = s->srv->dead;
	s->srv->dead = s;
	event_active(s->srv->reaper, EV_TIMEOUT, 0);
}

/* Frees one session that is already off the live list. */
static void
session_free(struct fault_session *s)
{
	dump_discard(s);
	bufferevent_free(s->bev);
	event_free(s->timer);
	if (s->idle != NULL)
		event_free(s->idle);
	evbuffer_free(s->pending);
	evbuffer_free(s->env);
	free(s);
}

/* Frees every session on the dead list. */
void
fault_session_reap(struct fault_server *srv)
{
	while (srv->dead != NULL) {
		struct fault_session *s = srv->dead;

		srv->dead = s->next;
		session_free(s);
	}
}

/* Closes ("shutdown") and frees every live session. */
void
fault_server_shutdown(struct fault_server *srv)
{
	while (srv->sessions != NULL)
		session_close(srv->sessions, "shutdown");
	fault_session_reap(srv);
}
