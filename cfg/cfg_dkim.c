/*
 * cfg_dkim.c - the DKIM signing keys a config names: dkim_key_file with
 * dkim_selector and dkim_domain (one key for one domain and its
 * subdomains), and dkim_key_table (keys by sender domain, in the spirit
 * of OpenDKIM's KeyTable and SigningTable folded into one file).  They
 * are read and checked once, at load; queue/queue_dkim.c signs with
 * them at intake.
 *
 * Public: cfg_dkim_hold(), cfg_dkim_release(), cfg_dkim_lookup(),
 * cfg_dkim_alg_name().  cfg-private: cfg_dkim_table_parse() (pure,
 * unit-tested and fuzzed), cfg_dkim_entries_free(), cfg_dkim_load(),
 * cfg_dkim_dump().
 *
 * Invariants: a key is loaded only from a regular file owned by root or
 * the daemon's user that group and others can neither read nor write
 * (as auth_file), and only if OpenSSL parses it as an RSA key of at
 * least 1024 bits (RFC 8301) or an Ed25519 key (RFC 8463); it is kept
 * as PKCS#8 PEM in memory excluded from core dumps and cleansed when the
 * last reference goes (an Ed25519 key also as OpenSSL's EVP_PKEY, which
 * cleanses itself when freed).  The key set is immutable once loaded and
 * reference-counted, so reader threads may sign with it while a reload
 * frees the config that loaded it.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "cfg_int.h"

#define NAME_MAX_ 253 /* bytes of a domain name or selector */

struct cfg_dkim {
	int refs; /* atomic */
	struct cfg_files *mem; /* owns the keys' secret memory */
	struct cfg_dkim_key *keys; /* dkim_key_table, in file order */
	size_t nkeys;
	struct cfg_dkim_key global; /* dkim_key_file (sender NULL: none) */
};

/* Records "NAME:LINE: message" in ERR; CFG_ERR_SYNTAX. */
#define derr(...) (cfg_file_err(__VA_ARGS__), CFG_ERR_SYNTAX)

const char *
cfg_dkim_alg_name(enum cfg_dkim_alg a)
{
	return a == CFG_DKIM_ED25519_SHA256 ? "ed25519-sha256" : "rsa-sha256";
}

/*
 * Whether S (LEN bytes) is a domain name or selector: dot-separated
 * labels of letters, digits, '-' and '_' (selectors and DNS-only names
 * have them), none empty; a leading dot only when LEADING_DOT.
 */
static bool
name_ok(const char *s, size_t len, bool leading_dot)
{
	size_t label = 0;

	if (leading_dot && len > 0 && s[0] == '.') {
		s++;
		len--;
	}
	if (len == 0 || len > NAME_MAX_)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '.') {
			if (label == 0)
				return false;
			label = 0;
		} else if (isalnum(c) || c == '-' || c == '_') {
			if (++label > 63)
				return false;
		} else {
			return false;
		}
	}
	return label > 0;
}

/* A lowercase copy of S (LEN bytes). */
static char *
lower_dup(const char *s, size_t len)
{
	return rq_lower(xstrndup(s, len));
}

void
cfg_dkim_entries_free(struct cfg_dkim_entry *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(v[i].sender);
		free(v[i].selector);
		free(v[i].key_file);
		free(v[i].domain);
	}
	free(v);
}

/* Takes the next blank-separated field of LINE (LEN bytes) from *POS. */
static bool
field_next(
    const char *line, size_t len, size_t *pos, const char **f, size_t *flen)
{
	size_t i = *pos;

	while (i < len && (line[i] == ' ' || line[i] == '\t'))
		i++;
	if (i == len)
		return false;
	*f = line + i;
	while (i < len && line[i] != ' ' && line[i] != '\t')
		i++;
	*flen = (size_t)(line + i - *f);
	*pos = i;
	return true;
}

/* Parses one table line (blanks trimmed, not a comment) into *E. */
static enum cfg_result
entry_parse(const char *name, int lno, const char *line, size_t len,
    struct cfg_dkim_entry *e, char *err, size_t errlen)
{
	const char *f[5];
	size_t fl[5], pos = 0, n = 0;
	char q[80];

	memset(e, 0, sizeof(*e));
	while (n < 5 && field_next(line, len, &pos, &f[n], &fl[n]))
		n++;
	if (n < 3 || n > 4)
		return derr(err, errlen, name, lno,
		    "expected SENDER-DOMAIN SELECTOR KEY-FILE "
		    "[SIGNING-DOMAIN]");
	if (!name_ok(f[0], fl[0], true)) {
		rq_sanitize(q, sizeof(q), f[0], fl[0]);
		return derr(err, errlen, name, lno,
		    "bad sender domain \"%s\" (expected example.com, or "
		    ".example.com for its subdomains)",
		    q);
	}
	if (!name_ok(f[1], fl[1], false)) {
		rq_sanitize(q, sizeof(q), f[1], fl[1]);
		return derr(err, errlen, name, lno, "bad selector \"%s\"", q);
	}
	if (f[2][0] != '/') {
		rq_sanitize(q, sizeof(q), f[2], fl[2]);
		return derr(err, errlen, name, lno,
		    "key file \"%s\" is not an absolute path", q);
	}
	if (n == 4 && !name_ok(f[3], fl[3], false)) {
		rq_sanitize(q, sizeof(q), f[3], fl[3]);
		return derr(
		    err, errlen, name, lno, "bad signing domain \"%s\"", q);
	}
	e->sender = lower_dup(f[0], fl[0]);
	e->selector = lower_dup(f[1], fl[1]);
	e->key_file = xstrndup(f[2], fl[2]);
	if (n == 4)
		e->domain = lower_dup(f[3], fl[3]);
	else
		e->domain = xstrdup(e->sender + (e->sender[0] == '.' ? 1 : 0));
	e->line = lno;
	return CFG_OK;
}

enum cfg_result
cfg_dkim_table_parse(const char *name, const char *buf, size_t len,
    struct cfg_dkim_entry **out, size_t *nout, char *err, size_t errlen)
{
	struct cfg_dkim_entry *v = NULL;
	struct cfg_lines it = { name, buf, len, err, errlen, 0, 0 };
	const char *line;
	size_t n = 0, llen;
	enum cfg_lines_result lr;
	enum cfg_result r = CFG_OK;

	while (r == CFG_OK &&
	    (lr = cfg_lines_next(&it, &line, &llen)) != CFG_LINES_END) {
		size_t same = 0;
		int lno = it.lno;

		if (lr == CFG_LINES_BAD) {
			r = CFG_ERR_SYNTAX;
			break;
		}
		v = xrealloc(v, (n + 1) * sizeof(*v));
		r = entry_parse(name, lno, line, llen, &v[n], err, errlen);
		if (r != CFG_OK)
			break;
		n++;
		for (size_t i = 0; i + 1 < n && r == CFG_OK; i++) {
			if (strcmp(v[i].sender, v[n - 1].sender) != 0)
				continue;
			if (strcmp(v[i].selector, v[n - 1].selector) == 0 &&
			    strcmp(v[i].domain, v[n - 1].domain) == 0)
				r = derr(err, errlen, name, lno,
				    "duplicate entry for %s (first on line "
				    "%d)",
				    v[i].sender, v[i].line);
			else if (++same >= CFG_DKIM_SIGS_MAX)
				r = derr(err, errlen, name, lno,
				    "more than %d keys for %s",
				    CFG_DKIM_SIGS_MAX, v[i].sender);
		}
	}
	if (r != CFG_OK) {
		cfg_dkim_entries_free(v, n);
		return r;
	}
	*out = v;
	*nout = n;
	return CFG_OK;
}

/* ---- loading ---- */

/* OpenSSL's passphrase callback: there is none (no prompt, ever). */
static int
no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

/*
 * Reads, checks and parses key file K->key_file (named by WHAT at
 * WHERE:K->line) into K (algorithm, size, PKCS#8 PEM in DK's secret
 * memory).
 */
static enum cfg_result
key_load(struct cfg *cfg, struct cfg_dkim *dk, const char *where,
    const char *what, struct cfg_dkim_key *k, char *err, size_t errlen)
{
	char *buf, *data;
	size_t len;
	long n;
	BIO *b;
	EVP_PKEY *pk;
	enum cfg_result r = CFG_OK;

	buf = cfg_files_secret_read(
	    cfg, dk->mem, where, k->line, what, k->key_file, &len, err, errlen);
	if (buf == NULL)
		return CFG_ERR_FILE;
	b = BIO_new_mem_buf(buf, (int)len);
	pk = b ? PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL) : NULL;
	BIO_free(b);
	ERR_clear_error();
	if (pk == NULL)
		return derr(err, errlen, where, k->line,
		    "%s %s: not a PEM private key without a passphrase", what,
		    k->key_file);
	switch (EVP_PKEY_get_base_id(pk)) {
	case EVP_PKEY_RSA:
		k->alg = CFG_DKIM_RSA_SHA256;
		k->bits = (unsigned)EVP_PKEY_get_bits(pk);
		if (k->bits < 1024)
			r = derr(err, errlen, where, k->line,
			    "%s %s: an RSA key of %u bits (DKIM needs at least "
			    "1024, RFC 8301; use 2048)",
			    what, k->key_file, k->bits);
		break;
	case EVP_PKEY_ED25519:
		k->alg = CFG_DKIM_ED25519_SHA256;
		k->bits = 256;
		break;
	default:
		r = derr(err, errlen, where, k->line,
		    "%s %s: a %s key (DKIM signs with RSA or Ed25519)", what,
		    k->key_file, OBJ_nid2sn(EVP_PKEY_get_base_id(pk)));
		break;
	}
	if (r != CFG_OK) {
		EVP_PKEY_free(pk);
		return r;
	}
	/* one form for libopendkim, whatever the file held (PKCS#1,
	 * PKCS#8, text around it); memory that is cleansed when freed */
	b = BIO_new(BIO_s_secmem());
	if (b == NULL ||
	    !PEM_write_bio_PKCS8PrivateKey(b, pk, NULL, NULL, 0, NULL, NULL) ||
	    (n = BIO_get_mem_data(b, &data)) <= 0) {
		BIO_free(b);
		EVP_PKEY_free(pk);
		ERR_clear_error();
		return derr(err, errlen, where, k->line,
		    "%s %s: cannot encode the key", what, k->key_file);
	}
	k->pem = cfg_files_secret_alloc(dk->mem, (size_t)n);
	memcpy((char *)k->pem, data, (size_t)n);
	k->pemlen = (size_t)n;
	BIO_free(b);
	k->evp = pk; /* signed with by OpenSSL (queue_dkim.c) */
	return CFG_OK;
}

/* Frees one key's strings (not its secret memory). */
static void
key_free(struct cfg_dkim_key *k)
{
	free((char *)k->sender);
	free((char *)k->domain);
	free((char *)k->selector);
	free((char *)k->key_file);
	free((char *)k->file);
	EVP_PKEY_free(k->evp); /* cleanses it */
}

struct cfg_dkim *
cfg_dkim_hold(const struct cfg *cfg)
{
	struct cfg_dkim *dk = cfg->files ? cfg->files->dkim : NULL;

	if (dk != NULL)
		__atomic_add_fetch(&dk->refs, 1, __ATOMIC_RELAXED);
	return dk;
}

void
cfg_dkim_release(struct cfg_dkim *dk)
{
	if (dk == NULL ||
	    __atomic_sub_fetch(&dk->refs, 1, __ATOMIC_ACQ_REL) > 0)
		return;
	for (size_t i = 0; i < dk->nkeys; i++)
		key_free(&dk->keys[i]);
	free(dk->keys);
	key_free(&dk->global);
	cfg_files_free(dk->mem);
	free(dk);
}

/* Checks dkim_selector and dkim_domain against dkim_key_file. */
static enum cfg_result
global_check(struct cfg *cfg, char *err, size_t errlen)
{
	const struct cfg_scope *g = &cfg->global;
	const char *kf = cfg_str(g, CFG_DKIM_KEY_FILE);
	static const enum cfg_key need[] = { CFG_DKIM_SELECTOR,
		CFG_DKIM_DOMAIN };

	for (size_t i = 0; i < 2; i++) {
		const char *v = cfg_str(g, need[i]);
		const char *name = cfg_defs[need[i]].name;

		if (kf[0] != '\0' && v[0] == '\0')
			return derr(err, errlen, cfg->path,
			    cfg_line(cfg, g, CFG_DKIM_KEY_FILE),
			    "dkim_key_file is set but %s is not", name);
		if (kf[0] == '\0' && v[0] != '\0')
			return derr(err, errlen, cfg->path,
			    cfg_line(cfg, g, need[i]),
			    "%s is set but dkim_key_file is not", name);
		if (v[0] != '\0' && !name_ok(v, strlen(v), false))
			return derr(err, errlen, cfg->path,
			    cfg_line(cfg, g, need[i]), "bad %s \"%.80s\"", name,
			    v);
	}
	if (kf[0] != '\0' && kf[0] != '/')
		return derr(err, errlen, cfg->path,
		    cfg_line(cfg, g, CFG_DKIM_KEY_FILE),
		    "dkim_key_file must be an absolute path");
	return CFG_OK;
}

/* Loads the table's keys into DK (a file named twice is read once). */
static enum cfg_result
table_load(struct cfg *cfg, struct cfg_dkim *dk, char *err, size_t errlen)
{
	const struct cfg_scope *g = &cfg->global;
	const char *path = cfg_str(g, CFG_DKIM_KEY_TABLE);
	struct cfg_dkim_entry *v = NULL;
	size_t n = 0, len;
	char *buf;
	enum cfg_result r;

	buf = cfg_files_table_read(cfg, cfg->path,
	    cfg_line(cfg, g, CFG_DKIM_KEY_TABLE), "dkim_key_table", path, &len,
	    err, errlen);
	if (buf == NULL)
		return CFG_ERR_FILE;
	r = cfg_dkim_table_parse(path, buf, len, &v, &n, err, errlen);
	free(buf);
	if (r != CFG_OK)
		return r;
	dk->keys = xcalloc(n ? n : 1, sizeof(*dk->keys));
	for (size_t i = 0; i < n && r == CFG_OK; i++) {
		struct cfg_dkim_key *k = &dk->keys[i];

		k->sender = v[i].sender;
		k->selector = v[i].selector;
		k->key_file = v[i].key_file;
		k->domain = v[i].domain;
		k->file = xstrdup(path);
		k->line = v[i].line;
		v[i].sender = v[i].selector = v[i].key_file = v[i].domain =
		    NULL;
		dk->nkeys++;
		for (size_t j = 0; j < i; j++) {
			if (strcmp(dk->keys[j].key_file, k->key_file) == 0) {
				k->pem = dk->keys[j].pem;
				k->pemlen = dk->keys[j].pemlen;
				k->alg = dk->keys[j].alg;
				k->bits = dk->keys[j].bits;
				k->evp = dk->keys[j].evp;
				if (k->evp != NULL)
					EVP_PKEY_up_ref(k->evp);
				break;
			}
		}
		if (k->pem == NULL)
			r = key_load(cfg, dk, path, "key file", k, err, errlen);
	}
	cfg_dkim_entries_free(v, n);
	return r;
}

enum cfg_result
cfg_dkim_load(struct cfg *cfg, char *err, size_t errlen)
{
	const struct cfg_scope *g = &cfg->global;
	const char *kf = cfg_str(g, CFG_DKIM_KEY_FILE);
	struct cfg_dkim *dk;
	enum cfg_result r;

	r = global_check(cfg, err, errlen);
	if (r != CFG_OK)
		return r;
	if (kf[0] == '\0' && cfg_str(g, CFG_DKIM_KEY_TABLE)[0] == '\0')
		return CFG_OK;
	dk = xcalloc(1, sizeof(*dk));
	dk->refs = 1;
	dk->mem = xcalloc(1, sizeof(*dk->mem));
	cfg->files->dkim = dk; /* freed with the cfg from here on */
	if (kf[0] != '\0') {
		struct cfg_dkim_key *k = &dk->global;

		k->domain = lower_dup(cfg_str(g, CFG_DKIM_DOMAIN),
		    strlen(cfg_str(g, CFG_DKIM_DOMAIN)));
		k->sender = xstrdup(k->domain);
		k->selector = lower_dup(cfg_str(g, CFG_DKIM_SELECTOR),
		    strlen(cfg_str(g, CFG_DKIM_SELECTOR)));
		k->key_file = xstrdup(kf);
		k->file = xstrdup(cfg->path);
		k->line = cfg_line(cfg, g, CFG_DKIM_KEY_FILE);
		r = key_load(
		    cfg, dk, cfg->path, "dkim_key_file", k, err, errlen);
		if (r != CFG_OK)
			return r;
	}
	if (cfg_str(g, CFG_DKIM_KEY_TABLE)[0] != '\0')
		r = table_load(cfg, dk, err, errlen);
	return r;
}

/* ---- questions ---- */

size_t
cfg_dkim_lookup(const struct cfg_dkim *dk, const char *domain,
    const struct cfg_dkim_key **out)
{
	size_t n = 0, dl;
	const char *suffix;

	if (dk == NULL || domain[0] == '\0')
		return 0;
	/* the domain itself, then its parents' ".parent" entries */
	for (suffix = domain; suffix != NULL && n == 0;
	     suffix = strchr(suffix + 1, '.')) {
		for (size_t i = 0; i < dk->nkeys && n < CFG_DKIM_SIGS_MAX; i++)
			if (strcmp(dk->keys[i].sender, suffix) == 0)
				out[n++] = &dk->keys[i];
	}
	if (n > 0 || dk->global.sender == NULL)
		return n;
	dl = strlen(domain);
	suffix = dk->global.sender;
	if (strcmp(domain, suffix) == 0 ||
	    (dl > strlen(suffix) + 1 &&
		strcmp(domain + dl - strlen(suffix), suffix) == 0 &&
		domain[dl - strlen(suffix) - 1] == '.'))
		out[n++] = &dk->global;
	return n;
}

/* Adds the check-config line of key K named NAME. */
static void
key_dump(const struct cfg_dkim_key *k, const char *name,
    void (*add)(void *, const char *), void *arg)
{
	char line[1500];

	snprintf(line, sizeof(line),
	    "%s = d=%s s=%s a=%s bits=%u key=%s (%s:%d)", name, k->domain,
	    k->selector, cfg_dkim_alg_name(k->alg), k->bits, k->key_file,
	    k->file, k->line);
	add(arg, line);
}

void
cfg_dkim_dump(
    const struct cfg *cfg, void (*add)(void *, const char *), void *arg)
{
	const struct cfg_dkim *dk = cfg->files ? cfg->files->dkim : NULL;
	char name[300];

	if (dk == NULL)
		return;
	if (dk->global.sender != NULL)
		key_dump(&dk->global, "dkim.default", add, arg);
	for (size_t i = 0; i < dk->nkeys; i++) {
		snprintf(name, sizeof(name), "dkim[%s]", dk->keys[i].sender);
		key_dump(&dk->keys[i], name, add, arg);
	}
}
