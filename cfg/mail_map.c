/*
 * mail_map.c - the sender map (sender_map): which address the machine's
 * own mail goes out from, in the shape of Postfix's smtp_generic_maps.
 * Intake rewrites the envelope sender and the From:, Sender:, Reply-To:
 * and Return-Path: addresses with it (queue/queue_parse.c).
 *
 * Public: mail_map_parse(), mail_map_free(), mail_map_rewrite().
 *
 * The format: "KEY VALUE" a line, blank lines and lines whose first
 * non-blank byte is '#' skipped.  KEY is user@domain, user (matches
 * only local mail: origin, hostname, localhost) or @domain (any user of
 * the domain); VALUE an address, or @domain, which keeps the user.
 * Lookups are in any case, and go from the most specific key to the
 * least (Postfix's generic(5) order).
 *
 * Invariants: the parser is a pure function over its buffer (fuzzed,
 * table-driven tests); a key is given once; every value is an address
 * the shared parser reads back as itself, with a domain.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfg_int.h"

#define MAP_ADDR_MAX 511

/* Records "NAME:LINE: message" in ERR; is MAIL_TABLE_BAD. */
#define merr(...) (cfg_file_err(__VA_ARGS__), MAIL_TABLE_BAD)

/* True for a domain as a key or an "@domain" value may name it: labels
 * of letters, digits, '-' and '_', or an address literal of printable
 * bytes (RFC 5322 dtext: no blank, control, '[', ']' or '\\'). */
static bool
domain_ok(const char *s, size_t n)
{
	if (n == 0 || n > 253)
		return false;
	if (s[0] == '[') {
		if (n <= 2 || s[n - 1] != ']')
			return false;
		for (size_t i = 1; i + 1 < n; i++) {
			unsigned char c = (unsigned char)s[i];

			if (c <= 0x20 || c >= 0x7f || c == '[' || c == ']' ||
			    c == '\\')
				return false;
		}
		return true;
	}
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '.'
			? i == 0 || i + 1 == n || s[i + 1] == '.'
			: !(isalnum(c) || c == '-' || c == '_' || c >= 0x80))
			return false;
	}
	return true;
}

/* True for a user as a key names it: printable, no blank, no '@', no
 * quote or backslash (a quoted local part is not a key: the lookup
 * would never find it). */
static bool
user_ok(const char *s, size_t n)
{
	if (n == 0 || n > 256)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c <= 0x20 || c == 0x7f || c == '@' || c == '<' ||
		    c == '>' || c == '"' || c == '\\')
			return false;
	}
	return true;
}

/* Reads VALUE (N bytes) into a new string *OUT: "@domain", or one
 * address with a domain; NULL with *WHY otherwise. */
static char *
value_read(const char *v, size_t n, const char **why)
{
	const struct mail_addr_syntax syn = { MAIL_ADDR_WORD_LIMIT, NULL,
		MAP_ADDR_MAX };
	struct mail_addr_error aerr;
	char *addr = NULL;

	if (n > 0 && v[0] == '@') {
		if (!domain_ok(v + 1, n - 1)) {
			*why = "bad domain";
			return NULL;
		}
		return rq_lower(xstrndup(v, n));
	}
	if (mail_addrlist_parse(v, n, &syn, mail_addr_one, &addr, &aerr) !=
		MAIL_ADDR_OK ||
	    addr == NULL) {
		free(addr);
		*why = aerr.why != NULL ? aerr.why
					: "expected one address with a domain";
		return NULL;
	}
	return addr;
}

/* Orders entries by key. */
static int
entry_cmp(const void *a, const void *b)
{
	return strcmp(((const struct mail_map_entry *)a)->key,
	    ((const struct mail_map_entry *)b)->key);
}

/* Parses a sender map; see mail.h. */
enum mail_table_result
mail_map_parse(const char *name, const char *buf, size_t len,
    struct mail_map **out, char *err, size_t errlen)
{
	struct mail_map *m = xcalloc(1, sizeof(*m));
	struct cfg_lines it = { name, buf, len, err, errlen, 0, 0 };
	const char *l;
	size_t n, cap = 0;
	enum cfg_lines_result lr;
	enum mail_table_result r = MAIL_TABLE_OK;

	*out = NULL;
	while ((lr = cfg_lines_next(&it, &l, &n)) == CFG_LINES_OK) {
		size_t voff, kn = cfg_line_key(l, n, &voff), vn = n - voff;
		const char *v = l + voff, *why = NULL;
		char q[128], *key, *val;
		int lno = it.lno;

		if (vn == 0 || memchr(v, ' ', vn) || memchr(v, '\t', vn)) {
			cfg_quote(l, n, q, sizeof(q));
			r = merr(err, errlen, name, lno,
			    "expected \"KEY ADDRESS\" (KEY user@domain, user "
			    "or @domain): %s",
			    q);
			break;
		}
		{
			const char *at = memchr(l, '@', kn);
			bool ok = at == NULL
			    ? user_ok(l, kn)
			    : (at == l || user_ok(l, (size_t)(at - l))) &&
				domain_ok(at + 1, (size_t)(l + kn - at - 1)) &&
				memchr(at + 1, '@',
				    (size_t)(l + kn - at - 1)) == NULL;

			if (!ok) {
				cfg_quote(l, kn, q, sizeof(q));
				r = merr(err, errlen, name, lno,
				    "bad key \"%s\" (expected user@domain, "
				    "user or @domain)",
				    q);
				break;
			}
		}
		if ((val = value_read(v, vn, &why)) == NULL) {
			cfg_quote(v, vn, q, sizeof(q));
			r = merr(err, errlen, name, lno,
			    "bad address \"%s\": %s", q, why);
			break;
		}
		key = rq_lower(xstrndup(l, kn));
		for (size_t i = 0; i < m->n; i++) {
			if (strcmp(m->v[i].key, key) == 0) {
				r = merr(err, errlen, name, lno,
				    "duplicate key \"%.200s\" (first on line "
				    "%d)",
				    key, m->v[i].line);
				break;
			}
		}
		if (r != MAIL_TABLE_OK) {
			free(key);
			free(val);
			break;
		}
		if (m->n == cap) {
			cap = cap ? cap * 2 : 16;
			m->v = xrealloc(m->v, cap * sizeof(*m->v));
		}
		m->v[m->n].key = key;
		m->v[m->n].value = val;
		m->v[m->n].line = lno;
		m->n++;
	}
	if (lr == CFG_LINES_BAD)
		r = MAIL_TABLE_BAD;
	if (r != MAIL_TABLE_OK) {
		mail_map_free(m);
		return r;
	}
	if (m->n > 1)
		qsort(m->v, m->n, sizeof(*m->v), entry_cmp);
	*out = m;
	return MAIL_TABLE_OK;
}

/* Frees a map. */
void
mail_map_free(struct mail_map *m)
{
	if (m == NULL)
		return;
	for (size_t i = 0; i < m->n; i++) {
		free(m->v[i].key);
		free(m->v[i].value);
	}
	free(m->v);
	free(m);
}

/* The value of KEY (lowercase), or NULL. */
static const char *
map_find(const struct mail_map *m, const char *key)
{
	size_t lo = 0, hi = m->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int r = strcmp(key, m->v[mid].key);

		if (r == 0)
			return m->v[mid].value;
		if (r < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

/* The sender map's address for ADDR; see mail.h. */
char *
mail_map_rewrite(const struct mail_local *ml, const char *addr)
{
	const struct mail_map *m = ml->sender_map;
	size_t at = mail_addr_at(addr), n = strlen(addr);
	const char *val = NULL;
	char key[MAP_ADDR_MAX + 2], *out;

	if (m == NULL || m->n == 0 || addr[at] != '@' || n > MAP_ADDR_MAX)
		return NULL;
	for (size_t i = 0; i <= n; i++)
		key[i] = (char)tolower((unsigned char)addr[i]);
	val = map_find(m, key); /* user@domain */
	if (val == NULL && mail_local_is(ml, addr)) {
		key[at] = '\0'; /* user */
		val = map_find(m, key);
		key[at] = '@';
	}
	if (val == NULL)
		val = map_find(m, key + at); /* @domain */
	if (val == NULL)
		return NULL;
	if (val[0] != '@')
		return xstrdup(val);
	out = xmalloc(at + strlen(val) + 1);
	memcpy(out, addr, at);
	strcpy(out + at, val);
	return out;
}
