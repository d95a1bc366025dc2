/*
 * queue_dkim.c - DKIM signing at intake (RFC 6376; Ed25519 by RFC 8463):
 * the message as it will be stored and sent (header rewriting done, our
 * Received:, Date: and Message-ID: in, CRLF line ends) gets one
 * DKIM-Signature field per key of its From: domain, prepended, before it
 * is compressed into its record.  So every attempt, and every retry after
 * a restart, sends the same bytes and the same signature.
 *
 * Canonicalization, hashing and signing are libopendkim's (Debian's
 * libopendkim11, the engine of OpenDKIM), relaxed/relaxed, over a fixed
 * header set (sign_hdrs below, RFC 6376 5.4.1's list) with From:
 * oversigned, so no From: can be added on the way without breaking the
 * signature.
 *
 * Public (to the intake, queue_intake_int.h): intake_dkim_sign().
 *
 * Invariants: a message is never held or refused for DKIM's sake: with
 * no key for its domain, or when signing fails, it is stored unsigned
 * (the first logged once per domain, the second per message); the bytes
 * after the prepended fields are the input, unchanged.  Any thread: the
 * library handle is made once and only read after.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <opendkim/dkim.h>

#include "mail.h"
#include "queue_intake_int.h"

#define SIG_PREFIX "DKIM-Signature: "
#define ONCE_MAX 4096 /* sender domains remembered as logged */

/* The fields signed when present (RFC 6376 5.4.1, and RFC 8058's
 * List-Unsubscribe-Post), and the one signed once more than present. */
static const char *sign_hdrs[] = { "from", "sender", "reply-to", "subject",
	"date", "message-id", "to", "cc", "mime-version", "content-type",
	"content-transfer-encoding", "content-id", "content-description",
	"resent-date", "resent-from", "resent-sender", "resent-to", "resent-cc",
	"resent-message-id", "in-reply-to", "references", "list-id",
	"list-help", "list-unsubscribe", "list-subscribe", "list-post",
	"list-owner", "list-archive", "list-unsubscribe-post", NULL };
static const char *over_hdrs[] = { "from", NULL };

static DKIM_LIB *lib; /* made once, then only read */
static pthread_once_t lib_once = PTHREAD_ONCE_INIT;

/* Domains whose mail went unsigned for want of a key: logged once. */
static struct {
	pthread_mutex_t mu;
	uint64_t v[ONCE_MAX * 2]; /* FNV-1a hashes, 0 = free */
	size_t n;
	bool full; /* "no more logged" was said */
} once = { PTHREAD_MUTEX_INITIALIZER, { 0 }, 0, false };

/* Makes the library handle with relayq's header set. */
static void
lib_init(void)
{
	lib = dkim_init(NULL, NULL);
	if (lib == NULL)
		return;
	if (dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_SIGNHDRS,
		(void *)sign_hdrs, sizeof(char **)) != DKIM_STAT_OK ||
	    dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_OVERSIGNHDRS,
		(void *)over_hdrs, sizeof(char **)) != DKIM_STAT_OK) {
		dkim_close(lib);
		lib = NULL;
	}
}

/* Whether DOMAIN is new to the logged-once set (adds it). */
static bool
once_first(const char *domain)
{
	uint64_t h = intake_name_hash(domain) | 1;
	size_t i = (size_t)h % (ONCE_MAX * 2);
	bool first = false;

	pthread_mutex_lock(&once.mu);
	while (once.v[i] != 0 && once.v[i] != h)
		i = (i + 1) % (ONCE_MAX * 2);
	if (once.v[i] == 0) {
		if (once.n < ONCE_MAX) {
			once.v[i] = h;
			once.n++;
			first = true;
		} else if (!once.full) {
			once.full = true;
			log_info("dkim",
			    "more than %d sender domains without a DKIM key: "
			    "no more are logged",
			    ONCE_MAX);
		}
	}
	pthread_mutex_unlock(&once.mu);
	return first;
}

/* mail_addrlist_parse()'s callback: keeps the first address. */
static enum mail_addr_result
first_addr(void *arg, const char *addr)
{
	snprintf(arg, MAIL_ADDR_LEN_MAX + 1, "%s", addr);
	return MAIL_ADDR_TOOMANY; /* one is enough */
}

/* The domain of From: value V (LEN bytes), lowercase, into DOM; "" when
 * it has none a key could be found for. */
static void
from_domain(const char *v, size_t len, char *dom, size_t domlen)
{
	const struct mail_addr_syntax syn = { 0, NULL, MAIL_ADDR_LEN_MAX };
	struct mail_addr_error err;
	char addr[MAIL_ADDR_LEN_MAX + 1] = "";
	const char *at;
	size_t n;

	dom[0] = '\0';
	(void)mail_addrlist_parse(v, len, &syn, first_addr, addr, &err);
	at = strrchr(addr, '@');
	if (at == NULL || at[1] == '[' || at[1] == '\0')
		return;
	snprintf(dom, domlen, "%s", at + 1);
	n = strlen(dom);
	if (n > 0 && dom[n - 1] == '.')
		dom[n - 1] = '\0';
	for (char *p = dom; *p != '\0'; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a');
}

/* A header field of the stored message: [off, off+len) without its
 * final CRLF. */
struct field {
	size_t off, len;
};

/*
 * Splits the header section of MSG (LEN bytes, CRLF) into fields (at
 * most MAX into F); returns how many, *BODY the offset of the body
 * (after the empty line).  Fields past MAX are not signed.
 */
static size_t
fields_split(
    const char *msg, size_t len, struct field *f, size_t max, size_t *body)
{
	size_t pos = 0, n = 0;

	while (pos < len) {
		size_t start = pos;
		const char *crlf;

		if (len - pos >= 2 && msg[pos] == '\r' &&
		    msg[pos + 1] == '\n') {
			pos += 2; /* the empty line */
			break;
		}
		/* a field runs to a CRLF not followed by a blank */
		for (;;) {
			crlf = memmem(msg + pos, len - pos, "\r\n", 2);
			if (crlf == NULL) {
				pos = len;
				break;
			}
			pos = (size_t)(crlf - msg) + 2;
			if (pos >= len || (msg[pos] != ' ' && msg[pos] != '\t'))
				break;
		}
		if (n < max) {
			f[n].off = start;
			f[n].len = pos - start - (crlf != NULL ? 2 : 0);
			n++;
		}
	}
	*body = pos;
	return n;
}

/*
 * Signs MSG with key K (the header fields F[0..NF), the body from BODY);
 * appends the DKIM-Signature field (CRLF line ends) to OUT.  False with
 * WHY on failure.
 */
static bool
sign_one(const struct cfg_dkim_key *k, const char *idstr, const char *msg,
    size_t len, const struct field *f, size_t nf, size_t body, struct qbuf *out,
    char *why, size_t whylen)
{
	DKIM_STAT st;
	DKIM *d;
	unsigned char *sig = NULL;
	size_t siglen = 0;
	const char *what = "dkim_sign";

	d = dkim_sign(lib, (const unsigned char *)idstr, NULL,
	    (dkim_sigkey_t)k->pem, (const unsigned char *)k->selector,
	    (const unsigned char *)k->domain, DKIM_CANON_RELAXED,
	    DKIM_CANON_RELAXED,
	    k->alg == CFG_DKIM_ED25519_SHA256 ? DKIM_SIGN_ED25519SHA256
					      : DKIM_SIGN_RSASHA256,
	    -1, &st);
	if (d == NULL) {
		snprintf(why, whylen, "%s: %s", what, dkim_getresultstr(st));
		return false;
	}
	st = DKIM_STAT_OK;
	for (size_t i = 0; i < nf && st == DKIM_STAT_OK; i++) {
		what = "dkim_header";
		st = dkim_header(d, (unsigned char *)msg + f[i].off, f[i].len);
	}
	if (st == DKIM_STAT_OK) {
		what = "dkim_eoh";
		st = dkim_eoh(d);
	}
	if (st == DKIM_STAT_OK && body < len) {
		what = "dkim_body";
		st = dkim_body(d, (unsigned char *)msg + body, len - body);
	}
	if (st == DKIM_STAT_OK) {
		what = "dkim_eom";
		st = dkim_eom(d, NULL);
	}
	if (st == DKIM_STAT_OK) {
		what = "dkim_getsighdr";
		st = dkim_getsighdr_d(d, strlen(SIG_PREFIX), &sig, &siglen);
	}
	if (st != DKIM_STAT_OK) {
		const char *e = dkim_geterror(d);

		snprintf(why, whylen, "%s: %s%s%.200s", what,
		    dkim_getresultstr(st), e ? ": " : "", e ? e : "");
		dkim_free(d);
		return false;
	}
	/* the library folds with a bare LF: the stored message has CRLF */
	qbuf_put(out, SIG_PREFIX, strlen(SIG_PREFIX));
	for (size_t i = 0; i < siglen; i++) {
		if (sig[i] == '\r')
			continue;
		if (sig[i] == '\n')
			qbuf_put(out, "\r", 1);
		qbuf_put(out, (const char *)sig + i, 1);
	}
	qbuf_put(out, "\r\n", 2);
	dkim_free(d);
	return true;
}

void
intake_dkim_sign(
    const struct cfg_dkim *dk, const char *idstr, char **msgp, size_t *lenp)
{
	const struct cfg_dkim_key *keys[CFG_DKIM_SIGS_MAX];
	struct field f[256];
	struct qbuf sigs = { 0 };
	const char *msg = *msgp;
	size_t len = *lenp, nf, body, nkeys, signed_ = 0;
	char dom[300], why[400];
	char *out;

	if (dk == NULL)
		return;
	nf = fields_split(msg, len, f, sizeof(f) / sizeof(f[0]), &body);
	dom[0] = '\0';
	for (size_t i = 0; i < nf; i++) {
		size_t nl = mail_field_name_len(msg + f[i].off, f[i].len);
		const char *colon = memchr(msg + f[i].off, ':', f[i].len);

		if (colon != NULL &&
		    mail_field_is(msg + f[i].off, nl, "From")) {
			from_domain(colon + 1,
			    f[i].len - (size_t)(colon + 1 - (msg + f[i].off)),
			    dom, sizeof(dom));
			break;
		}
	}
	nkeys = cfg_dkim_lookup(dk, dom, keys);
	if (nkeys == 0) {
		if (once_first(dom))
			log_info("dkim",
			    "%s: no DKIM key for sender domain %s: its mail "
			    "goes unsigned (logged once per domain)",
			    idstr, dom[0] ? dom : "(none: no From: domain)");
		return;
	}
	pthread_once(&lib_once, lib_init);
	if (lib == NULL) {
		log_warn(
		    "dkim", "%s: libopendkim cannot start: not signed", idstr);
		return;
	}
	for (size_t i = 0; i < nkeys; i++) {
		if (!sign_one(keys[i], idstr, msg, len, f, nf, body, &sigs, why,
			sizeof(why))) {
			log_warn("dkim",
			    "%s: DKIM signing failed (d=%s, s=%s): %s: sent "
			    "without this signature",
			    idstr, keys[i]->domain, keys[i]->selector, why);
			continue;
		}
		signed_++;
		log_info("dkim", "%s: DKIM-Signature added (d=%s, s=%s, a=%s)",
		    idstr, keys[i]->domain, keys[i]->selector,
		    cfg_dkim_alg_name(keys[i]->alg));
	}
	if (signed_ == 0) {
		free(sigs.p);
		return;
	}
	out = xmalloc(sigs.n + len + 1);
	memcpy(out, sigs.p, sigs.n);
	memcpy(out + sigs.n, msg, len);
	out[sigs.n + len] = '\0';
	free(sigs.p);
	free(*msgp);
	*msgp = out;
	*lenp = sigs.n + len;
}
