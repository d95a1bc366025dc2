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

/* Frees REQ and its copies. */
void
smtp_req_free(struct smtp_req *req)
{
	size_t i;

	for (i = 0; i < req->req.naddrs; i++) {
		free((char *)req->addrs[i].host);
		free((struct smtp_tlsa *)req->addrs[i].tlsa);
	}
	for (i = 0; i < req->req.nrcpts; i++) {
		free((char *)req->rcpts[i].addr);
		free((char *)req->rcpts[i].orcpt);
	}
	free(req->addrs);
	free(req->rcpts);
	free(req->res);
	free(req->accepted);
	free(req->txn);
	free((char *)req->req.dest_key);
	free((char *)req->req.sender);
	free((char *)req->req.envid);
	free(req);
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

/* Whether R is complete and every address and string in it is safe. */
static bool
request_ok(const struct smtp_request *r)
{
	size_t i;

	if (r->naddrs == 0 || r->nrcpts == 0 || r->addrs == NULL ||
	    r->rcpts == NULL || r->dest_key == NULL || r->scope == NULL ||
	    r->done == NULL || (r->msg == NULL && r->msglen > 0) ||
	    !addr_ok(r->sender) || (r->envid != NULL && !addr_ok(r->envid)))
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
		if (!addr_ok(r->rcpts[i].addr) ||
		    (r->rcpts[i].orcpt != NULL && !addr_ok(r->rcpts[i].orcpt)))
			return false;
	return true;
}

/* Copies R's strings, addresses and recipients into REQ. */
static void
req_copy(struct smtp_req *req, const struct smtp_request *r)
{
	size_t i;

	req->req = *r;
	req->req.dest_key = xstrdup(r->dest_key);
	req->req.sender = xstrdup(r->sender);
	req->req.envid = r->envid ? xstrdup(r->envid) : NULL;
	req->addrs = xcalloc(r->naddrs, sizeof(*req->addrs));
	for (i = 0; i < r->naddrs; i++) {
		req->addrs[i] = r->addrs[i];
		req->addrs[i].host = xstrdup(r->addrs[i].host);
		if (r->addrs[i].ntlsa > 0) {
			struct smtp_tlsa *t = xcalloc(
			    r->addrs[i].ntlsa, sizeof(*t));

			memcpy(t, r->addrs[i].tlsa,
			    r->addrs[i].ntlsa * sizeof(*t));
			req->addrs[i].tlsa = t;
		} else {
			req->addrs[i].tlsa = NULL;
		}
	}
	req->rcpts = xcalloc(r->nrcpts, sizeof(*req->rcpts));
	for (i = 0; i < r->nrcpts; i++) {
		req->rcpts[i] = r->rcpts[i];
		req->rcpts[i].addr = xstrdup(r->rcpts[i].addr);
		req->rcpts[i].orcpt = r->rcpts[i].orcpt
		    ? xstrdup(r->rcpts[i].orcpt)
		    : NULL;
	}
	req->req.addrs = req->addrs;
	req->req.rcpts = req->rcpts;
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
	req = xcalloc(1, sizeof(*req));
	req->client = client;
	req_copy(req, r);
	req->res = xcalloc(r->nrcpts, sizeof(*req->res));
	req->accepted = xcalloc(r->nrcpts, sizeof(*req->accepted));
	req->txn = xcalloc(r->nrcpts, sizeof(*req->txn));
	req->eight_bit = smtp_body_8bit(r->msg, r->msglen);
	req->utf8_addrs = request_utf8(r);
	req->result.t_submit = rq_now_us();
	snprintf(req->result.host, sizeof(req->result.host), "none");
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
