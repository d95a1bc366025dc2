/*
 * cfg_lines.c - what the parsers of the config and of its table files
 * (relayq.conf, auth_file, sender_relayhost, sender_map) share: their
 * lines one at a time, a "KEY VALUE" line split, errors in the "FILE:LINE: message" form, and a
 * bad piece of a line quoted for such an error.
 *
 * cfg-private: cfg_lines_next(), cfg_line_key(), cfg_file_err(),
 * cfg_file_verr(), cfg_quote().
 *
 * Invariants: a line holding a NUL byte or longer than CFG_LINE_MAX
 * bytes is an error, never cut short or skipped; what a parser is handed
 * has no CR and no blank at either end and is neither empty nor a
 * comment ('#' its first byte); quoted text has no control bytes.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cfg_int.h"

/* Hands on the next line that is not blank or a comment; see cfg_int.h. */
enum cfg_lines_result
cfg_lines_next(struct cfg_lines *it, const char **linep, size_t *np)
{
	while (it->pos < it->len) {
		const char *line = it->buf + it->pos;
		const char *nl = memchr(line, '\n', it->len - it->pos);
		size_t n = nl ? (size_t)(nl - line) : it->len - it->pos;

		it->pos += n + (nl ? 1 : 0);
		it->lno++;
		if (memchr(line, '\0', n) != NULL) {
			cfg_file_err(it->err, it->errlen, it->name, it->lno,
			    "NUL byte in line");
			return CFG_LINES_BAD;
		}
		if (n > CFG_LINE_MAX) {
			cfg_file_err(it->err, it->errlen, it->name, it->lno,
			    "line too long (over %d bytes)", CFG_LINE_MAX);
			return CFG_LINES_BAD;
		}
		while (n > 0 &&
		    (line[n - 1] == '\r' || line[n - 1] == ' ' ||
			line[n - 1] == '\t'))
			n--;
		while (n > 0 && (*line == ' ' || *line == '\t')) {
			line++;
			n--;
		}
		if (n == 0 || line[0] == '#')
			continue;
		*linep = line;
		*np = n;
		return CFG_LINES_OK;
	}
	return CFG_LINES_END;
}

/* Splits a "KEY VALUE" line at its first blank; see cfg_int.h. */
size_t
cfg_line_key(const char *line, size_t n, size_t *val)
{
	size_t k = 0, v;

	while (k < n && line[k] != ' ' && line[k] != '\t')
		k++;
	for (v = k; v < n && (line[v] == ' ' || line[v] == '\t'); v++)
		;
	*val = v;
	return k;
}

/* Writes "NAME:LINE: " and FMT into ERR; see cfg_int.h. */
bool
cfg_file_verr(char *err, size_t errlen, const char *name, int line,
    const char *fmt, va_list ap)
{
	int off = snprintf(err, errlen, "%s:%d: ", name, line);

	if (off < 0 || (size_t)off >= errlen)
		return false;
	vsnprintf(err + off, errlen - (size_t)off, fmt, ap);
	return true;
}

/* As cfg_file_verr(), with the arguments given. */
void
cfg_file_err(
    char *err, size_t errlen, const char *name, int line, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	(void)cfg_file_verr(err, errlen, name, line, fmt, ap);
	va_end(ap);
}

/* Copies at most 60 bytes of S for an error message; see cfg_int.h. */
const char *
cfg_quote(const char *s, size_t len, char *buf, size_t blen)
{
	rq_sanitize(buf, blen, s, len < 60 ? len : 60);
	return buf;
}
