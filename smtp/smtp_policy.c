/*
 * smtp_policy.c - what each failure means: its class, its status, its
 * text, and where the recipients go next.  The session state machine
 * (smtp_client.c) sees a reply, a timeout or a lost connection and calls
 * here; every decision below is one of these rules, and every function
 * names the rule it carries out.
 *
 *  1. A reply's class is its first digit when that is 2 or 5 and 4
 *     otherwise; its status is the enhanced status code the server gave,
 *     else "C.0.0".  A failure's text is "host H[IP] said: REPLY (in
 *     reply to CMD command)" (smtp_why_reply).
 *  2. A 421, or a 3xx to anything but DATA and AUTH, ends the session at
 *     once, without QUIT (the server is going away or out of step), class
 *     4; rule 12 says where the recipients go (smtp_reply_ends_session).
 *  3. A refused greeting, EHLO (once TLS is on, or 4xx; a 5xx before
 *     TLS falls back to HELO), HELO or RSET is class 4 even when it is a
 *     5xx: it speaks of the session, not of the mail.  The client QUITs;
 *     rule 12 (smtp_session_refused).
 *  4. A refused MAIL FROM is the result of every recipient still without
 *     one, in the reply's class (smtp_sender_refused).
 *  5. A refused RCPT TO is that recipient's result, in the reply's
 *     class; an accepted one waits for the end of DATA (smtp_rcpt_replied).
 *  6. A refused DATA (4xx, 5xx, or a 2xx where 354 is due, taken as
 *     class 4) is the result of the transaction's accepted recipients
 *     (smtp_data_refused).
 *  7. The reply to the final dot, whatever its class, is the result of
 *     the transaction's accepted recipients (smtp_dot_replied).
 *  8. SIZE: a message larger than the limit the server announced fails
 *     every recipient left, class 5, 5.3.4, before MAIL FROM; the
 *     connection stays good for the next request (smtp_txn_refused).
 *  9. SMTPUTF8: a non-ASCII sender or recipient for a server that does
 *     not offer SMTPUTF8 fails every recipient left, class 5, 5.6.7, as
 *     Postfix does (smtp_txn_refused).
 * 10. TLS.  A failure of a TLS requirement is a "policy failure": class
 *     4, it goes on to the next address (rule 12) but never marks the
 *     host down (rule 13), since it says nothing of the host's health.
 *     a. tls=encrypt or verify (or credentials, rule 15) and no STARTTLS
 *        offered: 4.7.4, QUIT (smtp_tls_missing).
 *     b. STARTTLS refused: tls=may goes on in plaintext; encrypt and
 *        verify fail with the reply, QUIT (smtp_starttls_refused).
 *     c. Bytes after the reply to STARTTLS (possible command injection):
 *        4.7.0, closed (smtp_starttls_injected).
 *     d. The handshake fails (4.7.5) or times out (rule 11's text),
 *        closed; with tls=may the same address is tried again at once
 *        in plaintext, except with implicit TLS (tls_wrapper, port 465),
 *        where there is no plaintext (smtp_conn_lost,
 *        smtp_conn_timed_out).
 *     e. tls=verify and the chain or the name does not check out: 4.7.5,
 *        QUIT (smtp_tls_unverified).  may and encrypt do not check.
 *     f. TLS cannot be set up on our side: 4.7.5, closed; counted as a
 *        host failure, not a policy one (smtp_tls_setup_failed).
 *     g. tls_fingerprint is set and neither the certificate's SHA-256
 *        nor its public key's is one of them: 4.7.5, QUIT; the reason
 *        gives both digests (smtp_tls_unpinned).  A match counts as
 *        verified; no CA or name is checked.
 *     h. DANE (tls = dane or dane-only and the address has usable
 *        TLSA records, or dane-only): TLS is required (a, b) and a
 *        record must match the certificate (OpenSSL's DANE check, no
 *        name check for DANE-EE); else 4.7.5 "no TLSA record of H
 *        matched", QUIT, next address (smtp_tls_unverified).  Secure
 *        records none of which is usable: as encrypt.
 *     i. An MTA-STS policy in testing mode (tls stays may): what
 *        enforce would refuse (no STARTTLS; a certificate whose chain or
 *        name does not check out) is logged and noted for TLS-RPT as a
 *        failure, and the session goes on (smtp_sts_testing_fail).
 * 11. Connection trouble is class 4 and closes without QUIT: connect
 *     failed or timed out, 4.4.1 ("connect to H[IP]:PORT: ..."); any
 *     other timeout, 4.4.2 ("conversation with H[IP] timed out: timeout
 *     after RCPT TO"); lost connection, 4.4.2 ("lost connection with
 *     H[IP] while sending RCPT TO"); a malformed or overlong reply, or a
 *     reply where none is due, 4.5.0.  Then rule 12.
 * 12. Where the recipients go after a session failure (smtp_conn_fail);
 *     the transaction in progress is void in every case:
 *     a. A cached connection that fails on its opening RSET is not the
 *        host's fault: the request runs again (on another cached
 *        connection or a new one) and the transaction is not counted;
 *        after 3 such failures it takes new connections only.
 *     b. Before any MAIL FROM went out on the connection, or during
 *        MAIL, RCPT, DATA or RSET (the content has not gone out), the
 *        recipients still without a result go on to the next address,
 *        as Postfix does with a soft error on a non-final server; the
 *        failure is kept for rule 13.
 *     c. Once the content went out (the body, the final dot) the message
 *        may have arrived: every recipient left gets the failure (class
 *        4, tried again later) and no other address is tried now.
 * 13. With no address left (or the client aborting), every recipient
 *     left gets the last failure, and the host is marked down (result
 *     host_down) only if no address got as far as MAIL FROM and the last
 *     failure was neither a policy failure nor an abort
 *     (smtp_req_give_up).
 * 14. Aborting (smtp_client_shutdown with abort_active, smtp_client_free)
 *     gives whatever is not yet accepted 4.3.2 "delivery aborted"; no
 *     other address is tried and no host is marked down (smtp_conn_abort,
 *     rule 13).
 * 15. SMTP AUTH (RFC 4954), with credentials: TLS is required first
 *     (rule 10a) unless auth_plaintext.  Every AUTH failure is a policy
 *     failure (rule 10: class 4, never a bounce, the host is not marked
 *     down: other senders' credentials may be good):
 *     a. The server offers no AUTH, or none of the mechanisms
 *        auth_mechanisms allows for the credentials: 4.7.0 naming what
 *        it offers, QUIT, the next address (smtp_auth_unavailable).
 *     b. AUTH (or a SASL response) answered with anything but 235 or
 *        334 (535, 534, 454...): the reply's class made 4 ("5.7.8" ->
 *        "4.7.8", else 4.7.0), "SASL authentication failed; host H[IP]
 *        said: ...", one warning logged for the connection, QUIT, and
 *        no other address is tried: the same credentials would fail
 *        again and could lock the account (smtp_auth_refused).
 *     c. The token command fails, prints no token or times out
 *        (timeout.misc): 4.7.0 "cannot get a token for USER: the token
 *        command P ...", no connection made, no other address tried
 *        (smtp_token_failed).
 * 16. A shortage of this host, not of the destination (no file
 *     descriptor to spare beyond SMTP_FD_RESERVE, EMFILE, ENFILE,
 *     ENOBUFS, ENOMEM, no local port) when opening a connection: every
 *     recipient left gets class 4, 4.3.0 "local resource shortage", with
 *     `local` set so that the caller charges no attempt; no other address
 *     is tried and no host is marked down (smtp_connect_failed).
 *
 * Public (module) functions: those above, and smtp_why_set().
 * Invariant: a recipient's result is written once (smtp_rcpt_set); every
 * failure text has CR/LF and other controls stripped (smtp_why_set).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <event2/bufferevent_ssl.h>
#include <openssl/x509.h>

#include "smtp_int.h"

#define REUSE_RETRIES 3 /* rule 12a */

static const char ABORTED[] = "delivery aborted: the client is shutting down";

/* Fills R as the reason TEXT (N bytes, controls made blanks), class
 * CLS, status STATUS, in PHASE. */
static void
why_fill(struct smtp_rcpt_result *r, int cls, const char *status,
    enum smtp_phase phase, const char *text, size_t n)
{
	memset(r, 0, sizeof(*r));
	r->cls = cls;
	memcpy(r->status, status, strnlen(status, sizeof(r->status) - 1));
	rq_sanitize(r->text, sizeof(r->text), text, n);
	r->phase = phase;
	r->phase_name = smtp_phase_name(phase);
}

/* Fills R as the reason text FMT, class CLS, status STATUS, in PHASE. */
void
smtp_why_set(struct smtp_rcpt_result *r, int cls, const char *status,
    enum smtp_phase phase, const char *fmt, ...)
{
	va_list ap;
	char buf[SMTP_TEXT_MAX];

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	why_fill(r, cls, status, phase, buf, strlen(buf));
}

/* Appends the N bytes at P to BUF (LEN bytes, *O used), cut to fit. */
static void
why_cat(char *buf, size_t len, size_t *o, const char *p, size_t n)
{
	if (*o + n > len - 1)
		n = len - 1 - *o;
	memcpy(buf + *o, p, n);
	*o += n;
}

/* Rule 1: fills R from REPLY, the server's answer to PHASE.  Every
 * reply passes here (four a delivery): no printf on the way of a 2xx
 * or 3xx. */
void
smtp_why_reply(struct smtp_rcpt_result *r, const struct smtp_conn *conn,
    const struct smtp_reply *reply, enum smtp_phase phase)
{
	int cls = reply->code / 100;
	char st[16], buf[SMTP_REPLY_MAX + 32];
	size_t o = 0, sn;

	if (cls != 2 && cls != 5)
		cls = 4;
	if (reply->status[0] != '\0') {
		sn = strnlen(reply->status, sizeof(st) - 1);
		memcpy(st, reply->status, sn);
	} else {
		st[0] = (char)('0' + cls);
		memcpy(st + 1, ".0.0", 4);
		sn = 5;
	}
	st[sn] = '\0';
	if (reply->code >= 100 && reply->code <= 999) {
		char code[4] = { (char)('0' + reply->code / 100),
			(char)('0' + reply->code / 10 % 10),
			(char)('0' + reply->code % 10), ' ' };

		why_cat(buf, sizeof(buf), &o, code, 4);
	} else {
		o = (size_t)snprintf(buf, sizeof(buf), "%d ", reply->code);
	}
	why_cat(buf, sizeof(buf), &o, st, sn);
	if (reply->text[0] != '\0') {
		why_cat(buf, sizeof(buf), &o, " ", 1);
		why_cat(buf, sizeof(buf), &o, reply->text,
		    strnlen(reply->text, sizeof(reply->text)));
	}
	buf[o] = '\0';
	if (cls == 2) {
		why_fill(r, 2, st, phase, buf, o);
	} else {
		smtp_why_set(r, cls, st, phase,
		    "host %s[%s] said: %s (in reply to %s command)", conn->host,
		    conn->ip, buf, smtp_phase_name(phase));
	}
	r->code = reply->code;
	rq_sanitize(r->reply, sizeof(r->reply), buf, o);
}

/* Fails CONN, in its phase, with class 4, STATUS and the text FMT. */
static void __attribute__((format(printf, 4, 5)))
conn_fail_text(struct smtp_conn *conn, bool polite, const char *status,
    const char *fmt, ...)
{
	struct smtp_rcpt_result why;
	char buf[SMTP_TEXT_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	smtp_why_set(&why, 4, status, conn->phase, "%s", buf);
	smtp_conn_fail(conn, polite, &why);
}

/* Rule 2: a 421 anywhere, or a 3xx to anything but DATA and AUTH. */
bool
smtp_reply_ends_session(struct smtp_conn *conn, const struct smtp_reply *reply,
    struct smtp_rcpt_result *why)
{
	/* a 421 to AUTH ("too many bad logins") is an authentication
	 * failure (rule 15b): the host is not marked down for it */
	if ((reply->code != 421 || conn->phase == SMTP_PH_AUTH) &&
	    (reply->code / 100 != 3 || conn->phase == SMTP_PH_DATA ||
		conn->phase == SMTP_PH_AUTH))
		return false;
	why->cls = 4;
	smtp_conn_fail(conn, false, why);
	return true;
}

/* Rule 3: a refusal of the session itself is class 4; QUIT. */
void
smtp_session_refused(struct smtp_conn *conn, struct smtp_rcpt_result *why)
{
	why->cls = 4;
	smtp_conn_fail(conn, true, why);
}

/* Rule 4: the sender is refused, so is every recipient left. */
void
smtp_sender_refused(struct smtp_req *req, const struct smtp_rcpt_result *why)
{
	smtp_rcpt_set_rest(req, why);
	req->mail_failed = true;
}

/* Rule 5: RCPT accepted, or refused with the reply as the result. */
void
smtp_rcpt_replied(
    struct smtp_req *req, size_t i, int cls, const struct smtp_rcpt_result *why)
{
	if (req->res[i].cls != 0)
		return;
	if (cls == 2) {
		req->accepted[i] = true;
		req->txn_accepted++;
	} else {
		smtp_rcpt_set(req, i, why);
	}
}

/* Rule 6: DATA refused (a 2xx counts as class 4). */
void
smtp_data_refused(struct smtp_req *req, int cls, struct smtp_rcpt_result *why)
{
	if (cls == 2)
		why->cls = 4;
	smtp_txn_set_accepted(req, why);
}

/* Rule 7: the reply to the dot is the accepted recipients' result. */
void
smtp_dot_replied(struct smtp_req *req, const struct smtp_rcpt_result *why)
{
	smtp_txn_set_accepted(req, why);
}

/* Rules 8 and 9: SIZE over the server's limit, SMTPUTF8 not offered. */
static bool
txn_refusal(const struct smtp_conn *conn, const struct smtp_req *req,
    struct smtp_rcpt_result *why)
{
	if (conn->ehlo.size && conn->ehlo.size_max > 0 &&
	    req->req.msglen > conn->ehlo.size_max)
		smtp_why_set(why, 5, "5.3.4", SMTP_PH_MAIL,
		    "message size %zu exceeds size limit %llu of server "
		    "%s[%s]",
		    req->req.msglen, (unsigned long long)conn->ehlo.size_max,
		    conn->host, conn->ip);
	else if (req->utf8_addrs && !conn->ehlo.smtputf8)
		smtp_why_set(why, 5, "5.6.7", SMTP_PH_MAIL,
		    "SMTPUTF8 is required, but was not offered by host %s[%s]",
		    conn->host, conn->ip);
	else
		return false;
	return true;
}

/* Rules 8, 9: whether CONN's request cannot go to this server at all
 * (then every recipient left has that result). */
bool
smtp_txn_refused(struct smtp_conn *conn)
{
	struct smtp_rcpt_result why;

	if (!txn_refusal(conn, conn->req, &why))
		return false;
	smtp_rcpt_set_rest(conn->req, &why);
	return true;
}

/* Rules 8, 9, asked for REQ before it rides behind CONN's request. */
bool
smtp_txn_fits(const struct smtp_conn *conn, const struct smtp_req *req)
{
	struct smtp_rcpt_result why;

	return !txn_refusal(conn, req, &why);
}

/* Notes a TLS failure of TYPE (RFC 8460 result-type) for TLS-RPT. */
static void
tls_fail_note(struct smtp_conn *conn, const char *type)
{
	struct smtp_result *res = &conn->req->result;
	struct smtp_tls_fail *f;

	if (res->ntls_fails >= SMTP_TLS_FAILS_MAX)
		return;
	f = &res->tls_fails[res->ntls_fails++];
	snprintf(f->host, sizeof(f->host), "%s", conn->host);
	snprintf(f->ip, sizeof(f->ip), "%s", conn->ip);
	f->type = type;
}

/* Rule 10a: encrypt or verify, and the session is still plaintext. */
bool
smtp_tls_missing(struct smtp_conn *conn)
{
	if (conn->tls_active || conn->tls_level < CFG_TLS_ENCRYPT)
		return false;
	conn->policy_fail = true;
	tls_fail_note(conn, "starttls-not-supported");
	conn_fail_text(conn, true, "4.7.4",
	    "TLS is required%s, but was not offered by host %s[%s]",
	    conn->auth_tls ? " to authenticate (auth_plaintext = no)" : "",
	    conn->host, conn->ip);
	return true;
}

/* Rule 10b: tls=may shrugs off a refused STARTTLS; the others fail. */
bool
smtp_starttls_refused(struct smtp_conn *conn, struct smtp_rcpt_result *why)
{
	if (conn->tls_level == CFG_TLS_MAY)
		return true;
	conn->policy_fail = true;
	tls_fail_note(conn, "starttls-not-supported");
	why->cls = 4;
	smtp_conn_fail(conn, true, why);
	return false;
}

/* Rule 10c: plaintext after the 220 to STARTTLS could be injected. */
void
smtp_starttls_injected(struct smtp_conn *conn)
{
	log_warn("smtp",
	    "%s[%s]: data after the STARTTLS reply: possible "
	    "command injection",
	    conn->host, conn->ip);
	conn->policy_fail = true;
	conn_fail_text(conn, false, "4.7.0",
	    "host %s[%s] sent data after its reply to "
	    "STARTTLS (possible command injection)",
	    conn->host, conn->ip);
}

/* The RFC 8460 result-type of verify result VR. */
static const char *
verify_fail_type(long vr)
{
	return vr == X509_V_ERR_HOSTNAME_MISMATCH ? "certificate-host-mismatch"
	    : vr == X509_V_ERR_CERT_HAS_EXPIRED	  ? "certificate-expired"
						  : "certificate-not-trusted";
}

/* Rule 10i: see smtp_int.h. */
void
smtp_sts_testing_fail(
    struct smtp_conn *conn, bool starttls, X509 *cert, long vr)
{
	tls_fail_note(
	    conn, starttls ? "starttls-not-supported" : verify_fail_type(vr));
	log_info("smtp",
	    "MTA-STS testing: %s[%s]: %s; enforce would defer the mail",
	    conn->host, conn->ip,
	    starttls	       ? "STARTTLS not offered"
		: cert == NULL ? "no certificate"
			       : X509_verify_cert_error_string(vr));
}

/* Rule 10e: tls=verify wants a certificate (CERT) that verified (VR);
 * DANE (rule 10h) a TLSA record that matched it. */
bool
smtp_tls_unverified(struct smtp_conn *conn, X509 *cert, long vr)
{
	if (conn->tls_level == CFG_TLS_DANE && !conn->tls_verified) {
		conn->policy_fail = true;
		tls_fail_note(conn, "validation-failure");
		conn_fail_text(conn, true, "4.7.5",
		    "Server certificate not trusted: %s[%s]: no TLSA record "
		    "of %s matched: %s",
		    conn->host, conn->ip, conn->host,
		    cert == NULL
			? "no certificate"
			: X509_verify_cert_error_string(
			      vr == X509_V_OK ? X509_V_ERR_DANE_NO_MATCH : vr));
		return true;
	}
	if (conn->tls_level != CFG_TLS_VERIFY || conn->tls_verified)
		return false;
	conn->policy_fail = true;
	tls_fail_note(conn, verify_fail_type(vr));
	conn_fail_text(conn, true, "4.7.5",
	    "Server certificate not verified: %s[%s]: %s", conn->host, conn->ip,
	    cert == NULL ? "no certificate"
			 : X509_verify_cert_error_string(vr));
	return true;
}

/* Rule 10g: tls_fingerprint set, and CERT matches none of them. */
bool
smtp_tls_unpinned(struct smtp_conn *conn, X509 *cert)
{
	unsigned char fp[CFG_FINGERPRINT_MAX][32];
	char desc[300];
	size_t n;

	if (conn->tls_level != CFG_TLS_PINNED)
		return false;
	n = cfg_fingerprints(conn->req->req.scope, fp, CFG_FINGERPRINT_MAX);
	conn->tls_verified = smtp_tls_fingerprint_match(
	    cert, (const unsigned char(*)[32])fp, n, desc, sizeof(desc));
	if (conn->tls_verified)
		return false;
	conn->policy_fail = true;
	conn_fail_text(conn, true, "4.7.5",
	    "Server certificate not verified: %s[%s]: fingerprint mismatch: "
	    "%s",
	    conn->host, conn->ip, cert == NULL ? "no certificate" : desc);
	return true;
}

/* Rule 10f: our side could not make the SSL or its bufferevent. */
void
smtp_tls_setup_failed(struct smtp_conn *conn, const char *err)
{
	if (err != NULL)
		conn_fail_text(conn, false, "4.7.5", "TLS setup for %s[%s]: %s",
		    conn->host, conn->ip, err);
	else
		conn_fail_text(conn, false, "4.7.5", "TLS setup for %s[%s]",
		    conn->host, conn->ip);
}

/* Rule 10d: with tls=may a failed handshake is redone in plaintext. */
static void
conn_tls_failed(struct smtp_conn *conn)
{
	if (conn->tls_level == CFG_TLS_MAY && conn->req != NULL &&
	    !conn->wrapper) {
		conn->req->plain_retry = true;
		/* the downgrade is said, as Postfix says it */
		log_warn("smtp",
		    "%s[%s]: TLS handshake failed; trying again without "
		    "TLS (tls = may)",
		    conn->host, conn->ip);
	}
	conn->policy_fail = true;
	if (conn->req != NULL)
		tls_fail_note(conn, "validation-failure");
}

/* Rule 16: whether ERR is a shortage of this host's, not the peer's. */
static bool
errno_local(int err)
{
	return err == EMFILE || err == ENFILE || err == ENOBUFS ||
	    err == ENOMEM || err == EADDRNOTAVAIL || err == EAGAIN;
}

/* Rule 11: connect(2) refused at once. */
void
smtp_connect_failed(struct smtp_conn *conn, int errnum)
{
	struct smtp_rcpt_result why;

	if (errno_local(errnum)) {
		struct smtp_req *req = conn->req;

		smtp_why_set(&why, 4, "4.3.0", SMTP_PH_CONNECT,
		    "local resource shortage: cannot connect to %s[%s]:%u: %s",
		    conn->host, conn->ip, conn->port, strerror(errnum));
		why.local = true;
		conn->req = NULL;
		smtp_conn_close(conn);
		smtp_rcpt_set_rest(req, &why);
		smtp_req_complete(req);
		return;
	}
	smtp_why_set(&why, 4, "4.4.1", SMTP_PH_CONNECT,
	    "connect to %s[%s]:%u: %s", conn->host, conn->ip, conn->port,
	    strerror(errnum));
	smtp_conn_fail(conn, false, &why);
}

/* Rules 10d and 11: EOF or an error on BEV, outside idle and QUIT. */
void
smtp_conn_lost(struct smtp_conn *conn, struct bufferevent *bev, int err)
{
	char buf[256];

	switch (conn->phase) {
	case SMTP_PH_CONNECT:
		conn_fail_text(conn, false, "4.4.1", "connect to %s[%s]:%u: %s",
		    conn->host, conn->ip, conn->port,
		    err ? strerror(err) : "Connection failed");
		break;
	case SMTP_PH_TLS:
		smtp_tls_error(
		    buf, sizeof(buf), bufferevent_get_openssl_error(bev));
		conn_tls_failed(conn);
		conn_fail_text(conn, false, "4.7.5",
		    "TLS handshake with %s[%s] failed: %s", conn->host,
		    conn->ip, buf);
		break;
	default:
		conn_fail_text(conn, false, "4.4.2",
		    "lost connection with %s[%s] while %s", conn->host,
		    conn->ip, smtp_phase_while(conn->phase));
		break;
	}
}

/* Rules 10d and 11: a deadline passed, outside idle and QUIT. */
void
smtp_conn_timed_out(struct smtp_conn *conn)
{
	if (conn->phase == SMTP_PH_CONNECT) {
		conn_fail_text(conn, false, "4.4.1",
		    "connect to %s[%s]:%u: Connection timed out (%s)",
		    conn->host, conn->ip, conn->port,
		    smtp_phase_timeout(conn->phase));
		return;
	}
	if (conn->phase == SMTP_PH_TOKEN) {
		smtp_token_failed(conn, "timed out");
		return;
	}
	if (conn->phase == SMTP_PH_TLS)
		conn_tls_failed(conn);
	conn_fail_text(conn, false, "4.4.2",
	    "conversation with %s[%s] timed out: %s", conn->host, conn->ip,
	    smtp_phase_timeout(conn->phase));
}

/* Rule 11: a reply that is not SMTP, or longer than we take. */
void
smtp_reply_malformed(struct smtp_conn *conn, bool bad)
{
	const char *what = bad ? "a malformed" : "an overlong";

	log_warn("smtp", "%s[%s]: %s reply while %s", conn->host, conn->ip,
	    what + (bad ? 2 : 3), smtp_phase_while(conn->phase));
	conn_fail_text(conn, false, "4.5.0",
	    "host %s[%s] sent %s reply (in reply to %s "
	    "command)",
	    conn->host, conn->ip, what, smtp_phase_name(conn->phase));
}

/* Rule 11: a reply in a phase that expects none. */
void
smtp_reply_unexpected(struct smtp_conn *conn, const struct smtp_reply *reply)
{
	conn_fail_text(conn, false, "4.5.0",
	    "host %s[%s] sent an unexpected reply while %s: %d %s", conn->host,
	    conn->ip, smtp_phase_while(conn->phase), reply->code, reply->text);
}

/* Rule 15a: credentials, but no AUTH, or none of M[0..N) offered. */
void
smtp_auth_unavailable(struct smtp_conn *conn, const enum cfg_sasl *m, size_t n)
{
	char want[64] = "";

	for (size_t i = 0; i < n; i++)
		snprintf(want + strlen(want), sizeof(want) - strlen(want),
		    "%s%s", i ? " " : "", cfg_sasl_name(m[i]));
	conn->policy_fail = true;
	/* the user and the credentials file in the log only: the reason
	 * goes into notices to the sender, mailq and show */
	log_warn("smtp",
	    "%s[%s]:%u: no usable AUTH (offered: %.200s) for %.200s",
	    conn->host, conn->ip, conn->port,
	    conn->ehlo.auth_offered && conn->ehlo.auth_list[0] != '\0'
		? conn->ehlo.auth_list
		: "none",
	    conn->req->req.auth->id);
	if (!conn->ehlo.auth_offered || conn->ehlo.auth_list[0] == '\0')
		conn_fail_text(conn, true, "4.7.0",
		    "host %s[%s] offers no AUTH, but credentials are "
		    "configured for it",
		    conn->host, conn->ip);
	else
		conn_fail_text(conn, true, "4.7.0",
		    "host %s[%s] offers AUTH %s, none of %s that "
		    "auth_mechanisms allows",
		    conn->host, conn->ip, conn->ehlo.auth_list, want);
}

/* Rule 15b: AUTH refused: class 4, logged once, no other address. */
void
smtp_auth_refused(struct smtp_conn *conn, struct smtp_rcpt_result *why)
{
	const struct cfg_auth *a = conn->req->req.auth;
	char st[16], text[SMTP_TEXT_MAX + SMTP_REPLY_MAX + 600];

	if (why->status[0] != '\0' && why->status[1] == '.')
		snprintf(st, sizeof(st), "4%s", why->status + 1);
	else
		snprintf(st, sizeof(st), "4.7.0");
	if (strcmp(st, "4.0.0") == 0)
		snprintf(st, sizeof(st), "4.7.0");
	log_warn("smtp",
	    "%s[%s]:%u: SASL %s authentication failed for %.200s: %.300s%s%s",
	    conn->host, conn->ip, conn->port, cfg_sasl_name(conn->auth_mech),
	    a->id, why->reply, conn->auth_err[0] ? "; " : "", conn->auth_err);
	snprintf(text, sizeof(text),
	    "SASL authentication failed; host %s[%s] said: %s (in reply to "
	    "AUTH command)%s%s",
	    conn->host, conn->ip, why->reply, conn->auth_err[0] ? "; " : "",
	    conn->auth_err);
	rq_sanitize(why->text, sizeof(why->text), text, strlen(text));
	snprintf(why->status, sizeof(why->status), "%s", st);
	why->cls = 4;
	conn->policy_fail = true;
	conn->req->stop_walk = true;
	smtp_conn_fail(conn, true, why);
}

/* Rule 15c: the token command failed: no connection, no next address. */
void
smtp_token_failed(struct smtp_conn *conn, const char *why)
{
	const struct cfg_auth *a = conn->req->req.auth;

	conn->policy_fail = true;
	conn->req->stop_walk = true;
	/* the command, the user and its error output in the log only */
	log_warn("smtp",
	    "cannot get a token for %.200s: the token command "
	    "%.200s %.300s",
	    a->id, a->argv[0], why);
	conn_fail_text(conn, false, "4.7.0",
	    "SASL authentication failed: cannot get a token (the token "
	    "command failed; the log says why)");
}

/* Rule 14: the client is shutting down and aborts CONN's request. */
void
smtp_conn_abort(struct smtp_conn *conn)
{
	conn_fail_text(conn, false, "4.3.2", "%s", ABORTED);
}

/* Rule 12a: REQ rode behind a request on a connection that failed
 * before the server answered REQ's MAIL FROM (or before REQ's turn);
 * run it again, on a fresh connection after REUSE_RETRIES of these. */
void
smtp_next_rerun(struct smtp_req *req)
{
	smtp_txn_void(req);
	if (++req->reuse_retries >= REUSE_RETRIES)
		req->no_reuse = true;
	smtp_req_run(req);
}

/* Rule 12a: a cached connection failed; run REQ again, not counting
 * the transaction it had begun. */
static void
req_retry_reuse(struct smtp_req *req)
{
	req->result.transactions--;
	smtp_next_rerun(req);
}

/* Rule 12b: whether a failure in PHASE came before the content went
 * out (IN_TXN: a MAIL FROM went out on this connection). */
static bool
before_content(bool in_txn, enum smtp_phase phase)
{
	return !in_txn || phase == SMTP_PH_MAIL || phase == SMTP_PH_RCPT ||
	    phase == SMTP_PH_DATA || phase == SMTP_PH_RSET;
}

/*
 * Rule 12: ends CONN's part in its request after a failure WHY, then
 * retries on a fresh connection, moves to the next address, or gives
 * every recipient left WHY.  POLITE: the session is still in step, so
 * QUIT rather than just close.
 */
void
smtp_conn_fail(
    struct smtp_conn *conn, bool polite, const struct smtp_rcpt_result *why)
{
	struct smtp_req *req = conn->req, *next = conn->next;
	bool reuse = conn->reuse_rset || conn->chained, in_txn = conn->in_txn;
	bool policy = conn->policy_fail;
	enum smtp_phase ph = conn->phase;

	conn->req = conn->next = NULL;
	conn->chained = false;
	smtp_conn_leave(conn, polite);
	if (req == NULL) {
		/* nothing */
	} else if (reuse && !req->client->aborting) {
		req_retry_reuse(req);
	} else if (before_content(in_txn, ph)) {
		smtp_txn_void(req);
		req->last = *why;
		req->last_policy = policy;
		smtp_addr_next(req);
	} else {
		smtp_txn_void(req);
		smtp_rcpt_set_rest(req, why);
		smtp_req_complete(req);
	}
	/* the request riding behind: its turn never came */
	if (next != NULL)
		smtp_next_rerun(next);
}

/* Rule 13: the last failure for everyone left; maybe the host is down. */
void
smtp_req_give_up(struct smtp_req *req)
{
	if (req->client->aborting) {
		smtp_why_set(
		    &req->last, 4, "4.3.2", SMTP_PH_NONE, "%s", ABORTED);
		req->last_policy = true;
	}
	req->result.host_down = !req->last_policy && !req->session_seen;
	smtp_rcpt_set_rest(req, &req->last);
	smtp_req_complete(req);
}
