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
 * signature; OpenSSL's EVP signs libopendkim's header hash, rsa-sha256
 * and ed25519-sha256 alike, with the key parsed once at load (see
 * evp_sign() and the comment above it: the library leaks Ed25519 keys,
 * and parses an RSA key's PEM for every message).
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

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
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

static DKIM_LIB *vlib; /* the hashes, in verify mode: see evp_sign() */
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

/* Makes the library handle: verify mode, no key lookup, for the
 * hashes. */
static void
lib_init(void)
{
	unsigned flags = DKIM_LIBFLAGS_DELAYSIGPROC; /* no key lookups */

	vlib = dkim_init(NULL, NULL);
	if (vlib != NULL &&
	    (dkim_options(vlib, DKIM_OP_SETOPT, DKIM_OPTS_FLAGS, &flags,
		 sizeof(flags)) != DKIM_STAT_OK ||
		dkim_set_key_lookup(vlib, no_key_lookup) != DKIM_STAT_OK)) {
		dkim_close(vlib);
		vlib = NULL;
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
 * The signature (RFC 6376 3.5, 3.7; Ed25519 by RFC 8463).  libopendkim
 * 2.11.0~beta2 (Debian 12) can sign, but leaks, per ed25519-sha256
 * signature, the private key it parsed (an EVP_PKEY never freed, so never
 * cleansed either) and its output buffer (dkim_free() frees key material
 * only for RSA keys), and for rsa-sha256 it parses the key's PEM for
 * every message (intake took 2.4-2.9 ms of CPU a message with it here,
 * 1.1-1.2 ms without: the RSA-2048 signature is 0.85 ms).  So the
 * library does all the canonicalization and hashing, in verify mode
 * (which loads no private key, and with DKIM_LIBFLAGS_DELAYSIGPROC looks
 * up no public key): it is fed the
 * message under the DKIM-Signature field to be, and dkim_sig_gethashes()
 * gives the body hash (first pass) and the header hash over that field
 * with b= empty (second pass, with the real bh=); OpenSSL's EVP signs the
 * header hash with the key parsed once at load (cfg_dkim.c): PureEdDSA
 * for Ed25519 as RFC 8463 says, RSASSA-PKCS1-v1_5 over the SHA-256
 * digest for RSA as RFC 6376 3.3.1 says.
 */

/* Feeds the field SIGHDR and MSG to a verify handle; the header and body
 * hashes of that signature into HH and BH (32 bytes each). */
static bool
sig_hashes(const char *idstr, const char *sighdr, const char *msg, size_t len,
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

/* Signs the header hash HH (32 bytes) with K's key; a new string of
 * its base64 into *OUT. */
static bool
evp_sign(const struct cfg_dkim_key *k, const unsigned char *hh, char **out)
{
	EVP_PKEY *pk = k->evp;
	size_t sl = 0;
	unsigned char *sig = NULL;
	bool ok = false;

	*out = NULL;
	if (pk == NULL)
		return false;
	if (k->alg == CFG_DKIM_ED25519_SHA256) {
		EVP_MD_CTX *mc = EVP_MD_CTX_new();

		sl = 64;
		sig = xmalloc(sl);
		ok = mc != NULL &&
		    EVP_DigestSignInit(mc, NULL, NULL, NULL, pk) == 1 &&
		    EVP_DigestSign(mc, sig, &sl, hh, 32) == 1 && sl == 64;
		EVP_MD_CTX_free(mc);
	} else {
		EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new(pk, NULL);

		ok = pc != NULL && EVP_PKEY_sign_init(pc) == 1 &&
		    EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PADDING) == 1 &&
		    EVP_PKEY_CTX_set_signature_md(pc, EVP_sha256()) == 1 &&
		    EVP_PKEY_sign(pc, NULL, &sl, hh, 32) == 1 && sl > 0;
		if (ok) {
			sig = xmalloc(sl);
			ok = EVP_PKEY_sign(pc, sig, &sl, hh, 32) == 1;
		}
		EVP_PKEY_CTX_free(pc);
	}
	if (ok) {
		*out = xmalloc(4 * ((sl + 2) / 3) + 1);
		EVP_EncodeBlock((unsigned char *)*out, sig, (int)sl);
	} else {
		ERR_clear_error(); /* the thread's queue: said in WHY */
	}
	free(sig);
	return ok;
}

/* Appends base64 text B to OUT folded as libopendkim folds b=: lines of
 * at most 72 bytes after the first (FWS in b= is not signed, RFC 6376
 * 3.7). */
static void
b64_fold(struct qbuf *out, size_t col, const char *b)
{
	size_t n = strlen(b), take;

	while (n > 0) {
		take = col >= 72 ? 0 : 72 - col;
		if (take == 0) {
			qbuf_put(out, "\r\n\t", 3);
			col = 1;
			continue;
		}
		if (take > n)
			take = n;
		qbuf_put(out, b, take);
		b += take;
		n -= take;
		col += take;
	}
}

/*
 * Signs MSG with key K (the header fields F[0..NF), the body from BODY);
 * appends the DKIM-Signature field (CRLF line ends) to OUT.  False with
 * WHY on failure.  See above.
 */
static bool
sign_one(const struct cfg_dkim_key *k, const char *idstr, const char *msg,
    size_t len, const struct field *f, size_t nf, size_t body, struct qbuf *out,
    char *why, size_t whylen)
{
	unsigned char hh[32], bh[32], bh2[32];
	char bh64[48], *b64, *hdr;
	struct qbuf h = { 0 };
	size_t n, hn;
	long long t = (long long)rq_now();
	const char *alg = k->alg == CFG_DKIM_ED25519_SHA256 ? "ed25519-sha256"
							    : "rsa-sha256";

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
		    "v=1; a=%s; c=relaxed/relaxed; "
		    "d=%s; s=%s;\r\n\tt=%lld; bh=%s;\r\n\th=%s;\r\n\t"
		    "b=",
		    alg, k->domain, k->selector, t, bh64, (const char *)h.p);
		hn = strlen(hdr);
		/* b= as a verifier reads it: its value is left out */
		snprintf(hdr + hn, n - hn, "AAAA");
		if (!sig_hashes(idstr, hdr, msg, len, f, nf, body, hh,
			pass == 0 ? bh : bh2, why, whylen)) {
			free(hdr);
			free(h.p);
			return false;
		}
		if (pass == 0)
			EVP_EncodeBlock((unsigned char *)bh64, bh, 32);
	}
	free(h.p);
	if (memcmp(bh, bh2, 32) != 0 || !evp_sign(k, hh, &b64)) {
		snprintf(why, whylen, "%s",
		    memcmp(bh, bh2, 32) != 0 ? "body hash changed"
					     : "signing failed (OpenSSL)");
		free(hdr);
		return false;
	}
	qbuf_put(out, hdr, hn);
	b64_fold(out, 3, b64); /* after "\tb=" */
	qbuf_put(out, "\r\n", 2);
	free(b64);
	free(hdr);
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
	if (vlib == NULL) {
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

/* Signs a message relayq makes itself; see queue.h. */
void
queue_dkim_sign(
    const struct cfg *cfg, const char *idstr, char **msgp, size_t *lenp)
{
	struct cfg_dkim *dk = cfg_dkim_hold(cfg);

	intake_dkim_sign(dk, idstr, msgp, lenp);
	cfg_dkim_release(dk);
}
