/*
 * smtp_auth.c - SMTP AUTH (RFC 4954) in the session: the mechanism
 * chosen from EHLO's AUTH list by auth_mechanisms, the exchange (PLAIN
 * with an initial response, LOGIN's two challenges, XOAUTH2 and
 * OAUTHBEARER with a token from the token command, smtp_token.c), and
 * the pure SASL helper (the client responses; base64 is cfg/util.c's).
 *
 * Public (pure): smtp_sasl_response().  Module functions: smtp_auth_start(),
 * smtp_auth_reply().
 *
 * The session reaches SMTP_PH_AUTH after EHLO (after TLS when TLS is
 * required, which credentials make it unless auth_plaintext); a 235
 * makes it ready for mail, a 334 gets the mechanism's next response,
 * anything else is a refusal (rule 15 of smtp_policy.c).
 *
 * Invariants: a secret (password, token) goes onto the wire only inside
 * base64 in a buffer of our own that the output evbuffer references and
 * that is zeroed once sent (or when the connection goes); every other
 * copy is zeroed right after use; nothing here logs a secret.
 */
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "smtp_int.h"

enum auth_step {
	AUTH_SENT = 1, /* AUTH (with its initial response) is out */
	AUTH_LOGIN_USER, /* LOGIN: the user name is out */
	AUTH_LOGIN_PASS, /* LOGIN: the password is out */
	AUTH_ENDING, /* an error acknowledgement or "*" is out */
};

/* ---- the client's responses ---- */

/* Appends N bytes of S at OUT+*O (bounded by OUTLEN); false if full. */
static bool
put(unsigned char *out, size_t outlen, size_t *o, const void *s, size_t n)
{
	if (*o + n > outlen)
		return false;
	memcpy(out + *o, s, n);
	*o += n;
	return true;
}

/* Appends a saslname (RFC 5801: "," as "=2C", "=" as "=3D"). */
static bool
put_saslname(unsigned char *out, size_t outlen, size_t *o, const char *s)
{
	for (; *s != '\0'; s++) {
		bool ok = *s == ',' ? put(out, outlen, o, "=2C", 3)
		    : *s == '='	    ? put(out, outlen, o, "=3D", 3)
				    : put(out, outlen, o, s, 1);

		if (!ok)
			return false;
	}
	return true;
}

size_t
smtp_sasl_response(enum cfg_sasl mech, const char *user, const char *secret,
    const char *host, uint16_t port, unsigned char *out, size_t outlen)
{
	size_t o = 0, ul = strlen(user), sl = strlen(secret);
	char num[16];
	bool ok;

	switch (mech) {
	case CFG_SASL_PLAIN:
		ok = put(out, outlen, &o, "", 1) &&
		    put(out, outlen, &o, user, ul) &&
		    put(out, outlen, &o, "", 1) &&
		    put(out, outlen, &o, secret, sl);
		break;
	case CFG_SASL_XOAUTH2:
		ok = put(out, outlen, &o, "user=", 5) &&
		    put(out, outlen, &o, user, ul) &&
		    put(out, outlen, &o, "\1auth=Bearer ", 13) &&
		    put(out, outlen, &o, secret, sl) &&
		    put(out, outlen, &o, "\1\1", 2);
		break;
	case CFG_SASL_OAUTHBEARER:
		snprintf(num, sizeof(num), "%u", (unsigned)port);
		ok = put(out, outlen, &o, "n,a=", 4) &&
		    put_saslname(out, outlen, &o, user) &&
		    put(out, outlen, &o, ",\1host=", 7) &&
		    put(out, outlen, &o, host, strlen(host)) &&
		    put(out, outlen, &o, "\1port=", 6) &&
		    put(out, outlen, &o, num, strlen(num)) &&
		    put(out, outlen, &o, "\1auth=Bearer ", 13) &&
		    put(out, outlen, &o, secret, sl) &&
		    put(out, outlen, &o, "\1\1", 2);
		break;
	default:
		ok = false;
		break;
	}
	if (!ok) {
		rq_cleanse(out, outlen);
		return 0;
	}
	return o;
}

/* ---- the exchange ---- */

/* Zeroes and frees a sent line (evbuffer_add_reference's cleanup). */
static void
line_cleanse(const void *data, size_t len, void *arg)
{
	rq_cleanse((void *)data, len);
	free((void *)data);
}

/* Sends PREFIX, then base64 of DATA (LEN bytes) if PREFIX is NULL or
 * DATA is given, and CRLF, from a buffer that is zeroed once sent. */
static void
auth_send(
    struct smtp_conn *conn, const char *prefix, const void *data, size_t len)
{
	size_t plen = prefix ? strlen(prefix) : 0, n;
	char *line = xmalloc(plen + 1 + RQ_B64_LEN(len) + 3);

	memcpy(line, prefix ? prefix : "", plen);
	n = plen;
	if (data != NULL) {
		if (plen > 0)
			line[n++] = ' ';
		n += rq_base64_encode(data, len, line + n);
	}
	memcpy(line + n, "\r\n", 2);
	n += 2;
	if (evbuffer_add_reference(bufferevent_get_output(conn->bev), line, n,
		line_cleanse, NULL) != 0)
		line_cleanse(line, n, NULL);
}

/* The password or the token of CONN's credentials. */
static const char *
auth_secret(const struct smtp_conn *conn)
{
	const struct cfg_auth *a = conn->req->req.auth;

	return a->argv != NULL ? (conn->token ? conn->token : "") : a->password;
}

/* Sends AUTH MECH with its initial response (none for LOGIN). */
static void
auth_send_initial(struct smtp_conn *conn, enum cfg_sasl mech)
{
	const struct cfg_auth *a = conn->req->req.auth;
	const char *secret = auth_secret(conn);
	size_t cap = strlen(a->user) * 3 + strlen(secret) + strlen(conn->host) +
	    64,
	       n;
	unsigned char *resp;
	char cmd[32];

	snprintf(cmd, sizeof(cmd), "AUTH %s", cfg_sasl_name(mech));
	if (mech == CFG_SASL_LOGIN) {
		auth_send(conn, cmd, NULL, 0);
		return;
	}
	resp = xmalloc(cap);
	n = smtp_sasl_response(
	    mech, a->user, secret, conn->host, conn->port, resp, cap);
	auth_send(conn, cmd, resp, n);
	rq_cleanse(resp, cap);
	free(resp);
}

/* Starts AUTH on CONN (EHLO done, TLS up if required): the first of
 * the mechanisms auth_mechanisms allows that the server offers. */
void
smtp_auth_start(struct smtp_conn *conn)
{
	const struct smtp_request *r = &conn->req->req;
	enum cfg_sasl m[CFG_SASL_MAX];
	size_t n = cfg_auth_mechs(r->scope, r->auth, m), i;

	for (i = 0; i < n; i++)
		if (conn->ehlo.auth & SMTP_AUTH_BIT(m[i]))
			break;
	if (i == n) {
		smtp_auth_unavailable(conn, m, n);
		return;
	}
	conn->auth_mech = m[i];
	conn->auth_step = AUTH_SENT;
	conn->auth_err[0] = '\0';
	auth_send_initial(conn, m[i]);
	smtp_token_forget(conn); /* sent: it is of no further use */
	smtp_conn_enter(conn, SMTP_PH_AUTH);
}

/* A 334 to an XOAUTH2 or OAUTHBEARER response carries the server's
 * error (JSON, base64): keep it for the reason, acknowledge it. */
static void
auth_oauth_error(struct smtp_conn *conn, const struct smtp_reply *reply)
{
	unsigned char buf[SMTP_REPLY_MAX];
	size_t n;

	if (rq_base64_decode(
		reply->text, strlen(reply->text), buf, sizeof(buf), &n))
		rq_sanitize(conn->auth_err, sizeof(conn->auth_err),
		    (const char *)buf, n);
	/* RFC 7628 3.2.3: a dummy "\1"; XOAUTH2: an empty line. */
	if (conn->auth_mech == CFG_SASL_OAUTHBEARER)
		auth_send(conn, NULL, "\1", 1);
	else
		auth_send(conn, "", NULL, 0);
}

/* The reply REPLY (WHY as a failure) in SMTP_PH_AUTH. */
void
smtp_auth_reply(struct smtp_conn *conn, const struct smtp_reply *reply,
    struct smtp_rcpt_result *why)
{
	const struct cfg_auth *a = conn->req->req.auth;

	if (reply->code / 100 == 2) {
		conn->authed = true;
		smtp_conn_ready(conn);
		return;
	}
	if (reply->code != 334) {
		smtp_auth_refused(conn, why);
		return;
	}
	if (conn->auth_mech == CFG_SASL_LOGIN && conn->auth_step == AUTH_SENT) {
		auth_send(conn, NULL, a->user, strlen(a->user));
		conn->auth_step = AUTH_LOGIN_USER;
	} else if (conn->auth_mech == CFG_SASL_LOGIN &&
	    conn->auth_step == AUTH_LOGIN_USER) {
		auth_send(conn, NULL, a->password, strlen(a->password));
		conn->auth_step = AUTH_LOGIN_PASS;
	} else if ((conn->auth_mech == CFG_SASL_XOAUTH2 ||
		       conn->auth_mech == CFG_SASL_OAUTHBEARER) &&
	    conn->auth_step == AUTH_SENT) {
		auth_oauth_error(conn, reply);
		conn->auth_step = AUTH_ENDING;
	} else {
		/* A challenge the mechanism has no answer for: cancel. */
		auth_send(conn, "*", NULL, 0);
		conn->auth_step = AUTH_ENDING;
	}
	smtp_conn_enter(conn, SMTP_PH_AUTH);
}
