/*
 * smtp_parse.c - pure parsers for what an SMTP server sends: replies
 * (smtp_reply_parse) and EHLO capabilities (smtp_ehlo_parse, with the
 * AUTH mechanisms of RFC 4954), plus the phase names (smtp_phase_name).
 *
 * Invariants: no allocation, no global state; input is untrusted and
 * never read past LEN; a reply is bounded by SMTP_REPLY_BYTES_MAX bytes
 * and SMTP_REPLY_LINES_MAX lines, and the verdict "too long" is reached
 * without waiting for the line end, so a caller's buffer stays bounded.
 */
#include <ctype.h>
#include <string.h>

#include "smtp.h"

static const char *const phase_names[SMTP_NPHASE] = {
	[SMTP_PH_NONE] = "none",
	[SMTP_PH_TOKEN] = "token command",
	[SMTP_PH_CONNECT] = "connect",
	[SMTP_PH_GREETING] = "greeting",
	[SMTP_PH_EHLO] = "EHLO",
	[SMTP_PH_HELO] = "HELO",
	[SMTP_PH_STARTTLS] = "STARTTLS",
	[SMTP_PH_TLS] = "TLS handshake",
	[SMTP_PH_AUTH] = "AUTH",
	[SMTP_PH_MAIL] = "MAIL FROM",
	[SMTP_PH_RCPT] = "RCPT TO",
	[SMTP_PH_DATA] = "DATA",
	[SMTP_PH_BODY] = "message content",
	[SMTP_PH_DOT] = "end of DATA",
	[SMTP_PH_RSET] = "RSET",
	[SMTP_PH_QUIT] = "QUIT",
	[SMTP_PH_NOOP] = "NOOP",
	[SMTP_PH_IDLE] = "idle",
	[SMTP_PH_CLOSED] = "closed",
};

/* Returns the static name of PHASE. */
const char *
smtp_phase_name(enum smtp_phase phase)
{
	if ((unsigned)phase >= SMTP_NPHASE)
		return "unknown";
	return phase_names[phase];
}

/* Parses "X.Y.Z" (class CLS) at S (N bytes); returns its length or 0. */
static size_t
status_parse(const char *s, size_t n, int cls)
{
	size_t i = 0, d;
	int part;

	if (n < 5 || s[0] != (char)('0' + cls) || s[1] != '.')
		return 0;
	i = 2;
	for (part = 0; part < 2; part++) {
		for (d = 0; i < n && d < 3 && isdigit((unsigned char)s[i]); d++)
			i++;
		if (d == 0)
			return 0;
		if (part == 0) {
			if (i >= n || s[i] != '.')
				return 0;
			i++;
		}
	}
	if (i < n && s[i] != ' ' && s[i] != '\t')
		return 0;
	return i;
}

/* Appends N bytes of line text to REPLY's text, controls as spaces. */
static void
text_append(struct smtp_reply *reply, size_t *tlen, const char *s, size_t n)
{
	size_t i;

	if (*tlen > 0 && *tlen + 1 < sizeof(reply->text))
		reply->text[(*tlen)++] = ' ';
	for (i = 0; i < n && *tlen + 1 < sizeof(reply->text); i++) {
		unsigned char ch = (unsigned char)s[i];

		reply->text[(*tlen)++] = (ch < 0x20 || ch == 0x7f) ? ' '
								   : (char)ch;
	}
	reply->text[*tlen] = '\0';
}

/*
 * Reads the "DDD" and the separator that open a reply line (LLEN bytes,
 * line end removed): the code into *CODE and whether the line is the
 * reply's last into *LAST.  SMTP_PARSE_BAD unless the line is "DDD ...",
 * "DDD-..." or "DDD" with a code from 200 to 599.
 */
static enum smtp_parse_result
line_head_parse(const char *line, size_t llen, int *code, bool *last)
{
	if (llen < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' ||
	    line[1] > '9' || line[2] < '0' || line[2] > '9')
		return SMTP_PARSE_BAD;
	*code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
	if (llen == 3)
		*last = true;
	else if (line[3] == ' ')
		*last = true;
	else if (line[3] == '-')
		*last = false;
	else
		return SMTP_PARSE_BAD;
	return SMTP_PARSE_OK;
}

/*
 * Takes the enhanced status (class CLS) off the text *LINE (*LLEN bytes)
 * of line NLINES: the first line's becomes REPLY's status, and the same
 * one on a later line is removed too.
 */
static void
line_status_take(struct smtp_reply *reply, size_t nlines, int cls,
    const char **line, size_t *llen)
{
	size_t st = status_parse(*line, *llen, cls);

	if (st > 0 && nlines == 1 && st < sizeof(reply->status)) {
		memcpy(reply->status, *line, st);
		reply->status[st] = '\0';
	}
	if (st > 0 && reply->status[0] != '\0' && st == strlen(reply->status) &&
	    memcmp(*line, reply->status, st) == 0) {
		*line += st;
		*llen -= st;
		while (*llen > 0 && (**line == ' ' || **line == '\t')) {
			(*line)++;
			(*llen)--;
		}
	}
}

enum smtp_parse_result
smtp_reply_parse(
    const char *buf, size_t len, struct smtp_reply *reply, size_t *used)
{
	size_t off = 0, tlen = 0, nlines = 0;
	int code = 0;

	memset(reply, 0, sizeof(*reply));
	*used = 0;
	for (;;) {
		const char *line = buf + off, *nl;
		size_t avail = len - off, llen, n;
		int c;
		bool last;

		n = SMTP_REPLY_BYTES_MAX - off; /* off <= the bound */
		if (avail < n)
			n = avail;
		nl = memchr(line, '\n', n);
		if (nl == NULL)
			return off + avail >= SMTP_REPLY_BYTES_MAX
			    ? SMTP_PARSE_TOO_LONG
			    : SMTP_PARSE_MORE;
		llen = (size_t)(nl - line);
		off += llen + 1;
		if (llen > 0 && line[llen - 1] == '\r')
			llen--;
		if (++nlines > SMTP_REPLY_LINES_MAX)
			return SMTP_PARSE_TOO_LONG;
		if (line_head_parse(line, llen, &c, &last) != SMTP_PARSE_OK ||
		    (code != 0 && c != code))
			return SMTP_PARSE_BAD;
		code = c;
		line += llen > 3 ? 4 : 3;
		llen -= llen > 3 ? 4 : 3;
		line_status_take(reply, nlines, code / 100, &line, &llen);
		text_append(reply, &tlen, line, llen);
		if (last)
			break;
	}
	reply->code = code;
	reply->nlines = nlines;
	*used = off;
	return SMTP_PARSE_OK;
}

/* Whether the keyword at S (N bytes) is KW, ignoring case. */
static bool
kw_is(const char *s, size_t n, const char *kw)
{
	return strlen(kw) == n && strncasecmp(s, kw, n) == 0;
}

/* Notes the mechanisms of an AUTH line (P..END, after the keyword):
 * "AUTH PLAIN LOGIN" or the old "AUTH=PLAIN LOGIN"; the first line
 * offering AUTH gives auth_list. */
static void
ehlo_auth_parse(const char *p, const char *end, struct smtp_ehlo *ehlo)
{
	bool first = !ehlo->auth_offered;

	ehlo->auth_offered = true;
	if (p < end && *p == '=')
		p++;
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	if (first) {
		size_t n = (size_t)(end - p);

		rq_sanitize(ehlo->auth_list, sizeof(ehlo->auth_list), p,
		    n < sizeof(ehlo->auth_list) ? n : sizeof(ehlo->auth_list));
	}
	while (p < end) {
		const char *w = p;

		while (p < end && *p != ' ' && *p != '\t')
			p++;
		if (kw_is(w, (size_t)(p - w), "PLAIN"))
			ehlo->auth |= SMTP_AUTH_BIT(CFG_SASL_PLAIN);
		else if (kw_is(w, (size_t)(p - w), "LOGIN"))
			ehlo->auth |= SMTP_AUTH_BIT(CFG_SASL_LOGIN);
		else if (kw_is(w, (size_t)(p - w), "XOAUTH2"))
			ehlo->auth |= SMTP_AUTH_BIT(CFG_SASL_XOAUTH2);
		else if (kw_is(w, (size_t)(p - w), "OAUTHBEARER"))
			ehlo->auth |= SMTP_AUTH_BIT(CFG_SASL_OAUTHBEARER);
		while (p < end && (*p == ' ' || *p == '\t'))
			p++;
	}
}

void
smtp_ehlo_parse(const char *text, size_t len, struct smtp_ehlo *ehlo)
{
	size_t off = 0, nlines = 0;

	memset(ehlo, 0, sizeof(*ehlo));
	while (off < len) {
		const char *line = text + off, *nl, *p, *end;
		size_t klen;

		nl = memchr(line, '\n', len - off);
		end = nl ? nl : text + len;
		off = (size_t)(end - text) + 1;
		if (end > line && end[-1] == '\r')
			end--;
		if (nlines++ == 0 || end - line < 4)
			continue;
		p = line + 4;
		while (p < end && (*p == ' ' || *p == '\t'))
			p++;
		for (klen = 0; p + klen < end &&
		     (isalnum((unsigned char)p[klen]) || p[klen] == '-');
		     klen++)
			;
		if (kw_is(p, klen, "PIPELINING"))
			ehlo->pipelining = true;
		else if (kw_is(p, klen, "DSN"))
			ehlo->dsn = true;
		else if (kw_is(p, klen, "STARTTLS"))
			ehlo->starttls = true;
		else if (kw_is(p, klen, "8BITMIME"))
			ehlo->eightbitmime = true;
		else if (kw_is(p, klen, "ENHANCEDSTATUSCODES"))
			ehlo->enhancedstatuscodes = true;
		else if (kw_is(p, klen, "SMTPUTF8"))
			ehlo->smtputf8 = true;
		else if (kw_is(p, klen, "CHUNKING"))
			ehlo->chunking = true;
		else if (kw_is(p, klen, "AUTH"))
			ehlo_auth_parse(p + klen, end, ehlo);
		else if (kw_is(p, klen, "SIZE")) {
			uint64_t v = 0;
			const char *q = p + klen;
			bool ok = true;

			ehlo->size = true;
			while (q < end && (*q == ' ' || *q == '\t'))
				q++;
			for (; q < end && isdigit((unsigned char)*q); q++) {
				if (v > (UINT64_MAX - 9) / 10) {
					ok = false;
					break;
				}
				v = v * 10 + (uint64_t)(*q - '0');
			}
			while (ok && q < end && (*q == ' ' || *q == '\t'))
				q++;
			ehlo->size_max = (ok && q == end) ? v : 0;
		}
	}
}
