/* fuzz_smtp_auth.c - libFuzzer target for SMTP AUTH's parsers: any bytes
 * as an EHLO reply (the AUTH list), as a 334 challenge through the reply
 * parser and the base64 decoder, and as base64 input; plus the round
 * trip encode -> decode and the SASL responses built from the bytes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct smtp_ehlo e;
	struct smtp_reply reply;
	unsigned char dec[SMTP_REPLY_MAX], *raw;
	char *enc, user[64], secret[64];
	size_t used, n, half;

	smtp_ehlo_parse((const char *)data, size, &e);
	if (e.auth != 0 && !e.auth_offered)
		abort();
	if (strlen(e.auth_list) >= sizeof(e.auth_list))
		abort();
	if (smtp_reply_parse((const char *)data, size, &reply, &used) ==
		SMTP_PARSE_OK &&
	    reply.code == 334 &&
	    rq_base64_decode(
		reply.text, strlen(reply.text), dec, sizeof(dec), &n) &&
	    n > sizeof(dec))
		abort();
	/* the decoder on raw bytes, bounded output */
	if (rq_base64_decode((const char *)data, size, dec, sizeof(dec), &n) &&
	    (n > sizeof(dec) || n > size))
		abort();
	/* round trip */
	enc = malloc(RQ_B64_LEN(size) + 1);
	raw = malloc(size + 1);
	if (rq_base64_encode(data, size, enc) != RQ_B64_LEN(size) ||
	    !rq_base64_decode(enc, RQ_B64_LEN(size), raw, size, &n) ||
	    n != size || (size > 0 && memcmp(raw, data, size) != 0))
		abort();
	free(enc);
	free(raw);
	/* responses: a user and a secret from the bytes */
	half = size / 2 < sizeof(user) - 1 ? size / 2 : sizeof(user) - 1;
	memcpy(user, data, half);
	user[half] = '\0';
	n = size - size / 2 < sizeof(secret) - 1 ? size - size / 2
						 : sizeof(secret) - 1;
	memcpy(secret, data + size / 2, n);
	secret[n] = '\0';
	for (int m = CFG_SASL_PLAIN; m <= CFG_SASL_OAUTHBEARER; m++) {
		unsigned char out[512];
		size_t k = smtp_sasl_response(
		    (enum cfg_sasl)m, user, secret, "h", 25, out, sizeof(out));

		if (k > sizeof(out) || (m == CFG_SASL_LOGIN && k != 0) ||
		    (m == CFG_SASL_PLAIN &&
			k != strlen(user) + strlen(secret) + 2))
			abort();
	}
	return 0;
}
