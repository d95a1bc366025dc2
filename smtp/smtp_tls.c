/*
 * smtp_tls.c - OpenSSL contexts for STARTTLS and implicit TLS: one
 * SSL_CTX per (CA file, client certificate), made on first use and kept
 * until the client is freed; the client certificate check; fingerprints.
 *
 * Public: smtp_tls_cert_check().  Module functions: smtp_tls_new(),
 * smtp_tls_free(), smtp_tls_ssl_new(), smtp_tls_error(),
 * smtp_tls_fingerprint_match().  Every context verifies in
 * SSL_VERIFY_NONE mode so the handshake itself never fails on a bad
 * certificate; the session decides from SSL_get_verify_result() (or the
 * pinned fingerprints) what the tls level demands (as Postfix does, so
 * "may" and "encrypt" can log whether the peer was trusted).
 *
 * DANE (RFC 7672): every context has OpenSSL's DANE support on; an SSL
 * given TLSA records checks them (usages 2 and 3 only: the caller
 * filters the others), DANE-EE without name checks, DANE-TA against the
 * MX host name (and the next-hop domain, added by smtp_client.c).  A record matched when SSL_get0_dane_authority() >= 0.
 *
 * A client certificate comes as PEM text from the cfg (read at load, so
 * the daemon needs no access to the files after dropping privileges);
 * contexts are keyed by a SHA-256 of that text, so a reload with new
 * files gets a new context.  An encrypted key is refused (no prompt).
 */
#include <arpa/inet.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "smtp_int.h"

struct tls_ctx {
	char *cafile;
	unsigned char pemid[32]; /* SHA-256 of cert and key; 0s: none */
	SSL_CTX *ctx;
	struct tls_ctx *next;
};

struct smtp_tls {
	struct tls_ctx *list;
};

struct smtp_tls *
smtp_tls_new(void)
{
	return xcalloc(1, sizeof(struct smtp_tls));
}

void
smtp_tls_free(struct smtp_tls *tls)
{
	struct tls_ctx *t, *next;

	if (tls == NULL)
		return;
	for (t = tls->list; t != NULL; t = next) {
		next = t->next;
		SSL_CTX_free(t->ctx);
		free(t->cafile);
		free(t);
	}
	free(tls);
}

void
smtp_tls_error(char *err, size_t errlen, unsigned long code)
{
	char buf[256];

	if (code == 0)
		code = ERR_peek_last_error();
	if (code == 0) {
		snprintf(err, errlen, "handshake failed");
		return;
	}
	ERR_error_string_n(code, buf, sizeof(buf));
	snprintf(err, errlen, "%s", buf);
}

/* Never asks for a passphrase: an encrypted key fails to load. */
static int
no_passphrase(char *buf, int size, int rwflag, void *u)
{
	return 0;
}

/* Loads PEM's certificate (and the chain after it) and key into CTX and
 * checks that they match; 0, or -1 with ERR set. */
static int
tls_ctx_use_cert(
    SSL_CTX *ctx, const struct cfg_pem *pem, char *err, size_t errlen)
{
	BIO *bio = BIO_new_mem_buf(pem->cert, (int)pem->certlen);
	X509 *x = NULL;
	EVP_PKEY *key = NULL;
	int ok = 0;

	if (bio != NULL &&
	    (x = PEM_read_bio_X509(bio, NULL, no_passphrase, NULL)) != NULL &&
	    SSL_CTX_use_certificate(ctx, x) == 1) {
		X509 *ca;

		ok = 1;
		while ((ca = PEM_read_bio_X509(
			    bio, NULL, no_passphrase, NULL)) != NULL)
			if (SSL_CTX_add0_chain_cert(ctx, ca) != 1)
				X509_free(ca);
		ERR_clear_error(); /* the end of the chain */
	}
	X509_free(x);
	BIO_free(bio);
	if (!ok) {
		snprintf(err, errlen, "no certificate in %s", pem->cert_file);
		ERR_clear_error();
		return -1;
	}
	bio = BIO_new_mem_buf(pem->key, (int)pem->keylen);
	if (bio != NULL)
		key = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
	BIO_free(bio);
	if (key == NULL) {
		snprintf(err, errlen,
		    "no private key in %s (or it is encrypted)", pem->key_file);
		ERR_clear_error();
		return -1;
	}
	/* OpenSSL checks the pair here already, and again below. */
	ok = SSL_CTX_use_PrivateKey(ctx, key) == 1 &&
	    SSL_CTX_check_private_key(ctx) == 1;
	EVP_PKEY_free(key);
	ERR_clear_error();
	if (!ok) {
		snprintf(err, errlen,
		    "the key in %s does not match the certificate in %s",
		    pem->key_file, pem->cert_file);
		return -1;
	}
	return 0;
}

int
smtp_tls_cert_check(const struct cfg_pem *pem, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	int r;

	if (ctx == NULL) {
		smtp_tls_error(err, errlen, ERR_get_error());
		return -1;
	}
	r = tls_ctx_use_cert(ctx, pem, err, errlen);
	SSL_CTX_free(ctx);
	return r;
}

/* The cache key of PEM: SHA-256 over both texts; 0s for none. */
static void
pem_id(const struct cfg_pem *pem, unsigned char id[32])
{
	EVP_MD_CTX *md;
	unsigned int n = 32;

	memset(id, 0, 32);
	if (pem == NULL || (md = EVP_MD_CTX_new()) == NULL)
		return;
	if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(md, pem->cert, pem->certlen) != 1 ||
	    EVP_DigestUpdate(md, "", 1) != 1 ||
	    EVP_DigestUpdate(md, pem->key, pem->keylen) != 1 ||
	    EVP_DigestFinal_ex(md, id, &n) != 1)
		memset(id, 0xff, 32); /* never equal to "none" */
	EVP_MD_CTX_free(md);
}

/* Returns the context for CAFILE and PEM, making it on first use. */
static SSL_CTX *
tls_ctx_get(struct smtp_tls *tls, const char *cafile, const struct cfg_pem *pem,
    char *err, size_t errlen)
{
	struct tls_ctx *t;
	unsigned char id[32];
	SSL_CTX *ctx;
	int ok;

	pem_id(pem, id);
	for (t = tls->list; t != NULL; t = t->next)
		if (strcmp(t->cafile, cafile) == 0 &&
		    memcmp(t->pemid, id, sizeof(id)) == 0)
			return t->ctx;
	ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL) {
		smtp_tls_error(err, errlen, ERR_get_error());
		return NULL;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	SSL_CTX_set_min_proto_version(ctx, TLS1_VERSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	if (SSL_CTX_dane_enable(ctx) <= 0) {
		smtp_tls_error(err, errlen, ERR_get_error());
		SSL_CTX_free(ctx);
		return NULL;
	}
	if (cafile[0] != '\0')
		ok = SSL_CTX_load_verify_locations(ctx, cafile, NULL);
	else
		ok = SSL_CTX_set_default_verify_paths(ctx);
	if (ok != 1) {
		snprintf(err, errlen, "cannot load CA certificates from %.200s",
		    cafile[0] ? cafile : "the system default");
		ERR_clear_error();
		SSL_CTX_free(ctx);
		return NULL;
	}
	if (pem != NULL && tls_ctx_use_cert(ctx, pem, err, errlen) < 0) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	t = xcalloc(1, sizeof(*t));
	t->cafile = xstrdup(cafile);
	memcpy(t->pemid, id, sizeof(id));
	t->ctx = ctx;
	t->next = tls->list;
	tls->list = t;
	return ctx;
}

/* Turns DANE on for SSL with HOST's records TLSA (N of them, N > 0);
 * 0, or -1 with ERR set. */
static int
tls_ssl_dane(SSL *ssl, const char *host, const struct smtp_tlsa *tlsa, size_t n,
    char *err, size_t errlen)
{
	size_t i, added = 0;

	if (SSL_dane_enable(ssl, host) <= 0) {
		smtp_tls_error(err, errlen, ERR_get_error());
		return -1;
	}
	SSL_dane_set_flags(ssl, DANE_FLAG_NO_DANE_EE_NAMECHECKS);
	for (i = 0; i < n; i++)
		if (SSL_dane_tlsa_add(ssl, tlsa[i].usage, tlsa[i].selector,
			tlsa[i].mtype, tlsa[i].data, tlsa[i].len) > 0)
			added++;
	ERR_clear_error(); /* a record OpenSSL found unusable */
	if (added == 0) {
		snprintf(err, errlen, "no usable TLSA record for %s", host);
		return -1;
	}
	return 0;
}

SSL *
smtp_tls_ssl_new(struct smtp_tls *tls, const char *cafile,
    const struct cfg_pem *pem, const char *host, const struct smtp_tlsa *tlsa,
    size_t ntlsa, char *err, size_t errlen)
{
	SSL_CTX *ctx;
	SSL *ssl;
	unsigned char ip[16];
	bool literal;

	ctx = tls_ctx_get(tls, cafile, pem, err, errlen);
	if (ctx == NULL)
		return NULL;
	ssl = SSL_new(ctx);
	if (ssl == NULL) {
		smtp_tls_error(err, errlen, ERR_get_error());
		return NULL;
	}
	literal = inet_pton(AF_INET, host, ip) == 1 ||
	    inet_pton(AF_INET6, host, ip) == 1;
	if (ntlsa > 0) {
		SSL_set_tlsext_host_name(ssl, host);
		if (tls_ssl_dane(ssl, host, tlsa, ntlsa, err, errlen) < 0) {
			SSL_free(ssl);
			return NULL;
		}
	} else if (literal) {
		X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host);
	} else {
		SSL_set_tlsext_host_name(ssl, host);
		SSL_set1_host(ssl, host);
	}
	return ssl;
}

/* Formats the 32 bytes D as "SHA256:XX:XX:..." into BUF. */
static void
digest_format(const unsigned char *d, char *buf, size_t len)
{
	size_t o = (size_t)snprintf(buf, len, "SHA256:");

	for (int i = 0; i < 32 && o + 3 < len; i++)
		o += (size_t)snprintf(
		    buf + o, len - o, "%s%02X", i ? ":" : "", d[i]);
}

bool
smtp_tls_fingerprint_match(X509 *cert, const unsigned char (*fp)[32], size_t n,
    char *desc, size_t desclen)
{
	unsigned char dc[EVP_MAX_MD_SIZE], dk[EVP_MAX_MD_SIZE], *der = NULL;
	unsigned int lc = 0;
	int dlen;
	bool match = false;

	if (desc != NULL && desclen > 0)
		desc[0] = '\0';
	if (cert == NULL || X509_digest(cert, EVP_sha256(), dc, &lc) != 1)
		return false;
	dlen = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
	if (dlen <= 0 ||
	    EVP_Digest(der, (size_t)dlen, dk, NULL, EVP_sha256(), NULL) != 1) {
		OPENSSL_free(der);
		return false;
	}
	OPENSSL_free(der);
	for (size_t i = 0; i < n; i++)
		if (memcmp(fp[i], dc, 32) == 0 || memcmp(fp[i], dk, 32) == 0)
			match = true;
	if (desc != NULL) {
		char c[128], k[128];

		digest_format(dc, c, sizeof(c));
		digest_format(dk, k, sizeof(k));
		snprintf(desc, desclen, "certificate %s, public key %s", c, k);
	}
	return match;
}
