/*
 * mail_param.c - the RFC 3461 (DSN) parameters of MAIL FROM and RCPT
 * TO: xtext, in which ENVID and ORCPT travel, and NOTIFY lists.
 *
 * Public: mail_xtext_encode(), mail_xtext_decode(), mail_xtext_valid(),
 * mail_notify_parse(), mail_notify_format().
 *
 * Who uses what: `relayq send` encodes -V and parses -N; intake checks
 * ENVID and ORCPT (xtext_valid) and parses NOTIFY= of X-Receiver; the
 * queue keeps ENVID and ORCPT as received; the runner decodes them for
 * the SMTP client, which encodes them on the wire; the DSN builder
 * decodes them for the notice (also taking lowercase hex, as it always
 * has).  Invariants: the encoder's output is xtext_valid for any input;
 * the decoder never writes more bytes than it reads.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "cfg.h"
#include "mail.h"

/* Encodes S as xtext; see mail.h. */
char *
mail_xtext_encode(const char *s)
{
	char *out = xmalloc(strlen(s) * 3 + 1);
	size_t o = 0;

	for (; *s != '\0'; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch < '!' || ch > '~' || ch == '+' || ch == '=') {
			snprintf(out + o, 4, "+%02X", ch);
			o += 3;
		} else {
			out[o++] = (char)ch;
		}
	}
	out[o] = '\0';
	return out;
}

/* The value of hex digit CH (uppercase, or either case with ANYCASE),
 * or -1. */
static int
hex_value(char ch, bool anycase)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	if (anycase && ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	return -1;
}

/* Decodes xtext; see mail.h. */
char *
mail_xtext_decode(const char *s, size_t n, unsigned flags, size_t *outlen)
{
	bool anycase = (flags & MAIL_XTEXT_ANYCASE) != 0;
	char *out = xmalloc(n + 1);
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		int h1, h2;

		if (s[i] == '+' && i + 2 < n &&
		    (h1 = hex_value(s[i + 1], anycase)) >= 0 &&
		    (h2 = hex_value(s[i + 2], anycase)) >= 0) {
			out[o++] = (char)(h1 * 16 + h2);
			i += 2;
		} else {
			out[o++] = s[i];
		}
	}
	out[o] = '\0';
	if (outlen != NULL)
		*outlen = o;
	return out;
}

/* Checks xtext as stored; see mail.h. */
bool
mail_xtext_valid(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] < '!' || s[i] > '~' || s[i] == '=')
			return false;
	return true;
}

/* The NOTIFY condition named by S (N bytes, any case), or 0. */
static unsigned
notify_word(const char *s, size_t n)
{
	static const struct {
		const char *name;
		unsigned bit;
	} words[] = {
		{ "NEVER", MAIL_NOTIFY_NEVER },
		{ "SUCCESS", MAIL_NOTIFY_SUCCESS },
		{ "FAILURE", MAIL_NOTIFY_FAILURE },
		{ "DELAY", MAIL_NOTIFY_DELAY },
	};

	for (size_t w = 0; w < sizeof(words) / sizeof(words[0]); w++)
		if (strlen(words[w].name) == n &&
		    strncasecmp(s, words[w].name, n) == 0)
			return words[w].bit;
	return 0;
}

/* Parses a NOTIFY list; see mail.h. */
bool
mail_notify_parse(const char *s, size_t n, unsigned flags, unsigned *bits)
{
	bool strict = (flags & MAIL_NOTIFY_STRICT) != 0;
	unsigned b = 0, words = 0;
	size_t j = 0;

	while (j < n) {
		size_t e = j;
		unsigned w;

		while (e < n && s[e] != ',')
			e++;
		if ((w = notify_word(s + j, e - j)) == 0)
			return false;
		b |= w;
		words++;
		j = e + 1;
	}
	/* j == n: the list ended with a comma (intake lets it pass) */
	if (strict && (j == n || ((b & MAIL_NOTIFY_NEVER) && words > 1)))
		return false;
	if (b == 0 || ((b & MAIL_NOTIFY_NEVER) && b != MAIL_NOTIFY_NEVER))
		return false;
	*bits = b;
	return true;
}

/* Merges two NOTIFYs; see mail.h. */
unsigned
mail_notify_merge(unsigned a, unsigned b)
{
	const unsigned dflt = MAIL_NOTIFY_FAILURE | MAIL_NOTIFY_DELAY;
	unsigned u;

	if (a == b)
		return a;
	u = ((a ? a : dflt) | (b ? b : dflt)) & ~MAIL_NOTIFY_NEVER;
	return u ? u : MAIL_NOTIFY_NEVER;
}

/* Formats NOTIFY bits; see mail.h. */
void
mail_notify_format(unsigned bits, char *buf, size_t len)
{
	static const struct {
		unsigned bit;
		const char *name;
	} order[] = {
		{ MAIL_NOTIFY_SUCCESS, "SUCCESS" },
		{ MAIL_NOTIFY_FAILURE, "FAILURE" },
		{ MAIL_NOTIFY_DELAY, "DELAY" },
	};
	size_t o = 0;

	if (len == 0)
		return;
	buf[0] = '\0';
	if (bits & MAIL_NOTIFY_NEVER) {
		snprintf(buf, len, "NEVER");
		return;
	}
	for (size_t w = 0; w < sizeof(order) / sizeof(order[0]); w++) {
		int k;

		if (!(bits & order[w].bit))
			continue;
		k = snprintf(
		    buf + o, len - o, "%s%s", o > 0 ? "," : "", order[w].name);
		if (k < 0 || (size_t)k >= len - o)
			return;
		o += (size_t)k;
	}
}
