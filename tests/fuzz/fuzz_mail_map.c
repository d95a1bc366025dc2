/*
 * fuzz_mail_map.c - libFuzzer target for the sender map parser and
 * lookup (cfg/mail_map.c) and for the address spans intake edits in
 * From:, Sender:, Reply-To: and Return-Path: (mail_addrlist_spans(),
 * cfg/mail_addr.c).  Input: the map text, then a NUL and a header field
 * value.  Checks that a failure says "NAME:LINE: why", that each key
 * maps (as an address made of it) to a qualified address without
 * control bytes, and that every span lies inside the value.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfg.h"
#include "mail.h"

/* Checks a rewritten address. */
static void
check_addr(const char *a)
{
	if (a[0] == '\0' || strchr(a, '@') == NULL)
		abort();
	for (const char *p = a; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			abort();
}

/* The value being parsed, for the span checks. */
struct span_ctx {
	size_t len;
	const struct mail_local *ml;
};

/* Checks one span and looks its address up. */
static enum mail_addr_result
span_found(void *arg, const char *addr, size_t off, size_t len)
{
	struct span_ctx *c = arg;
	char *m;

	if (off > c->len || len > c->len - off)
		abort();
	if (addr[0] != '\0' && (m = mail_map_rewrite(c->ml, addr)) != NULL) {
		check_addr(m);
		free(m);
	}
	return MAIL_ADDR_OK;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *buf = (const char *)data;
	const char *nul = memchr(buf, '\0', size);
	size_t mlen = nul != NULL ? (size_t)(nul - buf) : size;
	struct mail_map *m = NULL;
	struct mail_local ml = { "example.org", "host.example.org", NULL, NULL,
		NULL };
	const struct mail_addr_syntax syn = { MAIL_ADDR_WORD_LIMIT,
		"example.org", MAIL_ADDR_LEN_MAX };
	struct mail_addr_error aerr;
	char err[512];

	if (mail_map_parse("fuzz", buf, mlen, &m, err, sizeof(err)) !=
	    MAIL_TABLE_OK) {
		if (strncmp(err, "fuzz:", 5) != 0)
			abort();
		m = NULL;
	}
	ml.sender_map = m;
	for (size_t i = 0; m != NULL && i < m->n && i < 64; i++) {
		char addr[700], *r;
		const char *k = m->v[i].key;

		if (k[0] == '@')
			snprintf(addr, sizeof(addr), "user%s", k);
		else if (strchr(k, '@') == NULL)
			snprintf(addr, sizeof(addr), "%s@example.org", k);
		else
			snprintf(addr, sizeof(addr), "%s", k);
		if ((r = mail_map_rewrite(&ml, addr)) == NULL)
			abort(); /* its own key matches */
		check_addr(r);
		free(r);
	}
	if (nul != NULL) {
		struct span_ctx c = { size - mlen - 1, &ml };

		(void)mail_addrlist_spans(
		    nul + 1, c.len, &syn, span_found, &c, &aerr);
	}
	mail_map_free(m);
	return 0;
}
