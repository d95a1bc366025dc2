/*
 * queue_parse.c - the pure parsers of a dropped message: the header
 * section, the pickup envelope (X-Sender / X-Receiver with RFC 3461
 * parameters), RFC 5322 address lists, and the builder of the message as
 * stored (Received: first, envelope headers and Bcc: removed, Date: and
 * Message-ID: added when missing, CRLF line endings).
 *
 * Public (to queue/, its tests and fuzzer): qp_message_parse(),
 * qp_result_free(), qp_addrlist_parse(), qp_message_build().
 *
 * Invariants: never reads outside [buf, buf+len); every address returned
 * is non-empty, at most QP_ADDR_MAX bytes, and has no byte below 0x20 nor
 * 0x7f; a message is QP_OK only with at least one recipient.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cfg.h"
#include "queue.h"
#include "queue_parse.h"

#define QP_ADDR_MAX 512
#define QP_MAXTOK 256

enum tok_type { T_END, T_ATOM, T_QSTR, T_DOMLIT, T_SPECIAL, T_ERR };

struct tok {
	enum tok_type type;
	const char *p;
	size_t n;
};

/* A cursor over one header value. */
struct lex {
	const char *s;
	size_t len, i;
	const char *why;
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

/* Skips blanks, folds and (nested) comments; false on a bare CR or an
 * unterminated comment. */
static bool
lex_cfws(struct lex *lx)
{
	while (lx->i < lx->len) {
		unsigned char c = (unsigned char)lx->s[lx->i];

		if (c == ' ' || c == '\t' || c == '\n') {
			lx->i++;
		} else if (c == '\r') {
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
		return t;
	}
	st = lx->i;
	t.p = lx->s + st;
	if (lx->s[st] == '"' || lx->s[st] == '[') {
		char close = lx->s[st] == '"' ? '"' : ']';

		lx->i++;
		while (lx->i < lx->len && lx->s[lx->i] != close) {
			unsigned char c = (unsigned char)lx->s[lx->i];

			if (c == '\\') {
				unsigned char e = lx->i + 1 < lx->len
				    ? (unsigned char)lx->s[lx->i + 1]
				    : 0;

				if (e == '\r' || e == '\n' || e == '\0') {
					lx->why = "CR/LF/NUL in an address";
					return t;
				}
				lx->i++;
			} else if (c == '\r' || c == '\n') {
				/* only a fold may break a quoted string */
				size_t j = lx->i + (c == '\r' ? 1 : 0);

				if (j >= lx->len || lx->s[j] != '\n' ||
				    j + 1 >= lx->len ||
				    (lx->s[j + 1] != ' ' &&
					lx->s[j + 1] != '\t')) {
					lx->why = "CR/LF/NUL in an address";
					return t;
				}
			} else if ((c < 0x20 && c != '\t') || c == 0x7f) {
				lx->why = "CR/LF/NUL in an address";
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

static bool
tok_is(struct tok t, char c)
{
	return t.type == T_SPECIAL && t.p[0] == c;
}

/* Appends token text to an address buffer, dropping folds. */
static bool
addr_cat(char *a, size_t *an, const char *p, size_t n)
{
	for (size_t k = 0; k < n; k++) {
		unsigned char c = (unsigned char)p[k];

		if (c == '\r' || c == '\n')
			continue;
		/* no controls, TAB included (RFC 5321 qtextSMTP has none) */
		if (c < 0x20 || c == 0x7f)
			return false;
		if (*an + 1 >= QP_ADDR_MAX)
			return false;
		a[(*an)++] = (char)c;
	}
	a[*an] = '\0';
	return true;
}

/* Adds an envelope recipient (takes nothing, copies ADDR). */
static void
rcpt_add(struct qp_result *r, const char *addr)
{
	if (r->nrcpt == r->rcap) {
		r->rcap = r->rcap ? r->rcap * 2 : 4;
		r->rcpts = xrealloc(r->rcpts, r->rcap * sizeof(*r->rcpts));
	}
	r->rcpts[r->nrcpt].addr = xstrdup(addr);
	r->rcpts[r->nrcpt].orcpt = NULL;
	r->rcpts[r->nrcpt].notify = 0;
	r->nrcpt++;
}

/* Parses `domain` (dot-atom or literal) after '@' into a. */
static bool
parse_domain(struct lex *lx, char *a, size_t *an)
{
	struct tok t = lex_next(lx);

	if (t.type == T_DOMLIT)
		return addr_cat(a, an, t.p, t.n);
	if (t.type != T_ATOM)
		return false;
	if (!addr_cat(a, an, t.p, t.n))
		return false;
	while (tok_is(lex_peek(lx), '.')) {
		lex_next(lx);
		t = lex_next(lx);
		if (t.type != T_ATOM || !addr_cat(a, an, ".", 1) ||
		    !addr_cat(a, an, t.p, t.n))
			return false;
	}
	return true;
}

/* Builds a local part from words and dots TOKS[0..n) (dots may repeat,
 * as real mail has "a..b" and "a."; two words in a row may not). */
static bool
local_from_toks(const struct tok *toks, size_t n, char *a, size_t *an)
{
	bool prev_word = false, any = false;

	for (size_t k = 0; k < n; k++) {
		bool dot = tok_is(toks[k], '.');

		if (!dot && prev_word)
			return false;
		if (!addr_cat(a, an, toks[k].p, toks[k].n))
			return false;
		prev_word = !dot;
		any = any || !dot;
	}
	return any;
}

/* Parses the inside of <...> (an optional obsolete route first). */
static bool
parse_angle(struct lex *lx, const char *qualify, struct qp_result *r)
{
	struct tok toks[QP_MAXTOK], t;
	char a[QP_ADDR_MAX];
	size_t an = 0, n = 0;

	a[0] = '\0';
	if (tok_is(lex_peek(lx), '@')) {
		/* obs-route: @a,@b: */
		while (!tok_is(lex_peek(lx), ':')) {
			t = lex_next(lx);
			if (t.type == T_END || t.type == T_ERR ||
			    tok_is(t, '>'))
				return false;
		}
		lex_next(lx);
	}
	if (tok_is(lex_peek(lx), '>'))
		return false; /* <> is no recipient */
	for (;;) {
		t = lex_peek(lx);
		if (t.type != T_ATOM && t.type != T_QSTR && !tok_is(t, '.'))
			break;
		if (n == QP_MAXTOK)
			return false;
		toks[n++] = lex_next(lx);
	}
	if (!local_from_toks(toks, n, a, &an))
		return false;
	if (tok_is(lex_peek(lx), '@')) {
		lex_next(lx);
		if (!addr_cat(a, &an, "@", 1) || !parse_domain(lx, a, &an))
			return false;
	} else {
		if (qualify == NULL || !addr_cat(a, &an, "@", 1) ||
		    !addr_cat(a, &an, qualify, strlen(qualify)))
			return false;
	}
	if (!tok_is(lex_next(lx), '>'))
		return false;
	rcpt_add(r, a);
	return true;
}

/* Parses one mailbox, or a group when allow_group. */
static bool
parse_address(
    struct lex *lx, const char *qualify, struct qp_result *r, bool allow_group)
{
	struct tok toks[QP_MAXTOK], t;
	char a[QP_ADDR_MAX];
	size_t an = 0, n = 0;

	a[0] = '\0';
	for (;;) {
		t = lex_peek(lx);
		if (t.type != T_ATOM && t.type != T_QSTR && !tok_is(t, '.'))
			break;
		if (n == QP_MAXTOK)
			return false;
		toks[n++] = lex_next(lx);
	}
	if (t.type == T_ERR)
		return false;
	if (tok_is(t, '<')) {
		lex_next(lx);
		return parse_angle(lx, qualify, r);
	}
	if (tok_is(t, ':') && allow_group && n > 0) {
		lex_next(lx);
		for (;;) {
			t = lex_peek(lx);
			if (tok_is(t, ';')) {
				lex_next(lx);
				return true;
			}
			if (t.type == T_END)
				return true; /* lenient: missing ';' */
			if (tok_is(t, ',')) {
				lex_next(lx);
				continue;
			}
			if (!parse_address(lx, qualify, r, false))
				return false;
		}
	}
	if (!local_from_toks(toks, n, a, &an))
		return false;
	if (tok_is(t, '@')) {
		lex_next(lx);
		if (!addr_cat(a, &an, "@", 1) || !parse_domain(lx, a, &an))
			return false;
	} else if (qualify == NULL || !addr_cat(a, &an, "@", 1) ||
	    !addr_cat(a, &an, qualify, strlen(qualify))) {
		return false;
	}
	rcpt_add(r, a);
	return true;
}

/* Parses an address list; see queue_parse.h. */
bool
qp_addrlist_parse(const char *s, size_t len, const char *qualify,
    struct qp_result *r, const char **why)
{
	struct lex lx = { s, len, 0, NULL, false, { T_END, NULL, 0 } };

	for (;;) {
		struct tok t = lex_peek(&lx);

		if (t.type == T_END)
			return true;
		if (t.type == T_ERR)
			break;
		if (tok_is(t, ',')) {
			lex_next(&lx);
			continue;
		}
		if (!parse_address(&lx, qualify, r, true))
			break;
		t = lex_peek(&lx);
		if (t.type == T_END)
			return true;
		if (!tok_is(t, ','))
			break;
	}
	*why = lx.why ? lx.why : "unparseable address";
	return false;
}

/* Adds a span of the input to leave out. */
static void
drop_add(struct qp_result *r, size_t off, size_t len)
{
	if (r->ndrop == r->dcap) {
		r->dcap = r->dcap ? r->dcap * 2 : 8;
		r->drop = xrealloc(r->drop, r->dcap * sizeof(*r->drop));
	}
	r->drop[r->ndrop].off = off;
	r->drop[r->ndrop].len = len;
	r->ndrop++;
}

/* Trims blanks and folds from both ends of [*s, *s+*n). */
static void
trim(const char **s, size_t *n)
{
	while (*n > 0 && strchr(" \t\r\n", **s) != NULL) {
		(*s)++;
		(*n)--;
	}
	while (*n > 0 && strchr(" \t\r\n", (*s)[*n - 1]) != NULL)
		(*n)--;
}

/* Splits a pickup header value into its address (without <>) and the
 * parameter text; false if the brackets are unbalanced. */
static bool
env_split(const char *v, size_t n, const char **a, size_t *an, const char **p,
    size_t *pn)
{
	size_t i = 0;

	trim(&v, &n);
	if (n > 0 && v[0] == '<') {
		bool q = false;

		for (i = 1; i < n; i++) {
			if (v[i] == '\\')
				i++;
			else if (v[i] == '"')
				q = !q;
			else if (v[i] == '>' && !q)
				break;
		}
		if (i >= n)
			return false;
		*a = v + 1;
		*an = i - 1;
		i++;
	} else {
		while (i < n && v[i] != ' ' && v[i] != '\t')
			i++;
		*a = v;
		*an = i;
	}
	*p = v + i;
	*pn = n - i;
	return true;
}

/* Checks an envelope address for control bytes. */
static bool
env_addr_ok(const char *a, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)a[i];

		if (c < 0x20 || c == 0x7f)
			return false;
	}
	return n < QP_ADDR_MAX;
}

/* Checks RFC 3461 xtext (printable, no blanks or '='). */
static bool
xtext_ok(const char *s, size_t n)
{
	if (n == 0 || n > 500)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] < '!' || s[i] > '~' || s[i] == '=')
			return false;
	return true;
}

/* Parses the parameters of X-Sender (rcpt NULL) or X-Receiver. */
static bool
env_params(const char *p, size_t n, struct qp_result *r, struct qp_rcpt *rc)
{
	size_t i = 0;

	while (i < n) {
		const char *k, *eq, *v;
		size_t kn, vn;

		while (i < n && strchr(" \t\r\n", p[i]) != NULL)
			i++;
		if (i >= n)
			break;
		k = p + i;
		while (i < n && strchr(" \t\r\n", p[i]) == NULL)
			i++;
		kn = (size_t)(p + i - k);
		eq = memchr(k, '=', kn);
		if (eq == NULL)
			return false;
		v = eq + 1;
		vn = kn - (size_t)(v - k);
		kn = (size_t)(eq - k);
		if (rc == NULL && kn == 3 && strncasecmp(k, "RET", 3) == 0) {
			if (vn == 4 && strncasecmp(v, "FULL", 4) == 0)
				r->ret = QRET_FULL;
			else if (vn == 4 && strncasecmp(v, "HDRS", 4) == 0)
				r->ret = QRET_HDRS;
			else
				return false;
		} else if (rc == NULL && kn == 5 &&
		    strncasecmp(k, "ENVID", 5) == 0) {
			if (!xtext_ok(v, vn))
				return false;
			free(r->envid);
			r->envid = xstrndup(v, vn);
		} else if (rc != NULL && kn == 6 &&
		    strncasecmp(k, "NOTIFY", 6) == 0) {
			size_t j = 0;

			rc->notify = 0;
			while (j < vn) {
				size_t e = j;

				while (e < vn && v[e] != ',')
					e++;
				if (e - j == 5 &&
				    strncasecmp(v + j, "NEVER", 5) == 0)
					rc->notify |= QNOTIFY_NEVER;
				else if (e - j == 7 &&
				    strncasecmp(v + j, "SUCCESS", 7) == 0)
					rc->notify |= QNOTIFY_SUCCESS;
				else if (e - j == 7 &&
				    strncasecmp(v + j, "FAILURE", 7) == 0)
					rc->notify |= QNOTIFY_FAILURE;
				else if (e - j == 5 &&
				    strncasecmp(v + j, "DELAY", 5) == 0)
					rc->notify |= QNOTIFY_DELAY;
				else
					return false;
				j = e + 1;
			}
			if (rc->notify == 0 ||
			    ((rc->notify & QNOTIFY_NEVER) &&
				rc->notify != QNOTIFY_NEVER))
				return false;
		} else if (rc != NULL && kn == 5 &&
		    strncasecmp(k, "ORCPT", 5) == 0) {
			if (!xtext_ok(v, vn) || memchr(v, ';', vn) == NULL)
				return false;
			free(rc->orcpt);
			rc->orcpt = xstrndup(v, vn);
		} else {
			return false;
		}
	}
	return true;
}

/* Handles X-Sender (is_rcpt false) or X-Receiver; sets why on error. */
static bool
env_header(const char *v, size_t n, bool is_rcpt, const char *qualify,
    struct qp_result *r)
{
	const char *a, *p;
	size_t an, pn;
	struct qp_result tmp;
	const char *why;

	memset(&tmp, 0, sizeof(tmp));
	if (!env_split(v, n, &a, &an, &p, &pn)) {
		r->why = "unparseable address";
		return false;
	}
	if (!env_addr_ok(a, an)) {
		r->why = "CR/LF/NUL in an address";
		return false;
	}
	if (!is_rcpt && an == 0) {
		free(r->sender);
		r->sender = xstrdup("");
		if (!env_params(p, pn, r, NULL)) {
			r->why = "bad parameter in X-Sender";
			return false;
		}
		return true;
	}
	if (!qp_addrlist_parse(a, an, qualify, &tmp, &why) || tmp.nrcpt != 1) {
		qp_result_free(&tmp);
		r->why = tmp.nrcpt > 1 ? "unparseable address" : why;
		if (r->why == NULL)
			r->why = "unparseable address";
		return false;
	}
	if (!is_rcpt) {
		free(r->sender);
		r->sender = xstrdup(tmp.rcpts[0].addr);
		qp_result_free(&tmp);
		if (!env_params(p, pn, r, NULL)) {
			r->why = "bad parameter in X-Sender";
			return false;
		}
		return true;
	}
	rcpt_add(r, tmp.rcpts[0].addr);
	qp_result_free(&tmp);
	if (!env_params(p, pn, r, &r->rcpts[r->nrcpt - 1])) {
		r->why = "bad parameter in X-Receiver";
		return false;
	}
	return true;
}

/* Returns true if field NAME (of n bytes) is WANT, ignoring case. */
static bool
name_is(const char *name, size_t n, const char *want)
{
	return strlen(want) == n && strncasecmp(name, want, n) == 0;
}

/* Parses a message; see queue_parse.h. */
enum qp_status
qp_message_parse(
    const char *buf, size_t len, const char *qualify, struct qp_result *r)
{
	struct qp_span to[64];
	size_t nto = 0, pos = 0, nfields = 0;
	struct qp_span from = { 0, 0 }, sender = { 0, 0 };
	bool leading = true, xrcpt = false, have_from = false,
	     have_sender_hdr = false;
	const char *why;

	memset(r, 0, sizeof(*r));
	r->cls = CFG_NORMAL;
	if (len == 0) {
		r->why = "empty file";
		return QP_BAD;
	}
	for (;;) {
		const char *lf, *line = buf + pos, *colon;
		size_t nl, fend, ni;

		if (pos >= len) {
			r->why = "header section has no end";
			return QP_BAD;
		}
		lf = memchr(line, '\n', len - pos);
		if (lf == NULL) {
			r->why = "header section has no end";
			return QP_BAD;
		}
		nl = (size_t)(lf - line);
		if (nl == 0 || (nl == 1 && line[0] == '\r')) {
			r->hdr_end = pos;
			r->have_blank = true;
			break;
		}
		for (ni = 0; ni < nl && line[ni] > ' ' && line[ni] < 0x7f &&
		     line[ni] != ':';
		     ni++)
			;
		colon = line + ni;
		while (colon < lf && (*colon == ' ' || *colon == '\t'))
			colon++;
		if (ni == 0 || colon >= lf || *colon != ':') {
			if (memchr(line, '\0', nl) != NULL) {
				r->why = "binary data (NUL) in the header "
					 "section";
				return QP_BAD;
			}
			if (nfields == 0) {
				r->why = "not a message: no header field at "
					 "the start";
				return QP_BAD;
			}
			r->hdr_end = pos; /* a non-header line starts body */
			break;
		}
		/* the field runs on over continuation lines */
		fend = (size_t)(lf - buf) + 1;
		while (fend < len && (buf[fend] == ' ' || buf[fend] == '\t')) {
			lf = memchr(buf + fend, '\n', len - fend);
			if (lf == NULL) {
				r->why = "header section has no end";
				return QP_BAD;
			}
			fend = (size_t)(lf - buf) + 1;
		}
		if (memchr(line, '\0', fend - pos) != NULL) {
			r->why = "binary data (NUL) in the header section";
			return QP_BAD;
		}
		nfields++;
		{
			const char *v = colon + 1;
			size_t vn = (size_t)(buf + fend - v);

			if (leading && name_is(line, ni, "X-Sender")) {
				if (!env_header(v, vn, false, qualify, r))
					return QP_BAD;
				drop_add(r, pos, fend - pos);
			} else if (leading && name_is(line, ni, "X-Receiver")) {
				if (!env_header(v, vn, true, qualify, r))
					return QP_BAD;
				xrcpt = true;
				drop_add(r, pos, fend - pos);
			} else {
				leading = false;
				if (name_is(line, ni, "Bcc"))
					drop_add(r, pos, fend - pos);
				if ((name_is(line, ni, "To") ||
					name_is(line, ni, "Cc") ||
					name_is(line, ni, "Bcc")) &&
				    nto < sizeof(to) / sizeof(to[0])) {
					to[nto].off = (size_t)(v - buf);
					to[nto++].len = vn;
				} else if (name_is(line, ni, "From") &&
				    !have_from) {
					have_from = true;
					from.off = (size_t)(v - buf);
					from.len = vn;
				} else if (name_is(line, ni, "Sender") &&
				    !have_sender_hdr) {
					have_sender_hdr = true;
					sender.off = (size_t)(v - buf);
					sender.len = vn;
				} else if (name_is(line, ni, "Priority")) {
					int c = cfg_class_parse(v, vn);

					if (c >= 0 && c != CFG_DSN)
						r->cls = c;
				} else if (name_is(line, ni, "Date")) {
					r->have_date = true;
				} else if (name_is(line, ni, "Message-ID")) {
					r->have_msgid = true;
				}
			}
		}
		pos = fend;
	}
	if (!xrcpt) {
		for (size_t k = 0; k < nto; k++) {
			if (!qp_addrlist_parse(
				buf + to[k].off, to[k].len, qualify, r, &why)) {
				r->why = why;
				return QP_BAD;
			}
		}
	}
	if (r->sender == NULL && (have_sender_hdr || have_from)) {
		struct qp_result tmp;
		struct qp_span sp = have_sender_hdr ? sender : from;

		memset(&tmp, 0, sizeof(tmp));
		if (!qp_addrlist_parse(
			buf + sp.off, sp.len, qualify, &tmp, &why) ||
		    tmp.nrcpt == 0) {
			qp_result_free(&tmp);
			r->why = "unparseable sender address";
			return QP_BAD;
		}
		r->sender = xstrdup(tmp.rcpts[0].addr);
		qp_result_free(&tmp);
	}
	if (r->nrcpt == 0) {
		r->why = "no recipients";
		return QP_BAD;
	}
	return QP_OK;
}

/* Frees what a parse allocated. */
void
qp_result_free(struct qp_result *r)
{
	for (size_t i = 0; i < r->nrcpt; i++) {
		free(r->rcpts[i].addr);
		free(r->rcpts[i].orcpt);
	}
	free(r->rcpts);
	free(r->sender);
	free(r->envid);
	free(r->drop);
	r->rcpts = NULL;
	r->sender = r->envid = NULL;
	r->drop = NULL;
	r->nrcpt = r->ndrop = r->rcap = r->dcap = 0;
}

/* An output buffer. */
struct obuf {
	char *p;
	size_t n, cap;
};

static void
ob_put(struct obuf *o, const char *s, size_t n)
{
	if (o->n + n + 1 > o->cap) {
		while (o->n + n + 1 > o->cap)
			o->cap = o->cap ? o->cap * 2 : 4096;
		o->p = xrealloc(o->p, o->cap);
	}
	memcpy(o->p + o->n, s, n);
	o->n += n;
}

/* Copies S with every line ending made CRLF (a last line gets one). */
static void
ob_put_crlf(struct obuf *o, const char *s, size_t n)
{
	while (n > 0) {
		const char *lf = memchr(s, '\n', n);
		size_t k = lf ? (size_t)(lf - s) : n;

		if (k > 0 && s[k - 1] == '\r')
			k--;
		ob_put(o, s, k);
		ob_put(o, "\r\n", 2);
		if (lf == NULL)
			break;
		n -= (size_t)(lf - s) + 1;
		s = lf + 1;
	}
}

/* Builds the stored message; see queue_parse.h. */
char *
qp_message_build(const char *buf, size_t len, const struct qp_result *r,
    const char *received, const char *date, const char *msgid, size_t *outlen)
{
	struct obuf o = { NULL, 0, 0 };
	size_t pos = 0, body;

	o.cap = len + len / 32 + 512;
	o.p = xmalloc(o.cap);
	if (received != NULL)
		ob_put(&o, received, strlen(received));
	for (size_t k = 0; k < r->ndrop; k++) {
		ob_put_crlf(&o, buf + pos, r->drop[k].off - pos);
		pos = r->drop[k].off + r->drop[k].len;
	}
	ob_put_crlf(&o, buf + pos, r->hdr_end - pos);
	if (date != NULL && !r->have_date)
		ob_put(&o, date, strlen(date));
	if (msgid != NULL && !r->have_msgid)
		ob_put(&o, msgid, strlen(msgid));
	ob_put(&o, "\r\n", 2);
	body = r->hdr_end;
	if (r->have_blank) {
		const char *lf = memchr(buf + body, '\n', len - body);

		body = lf ? (size_t)(lf - buf) + 1 : len;
	}
	ob_put_crlf(&o, buf + body, len - body);
	o.p[o.n] = '\0';
	*outlen = o.n;
	return o.p;
}
