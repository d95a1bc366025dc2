/*
 * smtp_tls.c - OpenSSL contexts for STARTTLS: one SSL_CTX per CA file,
 * made on first use and kept until the client is freed.
 *
 * Public (module) functions: smtp_tls_new(), smtp_tls_free(),
 * smtp_tls_ssl_new(), smtp_tls_error().  Every context verifies in
 * SSL_VERIFY_NONE mode so the handshake itself never fails on a bad
 * certificate; the session decides from SSL_get_verify_result() what the
 * tls level demands (as Postfix does, so "may" and "encrypt" can log
 * whether the peer was trusted).
 */
#include <arpa/inet.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "smtp_int.h"

struct tls_ctx {
	char *cafile;
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

/* Returns the context for CAFILE, making it on first use. */
static SSL_CTX *
tls_ctx_get(struct smtp_tls *tls, const char *cafile, char *err, size_t errlen)
{
	struct tls_ctx *t;
	SSL_CTX *ctx;
	int ok;

	for (t = tls->list; t != NULL; t = t->next)
		if (strcmp(t->cafile, cafile) == 0)
			return t->ctx;
	ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL) {
		smtp_tls_error(err, errlen, ERR_get_error());
		return NULL;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	SSL_CTX_set_min_proto_version(ctx, TLS1_VERSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
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
	t = xcalloc(1, sizeof(*t));
	t->cafile = xstrdup(cafile);
	t->ctx = ctx;
	t->next = tls->list;
	tls->list = t;
	return ctx;
}

SSL *
smtp_tls_ssl_new(struct smtp_tls *tls, const char *cafile, const char *host,
    char *err, size_t errlen)
{
	SSL_CTX *ctx;
	SSL *ssl;
	unsigned char ip[16];
	bool literal;

	ctx = tls_ctx_get(tls, cafile, err, errlen);
	if (ctx == NULL)
		return NULL;
	ssl = SSL_new(ctx);
	if (ssl == NULL) {
		smtp_tls_error(err, errlen, ERR_get_error());
		return NULL;
	}
	literal = inet_pton(AF_INET, host, ip) == 1 ||
	    inet_pton(AF_INET6, host, ip) == 1;
	if (literal) {
		X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host);
	} else {
		SSL_set_tlsext_host_name(ssl, host);
		SSL_set1_host(ssl, host);
	}
	return ssl;
}
