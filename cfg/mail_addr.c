/*
 * mail_addr.c - RFC 5322 address lists, and sets of addresses as SMTP
 * compares them.  Intake reads To:, Cc:, Bcc:, Sender:, From:,
 * X-Sender: and X-Receiver: with it (queue_parse.c); `relayq send` its
 * recipient arguments, -f and the fields of -t (tools/cmd_send.c).
 *
 * Public: mail_addrlist_parse(), mail_addrlist_spans() (where each
 * address is written, for the header edits of intake), mail_addr_one()
 * (the callback of a value that is one address), mail_addr_at(),
 * mail_addr_set_put(), mail_addr_set_free().
 *
 * The grammar: a list of items separated by commas; an item is a
 * mailbox ([display name] <[@route:] addr-spec>, or a bare addr-spec) or
 * a group (display name ':' mailboxes ';'); comments and folding
 * anywhere between tokens; a local part of atoms, quoted strings and
 * dots; a domain of dot-separated atoms, or a literal.  An address
 * without a domain gets "@" qualify.  The MAIL_ADDR_* flags (mail.h)
 * are the places where `relayq send` has always parsed differently from
 * intake; each is tested one way and the other in tests/cfg/test_mail.c.
 *
 * Invariants: never reads outside [s, s+len); an address handed on is
 * at most max_len bytes, has no CR or LF, no other control byte (as
 * checked when built, or with MAIL_ADDR_LAX_QUOTES at the end), and is
 * empty only for the null sender of MAIL_ADDR_ONE.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cfg.h"
#include "mail.h"

enum tok_type { T_END, T_ATOM, T_QSTR, T_DOMLIT, T_SPECIAL, T_ERR };

/* One token; p and n point into the input. */
struct tok {
	enum tok_type type;
	const char *p;
	size_t n;
};

/* A cursor over an address list, with one token of look-ahead.  A copy
 * of it is a saved position. */
struct lex {
	const char *s;
	size_t len, i;
	unsigned flags;
	const char *why; /* the first lexical error met */
	bool peeked;
	struct tok pk;
};

/* Returns true for RFC 5322 atext, plus 8-bit bytes (UTF-8 names). */
static bool
is_atext(unsigned char c)
{
	if (c >= 0x80)
		return true;
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9'))
		return true;
	return c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

/* Skips blanks, folds and (nested) comments; false on a bare CR (a
 * blank with LAX_QUOTES), a NUL or an unterminated comment. */
static bool
lex_cfws(struct lex *lx)
{
	while (lx->i < lx->len) {
		unsigned char c = (unsigned char)lx->s[lx->i];

		if (c == ' ' || c == '\t' || c == '\n') {
			lx->i++;
		} else if (c == '\r') {
			if (lx->flags & MAIL_ADDR_LAX_QUOTES) {
				lx->i++;
				continue;
			}
			if (lx->i + 1 >= lx->len || lx->s[lx->i + 1] != '\n') {
				lx->why = "CR/LF/NUL in an address";
				return false;
			}
			lx->i += 2;
		} else if (c == '(') {
			int depth = 0;

			do {
				c = (unsigned char)lx->s[lx->i];
				if (c == '\\')
					lx->i++;
				else if (c == '(')
					depth++;
				else if (c == ')')
					depth--;
				else if (c == '\0') {
					lx->why = "CR/LF/NUL in an address";
					return false;
				}
				lx->i++;
			} while (depth > 0 && lx->i < lx->len);
			if (depth > 0) {
				lx->why = "unterminated comment in address";
				return false;
			}
		} else {
			break;
		}
	}
	return true;
}

/* Checks the byte at lx->i inside a quoted string or literal opened by
 * OPEN (a backslash's escaped byte is skipped here); returns why it is
 * not allowed there, or NULL. */
static const char *
lex_quoted_byte(struct lex *lx, char open)
{
	unsigned char c = (unsigned char)lx->s[lx->i];

	if (open == '[' && c == '[' && (lx->flags & MAIL_ADDR_PLAIN_LITERAL))
		return "unparseable address";
	if (lx->flags & MAIL_ADDR_LAX_QUOTES) {
		/* anything but NUL; a backslash escapes any byte */
		if (c == '\\')
			lx->i++;
		return c == '\0' ? "CR/LF/NUL in an address" : NULL;
	}
	if (c == '\\') {
		unsigned char e = lx->i + 1 < lx->len
		    ? (unsigned char)lx->s[lx->i + 1]
		    : 0;

		lx->i++;
		if (e == '\r' || e == '\n' || e == '\0')
			return "CR/LF/NUL in an address";
	} else if (c == '\r' || c == '\n') {
		/* only a fold may break a quoted string */
		size_t j = lx->i + (c == '\r' ? 1 : 0);

		if (j >= lx->len || lx->s[j] != '\n' || j + 1 >= lx->len ||
		    (lx->s[j + 1] != ' ' && lx->s[j + 1] != '\t'))
			return "CR/LF/NUL in an address";
	} else if ((c < 0x20 && c != '\t') || c == 0x7f) {
		return "control character in an address";
	}
	return NULL;
}

/* Reads the next token. */
static struct tok
lex_next(struct lex *lx)
{
	struct tok t = { T_ERR, NULL, 0 };
	size_t st;

	if (lx->peeked) {
		lx->peeked = false;
		return lx->pk;
	}
	if (!lex_cfws(lx))
		return t;
	if (lx->i >= lx->len) {
		t.type = T_END;
		t.p = lx->s + lx->len;
		return t;
	}
	st = lx->i;
	t.p = lx->s + st;
	if (lx->s[st] == '"' || lx->s[st] == '[') {
		char open = lx->s[st], close = open == '"' ? '"' : ']';

		lx->i++;
		while (lx->i < lx->len && lx->s[lx->i] != close) {
			const char *why = lex_quoted_byte(lx, open);

			if (why != NULL) {
				lx->why = why;
				return t;
			}
			lx->i++;
		}
		if (lx->i >= lx->len) {
			lx->why = "unterminated quoted string in address";
			return t;
		}
		lx->i++;
		t.type = close == '"' ? T_QSTR : T_DOMLIT;
		t.n = lx->i - st;
		return t;
	}
	if (is_atext((unsigned char)lx->s[st])) {
		while (lx->i < lx->len && is_atext((unsigned char)lx->s[lx->i]))
			lx->i++;
		t.type = T_ATOM;
		t.n = lx->i - st;
		return t;
	}
	if (strchr("<>:;@,.", lx->s[st]) != NULL && lx->s[st] != '\0') {
		lx->i++;
		t.type = T_SPECIAL;
		t.n = 1;
		return t;
	}
	lx->why = (lx->s[st] == '\0' || lx->s[st] == '\r')
	    ? "CR/LF/NUL in an address"
	    : "unparseable address";
	return t;
}

/* Peeks at the next token without consuming it. */
static struct tok
lex_peek(struct lex *lx)
{
	if (!lx->peeked) {
		lx->pk = lex_next(lx);
		lx->peeked = true;
	}
	return lx->pk;
}

/* True if T is the special character C. */
static bool
tok_is(struct tok t, char c)
{
	return t.type == T_SPECIAL && t.p[0] == c;
}

/* True if T may be part of a local part or display name. */
static bool
tok_is_word_or_dot(struct tok t)
{
	return t.type == T_ATOM || t.type == T_QSTR || tok_is(t, '.');
}

/* With MAIL_ADDR_LEX_FIRST: true if the whole input is free of lexical
 * errors (and of NUL bytes). */
static bool
lex_check_all(struct lex *lx)
{
	struct lex c = *lx;
	struct tok t;

	if (lx->len > 0 && memchr(lx->s, '\0', lx->len) != NULL) {
		lx->why = "CR/LF/NUL in an address";
		return false;
	}
	while ((t = lex_next(&c)).type != T_END)
		if (t.type == T_ERR) {
			lx->why = c.why;
			return false;
		}
	return true;
}

/* An address being built: at most MAIL_ADDR_LEN_MAX bytes are kept, but
 * the length it would have is counted, for the error. */
struct abuf {
	char a[MAIL_ADDR_LEN_MAX + 1];
	size_t n; /* bytes kept */
	size_t want; /* bytes the whole address has */
	size_t local; /* bytes of its local part, when qualified */
	bool qualified; /* "@" qualify was added */
	bool at_seen; /* an '@' anywhere (in a quoted local part) */
	bool ctl; /* a control byte kept (LAX_QUOTES) */
	/* the first '@' outside quotes, for the length of a local part: the
	 * one before the domain, or with LAX_QUOTES where the unfolded text
	 * puts it (a backslash before a dropped line break escapes what
	 * follows; mail_addr_set reads the text so) */
	bool at_found;
	size_t at_off;
	bool in_quote, escaped; /* LAX_QUOTES: the scan so far */
	/* where its addr-spec is written in the input: from the first
	 * token of its local part to the last of its domain (of the local
	 * part when it was qualified) */
	const char *sp, *ep;
};

/* Notes token T as part of the addr-spec being read into B. */
static void
abuf_span(struct abuf *b, struct tok t)
{
	if (b->sp == NULL)
		b->sp = t.p;
	b->ep = t.p + t.n;
}

/* With LAX_QUOTES: follows quotes and escapes in the text as it is
 * built, to find its first '@' outside quotes. */
static void
abuf_scan(struct abuf *b, unsigned char c)
{
	if (b->escaped)
		b->escaped = false;
	else if (c == '\\' && b->in_quote)
		b->escaped = true;
	else if (c == '"')
		b->in_quote = !b->in_quote;
	else if (c == '@' && !b->in_quote && !b->at_found) {
		b->at_found = true;
		b->at_off = b->want;
	}
}

/* Appends token text to B, dropping CR and LF (unfolding); false on
 * another control byte, which LAX only notes. */
static bool
abuf_cat(struct abuf *b, const char *p, size_t n, bool lax)
{
	for (size_t k = 0; k < n; k++) {
		unsigned char c = (unsigned char)p[k];

		if (c < 0x20 || c == 0x7f || c == '@' || lax) {
			if (c == '\r' || c == '\n')
				continue;
			/* no controls, TAB included (RFC 5321 qtextSMTP has
			 * none) */
			if (c < 0x20 || c == 0x7f) {
				if (!lax)
					return false;
				b->ctl = true;
			}
			if (c == '@')
				b->at_seen = true;
			if (lax)
				abuf_scan(b, c);
		}
		b->want++;
		if (b->n < MAIL_ADDR_LEN_MAX)
			b->a[b->n++] = (char)c;
	}
	b->a[b->n] = '\0';
	return true;
}

/* The length of B's local part: before its first '@' outside quotes
 * (before the '@' added when it was qualified). */
static size_t
abuf_local_len(const struct abuf *b)
{
	if (b->qualified)
		return b->local;
	return b->at_found ? b->at_off : b->want;
}

/* The words and dots read by local_scan(), and what they make. */
struct local_scan {
	size_t words; /* words and dots */
	bool any; /* a word among them */
	bool dot_last; /* the last one is a dot */
	bool bad; /* not a local part: see local_scan() */
};

/*
 * Reads the words and dots at the cursor, which are a display name or a
 * local part (what follows tells), into B as a local part.  Dots may
 * repeat, as real mail has "a..b"; two words in a row may not; with
 * STRICT_DOTS it does not start with a dot; no control byte but with
 * LAX_QUOTES.  What breaks these is noted in LS->bad, read by
 * local_ok(); false only past MAIL_ADDR_WORDS_MAX with WORD_LIMIT.
 */
static bool
local_scan(struct lex *lx, struct abuf *b, struct local_scan *ls)
{
	bool strict = (lx->flags & MAIL_ADDR_STRICT_DOTS) != 0;
	bool lax = (lx->flags & MAIL_ADDR_LAX_QUOTES) != 0;

	memset(ls, 0, sizeof(*ls));
	while (tok_is_word_or_dot(lex_peek(lx))) {
		struct tok t;
		bool dot;

		if ((lx->flags & MAIL_ADDR_WORD_LIMIT) &&
		    ls->words == MAIL_ADDR_WORDS_MAX) {
			lx->why = "address too long: too many words in its "
				  "local part";
			return false;
		}
		t = lex_next(lx);
		abuf_span(b, t);
		dot = tok_is(t, '.');
		if ((!dot && ls->words > 0 && !ls->dot_last) ||
		    (dot && strict && ls->words == 0) ||
		    (!ls->bad && !abuf_cat(b, t.p, t.n, lax)))
			ls->bad = true;
		ls->words++;
		ls->any = ls->any || !dot;
		ls->dot_last = dot;
	}
	return true;
}

/* True if the words LS read are a local part; with STRICT_DOTS it does
 * not end with a dot before its '@'. */
static bool
local_ok(struct lex *lx, const struct local_scan *ls)
{
	if (ls->bad || !ls->any)
		return false;
	return !((lx->flags & MAIL_ADDR_STRICT_DOTS) && ls->dot_last &&
	    tok_is(lex_peek(lx), '@'));
}

/* Parses the domain after '@' (dot-atom or literal) into B; with
 * SOLID_DOMAIN a blank before a dot ends it, one after a dot is an
 * error. */
static bool
domain_parse(struct lex *lx, struct abuf *b)
{
	bool solid = (lx->flags & MAIL_ADDR_SOLID_DOMAIN) != 0;
	bool lax = (lx->flags & MAIL_ADDR_LAX_QUOTES) != 0;
	struct tok t = lex_next(lx);
	const char *end;

	abuf_span(b, t);
	if (t.type == T_DOMLIT) {
		/* no blank in a literal: no SMTP peer takes one (RFC 5321
		 * address-literal), and a domain is one word everywhere */
		if (memchr(t.p, ' ', t.n) != NULL ||
		    memchr(t.p, '\t', t.n) != NULL) {
			lx->why = "blank in an address literal";
			return false;
		}
		return abuf_cat(b, t.p, t.n, lax);
	}
	if (t.type != T_ATOM || !abuf_cat(b, t.p, t.n, lax))
		return false;
	end = t.p + t.n;
	while (tok_is(lex_peek(lx), '.')) {
		if (solid && lex_peek(lx).p != end)
			break;
		lex_next(lx);
		t = lex_next(lx);
		abuf_span(b, t);
		if (t.type != T_ATOM || (solid && t.p != end + 1) ||
		    !abuf_cat(b, ".", 1, lax) || !abuf_cat(b, t.p, t.n, lax))
			return false;
		end = t.p + t.n;
	}
	return true;
}

/* Adds "@" and the domain: parsed, or QUALIFY when there is no '@'
 * (with QUALIFY_NO_AT, not when the local part holds one). */
static bool
addr_domain(struct lex *lx, const struct mail_addr_syntax *syn, struct abuf *b)
{
	if (tok_is(lex_peek(lx), '@')) {
		lex_next(lx);
		if (!(syn->flags & MAIL_ADDR_LAX_QUOTES)) {
			b->at_found = true;
			b->at_off = b->want;
		}
		abuf_cat(b, "@", 1, (syn->flags & MAIL_ADDR_LAX_QUOTES) != 0);
		return domain_parse(lx, b);
	}
	if (syn->qualify == NULL)
		return false;
	if ((syn->flags & MAIL_ADDR_QUALIFY_NO_AT) && b->at_seen)
		return true;
	b->qualified = true;
	b->local = b->want;
	abuf_cat(b, "@", 1, false);
	return abuf_cat(b, syn->qualify, strlen(syn->qualify),
	    (syn->flags & MAIL_ADDR_LAX_QUOTES) != 0);
}

/* Parses the inside of <...> into B (an obsolete route first is
 * skipped); "<>" is an error but for MAIL_ADDR_ONE's null sender. */
static bool
angle_parse(struct lex *lx, const struct mail_addr_syntax *syn, struct abuf *b)
{
	struct local_scan ls;

	if (tok_is(lex_peek(lx), '@')) {
		/* obs-route: @a,@b: */
		while (!tok_is(lex_peek(lx), ':')) {
			struct tok t = lex_next(lx);

			if (t.type == T_END || t.type == T_ERR ||
			    tok_is(t, '>'))
				return false;
		}
		lex_next(lx);
	}
	if (tok_is(lex_peek(lx), '>')) {
		if (!(syn->flags & MAIL_ADDR_ONE))
			return false; /* <> is no recipient */
		lex_next(lx);
		return true;
	}
	if (!local_scan(lx, b, &ls) || !local_ok(lx, &ls) ||
	    !addr_domain(lx, syn, b))
		return false;
	return tok_is(lex_next(lx), '>');
}

/*
 * Parses one mailbox at the cursor into B.  When GROUP_OK (intake's
 * grammar) words followed by ':' start a group instead: the ':' is
 * consumed and *group set.
 */
static bool
mailbox_parse(struct lex *lx, const struct mail_addr_syntax *syn,
    struct abuf *b, bool group_ok, bool *group)
{
	struct local_scan ls;
	struct tok t;

	memset(b, 0, sizeof(*b));
	*group = false;
	if (!local_scan(lx, b, &ls))
		return false;
	t = lex_peek(lx);
	if (t.type == T_ERR)
		return false;
	if (tok_is(t, '<')) {
		/* what was read is a display name */
		lex_next(lx);
		memset(b, 0, sizeof(*b));
		return angle_parse(lx, syn, b);
	}
	if (group_ok && tok_is(t, ':') && ls.words > 0) {
		lex_next(lx);
		*group = true;
		return true;
	}
	return local_ok(lx, &ls) && addr_domain(lx, syn, b);
}

/* With FLAT_GROUPS: true if the item at the cursor is a group, that is
 * the first of < > @ , ; : in it is ':'. */
static bool
item_is_group(const struct lex *lx)
{
	struct lex c = *lx;

	for (;;) {
		struct tok t = lex_next(&c);

		if (t.type == T_END || t.type == T_ERR)
			return false;
		if (t.type == T_SPECIAL && t.p[0] != '.')
			return t.p[0] == ':';
	}
}

/* Where the addresses go: FN, or SPAN_FN with where each is written. */
struct emit {
	mail_addr_fn *fn;
	mail_addr_span_fn *span_fn;
	void *arg;
	const char *s; /* the input, for offsets */
};

/* Hands address A (built in B) to E's callback. */
static enum mail_addr_result
emit_call(const struct emit *e, const struct abuf *b, const char *a)
{
	if (e->span_fn == NULL)
		return e->fn(e->arg, a);
	if (b->sp == NULL)
		return e->span_fn(e->arg, a, 0, 0);
	return e->span_fn(
	    e->arg, a, (size_t)(b->sp - e->s), (size_t)(b->ep - b->sp));
}

/* Checks the address in B and hands it on; an empty B is the null
 * sender. */
static enum mail_addr_result
addr_emit(const struct abuf *b, const struct mail_addr_syntax *syn,
    const struct emit *e, struct mail_addr_error *err)
{
	if (b->want == 0)
		return emit_call(e, b, "");
	if (b->want > syn->max_len) {
		err->len = b->want;
		err->local = abuf_local_len(b);
		return MAIL_ADDR_TOOLONG;
	}
	if (b->ctl) {
		err->why = "CR/LF/NUL in an address";
		return MAIL_ADDR_BAD;
	}
	return emit_call(e, b, b->a);
}

/* Parses the one mailbox (or none) of MAIL_ADDR_ONE. */
static enum mail_addr_result
one_parse(struct lex *lx, const struct mail_addr_syntax *syn,
    const struct emit *e, struct mail_addr_error *err)
{
	struct abuf b;
	bool group;

	if (lex_peek(lx).type == T_END) {
		memset(&b, 0, sizeof(b));
		return emit_call(e, &b, "");
	}
	if (!mailbox_parse(lx, syn, &b, false, &group) ||
	    lex_peek(lx).type != T_END)
		return MAIL_ADDR_BAD;
	return addr_emit(&b, syn, e, err);
}

/*
 * Parses the items of a list.  A group's members are read in the same
 * loop (in_group), since groups do not nest.
 */
static enum mail_addr_result
list_parse(struct lex *lx, const struct mail_addr_syntax *syn,
    const struct emit *e, struct mail_addr_error *err)
{
	bool flat = (syn->flags & MAIL_ADDR_FLAT_GROUPS) != 0;
	bool in_group = false;

	for (;;) {
		struct tok t = lex_peek(lx);
		enum mail_addr_result r;
		struct local_scan ls;
		struct abuf b;
		bool group;

		if (t.type == T_END)
			return MAIL_ADDR_OK;
		if (t.type == T_ERR)
			return MAIL_ADDR_BAD;
		if (tok_is(t, ',')) {
			lex_next(lx);
			continue;
		}
		if (in_group && tok_is(t, ';')) {
			lex_next(lx);
			in_group = false;
			if (flat)
				continue; /* the next item may follow */
			goto separator;
		}
		if (flat && !in_group && item_is_group(lx)) {
			/* its display name, then ':' */
			memset(&b, 0, sizeof(b));
			if (!local_scan(lx, &b, &ls) ||
			    !tok_is(lex_next(lx), ':'))
				return MAIL_ADDR_BAD;
			in_group = true;
			continue;
		}
		if (!mailbox_parse(lx, syn, &b, !flat && !in_group, &group))
			return MAIL_ADDR_BAD;
		if (group) {
			in_group = true;
			continue;
		}
		if ((r = addr_emit(&b, syn, e, err)) != MAIL_ADDR_OK)
			return r;
		if (in_group && !flat)
			continue; /* members may follow each other */
	separator:
		t = lex_peek(lx);
		if (t.type != T_END && !tok_is(t, ',') &&
		    !(in_group && tok_is(t, ';')))
			return MAIL_ADDR_BAD;
	}
}

/* Parses an address list for emitter E. */
static enum mail_addr_result
addrlist_parse(const char *s, size_t len, const struct mail_addr_syntax *syn,
    const struct emit *e, struct mail_addr_error *err)
{
	struct lex lx = { s, len, 0, syn->flags, NULL, false,
		{ T_END, NULL, 0 } };
	enum mail_addr_result r;

	memset(err, 0, sizeof(*err));
	if ((syn->flags & MAIL_ADDR_LEX_FIRST) && !lex_check_all(&lx))
		r = MAIL_ADDR_BAD;
	else if (syn->flags & MAIL_ADDR_ONE)
		r = one_parse(&lx, syn, e, err);
	else
		r = list_parse(&lx, syn, e, err);
	if (r == MAIL_ADDR_BAD && err->why == NULL)
		err->why = lx.why != NULL ? lx.why : "unparseable address";
	return r;
}

/* Keeps the one address of a list; see mail.h. */
enum mail_addr_result
mail_addr_one(void *arg, const char *addr)
{
	char **out = arg;

	if (*out != NULL)
		return MAIL_ADDR_TOOMANY;
	*out = xstrdup(addr);
	return MAIL_ADDR_OK;
}

/* Parses an address list; see mail.h. */
enum mail_addr_result
mail_addrlist_parse(const char *s, size_t len,
    const struct mail_addr_syntax *syn, mail_addr_fn *fn, void *arg,
    struct mail_addr_error *err)
{
	const struct emit e = { fn, NULL, arg, s };

	return addrlist_parse(s, len, syn, &e, err);
}

/* Parses an address list, saying where each address is; see mail.h. */
enum mail_addr_result
mail_addrlist_spans(const char *s, size_t len,
    const struct mail_addr_syntax *syn, mail_addr_span_fn *fn, void *arg,
    struct mail_addr_error *err)
{
	const struct emit e = { NULL, fn, arg, s };

	return addrlist_parse(s, len, syn, &e, err);
}

/* ---- sets of addresses ---- */

/* The offset of the '@' between ADDR's local part and its domain (the
 * first one outside a quoted string), or its length when none. */
size_t
mail_addr_at(const char *a)
{
	bool q = false;
	size_t i;

	for (i = 0; a[i] != '\0'; i++) {
		if (a[i] == '\\' && q && a[i + 1] != '\0')
			i++;
		else if (a[i] == '"')
			q = !q;
		else if (a[i] == '@' && !q)
			break;
	}
	return i;
}

/* Hashes an address as SMTP compares it: the domain in any case. */
static uint64_t
addr_hash(const char *a)
{
	size_t at = mail_addr_at(a);
	uint64_t h = 1469598103934665603ull;

	for (size_t i = 0; a[i] != '\0'; i++) {
		unsigned char c = (unsigned char)a[i];

		if (i > at && c >= 'A' && c <= 'Z')
			c = (unsigned char)(c - 'A' + 'a');
		h = (h ^ c) * 1099511628211ull;
	}
	return h;
}

/* True when A and B are one mailbox to SMTP: the same local part (case
 * matters: RFC 5321 2.4), the same domain in any case. */
static bool
addr_same(const char *a, const char *b)
{
	size_t x = mail_addr_at(a), y = mail_addr_at(b);

	return x == y && memcmp(a, b, x) == 0 && strcasecmp(a + x, b + x) == 0;
}

/* Rebuilds SET's index at twice its size. */
static void
set_grow(struct mail_addr_set *set)
{
	size_t cap = set->nslot ? set->nslot * 2 : 16;
	uint32_t *h = xcalloc(cap, sizeof(*h));

	for (size_t i = 0; i < set->n; i++) {
		size_t j = addr_hash(set->v[i]) & (cap - 1);

		while (h[j] != 0)
			j = (j + 1) & (cap - 1);
		h[j] = (uint32_t)i + 1;
	}
	free(set->slot);
	set->slot = h;
	set->nslot = cap;
}

/* Adds an address unless the same mailbox is there; see mail.h. */
enum mail_set_result
mail_addr_set_put(
    struct mail_addr_set *set, const char *addr, size_t max, size_t *idx)
{
	size_t j;

	if ((set->n + 1) * 2 > set->nslot)
		set_grow(set);
	for (j = addr_hash(addr) & (set->nslot - 1); set->slot[j] != 0;
	     j = (j + 1) & (set->nslot - 1)) {
		if (addr_same(set->v[set->slot[j] - 1], addr)) {
			if (idx != NULL)
				*idx = set->slot[j] - 1;
			return MAIL_SET_FOUND;
		}
	}
	if (max > 0 && set->n >= max)
		return MAIL_SET_FULL;
	if (set->n == set->cap) {
		set->cap = set->cap ? set->cap * 2 : 16;
		set->v = xrealloc(set->v, set->cap * sizeof(*set->v));
	}
	set->v[set->n++] = xstrdup(addr);
	set->slot[j] = (uint32_t)set->n;
	if (idx != NULL)
		*idx = set->n - 1;
	return MAIL_SET_ADDED;
}

/* Frees what SET holds. */
void
mail_addr_set_free(struct mail_addr_set *set)
{
	for (size_t i = 0; i < set->n; i++)
		free(set->v[i]);
	free(set->v);
	free(set->slot);
	memset(set, 0, sizeof(*set));
}
