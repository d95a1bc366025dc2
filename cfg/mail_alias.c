/*
 * mail_alias.c - aliases(5) for the machine's own mail: the parser of an
 * aliases file, the lookup of a name, what is local mail, and the
 * expansion of a local recipient (intake applies it to every recipient,
 * `sendmail -bv` prints it).
 *
 * Public: mail_aliases_parse(), mail_aliases_free(), mail_aliases_find(),
 * mail_local_is(), mail_alias_expand().
 *
 * The format is sendmail's, as Postfix's postalias reads it: "name:
 * target, target, ..." logical lines; a line that starts with a blank
 * continues the logical line before it; blank lines and lines whose
 * first non-blank byte is '#' are skipped; a name may be "quoted"; a
 * target is an address (user@domain, Name <user@domain>), a local name
 * (expanded again), \name (not expanded again), or |command, /file or
 * :include:/file, which relayq, delivering no mail locally, reads but
 * never uses: each is a warning (check-config, newaliases print them).
 * A name given twice is a warning; the first wins.
 *
 * Invariants: the parser is a pure function over its buffer (fuzzed,
 * table-driven tests in tests/cfg/test_mail_local.c); a table is
 * immutable once parsed, so intake's reader threads share it; an
 * expansion is bounded (MAIL_ALIAS_DEPTH, MAIL_ALIAS_NODES,
 * MAIL_ALIAS_FANOUT), stops at a name reached again (sendmail's loop
 * rule) and never ends with no address: what would be dropped goes to
 * the fallback or NAME@origin.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cfg_int.h"

#define ALIAS_ADDR_MAX 511 /* the longest address a target may be */

/* Records "NAME:LINE: message" in ERR; is MAIL_TABLE_BAD. */
#define terr(...) (cfg_file_err(__VA_ARGS__), MAIL_TABLE_BAD)

/* A table being read. */
struct aparse {
	const char *file;
	struct mail_aliases *t;
	size_t cap;
	char *err;
	size_t errlen;
};

/* Adds warning "FILE:LINE: ..." to the table. */
static void __attribute__((format(printf, 3, 4)))
warn_add(struct aparse *p, int line, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	bool fit;

	va_start(ap, fmt);
	fit = cfg_file_verr(buf, sizeof(buf), p->file, line, fmt, ap);
	va_end(ap);
	if (!fit)
		return;
	p->t->warn = xrealloc(
	    p->t->warn, (p->t->nwarn + 1) * sizeof(*p->t->warn));
	p->t->warn[p->t->nwarn++] = xstrdup(buf);
}

/* True for the bytes a local name may have unquoted: RFC 5322 atext,
 * dots and 8-bit bytes. */
static bool
name_byte_ok(unsigned char c)
{
	return c >= 0x80 || isalnum(c) ||
	    (c != 0 && strchr("!#$%&'*+-/=?^_`{|}~.", c) != NULL);
}

#define ALIAS_NAME_MAX 511 /* bytes of a name, as looked up */

/*
 * Reads the name at the start of logical line L (N bytes) into a new
 * lowercase string *OUT and sets *REST past its ':'.  A quoted name
 * takes any byte but controls (backslash escapes one); an unquoted one
 * runs to the ':' and may not hold blanks or an '@'.
 */
static enum mail_table_result
name_read(struct aparse *p, int line, const char *l, size_t n, char **out,
    size_t *rest)
{
	char q[128], *name = xmalloc(n + 1);
	size_t i = 0, k = 0;

	if (n > 0 && l[0] == '"') {
		for (i = 1; i < n && l[i] != '"'; i++) {
			if (l[i] == '\\' && i + 1 < n)
				i++;
			if ((unsigned char)l[i] < 0x20 || l[i] == 0x7f)
				break;
			name[k++] = (char)tolower((unsigned char)l[i]);
		}
		if (i >= n || l[i] != '"') {
			free(name);
			return terr(p->err, p->errlen, p->file, line,
			    "bad quoted name %s",
			    cfg_quote(l, n, q, sizeof(q)));
		}
		i++;
	} else {
		while (i < n && l[i] != ':' && l[i] != ' ' && l[i] != '\t') {
			if (!name_byte_ok((unsigned char)l[i]) || l[i] == '@') {
				free(name);
				return terr(p->err, p->errlen, p->file, line,
				    "bad alias name \"%s\" (a local name: no "
				    "'@', blank or control character; quote "
				    "it for others)",
				    cfg_quote(l, n, q, sizeof(q)));
			}
			name[k++] = (char)tolower((unsigned char)l[i]);
			i++;
		}
	}
	while (i < n && (l[i] == ' ' || l[i] == '\t'))
		i++;
	if (i >= n || l[i] != ':' || k == 0) {
		free(name);
		return terr(p->err, p->errlen, p->file, line,
		    k == 0 ? "empty alias name: %s"
			   : "expected \"name: address, ...\": %s",
		    cfg_quote(l, n, q, sizeof(q)));
	}
	if (k > ALIAS_NAME_MAX) {
		free(name);
		return terr(p->err, p->errlen, p->file, line,
		    "alias name longer than %d bytes: %s", ALIAS_NAME_MAX,
		    cfg_quote(l, n, q, sizeof(q)));
	}
	name[k] = '\0';
	*out = name;
	*rest = i + 1;
	return MAIL_TABLE_OK;
}

/* True if the N bytes at S are a local name (name_byte_ok bytes, no
 * '@'), as a target written without a domain is. */
static bool
local_name_ok(const char *s, size_t n)
{
	if (n == 0 || n > 256)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!name_byte_ok((unsigned char)s[i]))
			return false;
	return true;
}

/*
 * Reads one target (S, N bytes, blanks trimmed) of alias NAME into *T:
 * what kind it is, and its text.  An unparseable address is an error.
 */
static enum mail_table_result
target_read(struct aparse *p, int line, const char *name, const char *s,
    size_t n, struct mail_alias_target *t)
{
	const struct mail_addr_syntax syn = { MAIL_ADDR_WORD_LIMIT, NULL,
		ALIAS_ADDR_MAX };
	struct mail_addr_error aerr;
	const char *u = s;
	size_t un = n;
	char q[128], *addr = NULL;

	/* "|cmd" and "/file" may be quoted to hold commas and blanks */
	if (un >= 2 && u[0] == '"' && u[un - 1] == '"') {
		u++;
		un -= 2;
	}
	if ((un > 0 && (u[0] == '|' || u[0] == '/')) ||
	    (un >= 9 && strncasecmp(u, ":include:", 9) == 0)) {
		t->kind = MAIL_ALIAS_SKIP;
		t->text = xstrndup(s, n);
		warn_add(p, line,
		    "%s: \"%s\" skipped: relayq delivers no mail locally "
		    "(commands, files and :include: lists are not used)",
		    name, cfg_quote(s, n, q, sizeof(q)));
		return MAIL_TABLE_OK;
	}
	if (n > 1 && s[0] == '\\' && local_name_ok(s + 1, n - 1)) {
		t->kind = MAIL_ALIAS_VERBATIM;
		t->text = xstrndup(s + 1, n - 1);
		return MAIL_TABLE_OK;
	}
	if (local_name_ok(s, n) && memchr(s, '@', n) == NULL) {
		t->kind = MAIL_ALIAS_LOCAL;
		t->text = xstrndup(s, n);
		return MAIL_TABLE_OK;
	}
	if (mail_addrlist_parse(s, n, &syn, mail_addr_one, &addr, &aerr) !=
		MAIL_ADDR_OK ||
	    addr == NULL) {
		free(addr);
		return terr(p->err, p->errlen, p->file, line,
		    "%s: bad address \"%s\"%s%s", name,
		    cfg_quote(s, n, q, sizeof(q)), aerr.why != NULL ? ": " : "",
		    aerr.why != NULL ? aerr.why : "");
	}
	t->kind = MAIL_ALIAS_ADDR;
	t->text = addr;
	return MAIL_TABLE_OK;
}

/* Frees what alias A holds. */
static void
alias_clear(struct mail_alias *a)
{
	for (size_t i = 0; i < a->n; i++)
		free(a->t[i].text);
	free(a->t);
	free(a->name);
}

/*
 * Parses one logical line L (N bytes, its first physical line LINE):
 * the name, then the targets, split at commas outside quotes, angle
 * brackets and comments.
 */
static enum mail_table_result
entry_read(struct aparse *p, int line, const char *l, size_t n)
{
	struct mail_alias a;
	size_t i = 0, start, cap = 0;
	int depth = 0;
	bool inq = false, angle = false;

	memset(&a, 0, sizeof(a));
	a.line = line;
	if (name_read(p, line, l, n, &a.name, &i) != MAIL_TABLE_OK)
		return MAIL_TABLE_BAD;
	for (start = i; i <= n; i++) {
		char c = i < n ? l[i] : ',';

		if (i < n && c == '\\') {
			i++;
			continue;
		}
		if (c == '"' && depth == 0)
			inq = !inq;
		else if (inq)
			continue;
		else if (c == '(')
			depth++;
		else if (c == ')' && depth > 0)
			depth--;
		else if (c == '<' && depth == 0)
			angle = true;
		else if (c == '>' && depth == 0)
			angle = false;
		if (c != ',' || depth > 0 || angle || (inq && i < n))
			continue;
		{
			const char *s = l + start;
			size_t sn = i - start;

			start = i + 1;
			while (sn > 0 && strchr(" \t\r\n", *s) != NULL) {
				s++;
				sn--;
			}
			while (sn > 0 && strchr(" \t\r\n", s[sn - 1]) != NULL)
				sn--;
			if (sn == 0)
				continue; /* "a,,b" and a trailing comma */
			if (a.n == cap) {
				cap = cap ? cap * 2 : 4;
				a.t = xrealloc(a.t, cap * sizeof(*a.t));
			}
			if (target_read(p, line, a.name, s, sn, &a.t[a.n]) !=
			    MAIL_TABLE_OK) {
				alias_clear(&a);
				return MAIL_TABLE_BAD;
			}
			a.n++;
		}
	}
	if (inq || depth > 0 || angle) {
		char q[128];

		alias_clear(&a);
		return terr(p->err, p->errlen, p->file, line,
		    "unbalanced %s in %s",
		    inq		    ? "quote"
			: depth > 0 ? "parenthesis"
				    : "'<'",
		    cfg_quote(l, n, q, sizeof(q)));
	}
	if (a.n == 0) {
		enum mail_table_result r = terr(
		    p->err, p->errlen, p->file, line, "%s: no address", a.name);

		alias_clear(&a);
		return r;
	}
	if (p->t->n == p->cap) {
		p->cap = p->cap ? p->cap * 2 : 16;
		p->t->v = xrealloc(p->t->v, p->cap * sizeof(*p->t->v));
	}
	p->t->v[p->t->n++] = a;
	return MAIL_TABLE_OK;
}

/* Orders aliases by name, then line (the first of a name first). */
static int
alias_cmp(const void *x, const void *y)
{
	const struct mail_alias *a = x, *b = y;
	int r = strcmp(a->name, b->name);

	return r != 0 ? r : (a->line > b->line) - (a->line < b->line);
}

/* Sorts the table and keeps the first alias of each name, with a
 * warning for each later one. */
static void
table_finish(struct aparse *p)
{
	struct mail_aliases *t = p->t;
	size_t w = 0;

	if (t->n > 1)
		qsort(t->v, t->n, sizeof(*t->v), alias_cmp);
	for (size_t i = 0; i < t->n; i++) {
		if (w > 0 && strcmp(t->v[w - 1].name, t->v[i].name) == 0) {
			warn_add(p, t->v[i].line,
			    "duplicate alias \"%.200s\" ignored (first on "
			    "line %d)",
			    t->v[i].name, t->v[w - 1].line);
			alias_clear(&t->v[i]);
			continue;
		}
		t->v[w++] = t->v[i];
	}
	t->n = w;
}

/* Parses an aliases file; see mail.h. */
enum mail_table_result
mail_aliases_parse(const char *name, const char *buf, size_t len,
    struct mail_aliases **out, char *err, size_t errlen)
{
	struct aparse p = { name, xcalloc(1, sizeof(struct mail_aliases)), 0,
		err, errlen };
	char *lbuf = NULL;
	size_t pos = 0, ll = 0, lcap = 0;
	int lno = 0, lstart = 0;
	enum mail_table_result r = MAIL_TABLE_OK;

	*out = NULL;
	if (len > 0 && memchr(buf, '\0', len) != NULL) {
		const char *z = memchr(buf, '\0', len);
		int zl = 1;

		for (const char *c = buf; c < z; c++)
			zl += *c == '\n';
		r = terr(err, errlen, name, zl, "NUL byte in line");
	}
	while (r == MAIL_TABLE_OK && pos < len) {
		const char *line = buf + pos;
		const char *nl = memchr(line, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - line) : len - pos;
		bool blank, cont;
		size_t k = 0;

		pos += n + 1;
		lno++;
		if (n > 0 && line[n - 1] == '\r')
			n--;
		while (k < n && (line[k] == ' ' || line[k] == '\t'))
			k++;
		blank = k == n || line[k] == '#';
		cont = !blank && k > 0;
		if (blank)
			continue; /* neither ends nor continues an entry */
		if (cont && ll > 0) {
			/* a continuation line: joined with one blank */
			if (ll + 1 + n - k + 1 > lcap) {
				lcap = (ll + 1 + n - k + 1) * 2;
				lbuf = xrealloc(lbuf, lcap);
			}
			lbuf[ll++] = ' ';
			memcpy(lbuf + ll, line + k, n - k);
			ll += n - k;
			continue;
		}
		if (cont) {
			char q[128];

			r = terr(err, errlen, name, lno,
			    "continuation line with no alias before it: %s",
			    cfg_quote(line + k, n - k, q, sizeof(q)));
			break;
		}
		if (ll > 0 &&
		    (r = entry_read(&p, lstart, lbuf, ll)) != MAIL_TABLE_OK)
			break;
		if (n + 1 > lcap) {
			lcap = (n + 1) * 2;
			lbuf = xrealloc(lbuf, lcap);
		}
		memcpy(lbuf, line, n);
		ll = n;
		lstart = lno;
	}
	if (r == MAIL_TABLE_OK && ll > 0)
		r = entry_read(&p, lstart, lbuf, ll);
	free(lbuf);
	if (r != MAIL_TABLE_OK) {
		mail_aliases_free(p.t);
		return r;
	}
	table_finish(&p);
	*out = p.t;
	return MAIL_TABLE_OK;
}

/* Frees a table. */
void
mail_aliases_free(struct mail_aliases *t)
{
	if (t == NULL)
		return;
	for (size_t i = 0; i < t->n; i++)
		alias_clear(&t->v[i]);
	for (size_t i = 0; i < t->nwarn; i++)
		free(t->warn[i]);
	free(t->warn);
	free(t->v);
	free(t);
}

/* The alias of LOCAL; see mail.h. */
const struct mail_alias *
mail_aliases_find(const struct mail_aliases *t, const char *local, size_t n)
{
	char key[ALIAS_NAME_MAX + 1];
	size_t k = 0, lo = 0, hi;

	if (t == NULL || n == 0)
		return NULL;
	if (n >= 2 && local[0] == '"' && local[n - 1] == '"') {
		for (size_t i = 1; i + 1 < n && k + 1 < sizeof(key); i++) {
			if (local[i] == '\\' && i + 2 < n)
				i++;
			key[k++] = (char)tolower((unsigned char)local[i]);
		}
	} else {
		for (size_t i = 0; i < n && k + 1 < sizeof(key); i++)
			key[k++] = (char)tolower((unsigned char)local[i]);
	}
	key[k] = '\0';
	hi = t->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int r = strcmp(key, t->v[mid].name);

		if (r == 0)
			return &t->v[mid];
		if (r < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

/* True if domain D (N bytes) is NAME in any case. */
static bool
domain_is(const char *d, size_t n, const char *name)
{
	return name != NULL && name[0] != '\0' && strlen(name) == n &&
	    strncasecmp(d, name, n) == 0;
}

/* Whether ADDR is local mail; see mail.h. */
bool
mail_local_is(const struct mail_local *ml, const char *addr)
{
	size_t at = mail_addr_at(addr), n;
	const char *d;

	if (addr[at] != '@')
		return true; /* unqualified */
	d = addr + at + 1;
	n = strlen(d);
	return domain_is(d, n, ml->origin) || domain_is(d, n, ml->hostname) ||
	    domain_is(d, n, "localhost");
}

/* An expansion under way. */
struct expand {
	const struct mail_local *ml;
	mail_addr_fn *fn;
	void *arg;
	struct mail_expand_info *info;
	struct mail_addr_set seen; /* names expanded (lowercase) */
	size_t emitted, nodes;
	enum mail_addr_result r;
};

/* Hands address A on, counting it. */
static bool
emit(struct expand *x, const char *a)
{
	if (x->r != MAIL_ADDR_OK)
		return false;
	if (++x->emitted > MAIL_ALIAS_FANOUT) {
		x->r = MAIL_ADDR_TOOMANY;
		return false;
	}
	x->r = x->fn(x->arg, a);
	return x->r == MAIL_ADDR_OK;
}

/* Hands on where local name NAME (N bytes, as written) with no alias
 * goes: the fallback, else NAME@origin. */
static bool
emit_local(struct expand *x, const char *name, size_t n)
{
	char a[MAIL_ADDR_LEN_MAX + 1];

	if (x->ml->fallback != NULL && x->ml->fallback[0] != '\0')
		return emit(x, x->ml->fallback);
	if (n + 1 + strlen(x->ml->origin) > MAIL_ADDR_LEN_MAX) {
		x->r = MAIL_ADDR_TOOLONG;
		return false;
	}
	snprintf(a, sizeof(a), "%.*s@%s", (int)n, name, x->ml->origin);
	return emit(x, a);
}

/* Expands local name NAME (N bytes) at DEPTH; see mail_alias_expand(). */
static void
expand_name(struct expand *x, const char *name, size_t n, int depth)
{
	const struct mail_alias *al;
	size_t k;

	if (x->r != MAIL_ADDR_OK)
		return;
	if (++x->nodes > MAIL_ALIAS_NODES) {
		x->r = MAIL_ADDR_TOOMANY;
		return;
	}
	al = mail_aliases_find(x->ml->aliases, name, n);
	if (al == NULL || depth >= MAIL_ALIAS_DEPTH) {
		emit_local(x, name, n);
		return;
	}
	if (mail_addr_set_put(&x->seen, al->name, 0, &k) == MAIL_SET_FOUND) {
		if (x->info)
			x->info->loops++;
		return; /* reached again: adds nothing (sendmail) */
	}
	for (size_t i = 0; i < al->n && x->r == MAIL_ADDR_OK; i++) {
		const struct mail_alias_target *t = &al->t[i];
		size_t at;

		switch (t->kind) {
		case MAIL_ALIAS_SKIP:
			if (x->info)
				x->info->skipped++;
			break;
		case MAIL_ALIAS_VERBATIM:
			emit_local(x, t->text, strlen(t->text));
			break;
		case MAIL_ALIAS_LOCAL:
			expand_name(x, t->text, strlen(t->text), depth + 1);
			break;
		case MAIL_ALIAS_ADDR:
			if (!mail_local_is(x->ml, t->text)) {
				emit(x, t->text);
				break;
			}
			at = mail_addr_at(t->text);
			expand_name(x, t->text, at, depth + 1);
			break;
		}
	}
}

/* Expands a recipient; see mail.h. */
enum mail_addr_result
mail_alias_expand(const struct mail_local *ml, const char *addr,
    mail_addr_fn *fn, void *arg, struct mail_expand_info *info)
{
	struct expand x;
	size_t at = mail_addr_at(addr);

	if (info != NULL)
		memset(info, 0, sizeof(*info));
	if (!mail_local_is(ml, addr))
		return fn(arg, addr);
	memset(&x, 0, sizeof(x));
	x.ml = ml;
	x.fn = fn;
	x.arg = arg;
	x.info = info;
	x.r = MAIL_ADDR_OK;
	expand_name(&x, addr, at, 0);
	if (x.r == MAIL_ADDR_OK && x.emitted == 0) {
		/* loops and skipped targets only: not dropped */
		if (info != NULL)
			info->empty = true;
		emit_local(&x, addr, at);
	}
	mail_addr_set_free(&x.seen);
	return x.r;
}
