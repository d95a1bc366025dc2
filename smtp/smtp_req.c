/*
 * smtp_req.c - a request, from smtp_request_submit() to its done()
 * callback: the checks on what the caller hands over, the copies the
 * client keeps, the per-recipient results and the completion queue.
 *
 * Public functions: smtp_request_submit().  Module functions:
 * smtp_rcpt_set(), smtp_rcpt_set_rest(), smtp_txn_set_accepted(),
 * smtp_txn_void(), smtp_req_complete(), smtp_req_free(), smtp_req_helo().
 * Invariants: a recipient's result is written once (res[i].cls != 0
 * means final); done() is only ever called from the client's reaper,
 * never from inside smtp_request_submit() or a bufferevent callback;
 * every address that goes into a command has no control character, "<"
 * or ">".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "smtp_int.h"

/* Makes recipient I's result R unless it already has one. */
void
smtp_rcpt_set(struct smtp_req *req, size_t i, const struct smtp_rcpt_result *r)
{
	if (req->res[i].cls == 0)
		req->res[i] = *r;
}

/* Gives every recipient without a result the result R. */
void
smtp_rcpt_set_rest(struct smtp_req *req, const struct smtp_rcpt_result *r)
{
	size_t i;

	for (i = 0; i < req->req.nrcpts; i++)
		smtp_rcpt_set(req, i, r);
}

/* Gives the accepted recipients of the transaction the result R. */
void
smtp_txn_set_accepted(struct smtp_req *req, const struct smtp_rcpt_result *r)
{
	size_t i;

	for (i = 0; i < req->ntxn; i++)
		if (req->accepted[req->txn[i]])
			smtp_rcpt_set(req, req->txn[i], r);
}

/* Voids the transaction in progress: it may be redone elsewhere. */
void
smtp_txn_void(struct smtp_req *req)
{
	size_t i;

	for (i = 0; i < req->ntxn; i++)
		req->accepted[req->txn[i]] = false;
	req->ntxn = req->txn_accepted = 0;
	req->mail_failed = false;
}

/* Queues REQ for its done() callback (called by the reaper). */
void
smtp_req_complete(struct smtp_req *req)
{
	struct smtp_client *client = req->client;

	req->result.nrcpts = req->req.nrcpts;
	req->result.rcpts = req->res;
	req->result.t_done = rq_now_us();
	if (req->result.t_ready == 0)
		req->result.t_ready = req->result.t_done;
	TAILQ_INSERT_TAIL(&client->finished, req, entry);
	event_active(client->reap, EV_TIMEOUT, 1);
}

/* Frees REQ and its copies (one block: req_new()). */
void
smtp_req_free(struct smtp_req *req)
{
	free(req);
}

/* Whether S is safe inside <...> on a command line: no control bytes,
 * and '<' and '>' only inside a quoted string (a local part such as
 * "a>b", which RFC 5321's qtextSMTP allows), so the path ends at its
 * own '>'. */
bool
smtp_path_ok(const char *s)
{
	bool quoted = false;

	if (s == NULL)
		return false;
	for (bool pair = false; *s != '\0'; s++) {
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return false;
		if (pair)
			pair = false; /* the second byte of a quoted pair */
		else if (quoted && *s == '\\')
			pair = true;
		else if (*s == '"')
			quoted = !quoted;
		else if (!quoted && (*s == '<' || *s == '>'))
			return false;
	}
	return !quoted;
}

/* Whether ORCPT's address type (before ';', sent as it is) is an atom;
 * the address after it, as ENVID, goes out xtext-encoded, so any byte is
 * safe there. */
static bool
orcpt_ok(const char *s)
{
	const char *semi = strchr(s, ';');

	for (const char *p = s; semi != NULL && p < semi; p++)
		if (*p <= ' ' || *p >= 0x7f || *p == '=')
			return false;
	return true;
}

/* Whether R is complete and every address and string in it is safe. */
static bool
request_ok(const struct smtp_request *r)
{
	size_t i;

	if (r->naddrs == 0 || r->nrcpts == 0 || r->addrs == NULL ||
	    r->rcpts == NULL || r->dest_key == NULL || r->scope == NULL ||
	    r->done == NULL || (r->msg == NULL && r->msglen > 0) ||
	    !smtp_path_ok(r->sender))
		return false;
	if (r->auth != NULL &&
	    (r->auth->user == NULL || r->auth->id == NULL ||
		(r->auth->password == NULL) == (r->auth->argv == NULL)))
		return false;
	for (i = 0; i < r->naddrs; i++) {
		const struct smtp_addr *a = &r->addrs[i];

		if ((a->sa.ss_family != AF_INET &&
			a->sa.ss_family != AF_INET6) ||
		    a->host == NULL)
			return false;
	}
	for (i = 0; i < r->nrcpts; i++)
		if (!smtp_path_ok(r->rcpts[i].addr) ||
		    (r->rcpts[i].orcpt != NULL && !orcpt_ok(r->rcpts[i].orcpt)))
			return false;
	return true;
}

/* N rounded up to the alignment of every piece of a request's block. */
static size_t
req_align(size_t n)
{
	return (n + 15) & ~(size_t)15;
}

/* The bytes of a copy of the string S in a request's block. */
static size_t
req_strsize(const char *s)
{
	return s != NULL ? req_align(strlen(s) + 1) : 0;
}

/* Takes N bytes (aligned) off the block at *P. */
static void *
req_take(char **p, size_t n)
{
	void *q = *p;

	*p += req_align(n);
	return q;
}

/* A copy of S (NULL for NULL) taken off the block at *P. */
static char *
req_strcopy(char **p, const char *s)
{
	size_t n;

	if (s == NULL)
		return NULL;
	n = strlen(s) + 1;
	return memcpy(req_take(p, n), s, n);
}

/*
 * A new request for R, zeroed, in one block with the copies it keeps
 * (its strings, addresses, TLSA records and recipients) and its arrays
 * (results, accepted, the transaction's recipients): one allocation per
 * request, freed by smtp_req_free().
 */
static struct smtp_req *
req_new(const struct smtp_request *r)
{
	size_t n = req_align(sizeof(struct smtp_req)), i;
	struct smtp_req *req;
	char *p;

	n += req_align(r->naddrs * sizeof(*req->addrs));
	for (i = 0; i < r->naddrs; i++)
		n += req_strsize(r->addrs[i].host) +
		    req_strsize(r->addrs[i].tlsa_base) +
		    req_align(r->addrs[i].ntlsa * sizeof(struct smtp_tlsa));
	n += req_align(r->nrcpts * sizeof(*req->rcpts)) +
	    req_align(r->nrcpts * sizeof(*req->res)) +
	    req_align(r->nrcpts * sizeof(*req->accepted)) +
	    req_align(r->nrcpts * sizeof(*req->txn));
	for (i = 0; i < r->nrcpts; i++)
		n += req_strsize(r->rcpts[i].addr) +
		    req_strsize(r->rcpts[i].orcpt);
	n += req_strsize(r->dest_key) + req_strsize(r->sender) +
	    req_strsize(r->envid);
	p = xcalloc(1, n);
	req = req_take(&p, sizeof(*req));
	req->req = *r;
	req->addrs = req_take(&p, r->naddrs * sizeof(*req->addrs));
	for (i = 0; i < r->naddrs; i++) {
		req->addrs[i] = r->addrs[i];
		req->addrs[i].host = req_strcopy(&p, r->addrs[i].host);
		req->addrs[i].tlsa_base = req_strcopy(
		    &p, r->addrs[i].tlsa_base);
		req->addrs[i].tlsa = NULL;
		if (r->addrs[i].ntlsa > 0)
			req->addrs[i].tlsa = memcpy(
			    req_take(&p,
				r->addrs[i].ntlsa * sizeof(struct smtp_tlsa)),
			    r->addrs[i].tlsa,
			    r->addrs[i].ntlsa * sizeof(struct smtp_tlsa));
	}
	req->rcpts = req_take(&p, r->nrcpts * sizeof(*req->rcpts));
	for (i = 0; i < r->nrcpts; i++) {
		req->rcpts[i] = r->rcpts[i];
		req->rcpts[i].addr = req_strcopy(&p, r->rcpts[i].addr);
		req->rcpts[i].orcpt = req_strcopy(&p, r->rcpts[i].orcpt);
	}
	req->res = req_take(&p, r->nrcpts * sizeof(*req->res));
	req->accepted = req_take(&p, r->nrcpts * sizeof(*req->accepted));
	req->txn = req_take(&p, r->nrcpts * sizeof(*req->txn));
	req->req.dest_key = req_strcopy(&p, r->dest_key);
	req->req.sender = req_strcopy(&p, r->sender);
	req->req.envid = req_strcopy(&p, r->envid);
	req->req.addrs = req->addrs;
	req->req.rcpts = req->rcpts;
	return req;
}

/* Whether R's sender or a recipient needs SMTPUTF8 (non-ASCII). */
static bool
request_utf8(const struct smtp_request *r)
{
	size_t i;

	if (smtp_body_8bit(r->sender, strlen(r->sender)))
		return true;
	for (i = 0; i < r->nrcpts; i++)
		if (smtp_body_8bit(r->rcpts[i].addr, strlen(r->rcpts[i].addr)))
			return true;
	return false;
}

enum smtp_submit_result
smtp_request_submit(struct smtp_client *client, const struct smtp_request *r)
{
	struct smtp_req *req;

	if (client->shutting_down)
		return SMTP_SUBMIT_SHUTDOWN;
	if (!request_ok(r))
		return SMTP_SUBMIT_INVALID;
	req = req_new(r);
	req->client = client;
	req->eight_bit = smtp_body_8bit(r->msg, r->msglen);
	req->utf8_addrs = request_utf8(r);
	req->result.t_submit = rq_now_us();
	snprintf(req->result.host, sizeof(req->result.host), "none");
	if (client->adopt_to != NULL && client->adopt_to->req == NULL &&
	    smtp_conn_fits(client->adopt_to, req)) {
		/* asked for by the idle hook: it takes that connection */
		client->adopt_to->req = req;
		return SMTP_SUBMIT_OK;
	}
	if (client->next_to != NULL &&
	    smtp_conn_next_fits(client->next_to, req)) {
		/* asked for by the next hook: it rides behind */
		client->next_to->next = req;
		client->next_to->req->result.next_taken = true;
		return SMTP_SUBMIT_NEXT;
	}
	smtp_req_run(req);
	return SMTP_SUBMIT_OK;
}

/* The EHLO name of REQ; see smtp_int.h. */
const char *
smtp_req_helo(const struct smtp_req *req)
{
	const char *h = req->req.scope != NULL
	    ? cfg_str(req->req.scope, CFG_HELO_NAME)
	    : "";

	return h[0] != '\0' ? h : req->client->helo;
}
