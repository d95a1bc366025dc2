/*
 * cfg_int.h - private to cfg/: the key table and the layout of a parsed
 * configuration.  Nothing outside cfg/ includes this.
 */
#ifndef RELAYQ_CFG_INT_H
#define RELAYQ_CFG_INT_H

#include "cfg.h"
#include "mail.h"

enum cfg_type {
	CT_STR, /* free text */
	CT_PATH, /* a path name */
	CT_INT, /* integer in [min, max] */
	CT_SIZE, /* bytes, with k/m/g suffixes */
	CT_BOOL, /* yes/no */
	CT_TIME, /* sendmail interval, bare number in `unit` seconds */
	CT_TLS, /* none/may/encrypt/verify */
	CT_HOSTPORT, /* host:port or [host]:port */
	CT_RATE, /* N/unit */
	CT_WEIGHTS, /* urgent=N normal=N non-urgent=N */
	CT_FACILITY, /* a syslog facility name (log_facility_parse) */
};

#define CF_DOMAIN 0x01 /* may be set in a [domain] section */
#define CF_CLASS 0x02 /* takes .urgent/.normal/.non-urgent/.dsn */
#define CF_FIRST 0x04 /* takes .first: a message's first attempt */
#define CF_NOW 0x08 /* "now" is a valid interval (0) */
#define CF_DASH 0x10 /* CT_PATH: "-" (standard error) is valid too */

struct cfg_def {
	const char *name;
	enum cfg_type type;
	const char *def; /* default, in config syntax */
	int64_t min, max; /* bounds, in the key's units (seconds, bytes) */
	int64_t unit; /* seconds a bare interval number means */
	unsigned flags;
	const char *cls_def[CFG_NCLASS]; /* per-class defaults or NULL */
	const char *first_def; /* default of .first, or NULL: the plain */
	const char *help;
};

extern const struct cfg_def cfg_defs[CFG_NKEYS];

/* A parsed value.  Strings and host:port are owned by the cfg. */
struct cfg_val {
	int64_t i; /* int, size, bool, time, tls; rate and weights packed */
	const char *s; /* str, path, hostport (original text) */
	const struct cfg_hostport *hp;
};

/* Variants of a key as written: class (0 = none, 1+c) x first. */
#define CFG_NVAR (2 * (CFG_NCLASS + 1))
#define CFG_VAR(cls1, first) ((first) * (CFG_NCLASS + 1) + (cls1))

struct cfg_raw {
	bool set;
	int line; /* where it was set */
	struct cfg_val v;
};

struct cfg_scope {
	char *name; /* NULL for the global scope */
	struct cfg_raw raw[CFG_NKEYS][CFG_NVAR];
	struct cfg_val eff[CFG_NKEYS][CFG_NCLASS][2];
	const struct cfg_pem *pem; /* tls_cert_file, by cfg_files_load() */
};

struct cfg {
	char *path;
	struct cfg_scope global;
	struct cfg_scope **domains; /* sorted by name */
	size_t ndomains;
	void **allocs; /* everything to free with the cfg */
	size_t nallocs, aallocs;
	struct cfg_files *files; /* cfg_files_load(): tables and secrets */
	struct cfg_local *local; /* local-mail rules (cfg_ident.c) */
};

/* The local-mail rules: immutable, freed with the last reference. */
struct cfg_local {
	int refs; /* atomic */
	char *origin, *hostname, *fallback;
	struct mail_aliases *aliases; /* NULL: none */
	struct mail_map *map; /* NULL: none */
	struct mail_local ml; /* points at the above */
};

/* Derived identity (cfg_ident.c): the global keys after the global
 * scope is resolved, the [domain] scopes' helo_name and the rules
 * without tables once every scope is. */
void cfg_ident_resolve(struct cfg *);
void cfg_ident_scopes(struct cfg *);
/* Gives the cfg new local-mail rules with these tables (owned). */
void cfg_local_set(struct cfg *, struct mail_aliases *, struct mail_map *);
/* The checks of origin, helo_name, postmaster and local_fallback. */
int cfg_ident_check_domain(const char *s, size_t len, const char **why);
int cfg_ident_check_user(const char *s, size_t len, const char **why);
int cfg_ident_check_helo(const char *s, size_t len, const char **why);
int cfg_ident_check_addr(const char *s, size_t len, const char **why);

/* Parses TEXT as a value of DEF; 0 or -1 with *why a static message. */
int cfg_value_parse(struct cfg *, const struct cfg_def *, const char *text,
    size_t len, struct cfg_val *, const char **why);

/* Takes ownership of P: freed with the cfg. */
void *cfg_keep(struct cfg *, void *p);

/* ---- smarthost (cfg_files.c, cfg_route.c) ---- */

/* The tables cfg_files_load() read (cfg_files.c). */
struct cfg_sender_route {
	const char *key; /* "user@domain", "@domain" or "<>", lowercase */
	struct cfg_hostport relay;
	const char *text; /* the relay as written */
};
struct cfg_files {
	struct cfg_auth *auth; /* file order */
	const struct cfg_auth **auth_sorted; /* by key, for lookups */
	size_t nauth;
	struct cfg_sender_route *senders; /* by key */
	size_t nsenders;
	struct cfg_pem *pems; /* one per distinct cert/key pair */
	size_t npems;
	const char *http_token; /* http_token's token (secret memory) */
	struct cfg_dkim *dkim; /* the signing keys (a reference), or NULL */
	/* memory holding secrets: out of core dumps, cleansed on free */
	void **secret;
	size_t *secretlen;
	size_t nsecret;
	const char *cluster_password; /* in secret memory, or NULL */
};

/* Frees what cfg_files_load() made, cleansing the secrets. */
void cfg_files_free(struct cfg_files *);

/* LEN+1 zeroed bytes kept out of core dumps, owned by F (cleansed and
 * unmapped by cfg_files_free()). */
char *cfg_files_secret_alloc(struct cfg_files *f, size_t len);
/* Reads PATH, named by WHAT at line LINE of file WHERE, into F's secret
 * memory, refused (ERR "WHERE:LINE: WHAT PATH: why") as auth_file is:
 * not a regular file, group or others may read or write it, owned by
 * neither root nor the daemon's user.  *LEN gets its size. */
char *cfg_files_secret_read(struct cfg *, struct cfg_files *f,
    const char *where, int line, const char *what, const char *path,
    size_t *len, char *err, size_t errlen);
/* Reads table PATH (malloc'd, NUL-terminated), refused as
 * sender_relayhost is: writable by group or others, or owned by neither
 * root nor the daemon's user. */
char *cfg_files_table_read(struct cfg *, const char *where, int line,
    const char *what, const char *path, size_t *len, char *err, size_t errlen);

/* ---- DKIM signing keys (cfg_dkim.c) ---- */

/* One line of dkim_key_table as parsed (strings malloc'd). */
struct cfg_dkim_entry {
	char *sender; /* "example.com", or ".example.com" for subdomains */
	char *selector;
	char *key_file; /* an absolute path */
	char *domain; /* d=: the 4th field, else sender without its dot */
	int line;
};

/*
 * Parses dkim_key_table text BUF (LEN bytes): one "SENDER-DOMAIN
 * SELECTOR KEY-FILE [SIGNING-DOMAIN]" a line, # comments.  *OUT is in
 * file order; free it with cfg_dkim_entries_free().  Errors:
 * "NAME:LINE: ...".
 */
enum cfg_result
cfg_dkim_table_parse(const char *name, const char *buf, size_t len,
    struct cfg_dkim_entry **out, size_t *n, char *err, size_t errlen);
void cfg_dkim_entries_free(struct cfg_dkim_entry *, size_t n);
/* Reads and checks dkim_key_file and dkim_key_table into cfg->files. */
enum cfg_result cfg_dkim_load(struct cfg *, char *err, size_t errlen);
/* Adds check-config's dkim[...] lines. */
void cfg_dkim_dump(
    const struct cfg *, void (*add)(void *arg, const char *line), void *arg);

/*
 * The pure parsers of cfg_files.c (unit tests, fuzzers).  auth_file text
 * BUF (LEN bytes, BUF[LEN] writable) is parsed in place: entries point
 * into it; free the table with cfg_auth_table_free().  The sender map's
 * entries (sorted by key) own their strings.  Errors: "NAME:LINE: ...".
 */
enum cfg_result cfg_auth_parse(const char *name, char *buf, size_t len,
    struct cfg_auth **out, size_t *n, char *err, size_t errlen);
void cfg_auth_table_free(struct cfg_auth *, size_t n);
/* http_token file text BUF (LEN bytes, BUF[LEN] writable): its first
 * line, blanks trimmed, must be a bearer token (RFC 6750's b64token);
 * the token is cut in place and *TOKEN points at it.  0, or -1 with
 * *WHY. */
int cfg_http_token_parse(
    char *buf, size_t len, const char **token, const char **why);
enum cfg_result
cfg_sender_map_parse(const char *name, const char *buf, size_t len,
    struct cfg_sender_route **out, size_t *n, char *err, size_t errlen);

/* The sender_relayhost entry for SENDER ("" for <>), or NULL. */
const struct cfg_sender_route *
cfg_sender_route(const struct cfg *, const char *sender);

/* Normalizes a lookup key: lowercase, "[host]:port" form; 0 or -1. */
int cfg_files_sender_key(const char *s, size_t len, char *out, size_t outlen);

/* Adds check-config's credential and route lines (cfg_route.c). */
void cfg_route_dump(
    const struct cfg *, void (*add)(void *arg, const char *line), void *arg);

/* The value checks of CT_STR keys that are lists, by key (NULL: none):
 * 0, or -1 with *why (cfg_route.c). */
extern int (*const cfg_checks[CFG_NKEYS])(
    const char *s, size_t len, const char **why);

/* The value checks of the cluster keys (cfg_cluster.c), for
 * cfg_checks: 0, or -1 with *why. */
int cfg_cluster_check_redis(const char *s, size_t len, const char **why);
int cfg_cluster_check_name(const char *s, size_t len, const char **why);
int cfg_cluster_check_fallback(const char *s, size_t len, const char **why);

/* ---- table files, line by line (cfg_lines.c) ---- */

#define CFG_LINE_MAX 4096 /* bytes of one line of a config or table file */

/* The lines of file NAME's text BUF (LEN bytes): set the first five,
 * the rest zero. */
struct cfg_lines {
	const char *name; /* for errors */
	const char *buf;
	size_t len;
	char *err; /* where an error goes */
	size_t errlen;
	size_t pos; /* the next line's first byte */
	int lno; /* the line last read, from 1 */
};
enum cfg_lines_result { CFG_LINES_END, CFG_LINES_OK, CFG_LINES_BAD };
/*
 * Sets *LINE and *N to the next line that is not blank or a comment,
 * CR and blanks trimmed at both ends (IT->lno its number): OK, END past
 * the last, or BAD with "NAME:LINE: NUL byte in line" or "NAME:LINE:
 * line too long (over 4096 bytes)" in IT->err.
 */
enum cfg_lines_result
cfg_lines_next(struct cfg_lines *it, const char **line, size_t *n);

/* Splits LINE (N bytes) at its first blank: returns the length of the
 * key before it and sets *VAL to where the value after the blanks
 * starts (N: there is none). */
size_t cfg_line_key(const char *line, size_t n, size_t *val);

/* Writes "NAME:LINE: " and FMT's text into ERR (ERRLEN bytes, cut to
 * fit); cfg_file_verr() is false when not even the prefix fits (then
 * ERR holds it cut short). */
void cfg_file_err(char *err, size_t errlen, const char *name, int line,
    const char *fmt, ...) __attribute__((format(printf, 5, 6)));
bool cfg_file_verr(char *err, size_t errlen, const char *name, int line,
    const char *fmt, va_list ap) __attribute__((format(printf, 5, 0)));

/* Copies at most 60 bytes of S (LEN) into BUF for an error message,
 * control bytes as spaces; returns BUF. */
const char *cfg_quote(const char *s, size_t len, char *buf, size_t blen);

#endif
