/*
 * smtp_cmd.c - the text of the commands that carry a request: MAIL FROM
 * and RCPT TO with their ESMTP parameters (SIZE, BODY, SMTPUTF8, and the
 * DSN ones of RFC 3461: RET, ENVID, NOTIFY, ORCPT), and a whole
 * transaction written at once for PIPELINING (RFC 2920).
 *
 * Public (module) functions: smtp_cmd_mail(), smtp_cmd_rcpt(),
 * smtp_cmd_pipeline().
 * Invariants: a parameter goes out only when the server's EHLO offered
 * its extension; ENVID and ORCPT go out xtext-encoded; addresses were
 * checked at submit time (no CR, LF, "<" or ">"), so no command can
 * carry a second one.
 */
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "mail.h"
#include "smtp_int.h"

/* Appends the string literal S to OUT. */
#define ADD_LIT(out, s) evbuffer_add((out), (s), sizeof(s) - 1)

/* Appends the string S to OUT. */
static void
str_add(struct evbuffer *out, const char *s)
{
	evbuffer_add(out, s, strlen(s));
}

/* Appends "xtext" (RFC 3461) of S to BUF. */
static void
xtext_add(struct evbuffer *buf, const char *s)
{
	char *x = mail_xtext_encode(s);

	evbuffer_add(buf, x, strlen(x));
	free(x);
}

/* Appends the MAIL FROM command of REQ, on CONN, to OUT. */
void
smtp_cmd_mail(const struct smtp_conn *conn, const struct smtp_req *req,
    struct evbuffer *out)
{
	char num[24];

	/* no printf: this runs for every message */
	ADD_LIT(out, "MAIL FROM:<");
	str_add(out, req->req.sender);
	ADD_LIT(out, ">");
	if (conn->ehlo.size) {
		ADD_LIT(out, " SIZE=");
		evbuffer_add(out, num, rq_utoa(num, req->req.msglen));
	}
	if (conn->ehlo.eightbitmime && req->eight_bit)
		ADD_LIT(out, " BODY=8BITMIME");
	if (req->utf8_addrs)
		ADD_LIT(out, " SMTPUTF8");
	if (conn->ehlo.dsn) {
		if (req->req.ret == SMTP_RET_FULL)
			ADD_LIT(out, " RET=FULL");
		else if (req->req.ret == SMTP_RET_HDRS)
			ADD_LIT(out, " RET=HDRS");
		if (req->req.envid != NULL) {
			ADD_LIT(out, " ENVID=");
			xtext_add(out, req->req.envid);
		}
	}
	evbuffer_add(out, "\r\n", 2);
}

/* Appends " NOTIFY=..." for the smtp_notify bits NOTIFY (non-zero). */
static void
notify_add(struct evbuffer *out, unsigned notify)
{
	const char *sep = " NOTIFY=";

	if (notify & SMTP_NOTIFY_NEVER) {
		ADD_LIT(out, " NOTIFY=NEVER");
		return;
	}
	if (notify & SMTP_NOTIFY_SUCCESS) {
		evbuffer_add_printf(out, "%sSUCCESS", sep);
		sep = ",";
	}
	if (notify & SMTP_NOTIFY_FAILURE) {
		evbuffer_add_printf(out, "%sFAILURE", sep);
		sep = ",";
	}
	if (notify & SMTP_NOTIFY_DELAY)
		evbuffer_add_printf(out, "%sDELAY", sep);
}

/* Appends the RCPT TO command for REQ's recipient I to OUT. */
void
smtp_cmd_rcpt(const struct smtp_conn *conn, const struct smtp_req *req,
    struct evbuffer *out, size_t i)
{
	const struct smtp_rcpt *r = &req->rcpts[i];

	ADD_LIT(out, "RCPT TO:<");
	str_add(out, r->addr);
	ADD_LIT(out, ">");
	if (conn->ehlo.dsn && r->notify != 0)
		notify_add(out, r->notify);
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

/* Appends REQ's transaction in one write: RSET first if RSET (a
 * cached connection), MAIL FROM, every RCPT TO and DATA. */
void
smtp_cmd_pipeline(const struct smtp_conn *conn, const struct smtp_req *req,
    struct evbuffer *out, bool rset)
{
	size_t i;

	if (rset)
		ADD_LIT(out, "RSET\r\n");
	smtp_cmd_mail(conn, req, out);
	for (i = 0; i < req->ntxn; i++)
		smtp_cmd_rcpt(conn, req, out, req->txn[i]);
	ADD_LIT(out, "DATA\r\n");
}
