/*
 * util.c - allocation wrappers that abort on exhaustion, a sanitizer for
 * remote text, the clocks, and the helpers the layers above share so
 * that each is written once: UTF-8 decoding, JSON strings (logs, http/,
 * mailq), base64 (SMTP AUTH, HTTP Basic credentials) and a growing
 * output buffer (DSNs, intake's rewritten headers).
 *
 * Public: xmalloc(), xcalloc(), xrealloc(), xstrdup(), xstrndup(),
 * rq_sanitize(), rq_lower(), rq_cleanse(), rq_now(), rq_now_us(),
 * rq_mono_us(), rq_utf8_len(), rq_json_str(), rq_base64_encode(),
 * rq_base64_decode(),
 * rq_buf_add(), rq_buf_str(), rq_buf_printf().
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cfg.h"

static void __attribute__((noreturn)) oom(void)
{
	static const char msg[] = "relayq: out of memory\n";

	fwrite(msg, 1, sizeof(msg) - 1, stderr);
	abort();
}

void *
xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (p == NULL)
		oom();
	return p;
}

void *
xcalloc(size_t n, size_t m)
{
	void *p = calloc(n ? n : 1, m ? m : 1);

	if (p == NULL)
		oom();
	return p;
}

void *
xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);

	if (q == NULL)
		oom();
	return q;
}

char *
xstrdup(const char *s)
{
	return xstrndup(s, strlen(s));
}

char *
xstrndup(const char *s, size_t n)
{
	char *p = xmalloc(n + 1);

	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

/* Puts a string, cut to fit; see cfg.h. */
size_t
rq_str_put(char *buf, size_t len, size_t off, const char *s)
{
	size_t k = strnlen(s, len - 1 - off);

	memcpy(buf + off, s, k);
	buf[off + k] = '\0';
	return off + k;
}

/* Copies remote text, bounded, with control characters made spaces. */
void
rq_sanitize(char *buf, size_t len, const char *s, size_t slen)
{
	size_t i, o = 0;

	if (len == 0)
		return;
	for (i = 0; i < slen && o + 1 < len; i++) {
		unsigned char ch = (unsigned char)s[i];

		buf[o++] = (ch < 0x20 || ch == 0x7f) ? ' ' : (char)ch;
	}
	buf[o] = '\0';
}

char *
rq_lower(char *s)
{
	for (char *p = s; *p != '\0'; p++)
		*p = (char)tolower((unsigned char)*p);
	return s;
}

size_t
rq_utoa(char *p, uint64_t v)
{
	char tmp[20];
	size_t n = 0, i;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	for (i = 0; i < n; i++)
		p[i] = tmp[n - 1 - i];
	return n;
}

int64_t
rq_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec;
}

int64_t
rq_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The monotonic clock in microseconds. */
int64_t
rq_mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Zeroes a secret; explicit_bzero is never optimized away. */
void
rq_cleanse(void *p, size_t n)
{
	if (p != NULL && n > 0)
		explicit_bzero(p, n);
}

/* Decodes the UTF-8 sequence at S; see cfg.h. */
size_t
rq_utf8_len(const unsigned char *s, size_t n, unsigned *cp)
{
	size_t len, i;
	unsigned c = s[0], min;

	if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
		c &= 0x1f;
		min = 0x80;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		c &= 0x0f;
		min = 0x800;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		c &= 0x07;
		min = 0x10000;
	} else {
		return 0;
	}
	if (len > n)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		c = (c << 6) | (s[i] & 0x3f);
	}
	if (c < min || (c >= 0xd800 && c <= 0xdfff) || c > 0x10ffff)
		return 0;
	*cp = c;
	return len;
}

/* Writes S as a JSON string; see cfg.h. */
void
rq_json_str(rq_put_fn *put, void *arg, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	const char *p, *end;
	unsigned cp;

	if (s == NULL) {
		put(arg, "null", 4);
		return;
	}
	end = s + strlen(s);
	put(arg, "\"", 1);
	for (p = s; *p != '\0';) {
		unsigned char c = (unsigned char)*p;
		size_t n;

		if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
			p++;
			continue;
		}
		if (c >= 0x80 &&
		    (n = rq_utf8_len((const unsigned char *)p,
			 (size_t)(end - p), &cp)) > 0) {
			p += n;
			continue;
		}
		put(arg, s, (size_t)(p - s));
		s = ++p;
		if (c == '"') {
			put(arg, "\\\"", 2);
		} else if (c == '\\') {
			put(arg, "\\\\", 2);
		} else {
			char e[6] = { '\\', 'u', '0', '0', hex[c >> 4],
				hex[c & 15] };

			put(arg, e, 6);
		}
	}
	put(arg, s, (size_t)(p - s));
	put(arg, "\"", 1);
}

static const char b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Writes base64 of IN; see cfg.h. */
size_t
rq_base64_encode(const void *in, size_t len, char *out)
{
	const unsigned char *p = in;
	size_t o = 0, i;

	for (i = 0; i + 2 < len; i += 3) {
		out[o++] = b64[p[i] >> 2];
		out[o++] = b64[((p[i] & 3) << 4) | (p[i + 1] >> 4)];
		out[o++] = b64[((p[i + 1] & 15) << 2) | (p[i + 2] >> 6)];
		out[o++] = b64[p[i + 2] & 63];
	}
	if (i < len) {
		out[o++] = b64[p[i] >> 2];
		if (i + 1 < len) {
			out[o++] = b64[((p[i] & 3) << 4) | (p[i + 1] >> 4)];
			out[o++] = b64[(p[i + 1] & 15) << 2];
		} else {
			out[o++] = b64[(p[i] & 3) << 4];
			out[o++] = '=';
		}
		out[o++] = '=';
	}
	out[o] = '\0';
	return o;
}

/* The value of base64 digit C, or -1. */
static int
b64_val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Decodes base64 IN; see cfg.h. */
bool
rq_base64_decode(
    const char *in, size_t len, unsigned char *out, size_t outlen, size_t *n)
{
	size_t o = 0;

	*n = 0;
	if (len % 4 != 0)
		return false;
	for (size_t i = 0; i < len; i += 4) {
		int v[4], pad = 0;

		for (int k = 0; k < 4; k++) {
			unsigned char c = (unsigned char)in[i + k];

			if (c == '=' && i + 4 == len && k >= 2 &&
			    (k == 3 || in[i + 3] == '=')) {
				v[k] = 0;
				pad++;
				continue;
			}
			if (pad > 0 || (v[k] = b64_val(c)) < 0)
				return false;
		}
		if (o + 3 - (size_t)pad > outlen)
			return false;
		out[o++] = (unsigned char)((v[0] << 2) | (v[1] >> 4));
		if (pad < 2)
			out[o++] = (unsigned char)(((v[1] & 15) << 4) |
			    (v[2] >> 2));
		if (pad < 1)
			out[o++] = (unsigned char)(((v[2] & 3) << 6) | v[3]);
	}
	*n = o;
	return true;
}

/* Appends N bytes at S to B; see cfg.h. */
void
rq_buf_add(struct rq_buf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;

		while (b->len + n + 1 > cap)
			cap *= 2;
		b->p = xrealloc(b->p, cap);
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

/* Appends the string S to B. */
void
rq_buf_str(struct rq_buf *b, const char *s)
{
	rq_buf_add(b, s, strlen(s));
}

/* Appends formatted text to B. */
void
rq_buf_printf(struct rq_buf *b, const char *fmt, ...)
{
	char small[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0)
		abort();
	if ((size_t)n < sizeof(small)) {
		rq_buf_add(b, small, (size_t)n);
		return;
	}
	{
		char *big = xmalloc((size_t)n + 1);

		va_start(ap, fmt);
		vsnprintf(big, (size_t)n + 1, fmt, ap);
		va_end(ap);
		rq_buf_add(b, big, (size_t)n);
		free(big);
	}
}
