/*
 * cfg_files.c - the files a config names for the daemon: auth_file (the
 * credentials, in Postfix's sasl_passwd shape), http_token (the HTTP
 * listener's bearer token), sender_relayhost (routes by envelope
 * sender), each scope's tls_cert_file / tls_key_file, the Redis
 * password of cluster_password, and the local-mail tables alias_file
 * (aliases(5)) and sender_map (parsed by cfg/mail_alias.c and
 * cfg/mail_map.c; cfg_local_load() reads these two alone, for
 * sendmail -bv/-bi).
 * cfg_route.c answers the questions about them (which credentials, which
 * route); this file reads, checks and parses them.
 *
 * Public: cfg_files_load(), cfg_local_load(), cfg_auth_entries(),
 * cfg_tls_client_cert(), cfg_tls_client_certs(), cfg_http_token().
 * cfg-private: cfg_files_free(), cfg_auth_parse(), cfg_auth_table_free(),
 * cfg_sender_map_parse(), cfg_files_sender_key(), cfg_http_token_parse(),
 * and for cfg_dkim.c cfg_files_secret_alloc(), cfg_files_secret_read(),
 * cfg_files_table_read(); the parsers are pure functions over a buffer
 * (unit-tested and fuzzed).
 *
 * Invariants: a secret (a password, a token command, a private key) is
 * only ever in memory from secret_alloc(): excluded from core dumps
 * (MADV_DONTDUMP) and zeroed before it is unmapped; an error message
 * names the file and line and at most the DESTINATION, never the rest
 * of a line of auth_file; auth_file, cluster_password and http_token
 * (a bearer token, its first line) are refused unless each is a
 * regular file owned by root or the daemon's user and neither readable
 * nor writable by group or others.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cfg_int.h"

#define FILE_MAX (1024 * 1024) /* bytes of one file */

/* ---- memory for secrets ---- */

/* Returns LEN+1 zeroed bytes out of core dumps, owned by F. */
char *
cfg_files_secret_alloc(struct cfg_files *f, size_t len)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t n = (len + 1 + page - 1) / page * page;
	void *p;

	p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
	    -1, 0);
	if (p == MAP_FAILED) {
		fprintf(stderr, "relayq: out of memory\n");
		abort();
	}
	(void)madvise(p, n, MADV_DONTDUMP);
	f->secret = xrealloc(f->secret, (f->nsecret + 1) * sizeof(*f->secret));
	f->secretlen = xrealloc(
	    f->secretlen, (f->nsecret + 1) * sizeof(*f->secretlen));
	f->secret[f->nsecret] = p;
	f->secretlen[f->nsecret++] = n;
	return p;
}

/* Frees the tables of auth_file entries (not the text they point to). */
void
cfg_auth_table_free(struct cfg_auth *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free((char *)v[i].key);
		free((char *)v[i].id);
		free((void *)v[i].argv);
	}
	free(v);
}

void
cfg_files_free(struct cfg_files *f)
{
	if (f == NULL)
		return;
	cfg_auth_table_free(f->auth, f->nauth);
	free(f->auth_sorted);
	for (size_t i = 0; i < f->nsenders; i++) {
		free((char *)f->senders[i].key);
		free((char *)f->senders[i].text);
	}
	free(f->senders);
	for (size_t i = 0; i < f->npems; i++)
		free((char *)f->pems[i].cert);
	free(f->pems);
	cfg_dkim_release(f->dkim);
	for (size_t i = 0; i < f->nsecret; i++) {
		rq_cleanse(f->secret[i], f->secretlen[i]);
		munmap(f->secret[i], f->secretlen[i]);
	}
	free(f->secret);
	free(f->secretlen);
	free(f);
}

/* ---- parsing ---- */

/* Records "NAME:LINE: message" in ERR; is CFG_ERR_SYNTAX. */
#define ferr(...) (cfg_file_err(__VA_ARGS__), CFG_ERR_SYNTAX)

/* Normalizes a sender key ("user@domain", "@domain", "<>") of LEN bytes
 * into OUT (lowercase); 0, or -1 when it is not one. */
int
cfg_files_sender_key(const char *s, size_t len, char *out, size_t outlen)
{
	const char *at;

	if (len + 1 > outlen || len == 0)
		return -1;
	if (len == 2 && s[0] == '<' && s[1] == '>') {
		memcpy(out, "<>", 3);
		return 0;
	}
	at = NULL;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch <= 0x20 || ch == 0x7f || ch == '<' || ch == '>')
			return -1;
		if (ch == '@' && at != NULL)
			return -1; /* a@b@c */
		if (ch == '@')
			at = s + i;
		/* the domain is a domain name: "me@example.com:PW" (a
		 * credentials line with its fields swapped) is no key */
		if (at != NULL && at != s + i && !isalnum(ch) && ch != '-' &&
		    ch != '.')
			return -1;
		out[i] = (char)tolower(ch);
	}
	out[len] = '\0';
	if (at == NULL || at == s + len - 1)
		return -1;
	return 0;
}

/* Quotes S (LEN bytes) for an error about a field that may be a
 * misplaced user:password: what follows a ':' is shown only when it is a
 * port (digits), else cut ("..."), so that no message shows a password. */
static const char *
quote_nosecret(const char *s, size_t len, char *q, size_t qlen)
{
	const char *c = memchr(s, ':', len);
	size_t d = c != NULL ? (size_t)(s + len - c - 1) : 0, k = 0;

	/* S is not NUL-terminated at LEN: count within it */
	while (k < d && c[1 + k] >= '0' && c[1 + k] <= '9')
		k++;
	if (c == NULL || (d > 0 && k == d))
		return cfg_quote(s, len, q, qlen);
	cfg_quote(s, (size_t)(c - s), q, qlen);
	if (strlen(q) + 5 < qlen)
		strcat(q, ":...");
	return q;
}

/* Normalizes a host DESTINATION ("[host]:port", "host") into OUT;
 * 0, or -1 with *WHY. */
static int
host_key(const char *s, size_t len, char *out, size_t outlen, const char **why)
{
	struct cfg_hostport hp;

	if (cfg_hostport_parse(s, len, &hp, why) < 0)
		return -1;
	if (hp.host[0] == '\0') {
		*why = "empty host name";
		return -1;
	}
	cfg_hostport_format(&hp, out, outlen);
	rq_lower(out);
	return 0;
}

/*
 * Splits the token command S in place into words, as a shell would
 * without expanding anything: blanks separate, '...' is literal, "..."
 * takes \" and \\, a backslash outside quotes takes the next byte.
 * Sets *ARGVP (NULL-terminated, malloc'd; the words point into S).
 */
static int
argv_split(char *s, const char *const **argvp, const char **why)
{
	char *r = s, *w, *start;
	const char **argv = NULL;
	size_t n = 0;

	for (;;) {
		bool more;

		while (*r == ' ' || *r == '\t')
			r++;
		if (*r == '\0')
			break;
		start = w = r;
		while (*r != '\0' && *r != ' ' && *r != '\t') {
			char q = *r;

			if (q == '\'' || q == '"') {
				r++;
				while (*r != '\0' && *r != q) {
					if (q == '"' && *r == '\\' &&
					    (r[1] == '"' || r[1] == '\\'))
						r++;
					*w++ = *r++;
				}
				if (*r == '\0') {
					free(argv);
					*why = "unbalanced quote in the token "
					       "command";
					return -1;
				}
				r++;
			} else if (q == '\\' && r[1] != '\0') {
				r++;
				*w++ = *r++;
			} else {
				*w++ = *r++;
			}
		}
		more = *r != '\0';
		*w = '\0';
		if (more)
			r++;
		argv = xrealloc(argv, (n + 2) * sizeof(*argv));
		argv[n++] = start;
		argv[n] = NULL;
	}
	if (n == 0) {
		*why = "empty token command";
		return -1;
	}
	if (argv[0][0] != '/') {
		free(argv);
		*why = "the token command must be an absolute path";
		return -1;
	}
	*argvp = argv;
	return 0;
}

/* Orders auth entries by key, for bsearch. */
static int
auth_cmp(const void *a, const void *b)
{
	const struct cfg_auth *const *x = a, *const *y = b;

	return strcmp((*x)->key, (*y)->key);
}

/*
 * Parses one auth_file line (LINE, LEN bytes, blanks trimmed, writable:
 * fields are NUL-terminated in place) numbered LNO of NAME into *A.
 */
static enum cfg_result
auth_line(const char *name, int lno, char *line, size_t len, struct cfg_auth *a,
    char *err, size_t errlen)
{
	char key[300], q[128], *val, *colon, *secret, *end = line + len;
	size_t klen, voff;
	const char *why = NULL;

	memset(a, 0, sizeof(*a));
	klen = cfg_line_key(line, len, &voff);
	val = line + voff;
	if (val == end)
		return ferr(err, errlen, name, lno,
		    "expected DESTINATION user:password or "
		    "DESTINATION user:|command");
	if (memchr(line, '@', klen) != NULL || (klen == 2 && line[0] == '<')) {
		if (cfg_files_sender_key(line, klen, key, sizeof(key)) < 0)
			return ferr(err, errlen, name, lno,
			    "bad sender \"%s\" (expected user@domain, "
			    "@domain or <>)",
			    quote_nosecret(line, klen, q, sizeof(q)));
	} else if (host_key(line, klen, key, sizeof(key), &why) < 0) {
		return ferr(err, errlen, name, lno,
		    "bad DESTINATION \"%s\": %s",
		    quote_nosecret(line, klen, q, sizeof(q)), why);
	}
	colon = memchr(val, ':', (size_t)(end - val));
	if (colon == NULL)
		return ferr(err, errlen, name, lno,
		    "expected user:password or user:|command after \"%s\"",
		    key);
	if (colon == val)
		return ferr(
		    err, errlen, name, lno, "empty user name for \"%s\"", key);
	secret = colon + 1;
	*colon = '\0';
	*end = '\0';
	if (*secret == '\0')
		return ferr(
		    err, errlen, name, lno, "empty password for \"%s\"", key);
	a->user = val;
	if (*secret == '|') {
		if (argv_split(secret + 1, &a->argv, &why) < 0)
			return ferr(
			    err, errlen, name, lno, "%s for \"%s\"", why, key);
	} else {
		a->password = secret;
	}
	a->key = xstrdup(key);
	a->file = name;
	a->line = lno;
	return CFG_OK;
}

/*
 * Parses auth_file text BUF (LEN bytes; BUF[LEN] must exist and is set
 * to NUL) in place: user, password and command point into BUF.  NAME is
 * the file name for errors and entries (not copied).  *OUT is in file
 * order; free it with cfg_auth_table_free().
 */
enum cfg_result
cfg_auth_parse(const char *name, char *buf, size_t len, struct cfg_auth **out,
    size_t *nout, char *err, size_t errlen)
{
	struct cfg_auth *v = NULL;
	struct cfg_lines it = { name, buf, len, err, errlen, 0, 0 };
	const char *cl;
	size_t n = 0, llen;
	enum cfg_lines_result lr;
	enum cfg_result r = CFG_OK;

	buf[len] = '\0';
	while ((lr = cfg_lines_next(&it, &cl, &llen)) == CFG_LINES_OK) {
		char *line = buf + (cl - buf); /* BUF is ours to cut */
		int lno = it.lno;

		v = xrealloc(v, (n + 1) * sizeof(*v));
		r = auth_line(name, lno, line, llen, &v[n], err, errlen);
		if (r != CFG_OK)
			break;
		for (size_t i = 0; i < n; i++) {
			if (strcmp(v[i].key, v[n].key) == 0) {
				r = ferr(err, errlen, name, lno,
				    "duplicate DESTINATION \"%s\" (first on "
				    "line %d)",
				    v[n].key, v[i].line);
				n++;
				break;
			}
		}
		if (r != CFG_OK)
			break;
		{
			size_t idlen = strlen(v[n].user) + strlen(name) + 32;
			char *id = xmalloc(idlen);

			snprintf(id, idlen, "%s (%s:%d)", v[n].user, name, lno);
			v[n].id = id;
		}
		n++;
	}
	if (lr == CFG_LINES_BAD)
		r = CFG_ERR_SYNTAX;
	if (r != CFG_OK) {
		cfg_auth_table_free(v, n);
		return r;
	}
	*out = v;
	*nout = n;
	return CFG_OK;
}

/* Orders sender routes by key. */
static int
sender_cmp(const void *a, const void *b)
{
	return strcmp(((const struct cfg_sender_route *)a)->key,
	    ((const struct cfg_sender_route *)b)->key);
}

/*
 * Parses sender_relayhost text BUF (LEN bytes): one "SENDER RELAY" a
 * line, SENDER user@domain, @domain or <>, RELAY [host]:port or
 * host:port.  *OUT is sorted by key; free it with cfg_files_free()'s
 * rules (key and text are malloc'd).
 */
enum cfg_result
cfg_sender_map_parse(const char *name, const char *buf, size_t len,
    struct cfg_sender_route **out, size_t *nout, char *err, size_t errlen)
{
	struct cfg_sender_route *v = NULL;
	struct cfg_lines it = { name, buf, len, err, errlen, 0, 0 };
	const char *line;
	size_t n = 0, llen;
	enum cfg_lines_result lr;
	enum cfg_result r = CFG_OK;
	char q[128];

	while ((lr = cfg_lines_next(&it, &line, &llen)) == CFG_LINES_OK) {
		size_t voff, klen = cfg_line_key(line, llen, &voff);
		const char *val = line + voff, *why = NULL;
		char key[300];
		int lno = it.lno;

		if (val == line + llen) {
			r = ferr(err, errlen, name, lno,
			    "expected SENDER [host]:port");
			break;
		}
		if (cfg_files_sender_key(line, klen, key, sizeof(key)) < 0) {
			r = ferr(err, errlen, name, lno,
			    "bad sender \"%s\" (expected user@domain, @domain "
			    "or <>)",
			    cfg_quote(line, klen, q, sizeof(q)));
			break;
		}
		v = xrealloc(v, (n + 1) * sizeof(*v));
		memset(&v[n], 0, sizeof(v[n]));
		if (cfg_hostport_parse(val, (size_t)(line + llen - val),
			&v[n].relay, &why) < 0 ||
		    v[n].relay.host[0] == '\0') {
			r = ferr(err, errlen, name, lno,
			    "bad relay \"%s\" for %s: %s",
			    quote_nosecret(
				val, (size_t)(line + llen - val), q, sizeof(q)),
			    key, why ? why : "empty host name");
			break;
		}
		for (size_t i = 0; i < n; i++) {
			if (strcmp(v[i].key, key) == 0) {
				r = ferr(err, errlen, name, lno,
				    "duplicate sender \"%s\"", key);
				break;
			}
		}
		if (r != CFG_OK)
			break;
		v[n].key = xstrdup(key);
		v[n].text = xstrndup(val, (size_t)(line + llen - val));
		n++;
	}
	if (lr == CFG_LINES_BAD)
		r = CFG_ERR_SYNTAX;
	if (r != CFG_OK) {
		for (size_t i = 0; i < n; i++) {
			free((char *)v[i].key);
			free((char *)v[i].text);
		}
		free(v);
		return r;
	}
	if (n > 1)
		qsort(v, n, sizeof(*v), sender_cmp);
	*out = v;
	*nout = n;
	return CFG_OK;
}

/* ---- reading the files ---- */

/* What file_read() demands of a file besides being a regular file. */
enum file_check {
	FC_NONE, /* a certificate: only readable */
	FC_SECRET, /* auth_file: owner root or the daemon's, mode 0600 */
	FC_KEY, /* a private key: no access for others */
	FC_TABLE, /* sender_relayhost, alias_file, sender_map: owner root
		     or the daemon's, not writable by group or others */
};

/* The uid the daemon runs as: `user` when started as root, else ours. */
static uid_t
daemon_uid(const struct cfg *cfg, const char **name)
{
	const char *user = cfg_str(&cfg->global, CFG_USER);
	struct passwd *pw;

	*name = NULL;
	if (geteuid() == 0 && user[0] != '\0' &&
	    (pw = getpwnam(user)) != NULL) {
		*name = user;
		return pw->pw_uid;
	}
	return geteuid();
}

/*
 * Reads file PATH (named by WHAT at line LINE of file WHERE) into a
 * buffer: secret memory when F is given, after the checks of MODE.
 * *LEN gets the size.  NULL with ERR set ("WHERE:LINE: WHAT PATH: why")
 * on error.
 */
static char *
file_read_at(struct cfg *cfg, struct cfg_files *f, const char *where,
    const char *what, const char *path, int line, enum file_check mode,
    size_t *len, char *err, size_t errlen)
{
	const char *kname = what, *uname;
	struct stat st;
	char *buf;
	size_t got = 0;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		int e = errno;

		/* a root-owned secret is read at start, before the switch
		 * to `user`; a reload runs as that user */
		cfg_file_err(err, errlen, where, line, "%s %s: %s%s", kname,
		    path, strerror(e),
		    e == EACCES && geteuid() != 0
			? " (a reload reads it as the daemon's user: make it "
			  "that user's, mode 0600, or restart instead)"
			: "");
		return NULL;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		cfg_file_err(err, errlen, where, line,
		    "%s %s: not a regular file", kname, path);
		close(fd);
		return NULL;
	}
	if (mode == FC_SECRET) {
		uid_t du = daemon_uid(cfg, &uname);

		if (st.st_mode & (S_IRGRP | S_IWGRP | S_IROTH | S_IWOTH)) {
			cfg_file_err(err, errlen, where, line,
			    "%s %s: mode %04o lets group or others read or "
			    "write it (chmod 600 it)",
			    kname, path, (unsigned)(st.st_mode & 07777));
			close(fd);
			return NULL;
		}
		if (st.st_uid != 0 && st.st_uid != du) {
			cfg_file_err(err, errlen, where, line,
			    "%s %s: owned by uid %ld, not by root or the "
			    "daemon's user (%s, uid %ld)",
			    kname, path, (long)st.st_uid,
			    uname ? uname : "the current user", (long)du);
			close(fd);
			return NULL;
		}
	} else if (mode == FC_KEY && (st.st_mode & (S_IROTH | S_IWOTH))) {
		cfg_file_err(err, errlen, where, line,
		    "%s %s: mode %04o lets others read it (chmod o-rwx it)",
		    kname, path, (unsigned)(st.st_mode & 07777));
		close(fd);
		return NULL;
	} else if (mode == FC_TABLE &&
	    ((st.st_mode & (S_IWGRP | S_IWOTH)) ||
		(st.st_uid != 0 && st.st_uid != daemon_uid(cfg, &uname)))) {
		cfg_file_err(err, errlen, where, line,
		    "%s %s: writable by group or others, or not owned by "
		    "root or the daemon's user",
		    kname, path);
		close(fd);
		return NULL;
	}
	if (st.st_size > FILE_MAX) {
		cfg_file_err(err, errlen, where, line,
		    "%s %s: file too large (over %d bytes)", kname, path,
		    FILE_MAX);
		close(fd);
		return NULL;
	}
	buf = f ? cfg_files_secret_alloc(f, (size_t)st.st_size)
		: xcalloc(1, (size_t)st.st_size + 1);
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			cfg_file_err(err, errlen, where, line, "%s %s: %s",
			    kname, path, strerror(errno));
			close(fd);
			if (f == NULL)
				free(buf);
			return NULL;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	*len = got;
	return buf;
}

/* Reads file PATH (set by key K at config line LINE); see file_read_at(). */
static char *
file_read(struct cfg *cfg, struct cfg_files *f, const char *path,
    enum cfg_key k, int line, enum file_check mode, size_t *len, char *err,
    size_t errlen)
{
	return file_read_at(cfg, f, cfg->path, cfg_defs[k].name, path, line,
	    mode, len, err, errlen);
}

/* Reads a private key as auth_file is read (cfg_int.h). */
char *
cfg_files_secret_read(struct cfg *cfg, struct cfg_files *f, const char *where,
    int line, const char *what, const char *path, size_t *len, char *err,
    size_t errlen)
{
	return file_read_at(
	    cfg, f, where, what, path, line, FC_SECRET, len, err, errlen);
}

/* Reads a table as sender_relayhost is read (cfg_int.h). */
char *
cfg_files_table_read(struct cfg *cfg, const char *where, int line,
    const char *what, const char *path, size_t *len, char *err, size_t errlen)
{
	return file_read_at(
	    cfg, NULL, where, what, path, line, FC_TABLE, len, err, errlen);
}

/* Reads the file global key K names, checked as FC demands (a secret
 * into F's secret memory, anything else malloc'd), into *BUF (LEN
 * bytes); *BUF NULL when the key is empty. */
static enum cfg_result
key_file_read(struct cfg *cfg, struct cfg_files *f, enum cfg_key k,
    enum file_check fc, char **buf, size_t *len, char *err, size_t errlen)
{
	const char *path = cfg_str(&cfg->global, k);

	*buf = NULL;
	*len = 0;
	if (path[0] == '\0')
		return CFG_OK;
	*buf = file_read(cfg, f, path, k, cfg_line(cfg, &cfg->global, k), fc,
	    len, err, errlen);
	return *buf != NULL ? CFG_OK : CFG_ERR_FILE;
}

/* Reads auth_file into F. */
static enum cfg_result
auth_load(struct cfg *cfg, struct cfg_files *f, char *err, size_t errlen)
{
	const char *path = cfg_str(&cfg->global, CFG_AUTH_FILE);
	char *buf;
	size_t len;
	enum cfg_result r;

	r = key_file_read(
	    cfg, f, CFG_AUTH_FILE, FC_SECRET, &buf, &len, err, errlen);
	if (r != CFG_OK || buf == NULL)
		return r;
	r = cfg_auth_parse(path, buf, len, &f->auth, &f->nauth, err, errlen);
	if (r != CFG_OK)
		return r;
	f->auth_sorted = xcalloc(f->nauth, sizeof(*f->auth_sorted));
	for (size_t i = 0; i < f->nauth; i++)
		f->auth_sorted[i] = &f->auth[i];
	if (f->nauth > 1)
		qsort(f->auth_sorted, f->nauth, sizeof(*f->auth_sorted),
		    auth_cmp);
	return CFG_OK;
}

/* Whether C may be in a bearer token (RFC 6750's b64token). */
static bool
token_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9') || strchr("-._~+/=", c) != NULL;
}

int
cfg_http_token_parse(
    char *buf, size_t len, const char **token, const char **why)
{
	size_t a = 0, b;

	buf[len] = '\0';
	while (a < len && (buf[a] == ' ' || buf[a] == '\t'))
		a++;
	for (b = a; b < len && buf[b] != '\n' && buf[b] != '\r'; b++)
		;
	while (b > a && (buf[b - 1] == ' ' || buf[b - 1] == '\t'))
		b--;
	if (b == a) {
		*why = "the token (its first line) is empty";
		return -1;
	}
	if (b - a > 1024) {
		*why = "the token is longer than 1024 bytes";
		return -1;
	}
	for (size_t i = a; i < b; i++)
		if (buf[i] == '\0' || !token_char((unsigned char)buf[i])) {
			*why = "the token has a byte a bearer token may not "
			       "have (letters, digits and -._~+/= only)";
			return -1;
		}
	buf[b] = '\0';
	*token = buf + a;
	return 0;
}

/* Reads the http_token file into F: a secret, with auth_file's rules. */
static enum cfg_result
http_token_load(struct cfg *cfg, struct cfg_files *f, char *err, size_t errlen)
{
	const char *path = cfg_str(&cfg->global, CFG_HTTP_TOKEN), *why;
	int line = cfg_line(cfg, &cfg->global, CFG_HTTP_TOKEN);
	char *buf;
	size_t len;
	enum cfg_result r;

	r = key_file_read(
	    cfg, f, CFG_HTTP_TOKEN, FC_SECRET, &buf, &len, err, errlen);
	if (r != CFG_OK || buf == NULL)
		return r;
	if (cfg_http_token_parse(buf, len, &f->http_token, &why) < 0)
		return ferr(err, errlen, cfg->path, line, "http_token %s: %s",
		    path, why);
	return CFG_OK;
}

/* Reads sender_relayhost into F. */
static enum cfg_result
senders_load(struct cfg *cfg, struct cfg_files *f, char *err, size_t errlen)
{
	const char *path = cfg_str(&cfg->global, CFG_SENDER_RELAYHOST);
	char *buf;
	size_t len;
	enum cfg_result r;

	r = key_file_read(
	    cfg, NULL, CFG_SENDER_RELAYHOST, FC_TABLE, &buf, &len, err, errlen);
	if (r != CFG_OK || buf == NULL)
		return r;
	r = cfg_sender_map_parse(
	    path, buf, len, &f->senders, &f->nsenders, err, errlen);
	free(buf);
	return r;
}

/* Reads scope SC's client certificate and key into F (once per pair). */
static enum cfg_result
pem_load(struct cfg *cfg, struct cfg_files *f, struct cfg_scope *sc, char *err,
    size_t errlen)
{
	const char *cert = cfg_str(sc, CFG_TLS_CERT_FILE);
	const char *key = cfg_str(sc, CFG_TLS_KEY_FILE);
	int cline = cfg_line(cfg, sc, CFG_TLS_CERT_FILE);
	int kline = cfg_line(cfg, sc, CFG_TLS_KEY_FILE);
	struct cfg_pem *p;

	sc->pem = NULL;
	if (cert[0] == '\0' && key[0] == '\0')
		return CFG_OK;
	if (cert[0] == '\0')
		return ferr(err, errlen, cfg->path, kline,
		    "tls_key_file is set but tls_cert_file is not");
	if (key[0] == '\0') {
		key = cert; /* the key after the certificate (Postfix) */
		kline = cline;
	}
	for (size_t i = 0; i < f->npems; i++) {
		if (strcmp(f->pems[i].cert_file, cert) == 0 &&
		    strcmp(f->pems[i].key_file, key) == 0) {
			sc->pem = &f->pems[i];
			return CFG_OK;
		}
	}
	p = &f->pems[f->npems];
	memset(p, 0, sizeof(*p));
	p->cert = file_read(cfg, NULL, cert, CFG_TLS_CERT_FILE, cline, FC_NONE,
	    &p->certlen, err, errlen);
	if (p->cert == NULL)
		return CFG_ERR_FILE;
	f->npems++;
	p->key = file_read(cfg, f, key, CFG_TLS_KEY_FILE, kline, FC_KEY,
	    &p->keylen, err, errlen);
	if (p->key == NULL)
		return CFG_ERR_FILE;
	p->cert_file = cert;
	p->key_file = key;
	p->line = cline;
	sc->pem = p;
	return CFG_OK;
}

/* Reads cluster_password into F: its first line, with auth_file's
 * rules (a secret). */
static enum cfg_result
cluster_password_load(
    struct cfg *cfg, struct cfg_files *f, char *err, size_t errlen)
{
	const char *path = cfg_str(&cfg->global, CFG_CLUSTER_PASSWORD);
	int line = cfg_line(cfg, &cfg->global, CFG_CLUSTER_PASSWORD);
	char *buf;
	size_t len, n;
	enum cfg_result r;

	r = key_file_read(
	    cfg, f, CFG_CLUSTER_PASSWORD, FC_SECRET, &buf, &len, err, errlen);
	if (r != CFG_OK || buf == NULL)
		return r;
	for (n = 0; n < len && buf[n] != '\n' && buf[n] != '\r'; n++)
		if (buf[n] == '\0')
			break;
	rq_cleanse(buf + n, len - n); /* the rest is not the password */
	if (n == 0)
		return ferr(err, errlen, cfg->path, line,
		    "cluster_password %s: the first line is empty", path);
	f->cluster_password = buf;
	return CFG_OK;
}

/* Reads alias_file and sender_map into the cfg's local-mail rules. */
enum cfg_result
cfg_local_load(struct cfg *cfg, char *err, size_t errlen)
{
	struct mail_aliases *aliases = NULL;
	struct mail_map *map = NULL;
	char *buf;
	size_t len;
	enum cfg_result r;

	r = key_file_read(
	    cfg, NULL, CFG_ALIAS_FILE, FC_TABLE, &buf, &len, err, errlen);
	if (r == CFG_OK && buf != NULL) {
		if (mail_aliases_parse(cfg_str(&cfg->global, CFG_ALIAS_FILE),
			buf, len, &aliases, err, errlen) != MAIL_TABLE_OK)
			r = CFG_ERR_SYNTAX;
		free(buf);
	}
	if (r == CFG_OK)
		r = key_file_read(cfg, NULL, CFG_SENDER_MAP, FC_TABLE, &buf,
		    &len, err, errlen);
	if (r == CFG_OK && buf != NULL) {
		if (mail_map_parse(cfg_str(&cfg->global, CFG_SENDER_MAP), buf,
			len, &map, err, errlen) != MAIL_TABLE_OK)
			r = CFG_ERR_SYNTAX;
		free(buf);
	}
	if (r != CFG_OK) {
		mail_aliases_free(aliases);
		return r;
	}
	cfg_local_set(cfg, aliases, map);
	return CFG_OK;
}

enum cfg_result
cfg_files_load(struct cfg *cfg, char *err, size_t errlen)
{
	struct cfg_files *f = xcalloc(1, sizeof(*f));
	enum cfg_result r;

	cfg_files_free(cfg->files);
	cfg->files = f;
	/* At most one pair per scope: scopes point into a fixed array. */
	f->pems = xcalloc(cfg->ndomains + 1, sizeof(*f->pems));
	r = auth_load(cfg, f, err, errlen);
	if (r == CFG_OK)
		r = http_token_load(cfg, f, err, errlen);
	if (r == CFG_OK)
		r = senders_load(cfg, f, err, errlen);
	if (r == CFG_OK)
		r = cluster_password_load(cfg, f, err, errlen);
	if (r == CFG_OK)
		r = pem_load(cfg, f, &cfg->global, err, errlen);
	for (size_t i = 0; r == CFG_OK && i < cfg->ndomains; i++)
		r = pem_load(cfg, f, cfg->domains[i], err, errlen);
	if (r == CFG_OK)
		r = cfg_local_load(cfg, err, errlen);
	if (r == CFG_OK)
		r = cfg_dkim_load(cfg, err, errlen);
	return r;
}

const struct cfg_auth *
cfg_auth_entries(const struct cfg *cfg, size_t *n)
{
	*n = cfg->files ? cfg->files->nauth : 0;
	return cfg->files ? cfg->files->auth : NULL;
}

const struct cfg_pem *
cfg_tls_client_cert(const struct cfg_scope *sc)
{
	return sc->pem;
}

const struct cfg_pem *
cfg_tls_client_certs(const struct cfg *cfg, size_t *n)
{
	*n = cfg->files ? cfg->files->npems : 0;
	return cfg->files ? cfg->files->pems : NULL;
}

const char *
cfg_http_token(const struct cfg *cfg)
{
	return cfg->files ? cfg->files->http_token : NULL;
}
