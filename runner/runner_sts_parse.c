/*
 * runner_sts_parse.c - the pure parts of MTA-STS (RFC 8461): the
 * _mta-sts TXT record, the policy file, MX pattern matching, and the text
 * record a policy is cached as in the queue's policy db.
 *
 * Public (runner-private): runner_sts_txt_parse(),
 * runner_sts_policy_parse(), runner_sts_mx_match(),
 * runner_sts_record_format(), runner_sts_record_parse(),
 * runner_sts_mode_name().  Every function reads only its arguments;
 * every parser takes any bytes and either fills its output or fails.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "runner_sts.h"

const char *
runner_sts_mode_name(enum sts_mode m)
{
	return m == STS_MODE_ENFORCE ? "enforce"
	    : m == STS_MODE_TESTING  ? "testing"
				     : "none";
}

/* Trims blanks (space, tab) around [*S, *S + *N). */
static void
trim(const char **s, size_t *n)
{
	while (*n > 0 && (**s == ' ' || **s == '\t')) {
		(*s)++;
		(*n)--;
	}
	while (*n > 0 && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t'))
		(*n)--;
}

int
runner_sts_txt_parse(const char *txt, size_t len, char id[STS_ID_MAX + 1])
{
	size_t pos = 0;
	bool first = true, have_id = false;

	id[0] = '\0';
	while (pos < len) {
		const char *f = txt + pos, *semi = memchr(f, ';', len - pos);
		size_t n = semi ? (size_t)(semi - f) : len - pos;
		const char *eq;

		pos += n + (semi ? 1 : 0);
		trim(&f, &n);
		if (n == 0) {
			if (first)
				return -1;
			continue;
		}
		eq = memchr(f, '=', n);
		if (eq == NULL)
			return -1;
		if (first) {
			if (n != 7 || memcmp(f, "v=STSv1", 7) != 0)
				return -1;
			first = false;
			continue;
		}
		if (eq - f == 2 && memcmp(f, "id", 2) == 0) {
			size_t il = n - 3;

			if (il == 0 || il > STS_ID_MAX || have_id)
				return -1;
			for (size_t i = 0; i < il; i++)
				if (!isalnum((unsigned char)f[3 + i]))
					return -1;
			memcpy(id, f + 3, il);
			id[il] = '\0';
			have_id = true;
		}
	}
	return !first && have_id ? 0 : -1;
}

/* Is [S, S + N) a host name or a "*."-pattern we can keep? */
static bool
mx_pattern_ok(const char *s, size_t n)
{
	if (n == 0 || n > 253)
		return false;
	if (n > 2 && s[0] == '*' && s[1] == '.') {
		s += 2;
		n -= 2;
	}
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!isalnum(c) && c != '-' && c != '.' && c != '_')
			return false;
	}
	return s[0] != '.';
}

int
runner_sts_policy_parse(
    const char *buf, size_t len, struct sts_policy *p, const char **why)
{
	size_t pos = 0;
	bool version = false, mode = false, age = false;

	p->mode = STS_MODE_NONE;
	p->max_age = 0;
	p->nmx = 0;
	if (memchr(buf, '\0', len) != NULL) {
		*why = "NUL byte in the policy";
		return -1;
	}
	while (pos < len) {
		const char *l = buf + pos, *nl = memchr(l, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - l) : len - pos;
		const char *colon, *v;
		size_t kn, vn;

		pos += n + (nl ? 1 : 0);
		if (n > 0 && l[n - 1] == '\r')
			n--;
		if (n == 0)
			continue;
		colon = memchr(l, ':', n);
		if (colon == NULL) {
			*why = "a line without a colon";
			return -1;
		}
		kn = (size_t)(colon - l);
		v = colon + 1;
		vn = n - kn - 1;
		trim(&v, &vn);
		if (kn == 7 && memcmp(l, "version", 7) == 0) {
			if (version || vn != 5 || memcmp(v, "STSv1", 5) != 0) {
				*why = "version is not STSv1";
				return -1;
			}
			version = true;
		} else if (kn == 4 && memcmp(l, "mode", 4) == 0) {
			if (mode) {
				*why = "mode given twice";
				return -1;
			}
			/* any case: "Enforce" refused would fail open */
			if (vn == 7 && strncasecmp(v, "enforce", 7) == 0)
				p->mode = STS_MODE_ENFORCE;
			else if (vn == 7 && strncasecmp(v, "testing", 7) == 0)
				p->mode = STS_MODE_TESTING;
			else if (vn == 4 && strncasecmp(v, "none", 4) == 0)
				p->mode = STS_MODE_NONE;
			else {
				*why = "unknown mode";
				return -1;
			}
			mode = true;
		} else if (kn == 7 && memcmp(l, "max_age", 7) == 0) {
			int64_t a = 0;

			if (age || vn == 0 || vn > 10) {
				*why = "bad max_age";
				return -1;
			}
			for (size_t i = 0; i < vn; i++) {
				if (!isdigit((unsigned char)v[i])) {
					*why = "bad max_age";
					return -1;
				}
				a = a * 10 + (v[i] - '0');
			}
			p->max_age = a > STS_MAX_AGE_MAX ? STS_MAX_AGE_MAX : a;
			age = true;
		} else if (kn == 2 && memcmp(l, "mx", 2) == 0) {
			if (!mx_pattern_ok(v, vn)) {
				*why = "bad mx pattern";
				return -1;
			}
			if (p->nmx < STS_MX_MAX) {
				for (size_t i = 0; i < vn; i++)
					p->mx[p->nmx][i] = (char)tolower(
					    (unsigned char)v[i]);
				p->mx[p->nmx][vn] = '\0';
				if (vn > 1 && p->mx[p->nmx][vn - 1] == '.')
					p->mx[p->nmx][vn - 1] = '\0';
				p->nmx++;
			}
		}
		/* other keys: ignored (RFC 8461 3.2, extensions) */
	}
	if (!version || !mode || !age) {
		*why = !version ? "no version"
		    : !mode	? "no mode"
				: "no max_age";
		return -1;
	}
	if (p->mode != STS_MODE_NONE && p->nmx == 0) {
		*why = "no mx";
		return -1;
	}
	return 0;
}

bool
runner_sts_mx_match(const struct sts_policy *p, const char *host)
{
	size_t hl = strlen(host);

	if (hl > 0 && host[hl - 1] == '.')
		hl--;
	for (size_t i = 0; i < p->nmx; i++) {
		const char *m = p->mx[i];
		size_t ml = strlen(m);

		if (ml > 2 && m[0] == '*' && m[1] == '.') {
			/* one label, then exactly the rest */
			const char *dot = memchr(host, '.', hl);

			if (dot != NULL && dot != host &&
			    (size_t)(host + hl - dot - 1) == ml - 2 &&
			    strncasecmp(dot + 1, m + 2, ml - 2) == 0)
				return true;
		} else if (ml == hl && strncasecmp(host, m, hl) == 0) {
			return true;
		}
	}
	return false;
}

size_t
runner_sts_record_format(const struct sts_policy *p, char *buf, size_t len)
{
	size_t o;
	int n;

	n = snprintf(buf, len, "sts1 %s %d %lld %lld\n", p->id[0] ? p->id : "-",
	    (int)p->mode, (long long)p->max_age, (long long)p->expires);
	if (n < 0 || (size_t)n >= len)
		return 0;
	o = (size_t)n;
	for (size_t i = 0; i < p->nmx; i++) {
		n = snprintf(buf + o, len - o, "%s\n", p->mx[i]);
		if (n < 0 || (size_t)n >= len - o)
			return 0;
		o += (size_t)n;
	}
	return o;
}

int
runner_sts_record_parse(const char *buf, size_t len, struct sts_policy *p)
{
	char head[128], id[STS_ID_MAX + 2];
	const char *nl = memchr(buf, '\n', len);
	size_t pos, hl;
	int mode;
	long long age, exp;

	memset(p, 0, sizeof(*p));
	if (nl == NULL || (hl = (size_t)(nl - buf)) >= sizeof(head))
		return -1;
	memcpy(head, buf, hl);
	head[hl] = '\0';
	if (sscanf(head, "sts1 %33s %d %lld %lld", id, &mode, &age, &exp) !=
		4 ||
	    strlen(id) > STS_ID_MAX || mode < STS_MODE_NONE ||
	    mode > STS_MODE_ENFORCE || age < 0 || age > STS_MAX_AGE_MAX)
		return -1;
	if (strcmp(id, "-") != 0)
		memcpy(p->id, id, strlen(id) + 1); /* <= STS_ID_MAX, checked */
	p->mode = (enum sts_mode)mode;
	p->max_age = age;
	p->expires = exp;
	for (pos = hl + 1; pos < len;) {
		const char *l = buf + pos, *e = memchr(l, '\n', len - pos);
		size_t n = e ? (size_t)(e - l) : len - pos;

		pos += n + 1;
		if (n == 0 || n > 253 || p->nmx >= STS_MX_MAX ||
		    !mx_pattern_ok(l, n))
			return -1;
		memcpy(p->mx[p->nmx], l, n);
		p->mx[p->nmx][n] = '\0';
		p->nmx++;
	}
	return 0;
}
