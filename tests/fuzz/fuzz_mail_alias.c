/*
 * fuzz_mail_alias.c - libFuzzer target for the aliases(5) parser and the
 * alias expansion intake applies (cfg/mail_alias.c).  Input: the text
 * of an alias file.  Checks that a failure says "NAME:LINE: why", that
 * a table found is sorted with one entry per name, that every name
 * finds itself, and that expanding each name (and a name with no alias)
 * ends, within MAIL_ALIAS_FANOUT addresses, each qualified, non-empty
 * and free of control bytes.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfg.h"
#include "mail.h"

/* Checks one address an expansion hands on. */
static enum mail_addr_result
found(void *arg, const char *addr)
{
	size_t *n = arg;

	if (addr[0] == '\0' || strchr(addr, '@') == NULL)
		abort();
	for (const char *p = addr; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			abort();
	if (++*n > MAIL_ALIAS_FANOUT)
		abort();
	return MAIL_ADDR_OK;
}

/* Expands NAME@origin and checks it hands on at least one address. */
static void
expand(const struct mail_local *ml, const char *name)
{
	char addr[600];
	size_t n = 0;
	struct mail_expand_info info;

	snprintf(addr, sizeof(addr), "%s@%s", name, ml->origin);
	if (mail_alias_expand(ml, addr, found, &n, &info) == MAIL_ADDR_OK &&
	    n == 0)
		abort(); /* no mail is dropped */
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mail_aliases *t = NULL;
	char err[512];
	struct mail_local ml = { "example.org", "host.example.org", NULL, NULL,
		NULL };

	if (mail_aliases_parse("fuzz", (const char *)data, size, &t, err,
		sizeof(err)) != MAIL_TABLE_OK) {
		if (strncmp(err, "fuzz:", 5) != 0)
			abort();
		return 0;
	}
	ml.aliases = t;
	ml.fallback = size > 0 && (data[0] & 1) ? "fallback@example.net" : NULL;
	for (size_t i = 0; i < t->n; i++) {
		if (i > 0 && strcmp(t->v[i - 1].name, t->v[i].name) >= 0)
			abort();
		if (mail_aliases_find(t, t->v[i].name, strlen(t->v[i].name)) !=
		    &t->v[i])
			abort();
		if (i < 32)
			expand(&ml, t->v[i].name);
	}
	expand(&ml, "no-such-name-here");
	mail_aliases_free(t);
	return 0;
}
