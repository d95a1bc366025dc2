/*
 * queue_dkim.c - DKIM signing at intake (RFC 6376; Ed25519 by RFC 8463):
 * the message as it will be stored and sent (header rewriting done, our
 * Received:, Date: and Message-ID: in, CRLF line ends) gets one
 * DKIM-Signature field per key of its From: domain, prepended, before it
 * is compressed into its record.  So every attempt, and every retry after
 * a restart, sends the same bytes and the same signature.
 *
 * Canonicalization and hashing are libopendkim's (Debian's
 * libopendkim11, the engine of OpenDKIM), relaxed/relaxed, over a fixed
 * header set (sign_hdrs below, RFC 6376 5.4.1's list) with From:
 * oversigned, so no From: can be added on the way without breaking the
 * signature; libopendkim signs rsa-sha256, OpenSSL's EVP signs
 * ed25519-sha256 over libopendkim's hash (see sign_ed25519(): the
 * library leaks Ed25519 keys).
 *
 * Public (to the intake, queue_intake_int.h): intake_dkim_sign(), and
 * intake_dkim_from() (its header splitter, for the fuzzer).
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

#include <openssl/evp.h>
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

static DKIM_LIB *lib; /* signing; made once, then only read */
static DKIM_LIB *vlib; /* Ed25519's hashes, in verify mode: see below */
static pthread_once_t lib_once = PTHREAD_ONCE_INIT;

/* Domains whose mail went unsigned for want of a key: logged once. */
static struct {
	pthread_mutex_t mu;
	uint64_t v[ONCE_MAX * 2]; /* FNV-1a hashes, 0 = free */
	size_t n;
	bool full; /* "no more logged" was said */
} once = { PTHREAD_MUTEX_INITIALIZER, { 0 }, 0, false };

/* vlib's key lookup: none, ever (no DNS query at intake). */
static DKIM_CBSTAT
no_key_lookup(DKIM *d, DKIM_SIGINFO *sig, u_char *buf, size_t buflen)
{
	(void)d;
	(void)sig;
	(void)buf;
	(void)buflen;
	return DKIM_CBSTAT_NOTFOUND;
}

/* Makes the library handles: signing with relayq's header set, and
 * hashing for Ed25519. */
static void
lib_init(void)
{
	unsigned flags = DKIM_LIBFLAGS_DELAYSIGPROC; /* no key lookups */

	lib = dkim_init(NULL, NULL);
	vlib = dkim_init(NULL, NULL);
	if (lib == NULL || vlib == NULL ||
	    dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_SIGNHDRS,
		(void *)sign_hdrs, sizeof(char **)) != DKIM_STAT_OK ||
	    dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_OVERSIGNHDRS,
		(void *)over_hdrs, sizeof(char **)) != DKIM_STAT_OK ||
	    dkim_options(vlib, DKIM_OP_SETOPT, DKIM_OPTS_FLAGS, &flags,
		sizeof(flags)) != DKIM_STAT_OK ||
	    dkim_set_key_lookup(vlib, no_key_lookup) != DKIM_STAT_OK) {
		if (lib != NULL)
			dkim_close(lib);
		if (vlib != NULL)
			dkim_close(vlib);
		lib = vlib = NULL;
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
	for (char *p = dom; *p != '\0'; p++) {
		if ((unsigned char)*p <= ' ' || *p == 0x7f) {
			/* what the address parser let through from a broken
			 * field ("e [$]"): no key is for it */
			dom[0] = '\0';
			return;
		}
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a');
	}
}

/* A header field of the stored message: [off, off+len) without its
 * final CRLF. */
struct field {
	size_t off, len;
};

/*
 * Splits the header section of MSG (LEN bytes, CRLF) into fields: *F
 * (malloc'd; the caller frees it) gets every one, *BODY the offset of
 * the body (after the empty line).  Returns how many.
 */
static size_t
fields_split(const char *msg, size_t len, struct field **fp, size_t *body)
{
	size_t pos = 0, n = 0, cap = 0;
	struct field *f = NULL;

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
		if (n == cap) {
			cap = cap ? cap * 2 : 32;
			f = xrealloc(f, cap * sizeof(*f));
		}
		f[n].off = start;
		f[n].len = pos - start - (crlf != NULL ? 2 : 0);
		n++;
	}
	*fp = f;
	*body = pos;
	return n;
}

/* The domain of the first From: field of F[0..NF) (MSG's fields) into
 * DOM; "" when there is none. */
static void
from_field_domain(
    const char *msg, const struct field *f, size_t nf, char *dom, size_t domlen)
{
	dom[0] = '\0';
	for (size_t i = 0; i < nf; i++) {
		const char *name = msg + f[i].off;
		size_t nl = mail_field_name_len(name, f[i].len);
		const char *colon = memchr(name, ':', f[i].len);

		if (colon != NULL && mail_field_is(name, nl, "From")) {
			from_domain(colon + 1,
			    f[i].len - (size_t)(colon + 1 - name), dom, domlen);
			return;
		}
	}
}

size_t
intake_dkim_from(
    const char *msg, size_t len, char *dom, size_t domlen, size_t *body)
{
	struct field *f;
	size_t nf = fields_split(msg, len, &f, body);

	from_field_domain(msg, f, nf, dom, domlen);
	free(f);
	return nf;
}

/*
 * Ed25519 (RFC 8463).  libopendkim 2.11.0~beta2 (Debian 12) signs
 * ed25519-sha256 correctly but leaks, per signature, the private key it
 * parsed (an EVP_PKEY never freed, so never cleansed either) and its
 * output buffer: dkim_free() frees key material only for RSA keys.  In a
 * daemon that is memory growing with every message and copies of the
 * key left in the heap.  So for Ed25519 the library still does all the
 * canonicalization and hashing, in verify mode (which loads no private
 * key, and with DKIM_LIBFLAGS_DELAYSIGPROC looks up no public key): it
 * is fed the message under the DKIM-Signature field to be, and
 * dkim_sig_gethashes() gives the body hash (first pass) and the header
 * hash over that field with b= empty (second pass, with the real bh=);
 * OpenSSL's EVP signs the header hash with PureEdDSA, as RFC 8463 says.
 */

/* Feeds the field SIGHDR and MSG to a verify handle; the header and body
 * hashes of that signature into HH and BH (32 bytes each). */
static bool
ed_hashes(const char *idstr, const char *sighdr, const char *msg, size_t len,
    const struct field *f, size_t nf, size_t body, unsigned char *hh,
    unsigned char *bh, char *why, size_t whylen)
{
	DKIM_STAT st;
	DKIM *d;
	DKIM_SIGINFO **sigs;
	int nsigs = 0;
	void *h, *b;
	size_t hl, bl;

	d = dkim_verify(vlib, (const unsigned char *)idstr, NULL, &st);
	if (d == NULL) {
		snprintf(why, whylen, "dkim_verify: %s", dkim_getresultstr(st));
		return false;
	}
	st = dkim_header(d, (unsigned char *)sighdr, strlen(sighdr));
	for (size_t i = 0; i < nf && st == DKIM_STAT_OK; i++)
		st = dkim_header(d, (unsigned char *)msg + f[i].off, f[i].len);
	if (st == DKIM_STAT_OK)
		st = dkim_eoh(d);
	/* ours is the first field, so the first signature; none is to be
	 * checked (dkim_eom() would look up keys) */
	if (st == DKIM_STAT_OK)
		st = dkim_getsiglist(d, &sigs, &nsigs);
	if (st == DKIM_STAT_OK && nsigs < 1)
		st = DKIM_STAT_INTERNAL;
	for (int i = 0; st == DKIM_STAT_OK && i < nsigs; i++)
		dkim_sig_ignore(sigs[i]);
	if (st == DKIM_STAT_OK && body < len)
		st = dkim_body(d, (unsigned char *)msg + body, len - body);
	/* no signature checked: "no signature" is what it says then */
	if (st == DKIM_STAT_OK && (st = dkim_eom(d, NULL)) == DKIM_STAT_NOSIG)
		st = DKIM_STAT_OK;
	if (st == DKIM_STAT_OK)
		st = dkim_sig_gethashes(sigs[0], &h, &hl, &b, &bl);
	if (st == DKIM_STAT_OK && (hl != 32 || bl != 32))
		st = DKIM_STAT_INTERNAL;
	if (st != DKIM_STAT_OK) {
		const char *e = dkim_geterror(d);

		snprintf(why, whylen, "hashes: %s%s%.200s",
		    dkim_getresultstr(st), e ? ": " : "", e ? e : "");
		dkim_free(d);
		return false;
	}
	memcpy(hh, h, 32);
	memcpy(bh, b, 32);
	dkim_free(d);
	return true;
}

/* Signs hash HH (32 bytes) with K's Ed25519 key; base64 into OUT. */
static bool
ed_sign(const struct cfg_dkim_key *k, const unsigned char *hh, char *out,
    size_t outlen)
{
	unsigned char sig[64];
	size_t sl = sizeof(sig);
	EVP_MD_CTX *mc = EVP_MD_CTX_new();
	bool ok = k->evp != NULL && mc != NULL && outlen > 4 * 64 / 3 + 4 &&
	    EVP_DigestSignInit(mc, NULL, NULL, NULL, k->evp) == 1 &&
	    EVP_DigestSign(mc, sig, &sl, hh, 32) == 1 && sl == 64;

	if (ok)
		EVP_EncodeBlock((unsigned char *)out, sig, 64);
	EVP_MD_CTX_free(mc);
	return ok;
}

/* Signs as sign_one() does, for an Ed25519 key (see above). */
static bool
sign_ed25519(const struct cfg_dkim_key *k, const char *idstr, const char *msg,
    size_t len, const struct field *f, size_t nf, size_t body, struct qbuf *out,
    char *why, size_t whylen)
{
	unsigned char hh[32], bh[32], bh2[32];
	char bh64[48], b64[100], *hdr;
	struct qbuf h = { 0 };
	size_t n, hn;
	long long t = (long long)rq_now();

	/* h=: the fields of sign_hdrs present, in order; From once more */
	for (size_t i = 0; i < nf; i++) {
		const char *name = msg + f[i].off;
		size_t nl = mail_field_name_len(name, f[i].len);

		for (size_t j = 0; sign_hdrs[j] != NULL; j++) {
			if (!mail_field_is(name, nl, sign_hdrs[j]))
				continue;
			if (h.n > 0)
				qbuf_put(&h, ":", 1);
			qbuf_put(&h, name, nl);
			break;
		}
	}
	for (size_t j = 0; over_hdrs[j] != NULL; j++) {
		if (h.n > 0)
			qbuf_put(&h, ":", 1);
		qbuf_put(&h, over_hdrs[j], strlen(over_hdrs[j]));
	}
	qbuf_put(&h, "", 1);
	/* the field as sent, from "b=" on left out; the body hash of the
	 * first pass goes into the second */
	n = strlen(k->domain) + strlen(k->selector) + h.n + 300;
	hdr = xmalloc(n);
	memcpy(bh64, "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=", 45);
	for (int pass = 0; pass < 2; pass++) {
		snprintf(hdr, n,
		    SIG_PREFIX
		    "v=1; a=ed25519-sha256; c=relaxed/relaxed; "
		    "d=%s; s=%s;\r\n\tt=%lld; bh=%s;\r\n\th=%s;\r\n\t"
		    "b=",
		    k->domain, k->selector, t, bh64, (const char *)h.p);
		hn = strlen(hdr);
		/* b= as a verifier reads it: its value is left out */
		snprintf(hdr + hn, n - hn, "AAAA");
		if (!ed_hashes(idstr, hdr, msg, len, f, nf, body, hh,
			pass == 0 ? bh : bh2, why, whylen)) {
			free(hdr);
			free(h.p);
			return false;
		}
		if (pass == 0)
			EVP_EncodeBlock((unsigned char *)bh64, bh, 32);
	}
	free(h.p);
	if (memcmp(bh, bh2, 32) != 0 || !ed_sign(k, hh, b64, sizeof(b64))) {
		snprintf(why, whylen, "%s",
		    memcmp(bh, bh2, 32) != 0 ? "body hash changed"
					     : "Ed25519 signing failed");
		free(hdr);
		return false;
	}
	qbuf_put(out, hdr, hn);
	qbuf_put(out, b64, strlen(b64));
	qbuf_put(out, "\r\n", 2);
	free(hdr);
	return true;
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

	if (k->alg == CFG_DKIM_ED25519_SHA256)
		return sign_ed25519(
		    k, idstr, msg, len, f, nf, body, out, why, whylen);
	d = dkim_sign(lib, (const unsigned char *)idstr, NULL,
	    (dkim_sigkey_t)k->pem, (const unsigned char *)k->selector,
	    (const unsigned char *)k->domain, DKIM_CANON_RELAXED,
	    DKIM_CANON_RELAXED, DKIM_SIGN_RSASHA256, -1, &st);
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
	struct field *f;
	struct qbuf sigs = { 0 };
	const char *msg = *msgp;
	size_t len = *lenp, nf, body, nkeys, signed_ = 0;
	char dom[300], why[400];
	char *out;

	if (dk == NULL)
		return;
	nf = fields_split(msg, len, &f, &body);
	from_field_domain(msg, f, nf, dom, sizeof(dom));
	nkeys = cfg_dkim_lookup(dk, dom, keys);
	if (nkeys == 0) {
		if (once_first(dom))
			log_info("dkim",
			    "%s: no DKIM key for sender domain %s: its mail "
			    "goes unsigned (logged once per domain)",
			    idstr, dom[0] ? dom : "(none: no From: domain)");
		free(f);
		return;
	}
	pthread_once(&lib_once, lib_init);
	if (lib == NULL) {
		log_warn(
		    "dkim", "%s: libopendkim cannot start: not signed", idstr);
		free(f);
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
	free(f);
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
