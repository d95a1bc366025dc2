/*
 * queue_parse.c - the pure parsers of a dropped message: bare-CR repair,
 * the header section (with its hop count), the pickup envelope
 * (X-Sender / X-Receiver with RFC 3461 parameters), the recipients of
 * its RFC 5322 address lists, and the builder of the message as stored
 * (Received: first, envelope headers, Bcc: and a leading mbox From line
 * removed, Date: and Message-ID: added when missing, long header lines
 * folded, CRLF line endings).  The mail syntax itself (address lists,
 * xtext, NOTIFY, field names) is cfg/mail_*.c's, read with intake's
 * flags.
 *
 * qp_message_parse() in steps: hdr_field_next() reads a header field
 * (leaving out an mbox From line, ending the section), hdr_field_take()
 * takes it: the pickup envelope (env_header()), or the message's own
 * fields (hdr_content_take(): recipients, sender, hop count; the
 * priority class in priority_header_read(), from the Priority: header;
 * hdr_addrs_rewrite(): the addresses of From:, Sender:, Reply-To:,
 * Return-Path: by the sender map, unqualified ones there and in To:
 * and Cc: qualified), then sender_from_fields(), sender_map_apply()
 * (the envelope sender) and rcpts_alias_expand() (local recipients by
 * the alias table).  The last three and hdr_addrs_rewrite() are
 * intake's local-mail rules (struct qp_ctx's ml; cfg/mail_alias.c,
 * cfg/mail_map.c); `relayq send` parses without them.
 *
 * Public (to queue/, its tests and fuzzers, and `relayq send`):
 * qp_bare_cr_fix(), qp_message_parse(), qp_message_parse_ctx(),
 * qp_result_free(), qp_sender_rewrite(), qp_addrlist_parse(),
 * qp_message_build().
 *
 * Invariants: never reads outside [buf, buf+len); every address returned
 * is non-empty, at most QP_ADDR_MAX-1 bytes, and has no byte below 0x20
 * nor 0x7f; no two recipients are the same mailbox to SMTP, and there
 * are at most max_rcpt (<= QP_RCPT_MAX) of them; a message is QP_OK
 * only with at least one recipient; every header line the builder
 * writes is at most QP_LINE_MAX bytes when the parse said QP_OK.  What
 * is checked is what is stored: the builder writes the lines the parser
 * read, in its own line-end rule (LF, CRLF; bare CRs are made LFs before
 * either runs).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cfg.h"
#include "mail.h"
#include "queue.h"
#include "queue_parse.h"

#define QP_ADDR_MAX 512 /* an address has fewer bytes */
#define QP_XTEXT_MAX 500 /* bytes of an ENVID or ORCPT as received */

enum merge_result { RM_ADDED, RM_MERGED, RM_TOOMANY };

/*
 * Adds an envelope recipient (copies ADDR and ORCPT), or merges it into
 * the one already there with the same address: its ORCPT stays (else
 * this one's is taken), the NOTIFYs are merged.  RM_TOOMANY (whybuf
 * set) when it would be one more than R->max_rcpt.
 */
static enum merge_result
rcpt_merge(
    struct qp_result *r, const char *addr, const char *orcpt, unsigned notify)
{
	size_t max = r->max_rcpt ? r->max_rcpt : QP_RCPT_MAX, i;
	struct qp_rcpt *rc;

	if (max > QP_RCPT_MAX)
		max = QP_RCPT_MAX;
	switch (mail_addr_set_put(&r->addrs, addr, max, &i)) {
	case MAIL_SET_FOUND:
		rc = &r->rcpts[i];
		if (rc->orcpt == NULL && orcpt != NULL)
			rc->orcpt = xstrdup(orcpt);
		rc->notify = mail_notify_merge(rc->notify, notify);
		return RM_MERGED;
	case MAIL_SET_FULL:
		snprintf(r->whybuf, sizeof(r->whybuf),
		    "too many recipients: more than %zu (max_recipients)", max);
		return RM_TOOMANY;
	case MAIL_SET_ADDED:
		break;
	}
	if (r->nrcpt == r->rcap) {
		r->rcap = r->rcap ? r->rcap * 2 : 4;
		r->rcpts = xrealloc(r->rcpts, r->rcap * sizeof(*r->rcpts));
	}
	r->rcpts[r->nrcpt].addr = r->addrs.v[i];
	r->rcpts[r->nrcpt].orcpt = orcpt ? xstrdup(orcpt) : NULL;
	r->rcpts[r->nrcpt].notify = notify;
	r->nrcpt++;
	return RM_ADDED;
}

/* Takes an address of a To:, Cc: or Bcc: list as a recipient (the
 * callback of mail_addrlist_parse()). */
static enum mail_addr_result
rcpt_found(void *arg, const char *addr)
{
	return rcpt_merge(arg, addr, NULL, 0) == RM_TOOMANY ? MAIL_ADDR_TOOMANY
							    : MAIL_ADDR_OK;
}

/* Parses an address list; see queue_parse.h. */
bool
qp_addrlist_parse(const char *s, size_t len, const char *qualify,
    struct qp_result *r, const char **why)
{
	/* intake's syntax is mail.h's, with a bound on words */
	const struct mail_addr_syntax syn = { MAIL_ADDR_WORD_LIMIT, qualify,
		QP_ADDR_MAX - 1 };
	struct mail_addr_error err;

	switch (mail_addrlist_parse(s, len, &syn, rcpt_found, r, &err)) {
	case MAIL_ADDR_OK:
		return true;
	case MAIL_ADDR_TOOLONG:
		/* RFC 5321 4.5.3.1.1 says 64 for a local part, but real mail
		 * has longer ones and Postfix takes them: only the whole
		 * address is bounded, and the reason says which part is
		 * long. */
		if (err.local > 64)
			snprintf(r->whybuf, sizeof(r->whybuf),
			    "address too long: a local part of %zu bytes "
			    "(an address may have at most %d)",
			    err.local, QP_ADDR_MAX - 1);
		else
			snprintf(r->whybuf, sizeof(r->whybuf),
			    "address too long: %zu bytes (at most %d)", err.len,
			    QP_ADDR_MAX - 1);
		*why = r->whybuf;
		return false;
	case MAIL_ADDR_TOOMANY:
		*why = r->whybuf; /* rcpt_merge() said why */
		return false;
	case MAIL_ADDR_BAD:
		break;
	}
	*why = err.why;
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
	r->drop[r->ndrop].repl = NULL;
	r->drop[r->ndrop].rlen = 0;
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

/* Checks an envelope address for control bytes (its length is the
 * address parser's, which says which part is too long). */
static bool
env_addr_ok(const char *a, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)a[i];

		if (c < 0x20 || c == 0x7f)
			return false;
	}
	return true;
}

/* Checks an ENVID or ORCPT as received: xtext, 1 to QP_XTEXT_MAX
 * bytes. */
static bool
xtext_ok(const char *s, size_t n)
{
	return n > 0 && n <= QP_XTEXT_MAX && mail_xtext_valid(s, n);
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
			if (!mail_notify_parse(v, vn, 0, &rc->notify))
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

/* Whether C is folding white space (a line end of a folded field too). */
static bool
is_fws(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Says which parameters of envelope field NAME were refused (P, PN
 * bytes) and what the field takes; false. */
static bool
env_param_bad(struct qp_result *r, const char *name, const char *p, size_t pn)
{
	while (pn > 0 && is_fws(p[pn - 1]))
		pn--;
	while (pn > 0 && is_fws(p[0])) {
		p++;
		pn--;
	}
	snprintf(r->whybuf, sizeof(r->whybuf),
	    "bad parameter in %s: \"%.*s\" (it takes <address> then %s)", name,
	    (int)(pn < 60 ? pn : 60), p,
	    name[2] == 'S' ? "RET= and ENVID=" : "NOTIFY= and ORCPT=");
	r->why = r->whybuf;
	return false;
}

/* Handles X-Sender (is_rcpt false) or X-Receiver; sets why on error. */
static bool
env_header(const char *v, size_t n, bool is_rcpt, const char *qualify,
    struct qp_result *r)
{
	const char *a, *p, *why = NULL;
	size_t an, pn;
	struct qp_result tmp;
	struct qp_rcpt rc = { NULL, NULL, 0 };
	bool ok;

	if (!env_split(v, n, &a, &an, &p, &pn)) {
		r->why = "unparseable address";
		return false;
	}
	if (!env_addr_ok(a, an)) {
		r->why = memchr(a, '\r', an) || memchr(a, '\n', an) ||
			memchr(a, '\0', an)
		    ? "CR/LF/NUL in an address"
		    : "control character in an address";
		return false;
	}
	if (!is_rcpt && an == 0) {
		free(r->sender);
		r->sender = xstrdup("");
		if (!env_params(p, pn, r, NULL))
			return env_param_bad(r, "X-Sender", p, pn);
		return true;
	}
	memset(&tmp, 0, sizeof(tmp));
	if (!qp_addrlist_parse(a, an, qualify, &tmp, &why) || tmp.nrcpt != 1) {
		snprintf(r->whybuf, sizeof(r->whybuf), "%s",
		    why != NULL && tmp.nrcpt <= 1 ? why
						  : "unparseable address");
		r->why = r->whybuf;
		qp_result_free(&tmp);
		return false;
	}
	if (!is_rcpt) {
		free(r->sender);
		r->sender = xstrdup(tmp.rcpts[0].addr);
		qp_result_free(&tmp);
		if (!env_params(p, pn, r, NULL))
			return env_param_bad(r, "X-Sender", p, pn);
		return true;
	}
	ok = env_params(p, pn, r, &rc);
	if (!ok) {
		env_param_bad(r, "X-Receiver", p, pn);
	} else if (rcpt_merge(r, tmp.rcpts[0].addr, rc.orcpt, rc.notify) ==
	    RM_TOOMANY) {
		r->why = r->whybuf;
		ok = false;
	}
	free(rc.orcpt);
	qp_result_free(&tmp);
	return ok;
}

static bool
is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

/*
 * Folds header line L of N bytes (no line end) into pieces of at most
 * QP_LINE_MAX bytes: each CRLF goes before white space that follows a
 * non-blank, at offset LO or later (past the field's colon on its first
 * line), as late as it can; where there is none, CRLF and a space go
 * after a comma (an address list written "a@x,b@x,...").  Appends the pieces to O, or only checks
 * when O is NULL.  False when a piece cannot be made short enough.  One
 * pass: the white space before a fold point was already looked at.
 */
static bool
line_fold(const char *l, size_t n, size_t lo, struct rq_buf *o)
{
	size_t start = 0, j = lo > 0 ? lo : 1, bp = 0, cp = 0, add = 0;

	/* ADD: the piece begins with a space a comma fold put there */
	while (n - start + add > QP_LINE_MAX) {
		size_t lim = start + QP_LINE_MAX - add; /* a fold at lim */

		for (; j <= lim; j++) {
			if (is_wsp(l[j]) && !is_wsp(l[j - 1]))
				bp = j;
			else if (l[j - 1] == ',' && !is_wsp(l[j]))
				cp = j; /* "a@x,b@x": after the comma */
		}
		if (bp > start) {
			if (o != NULL) {
				rq_buf_add(o, l + start, bp - start);
				rq_buf_add(o, "\r\n", 2);
			}
			start = bp;
			add = 0;
		} else if (cp > start) {
			/* no white space: a fold after a comma, with the
			 * space it needs (an address list means the same) */
			if (o != NULL) {
				rq_buf_add(o, l + start, cp - start);
				rq_buf_add(o, "\r\n ", 3);
			}
			start = cp;
			add = 1;
		} else {
			return false;
		}
	}
	if (o != NULL)
		rq_buf_add(o, l + start, n - start);
	return true;
}

/*
 * Checks that each line of header field F (N bytes with its line ends;
 * its name NAMELEN bytes, its colon at offset COLON) can be sent: at
 * most QP_LINE_MAX bytes, or foldable; else says why in R.
 */
static bool
field_lines_ok(
    const char *f, size_t n, size_t colon, size_t namelen, struct qp_result *r)
{
	size_t off = 0;
	bool first = true;

	while (off < n) {
		const char *lf = memchr(f + off, '\n', n - off);
		size_t end = lf ? (size_t)(lf - f) : n, ln = end - off;

		if (ln > 0 && f[off + ln - 1] == '\r')
			ln--;
		if (ln > QP_LINE_MAX &&
		    !line_fold(f + off, ln, first ? colon + 1 : 1, NULL)) {
			snprintf(r->whybuf, sizeof(r->whybuf),
			    "header line too long: %zu bytes in the %.*s: "
			    "field, with no white space or comma to fold it at "
			    "(at "
			    "most %d bytes a line)",
			    ln, (int)(namelen > 60 ? 60 : namelen), f,
			    QP_LINE_MAX);
			r->why = r->whybuf;
			return false;
		}
		first = false;
		off = end + 1;
	}
	return true;
}

/* Makes bare CRs line ends; see queue_parse.h. */
size_t
qp_bare_cr_fix(char *buf, size_t len)
{
	char *p = buf, *end = buf + len;
	size_t n = 0;

	while (p < end && (p = memchr(p, '\r', (size_t)(end - p))) != NULL) {
		if (p + 1 == end || p[1] != '\n') {
			*p = '\n';
			n++;
		}
		p++;
	}
	return n;
}

/* A header section being parsed: the input, the cursor, and what the
 * steps of qp_message_parse() tell each other. */
struct hdr_parse {
	const char *buf;
	size_t len, pos;
	const char *qualify;
	const struct mail_local *ml; /* intake's local-mail rules, or NULL */
	struct qp_result *r;
	size_t nfields;
	bool leading; /* only envelope fields (and an mbox line) so far */
	bool mbox_seen;
	bool xrcpt; /* X-Receiver given: To/Cc/Bcc name no recipient */
	bool have_from, have_sender;
	struct qp_span from, sender; /* the first From: and Sender: values */
	/* the recipients of Resent-To:, -Cc: and -Bcc:, which replace those
	 * of To:, Cc: and Bcc: when there are any (as sendmail -t) */
	struct qp_result resent;
	bool have_resent;
};

/* One header field with its continuation lines, at [off, end) of the
 * input. */
struct hdr_field {
	size_t off, end;
	size_t namelen; /* its name is at off */
	size_t colon; /* its ':' is at off + colon */
	const char *v; /* its value: after the ':', up to end */
	size_t vn;
};

enum hdr_next {
	HDR_FIELD, /* a field was read */
	HDR_END, /* the header section ended (r->hdr_end set) */
	HDR_BAD, /* r->why says why the file cannot be queued */
};

/* Ends the header section at LINE (N bytes), which is not a field: the
 * body starts there, unless the line holds a NUL or no field came
 * before it. */
static enum hdr_next
hdr_end_at_line(struct hdr_parse *h, const char *line, size_t n)
{
	if (memchr(line, '\0', n) != NULL) {
		h->r->why = "binary data (NUL) in the header section";
		return HDR_BAD;
	}
	if (h->nfields == 0) {
		h->r->why = "not a message: no header field at the start";
		return HDR_BAD;
	}
	h->r->hdr_end = h->pos; /* a non-header line starts the body */
	return HDR_END;
}

/*
 * Reads the next header field into F, leaving out a leading mbox "From "
 * line (not "From :", a field; as `relayq send` and Postfix's sendmail
 * do).  The section ends at the end of the input (a message all the
 * same: RFC 5322 3.5 makes the body optional), at an empty line, or at a
 * line that is not a field.
 */
static enum hdr_next
hdr_field_next(struct hdr_parse *h, struct hdr_field *f)
{
	for (;;) {
		const char *line = h->buf + h->pos, *lf, *colon;
		size_t nl, ni, fend;

		if (h->pos >= h->len) {
			h->r->hdr_end = h->len;
			return HDR_END;
		}
		lf = memchr(line, '\n', h->len - h->pos);
		nl = lf ? (size_t)(lf - line) : h->len - h->pos;
		if (nl == 0 || (nl == 1 && line[0] == '\r')) {
			h->r->hdr_end = h->pos;
			h->r->have_blank = true;
			return HDR_END;
		}
		ni = mail_field_name_len(line, nl);
		colon = line + ni;
		while (colon < line + nl && (*colon == ' ' || *colon == '\t'))
			colon++;
		if (ni == 0 || colon >= line + nl || *colon != ':') {
			if (!h->leading || h->mbox_seen ||
			    !mail_mbox_from_is(line, nl))
				return hdr_end_at_line(h, line, nl);
			h->mbox_seen = true;
			fend = lf ? h->pos + nl + 1 : h->len;
			drop_add(h->r, h->pos, fend - h->pos);
			h->pos = fend;
			continue;
		}
		/* the field runs on over continuation lines */
		fend = lf ? (size_t)(lf - h->buf) + 1 : h->len;
		while (fend < h->len &&
		    (h->buf[fend] == ' ' || h->buf[fend] == '\t')) {
			lf = memchr(h->buf + fend, '\n', h->len - fend);
			fend = lf ? (size_t)(lf - h->buf) + 1 : h->len;
		}
		if (memchr(line, '\0', fend - h->pos) != NULL) {
			h->r->why = "binary data (NUL) in the header section";
			return HDR_BAD;
		}
		h->nfields++;
		f->off = h->pos;
		f->end = fend;
		f->namelen = ni;
		f->colon = (size_t)(colon - line);
		f->v = colon + 1;
		f->vn = (size_t)(h->buf + fend - f->v);
		h->pos = fend;
		return HDR_FIELD;
	}
}

/* True if field F is named NAME (any case). */
static bool
hdr_field_is(
    const struct hdr_parse *h, const struct hdr_field *f, const char *name)
{
	return mail_field_is(h->buf + f->off, f->namelen, name);
}

/*
 * Where the priority class is decided: the Priority: header (RFC 2156
 * "urgent", "normal", "non-urgent", any case, or a class name).  dsn is
 * relayq's own class for its notices and is not taken, nor is an unknown
 * value: the last field that names a class wins, else normal.
 */
static void
priority_header_read(struct qp_result *r, const char *v, size_t vn)
{
	size_t i = 0, t, depth = 0;
	int c;

	/* the word, after folding white space and comments (a structured
	 * field, RFC 2156): "Priority:\n urgent (asap)" is urgent */
	for (; i < vn; i++) {
		if (v[i] == '(')
			depth++;
		else if (v[i] == ')' && depth > 0)
			depth--;
		else if (depth == 0 && !is_fws(v[i]))
			break;
	}
	for (t = i; t < vn && !is_fws(v[t]) && v[t] != '('; t++)
		;
	c = cfg_class_parse(v + i, t - i);
	if (c >= 0 && c != CFG_DSN)
		r->cls = c;
}

/*
 * Takes what a field of the message says: the recipients of every To:,
 * Cc: and Bcc: and of their Resent- fields (unless X-Receiver named
 * them), the first From: and Sender:, the priority class, whether Date:
 * and Message-ID: are there, and the hop count (Received:).  *KEEP is
 * cleared for Bcc: and Resent-Bcc:, which are left out.  False (r->why
 * set) on a bad recipient list.
 */
static bool
hdr_content_take(struct hdr_parse *h, const struct hdr_field *f, bool *keep)
{
	struct qp_result *r = h->r;
	const char *why = NULL;

	if (hdr_field_is(h, f, "Received"))
		r->nreceived++;
	if (hdr_field_is(h, f, "Bcc") || hdr_field_is(h, f, "Resent-Bcc")) {
		drop_add(r, f->off, f->end - f->off);
		*keep = false;
	}
	if (hdr_field_is(h, f, "Resent-To") ||
	    hdr_field_is(h, f, "Resent-Cc") ||
	    hdr_field_is(h, f, "Resent-Bcc")) {
		h->have_resent = true;
		if (!h->xrcpt &&
		    !qp_addrlist_parse(
			f->v, f->vn, h->qualify, &h->resent, &why)) {
			/* why may be in h->resent, which goes */
			snprintf(r->whybuf, sizeof(r->whybuf), "%s", why);
			r->why = r->whybuf;
			return false;
		}
	} else if (hdr_field_is(h, f, "To") || hdr_field_is(h, f, "Cc") ||
	    hdr_field_is(h, f, "Bcc")) {
		/* every one of them, as many as there are (up to max_rcpt) */
		if (!h->xrcpt &&
		    !qp_addrlist_parse(f->v, f->vn, h->qualify, r, &why)) {
			r->why = why;
			return false;
		}
	} else if (hdr_field_is(h, f, "From") && !h->have_from) {
		h->have_from = true;
		h->from.off = (size_t)(f->v - h->buf);
		h->from.len = f->vn;
	} else if (hdr_field_is(h, f, "Sender") && !h->have_sender) {
		h->have_sender = true;
		h->sender.off = (size_t)(f->v - h->buf);
		h->sender.len = f->vn;
	} else if (hdr_field_is(h, f, "Priority")) {
		priority_header_read(r, f->v, f->vn);
	} else if (hdr_field_is(h, f, "Date")) {
		r->have_date = true;
	} else if (hdr_field_is(h, f, "Message-ID")) {
		r->have_msgid = true;
	}
	return true;
}

/* The address edits of one header field being rewritten. */
struct addr_edits {
	const struct hdr_parse *h;
	bool map; /* the sender map applies, not only qualification */
	struct rq_buf *o; /* the new field: empty until the first edit */
	const char *head; /* the field's name and colon, copied first */
	size_t headlen;
	const char *v; /* the field's value, where spans start */
	size_t done; /* bytes of the value copied to o */
	bool any;
};

/* True if text T (N bytes) ends with domain D in any case. */
static bool
ends_with_domain(const char *t, size_t n, const char *d)
{
	size_t dn = strlen(d);

	return dn <= n && strncasecmp(t + n - dn, d, dn) == 0;
}

/*
 * Takes an address of a field being rewritten (the span callback of
 * mail_addrlist_spans()): when it was unqualified, or the sender map
 * has another address for it, the field gets the new address in place
 * of the addr-spec as written (display name, comments, brackets kept).
 */
static enum mail_addr_result
addr_edit_found(void *arg, const char *addr, size_t off, size_t len)
{
	struct addr_edits *e = arg;
	const char *q = e->h->qualify;
	char *m = NULL;
	bool qualified;

	if (len == 0 || addr[0] == '\0')
		return MAIL_ADDR_OK;
	qualified = q != NULL &&
	    mail_addr_at(addr) + 1 + strlen(q) == strlen(addr) &&
	    ends_with_domain(addr, strlen(addr), q) &&
	    !ends_with_domain(e->v + off, len, q);
	if (e->map && (m = mail_map_rewrite(e->h->ml, addr)) != NULL &&
	    strcmp(m, addr) == 0) {
		free(m);
		m = NULL;
	}
	if (qualified || m != NULL) {
		if (!e->any)
			rq_buf_add(e->o, e->head, e->headlen);
		rq_buf_add(e->o, e->v + e->done, off - e->done);
		rq_buf_add(
		    e->o, m != NULL ? m : addr, strlen(m != NULL ? m : addr));
		e->done = off + len;
		e->any = true;
	}
	free(m);
	return MAIL_ADDR_OK;
}

/*
 * Intake's edits of field F's addresses (From:, Sender:, Reply-To:,
 * Return-Path: by the sender map when MAP; unqualified ones in those
 * and To:, Cc: get "@" qualify): the field with only those addr-specs
 * changed goes into the stored message instead of F.  A field that
 * does not parse, or would not fit in lines the builder can write, is
 * kept as it is.  True when F was replaced.
 */
static bool
hdr_addrs_rewrite(struct hdr_parse *h, const struct hdr_field *f, bool map)
{
	const struct mail_addr_syntax syn = { MAIL_ADDR_WORD_LIMIT, h->qualify,
		QP_ADDR_MAX - 1 };
	struct rq_buf o = { NULL, 0, 0 };
	struct addr_edits e = { h, map, &o, h->buf + f->off,
		(size_t)(f->v - (h->buf + f->off)), f->v, 0, false };
	struct mail_addr_error err;

	/* most fields need no edit: the new one is built from the first */
	if (mail_addrlist_spans(f->v, f->vn, &syn, addr_edit_found, &e, &err) !=
		MAIL_ADDR_OK ||
	    !e.any) {
		free(o.p);
		return false;
	}
	rq_buf_add(&o, f->v + e.done, f->vn - e.done);
	if (!field_lines_ok(o.p, o.len, f->colon, f->namelen, h->r)) {
		h->r->why = NULL;
		free(o.p);
		return false;
	}
	drop_add(h->r, f->off, f->end - f->off);
	h->r->drop[h->r->ndrop - 1].repl = o.p;
	h->r->drop[h->r->ndrop - 1].rlen = o.len;
	return true;
}

/* Whether field F's addresses are rewritten at intake: 2 by the sender
 * map and qualified, 1 qualified only, 0 not at all. */
static int
hdr_addrs_edited(const struct hdr_parse *h, const struct hdr_field *f)
{
	static const char *const mapped[] = { "From", "Sender", "Reply-To",
		"Return-Path" };

	if (h->ml == NULL)
		return 0;
	for (size_t i = 0; i < sizeof(mapped) / sizeof(mapped[0]); i++)
		if (hdr_field_is(h, f, mapped[i]))
			return 2;
	return hdr_field_is(h, f, "To") || hdr_field_is(h, f, "Cc") ? 1 : 0;
}

/*
 * Takes field F: X-Sender and X-Receiver at the top of the file are the
 * pickup envelope and are left out; any other field ends the envelope
 * and is the message's own.  A field kept must fit in lines the builder
 * can write.  False (r->why set) when the file cannot be queued.
 */
static bool
hdr_field_take(struct hdr_parse *h, const struct hdr_field *f)
{
	bool keep = true;
	int edit;

	if (h->leading &&
	    (hdr_field_is(h, f, "X-Sender") ||
		hdr_field_is(h, f, "X-Receiver"))) {
		bool is_rcpt = hdr_field_is(h, f, "X-Receiver");

		if (!env_header(f->v, f->vn, is_rcpt, h->qualify, h->r))
			return false;
		h->xrcpt = h->xrcpt || is_rcpt;
		drop_add(h->r, f->off, f->end - f->off);
		return true;
	}
	h->leading = false;
	if (!hdr_content_take(h, f, &keep))
		return false;
	if (keep && (edit = hdr_addrs_edited(h, f)) > 0 &&
	    hdr_addrs_rewrite(h, f, edit == 2))
		return true;
	return !keep ||
	    field_lines_ok(
		h->buf + f->off, f->end - f->off, f->colon, f->namelen, h->r);
}

/* Without X-Sender, takes the sender from Sender: (else From:): its
 * first address.  False (r->why set) when that is unparseable. */
static bool
sender_from_fields(struct hdr_parse *h)
{
	struct qp_result *r = h->r, tmp;
	struct qp_span sp = h->have_sender ? h->sender : h->from;
	const char *why = NULL;

	if (r->sender != NULL || (!h->have_sender && !h->have_from))
		return true;
	memset(&tmp, 0, sizeof(tmp));
	if (!qp_addrlist_parse(
		h->buf + sp.off, sp.len, h->qualify, &tmp, &why) ||
	    tmp.nrcpt == 0) {
		qp_result_free(&tmp);
		r->why = "unparseable sender address";
		return false;
	}
	r->sender = xstrdup(tmp.rcpts[0].addr);
	qp_result_free(&tmp);
	return true;
}

/* The envelope sender by the sender map (intake's local-mail rules):
 * the null sender and an address no key matches stay. */
static void
sender_map_apply(struct hdr_parse *h)
{
	char *m;

	if (h->ml == NULL || h->r->sender == NULL || h->r->sender[0] == '\0')
		return;
	if ((m = mail_map_rewrite(h->ml, h->r->sender)) != NULL) {
		free(h->r->sender);
		h->r->sender = m;
	}
}

/* One recipient being expanded by the alias table, and where its
 * addresses go. */
struct rcpt_expand {
	struct qp_result *r;
	const char *orig; /* the recipient as given */
	const char *orcpt; /* its ORCPT, or NULL */
	unsigned notify;
	bool toomany; /* rcpt_merge() said so (r->whybuf) */
};

/* Takes an address a recipient expands to (mail_alias_expand()'s
 * callback): its NOTIFY, and its ORCPT, or the original address as one
 * when it changed (Postfix's rule), so a notice names what was sent
 * to. */
static enum mail_addr_result
rcpt_expand_found(void *arg, const char *addr)
{
	struct rcpt_expand *x = arg;
	char *orcpt = NULL, *xt;
	enum merge_result mr;

	if (x->orcpt == NULL && strcmp(addr, x->orig) != 0) {
		xt = mail_xtext_encode(x->orig);
		orcpt = xmalloc(strlen(xt) + 8);
		sprintf(orcpt, "rfc822;%s", xt);
		free(xt);
	}
	mr = rcpt_merge(
	    x->r, addr, x->orcpt != NULL ? x->orcpt : orcpt, x->notify);
	free(orcpt);
	if (mr == RM_TOOMANY) {
		x->toomany = true;
		return MAIL_ADDR_TOOMANY;
	}
	return MAIL_ADDR_OK;
}

/*
 * Expands the local recipients by the alias table (intake's local-mail
 * rules; mail_alias_expand(), cfg/mail_alias.c): the list is built
 * anew, recipients collapsed again as SMTP compares them, at most
 * max_rcpt.  False (r->why set) when there are too many.
 */
static bool
rcpts_alias_expand(struct hdr_parse *h)
{
	struct qp_result *r = h->r;
	struct qp_rcpt *old = r->rcpts;
	struct mail_addr_set oldset = r->addrs;
	size_t n = r->nrcpt;
	bool ok = true;

	if (h->ml == NULL)
		return true;
	r->rcpts = NULL;
	r->nrcpt = r->rcap = 0;
	memset(&r->addrs, 0, sizeof(r->addrs));
	for (size_t i = 0; i < n && ok; i++) {
		struct rcpt_expand x = { r, old[i].addr, old[i].orcpt,
			old[i].notify, false };
		enum mail_addr_result res = mail_alias_expand(
		    h->ml, old[i].addr, rcpt_expand_found, &x, NULL);

		if (res == MAIL_ADDR_OK)
			continue;
		ok = false;
		if (x.toomany) {
			r->why = r->whybuf;
		} else {
			snprintf(r->whybuf, sizeof(r->whybuf),
			    "the aliases of <%.100s> give too many addresses "
			    "or names (at most %d)",
			    old[i].addr, MAIL_ALIAS_FANOUT);
			r->why = r->whybuf;
		}
	}
	for (size_t i = 0; i < n; i++)
		free(old[i].orcpt);
	free(old);
	mail_addr_set_free(&oldset);
	return ok;
}

/* Swaps the recipient lists of A and B. */
static void
rcpts_swap(struct qp_result *a, struct qp_result *b)
{
	struct qp_result t = *a;

	a->rcpts = b->rcpts;
	a->nrcpt = b->nrcpt;
	a->rcap = b->rcap;
	a->addrs = b->addrs;
	b->rcpts = t.rcpts;
	b->nrcpt = t.nrcpt;
	b->rcap = t.rcap;
	b->addrs = t.addrs;
}

/* Parses a message with what CTX says; see queue_parse.h.  The steps:
 * read each header field (hdr_field_next), take it (hdr_field_take: the
 * envelope, the recipients, the priority class, the address edits...),
 * then the sender, the sender map, the aliases. */
enum qp_status
qp_message_parse_ctx(
    const char *buf, size_t len, const struct qp_ctx *ctx, struct qp_result *r)
{
	struct hdr_parse h;
	struct hdr_field f;
	enum hdr_next next;

	memset(r, 0, sizeof(*r));
	r->max_rcpt = ctx->max_rcpt;
	r->cls = CFG_NORMAL;
	if (len == 0) {
		r->why = "empty file";
		return QP_BAD;
	}
	memset(&h, 0, sizeof(h));
	h.buf = buf;
	h.len = len;
	h.qualify = ctx->qualify;
	h.ml = ctx->qualify != NULL ? ctx->ml : NULL;
	h.r = r;
	h.leading = true;
	h.resent.max_rcpt = ctx->max_rcpt;
	while ((next = hdr_field_next(&h, &f)) == HDR_FIELD)
		if (!hdr_field_take(&h, &f))
			break;
	if (next == HDR_FIELD || next == HDR_BAD) {
		qp_result_free(&h.resent);
		return QP_BAD;
	}
	if (h.have_resent && !h.xrcpt)
		rcpts_swap(r, &h.resent); /* the To/Cc/Bcc ones go */
	qp_result_free(&h.resent);
	if (!sender_from_fields(&h))
		return QP_BAD;
	sender_map_apply(&h);
	if (!rcpts_alias_expand(&h))
		return QP_BAD;
	if (r->nrcpt == 0) {
		r->why = "no recipients";
		return QP_BAD;
	}
	return QP_OK;
}

/* Parses a message without intake's local-mail rules. */
enum qp_status
qp_message_parse(const char *buf, size_t len, const char *qualify,
    size_t max_rcpt, struct qp_result *r)
{
	const struct qp_ctx ctx = { qualify, max_rcpt, NULL };

	return qp_message_parse_ctx(buf, len, &ctx, r);
}

/* The envelope sender by CTX's sender map; see queue_parse.h. */
char *
qp_sender_rewrite(const struct qp_ctx *ctx, const char *sender)
{
	char *m = NULL;

	if (ctx->ml != NULL && sender[0] != '\0')
		m = mail_map_rewrite(ctx->ml, sender);
	return m != NULL ? m : xstrdup(sender);
}

/* Frees what a parse allocated. */
void
qp_result_free(struct qp_result *r)
{
	for (size_t i = 0; i < r->nrcpt; i++)
		free(r->rcpts[i].orcpt);
	free(r->rcpts);
	mail_addr_set_free(&r->addrs);
	free(r->sender);
	free(r->envid);
	for (size_t i = 0; i < r->ndrop; i++)
		free(r->drop[i].repl);
	free(r->drop);
	r->rcpts = NULL;
	r->sender = r->envid = NULL;
	r->drop = NULL;
	r->nrcpt = r->ndrop = r->rcap = r->dcap = 0;
}

/*
 * Copies body S with every line ending made CRLF (a last line gets one)
 * and a line over QP_LINE_MAX bytes broken by CRLF SPACE, as Postfix's
 * smtp_line_length_limit does (the least harm to MIME; RFC 5321 4.5.3.1.6
 * allows no longer line).  Done here, before DKIM signs the message and
 * its size is taken, not on the wire.
 */
static void
ob_put_body(struct rq_buf *o, const char *s, size_t n)
{
	while (n > 0) {
		const char *lf = memchr(s, '\n', n);
		size_t k = lf ? (size_t)(lf - s) : n, put = 0, w;

		if (k > 0 && s[k - 1] == '\r')
			k--;
		for (w = QP_LINE_MAX; k - put > w; w = QP_LINE_MAX - 1) {
			rq_buf_add(o, s + put, w);
			rq_buf_add(o, "\r\n ", 3);
			put += w;
		}
		rq_buf_add(o, s + put, k - put);
		rq_buf_add(o, "\r\n", 2);
		if (lf == NULL)
			break;
		n -= (size_t)(lf - s) + 1;
		s = lf + 1;
	}
}

/* Copies header fields S with CRLF line ends, folding lines over
 * QP_LINE_MAX bytes (the parse refused those it cannot fold). */
static void
ob_put_header(struct rq_buf *o, const char *s, size_t n)
{
	while (n > 0) {
		const char *lf = memchr(s, '\n', n);
		size_t k = lf ? (size_t)(lf - s) : n, ln = k;

		if (ln > 0 && s[ln - 1] == '\r')
			ln--;
		if (ln > QP_LINE_MAX) {
			const char *c = memchr(s, ':', ln);
			size_t lo = is_wsp(s[0]) || c == NULL
			    ? 1
			    : (size_t)(c - s) + 1;

			if (line_fold(s, ln, lo, NULL))
				line_fold(s, ln, lo, o);
			else
				rq_buf_add(o, s, ln);
		} else {
			rq_buf_add(o, s, ln);
		}
		rq_buf_add(o, "\r\n", 2);
		if (lf == NULL)
			break;
		n -= k + 1;
		s = lf + 1;
	}
}

/* Builds the stored message; see queue_parse.h. */
char *
qp_message_build(const char *buf, size_t len, const struct qp_result *r,
    const char *received, const char *date, const char *msgid, size_t *outlen)
{
	struct rq_buf o = { NULL, 0, 0 };
	size_t pos = 0, body;

	o.cap = len + len / 32 + 512;
	o.p = xmalloc(o.cap);
	if (received != NULL)
		rq_buf_add(&o, received, strlen(received));
	for (size_t k = 0; k < r->ndrop; k++) {
		ob_put_header(&o, buf + pos, r->drop[k].off - pos);
		if (r->drop[k].repl != NULL)
			ob_put_header(&o, r->drop[k].repl, r->drop[k].rlen);
		pos = r->drop[k].off + r->drop[k].len;
	}
	ob_put_header(&o, buf + pos, r->hdr_end - pos);
	if (date != NULL && !r->have_date)
		rq_buf_add(&o, date, strlen(date));
	if (msgid != NULL && !r->have_msgid)
		rq_buf_add(&o, msgid, strlen(msgid));
	rq_buf_add(&o, "\r\n", 2);
	body = r->hdr_end;
	if (r->have_blank) {
		const char *lf = memchr(buf + body, '\n', len - body);

		body = lf ? (size_t)(lf - buf) + 1 : len;
	}
	ob_put_body(&o, buf + body, len - body);
	o.p[o.len] = '\0';
	*outlen = o.len;
	return o.p;
}
