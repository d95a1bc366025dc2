/*
 * cfg_route.c - where mail goes and how it logs in: the route of a
 * (recipient domain, sender) pair, the credentials of a relay, the SASL
 * mechanisms to try, the effective TLS level, implicit TLS, the
 * fallback relays and the pinned fingerprints; the checks of the list
 * values (auth_mechanisms, tls_fingerprint, fallback_relay); and
 * check-config's lines for credentials and routes.
 *
 * Public: cfg_route_get(), cfg_auth_lookup(), cfg_fallback_relays(),
 * cfg_auth_mechs(), cfg_sasl_name(), cfg_tls_level(), cfg_tls_name(),
 * cfg_tls_wrapper(), cfg_fingerprints().  cfg-private:
 * cfg_sender_route(), cfg_route_dump(), cfg_checks[] (the checks of
 * auth_mechanisms, tls_fingerprint and fallback_relay).
 *
 * Precedence (relayq.conf(5)): the relayhost of the recipient domain's
 * [domain] section when the section sets one (empty: MX), then the
 * sender's sender_relayhost entry, then the global relayhost, then MX.
 * Credentials: by sender first, then by the relay as written; never for
 * MX hosts.  check-config prints no secret: passwords and the arguments
 * of token commands are shown as ********.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cfg_int.h"

static const char *const sasl_names[] = { "", "PLAIN", "LOGIN", "XOAUTH2",
	"OAUTHBEARER" };

const char *
cfg_sasl_name(enum cfg_sasl m)
{
	return (unsigned)m <= CFG_SASL_OAUTHBEARER ? sasl_names[m] : "";
}

const char *
cfg_tls_name(enum cfg_tls t)
{
	static const char *const names[] = { "none", "may", "encrypt", "verify",
		"fingerprint", "dane", "dane-only" };

	return (unsigned)t <= CFG_TLS_DANE_ONLY ? names[t] : "?";
}

/* ---- list values: words separated by blanks or commas ---- */

/* Takes the next word of S (LEN bytes) from *POS; false at the end. */
static bool
word_next(const char *s, size_t len, size_t *pos, const char **w, size_t *wlen)
{
	size_t i = *pos;

	while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == ','))
		i++;
	if (i == len) {
		*pos = i;
		return false;
	}
	*w = s + i;
	while (i < len && s[i] != ' ' && s[i] != '\t' && s[i] != ',')
		i++;
	*wlen = (size_t)(s + i - *w);
	*pos = i;
	return true;
}

/* The mechanism named W (any case), or 0. */
static enum cfg_sasl
sasl_parse(const char *w, size_t n)
{
	for (int m = CFG_SASL_PLAIN; m <= CFG_SASL_OAUTHBEARER; m++)
		if (strlen(sasl_names[m]) == n &&
		    strncasecmp(w, sasl_names[m], n) == 0)
			return (enum cfg_sasl)m;
	return 0;
}

static int
check_mechanisms(const char *s, size_t len, const char **why)
{
	size_t pos = 0, n, count = 0;
	const char *w;

	while (word_next(s, len, &pos, &w, &n)) {
		if (sasl_parse(w, n) == 0) {
			*why = "unknown mechanism (use plain, login, xoauth2, "
			       "oauthbearer)";
			return -1;
		}
		count++;
	}
	if (count == 0) {
		*why = "expected one or more of plain, login, xoauth2, "
		       "oauthbearer";
		return -1;
	}
	return 0;
}

/* Parses "SHA256:hex" (hex digits, ':' between bytes allowed) into
 * OUT; 0 or -1. */
static int
fingerprint_parse(const char *w, size_t n, unsigned char out[32])
{
	size_t i, nib = 0;

	if (n < 7 || strncasecmp(w, "sha256:", 7) != 0)
		return -1;
	for (i = 7; i < n; i++) {
		int c = tolower((unsigned char)w[i]), v;

		if (c == ':')
			continue;
		if (c >= '0' && c <= '9')
			v = c - '0';
		else if (c >= 'a' && c <= 'f')
			v = c - 'a' + 10;
		else
			return -1;
		if (nib >= 64)
			return -1;
		if (nib % 2 == 0)
			out[nib / 2] = (unsigned char)(v << 4);
		else
			out[nib / 2] |= (unsigned char)v;
		nib++;
	}
	return nib == 64 ? 0 : -1;
}

static int
check_fingerprints(const char *s, size_t len, const char **why)
{
	size_t pos = 0, n, count = 0;
	const char *w;
	unsigned char d[32];

	while (word_next(s, len, &pos, &w, &n)) {
		if (fingerprint_parse(w, n, d) < 0) {
			*why = "expected SHA256: and 64 hex digits";
			return -1;
		}
		if (++count > CFG_FINGERPRINT_MAX) {
			*why = "too many fingerprints (at most 16)";
			return -1;
		}
	}
	return 0;
}

static int
check_relays(const char *s, size_t len, const char **why)
{
	size_t pos = 0, n, count = 0;
	const char *w;
	struct cfg_hostport hp;

	while (word_next(s, len, &pos, &w, &n)) {
		if (cfg_hostport_parse(w, n, &hp, why) < 0)
			return -1;
		if (++count > CFG_FALLBACK_MAX) {
			*why = "too many relays (at most 16)";
			return -1;
		}
	}
	return 0;
}

/* `dnssec`: "ad" (trust the AD bit of the resolver) or "validate"
 * (validate in-process with libunbound). */
static int
check_dnssec(const char *s, size_t len, const char **why)
{
	if ((len == 2 && strncasecmp(s, "ad", 2) == 0) ||
	    (len == 8 && strncasecmp(s, "validate", 8) == 0))
		return 0;
	*why = "expected ad or validate";
	return -1;
}

int (*const cfg_checks[CFG_NKEYS])(const char *, size_t, const char **) = {
	[CFG_DNSSEC] = check_dnssec,
	[CFG_AUTH_MECHANISMS] = check_mechanisms,
	[CFG_TLS_FINGERPRINT] = check_fingerprints,
	[CFG_FALLBACK_RELAY] = check_relays,
	/* cluster (cfg_cluster.c) */
	[CFG_CLUSTER_REDIS] = cfg_cluster_check_redis,
	[CFG_CLUSTER_NAME] = cfg_cluster_check_name,
	[CFG_CLUSTER_NODE] = cfg_cluster_check_name,
	[CFG_CLUSTER_FALLBACK] = cfg_cluster_check_fallback,
	[CFG_HOSTNAME] = cfg_ident_check_domain,
	[CFG_USER] = cfg_ident_check_user,
	[CFG_ORIGIN] = cfg_ident_check_domain,
	[CFG_HELO_NAME] = cfg_ident_check_helo,
	[CFG_POSTMASTER] = cfg_ident_check_addr,
	[CFG_LOCAL_FALLBACK] = cfg_ident_check_addr,
};

size_t
cfg_fingerprints(
    const struct cfg_scope *sc, unsigned char (*out)[32], size_t max)
{
	const char *s = cfg_str(sc, CFG_TLS_FINGERPRINT), *w;
	size_t pos = 0, n, count = 0, len = strlen(s);

	while (count < max && word_next(s, len, &pos, &w, &n))
		if (fingerprint_parse(w, n, out[count]) == 0)
			count++;
	return count;
}

size_t
cfg_fallback_relays(
    const struct cfg_scope *sc, struct cfg_hostport *out, size_t max)
{
	const char *s = cfg_str(sc, CFG_FALLBACK_RELAY), *w, *why;
	size_t pos = 0, n, count = 0, len = strlen(s);

	while (count < max && word_next(s, len, &pos, &w, &n)) {
		if (cfg_hostport_parse(w, n, &out[count], &why) < 0)
			continue;
		if (out[count].port == 0)
			out[count].port = (uint16_t)cfg_int(sc, CFG_SMTP_PORT);
		count++;
	}
	return count;
}

/* ---- TLS and SASL of a connection ---- */

bool
cfg_tls_wrapper(const struct cfg_scope *sc, uint16_t port)
{
	return cfg_int(sc, CFG_TLS_WRAPPER) != 0 || port == 465;
}

enum cfg_tls
cfg_tls_level(
    const struct cfg_scope *sc, const struct cfg_auth *auth, uint16_t port)
{
	enum cfg_tls t = (enum cfg_tls)cfg_int(sc, CFG_TLS);

	if (cfg_str(sc, CFG_TLS_FINGERPRINT)[0] != '\0')
		return CFG_TLS_PINNED;
	if (t < CFG_TLS_ENCRYPT &&
	    ((auth != NULL && !cfg_int(sc, CFG_AUTH_PLAINTEXT)) ||
		cfg_tls_wrapper(sc, port)))
		t = CFG_TLS_ENCRYPT;
	return t;
}

size_t
cfg_auth_mechs(const struct cfg_scope *sc, const struct cfg_auth *auth,
    enum cfg_sasl out[CFG_SASL_MAX])
{
	const char *s = cfg_str(sc, CFG_AUTH_MECHANISMS), *w;
	size_t pos = 0, n, count = 0, len = strlen(s);
	bool token = auth != NULL && auth->argv != NULL;

	while (count < CFG_SASL_MAX && word_next(s, len, &pos, &w, &n)) {
		enum cfg_sasl m = sasl_parse(w, n);
		bool fits = token
		    ? (m == CFG_SASL_XOAUTH2 || m == CFG_SASL_OAUTHBEARER)
		    : (m == CFG_SASL_PLAIN || m == CFG_SASL_LOGIN);
		size_t i;

		for (i = 0; i < count && out[i] != m; i++)
			;
		if (fits && i == count)
			out[count++] = m;
	}
	if (count > 0)
		return count;
	out[0] = token ? CFG_SASL_OAUTHBEARER : CFG_SASL_PLAIN;
	out[1] = token ? CFG_SASL_XOAUTH2 : CFG_SASL_LOGIN;
	return 2;
}

/* ---- lookups ---- */

/* The auth_file entry whose key is KEY, or NULL. */
static const struct cfg_auth *
auth_find(const struct cfg_files *f, const char *key)
{
	size_t lo = 0, hi = f->nauth;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int r = strcmp(key, f->auth_sorted[mid]->key);

		if (r == 0)
			return f->auth_sorted[mid];
		if (r < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

/* Fills KEYS[0..1] with SENDER's lookup keys (lowercase): the address,
 * then "@domain"; "<>" for the null sender.  Returns how many. */
static size_t
sender_keys(const char *sender, char keys[2][300])
{
	const char *at;
	size_t len = strlen(sender);

	if (len == 0) {
		strcpy(keys[0], "<>");
		return 1;
	}
	if (cfg_files_sender_key(sender, len, keys[0], sizeof(keys[0])) < 0)
		return 0;
	at = strrchr(keys[0], '@');
	if (at == keys[0])
		return 1;
	snprintf(keys[1], sizeof(keys[1]), "%s", at);
	return 2;
}

const struct cfg_sender_route *
cfg_sender_route(const struct cfg *cfg, const char *sender)
{
	const struct cfg_files *f = cfg->files;
	char keys[2][300];
	size_t nk;

	if (f == NULL || f->nsenders == 0 || sender == NULL)
		return NULL;
	nk = sender_keys(sender, keys);
	for (size_t k = 0; k < nk; k++) {
		size_t lo = 0, hi = f->nsenders;

		while (lo < hi) {
			size_t mid = (lo + hi) / 2;
			int r = strcmp(keys[k], f->senders[mid].key);

			if (r == 0)
				return &f->senders[mid];
			if (r < 0)
				hi = mid;
			else
				lo = mid + 1;
		}
	}
	return NULL;
}

const struct cfg_auth *
cfg_auth_lookup(const struct cfg *cfg, const char *sender,
    const struct cfg_hostport *relay, uint16_t port)
{
	const struct cfg_files *f = cfg->files;
	const struct cfg_auth *a;
	char keys[2][300], host[256], probe[300];
	size_t nk, i;

	if (f == NULL || f->nauth == 0)
		return NULL;
	if (sender != NULL) {
		nk = sender_keys(sender, keys);
		for (i = 0; i < nk; i++)
			if ((a = auth_find(f, keys[i])) != NULL)
				return a;
	}
	if (relay == NULL || relay->host[0] == '\0')
		return NULL;
	for (i = 0; relay->host[i] != '\0' && i + 1 < sizeof(host); i++)
		host[i] = (char)tolower((unsigned char)relay->host[i]);
	host[i] = '\0';
	/* [host]:port, [host], host:port, host; unbracketed first when the
	 * relay was written without brackets. */
	for (i = 0; i < 4; i++) {
		bool br = (i < 2) == relay->no_mx, withport = i % 2 == 0;

		snprintf(probe, sizeof(probe), "%s%s%s", br ? "[" : "", host,
		    br ? "]" : "");
		if (withport)
			snprintf(probe + strlen(probe),
			    sizeof(probe) - strlen(probe), ":%u",
			    (unsigned)port);
		if ((a = auth_find(f, probe)) != NULL)
			return a;
	}
	return NULL;
}

void
cfg_route_get(const struct cfg *cfg, const char *domain, const char *sender,
    struct cfg_route *out)
{
	const struct cfg_scope *sc = cfg_scope(cfg, domain);
	const struct cfg_sender_route *sr;
	const struct cfg_hostport *hp;

	memset(out, 0, sizeof(*out));
	out->scope = sc;
	if (cfg_scope_name(sc) != NULL && cfg_is_set(sc, CFG_RELAYHOST)) {
		hp = cfg_hostport(sc, CFG_RELAYHOST);
		out->via = "domain";
	} else if ((sr = cfg_sender_route(cfg, sender)) != NULL) {
		hp = &sr->relay;
		out->via = "sender";
	} else {
		hp = cfg_hostport(&cfg->global, CFG_RELAYHOST);
		out->via = "relayhost";
	}
	if (hp->host[0] == '\0') {
		out->via = "mx";
		out->port = (uint16_t)cfg_int(sc, CFG_SMTP_PORT);
		return;
	}
	out->relay = hp;
	out->port = hp->port ? hp->port : (uint16_t)cfg_int(sc, CFG_SMTP_PORT);
	out->auth = cfg_auth_lookup(cfg, sender, hp, out->port);
}

/* ---- check-config ---- */

/* Describes the connection to RELAY (NULL: MX) on PORT with AUTH in
 * scope SC into BUF: "tls=... wrapper=... auth=... mechanisms=...". */
static void
describe(const struct cfg_scope *sc, const struct cfg_auth *auth, uint16_t port,
    char *buf, size_t len)
{
	enum cfg_sasl m[CFG_SASL_MAX];
	size_t n, off;

	off = (size_t)snprintf(buf, len, "tls=%s wrapper=%s auth=%s",
	    cfg_tls_name(cfg_tls_level(sc, auth, port)),
	    cfg_tls_wrapper(sc, port) ? "yes" : "no", auth ? auth->id : "none");
	if (auth == NULL || off >= len)
		return;
	n = cfg_auth_mechs(sc, auth, m);
	for (size_t i = 0; i < n && off + 16 < len; i++) {
		const char *mn = cfg_sasl_name(m[i]);

		off += (size_t)snprintf(
		    buf + off, len - off, "%s", i ? "," : " mechanisms=");
		while (*mn != '\0')
			buf[off++] = (char)tolower((unsigned char)*mn++);
		buf[off] = '\0';
	}
}

/* Adds the lines of one route: NAME = ..., NAME.fallback[N] = .... */
static void
route_lines(const struct cfg *cfg, const char *name, const char *domain,
    const char *sender, void (*add)(void *, const char *), void *arg)
{
	struct cfg_route rt;
	struct cfg_hostport fb[CFG_FALLBACK_MAX];
	char line[1500], desc[700], relay[300];
	size_t n;

	cfg_route_get(cfg, domain, sender, &rt);
	describe(rt.scope, rt.auth, rt.port, desc, sizeof(desc));
	if (rt.relay != NULL) {
		cfg_hostport_format(rt.relay, relay, sizeof(relay));
		snprintf(line, sizeof(line), "%s = %s via=%s %s", name, relay,
		    rt.via, desc);
	} else {
		snprintf(line, sizeof(line), "%s = mx %s", name, desc);
	}
	add(arg, line);
	n = cfg_fallback_relays(rt.scope, fb, CFG_FALLBACK_MAX);
	for (size_t i = 0; i < n; i++) {
		/* by the relay alone, as runner_route_fallback() */
		const struct cfg_auth *a = cfg_auth_lookup(
		    cfg, NULL, &fb[i], fb[i].port);

		describe(rt.scope, a, fb[i].port, desc, sizeof(desc));
		cfg_hostport_format(&fb[i], relay, sizeof(relay));
		snprintf(line, sizeof(line),
		    "%s.fallback[%zu] = %s via=fallback_relay %s", name, i + 1,
		    relay, desc);
		add(arg, line);
	}
}

void
cfg_route_dump(
    const struct cfg *cfg, void (*add)(void *, const char *), void *arg)
{
	const struct cfg_files *f = cfg->files;
	char line[1500], name[400];

	if (f != NULL) {
		for (size_t i = 0; i < f->nauth; i++) {
			const struct cfg_auth *a = &f->auth[i];

			if (a->argv == NULL)
				snprintf(line, sizeof(line),
				    "auth[%s] = %s:******** (%s:%d)", a->key,
				    a->user, a->file, a->line);
			else
				snprintf(line, sizeof(line),
				    "auth[%s] = %s:|%s%s (%s:%d)", a->key,
				    a->user, a->argv[0],
				    a->argv[1] ? " ********" : "", a->file,
				    a->line);
			add(arg, line);
		}
	}
	route_lines(cfg, "route.default", NULL, NULL, add, arg);
	for (size_t i = 0; i < cfg->ndomains; i++) {
		snprintf(name, sizeof(name), "route.domain[%s]",
		    cfg->domains[i]->name);
		route_lines(cfg, name, cfg->domains[i]->name, NULL, add, arg);
	}
	if (f == NULL)
		return;
	/* Every sender with a route or credentials of its own. */
	for (size_t i = 0; i < f->nsenders + f->nauth; i++) {
		const char *key = i < f->nsenders
		    ? f->senders[i].key
		    : f->auth_sorted[i - f->nsenders]->key;
		bool seen = false;

		if (i >= f->nsenders) {
			if (strchr(key, '@') == NULL && strcmp(key, "<>") != 0)
				continue;
			for (size_t k = 0; k < f->nsenders && !seen; k++)
				seen = strcmp(f->senders[k].key, key) == 0;
			if (seen)
				continue;
		}
		snprintf(name, sizeof(name), "route.sender[%s]", key);
		route_lines(
		    cfg, name, NULL, strcmp(key, "<>") ? key : "", add, arg);
	}
}
