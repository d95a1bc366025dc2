/*
 * http_text.c - the text writers the pages share: JSON strings (as
 * `mailq --json` writes them), HTML-escaped text, Prometheus label
 * values and sample values.
 *
 * http-private: http_put(), http_json_str(), http_html_str(), http_prom_label(),
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

/* Appends N bytes at P to the evbuffer ARG (an rq_put_fn). */
void
http_put(void *arg, const char *p, size_t n)
{
	evbuffer_add(arg, p, n);
}

/* Writes S as a JSON string, as mailq --json does (rq_json_str). */
void
http_json_str(struct evbuffer *b, const char *s)
{
	rq_json_str(http_put, b, s);
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
