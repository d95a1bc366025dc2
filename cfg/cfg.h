/*
 * cfg.h - the immutable relayq configuration, and the small helpers
 * (logging, allocation, sysexits) that every other module shares.
 *
 * A configuration is parsed once by cfg_load() from a table of
 * {name, type, default, min, max, unit, help}; the result never changes
 * afterwards, so it may be shared freely and replaced wholesale on reload.
 * Every fallback (per-domain section -> global key, per-class key -> plain
 * key -> class default, timeout.PHASE.first -> timeout.PHASE) is resolved at
 * load time: a lookup is an array index.
 *
 * Ownership: cfg_load() returns a struct cfg the caller frees with
 * cfg_free(); every pointer a lookup returns lives as long as the cfg.
 */
#ifndef RELAYQ_CFG_H
#define RELAYQ_CFG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "relayq_version.h" /* RELAYQ_VERSION, from CMakeLists.txt */

/* sysexits.h values, named here so every module uses the same ones. */
enum rq_exit {
	RQ_EX_OK = 0,
	RQ_EX_USAGE = 64,
	RQ_EX_DATAERR = 65,
	RQ_EX_NOINPUT = 66,
	RQ_EX_SOFTWARE = 70,
	RQ_EX_OSERR = 71,
	RQ_EX_CANTCREAT = 73,
	RQ_EX_IOERR = 74,
	RQ_EX_TEMPFAIL = 75,
	RQ_EX_NOPERM = 77,
	RQ_EX_CONFIG = 78,
};

/* Priority classes; dsn is the class of notices relayq itself sends. */
enum cfg_class {
	CFG_URGENT = 0,
	CFG_NORMAL = 1,
	CFG_NONURGENT = 2,
	CFG_DSN = 3,
};
#define CFG_NCLASS 4

/* Every configuration key.  The table in cfg_table.c is indexed by these. */
enum cfg_key {
	/* paths and identity (global only) */
	CFG_SPOOL_DIR,
	CFG_QUEUE_DIR,
	CFG_HOSTNAME,
	CFG_LOG_FILE,
	CFG_USER,
	CFG_QUEUE_MAP_SIZE,
	CFG_RESCAN_INTERVAL,
	CFG_MAX_MESSAGE_SIZE,
	CFG_INTAKE_BATCH,
	CFG_MAX_RECIPIENTS,
	CFG_HOPCOUNT_LIMIT,
	CFG_MIN_FREE_SPACE,
	/* expiry (global, per class) */
	CFG_T_QUEUEWARN,
	CFG_T_QUEUERETURN,
	CFG_BOUNCE_SIZE_LIMIT,
	CFG_NOTIFY_POSTMASTER,
	/* routing and limits (per domain) */
	CFG_RELAYHOST,
	CFG_SMTP_PORT,
	CFG_DNS_SERVER,
	CFG_MAX_CONNECTIONS,
	CFG_INITIAL_DEST_CONCURRENCY,
	CFG_MAX_CONNECTIONS_TOTAL,
	CFG_MAX_DELIVERIES_PER_CONN,
	CFG_MAX_RCPTS_PER_TXN,
	CFG_MAX_MESSAGE_RATE,
	CFG_PRIORITY_WEIGHTS,
	CFG_TLS,
	CFG_TLS_CA_FILE,
	CFG_CONN_CACHE_TIME,
	CFG_RETRY_MIN,
	CFG_RETRY_MAX,
	CFG_DELIVERY_LEASE,
	CFG_T_HOSTSTATUS,
	/* SMTP phase timeouts (per domain, per class, .first variants) */
	CFG_T_CONNECT,
	CFG_T_INITIAL,
	CFG_T_HELO,
	CFG_T_STARTTLS,
	CFG_T_MAIL,
	CFG_T_RCPT,
	CFG_T_DATAINIT,
	CFG_T_DATABLOCK,
	CFG_T_DATAFINAL,
	CFG_T_RSET,
	CFG_T_QUIT,
	CFG_T_MISC,
	/* smarthost: SMTP AUTH, implicit TLS, client certificates, routes
	 * (cfg_files.c, cfg_route.c) */
	CFG_AUTH_FILE,
	CFG_AUTH_MECHANISMS,
	CFG_AUTH_PLAINTEXT,
	CFG_TLS_WRAPPER,
	CFG_TLS_CERT_FILE,
	CFG_TLS_KEY_FILE,
	CFG_TLS_FINGERPRINT,
	CFG_SENDER_RELAYHOST,
	CFG_FALLBACK_RELAY,
	/* cluster: limits and host status shared through Redis
	 * (cfg_cluster.c checks the values, cluster/ uses them) */
	CFG_CLUSTER_REDIS,
	CFG_CLUSTER_PASSWORD,
	CFG_CLUSTER_NAME,
	CFG_CLUSTER_NODE,
	CFG_CLUSTER_LEASE_TIME,
	CFG_CLUSTER_FALLBACK,
	/* the machine's own mail (issue 13): identity, aliases, sender
	 * rewriting (cfg_ident.c, cfg_files.c) */
	CFG_ORIGIN,
	CFG_HELO_NAME,
	CFG_POSTMASTER,
	CFG_ALIAS_FILE,
	CFG_LOCAL_FALLBACK,
	CFG_SENDER_MAP,
	/* logging (issue 13): log_file's syslog */
	CFG_SYSLOG_FACILITY,
	/* observability (issue 15): the daemon's HTTP listener */
	CFG_HTTP_LISTEN,
	CFG_HTTP_TOKEN,
	/* TLS policy (issue 17): DANE's resolver trust */
	CFG_DNSSEC,
	CFG_DNSSEC_TRUST_REMOTE,
	CFG_MTA_STS,
	CFG_MTA_STS_PORT,
	CFG_TLSRPT,
	CFG_TLSRPT_ORGANIZATION,
	CFG_TLSRPT_CONTACT,
	CFG_DNSSEC_TRUST_ANCHOR,
	/* DKIM signing at intake (cfg_dkim.c) */
	CFG_DKIM_KEY_FILE,
	CFG_DKIM_SELECTOR,
	CFG_DKIM_DOMAIN,
	CFG_DKIM_KEY_TABLE,
	CFG_NKEYS
};

/* TLS levels for the `tls` key. */
enum cfg_tls {
	CFG_TLS_NONE = 0,
	CFG_TLS_MAY,
	CFG_TLS_ENCRYPT,
	CFG_TLS_VERIFY,
	/* not a value of `tls`: the effective level where tls_fingerprint
	 * is set (the certificate must match; no CA or name check), shown
	 * as "fingerprint" */
	CFG_TLS_PINNED,
	/* `tls = dane`: DANE where the MX host has secure usable TLSA
	 * records, else may; `dane-only`: DANE or nothing (RFC 7672) */
	CFG_TLS_DANE,
	CFG_TLS_DANE_ONLY,
};

/* A parsed `host:port` / `[host]:port`; host is empty when unset. */
struct cfg_hostport {
	char host[256];
	uint16_t port; /* 0 when none was given */
	bool no_mx; /* the host was in brackets: no MX lookup */
};

/* A parsed rate such as `100/s`; count 0 means unlimited. */
struct cfg_rate {
	uint32_t count;
	uint32_t per; /* seconds */
};

struct cfg;
struct cfg_scope; /* the effective settings for one destination */

enum cfg_result {
	CFG_OK = 0,
	CFG_ERR_FILE, /* missing or unreadable file */
	CFG_ERR_SYNTAX, /* FILE:LINE: error, see the message */
};

/*
 * Parses the config file PATH.  On success *out is a new cfg.  On error
 * err (of errlen bytes) holds "FILE:LINE: what is wrong" (no LINE for a
 * missing file) and *out is NULL.
 */
enum cfg_result
cfg_load(const char *path, struct cfg **out, char *err, size_t errlen);

/* Parses config text held in memory (the fuzzer's entry point). */
enum cfg_result cfg_parse_buf(const char *name, const char *buf, size_t len,
    struct cfg **out, char *err, size_t errlen);

/* Frees a cfg and everything its lookups returned. */
void cfg_free(struct cfg *);

/* The file name the cfg was loaded from. */
const char *cfg_path(const struct cfg *);

/*
 * Returns the scope for destination DOMAIN: its [domain] section if there
 * is one (exact name, or a `.parent` section for subdomains), else the
 * global scope.  DOMAIN may be NULL for the global scope.
 */
const struct cfg_scope *cfg_scope(const struct cfg *, const char *domain);

/* The section name of a scope, or NULL for the global scope. */
const char *cfg_scope_name(const struct cfg_scope *);

/* Integer, size, boolean and enum keys. */
int64_t cfg_int(const struct cfg_scope *, enum cfg_key);

/* String keys (never NULL; "" when unset). */
const char *cfg_str(const struct cfg_scope *, enum cfg_key);

/*
 * Interval keys in seconds, for a class and (for SMTP phase timeouts)
 * a message's first attempt.
 */
int64_t
cfg_time(const struct cfg_scope *, enum cfg_key, enum cfg_class, bool first);

/* Structured keys. */
const struct cfg_hostport *cfg_hostport(const struct cfg_scope *, enum cfg_key);
struct cfg_rate cfg_rate(const struct cfg_scope *, enum cfg_key);
/* priority_weights: the weight of each of urgent, normal, non-urgent. */
unsigned cfg_weight(const struct cfg_scope *, enum cfg_class);

/* Writes every effective setting, sorted, one `key = value` per line;
 * after cfg_files_load() also the credentials (secrets as ********) and
 * the effective route of each destination (cfg_route.c). */
void cfg_dump(const struct cfg *, FILE *);

/* Whether KEY was written in this scope itself (not inherited). */
bool cfg_is_set(const struct cfg_scope *, enum cfg_key);

/* The config file line where KEY's value for this scope was written
 * (in the scope, else globally); 0 for a default. */
int cfg_line(const struct cfg *, const struct cfg_scope *, enum cfg_key);

/* ---- smarthost: credentials, routes, client certificates ----
 * (cfg_files.c loads the files, cfg_route.c answers the questions) */

/* SASL mechanisms of `auth_mechanisms`. */
enum cfg_sasl {
	CFG_SASL_PLAIN = 1,
	CFG_SASL_LOGIN,
	CFG_SASL_XOAUTH2,
	CFG_SASL_OAUTHBEARER,
};
#define CFG_SASL_MAX 4

/*
 * One auth_file entry.  The password and the token command live in
 * memory kept out of core dumps and cleansed when the cfg is freed;
 * nothing here is ever logged but user and id.
 */
struct cfg_auth {
	const char *key; /* DESTINATION, normalized: "[host]:port", "@dom" */
	const char *user;
	const char *password; /* NULL for a token command */
	/* The token command (`user:|/path args`), NULL-terminated; argv[0]
	 * is an absolute path; NULL for a password. */
	const char *const *argv;
	/* "user (FILE:LINE)": names the credential in connection cache
	 * keys and check-config; holds no secret. */
	const char *id;
	const char *file;
	int line;
};

/* A client certificate and its key as read from tls_cert_file and
 * tls_key_file (PEM text; the key in memory kept out of core dumps). */
struct cfg_pem {
	const char *cert, *key;
	size_t certlen, keylen;
	const char *cert_file, *key_file;
	int line; /* config line of tls_cert_file (or tls_key_file) */
};

/*
 * Reads the files a config names, for the daemon and check-config (not
 * for commands any user may run): auth_file and http_token, refused
 * unless each is a regular file owned by root or the daemon's user and
 * neither readable nor writable by group or others; sender_relayhost;
 * and each scope's
 * tls_cert_file and tls_key_file (the key not world-readable).  Call it
 * once, before the cfg is shared.  On error ERR holds "FILE:LINE:
 * message" (the config file's line for a file that cannot be used, the
 * file's own line for its syntax; never a secret).
 */
enum cfg_result cfg_files_load(struct cfg *, char *err, size_t errlen);

/* The credentials of mail from SENDER ("" for <>) through RELAY on
 * PORT: by sender first (user@domain, @domain, <>), then by the relay
 * as written ([host]:port, [host], host:port, host); NULL: none. */
const struct cfg_auth *cfg_auth_lookup(const struct cfg *, const char *sender,
    const struct cfg_hostport *relay, uint16_t port);

/* Every auth_file entry, in file order (N into *N); NULL when none. */
const struct cfg_auth *cfg_auth_entries(const struct cfg *, size_t *n);

/* The client certificate of a scope, or NULL (none, or not loaded). */
const struct cfg_pem *cfg_tls_client_cert(const struct cfg_scope *);

/* Every distinct client certificate of the cfg (N into *N). */
const struct cfg_pem *cfg_tls_client_certs(const struct cfg *, size_t *n);

/* The bearer token read from http_token by cfg_files_load() (in
 * memory kept out of core dumps), or NULL: none set, or not loaded. */
const char *cfg_http_token(const struct cfg *);

/* Where mail for one recipient domain from one sender goes. */
struct cfg_route {
	const struct cfg_scope *scope; /* the recipient domain's settings */
	const struct cfg_hostport *relay; /* NULL: MX of the domain */
	uint16_t port; /* the relay's port, or smtp_port for MX */
	const struct cfg_auth *auth; /* NULL: none (always for MX) */
	/* "domain" ([domain] relayhost), "sender" (sender_relayhost),
	 * "relayhost" (the global one) or "mx" */
	const char *via;
};

/*
 * The route of mail from SENDER ("" for <>) to DOMAIN, by precedence:
 * the relayhost of DOMAIN's [domain] section (when the section sets
 * one; empty means MX), the sender's sender_relayhost entry, the global
 * relayhost, MX.
 */
void cfg_route_get(const struct cfg *, const char *domain, const char *sender,
    struct cfg_route *out);

/* The fallback_relay list of a scope, at most MAX into OUT; returns
 * how many.  A relay without a port gets smtp_port. */
#define CFG_FALLBACK_MAX 16
size_t cfg_fallback_relays(
    const struct cfg_scope *, struct cfg_hostport *out, size_t max);

/*
 * The SASL mechanisms to try with credentials AUTH, best first: those
 * of auth_mechanisms that fit the credential (PLAIN and LOGIN for a
 * password, XOAUTH2 and OAUTHBEARER for a token), or, when it names
 * none that fits, that kind's default order.  Returns how many.
 */
size_t cfg_auth_mechs(const struct cfg_scope *, const struct cfg_auth *auth,
    enum cfg_sasl out[CFG_SASL_MAX]);

/* The name of a mechanism ("PLAIN", ...). */
const char *cfg_sasl_name(enum cfg_sasl);

/* The effective TLS level of a connection to PORT with credentials AUTH
 * (or NULL): fingerprint when tls_fingerprint is set; else `tls`, raised
 * to encrypt with credentials (unless auth_plaintext) and with implicit
 * TLS (cfg_tls_wrapper). */
enum cfg_tls cfg_tls_level(
    const struct cfg_scope *, const struct cfg_auth *auth, uint16_t port);

/* The name of a level ("may", ..., "fingerprint"). */
const char *cfg_tls_name(enum cfg_tls);

/* Whether a connection to PORT starts with TLS: tls_wrapper, or port
 * 465 (RFC 8314's submissions port). */
bool cfg_tls_wrapper(const struct cfg_scope *, uint16_t port);

/* The tls_fingerprint digests (SHA-256, 32 bytes each), at most MAX;
 * returns how many. */
#define CFG_FINGERPRINT_MAX 16
size_t cfg_fingerprints(
    const struct cfg_scope *, unsigned char (*out)[32], size_t max);

/* Parses `host:port` / `[host]:port` into HP; 0, or -1 with *why. */
int cfg_hostport_parse(
    const char *s, size_t len, struct cfg_hostport *hp, const char **why);

/* Formats HP as written ("[host]:port", "host"), into BUF. */
void cfg_hostport_format(const struct cfg_hostport *hp, char *buf, size_t len);

/* ---- the machine's own mail: identity, aliases, sender map ----
 * (cfg_ident.c derives hostname, origin, helo_name, postmaster and
 * alias_file where the config leaves them unset; cfg_files.c reads
 * alias_file and sender_map) */

struct mail_local; /* mail.h */

/*
 * The rules intake applies to addresses (origin, hostname,
 * local_fallback, and once cfg_files_load() or cfg_local_load() read
 * them the alias table and the sender map), by reference: they stay
 * valid after the cfg is freed until cfg_local_release(), from any
 * thread (intake's readers across a reload).
 */
struct cfg_local;
struct cfg_local *cfg_local_hold(const struct cfg *);
void cfg_local_release(struct cfg_local *);
const struct mail_local *cfg_local_rules(const struct cfg_local *);
/* The same rules, valid as long as the cfg. */
const struct mail_local *cfg_mail_local(const struct cfg *);

/*
 * Reads alias_file and sender_map alone, with the checks and errors of
 * cfg_files_load() (for `sendmail -bv`, `-bi` and newaliases, which any
 * user may run).  Call it before the cfg is shared.
 */
enum cfg_result cfg_local_load(struct cfg *, char *err, size_t errlen);

/* The warnings of the alias file read ("FILE:LINE: ..." for |command,
 * /file and :include: entries, which relayq skips, and names given
 * twice); N into *N. */
const char *const *cfg_alias_warnings(const struct cfg *, size_t *n);
/* ---- DKIM signing keys (cfg_dkim.c) ---- */

enum cfg_dkim_alg {
	CFG_DKIM_RSA_SHA256 = 1,
	CFG_DKIM_ED25519_SHA256, /* RFC 8463 */
};

/* A signing key: mail whose From: domain matches SENDER is signed with
 * d=DOMAIN s=SELECTOR.  The key is PKCS#8 PEM text in memory kept out
 * of core dumps; it is never logged. */
struct cfg_dkim_key {
	const char *sender; /* "example.com"; ".example.com": subdomains */
	const char *domain; /* d= */
	const char *selector; /* s= */
	enum cfg_dkim_alg alg; /* from the key's type */
	unsigned bits; /* RSA: the modulus size; Ed25519: 256 */
	const char *pem; /* NUL-terminated */
	size_t pemlen;
	/* the key parsed (an OpenSSL EVP_PKEY *, used read-only by any
	 * thread, freed with the keys): what signs */
	void *evp;
	const char *key_file;
	const char *file; /* where it was set: the config or the table */
	int line;
};

/* The signing keys of a loaded cfg, shared: reader threads hold a
 * reference while a reload frees the cfg. */
struct cfg_dkim;

/* The most signatures one message gets (a table may name an RSA and an
 * Ed25519 key for one domain: RFC 8463 dual signing). */
#define CFG_DKIM_SIGS_MAX 4

/* A new reference to CFG's signing keys (after cfg_files_load()), or
 * NULL when none is configured; give it back with cfg_dkim_release(). */
struct cfg_dkim *cfg_dkim_hold(const struct cfg *);
void cfg_dkim_release(struct cfg_dkim *);

/*
 * The keys for mail whose From: address is in DOMAIN (lowercase), at
 * most CFG_DKIM_SIGS_MAX into OUT, returns how many (0: unsigned):
 * dkim_key_table's lines for DOMAIN itself, else those for the nearest
 * ".parent" entry, else dkim_key_file when DOMAIN is dkim_domain or one
 * of its subdomains.
 */
size_t cfg_dkim_lookup(const struct cfg_dkim *, const char *domain,
    const struct cfg_dkim_key **out);

/* "rsa-sha256" or "ed25519-sha256" (the a= tag). */
const char *cfg_dkim_alg_name(enum cfg_dkim_alg);

/* The name of a class ("urgent", "normal", "non-urgent", "dsn"). */
const char *cfg_class_name(enum cfg_class);

/*
 * Parses a `Priority:` value (RFC 2156, any case, surrounding blanks
 * ignored) or a class name; returns the class, or -1 if unknown.
 */
int cfg_class_parse(const char *s, size_t len);

/*
 * Parses an interval in sendmail's syntax ("3d22h4s", "90s", "1w"); a bare
 * number is multiplied by DEFUNIT seconds.  "now" is accepted when
 * allow_now.  Returns 0 and sets *secs, or -1 with *why set to a static
 * description.
 */
int cfg_interval_parse(const char *s, size_t len, int64_t defunit,
    bool allow_now, int64_t *secs, const char **why);

/* Formats seconds back as the shortest interval ("1d2h"). */
void cfg_interval_format(int64_t secs, char *buf, size_t len);

/* ---- cluster: limits shared through Redis (cfg_cluster.c) ---- */

/* cluster_redis parsed: an IP address and port, or a unix socket. */
struct cfg_redis_addr {
	bool unix_socket;
	char ip[46]; /* numeric, never a name */
	uint16_t port;
	char path[108]; /* sun_path */
};

/* Parses cluster_redis (`IP:port`, `[IPv6]:port` or `unix:/path`; no
 * host names) into OUT; 0, or -1 with *WHY (also for ""). */
int cfg_redis_addr_parse(
    const char *s, size_t len, struct cfg_redis_addr *out, const char **why);

/* What a node does while Redis is unreachable (cluster_fallback). */
enum cfg_cluster_fallback {
	CFG_CLUSTER_SHARE = 0, /* limit / live nodes, at least 1 */
	CFG_CLUSTER_LOCAL, /* the full limits, as a lone node */
	CFG_CLUSTER_HOLD, /* no new connections */
};
enum cfg_cluster_fallback cfg_cluster_fallback(const struct cfg *);

/* The Redis password read from cluster_password by cfg_files_load()
 * (secret memory, cleansed with the cfg), or NULL: none. */
const char *cfg_cluster_password(const struct cfg *);

/* ---- shared helpers: logging ---- */

/* Severities, as syslog's: crit (fatal()), err, warning, info, debug. */
enum log_level {
	LOG_LVL_CRIT,
	LOG_LVL_ERR,
	LOG_LVL_WARN,
	LOG_LVL_INFO,
	LOG_LVL_DEBUG
};

/*
 * Where lines go, as the log_file key says: "" (or NULL) to syslog with
 * FACILITY (a LOG_* facility code of <syslog.h>, see
 * log_facility_parse()), "-" to standard error, else to the file DEST.
 * Each line has one identity per component as Postfix's have
 * ("relayq/SUBSYS[PID]: text", SUBSYS "relayq" when NULL); syslog adds
 * its own header, a file or standard error get syslog's traditional one
 * ("Nov 22 03:07:40 HOST relayq/SUBSYS[PID]: text").  Syslog is
 * /dev/log ($RELAYQ_SYSLOG_SOCKET, a test aid, when set), connected at
 * the first line and again after an error; a line syslog does not take
 * goes to standard error instead.  A file DEST is never followed when it
 * is a link (ELOOP) and must be a regular file with one link (else
 * EPERM).  Before log_open() lines go to standard error.  HOSTNAME (its
 * first label) is the traditional header's host, as log_host_set().
 * Returns 0, or -1 with errno set (the destination is then unchanged).
 */
int log_open(const char *dest, int facility, const char *hostname);
/* Sets the host name of the traditional header (first label only). */
void log_host_set(const char *hostname);
/* Closes a log file or the syslog socket; lines go to standard error. */
void log_close(void);
/* The syslog facility code of NAME[0..LEN) (mail, daemon, user,
 * local0..local7), or -1; and the name of a code ("" if none). */
int log_facility_parse(const char *name, size_t len);
const char *log_facility_name(int facility);
/* Sets the lowest level written (default LOG_LVL_INFO). */
void log_set_level(enum log_level);
void log_msg(enum log_level, const char *subsys, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void log_vmsg(enum log_level, const char *subsys, const char *fmt, va_list)
    __attribute__((format(printf, 3, 0)));
/*
 * Between log_hold() and log_release() (they nest) the calling thread's
 * lines are gathered and written together, in order and after each
 * other: to a file by as few write(2)s as fit 64 KiB each (a thousand
 * lines of one commit cost one system call, not a thousand), to syslog
 * one datagram each, without another thread's line in between.
 */
void log_hold(void);
void log_release(void);
/*
 * Makes BUF[0..LEN) safe as (part of) one log line, in place, and
 * returns its new length (<= LEN): every byte that is a control
 * character (C0, DEL, C1 as a byte or as UTF-8) or not part of valid
 * UTF-8, and the line and paragraph separators U+2028/U+2029, become
 * '?' (as Postfix's printable() does), so no value from outside can end
 * a line or forge another.  log_vmsg() applies it to every line.
 */
size_t log_line_escape(char *buf, size_t len);
#define log_info(sub, ...) log_msg(LOG_LVL_INFO, (sub), __VA_ARGS__)
#define log_warn(sub, ...) log_msg(LOG_LVL_WARN, (sub), __VA_ARGS__)
#define log_err(sub, ...) log_msg(LOG_LVL_ERR, (sub), __VA_ARGS__)
#define log_debug(sub, ...) log_msg(LOG_LVL_DEBUG, (sub), __VA_ARGS__)

/* Logs "fatal: ..." (severity crit), also on standard error when the
 * line went elsewhere (not when standard error is the journal's stream,
 * $JOURNAL_STREAM), and exits with CODE: the environment is broken. */
void fatal(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));

/* ---- shared helpers: allocation (abort on out of memory) ---- */
void *xmalloc(size_t);
void *xcalloc(size_t, size_t);
void *xrealloc(void *, size_t);
char *xstrdup(const char *);
char *xstrndup(const char *, size_t);

/* Puts S at BUF + OFF, cut to fit BUF's LEN bytes, NUL-terminated (OFF <
 * LEN); returns the new end.  What snprintf(BUF, LEN, "%s%s", ...) makes
 * of strings, without a format parse, for what runs once a message. */
size_t rq_str_put(char *buf, size_t len, size_t off, const char *s);
/* Copies remote text into BUF: at most LEN-1 bytes, CR/LF/NUL/controls
 * turned into spaces, so it is safe for a log line or a DSN. */
void rq_sanitize(char *buf, size_t len, const char *s, size_t slen);
/* Lowers the ASCII letters of S in place (names, domains, keys: any
 * case, C locale); returns S. */
char *rq_lower(char *s);
/* Writes V in decimal at P (room for 20 digits, no NUL); returns how
 * many digits it wrote.  For text made once a message: no printf. */
size_t rq_utoa(char *p, uint64_t v);

/* Overwrites N bytes at P with zeros the compiler cannot drop (secrets
 * after use). */
void rq_cleanse(void *p, size_t n);

/* The current time in seconds / microseconds (CLOCK_REALTIME). */
int64_t rq_now(void);
int64_t rq_now_us(void);
/* The monotonic clock in microseconds (deadlines, lateness). */
int64_t rq_mono_us(void);

/* ---- shared helpers: text ---- */

/* The length (2-4) of the valid UTF-8 sequence at S, N bytes left, and
 * its code point in *CP; 0 when there is none (overlong forms,
 * surrogates and beyond U+10FFFF are not valid). */
size_t rq_utf8_len(const unsigned char *s, size_t n, unsigned *cp);

/* Where a text writer puts what it writes: N bytes at P, to ARG. */
typedef void rq_put_fn(void *arg, const char *p, size_t n);
/* Writes S as a JSON string through PUT (NULL: null): quotes,
 * backslashes and control bytes escaped, each byte that is not part of
 * valid UTF-8 as the code point of the same value (as Latin-1). */
void rq_json_str(rq_put_fn *put, void *arg, const char *s);

/* The base64 length of N bytes (without the NUL). */
#define RQ_B64_LEN(n) (((n) + 2) / 3 * 4)

/* Writes base64 (RFC 4648, padded) of IN (LEN bytes) and a NUL to OUT,
 * which holds RQ_B64_LEN(LEN) + 1 bytes; returns the length. */
size_t rq_base64_encode(const void *in, size_t len, char *out);

/*
 * Decodes base64 IN (LEN bytes, padded, no blanks) into OUT (OUTLEN
 * bytes); *N gets the length.  False when IN is not base64 or does not
 * fit.  SMTP AUTH's 334 challenges and HTTP Basic credentials
 * go through this.
 */
bool rq_base64_decode(
    const char *in, size_t len, unsigned char *out, size_t outlen, size_t *n);

/* A growing output buffer: zero it to start; once written to, P holds
 * LEN bytes and a NUL; the caller frees P. */
struct rq_buf {
	char *p;
	size_t len, cap;
};
/* Appends N bytes at S, the string S, formatted text (any length). */
void rq_buf_add(struct rq_buf *, const char *s, size_t n);
void rq_buf_str(struct rq_buf *, const char *s);
void rq_buf_printf(struct rq_buf *, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
