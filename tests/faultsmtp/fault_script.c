/*
 * fault_script.c - the faultsmtp script language: one directive per line,
 * `#` starts a comment line, blank lines and leading blanks are ignored.
 *
 *   hostname NAME               name in the EHLO/HELO replies (faultsmtp)
 *   greeting CODE TEXT          the greeting (220 faultsmtp ESMTP)
 *   ehlo KEYWORD...             capabilities; an all-digits token is a
 *                               parameter of the keyword before it
 *                               ("SIZE 1000000"); the first ehlo/ehlo-line
 *                               replaces the default list
 *                               (PIPELINING 8BITMIME ENHANCEDSTATUSCODES),
 *                               further ones append; `ehlo` alone = none
 *   ehlo-line TEXT              one capability line, verbatim
 *   ehlo-reject                 EHLO gets 502, the client must use HELO
 *   idle SECS                   421 4.4.2 and close after SECS without
 *                               input (our own stalls don't count)
 *   on COMMAND [N] [conn K] ACTION
 *   rcpt ADDRESS reply CODE TEXT
 *
 * COMMAND: CONNECT (the greeting) EHLO HELO MAIL RCPT DATA DOT (the final
 * dot) RSET QUIT STARTTLS NOOP BLOCK (message data: fires when the first
 * data bytes of a message arrive).  N: the Nth such command on the
 * connection, 1-based, counted across STARTTLS (absent: every time).
 * conn K: only on the Kth connection accepted since start (1-based, all
 * listeners together).  The most specific matching rule wins (N and conn
 * > one of them > neither); among equals, the first in the file.
 *
 * ACTION, applied to the normal reply (what a real server would answer):
 *   reply CODE TEXT     instead of the normal reply (\n in TEXT: more
 *                       lines, sent as CODE-... CODE ...; CODE may be any
 *                       token, e.g. a malformed one)
 *   raw TEXT            these bytes instead of the reply (add \r\n
 *                       yourself): for malformed multi-line replies
 *   stall SECS          no reply for SECS, then the normal reply
 *   partial TEXT stall SECS
 *                       TEXT at once, without CRLF; after SECS the rest of
 *                       the normal reply (if TEXT is a prefix of it), else
 *                       CRLF and the whole normal reply
 *   trickle SECS        the normal reply, one byte every SECS
 *   drop                close at once (replies queued before still go)
 *   garbage             a line of non-SMTP junk instead of the reply
 *   endless             "CODE " and then x's without end, no CRLF, until
 *                       the client disconnects (paced, bounded buffer)
 *   inject TEXT         STARTTLS only: "220 ..." and TEXT in one write,
 *                       then TLS
 *   badtls              STARTTLS only: 220, then junk (a TLS alert) instead
 *                       of a handshake, then close
 *   tlsstall SECS       STARTTLS only: 220, then no handshake for SECS
 * The state follows the reply actually given: MAIL answered 2xx opens a
 * transaction, RCPT 2xx adds a recipient, DATA 3xx starts message data,
 * DOT 2xx keeps the message (written to DUMPDIR before the reply), STARTTLS
 * 220 starts TLS (with --cert), any 421 closes after sending; drop,
 * garbage and endless count as no reply.  Under BLOCK there is no normal
 * reply: stall/partial stop reading for SECS (a client writing a big
 * message blocks), trickle reads 1024 bytes every SECS, reply/raw send
 * the reply mid-data and close, drop closes, garbage sends junk and goes
 * on, endless starts an endless line.
 *
 * Normal replies: RCPT before MAIL, MAIL before EHLO/HELO, nested MAIL:
 * 503; DATA with no accepted recipient: 554; MAIL/RCPT parameters that
 * EHLO did not offer (SIZE, BODY/8BITMIME, RET/ENVID/NOTIFY/ORCPT/DSN,
 * SMTPUTF8, AUTH), or any after HELO: 555; SIZE= or message data over an
 * offered `SIZE N`: 552; lines over 4096 bytes: 500; after a non-2xx
 * greeting everything but QUIT gets 503.  Enhanced status codes appear
 * only when ENHANCEDSTATUSCODES is offered; STARTTLS is not offered again
 * under TLS.  `rcpt ADDRESS` (with or without <>, any case) sets the normal
 * reply for that recipient, so `on RCPT` actions still apply to it.
 *
 * In TEXT, \r \n \t \\ and \xHH are escapes.
 *
 * Public: fault_script_parse(), fault_script_free(), fault_script_match(),
 * fault_script_rcpt(), fault_script_offers().
 *
 * Invariant: a parsed script is never modified; every string in it is
 * NUL-terminated (text may also hold NULs from \x00: use textlen).
 */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cfg.h"
#include "faultsmtp.h"

static const char *const cmd_names[FC_NCMD] = { "CONNECT", "EHLO", "HELO",
	"MAIL", "RCPT", "DATA", "DOT", "RSET", "QUIT", "STARTTLS", "NOOP",
	"BLOCK", NULL };

static const char *const default_ehlo[] = { "PIPELINING", "8BITMIME",
	"ENHANCEDSTATUSCODES" };

/* Parse state for one line: a cursor and where errors go. */
struct pline {
	char *p;
	unsigned line;
	char *err;
	size_t errlen;
};

/* Formats an error for the current line; always returns FAULT_PARSE_ERR. */
static enum fault_parse_result __attribute__((format(printf, 2, 3)))
perr(struct pline *pl, const char *fmt, ...)
{
	va_list ap;
	int n;

	n = snprintf(pl->err, pl->errlen, "line %u: ", pl->line);
	if (n < 0 || (size_t)n >= pl->errlen)
		return FAULT_PARSE_ERR;
	va_start(ap, fmt);
	vsnprintf(pl->err + n, pl->errlen - (size_t)n, fmt, ap);
	va_end(ap);
	return FAULT_PARSE_ERR;
}

/* Returns the next blank-separated word (NUL-terminated in place) or NULL. */
static char *
pl_word(struct pline *pl)
{
	char *w;

	while (*pl->p == ' ' || *pl->p == '\t')
		pl->p++;
	if (*pl->p == '\0')
		return NULL;
	w = pl->p;
	while (*pl->p != '\0' && *pl->p != ' ' && *pl->p != '\t')
		pl->p++;
	if (*pl->p != '\0')
		*pl->p++ = '\0';
	return w;
}

/* Returns the rest of the line without leading blanks (maybe ""). */
static char *
pl_rest(struct pline *pl)
{
	char *r;

	while (*pl->p == ' ' || *pl->p == '\t')
		pl->p++;
	r = pl->p;
	pl->p += strlen(pl->p);
	return r;
}

/* Returns the value of hex digit C, or -1. */
static int
hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Unescapes S into a new buffer; *lenp gets the length (NULs allowed). */
static char *
unescape(const char *s, size_t *lenp)
{
	size_t n = strlen(s), o = 0;
	char *out = xmalloc(n + 1);

	for (size_t i = 0; i < n; i++) {
		if (s[i] != '\\' || i + 1 == n) {
			out[o++] = s[i];
			continue;
		}
		switch (s[++i]) {
		case 'r':
			out[o++] = '\r';
			break;
		case 'n':
			out[o++] = '\n';
			break;
		case 't':
			out[o++] = '\t';
			break;
		case 'x':
			if (i + 2 < n && hexval(s[i + 1]) >= 0 &&
			    hexval(s[i + 2]) >= 0) {
				out[o++] = (char)(hexval(s[i + 1]) * 16 +
				    hexval(s[i + 2]));
				i += 2;
			} else {
				out[o++] = 'x';
			}
			break;
		default:
			out[o++] = s[i];
			break;
		}
	}
	out[o] = '\0';
	*lenp = o;
	return out;
}

static void action_free(struct fault_action *);

/* Parses a duration in seconds (fractions allowed, at most a day). */
static bool
parse_secs(const char *w, double *out)
{
	char *end;
	double d;

	if (w == NULL)
		return false;
	d = strtod(w, &end);
	if (end == w || *end != '\0' || !isfinite(d) || d < 0 || d > 86400)
		return false;
	*out = d;
	return true;
}

/* Parses a positive integer of at most 9 digits. */
static bool
parse_uint(const char *w, unsigned *out)
{
	unsigned v = 0;
	size_t n = strlen(w);

	if (n == 0 || n > 9)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (!isdigit((unsigned char)w[i]))
			return false;
		v = v * 10 + (unsigned)(w[i] - '0');
	}
	if (v == 0)
		return false;
	*out = v;
	return true;
}

/* Parses ACTION (first word W, the rest at the cursor) for CMD into *a. */
static enum fault_parse_result
parse_action(
    struct pline *pl, char *w, enum fault_cmd cmd, struct fault_action *a)
{
	char *rest, *st;

	memset(a, 0, sizeof(*a));
	if (w == NULL)
		return perr(pl, "missing action");
	if (strcasecmp(w, "reply") == 0) {
		char *code = pl_word(pl);

		if (code == NULL)
			return perr(pl, "reply: missing code");
		a->kind = FA_REPLY;
		a->code = xstrdup(code);
		a->text = unescape(pl_rest(pl), &a->textlen);
		return FAULT_PARSE_OK;
	}
	if (strcasecmp(w, "raw") == 0) {
		a->kind = FA_RAW;
		a->text = unescape(pl_rest(pl), &a->textlen);
		if (a->textlen == 0)
			return perr(pl, "raw: missing text");
		return FAULT_PARSE_OK;
	}
	if (strcasecmp(w, "stall") == 0 || strcasecmp(w, "trickle") == 0 ||
	    strcasecmp(w, "tlsstall") == 0) {
		a->kind = strcasecmp(w, "stall") == 0 ? FA_STALL
		    : strcasecmp(w, "trickle") == 0   ? FA_TRICKLE
						      : FA_TLSSTALL;
		if (a->kind == FA_TLSSTALL && cmd != FC_STARTTLS)
			return perr(pl, "tlsstall is for STARTTLS only");
		if (!parse_secs(pl_word(pl), &a->secs))
			return perr(pl, "%s: bad or missing seconds", w);
		if (a->kind == FA_TRICKLE && a->secs <= 0)
			return perr(pl, "trickle: seconds must be > 0");
		if (pl_word(pl) != NULL)
			return perr(pl, "%s: junk after seconds", w);
		return FAULT_PARSE_OK;
	}
	if (strcasecmp(w, "partial") == 0) {
		rest = pl_rest(pl);
		st = NULL;
		for (char *q = rest; (q = strstr(q, " stall ")) != NULL; q++)
			st = q;
		if (st == NULL || st == rest)
			return perr(
			    pl, "partial: want `partial TEXT stall SECS`");
		*st = '\0';
		a->kind = FA_PARTIAL;
		a->text = unescape(rest, &a->textlen);
		while (*(st + 7) == ' ')
			st++;
		if (!parse_secs(st + 7, &a->secs))
			return perr(pl, "partial: bad seconds");
		return FAULT_PARSE_OK;
	}
	if (strcasecmp(w, "inject") == 0) {
		if (cmd != FC_STARTTLS)
			return perr(pl, "inject is for STARTTLS only");
		a->kind = FA_INJECT;
		a->text = unescape(pl_rest(pl), &a->textlen);
		return FAULT_PARSE_OK;
	}
	if (strcasecmp(w, "drop") == 0)
		a->kind = FA_DROP;
	else if (strcasecmp(w, "garbage") == 0)
		a->kind = FA_GARBAGE;
	else if (strcasecmp(w, "endless") == 0)
		a->kind = FA_ENDLESS;
	else if (strcasecmp(w, "badtls") == 0) {
		if (cmd != FC_STARTTLS)
			return perr(pl, "badtls is for STARTTLS only");
		a->kind = FA_BADTLS;
	} else
		return perr(pl, "unknown action `%.50s`", w);
	if (pl_word(pl) != NULL)
		return perr(pl, "junk after `%s`", w);
	return FAULT_PARSE_OK;
}

/* Appends one capability line to the script's EHLO list. */
static void
ehlo_add(struct fault_script *s, const char *line, size_t len)
{
	s->ehlo = xrealloc(s->ehlo, (s->nehlo + 1) * sizeof(*s->ehlo));
	s->ehlo[s->nehlo++] = xstrndup(line, len);
}

/* Drops every EHLO line (the defaults, before the first ehlo directive). */
static void
ehlo_clear(struct fault_script *s)
{
	for (size_t i = 0; i < s->nehlo; i++)
		free(s->ehlo[i]);
	free(s->ehlo);
	s->ehlo = NULL;
	s->nehlo = 0;
}

/* Parses `ehlo KEYWORD...`: digits-first tokens join the keyword before. */
static enum fault_parse_result
parse_ehlo(struct pline *pl, struct fault_script *s)
{
	char line[1024];
	size_t n = 0;
	char *w;

	while ((w = pl_word(pl)) != NULL) {
		size_t wl = strlen(w);

		if (strspn(w, "0123456789") == wl && n > 0) {
			if (n + 1 + wl >= sizeof(line))
				return perr(pl, "ehlo: keyword too long");
			line[n++] = ' ';
		} else {
			if (n > 0)
				ehlo_add(s, line, n);
			n = 0;
			if (wl >= sizeof(line))
				return perr(pl, "ehlo: keyword too long");
		}
		memcpy(line + n, w, wl);
		n += wl;
	}
	if (n > 0)
		ehlo_add(s, line, n);
	return FAULT_PARSE_OK;
}

/* Parses `on COMMAND [N] [conn K] ACTION` into a new rule. */
static enum fault_parse_result
parse_on(struct pline *pl, struct fault_script *s)
{
	struct fault_rule r;
	char *w = pl_word(pl);
	int c;

	memset(&r, 0, sizeof(r));
	r.line = pl->line;
	if (w == NULL)
		return perr(pl, "on: missing command");
	for (c = 0; c < FC_NCMD; c++)
		if (cmd_names[c] != NULL && strcasecmp(w, cmd_names[c]) == 0)
			break;
	if (c == FC_NCMD)
		return perr(pl, "on: unknown command `%.50s`", w);
	r.cmd = (enum fault_cmd)c;
	for (;;) {
		char *n;

		w = pl_word(pl);
		if (w == NULL)
			return perr(pl, "on: missing action");
		if (strcasecmp(w, "conn") == 0) {
			n = pl_word(pl);
			if (n == NULL || !parse_uint(n, &r.conn))
				return perr(pl, "on: conn wants a number >= 1");
		} else if (isdigit((unsigned char)w[0])) {
			if (!parse_uint(w, &r.nth))
				return perr(pl, "on: N must be a number >= 1");
		} else {
			break;
		}
	}
	if (parse_action(pl, w, r.cmd, &r.act) != FAULT_PARSE_OK) {
		action_free(&r.act);
		return FAULT_PARSE_ERR;
	}
	s->rules = xrealloc(s->rules, (s->nrules + 1) * sizeof(*s->rules));
	s->rules[s->nrules++] = r;
	return FAULT_PARSE_OK;
}

/* Parses `rcpt ADDRESS reply CODE TEXT`. */
static enum fault_parse_result
parse_rcpt(struct pline *pl, struct fault_script *s)
{
	struct fault_rcpt r;
	char *addr = pl_word(pl), *w, *code;
	size_t len, tl;

	if (addr == NULL)
		return perr(pl, "rcpt: missing address");
	w = pl_word(pl);
	if (w == NULL || strcasecmp(w, "reply") != 0)
		return perr(pl, "rcpt: want `rcpt ADDRESS reply CODE TEXT`");
	code = pl_word(pl);
	if (code == NULL)
		return perr(pl, "rcpt: missing reply code");
	len = strlen(addr);
	if (len >= 2 && addr[0] == '<' && addr[len - 1] == '>') {
		addr++;
		len -= 2;
	}
	r.addr = xstrndup(addr, len);
	r.code = xstrdup(code);
	r.text = unescape(pl_rest(pl), &tl);
	s->rcpts = xrealloc(s->rcpts, (s->nrcpts + 1) * sizeof(*s->rcpts));
	s->rcpts[s->nrcpts++] = r;
	return FAULT_PARSE_OK;
}

/* Parses one directive line (already without its newline). */
static enum fault_parse_result
parse_line(struct pline *pl, struct fault_script *s, bool *ehlo_seen)
{
	char *w = pl_word(pl), *code;

	if (w == NULL || w[0] == '#')
		return FAULT_PARSE_OK;
	if (strcasecmp(w, "on") == 0)
		return parse_on(pl, s);
	if (strcasecmp(w, "rcpt") == 0)
		return parse_rcpt(pl, s);
	if (strcasecmp(w, "ehlo") == 0 || strcasecmp(w, "ehlo-line") == 0) {
		if (!*ehlo_seen)
			ehlo_clear(s);
		*ehlo_seen = true;
		if (strcasecmp(w, "ehlo") == 0)
			return parse_ehlo(pl, s);
		w = pl_rest(pl);
		if (*w == '\0')
			return perr(pl, "ehlo-line: missing text");
		ehlo_add(s, w, strlen(w));
		return FAULT_PARSE_OK;
	}
	if (strcasecmp(w, "idle") == 0) {
		if (!parse_secs(pl_word(pl), &s->idle) || s->idle <= 0)
			return perr(pl, "idle: bad or missing seconds");
		return FAULT_PARSE_OK;
	}
	if (strcasecmp(w, "ehlo-reject") == 0) {
		s->ehlo_reject = true;
		return FAULT_PARSE_OK;
	}
	if (strcasecmp(w, "greeting") == 0) {
		size_t tl;

		code = pl_word(pl);
		if (code == NULL)
			return perr(pl, "greeting: missing code");
		free(s->greet_code);
		free(s->greet_text);
		s->greet_code = xstrdup(code);
		s->greet_text = unescape(pl_rest(pl), &tl);
		return FAULT_PARSE_OK;
	}
	if (strcasecmp(w, "hostname") == 0) {
		w = pl_word(pl);
		if (w == NULL)
			return perr(pl, "hostname: missing name");
		free(s->hostname);
		s->hostname = xstrdup(w);
		return FAULT_PARSE_OK;
	}
	return perr(pl, "unknown directive `%.50s`", w);
}

/* Parses a whole script; see faultsmtp.h. */
enum fault_parse_result
fault_script_parse(const char *buf, size_t len, struct fault_script **out,
    char *err, size_t errlen)
{
	struct fault_script *s = xcalloc(1, sizeof(*s));
	struct pline pl = { .err = err, .errlen = errlen };
	bool ehlo_seen = false;
	size_t pos = 0;

	*out = NULL;
	s->hostname = xstrdup("faultsmtp");
	s->greet_code = xstrdup("220");
	s->greet_text = xstrdup("faultsmtp ESMTP");
	for (size_t i = 0; i < sizeof(default_ehlo) / sizeof(*default_ehlo);
	     i++)
		ehlo_add(s, default_ehlo[i], strlen(default_ehlo[i]));
	while (pos < len) {
		const char *nl = memchr(buf + pos, '\n', len - pos);
		size_t rl = nl ? (size_t)(nl - (buf + pos)) : len - pos;
		size_t ll = rl;
		char *line;
		enum fault_parse_result r;

		pl.line++;
		if (ll > 0 && buf[pos + ll - 1] == '\r')
			ll--;
		line = xstrndup(buf + pos, ll);
		pos += rl + 1;
		if (strlen(line) != ll) {
			free(line);
			perr(&pl, "NUL byte in script");
			fault_script_free(s);
			return FAULT_PARSE_ERR;
		}
		pl.p = line;
		r = parse_line(&pl, s, &ehlo_seen);
		free(line);
		if (r != FAULT_PARSE_OK) {
			fault_script_free(s);
			return r;
		}
	}
	for (size_t i = 0; i < s->nehlo; i++) {
		unsigned long long v;
		char *end;

		if (strncasecmp(s->ehlo[i], "SIZE ", 5) != 0)
			continue;
		v = strtoull(s->ehlo[i] + 5, &end, 10);
		if (*end == '\0')
			s->size_limit = v;
	}
	*out = s;
	return FAULT_PARSE_OK;
}

/* Frees one action's strings. */
static void
action_free(struct fault_action *a)
{
	free(a->code);
	free(a->text);
}

/* Frees a script and all its strings. */
void
fault_script_free(struct fault_script *s)
{
	if (s == NULL)
		return;
	for (size_t i = 0; i < s->nrules; i++)
		action_free(&s->rules[i].act);
	free(s->rules);
	for (size_t i = 0; i < s->nrcpts; i++) {
		free(s->rcpts[i].addr);
		free(s->rcpts[i].code);
		free(s->rcpts[i].text);
	}
	free(s->rcpts);
	ehlo_clear(s);
	free(s->hostname);
	free(s->greet_code);
	free(s->greet_text);
	free(s);
}

/*
 * Picks the most specific matching rule (N and conn both given beats one
 * of them, which beats neither); among equals, the earliest line wins.
 */
const struct fault_rule *
fault_script_match(const struct fault_script *s, enum fault_cmd cmd,
    unsigned nth, unsigned conn)
{
	const struct fault_rule *best = NULL;
	int best_score = -1;

	for (size_t i = 0; i < s->nrules; i++) {
		const struct fault_rule *r = &s->rules[i];
		int score;

		if (r->cmd != cmd || (r->nth != 0 && r->nth != nth) ||
		    (r->conn != 0 && r->conn != conn))
			continue;
		score = (r->nth != 0) + (r->conn != 0);
		if (score > best_score) {
			best = r;
			best_score = score;
		}
	}
	return best;
}

/* Finds the `rcpt` entry for an address; see faultsmtp.h. */
const struct fault_rcpt *
fault_script_rcpt(const struct fault_script *s, const char *addr, size_t len)
{
	for (size_t i = 0; i < s->nrcpts; i++)
		if (strlen(s->rcpts[i].addr) == len &&
		    strncasecmp(s->rcpts[i].addr, addr, len) == 0)
			return &s->rcpts[i];
	return NULL;
}

/* Tells whether a capability is in the EHLO list; see faultsmtp.h. */
bool
fault_script_offers(const struct fault_script *s, const char *kw)
{
	size_t n = strlen(kw);

	for (size_t i = 0; i < s->nehlo; i++)
		if (strncasecmp(s->ehlo[i], kw, n) == 0 &&
		    (s->ehlo[i][n] == '\0' || s->ehlo[i][n] == ' ' ||
			s->ehlo[i][n] == '='))
			return true;
	return false;
}
