/*
 * cfg_interval.c - pure parsers for the value types of the config file:
 * sendmail intervals ("3d22h4s"), sizes ("50m"), integers, booleans, TLS
 * levels, host:port, rates ("100/s") and priority weights.
 *
 * Public: cfg_interval_parse(), cfg_interval_format(), cfg_class_parse(),
 * cfg_class_name(), cfg_hostport_parse(), cfg_hostport_format();
 * private: cfg_value_parse().
 * Every parser takes a buffer and a length, never reads past it, and
 * rejects overflow, negative numbers, unknown units and trailing garbage.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cfg_int.h"

static const char *const class_names[CFG_NCLASS] = { "urgent", "normal",
	"non-urgent", "dsn" };

/* Returns the name of class C. */
const char *
cfg_class_name(enum cfg_class c)
{
	if ((unsigned)c >= CFG_NCLASS)
		return "normal";
	return class_names[c];
}

/* Parses a class name or a Priority: header value, ignoring case. */
int
cfg_class_parse(const char *s, size_t len)
{
	while (len > 0 && (*s == ' ' || *s == '\t')) {
		s++;
		len--;
	}
	while (len > 0 &&
	    (s[len - 1] == ' ' || s[len - 1] == '\t' || s[len - 1] == '\r' ||
		s[len - 1] == '\n'))
		len--;
	for (int c = 0; c < CFG_NCLASS; c++) {
		if (strlen(class_names[c]) == len &&
		    strncasecmp(s, class_names[c], len) == 0)
			return c;
	}
	return -1;
}

/* Returns the seconds of interval unit CH, or 0 if it is not one. */
static int64_t
unit_secs(char ch)
{
	switch (tolower((unsigned char)ch)) {
	case 's':
		return 1;
	case 'm':
		return 60;
	case 'h':
		return 3600;
	case 'd':
		return 86400;
	case 'w':
		return 7 * 86400;
	default:
		return 0;
	}
}

/* Adds the decimal digits at S[*I..LEN) to *N (advancing *I past
 * them); false when the number overflows. */
static bool
digits_read(const char *s, size_t len, size_t *i, int64_t *n)
{
	for (; *i < len && isdigit((unsigned char)s[*i]); (*i)++)
		if (__builtin_mul_overflow(*n, 10, n) ||
		    __builtin_add_overflow(*n, s[*i] - '0', n))
			return false;
	return true;
}

/* Parses an interval in sendmail's syntax; see cfg.h. */
int
cfg_interval_parse(const char *s, size_t len, int64_t defunit, bool allow_now,
    int64_t *secs, const char **why)
{
	int64_t total = 0;
	size_t i = 0;
	int parts = 0;

	if (len == 0) {
		*why = "empty interval";
		return -1;
	}
	if (len == 3 && strncasecmp(s, "now", 3) == 0) {
		if (!allow_now) {
			*why = "\"now\" is not allowed here";
			return -1;
		}
		*secs = 0;
		return 0;
	}
	if (s[0] == '-') {
		*why = "negative interval";
		return -1;
	}
	while (i < len) {
		int64_t n = 0, unit, part;

		if (!isdigit((unsigned char)s[i])) {
			*why = parts ? "trailing garbage"
				     : "interval must start with a number";
			return -1;
		}
		if (!digits_read(s, len, &i, &n)) {
			*why = "interval overflows";
			return -1;
		}
		if (i == len) {
			if (parts > 0) {
				*why = "number without a unit";
				return -1;
			}
			unit = defunit;
		} else {
			unit = unit_secs(s[i]);
			if (unit == 0) {
				*why = isalpha((unsigned char)s[i])
				    ? "unknown unit (use s, m, h, d or w)"
				    : "trailing garbage";
				return -1;
			}
			i++;
		}
		if (__builtin_mul_overflow(n, unit, &part) ||
		    __builtin_add_overflow(total, part, &total)) {
			*why = "interval overflows";
			return -1;
		}
		parts++;
	}
	*secs = total;
	return 0;
}

/* Formats SECS as the shortest chain of units ("1d2h", "0s"). */
void
cfg_interval_format(int64_t secs, char *buf, size_t len)
{
	static const struct {
		char u;
		int64_t n;
	} units[] = { { 'w', 604800 }, { 'd', 86400 }, { 'h', 3600 },
		{ 'm', 60 }, { 's', 1 } };
	size_t off = 0;

	if (len == 0)
		return;
	buf[0] = '\0';
	if (secs <= 0) {
		snprintf(buf, len, "0s");
		return;
	}
	for (size_t k = 0; k < sizeof(units) / sizeof(units[0]); k++) {
		if (secs >= units[k].n) {
			int w = snprintf(buf + off, len - off, "%lld%c",
			    (long long)(secs / units[k].n), units[k].u);
			if (w < 0 || (size_t)w >= len - off)
				return;
			off += (size_t)w;
			secs %= units[k].n;
		}
	}
}

/* Parses an unsigned decimal integer, the whole of S. */
static int
parse_uint(
    const char *s, size_t len, int64_t *out, size_t *used, const char **why)
{
	int64_t n = 0;
	size_t i = 0;

	if (len > 0 && s[0] == '-') {
		*why = "negative value";
		return -1;
	}
	if (len > 0 && s[0] == '+') {
		*why = "not a number";
		return -1;
	}
	if (!digits_read(s, len, &i, &n)) {
		*why = "number overflows";
		return -1;
	}
	if (i == 0) {
		*why = "not a number";
		return -1;
	}
	*out = n;
	*used = i;
	return 0;
}

/* Parses a size: a number with an optional k/m/g/t suffix (binary). */
static int
parse_size(const char *s, size_t len, int64_t *out, const char **why)
{
	int64_t n, mult = 1;
	size_t used;

	if (parse_uint(s, len, &n, &used, why) < 0)
		return -1;
	s += used;
	len -= used;
	if (len > 0) {
		switch (tolower((unsigned char)s[0])) {
		case 'k':
			mult = 1024LL;
			break;
		case 'm':
			mult = 1024LL * 1024;
			break;
		case 'g':
			mult = 1024LL * 1024 * 1024;
			break;
		case 't':
			mult = 1024LL * 1024 * 1024 * 1024;
			break;
		case 'b':
			break;
		default:
			*why = isalpha((unsigned char)s[0])
			    ? "unknown size unit (use k, m, g or t)"
			    : "trailing garbage";
			return -1;
		}
		if (tolower((unsigned char)s[0]) != 'b') {
			s++;
			len--;
			if (len >= 2 && strncasecmp(s, "ib", 2) == 0) {
				s += 2;
				len -= 2;
			} else if (len >= 1 &&
			    tolower((unsigned char)*s) == 'b') {
				s++;
				len--;
			}
		} else {
			s++;
			len--;
		}
		if (len > 0) {
			*why = "trailing garbage";
			return -1;
		}
	}
	if (__builtin_mul_overflow(n, mult, out)) {
		*why = "size overflows";
		return -1;
	}
	return 0;
}

/* Parses host:port, [host]:port or [ipv6]:port into HP. */
static int
parse_hostport(
    const char *s, size_t len, struct cfg_hostport *hp, const char **why)
{
	const char *host, *rest;
	size_t hlen, rlen;

	memset(hp, 0, sizeof(*hp));
	if (len == 0)
		return 0;
	if (s[0] == '[') {
		const char *close = memchr(s, ']', len);

		if (close == NULL) {
			*why = "missing ]";
			return -1;
		}
		host = s + 1;
		hlen = (size_t)(close - host);
		if (hlen > 5 && strncasecmp(host, "ipv6:", 5) == 0) {
			host += 5;
			hlen -= 5;
		}
		hp->no_mx = true;
		rest = close + 1;
		rlen = len - (size_t)(rest - s);
	} else {
		const char *colon = memchr(s, ':', len);

		host = s;
		hlen = colon ? (size_t)(colon - s) : len;
		rest = s + hlen;
		rlen = len - hlen;
	}
	if (hlen == 0 || hlen >= sizeof(hp->host)) {
		*why = hlen ? "host name too long" : "empty host name";
		return -1;
	}
	for (size_t i = 0; i < hlen; i++) {
		unsigned char ch = (unsigned char)host[i];

		if (!isalnum(ch) && ch != '.' && ch != '-' && ch != '_' &&
		    !(hp->no_mx && ch == ':')) {
			*why = "bad character in host name";
			return -1;
		}
	}
	memcpy(hp->host, host, hlen);
	hp->host[hlen] = '\0';
	if (rlen > 0) {
		int64_t port;
		size_t used;

		if (rest[0] != ':') {
			*why = "trailing garbage";
			return -1;
		}
		if (parse_uint(rest + 1, rlen - 1, &port, &used, why) < 0)
			return -1;
		if (used != rlen - 1) {
			*why = "trailing garbage after port";
			return -1;
		}
		if (port < 1 || port > 65535) {
			*why = "port out of range (1..65535)";
			return -1;
		}
		hp->port = (uint16_t)port;
	}
	return 0;
}

/* Parses host:port or [host]:port; see cfg.h. */
int
cfg_hostport_parse(
    const char *s, size_t len, struct cfg_hostport *hp, const char **why)
{
	return parse_hostport(s, len, hp, why);
}

/* Formats HP as written: "[host]:port", "host:port", "host". */
void
cfg_hostport_format(const struct cfg_hostport *hp, char *buf, size_t len)
{
	char port[8] = "";

	if (hp->port != 0)
		snprintf(port, sizeof(port), ":%u", (unsigned)hp->port);
	snprintf(buf, len, "%s%s%s%s", hp->no_mx ? "[" : "", hp->host,
	    hp->no_mx ? "]" : "", port);
}

/* Parses a rate "N/unit" or "N/interval"; "" and "0" are unlimited. */
static int
parse_rate(const char *s, size_t len, int64_t *packed, const char **why)
{
	int64_t n, per;
	size_t used;
	const char *slash;

	*packed = 0;
	if (len == 0 || (len == 1 && s[0] == '0'))
		return 0;
	if (parse_uint(s, len, &n, &used, why) < 0)
		return -1;
	slash = s + used;
	if (used == len || *slash != '/') {
		*why = "expected N/unit, as 100/s";
		return -1;
	}
	slash++;
	len -= used + 1;
	if (len == 1 && unit_secs(slash[0]) != 0)
		per = unit_secs(slash[0]);
	else if (len == 1 && isalpha((unsigned char)slash[0])) {
		*why = "unknown unit (use s, m, h, d or w)";
		return -1;
	} else if (cfg_interval_parse(slash, len, 1, false, &per, why) < 0)
		return -1;
	if (n > UINT32_MAX || per < 1 || per > UINT32_MAX) {
		*why = "rate out of range";
		return -1;
	}
	*packed = (n << 32) | per;
	return 0;
}

/* Parses "urgent=8 normal=4 non-urgent=1" (blanks or commas between). */
static int
parse_weights(const char *s, size_t len, int64_t *packed, const char **why)
{
	int64_t w[3] = { 8, 4, 1 };
	size_t i = 0;

	while (i < len) {
		size_t start, nlen, used;
		int c;
		int64_t n;

		while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == ','))
			i++;
		if (i == len)
			break;
		start = i;
		while (i < len && s[i] != '=' && s[i] != ' ' && s[i] != ',')
			i++;
		nlen = i - start;
		c = cfg_class_parse(s + start, nlen);
		if (c < 0 || c == CFG_DSN) {
			*why = "expected urgent=N normal=N non-urgent=N";
			return -1;
		}
		if (i == len || s[i] != '=') {
			*why = "expected CLASS=N";
			return -1;
		}
		i++;
		if (parse_uint(s + i, len - i, &n, &used, why) < 0)
			return -1;
		if (n > 1000) {
			*why = "weight out of range (0..1000)";
			return -1;
		}
		i += used;
		if (i < len && s[i] != ' ' && s[i] != '\t' && s[i] != ',') {
			*why = "trailing garbage";
			return -1;
		}
		w[c] = n;
	}
	if (w[0] + w[1] + w[2] == 0) {
		*why = "all weights are zero";
		return -1;
	}
	*packed = w[0] | (w[1] << 16) | (w[2] << 32);
	return 0;
}

/* Parses TEXT as a value of DEF into V; see cfg_int.h. */
int
cfg_value_parse(struct cfg *cfg, const struct cfg_def *def, const char *text,
    size_t len, struct cfg_val *v, const char **why)
{
	size_t used;

	memset(v, 0, sizeof(*v));
	for (size_t i = 0; i < len; i++) {
		if (text[i] == '\0' || text[i] == '\r' || text[i] == '\n') {
			*why = "control character in value";
			return -1;
		}
	}
	switch (def->type) {
	case CT_STR:
	case CT_PATH:
		if (def->type == CT_PATH && len > 0 && text[0] != '/' &&
		    !((def->flags & CF_DASH) && len == 1 && text[0] == '-')) {
			*why = "not an absolute path";
			return -1;
		}
		if (len > 4096) {
			*why = "value too long";
			return -1;
		}
		if (cfg_checks[def - cfg_defs] != NULL &&
		    cfg_checks[def - cfg_defs](text, len, why) < 0)
			return -1;
		v->s = cfg_keep(cfg, xstrndup(text, len));
		return 0;
	case CT_INT:
		if (parse_uint(text, len, &v->i, &used, why) < 0)
			return -1;
		if (used != len) {
			*why = "trailing garbage";
			return -1;
		}
		break;
	case CT_SIZE:
		if (parse_size(text, len, &v->i, why) < 0)
			return -1;
		break;
	case CT_BOOL:
		if ((len == 3 && strncasecmp(text, "yes", 3) == 0) ||
		    (len == 4 && strncasecmp(text, "true", 4) == 0) ||
		    (len == 2 && strncasecmp(text, "on", 2) == 0) ||
		    (len == 1 && text[0] == '1'))
			v->i = 1;
		else if ((len == 2 && strncasecmp(text, "no", 2) == 0) ||
		    (len == 5 && strncasecmp(text, "false", 5) == 0) ||
		    (len == 3 && strncasecmp(text, "off", 3) == 0) ||
		    (len == 1 && text[0] == '0'))
			v->i = 0;
		else {
			*why = "expected yes or no";
			return -1;
		}
		return 0;
	case CT_TIME:
		if (cfg_interval_parse(text, len, def->unit,
			(def->flags & CF_NOW) != 0, &v->i, why) < 0)
			return -1;
		break;
	case CT_FACILITY: {
		int f = log_facility_parse(text, len);

		if (f < 0) {
			*why =
			    "expected mail, daemon, user or local0 to local7";
			return -1;
		}
		v->i = f;
		return 0;
	}
	case CT_TLS: {
		static const char *const lv[] = { "none", "may", "encrypt",
			"verify", NULL, "dane", "dane-only" };

		for (int k = 0; k < 7; k++) {
			if (lv[k] != NULL && strlen(lv[k]) == len &&
			    strncasecmp(text, lv[k], len) == 0) {
				v->i = k;
				return 0;
			}
		}
		*why = "expected none, may, encrypt, verify, dane or dane-only";
		return -1;
	}
	case CT_HOSTPORT: {
		struct cfg_hostport *hp = cfg_keep(cfg, xmalloc(sizeof(*hp)));

		if (parse_hostport(text, len, hp, why) < 0)
			return -1;
		v->hp = hp;
		v->s = cfg_keep(cfg, xstrndup(text, len));
		return 0;
	}
	case CT_RATE:
		return parse_rate(text, len, &v->i, why);
	case CT_WEIGHTS:
		return parse_weights(text, len, &v->i, why);
	}
	if (def->min != 0 || def->max != 0) {
		if (v->i < def->min || v->i > def->max) {
			*why = "value out of range";
			return -1;
		}
	}
	return 0;
}
