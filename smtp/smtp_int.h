/*
 * smtp_int.h - private interfaces between the files of the smtp module:
 * the TLS context cache (smtp_tls.c) and the message encoder
 * (smtp_body.c).
 */
#ifndef RELAYQ_SMTP_INT_H
#define RELAYQ_SMTP_INT_H

#include <openssl/ssl.h>

#include "smtp.h"

struct smtp_tls; /* a cache of SSL_CTXs, one per CA file */

/* Makes an empty cache; freed with smtp_tls_free(). */
struct smtp_tls *smtp_tls_new(void);
void smtp_tls_free(struct smtp_tls *);

/*
 * Returns a new SSL for a client connection to HOST (SNI unless HOST is
 * an IP literal; the name, or the IP, is what verification checks), with
 * the chain checked against CAFILE ("" = the system's CAs) but the
 * handshake never failing on it: the caller looks at
 * SSL_get_verify_result() afterwards.  NULL with ERR set on failure.
 */
SSL *smtp_tls_ssl_new(struct smtp_tls *, const char *cafile, const char *host,
    char *err, size_t errlen);

/* Formats the last OpenSSL error (or "handshake failed") into ERR. */
void smtp_tls_error(char *err, size_t errlen, unsigned long code);

/*
 * Encodes the message MSG (LEN bytes) for DATA from offset *OFF: every
 * CR, LF or CRLF becomes CRLF, a line starting with "." gets another,
 * a missing final line end is added and, at the end, ".\r\n".  Writes
 * at most OUTLEN bytes (OUTLEN >= 8) into OUT; returns the count and
 * advances *OFF and *BOL (at beginning of line); *OFF > LEN once the
 * terminating dot is written.
 */
size_t smtp_body_encode(const char *msg, size_t len, size_t *off, bool *bol,
    char *out, size_t outlen);

/* Whether MSG has a byte >= 0x80 (BODY=8BITMIME). */
bool smtp_body_8bit(const char *msg, size_t len);

#endif
