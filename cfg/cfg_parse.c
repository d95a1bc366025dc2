/*
 * cfg_parse.c - reads a config file into an immutable struct cfg and
 * resolves every fallback once, so that lookups are array indexing.
 *
 * Public: cfg_load(), cfg_parse_buf(), cfg_free(), cfg_path(), cfg_scope(),
 * cfg_scope_name(), cfg_int(), cfg_str(), cfg_time(), cfg_hostport(),
 * cfg_rate(), cfg_weight(), cfg_is_set(), cfg_line().
 * Invariants: a cfg is never modified after cfg_parse_buf() returns; any
 * byte sequence gives either a cfg or a "FILE:LINE: message" error.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cfg_int.h"

#define CFG_MAX_FILE (1024 * 1024)

struct parse {
	struct cfg *cfg;
	const char *name;
	int line;
	char *err;
	size_t errlen;
	int rawline[CFG_NKEYS][CFG_NVAR]; /* of the current scope */
	int gline[CFG_NKEYS]; /* where a global key was set, 0: not set */
};

/* Takes ownership of P: it is freed with the cfg. */
void *
cfg_keep(struct cfg *cfg, void *p)
{
	if (cfg->nallocs == cfg->aallocs) {
		cfg->aallocs = cfg->aallocs ? cfg->aallocs * 2 : 64;
		cfg->allocs = xrealloc(
		    cfg->allocs, cfg->aallocs * sizeof(*cfg->allocs));
	}
	cfg->allocs[cfg->nallocs++] = p;
	return p;
}

/* Records an error "NAME:LINE: message" in P; is -1. */
#define perr(p, ...) \
	(cfg_file_err( \
	     (p)->err, (p)->errlen, (p)->name, (p)->line, __VA_ARGS__), \
	    -1)

/* Copies at most 60 printable bytes of S for quoting in an error. */
static const char *
quote(const char *s, size_t len, char *buf, size_t blen)
{
	size_t n = len < 60 ? len : 60;

	rq_sanitize(buf, blen, s, n);
	if (len > n && strlen(buf) + 4 < blen)
		strcat(buf, "...");
	return buf;
}

/* Finds the key written as NAME; sets the class+1 (0: none) and first. */
static int
key_lookup(const char *name, size_t len, int *cls1, bool *first)
{
	*cls1 = 0;
	*first = false;
	if (len == 16 && strncmp(name, "timeout.iconnect", 16) == 0) {
		*first = true;
		return CFG_T_CONNECT;
	}
	for (int k = 0; k < CFG_NKEYS; k++) {
		const struct cfg_def *d = &cfg_defs[k];
		size_t dl = strlen(d->name);
		const char *rest;
		size_t rlen;

		if (len < dl || strncmp(name, d->name, dl) != 0)
			continue;
		if (len == dl)
			return k;
		if (name[dl] != '.' || !(d->flags & (CF_CLASS | CF_FIRST)))
			continue;
		rest = name + dl;
		rlen = len - dl;
		/* Up to two suffixes: .first and a class, in either order. */
		while (rlen > 0) {
			const char *part = rest + 1;
			const char *dot = memchr(part, '.', rlen - 1);
			size_t plen = dot ? (size_t)(dot - part) : rlen - 1;
			int c;

			if (plen == 5 && strncmp(part, "first", 5) == 0 &&
			    (d->flags & CF_FIRST) && !*first)
				*first = true;
			else if ((d->flags & CF_CLASS) && *cls1 == 0 &&
			    (c = cfg_class_parse(part, plen)) >= 0 &&
			    strncmp(part, cfg_class_name(c), plen) == 0)
				*cls1 = c + 1;
			else
				return -1;
			rest = part + plen;
			rlen -= plen + 1;
		}
		return k;
	}
	return -1;
}

/* Checks a [domain NAME] section name. */
static bool
domain_name_ok(const char *s, size_t len)
{
	if (len == 0 || len > 253)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (!isalnum(ch) && ch != '-' && ch != '.' && ch != '_')
			return false;
		if (ch == '.' && i + 1 < len && s[i + 1] == '.')
			return false;
	}
	return s[len - 1] != '.';
}

/* Starts a new [domain NAME] scope. */
static struct cfg_scope *
scope_new(struct parse *p, const char *name, size_t len)
{
	struct cfg *cfg = p->cfg;
	struct cfg_scope *sc;
	char *lname = xstrndup(name, len);

	for (size_t i = 0; i < len; i++)
		lname[i] = (char)tolower((unsigned char)lname[i]);
	for (size_t i = 0; i < cfg->ndomains; i++) {
		if (strcmp(cfg->domains[i]->name, lname) == 0) {
			(void)perr(p, "duplicate section [domain %s]", lname);
			free(lname);
			return NULL;
		}
	}
	sc = xcalloc(1, sizeof(*sc));
	sc->name = lname;
	cfg->domains = xrealloc(
	    cfg->domains, (cfg->ndomains + 1) * sizeof(*cfg->domains));
	cfg->domains[cfg->ndomains++] = sc;
	memset(p->rawline, 0, sizeof(p->rawline));
	return sc;
}

/* Parses one non-empty, non-comment line into scope *SC. */
static int
parse_line(struct parse *p, const char *s, size_t len, struct cfg_scope **sc)
{
	const char *eq, *key, *val;
	size_t klen, vlen;
	char q[128];
	int k, cls1, var;
	bool first;
	const char *why = NULL;
	struct cfg_val v;

	if (s[0] == '[') {
		const char *name;
		size_t nlen;

		if (s[len - 1] != ']')
			return perr(p, "bad section header: %s",
			    quote(s, len, q, sizeof(q)));
		if (len < 9 || strncmp(s, "[domain", 7) != 0 ||
		    (s[7] != ' ' && s[7] != '\t'))
			return perr(p,
			    "bad section: %s (expected "
			    "[domain NAME])",
			    quote(s, len, q, sizeof(q)));
		name = s + 8;
		nlen = len - 9;
		while (nlen > 0 && (*name == ' ' || *name == '\t')) {
			name++;
			nlen--;
		}
		while (nlen > 0 &&
		    (name[nlen - 1] == ' ' || name[nlen - 1] == '\t'))
			nlen--;
		if (!domain_name_ok(name, nlen))
			return perr(p, "bad domain name in section: %s",
			    quote(s, len, q, sizeof(q)));
		*sc = scope_new(p, name, nlen);
		return *sc ? 0 : -1;
	}
	eq = memchr(s, '=', len);
	if (eq == NULL)
		return perr(p, "expected \"key = value\": %s",
		    quote(s, len, q, sizeof(q)));
	key = s;
	klen = (size_t)(eq - s);
	while (klen > 0 && (key[klen - 1] == ' ' || key[klen - 1] == '\t'))
		klen--;
	val = eq + 1;
	vlen = len - (size_t)(val - s);
	while (vlen > 0 && (*val == ' ' || *val == '\t')) {
		val++;
		vlen--;
	}
	if (klen == 0)
		return perr(p, "missing key before \"=\"");
	k = key_lookup(key, klen, &cls1, &first);
	if (k < 0)
		return perr(
		    p, "unknown key \"%s\"", quote(key, klen, q, sizeof(q)));
	if ((*sc)->name != NULL && !(cfg_defs[k].flags & CF_DOMAIN))
		return perr(p, "%s cannot be set in a [domain] section",
		    cfg_defs[k].name);
	var = CFG_VAR(cls1, first ? 1 : 0);
	if ((*sc)->raw[k][var].set)
		return perr(p, "duplicate key \"%s\" (first set on line %d)",
		    quote(key, klen, q, sizeof(q)), p->rawline[k][var]);
	if (cfg_value_parse(p->cfg, &cfg_defs[k], val, vlen, &v, &why) < 0) {
		char kq[128]; /* the key as written: timeout.iconnect */

		quote(key, klen, kq, sizeof(kq));
		if (strcmp(why, "value out of range") == 0)
			return perr(p,
			    "bad value for %s: \"%s\": out of range"
			    " (%lld..%lld)",
			    kq, quote(val, vlen, q, sizeof(q)),
			    (long long)cfg_defs[k].min,
			    (long long)cfg_defs[k].max);
		return perr(p, "bad value for %s: \"%s\": %s", kq,
		    quote(val, vlen, q, sizeof(q)), why);
	}
	(*sc)->raw[k][var].set = true;
	(*sc)->raw[k][var].line = p->line;
	(*sc)->raw[k][var].v = v;
	p->rawline[k][var] = p->line;
	if ((*sc)->name == NULL)
		p->gline[k] = p->line;
	return 0;
}

/* Parses a default in config syntax; a bad one is a bug in the table. */
static struct cfg_val
def_val(struct cfg *cfg, const struct cfg_def *d, const char *text)
{
	struct cfg_val v;
	const char *why;

	if (cfg_value_parse(cfg, d, text, strlen(text), &v, &why) < 0) {
		fprintf(
		    stderr, "relayq: bad default for %s: %s\n", d->name, why);
		abort();
	}
	return v;
}

/* retry.max below retry.min in scope SC is an error, at the line that
 * set one of them there (retry.max's first; a [domain] section's own
 * line, else the global one). */
static int
retry_check(struct parse *p, const struct cfg_scope *sc)
{
	int64_t lo = sc->eff[CFG_RETRY_MIN][0][0].i;
	int64_t hi = sc->eff[CFG_RETRY_MAX][0][0].i;
	const int keys[2] = { CFG_RETRY_MAX, CFG_RETRY_MIN };

	if (hi >= lo)
		return 0;
	p->line = 0;
	for (int i = 0; i < 2 && p->line == 0; i++)
		if (sc->raw[keys[i]][CFG_VAR(0, 0)].set)
			p->line = sc->raw[keys[i]][CFG_VAR(0, 0)].line;
	for (int i = 0; i < 2 && p->line == 0; i++)
		p->line = p->gline[keys[i]];
	return perr(p, "retry.max (%llds) is less than retry.min (%llds)%s%s%s",
	    (long long)hi, (long long)lo, sc->name ? " in [domain " : "",
	    sc->name ? sc->name : "", sc->name ? "]" : "");
}

/* Fills SC->eff from its raw settings, the global scope and defaults. */
static void
resolve(struct cfg *cfg, struct cfg_scope *sc)
{
	const struct cfg_scope *g = &cfg->global;
	bool dom = sc->name != NULL;

	for (int k = 0; k < CFG_NKEYS; k++) {
		const struct cfg_def *d = &cfg_defs[k];

		for (int c = 0; c < CFG_NCLASS; c++) {
			for (int f = 0; f < 2; f++) {
				const struct cfg_raw *cand[8];
				int n = 0;
				struct cfg_val v;

				if (dom && !(d->flags & CF_DOMAIN)) {
					sc->eff[k][c][f] = g->eff[k][c][f];
					continue;
				}
				if (f && (d->flags & CF_FIRST)) {
					cand[n++] =
					    &sc->raw[k][CFG_VAR(c + 1, 1)];
					cand[n++] = &sc->raw[k][CFG_VAR(0, 1)];
					if (dom) {
						cand[n++] = &g->raw[k][CFG_VAR(
						    c + 1, 1)];
						cand[n++] =
						    &g->raw[k][CFG_VAR(0, 1)];
					}
				}
				cand[n++] = &sc->raw[k][CFG_VAR(c + 1, 0)];
				cand[n++] = &sc->raw[k][CFG_VAR(0, 0)];
				if (dom) {
					cand[n++] =
					    &g->raw[k][CFG_VAR(c + 1, 0)];
					cand[n++] = &g->raw[k][CFG_VAR(0, 0)];
				}
				/* first matching candidate, with the .first
				 * default slotted in before the plain chain */
				{
					int i,
					    nfirst = (f &&
							 (d->flags & CF_FIRST))
					    ? (dom ? 4 : 2)
					    : 0;

					for (i = 0; i < n; i++)
						if (cand[i]->set)
							break;
					if (i < nfirst) {
						v = cand[i]->v;
					} else if (nfirst && d->first_def) {
						v = def_val(
						    cfg, d, d->first_def);
						/* never longer than the
						 * plain value set: connect =
						 * 3s makes iconnect 3s */
						if (i < n && cand[i]->v.i < v.i)
							v = cand[i]->v;
					} else if (i < n) {
						v = cand[i]->v;
					} else if ((d->flags & CF_CLASS) &&
					    d->cls_def[c] != NULL) {
						v = def_val(
						    cfg, d, d->cls_def[c]);
					} else {
						v = def_val(cfg, d, d->def);
					}
				}
				sc->eff[k][c][f] = v;
			}
		}
	}
}

/*
 * The room intake finds in an empty queue of a map of MAP bytes, at
 * worst.  It mirrors queue_room_get() (queue/queue_env.c): a tenth of the map
 * (at least 64 pages when the map allows) is kept in reserve, and pages
 * the map's file has grown to are counted as used, free or not, until
 * it is over half the map; so an emptied queue may show only 0.4 of
 * its map as room.
 */
static uint64_t
map_room_worst(uint64_t map)
{
	uint64_t psize = 4096, maxpg, reserve;
	long ps = sysconf(_SC_PAGESIZE);

	if (ps > 0)
		psize = (uint64_t)ps;
	maxpg = map / psize;
	reserve = maxpg / 10;
	if (reserve < 64)
		reserve = maxpg / 4 < 64 ? maxpg / 4 : 64;
	if (maxpg < reserve + maxpg / 2 + 1)
		return 0;
	return (maxpg - reserve - maxpg / 2) * psize;
}

/*
 * queue_map_size must leave room for a message of max_message_size in
 * an empty queue: intake takes a file only while the room is at least
 * twice its size plus 4 KiB (queue_intake.c, prep_store()), and a map
 * too small for that pauses intake for good (issue 10: a 64m map and a
 * 40 MB drop).  Refused at load with the line of queue_map_size (or of
 * max_message_size), and the smallest map that would do.
 */
static int
map_check(struct parse *p, const struct cfg *cfg)
{
	uint64_t map = (uint64_t)cfg->global.eff[CFG_QUEUE_MAP_SIZE][0][0].i;
	uint64_t msg = (uint64_t)cfg->global.eff[CFG_MAX_MESSAGE_SIZE][0][0].i;
	uint64_t need = 2 * msg + 4096, lo, hi;

	if (map_room_worst(map) >= need)
		return 0;
	/* the smallest map that does, in MiB */
	lo = map / 1048576;
	hi = 4ull * 1024 * 1024; /* 4 TiB, the key's maximum */
	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;

		if (map_room_worst(mid * 1048576) >= need)
			hi = mid;
		else
			lo = mid + 1;
	}
	p->line = p->gline[CFG_QUEUE_MAP_SIZE] ? p->gline[CFG_QUEUE_MAP_SIZE]
					       : p->gline[CFG_MAX_MESSAGE_SIZE];
	if (p->line == 0) {
		snprintf(p->err, p->errlen,
		    "%s: queue_map_size (%llu bytes) is too small for "
		    "max_message_size (%llu bytes): it must be at least %llum",
		    p->name, (unsigned long long)map, (unsigned long long)msg,
		    (unsigned long long)lo);
		return -1;
	}
	return perr(p,
	    "queue_map_size (%llu bytes) is too small for max_message_size "
	    "(%llu bytes): taking in a message needs room for twice its "
	    "size, and an empty queue may show only 0.4 of the map as room "
	    "(a tenth is kept in reserve); queue_map_size must be at least "
	    "%llum, or max_message_size smaller",
	    (unsigned long long)map, (unsigned long long)msg,
	    (unsigned long long)lo);
}

/* Is HOST (a dns_server) a loopback address or "localhost"? */
static bool
host_loopback(const char *host)
{
	struct in_addr a4;
	struct in6_addr a6;

	if (strcasecmp(host, "localhost") == 0)
		return true;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	return inet_pton(AF_INET6, host, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

/*
 * DANE trusts the resolver's AD bit, which means nothing when it comes
 * over a network: `tls = dane` or `dane-only` (anywhere) with a
 * dns_server that is not on loopback is refused unless
 * dnssec_trust_remote = yes or dnssec = validate (relayq validates).
 */
static int
dane_check(struct parse *p, const struct cfg *cfg)
{
	const struct cfg_hostport *dns =
	    cfg->global.eff[CFG_DNS_SERVER][0][0].hp;
	const struct cfg_scope *sc = &cfg->global;
	size_t i = 0;

	if (dns == NULL || dns->host[0] == '\0' || host_loopback(dns->host) ||
	    cfg->global.eff[CFG_DNSSEC_TRUST_REMOTE][0][0].i ||
	    strcasecmp(cfg->global.eff[CFG_DNSSEC][0][0].s, "validate") == 0)
		return 0;
	do {
		if (sc->eff[CFG_TLS][0][0].i >= CFG_TLS_DANE) {
			p->line = p->gline[CFG_DNS_SERVER];
			return perr(p,
			    "tls = %s%s%s trusts the AD bit of the resolver, "
			    "but "
			    "dns_server %s is not on loopback (run a "
			    "validating "
			    "resolver on this host, or set dnssec_trust_remote "
			    "= yes)",
			    cfg_tls_name(
				(enum cfg_tls)sc->eff[CFG_TLS][0][0].i),
			    sc == &cfg->global ? "" : " for ",
			    sc == &cfg->global ? "" : sc->name, dns->host);
		}
		sc = i < cfg->ndomains ? cfg->domains[i] : NULL;
		i++;
	} while (sc != NULL);
	return 0;
}

static int
scope_cmp(const void *a, const void *b)
{
	const struct cfg_scope *const *x = a, *const *y = b;

	return strcmp((*x)->name, (*y)->name);
}

/* Parses config text BUF of LEN bytes; see cfg.h. */
enum cfg_result
cfg_parse_buf(const char *name, const char *buf, size_t len, struct cfg **out,
    char *err, size_t errlen)
{
	struct parse p;
	struct cfg *cfg = xcalloc(1, sizeof(*cfg));
	struct cfg_scope *sc = &cfg->global;
	struct cfg_lines it = { name, buf, len, err, errlen, 0, 0 };
	const char *line;
	size_t llen;
	enum cfg_lines_result lr;

	memset(&p, 0, sizeof(p));
	p.cfg = cfg;
	p.name = name;
	p.err = err;
	p.errlen = errlen;
	cfg->path = xstrdup(name);
	*out = NULL;
	while ((lr = cfg_lines_next(&it, &line, &llen)) == CFG_LINES_OK) {
		p.line = it.lno;
		if (parse_line(&p, line, llen, &sc) < 0)
			goto fail;
	}
	if (lr == CFG_LINES_BAD)
		goto fail;
	if (cfg->ndomains > 1)
		qsort(cfg->domains, cfg->ndomains, sizeof(*cfg->domains),
		    scope_cmp);
	resolve(cfg, &cfg->global);
	/* hostname, origin, postmaster, alias_file, helo_name derived */
	cfg_ident_resolve(cfg);
	if (retry_check(&p, &cfg->global) < 0)
		goto fail;
	if (map_check(&p, cfg) < 0)
		goto fail;
	for (size_t i = 0; i < cfg->ndomains; i++) {
		resolve(cfg, cfg->domains[i]);
		if (retry_check(&p, cfg->domains[i]) < 0)
			goto fail;
	}
	cfg_ident_scopes(cfg);
	if (dane_check(&p, cfg) < 0)
		goto fail;
	*out = cfg;
	return CFG_OK;
fail:
	cfg_free(cfg);
	return CFG_ERR_SYNTAX;
}

/* Loads and parses the config file PATH; see cfg.h. */
enum cfg_result
cfg_load(const char *path, struct cfg **out, char *err, size_t errlen)
{
	struct stat st;
	char *buf;
	ssize_t n;
	size_t got = 0;
	int fd;
	enum cfg_result r;

	*out = NULL;
	fd = open(
	    path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO: no wait */
	if (fd < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return CFG_ERR_FILE;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s: not a regular file", path);
		close(fd);
		return CFG_ERR_FILE;
	}
	if (st.st_size > CFG_MAX_FILE) {
		snprintf(err, errlen, "%s: file too large (over %d bytes)",
		    path, CFG_MAX_FILE);
		close(fd);
		return CFG_ERR_FILE;
	}
	buf = xmalloc((size_t)st.st_size + 1);
	while (got < (size_t)st.st_size) {
		n = read(fd, buf + got, (size_t)st.st_size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	r = cfg_parse_buf(path, buf, got, out, err, errlen);
	free(buf);
	return r;
}

/* Frees a cfg. */
void
cfg_free(struct cfg *cfg)
{
	if (cfg == NULL)
		return;
	cfg_files_free(cfg->files);
	cfg_local_release(cfg->local);
	for (size_t i = 0; i < cfg->nallocs; i++)
		free(cfg->allocs[i]);
	for (size_t i = 0; i < cfg->ndomains; i++) {
		free(cfg->domains[i]->name);
		free(cfg->domains[i]);
	}
	free(cfg->domains);
	free(cfg->allocs);
	free(cfg->path);
	free(cfg);
}

const char *
cfg_path(const struct cfg *cfg)
{
	return cfg->path;
}

/* Finds the exact section NAME of LEN bytes (case-folded), or NULL. */
static const struct cfg_scope *
scope_find(const struct cfg *cfg, const char *name, size_t len)
{
	size_t lo = 0, hi = cfg->ndomains;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		const char *sn = cfg->domains[mid]->name;
		int r = strncasecmp(name, sn, len);

		if (r == 0 && sn[len] != '\0')
			r = -1;
		if (r == 0)
			return cfg->domains[mid];
		if (r < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

/* Returns the scope for DOMAIN; see cfg.h. */
const struct cfg_scope *
cfg_scope(const struct cfg *cfg, const char *domain)
{
	const struct cfg_scope *sc;
	size_t len;

	if (domain == NULL || cfg->ndomains == 0)
		return &cfg->global;
	len = strlen(domain);
	while (len > 0 && domain[len - 1] == '.')
		len--;
	if ((sc = scope_find(cfg, domain, len)) != NULL)
		return sc;
	for (size_t i = 0; i < len; i++) {
		if (domain[i] == '.' &&
		    (sc = scope_find(cfg, domain + i, len - i)) != NULL)
			return sc;
	}
	return &cfg->global;
}

const char *
cfg_scope_name(const struct cfg_scope *sc)
{
	return sc->name;
}

int64_t
cfg_int(const struct cfg_scope *sc, enum cfg_key k)
{
	return sc->eff[k][CFG_NORMAL][0].i;
}

const char *
cfg_str(const struct cfg_scope *sc, enum cfg_key k)
{
	const char *s = sc->eff[k][CFG_NORMAL][0].s;

	return s ? s : "";
}

int64_t
cfg_time(
    const struct cfg_scope *sc, enum cfg_key k, enum cfg_class c, bool first)
{
	if ((unsigned)c >= CFG_NCLASS)
		c = CFG_NORMAL;
	return sc->eff[k][c][first ? 1 : 0].i;
}

const struct cfg_hostport *
cfg_hostport(const struct cfg_scope *sc, enum cfg_key k)
{
	static const struct cfg_hostport none;
	const struct cfg_hostport *hp = sc->eff[k][CFG_NORMAL][0].hp;

	return hp ? hp : &none;
}

struct cfg_rate
cfg_rate(const struct cfg_scope *sc, enum cfg_key k)
{
	int64_t v = sc->eff[k][CFG_NORMAL][0].i;
	struct cfg_rate r = { (uint32_t)(v >> 32), (uint32_t)v };

	return r;
}

unsigned
cfg_weight(const struct cfg_scope *sc, enum cfg_class c)
{
	int64_t v = sc->eff[CFG_PRIORITY_WEIGHTS][CFG_NORMAL][0].i;

	if (c > CFG_NONURGENT)
		c = CFG_URGENT;
	return (unsigned)((v >> (16 * c)) & 0xffff);
}

bool
cfg_is_set(const struct cfg_scope *sc, enum cfg_key k)
{
	return sc->raw[k][CFG_VAR(0, 0)].set;
}

int
cfg_line(const struct cfg *cfg, const struct cfg_scope *sc, enum cfg_key k)
{
	if (sc->raw[k][CFG_VAR(0, 0)].set)
		return sc->raw[k][CFG_VAR(0, 0)].line;
	if (cfg->global.raw[k][CFG_VAR(0, 0)].set)
		return cfg->global.raw[k][CFG_VAR(0, 0)].line;
	return 0;
}
