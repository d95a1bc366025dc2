/*
 * cfg_ident.c - the machine's mail identity, derived where the config
 * leaves it unset, as Debian's MTAs derive theirs: hostname (the fully
 * qualified name, Postfix's myhostname: the canonical name of
 * gethostname(), else that name as it is), origin (the first line of
 * /etc/mailname, as exim4 and Postfix on Debian read it, else
 * hostname), helo_name (hostname, in every scope), postmaster
 * (postmaster@origin) and alias_file (/etc/aliases when it exists); and
 * the local-mail rules intake applies (struct mail_local), shared by
 * reference so that intake's reader threads may keep using them after
 * a reload freed the cfg.
 *
 * Public: cfg_local_hold(), cfg_local_release(), cfg_local_rules(),
 * cfg_mail_local(), cfg_alias_warnings().  cfg-private:
 * cfg_ident_resolve(), cfg_ident_scopes(), cfg_local_set(), the checks
 * of origin, helo_name and the address keys (cfg_checks[]).
 *
 * RELAYQ_TEST_ETC=DIR (a test aid, relayq(8) ENVIRONMENT): mailname and
 * aliases are looked for in DIR instead of /etc.
 *
 * Invariants: resolving the host name never blocks config loading for
 * long: the lookup runs in a thread and is given up after
 * IDENT_RESOLVE_MS (the short name is taken), and its answer is kept
 * for the life of the process; a struct cfg_local is immutable and
 * freed with its last reference (atomic counts, any thread).
 */
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cfg_int.h"
#include "mail.h"

#define IDENT_RESOLVE_MS 2000 /* the longest wait for the FQDN */

/* ---- the host's fully qualified name ---- */

/* A lookup that may outlive the wait for it: freed by the last of the
 * waiter and the thread. */
struct fqdn_job {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int refs;
	bool done;
	char name[256];
	char canon[256];
};

/* Drops a reference to J (its mutex held); frees it with the last. */
static void
fqdn_job_unref(struct fqdn_job *j)
{
	bool last = --j->refs == 0;

	pthread_mutex_unlock(&j->mu);
	if (last) {
		pthread_mutex_destroy(&j->mu);
		pthread_cond_destroy(&j->cv);
		free(j);
	}
}

/* The lookup thread: the canonical name of j->name. */
static void *
fqdn_thread(void *arg)
{
	struct fqdn_job *j = arg;
	struct addrinfo hints, *res = NULL;
	char canon[256] = "";

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_flags = AI_CANONNAME;
	if (getaddrinfo(j->name, NULL, &hints, &res) == 0 && res != NULL &&
	    res->ai_canonname != NULL)
		snprintf(canon, sizeof(canon), "%s", res->ai_canonname);
	if (res != NULL)
		freeaddrinfo(res);
	pthread_mutex_lock(&j->mu);
	memcpy(j->canon, canon, sizeof(canon));
	j->done = true;
	pthread_cond_signal(&j->cv);
	fqdn_job_unref(j);
	return NULL;
}

/* The canonical name of NAME into OUT (LEN bytes), waiting at most
 * IDENT_RESOLVE_MS; false when there is none by then. */
static bool
fqdn_lookup(const char *name, char *out, size_t len)
{
	struct fqdn_job *j = xcalloc(1, sizeof(*j));
	struct timespec until;
	pthread_attr_t attr;
	pthread_t th;
	bool ok = false;

	pthread_mutex_init(&j->mu, NULL);
	pthread_cond_init(&j->cv, NULL);
	j->refs = 2;
	snprintf(j->name, sizeof(j->name), "%s", name);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&th, &attr, fqdn_thread, j) != 0) {
		pthread_attr_destroy(&attr);
		pthread_mutex_lock(&j->mu);
		j->refs--;
		fqdn_job_unref(j);
		return false;
	}
	pthread_attr_destroy(&attr);
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += IDENT_RESOLVE_MS / 1000;
	until.tv_nsec += (IDENT_RESOLVE_MS % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&j->mu);
	while (!j->done &&
	    pthread_cond_timedwait(&j->cv, &j->mu, &until) != ETIMEDOUT)
		;
	if (j->done && j->canon[0] != '\0') {
		snprintf(out, len, "%s", j->canon);
		ok = true;
	}
	fqdn_job_unref(j);
	return ok;
}

static pthread_mutex_t fqdn_mu = PTHREAD_MUTEX_INITIALIZER;
static char fqdn[256];

/* The host's fully qualified name, found once per process: the
 * canonical name of gethostname() (as `hostname -f`), else that name,
 * else "localhost". */
static const char *
host_fqdn(void)
{
	char host[256];

	pthread_mutex_lock(&fqdn_mu);
	if (fqdn[0] == '\0') {
		if (gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0')
			strcpy(host, "localhost");
		host[sizeof(host) - 1] = '\0';
		if (!fqdn_lookup(host, fqdn, sizeof(fqdn)))
			snprintf(fqdn, sizeof(fqdn), "%s", host);
	}
	pthread_mutex_unlock(&fqdn_mu);
	return fqdn;
}

/* ---- /etc files ---- */

/* Where mailname and aliases are: /etc, or RELAYQ_TEST_ETC (tests). */
static const char *
etc_dir(void)
{
	const char *e = getenv("RELAYQ_TEST_ETC");

	return e != NULL && e[0] != '\0' ? e : "/etc";
}

/* True for a domain name as origin and helo_name take it. */
static bool
domain_ok(const char *s, size_t n)
{
	if (n == 0 || n > 253 || s[0] == '.' || s[n - 1] == '.')
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '.' ? s[i + 1] == '.'
			     : !(isalnum(c) || c == '-' || c == '_'))
			return false;
	}
	return true;
}

/* The first line of ETC/mailname into OUT, when it is a domain name. */
static bool
mailname_read(char *out, size_t len)
{
	char path[4096], line[300];
	FILE *fp;
	size_t n, start;

	snprintf(path, sizeof(path), "%s/mailname", etc_dir());
	if ((fp = fopen(path, "re")) == NULL)
		return false;
	if (fgets(line, sizeof(line), fp) == NULL) {
		fclose(fp);
		return false;
	}
	fclose(fp);
	n = strcspn(line, "\r\n");
	while (n > 0 && (line[n - 1] == ' ' || line[n - 1] == '\t'))
		n--;
	if (n > 0 && line[n - 1] == '.')
		n--; /* "example.org." is the same name */
	line[n] = '\0';
	start = strspn(line, " \t");
	if (!domain_ok(line + start, n - start))
		return false;
	snprintf(out, len, "%s", line + start);
	return true;
}

/* ---- the checks of the keys (cfg_checks[]) ---- */

/* origin: a domain name. */
int
cfg_ident_check_domain(const char *s, size_t len, const char **why)
{
	if (len > 0 && !domain_ok(s, len)) {
		*why = "not a domain name";
		return -1;
	}
	return 0;
}

/* user: a user name as useradd(8) makes them (letters, digits, '_',
 * '-', '.', not starting with '-'), so that a '#' comment after the value
 * (kept as part of it) is an error here, not at the start of `run`. */
int
cfg_ident_check_user(const char *s, size_t len, const char **why)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!isalnum(c) && c != '_' && c != '.' &&
		    (c != '-' || i == 0) && (c != '$' || i + 1 != len)) {
			*why = "not a user name";
			return -1;
		}
	}
	if (len > 32) {
		*why = "not a user name (over 32 characters)";
		return -1;
	}
	return 0;
}

/* helo_name: a domain name or an address literal ([192.0.2.1]). */
int
cfg_ident_check_helo(const char *s, size_t len, const char **why)
{
	if (len > 2 && s[0] == '[' && s[len - 1] == ']') {
		for (size_t i = 1; i + 1 < len; i++)
			if (!isxdigit((unsigned char)s[i]) && s[i] != '.' &&
			    s[i] != ':' && strncasecmp(s + i, "ipv6:", 5) != 0)
				goto bad;
		return 0;
	}
	if (len == 0 || domain_ok(s, len))
		return 0;
bad:
	*why = "not a domain name or an address literal";
	return -1;
}

/* Keeps the address found (the check's callback). */
static enum mail_addr_result
addr_count(void *arg, const char *addr)
{
	(void)addr;
	++*(int *)arg;
	return MAIL_ADDR_OK;
}

/* postmaster, local_fallback: one address with a domain. */
int
cfg_ident_check_addr(const char *s, size_t len, const char **why)
{
	const struct mail_addr_syntax syn = { MAIL_ADDR_WORD_LIMIT, NULL,
		MAIL_ADDR_LEN_MAX };
	struct mail_addr_error err;
	int n = 0;

	if (len == 0)
		return 0;
	if (mail_addrlist_parse(s, len, &syn, addr_count, &n, &err) !=
		MAIL_ADDR_OK ||
	    n != 1 || memchr(s, '<', len) != NULL || memchr(s, ' ', len)) {
		*why = "not an address (user@domain)";
		return -1;
	}
	return 0;
}

/* ---- the rules intake applies ---- */

/* Makes a cfg_local of CFG's identity and the tables given (owned). */
static struct cfg_local *
local_new(
    const struct cfg *cfg, struct mail_aliases *aliases, struct mail_map *map)
{
	const struct cfg_scope *g = &cfg->global;
	struct cfg_local *l = xcalloc(1, sizeof(*l));

	l->refs = 1;
	l->origin = xstrdup(cfg_str(g, CFG_ORIGIN));
	l->hostname = xstrdup(cfg_str(g, CFG_HOSTNAME));
	l->fallback = xstrdup(cfg_str(g, CFG_LOCAL_FALLBACK));
	l->aliases = aliases;
	l->map = map;
	l->ml.origin = l->origin;
	l->ml.hostname = l->hostname;
	l->ml.fallback = l->fallback[0] != '\0' ? l->fallback : NULL;
	l->ml.aliases = aliases;
	l->ml.sender_map = map;
	return l;
}

/* Gives CFG new rules with these tables (owned), dropping its old. */
void
cfg_local_set(
    struct cfg *cfg, struct mail_aliases *aliases, struct mail_map *map)
{
	struct cfg_local *old = cfg->local;

	cfg->local = local_new(cfg, aliases, map);
	cfg_local_release(old);
}

struct cfg_local *
cfg_local_hold(const struct cfg *cfg)
{
	__atomic_add_fetch(&cfg->local->refs, 1, __ATOMIC_RELAXED);
	return cfg->local;
}

void
cfg_local_release(struct cfg_local *l)
{
	if (l == NULL || __atomic_sub_fetch(&l->refs, 1, __ATOMIC_ACQ_REL) > 0)
		return;
	mail_aliases_free(l->aliases);
	mail_map_free(l->map);
	free(l->origin);
	free(l->hostname);
	free(l->fallback);
	free(l);
}

const struct mail_local *
cfg_local_rules(const struct cfg_local *l)
{
	return &l->ml;
}

const struct mail_local *
cfg_mail_local(const struct cfg *cfg)
{
	return &cfg->local->ml;
}

const char *const *
cfg_alias_warnings(const struct cfg *cfg, size_t *n)
{
	const struct mail_aliases *a = cfg->local->aliases;

	*n = a != NULL ? a->nwarn : 0;
	return a != NULL ? (const char *const *)a->warn : NULL;
}

/* ---- derived values ---- */

/* Sets every variant of string key K in scope SC to S (kept by CFG). */
static void
eff_set(struct cfg *cfg, struct cfg_scope *sc, enum cfg_key k, const char *s)
{
	char *v = cfg_keep(cfg, xstrdup(s));

	for (int c = 0; c < CFG_NCLASS; c++)
		for (int f = 0; f < 2; f++)
			sc->eff[k][c][f].s = v;
}

/* Fills in the global identity the config left unset (see the
 * comment at the top); called once the global scope is resolved, before
 * the [domain] scopes copy it. */
void
cfg_ident_resolve(struct cfg *cfg)
{
	struct cfg_scope *g = &cfg->global;
	char buf[600];

	if (cfg_str(g, CFG_HOSTNAME)[0] == '\0')
		eff_set(cfg, g, CFG_HOSTNAME, host_fqdn());
	if (cfg_str(g, CFG_ORIGIN)[0] == '\0') {
		if (!mailname_read(buf, sizeof(buf)))
			snprintf(
			    buf, sizeof(buf), "%s", cfg_str(g, CFG_HOSTNAME));
		eff_set(cfg, g, CFG_ORIGIN, buf);
	}
	if (cfg_str(g, CFG_POSTMASTER)[0] == '\0') {
		snprintf(
		    buf, sizeof(buf), "postmaster@%s", cfg_str(g, CFG_ORIGIN));
		eff_set(cfg, g, CFG_POSTMASTER, buf);
	}
	/* unset: /etc/aliases when it exists; set empty: none */
	if (!cfg_is_set(g, CFG_ALIAS_FILE)) {
		snprintf(buf, sizeof(buf), "%s/aliases", etc_dir());
		if (access(buf, F_OK) == 0)
			eff_set(cfg, g, CFG_ALIAS_FILE, buf);
	}
	if (cfg_str(g, CFG_HELO_NAME)[0] == '\0')
		eff_set(cfg, g, CFG_HELO_NAME, cfg_str(g, CFG_HOSTNAME));
}

/* The helo_name of each [domain] scope that sets none (globally
 * either): hostname; then the local-mail rules without tables (those
 * come with cfg_files_load()).  Called once every scope is resolved. */
void
cfg_ident_scopes(struct cfg *cfg)
{
	const char *helo = cfg_str(&cfg->global, CFG_HELO_NAME);

	for (size_t i = 0; i < cfg->ndomains; i++)
		if (cfg_str(cfg->domains[i], CFG_HELO_NAME)[0] == '\0')
			eff_set(cfg, cfg->domains[i], CFG_HELO_NAME, helo);
	cfg_local_set(cfg, NULL, NULL);
}
