/*
 * util.c - allocation wrappers that abort on exhaustion, a sanitizer for
 * remote text, and the clock.
 *
 * Public: xmalloc(), xcalloc(), xrealloc(), xstrdup(), xstrndup(),
 * rq_sanitize(), rq_cleanse(), rq_now(), rq_now_us().
 */
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

/* Zeroes a secret; explicit_bzero is never optimized away. */
void
rq_cleanse(void *p, size_t n)
{
	if (p != NULL && n > 0)
		explicit_bzero(p, n);
}
