/*
 * http_text.c - the text writers the pages share: JSON strings (as
 * `mailq --json` writes them), HTML-escaped text, Prometheus label
 * values and sample values.
 *
 * http-private: http_json_str(), http_html_str(), http_prom_label(),
 * http_prom_value().
 *
 * Invariants: whatever bytes come in (addresses, replies, domain names
 * from the queue), what goes out is valid in its format: JSON strings
 * escape quotes, backslashes and control bytes, and write a byte that
 * is not UTF-8 as the code point of the same value; HTML escapes the
 * five special characters and drops control bytes; label values escape
 * backslash, double quote and newline (the text format 0.0.4).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "http_int.h"

/* The length of the valid UTF-8 sequence at P (2-4), or 0. */
static size_t
utf8_len(const unsigned char *p)
{
	size_t n;
	unsigned cp, min;

	if (p[0] >= 0xc2 && p[0] <= 0xdf) {
		n = 2, cp = p[0] & 0x1f, min = 0x80;
	} else if (p[0] >= 0xe0 && p[0] <= 0xef) {
		n = 3, cp = p[0] & 0x0f, min = 0x800;
	} else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		n = 4, cp = p[0] & 0x07, min = 0x10000;
	} else {
		return 0;
	}
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (p[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

/* Writes S as a JSON string, as mailq --json does. */
void
http_json_str(struct evbuffer *b, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	const char *p;

	if (s == NULL) {
		HTTP_ADD(b, "null");
		return;
	}
	HTTP_ADD(b, "\"");
	for (p = s; *p != '\0';) {
		unsigned char c = (unsigned char)*p;
		size_t n;

		if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
			p++;
			continue;
		}
		if (c >= 0x80 && (n = utf8_len((const unsigned char *)p)) > 0) {
			p += n;
			continue;
		}
		evbuffer_add(b, s, (size_t)(p - s));
		s = ++p;
		if (c == '"') {
			HTTP_ADD(b, "\\\"");
		} else if (c == '\\') {
			HTTP_ADD(b, "\\\\");
		} else {
			char e[6] = { '\\', 'u', '0', '0', hex[c >> 4],
				hex[c & 15] };

			evbuffer_add(b, e, 6);
		}
	}
	evbuffer_add(b, s, (size_t)(p - s));
	HTTP_ADD(b, "\"");
}

/* Writes S escaped for HTML text and attributes. */
void
http_html_str(struct evbuffer *b, const char *s)
{
	const char *p;

	if (s == NULL)
		return;
	for (p = s; *p != '\0'; p++) {
		unsigned char c = (unsigned char)*p;
		const char *e = NULL;

		switch (c) {
		case '&':
			e = "&amp;";
			break;
		case '<':
			e = "&lt;";
			break;
		case '>':
			e = "&gt;";
			break;
		case '"':
			e = "&quot;";
			break;
		case '\'':
			e = "&#39;";
			break;
		default:
			if (c < 0x20 || c == 0x7f)
				e = " ";
			break;
		}
		if (e == NULL)
			continue;
		evbuffer_add(b, s, (size_t)(p - s));
		evbuffer_add(b, e, strlen(e));
		s = p + 1;
	}
	evbuffer_add(b, s, (size_t)(p - s));
}

/* Writes S escaped as a Prometheus label value. */
void
http_prom_label(struct evbuffer *b, const char *s)
{
	const char *p;

	for (p = s; *p != '\0'; p++) {
		const char *e = *p == '\\' ? "\\\\"
		    : *p == '"'		   ? "\\\""
		    : *p == '\n'	   ? "\\n"
					   : NULL;

		if (e == NULL)
			continue;
		evbuffer_add(b, s, (size_t)(p - s));
		evbuffer_add(b, e, 2);
		s = p + 1;
	}
	evbuffer_add(b, s, (size_t)(p - s));
}

/* Writes a sample value (integers exactly, +Inf, NaN). */
void
http_prom_value(struct evbuffer *b, double v)
{
	if (isnan(v))
		HTTP_ADD(b, "NaN");
	else if (isinf(v))
		evbuffer_add_printf(b, "%s", v > 0 ? "+Inf" : "-Inf");
	else if (v == floor(v) && fabs(v) < 9e15)
		evbuffer_add_printf(b, "%.0f", v);
	else
		evbuffer_add_printf(b, "%.17g", v);
}
