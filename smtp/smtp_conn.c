/*
 * smtp_conn.c - which connection serves a request: the table of
 * destinations (connections per key), the idle cache, the walk over a
 * request's addresses, and what becomes of a connection when its request
 * is done.  The sessions themselves (open, phases, close) are in
 * smtp_client.c; what a failure means is in smtp_policy.c.
 *
 * Public functions: smtp_client_conn_count(), smtp_client_conn_idle(),
 * smtp_client_conn_total(), smtp_client_on_close(), smtp_client_on_next(),
 * smtp_client_on_idle(), smtp_client_conn_retire().  Module functions:
 * smtp_dest_attach(), smtp_dest_detach(), smtp_dest_free_all(),
 * smtp_cache_remove(), smtp_conn_settings(), smtp_conn_result(),
 * smtp_conn_req_done(), smtp_conn_req_pass(), smtp_conn_next_take(),
 * smtp_conn_next_fits(), smtp_conn_fits(), smtp_conn_adopt(),
 * smtp_req_run(), smtp_addr_next(), smtp_pending_add(),
 * smtp_pending_remove().
 *
 * Invariants: dest->nconn counts every open connection of the key
 * (connecting, busy, idle) and a destination is freed with its last one;
 * a connection is on its destination's idle list exactly when its phase
 * is SMTP_PH_IDLE, newest first; a request takes a cached connection
 * before it opens a new one, unless rule 12a of smtp_policy.c said not,
 * and only one that logged in with the request's credentials (or, like
 * the request, with none): connections are never shared between
 * different credentials.  A request is not held by a connection the
 * server has not greeted on yet (its SYN may have been answered by a
 * cookie whose final ACK a full accept queue dropped: the server never
 * saw it): a connection of the same key, credentials and helo_name that
 * finishes its request, or is about to send the dot of its last
 * transaction, takes the request of the oldest such pending connection
 * that has waited SMTP_PENDING_TAKE_US for its greeting (not sooner: a
 * greeting normally comes first, and taking the request of a connection
 * about to greet would waste that connection and make the runner open
 * another, over and over); that connection goes on without one, and once
 * it greets asks the idle hook (smtp_client_on_idle) for a request of
 * its destination, or says QUIT when none comes (it is closed when it
 * fails or the client stops before); such an orphan reports nothing.
 * A connection about to send that dot with no such request to take
 * asks the next hook (smtp_client_on_next) for one to carry behind it;
 * a request riding behind another is on no idle or pending list, and a
 * connection carries at most one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_int.h"

/* The bucket of KEY (FNV-1a). */
static unsigned
smtp_dest_hash(const char *key)
{
	uint32_t h = 2166136261u;

	for (; *key != '\0'; key++)
		h = (h ^ (unsigned char)*key) * 16777619u;
	return h % SMTP_DEST_BUCKETS;
}

/* Finds the destination KEY; makes it when CREATE. */
static struct smtp_dest *
smtp_dest_get(struct smtp_client *client, const char *key, bool create)
{
	unsigned b = smtp_dest_hash(key);
	struct smtp_dest *d;

	for (d = client->buckets[b]; d != NULL; d = d->next)
		if (strcmp(d->key, key) == 0)
			return d;
	if (!create)
		return NULL;
	d = xcalloc(1, sizeof(*d));
	d->key = xstrdup(key);
	TAILQ_INIT(&d->idle);
	TAILQ_INIT(&d->pending);
	d->next = client->buckets[b];
	client->buckets[b] = d;
	return d;
}

/* Unlinks and frees D, which has no connection left. */
static void
smtp_dest_free(struct smtp_client *client, struct smtp_dest *d)
{
	struct smtp_dest **pp = &client->buckets[smtp_dest_hash(d->key)];

	while (*pp != d)
		pp = &(*pp)->next;
	*pp = d->next;
	free(d->key);
	free(d);
}

/* Counts CONN, new, as a connection of destination KEY. */
void
smtp_dest_attach(struct smtp_conn *conn, const char *key)
{
	struct smtp_client *client = conn->client;

	conn->dest = smtp_dest_get(client, key, true);
	conn->dest->nconn++;
	client->nconn++;
	TAILQ_INSERT_TAIL(&client->conns, conn, entry);
}

/* Uncounts CONN, closed; frees its destination when it was the last. */
void
smtp_dest_detach(struct smtp_conn *conn)
{
	struct smtp_client *client = conn->client;
	struct smtp_dest *d = conn->dest;

	TAILQ_REMOVE(&client->conns, conn, entry);
	TAILQ_INSERT_TAIL(&client->dead, conn, entry);
	client->nconn--;
	if (client->close_cb != NULL)
		conn->gone_key = xstrdup(d->key); /* for the reaper's hook */
	if (--d->nconn == 0)
		smtp_dest_free(client, d);
	conn->dest = NULL;
}

/* Frees every destination of CLIENT (when it is freed). */
void
smtp_dest_free_all(struct smtp_client *client)
{
	unsigned b;

	for (b = 0; b < SMTP_DEST_BUCKETS; b++)
		while (client->buckets[b] != NULL)
			smtp_dest_free(client, client->buckets[b]);
}

unsigned
smtp_client_conn_count(struct smtp_client *client, const char *key)
{
	struct smtp_dest *d = smtp_dest_get(client, key, false);

	return d ? d->nconn : 0;
}

unsigned
smtp_client_conn_idle(struct smtp_client *client, const char *key)
{
	struct smtp_dest *d = smtp_dest_get(client, key, false);

	return d ? d->nidle : 0;
}

unsigned
smtp_client_conn_total(struct smtp_client *client)
{
	return client->nconn;
}

void
smtp_client_on_close(struct smtp_client *client,
    void (*closed)(void *arg, const char *key), void *arg)
{
	client->close_cb = closed;
	client->close_arg = arg;
}

unsigned
smtp_client_conn_retire(struct smtp_client *client, const char *key, unsigned n)
{
	struct smtp_dest *d = smtp_dest_get(client, key, false);
	struct smtp_conn *conn, *next;
	unsigned marked = 0;

	if (d == NULL)
		return 0;
	/* Those already on their way out count first... */
	TAILQ_FOREACH(conn, &client->conns, entry)
	if (conn->dest == d && marked < n &&
	    (conn->retire || conn->phase == SMTP_PH_QUIT))
		marked++;
	/* ...then idle ones QUIT now... */
	while (marked < n && (conn = TAILQ_FIRST(&d->idle)) != NULL) {
		smtp_cache_remove(conn);
		conn->retire = true;
		smtp_conn_enter(conn, SMTP_PH_QUIT);
		marked++;
	}
	/* ...then busy ones after the message they are sending. */
	for (conn = TAILQ_FIRST(&client->conns); conn != NULL && marked < n;
	     conn = next) {
		next = TAILQ_NEXT(conn, entry);
		if (conn->dest == d && !conn->retire &&
		    conn->phase != SMTP_PH_QUIT &&
		    conn->phase != SMTP_PH_IDLE) {
			conn->retire = true;
			marked++;
		}
	}
	return marked;
}

/* Takes CONN, idle, off its destination's cache. */
void
smtp_cache_remove(struct smtp_conn *conn)
{
	TAILQ_REMOVE(&conn->dest->idle, conn, idle_entry);
	conn->dest->nidle--;
}

/* Copies the settings CONN keeps from its current request. */
void
smtp_conn_settings(struct smtp_conn *conn)
{
	const struct smtp_request *req = &conn->req->req;

	conn->t_quit = cfg_time(
	    req->scope, CFG_T_QUIT, req->cls, req->first_attempt);
	conn->cache_time = cfg_time(
	    req->scope, CFG_CONN_CACHE_TIME, req->cls, false);
	conn->max_deliveries = cfg_int(req->scope, CFG_MAX_DELIVERIES_PER_CONN);
}

/* Copies CONN's relay and TLS facts into its request's result. */
void
smtp_conn_result(struct smtp_conn *conn)
{
	struct smtp_result *res = &conn->req->result;

	rq_str_put(res->host, sizeof(res->host), 0, conn->host);
	rq_str_put(res->ip, sizeof(res->ip), 0, conn->ip);
	res->port = conn->port;
	res->reused = conn->reused;
	res->dsn_offered = conn->ehlo.dsn;
	rq_str_put(res->tls_proto, sizeof(res->tls_proto), 0,
	    conn->tls_active ? conn->tls_proto : "");
	rq_str_put(res->tls_cipher, sizeof(res->tls_cipher), 0,
	    conn->tls_active ? conn->tls_cipher : "");
	res->tls_bits = conn->tls_active ? conn->tls_bits : 0;
	res->tls_verified = conn->tls_active && conn->tls_verified;
	rq_str_put(res->tls_dane, sizeof(res->tls_dane), 0,
	    conn->tls_active ? conn->tls_dane : "");
	rq_str_put(res->auth_mech, sizeof(res->auth_mech), 0,
	    conn->authed ? cfg_sasl_name(conn->auth_mech) : "");
}

/* Whether CONN may wait in the cache for another request. */
static bool
conn_cacheable(const struct smtp_conn *conn)
{
	return !conn->client->shutting_down && !conn->retire &&
	    conn->cache_time > 0 &&
	    (conn->max_deliveries <= 0 ||
		conn->deliveries < (uint64_t)conn->max_deliveries);
}

void
smtp_pending_add(struct smtp_conn *conn)
{
	if (conn->pending || conn->req == NULL)
		return;
	conn->pending = true;
	conn->pending_us = rq_now_us();
	TAILQ_INSERT_TAIL(&conn->dest->pending, conn, pending_entry);
}

void
smtp_pending_remove(struct smtp_conn *conn)
{
	if (!conn->pending)
		return;
	conn->pending = false;
	TAILQ_REMOVE(&conn->dest->pending, conn, pending_entry);
}

/*
 * Takes for CONN the request of the oldest connection of its destination
 * that has waited SMTP_PENDING_TAKE_US and not greeted yet and was made
 * for the same credentials and helo_name, or NULL.  That connection goes
 * on as an orphan (see the top).
 */
static struct smtp_req *
pending_take(struct smtp_conn *conn)
{
	int64_t before;
	struct smtp_conn *p;
	struct smtp_req *req;

	if (TAILQ_EMPTY(&conn->dest->pending))
		return NULL;
	before = rq_now_us() - SMTP_PENDING_TAKE_US;
	TAILQ_FOREACH(p, &conn->dest->pending, pending_entry)
	{
		if (p->pending_us > before)
			return NULL; /* oldest first: the rest waited less */
		if (p->req != NULL && !p->req->no_reuse &&
		    strcmp(p->auth_id, conn->auth_id) == 0 &&
		    strcmp(p->helo, conn->helo) == 0)
			break;
	}
	if (p == NULL)
		return NULL;
	req = p->req;
	p->req = NULL;
	smtp_pending_remove(p);
	return req;
}

/* CONN, which just finished a request and may take another, takes a
 * request waiting on a connection that has not greeted; false if none. */
static bool
pending_steal(struct smtp_conn *conn)
{
	struct smtp_req *req = pending_take(conn);

	if (req == NULL)
		return false;
	conn->req = req;
	conn->reused = true;
	conn->need_rset = true; /* RSET before the first MAIL FROM */
	conn->in_txn = false;
	smtp_conn_settings(conn);
	smtp_conn_ready(conn);
	return true;
}

/* Finishes CONN's request; the connection takes a request waiting on a
 * connection that has not greeted, or goes to the cache, or QUITs. */
void
smtp_conn_req_done(struct smtp_conn *conn)
{
	struct smtp_req *req = conn->req;
	struct smtp_dest *d = conn->dest;

	conn->req = NULL;
	conn->deliveries++;
	smtp_req_complete(req);
	if (!conn_cacheable(conn)) {
		smtp_conn_enter(conn, SMTP_PH_QUIT);
		return;
	}
	if (pending_steal(conn))
		return;
	conn->reused = conn->need_rset = conn->in_txn = false;
	TAILQ_INSERT_HEAD(&d->idle, conn, idle_entry);
	d->nidle++;
	smtp_conn_enter(conn, SMTP_PH_IDLE);
}

/* Finishes CONN's request; the one riding behind it takes its place
 * (its transaction is started by the caller). */
void
smtp_conn_req_pass(struct smtp_conn *conn)
{
	struct smtp_req *req = conn->req;

	conn->req = conn->next;
	conn->next = NULL;
	conn->deliveries++;
	smtp_req_complete(req);
	conn->reused = true;
	conn->need_rset = conn->in_txn = false;
	smtp_conn_settings(conn);
}

/* Whether REQ may go on CONN, made for another request: the same
 * destination, credentials and helo_name, and REQ may take a connection
 * made for another. */
bool
smtp_conn_fits(const struct smtp_conn *conn, const struct smtp_req *req)
{
	const char *id = req->req.auth ? req->req.auth->id : "";

	return !conn->dead && !req->no_reuse &&
	    strcmp(conn->dest->key, req->req.dest_key) == 0 &&
	    strcmp(conn->auth_id, id) == 0 &&
	    strcmp(conn->helo, smtp_req_helo(req)) == 0;
}

/* Whether REQ may ride behind CONN's request (smtp_conn_fits()). */
bool
smtp_conn_next_fits(const struct smtp_conn *conn, const struct smtp_req *req)
{
	return conn->next == NULL && smtp_conn_fits(conn, req);
}

/*
 * CONN, an orphan (see the top) that just greeted, asks the idle hook
 * for a request of its destination; true when it got one, whose
 * handshake it goes on with (EHLO next), as a connection made for it.
 */
bool
smtp_conn_adopt(struct smtp_conn *conn)
{
	struct smtp_client *client = conn->client;

	if (client->idle_cb == NULL || client->aborting ||
	    client->shutting_down || conn->dead || conn->retire)
		return false;
	client->adopt_to = conn;
	client->idle_cb(client->idle_arg, conn->dest->key);
	client->adopt_to = NULL;
	if (conn->req == NULL)
		return false;
	smtp_conn_settings(conn);
	smtp_conn_result(conn);
	return true;
}

void
smtp_client_on_idle(struct smtp_client *client,
    void (*idle)(void *arg, const char *key), void *arg)
{
	client->idle_cb = idle;
	client->idle_arg = arg;
}

/*
 * Whether CONN may carry a request behind its current one, after the
 * dot of this transaction: PIPELINING, the connection may be cached
 * after this request and one more (max_deliveries_per_connection), and
 * this transaction is the request's last.  Then it takes a request that
 * has waited long enough on a connection that has not greeted
 * (pending_take()), else asks the next hook for one.  True when
 * CONN->next is set.
 */
bool
smtp_conn_next_take(struct smtp_conn *conn)
{
	struct smtp_client *client = conn->client;
	const struct smtp_req *req = conn->req;
	size_t i, open = 0, in_txn = 0;

	if (conn->next != NULL)
		return true;
	if (!conn->ehlo.pipelining || !conn_cacheable(conn) ||
	    (conn->max_deliveries > 0 &&
		conn->deliveries + 1 >= (uint64_t)conn->max_deliveries))
		return false;
	/* the last transaction: nobody without a result outside it */
	for (i = 0; i < req->req.nrcpts; i++)
		open += req->res[i].cls == 0;
	for (i = 0; i < req->ntxn; i++)
		in_txn += req->res[req->txn[i]].cls == 0;
	if (open != in_txn)
		return false;
	if ((conn->next = pending_take(conn)) != NULL)
		return true;
	if (client->next_cb == NULL)
		return false;
	client->next_to = conn;
	client->next_cb(client->next_arg, conn->req->req.arg);
	client->next_to = NULL;
	return conn->next != NULL && !conn->dead;
}

void
smtp_client_on_next(struct smtp_client *client,
    void (*next)(void *arg, void *req_arg), void *arg)
{
	client->next_cb = next;
	client->next_arg = arg;
}

/* Takes the newest idle connection of REQ's destination that logged in
 * with REQ's credentials (or none, as REQ) and greeted with REQ's
 * helo_name, for REQ, or NULL. */
static struct smtp_conn *
cache_take(struct smtp_req *req)
{
	struct smtp_dest *d = smtp_dest_get(
	    req->client, req->req.dest_key, false);
	const char *id = req->req.auth ? req->req.auth->id : "";
	const char *helo = smtp_req_helo(req);
	struct smtp_conn *conn;

	if (d == NULL || req->no_reuse)
		return NULL;
	TAILQ_FOREACH(conn, &d->idle, idle_entry)
	if (strcmp(conn->auth_id, id) == 0 && strcmp(conn->helo, helo) == 0)
		break;
	if (conn == NULL)
		return NULL;
	smtp_cache_remove(conn);
	conn->phase = SMTP_PH_NONE; /* off the idle list */
	conn->req = req;
	conn->reused = true;
	conn->need_rset = true; /* RSET before the first MAIL FROM */
	return conn;
}

/* Starts (or restarts) REQ: on an idle cached connection if any. */
void
smtp_req_run(struct smtp_req *req)
{
	struct smtp_conn *conn;

	if (req->client->aborting) {
		smtp_addr_next(req);
		return;
	}
	if ((conn = cache_take(req)) != NULL) {
		smtp_conn_settings(conn);
		smtp_conn_ready(conn);
		return;
	}
	req->addr_idx = 0;
	smtp_conn_open(req);
}

/* Moves REQ to its next address after a pre-session failure (the same
 * one again for the tls=may plaintext retry), or gives up (rule 13; at
 * once after an AUTH or token failure, rule 15). */
void
smtp_addr_next(struct smtp_req *req)
{
	if (!req->client->aborting && !req->stop_walk &&
	    (req->plain_retry || ++req->addr_idx < req->req.naddrs)) {
		smtp_conn_open(req);
		return;
	}
	smtp_req_give_up(req);
}
