/*
 * cluster_link.c - the connection to Redis: hiredis' asynchronous API on
 * the daemon's event_base (its libevent adapter), the handshake (AUTH,
 * PING), the calls in flight and their deadlines, EVALSHA with SCRIPT
 * LOAD after NOSCRIPT, and reconnecting.
 *
 * Module functions: cluster_link_start(), cluster_link_up(),
 * cluster_call(), cluster_link_stop().
 *
 * Rules.  hiredis 0.14 has no timeouts of its own in its asynchronous
 * API, so every call (the handshake's too, which covers the connect)
 * carries a deadline, CALL_DEADLINE_US after it was sent; replies come
 * in order, so one timer armed at the oldest call's deadline is enough.
 * A call past its deadline (Redis hung: SIGSTOP, a long script) or a
 * lost connection frees the context: every call in flight fails, the
 * cluster falls back (cluster_link_changed) and a new connection is
 * tried RETRY_US later, and again, until the handshake succeeds.  The
 * address is an IP or a unix socket (cfg_redis_addr_parse): hiredis
 * never resolves a name, so nothing here blocks.
 *
 * Invariants: c->ac is the live context or NULL; it is cleared before
 * the context is freed, so a callback of a context being freed (hiredis
 * calls every pending one with a NULL reply) sees ac != c->ac and only
 * fails its call; no call's done() frees the cluster.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>

#include "cluster_int.h"

#define CALL_DEADLINE_US 400000 /* a reply later than this: Redis hung */
#define RETRY_US 1000000 /* between connection attempts */

bool
cluster_link_up(const struct cluster *c)
{
	return c->state == LINK_UP && c->ac != NULL;
}

/* Frees a call and what it owns. */
static void
call_free(struct ccall *call)
{
	for (int i = 0; i < call->argc; i++) {
		if (call->secret)
			rq_cleanse(call->argv[i], call->argvlen[i]);
		free(call->argv[i]);
	}
	free(call->argv);
	free(call->argvlen);
	free(call->ids);
	for (size_t i = 0; i < call->nkeys; i++)
		free(call->keys[i]);
	free(call->keys);
	free(call);
}

/* Arms the deadline timer at the oldest call's deadline. */
static void
deadline_arm(struct cluster *c)
{
	struct ccall *call = TAILQ_FIRST(&c->calls);
	int64_t us;
	struct timeval tv;

	if (call == NULL || c->freeing) {
		evtimer_del(c->ev_deadline);
		return;
	}
	us = call->deadline_us - rq_mono_us();
	if (us < 0)
		us = 0;
	tv.tv_sec = (time_t)(us / 1000000);
	tv.tv_usec = (suseconds_t)(us % 1000000);
	evtimer_add(c->ev_deadline, &tv);
}

/* The link is down (WHY): try again later, tell the policy. */
static void
link_down(struct cluster *c, const char *why)
{
	struct timeval tv = { RETRY_US / 1000000, RETRY_US % 1000000 };

	c->state = LINK_DOWN;
	c->tried = true;
	if (!c->freeing) {
		evtimer_add(c->ev_retry, &tv);
		cluster_link_changed(c, false, why);
	}
}

/* hiredis is tearing context AC down itself (EOF, a connect error): it
 * frees it; forget it. */
static void
link_lost(struct cluster *c, const redisAsyncContext *ac, const char *why)
{
	if (ac != c->ac || c->ac == NULL)
		return;
	c->ac = NULL;
	link_down(c, why);
}

/* Gives up the live context (WHY): frees it; its calls fail. */
static void
link_fail(struct cluster *c, const char *why)
{
	redisAsyncContext *ac = c->ac;

	if (ac == NULL)
		return;
	c->ac = NULL;
	link_down(c, why);
	/* Its pending callbacks run with NULL (at once, or after the
	 * hiredis callback we may be in). */
	redisAsyncFree(ac);
}

static void call_reply_cb(redisAsyncContext *, void *, void *);

/* Sends CALL on the live context; false (CALL not sent, still the
 * caller's) when hiredis refuses it. */
static bool
call_send(struct cluster *c, struct ccall *call)
{
	call->deadline_us = rq_mono_us() + CALL_DEADLINE_US;
	if (c->ac == NULL ||
	    redisAsyncCommandArgv(c->ac, call_reply_cb, call, call->argc,
		(const char **)call->argv, call->argvlen) != REDIS_OK)
		return false;
	c->st.calls++;
	TAILQ_INSERT_TAIL(&c->calls, call, entry);
	if (TAILQ_FIRST(&c->calls) == call)
		deadline_arm(c);
	return true;
}

/* A call for script S (or CS_NONE) with ARGV copied; EVALSHA's name and
 * digest go first for a script. */
static struct ccall *
call_new(struct cluster *c, enum cluster_script s, int argc,
    const char *const *argv, const size_t *argvlen, cluster_done_fn done,
    void *arg)
{
	struct ccall *call = xcalloc(1, sizeof(*call));
	int k = 0;

	call->c = c;
	call->script = s;
	call->done = done;
	call->arg = arg;
	call->argc = argc + (s != CS_NONE ? 2 : 0);
	call->argv = xcalloc((size_t)call->argc, sizeof(*call->argv));
	call->argvlen = xcalloc((size_t)call->argc, sizeof(*call->argvlen));
	if (s != CS_NONE) {
		call->argv[k] = xstrdup("EVALSHA");
		call->argvlen[k++] = 7;
		call->argv[k] = xstrdup(c->sha[s]);
		call->argvlen[k++] = 40;
	}
	for (int i = 0; i < argc; i++, k++) {
		size_t n = argvlen ? argvlen[i] : strlen(argv[i]);

		call->argv[k] = xmalloc(n + 1);
		memcpy(call->argv[k], argv[i], n);
		call->argv[k][n] = '\0';
		call->argvlen[k] = n;
	}
	return call;
}

/* Redis lost script S (restarted, SCRIPT FLUSH): loads it and sends
 * CALL again (once). */
static void
call_retry_noscript(struct cluster *c, struct ccall *call)
{
	const char *load[3] = { "SCRIPT", "LOAD", cluster_lua[call->script] };
	struct ccall *again, *lc;

	lc = call_new(c, CS_NONE, 3, load, NULL, NULL, NULL);
	if (!call_send(c, lc))
		call_free(lc);
	again = xcalloc(1, sizeof(*again));
	*again = *call;
	again->retried = true;
	/* CALL's arrays now belong to AGAIN */
	call->argv = NULL;
	call->argvlen = NULL;
	call->argc = 0;
	call->ids = NULL;
	call->keys = NULL;
	call->nkeys = 0;
	if (!call_send(c, again)) {
		if (again->done != NULL && !c->freeing)
			again->done(c, again, NULL);
		call_free(again);
	}
}

/* hiredis' reply to a call (NULL: the context is going away). */
static void
call_reply_cb(redisAsyncContext *ac, void *r, void *privdata)
{
	struct ccall *call = privdata;
	struct cluster *c = call->c;
	redisReply *reply = r;

	TAILQ_REMOVE(&c->calls, call, entry);
	if (reply == NULL)
		link_lost(
		    c, ac, ac->errstr[0] ? ac->errstr : "connection lost");
	if (reply != NULL && reply->type == REDIS_REPLY_ERROR &&
	    call->script != CS_NONE && !call->retried && c->ac == ac &&
	    strncmp(reply->str, "NOSCRIPT", 8) == 0) {
		call_retry_noscript(c, call);
		call_free(call);
		deadline_arm(c);
		return;
	}
	if (call->done != NULL && !c->freeing)
		call->done(c, call, reply);
	call_free(call);
	deadline_arm(c);
}

/* A call is past its deadline: Redis does not answer. */
static void
deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct cluster *c = arg;
	struct ccall *call = TAILQ_FIRST(&c->calls);

	if (call != NULL && call->deadline_us <= rq_mono_us()) {
		link_fail(c, "no reply within 400 ms");
		return;
	}
	deadline_arm(c);
}

/* The handshake's PING came back: the link is up. */
static void
ping_done(struct cluster *c, struct ccall *call, const redisReply *reply)
{
	char why[300];

	if (reply == NULL)
		return;
	if (reply->type == REDIS_REPLY_ERROR) {
		snprintf(why, sizeof(why), "PING: %.200s", reply->str);
		link_fail(c, why);
		return;
	}
	c->state = LINK_UP;
	c->tried = true;
	cluster_link_changed(c, true, NULL);
}

/* The handshake's AUTH came back (an error fails the link). */
static void
auth_done(struct cluster *c, struct ccall *call, const redisReply *reply)
{
	char why[300];

	if (reply != NULL && reply->type == REDIS_REPLY_ERROR) {
		snprintf(why, sizeof(why), "AUTH: %.200s", reply->str);
		link_fail(c, why);
	}
}

/* hiredis: the connection is made, or failed. */
static void
connect_cb(const redisAsyncContext *ac, int status)
{
	struct cluster *c = ac->data;

	if (c != NULL && status != REDIS_OK)
		link_lost(c, ac, ac->errstr[0] ? ac->errstr : "connect failed");
}

/* hiredis: the connection is closed (it frees the context next). */
static void
disconnect_cb(const redisAsyncContext *ac, int status)
{
	struct cluster *c = ac->data;

	if (c != NULL)
		link_lost(
		    c, ac, ac->errstr[0] ? ac->errstr : "connection closed");
}

/* The retry timer. */
static void
retry_cb(evutil_socket_t fd, short what, void *arg)
{
	cluster_link_start(arg);
}

void
cluster_link_start(struct cluster *c)
{
	redisAsyncContext *ac;
	const char *ping[1] = { "PING" };
	struct ccall *call;

	if (c->ev_deadline == NULL) {
		c->ev_deadline = evtimer_new(c->base, deadline_cb, c);
		c->ev_retry = evtimer_new(c->base, retry_cb, c);
		for (int s = 0; s < CS_NSCRIPT; s++)
			cluster_lua_sha(s, c->sha[s]);
	}
	if (c->ac != NULL || c->freeing)
		return;
	if (c->conf.addr.unix_socket)
		ac = redisAsyncConnectUnix(c->conf.addr.path);
	else
		ac = redisAsyncConnect(c->conf.addr.ip, c->conf.addr.port);
	if (ac == NULL) {
		link_down(c, "out of memory");
		return;
	}
	if (ac->err) {
		char why[300];

		snprintf(why, sizeof(why), "%.200s", ac->errstr);
		redisAsyncFree(ac);
		link_down(c, why);
		return;
	}
	ac->data = c;
	if (redisLibeventAttach(ac, c->base) != REDIS_OK) {
		redisAsyncFree(ac);
		link_down(c, "cannot attach to the event loop");
		return;
	}
	redisAsyncSetConnectCallback(ac, connect_cb);
	redisAsyncSetDisconnectCallback(ac, disconnect_cb);
	c->ac = ac;
	c->state = LINK_CONNECTING;
	if (c->password != NULL) {
		const char *auth[2] = { "AUTH", c->password };

		call = call_new(c, CS_NONE, 2, auth, NULL, auth_done, NULL);
		call->secret = true; /* zeroed when freed */
		if (!call_send(c, call)) {
			call_free(call);
			link_fail(c, "cannot send AUTH");
			return;
		}
	}
	call = call_new(c, CS_NONE, 1, ping, NULL, ping_done, NULL);
	if (!call_send(c, call)) {
		call_free(call);
		link_fail(c, "cannot send PING");
	}
}

struct ccall *
cluster_call(struct cluster *c, enum cluster_script s, int argc,
    const char *const *argv, const size_t *argvlen, cluster_done_fn done,
    void *arg)
{
	struct ccall *call;

	if (!cluster_link_up(c) || c->freeing)
		return NULL;
	call = call_new(c, s, argc, argv, argvlen, done, arg);
	/* the caller may still attach ids or keys: it is sent now, but its
	 * reply cannot come before this loop turn ends */
	if (!call_send(c, call)) {
		call_free(call);
		return NULL;
	}
	return call;
}

void
cluster_link_stop(struct cluster *c)
{
	redisAsyncContext *ac = c->ac;
	struct ccall *call;

	c->freeing = true;
	c->ac = NULL;
	if (ac != NULL) {
		int done = 0;

		/* what is queued (the leases given back) goes out now, if
		 * the socket takes it; never waited for */
		for (int i = 0; i < 4 && !done; i++)
			if (redisBufferWrite(&ac->c, &done) != REDIS_OK)
				break;
		redisAsyncFree(ac); /* pending calls get NULL: ignored */
	}
	while ((call = TAILQ_FIRST(&c->calls)) != NULL) {
		TAILQ_REMOVE(&c->calls, call, entry);
		call_free(call);
	}
	if (c->ev_deadline != NULL) {
		event_free(c->ev_deadline);
		event_free(c->ev_retry);
		c->ev_deadline = c->ev_retry = NULL;
	}
}
