/*
 * cmd_send.c - `relayq send` (and `sendmail`): sendmail-compatible
 * message submission into the spool directory.
 *
 * The message is read from standard input and written to
 * spool_dir/tmp/NAME (NAME = time.pid.random, created O_EXCL), preceded
 * by the pickup-directory envelope headers that queue/ reads on intake
 * (queue.h, "Spool file format"):
 *     X-Sender: <addr> [RET=FULL|HDRS] [ENVID=xtext]
 *     X-Receiver: <addr> [NOTIFY=NEVER|SUCCESS,FAILURE,DELAY]
 * The file is fsync'd, renamed into spool_dir/incoming/ and the directory
 * is fsync'd; only then does send exit 0.  A failure or a signal before
 * that removes the file from tmp/, so incoming/ never holds a partial
 * message.
 *
 * Header edits (everything else is copied byte for byte): a leading
 * mbox "From " line is dropped; Bcc:, Resent-Bcc: and leading X-Sender:
 * and X-Receiver: fields are removed (the last two would be read as
 * envelope; intake reads no others); From: is added when missing; an empty line is added when
 * the header section does not end with one.  Added lines use the line
 * ending of the message's first line.  A bare CR (not followed by LF) is
 * a line end, as on intake, and is written as an LF, so that -t, the Bcc:
 * removal and the receiver all see the same lines.
 *
 * The header section written is parsed as intake will parse it
 * (qp_message_parse(), queue_parse.h): what intake would refuse into
 * bad/ (too many recipients, a header line too long to fold, ...) is
 * refused here with 65 and the same reason.  Recipients are collapsed as
 * SMTP compares them (local part exactly, domain in any case); more than
 * max_recipients distinct ones is 65.  Addresses (RCPT arguments, -f,
 * the fields of -t) are read by the shared parser (cfg/mail_addr.c) in
 * the syntax send has always taken (SEND_ADDR_SYNTAX).  The command
 * line is sendmail's (send_letters[]), parsed by hand: getopt cannot
 * take it; -c FILE falls back as every command's (tools_cfg_path()).
 *
 * Public: cmd_send().
 * Invariant: a file appears in incoming/ only complete and fsync'd, and
 * send exits 0 exactly when it did.
 */
#include <sys/random.h>
#include <sys/stat.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cmd_send.h"
#include "mail.h"
#include "priv.h"
#include "queue_parse.h"

#define CMD "send"
#define ADDR_MAX 254 /* RFC 5321 4.5.3.1.3: a path is <= 256 with <> */
#define ENVID_MAX 100 /* RFC 3461 4.4 */
#define LINE_CHUNK 65536 /* input is read in lines or pieces this long */

/* The recipients: distinct as SMTP compares them, at most max
 * (max_recipients); see rcpts_parse(). */
struct rcpt_list {
	struct mail_addr_set set;
	size_t max;
	size_t found; /* addresses the last parse found, duplicates too */
	struct mail_addr_error err; /* of the last parse */
	/* -bs: each address's NOTIFY bits and ORCPT (by set index; 0 and
	 * NULL: none), from its RCPT TO */
	unsigned *notify;
	const char **orcpt;
	size_t nparam;
	size_t *hit, nhit, hitcap; /* set indexes the last parse found */
};

/* A growable byte buffer. */
struct buf {
	char *p;
	size_t len, cap;
};

static void buf_add(struct buf *b, const char *p, size_t len);

/* The output file: buffered writes that remember the first error. */
struct wfile {
	int fd;
	int err; /* first errno, 0 if none */
	uint64_t total; /* bytes written (or buffered) so far */
	uint64_t max; /* max_message_size */
	struct buf *tee; /* when set, gets a copy of what is written */
	size_t n;
	char b[65536];
};

/* The temporary file's path, removed by the signal handler while set
 * (as tmp_name in the directory open at tmp_dfd). */
static char tmp_path[4096];
static char tmp_name[256];
static int tmp_dfd = -1, inc_dfd = -1;
static volatile sig_atomic_t tmp_armed;
static const char *volatile farewell; /* see send_alarm_farewell() */
/* The `user` key: the owner tmp/ and incoming/ must have, when set. */
static const char *spool_user = "";

/* The reason of the last failure, and whether to print it. */
static char why_last[1024];
static bool why_quiet;
static bool why_big; /* the last failure: over max_message_size */

/* Says why a submission fails (to standard error unless send_quiet());
 * returns CODE. */
static int __attribute__((format(printf, 2, 3)))
send_fail(int code, const char *fmt, ...)
{
	va_list ap;

	why_big = false;
	va_start(ap, fmt);
	vsnprintf(why_last, sizeof(why_last), fmt, ap);
	va_end(ap);
	if (!why_quiet)
		fprintf(stderr, "relayq %s: %s\n", CMD, why_last);
	return code;
}

const char *
send_why(void)
{
	return why_last;
}

bool
send_too_large(void)
{
	return why_big;
}

void
send_quiet(void)
{
	why_quiet = true;
}

static void
usage(FILE *fp)
{
	fprintf(fp,
	    "usage: relayq send [-c FILE] [-f SENDER] [-F NAME] [-t] [-i]\n"
	    "           [-N NOTIFY] [-R full|hdrs] [-V ENVID] [--] [RCPT...]\n"
	    "       sendmail [same options]\n"
	    "Reads a message on standard input and puts it into the spool\n"
	    "(spool_dir/incoming/) for `relayq run`; prints nothing on "
	    "success.\n"
	    "  -c FILE, -C FILE  the config file\n"
	    "  -f SENDER  envelope sender (-f '<>': null sender); default\n"
	    "             LOGIN@origin; -r is the same\n"
	    "  -F NAME    full name for the From: header added when the\n"
	    "             message has none (else $NAME, else without -f\n"
	    "             the login's full name from the password file)\n"
	    "  -t         also take recipients from To:, Cc:, Bcc: (or\n"
	    "             Resent-To:, -Cc:, -Bcc: when present)\n"
	    "  -i, -oi    a line with a single \".\" does not end the "
	    "message\n"
	    "  -N NOTIFY  DSN: never, or a list of success,failure,delay\n"
	    "  -R RET     DSN: return the full message or headers only\n"
	    "  -V ENVID   DSN: envelope id\n"
	    "  -bs        speak SMTP on standard input and output; each\n"
	    "             message goes into the spool as above\n"
	    "  -bv ADDR.. print where each address would be delivered\n"
	    "             (alias expansion, route); 65 if one is bad\n"
	    "  -bi, -I    check alias_file, as newaliases (65 syntax, 78\n"
	    "             unreadable)\n"
	    "  -bp        `relayq mailq`;  -q  `relayq flush` (-q with an\n"
	    "             interval, -q15m, is not supported: ignored)\n"
	    "Ignored for compatibility: -B TYPE, -bm, -L TAG, -m, -n, -o*,\n"
	    "-O OPT, -U, -v, -X FILE, -h N, -G, -A*, -p*.\n"
	    "Bcc: headers are removed; a recipient without a domain gets\n"
	    "@origin; a bare CR is a line end.  Exit 0 once the message\n"
	    "is in the spool; 64 usage, 65 bad address, too many recipients\n"
	    "(max_recipients), a header intake would refuse (a line over\n"
	    "998 bytes that cannot be folded) or a message over\n"
	    "max_message_size, 75 spool missing, full or not writable, 78\n"
	    "config error.\n");
}

/* ---- addresses: the shared parser (mail.h), with send's syntax ---- */

/*
 * The address syntax `relayq send` has always taken, where it differs
 * from intake's (mail.h says what each flag does): lexical errors first,
 * any byte in quotes, no '[' in a literal, strict dots, solid domains,
 * flat groups, a quoted '@' left unqualified.  What it accepts intake
 * reads alike; header_check() holds each message to that.
 */
#define SEND_ADDR_SYNTAX \
	(MAIL_ADDR_LEX_FIRST | MAIL_ADDR_LAX_QUOTES | \
	    MAIL_ADDR_PLAIN_LITERAL | MAIL_ADDR_STRICT_DOTS | \
	    MAIL_ADDR_SOLID_DOMAIN | MAIL_ADDR_FLAT_GROUPS | \
	    MAIL_ADDR_QUALIFY_NO_AT)

/* Takes an address found as a recipient (mail_addrlist_parse()'s
 * callback): once, and one over the list's max is too many. */
static enum mail_addr_result
rcpt_found(void *arg, const char *addr)
{
	struct rcpt_list *list = arg;
	size_t idx;

	if (mail_addr_set_put(&list->set, addr, list->max, &idx) ==
	    MAIL_SET_FULL)
		return MAIL_ADDR_TOOMANY;
	list->found++;
	if (list->nhit == list->hitcap) {
		list->hitcap = list->hitcap ? list->hitcap * 2 : 4;
		list->hit = xrealloc(
		    list->hit, list->hitcap * sizeof(*list->hit));
	}
	list->hit[list->nhit++] = idx;
	return MAIL_ADDR_OK;
}

/*
 * Adds the addresses of list S (LEN bytes) to LIST, an unqualified one
 * with "@" DOMAIN.  Used for RCPT arguments (sendmail splits them at
 * commas too) and for To:/Cc:/Bcc: with -t.
 */
static enum mail_addr_result
rcpts_parse(
    struct rcpt_list *list, const char *s, size_t len, const char *domain)
{
	const struct mail_addr_syntax syn = { SEND_ADDR_SYNTAX, domain,
		ADDR_MAX };

	list->found = list->nhit = 0;
	return mail_addrlist_parse(s, len, &syn, rcpt_found, list, &list->err);
}

/* Keeps the sender found (mail_addrlist_parse()'s callback for -f). */
static enum mail_addr_result
sender_found(void *arg, const char *addr)
{
	struct buf *out = arg;

	out->len = 0;
	buf_add(out, addr, strlen(addr));
	return MAIL_ADDR_OK;
}

/*
 * Parses the -f argument: one address, or "" / "<>" for the null sender.
 * The result (without angle brackets) goes to OUT; a bare local part
 * gets "@" DOMAIN.
 */
static enum mail_addr_result
sender_parse(const char *s, const char *domain, struct buf *out)
{
	const struct mail_addr_syntax syn = { MAIL_ADDR_ONE | SEND_ADDR_SYNTAX,
		domain, ADDR_MAX };
	struct mail_addr_error err;

	if (strpbrk(s, "\r\n") != NULL)
		return MAIL_ADDR_BAD;
	return mail_addrlist_parse(s, strlen(s), &syn, sender_found, out, &err);
}

/* Whether send takes ADDR; see cmd_send.h. */
bool
send_addr_ok(const struct cfg *cfg, const char *addr, bool sender)
{
	const char *origin = cfg_str(cfg_scope(cfg, NULL), CFG_ORIGIN);
	struct rcpt_list l;
	struct buf b = { NULL, 0, 0 };
	bool ok;

	if (strpbrk(addr, "\r\n") != NULL)
		return false;
	if (sender) {
		ok = sender_parse(addr, origin, &b) == MAIL_ADDR_OK;
		free(b.p);
		return ok;
	}
	memset(&l, 0, sizeof(l));
	ok = rcpts_parse(&l, addr, strlen(addr), origin) == MAIL_ADDR_OK &&
	    l.found == 1;
	mail_addr_set_free(&l.set);
	free(l.hit);
	return ok;
}

/* True if S is printable ASCII (what -V may hold). */
static bool
is_printable(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			return false;
	return true;
}

/* ---- the command line ---- */

/* What a letter of sendmail's command line does. */
enum letter_kind {
	LETTER_IGNORED, /* accepted and ignored */
	LETTER_IGNORED_ARG, /* takes an argument, ignored */
	LETTER_ARG, /* takes an argument, kept in struct send_opts at off */
	LETTER_OWN, /* -t, -i, -o, -b, -I, -q: opt_letter_own() */
};

/* sendmail's option letters, as relayq send takes them. */
static const struct send_letter {
	char letter;
	enum letter_kind kind;
	size_t off;
} send_letters[] = {
	{ 'm', LETTER_IGNORED, 0 }, /* metoo */
	{ 'n', LETTER_IGNORED, 0 }, /* no aliasing */
	{ 'v', LETTER_IGNORED, 0 }, /* verbose */
	{ 'U', LETTER_IGNORED, 0 }, /* initial submission */
	{ 'G', LETTER_IGNORED, 0 }, /* gateway submission */
	{ 's', LETTER_IGNORED, 0 }, /* save From lines */
	{ 'A', LETTER_IGNORED_ARG, 0 }, /* -Am / -Ac */
	{ 'B', LETTER_IGNORED_ARG, 0 }, /* body type */
	{ 'd', LETTER_IGNORED_ARG, 0 }, /* debug flags */
	{ 'e', LETTER_IGNORED_ARG, 0 }, /* error mode */
	{ 'h', LETTER_IGNORED_ARG, 0 }, /* hop count */
	{ 'L', LETTER_IGNORED_ARG, 0 }, /* syslog tag */
	{ 'O', LETTER_IGNORED_ARG, 0 }, /* long option */
	{ 'p', LETTER_IGNORED_ARG, 0 }, /* protocol */
	{ 'X', LETTER_IGNORED_ARG, 0 }, /* traffic log */
	{ 'c', LETTER_ARG, offsetof(struct send_opts, cfg_path) },
	{ 'C', LETTER_ARG, offsetof(struct send_opts, cfg_path) },
	{ 'f', LETTER_ARG, offsetof(struct send_opts, sender) },
	{ 'r', LETTER_ARG, offsetof(struct send_opts, sender) },
	{ 'F', LETTER_ARG, offsetof(struct send_opts, fullname) },
	{ 'N', LETTER_ARG, offsetof(struct send_opts, notify) },
	{ 'R', LETTER_ARG, offsetof(struct send_opts, ret) },
	{ 'V', LETTER_ARG, offsetof(struct send_opts, envid) },
	{ 't', LETTER_OWN, 0 }, /* take recipients from the header */
	{ 'i', LETTER_OWN, 0 }, /* a "." line does not end the message */
	{ 'o', LETTER_OWN, 0 }, /* -oX: sendmail option letter X */
	{ 'b', LETTER_OWN, 0 }, /* -bX: mode */
	{ 'I', LETTER_OWN, 0 }, /* initialize aliases (newaliases) */
	{ 'q', LETTER_OWN, 0 }, /* -q: run the queue; -q1h: interval */
};

/* The entry of option letter CH, or NULL. */
static const struct send_letter *
letter_find(char ch)
{
	for (size_t k = 0; k < sizeof(send_letters) / sizeof(send_letters[0]);
	     k++)
		if (send_letters[k].letter == ch)
			return &send_letters[k];
	return NULL;
}

/*
 * Returns the argument of the option letter at argv[*i][*j]: the rest of
 * the word, else the next word (advancing *i); NULL if none.  The word's
 * letters end there (*j is set to its last).
 */
static const char *
opt_arg(int argc, char **argv, int *i, size_t *j)
{
	const char *rest = argv[*i] + *j + 1;

	*j = strlen(argv[*i]) - 1; /* the cluster ends here */
	if (*rest != '\0')
		return rest;
	if (*i + 1 >= argc)
		return NULL;
	return argv[++*i];
}

/* Says that option CH lacks its argument; returns 64. */
static int
opt_missing(char ch)
{
	return send_fail(RQ_EX_USAGE, "option -%c needs an argument", ch);
}

/*
 * Applies one of the letters that set something particular: -t, -i,
 * -oi (other -oX are ignored), -b (mode: m sends, i checks the aliases,
 * p lists the queue, s speaks SMTP, v verifies addresses), -I (checks
 * the aliases), -q (flush; with an interval, ignored).
 */
static int
opt_letter_own(int argc, char **argv, int *i, size_t *j, struct send_opts *o)
{
	char ch = argv[*i][*j];
	const char *v;

	switch (ch) {
	case 't':
		o->extract = true;
		break;
	case 'i':
		o->ignore_dots = true;
		break;
	case 'o':
		if ((v = opt_arg(argc, argv, i, j)) == NULL)
			return opt_missing(ch);
		if (strcmp(v, "i") == 0)
			o->ignore_dots = true;
		break;
	case 'b':
		if ((v = opt_arg(argc, argv, i, j)) == NULL)
			return opt_missing(ch);
		if (strcmp(v, "i") == 0)
			o->mode = MODE_ALIASES;
		else if (strcmp(v, "p") == 0)
			o->mode = MODE_MAILQ;
		else if (strcmp(v, "s") == 0)
			o->mode = MODE_SMTP;
		else if (strcmp(v, "v") == 0)
			o->mode = MODE_VERIFY;
		else if (strcmp(v, "m") != 0)
			return send_fail(
			    RQ_EX_USAGE, "mode -b%.16s is not supported", v);
		break;
	case 'I':
		o->mode = MODE_ALIASES;
		break;
	case 'q':
		v = argv[*i] + *j + 1;
		*j = strlen(argv[*i]) - 1;
		o->mode = (*v >= '0' && *v <= '9') ? MODE_QINTERVAL
						   : MODE_FLUSH;
		break;
	}
	return RQ_EX_OK;
}

/* Parses the word argv[*i] of option letters ("-ti", "-fSENDER", "-f"
 * then SENDER as the next word: *i advances). */
static int
opt_word_parse(int argc, char **argv, int *i, struct send_opts *o)
{
	const char *word = argv[*i]; /* *i moves on when an argument follows */

	for (size_t j = 1; word[j] != '\0'; j++) {
		char ch = word[j];
		const struct send_letter *l = letter_find(ch);
		const char *v;
		int rc;

		if (l == NULL)
			return send_fail(
			    RQ_EX_USAGE, "unknown option -%c (see --help)", ch);
		switch (l->kind) {
		case LETTER_IGNORED:
			break;
		case LETTER_IGNORED_ARG:
		case LETTER_ARG:
			if ((v = opt_arg(argc, argv, i, &j)) == NULL)
				return opt_missing(ch);
			if (l->kind == LETTER_ARG)
				*(const char **)((char *)o + l->off) = v;
			break;
		case LETTER_OWN:
			if ((rc = opt_letter_own(argc, argv, i, &j, o)) !=
			    RQ_EX_OK)
				return rc;
			break;
		}
	}
	return RQ_EX_OK;
}

/*
 * Parses sendmail's command line by hand (getopt cannot take -oi, -odb,
 * -B8BITMIME or -FName all at once): words of option letters up to "--"
 * or the first operand (the recipients).  Returns RQ_EX_OK, or an exit
 * code after printing why; *help is set for --help.
 */
static int
opts_parse(int argc, char **argv, struct send_opts *o, bool *help)
{
	int i, rc;

	memset(o, 0, sizeof(*o));
	*help = false;
	for (i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (a[0] != '-' || a[1] == '\0')
			break;
		if (strcmp(a, "--") == 0) {
			i++;
			break;
		}
		if (strcmp(a, "--help") == 0) {
			*help = true;
			return RQ_EX_OK;
		}
		if (a[1] == '-')
			return send_fail(RQ_EX_USAGE,
			    "unknown option \"%.64s\" (see --help)", a);
		if ((rc = opt_word_parse(argc, argv, &i, o)) != RQ_EX_OK)
			return rc;
	}
	o->rcpts = argv + i;
	o->nrcpt = argc - i;
	return RQ_EX_OK;
}

/* ---- reading the message ---- */

/* Appends LEN bytes to B. */
static void
buf_add(struct buf *b, const char *p, size_t len)
{
	if (b->len + len + 1 > b->cap) {
		b->cap = (b->len + len + 1) * 2;
		b->p = xrealloc(b->p, b->cap);
	}
	memcpy(b->p + b->len, p, len);
	b->len += len;
	b->p[b->len] = '\0';
}

/* One header field in the header buffer (with its continuation lines). */
struct hfield {
	size_t off, len; /* the whole field, line endings included */
	size_t namelen;
	size_t value; /* where the value starts: after the colon */
};

/* The header section as read, before edits. */
struct header {
	struct buf raw;
	struct hfield *f;
	size_t n, cap;
	bool blank_seen; /* ended by an empty line (which is body[0]) */
	bool eol_crlf; /* the first line ended with CRLF */
};

/*
 * Returns the length of the field name if LINE starts a header field
 * ("Name:" with printable non-colon characters, or the obsolete "Name :"
 * of RFC 5322 4.5, which intake takes too), else 0; *VALUE is set to the
 * offset after the colon.
 */
static size_t
field_name_len(const char *line, size_t len, size_t *value)
{
	size_t n = mail_field_name_len(line, len), c = n;

	while (c < len && (line[c] == ' ' || line[c] == '\t'))
		c++;
	if (n == 0 || c >= len || line[c] != ':')
		return 0;
	*value = c + 1;
	return n;
}

/* Returns true if field F is named NAME (any case). */
static bool
field_is(const struct header *h, const struct hfield *f, const char *name)
{
	return mail_field_is(h->raw.p + f->off, f->namelen, name);
}

/* Returns true if LINE is a lone "." line (the end unless -i). */
static bool
is_dot_line(const char *line, size_t len)
{
	return (len == 1 && line[0] == '.') ||
	    (len == 2 && memcmp(line, ".\n", 2) == 0) ||
	    (len == 3 && memcmp(line, ".\r\n", 3) == 0);
}

/* Returns true if LINE is empty (just its line ending). */
static bool
is_blank_line(const char *line, size_t len)
{
	return (len == 1 && line[0] == '\n') ||
	    (len == 2 && line[0] == '\r' && line[1] == '\n');
}

/* ---- writing the spool file ---- */

/* Writes what is buffered; remembers the first error. */
static void
wfile_flush(struct wfile *w)
{
	size_t off = 0;

	while (w->err == 0 && off < w->n) {
		ssize_t r = write(w->fd, w->b + off, w->n - off);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			w->err = r < 0 ? errno : EIO;
			break;
		}
		off += (size_t)r;
	}
	w->n = 0;
}

/* Buffers LEN bytes for the file. */
static void
wfile_put(struct wfile *w, const char *p, size_t len)
{
	if (w->tee != NULL)
		buf_add(w->tee, p, len);
	w->total += len;
	while (len > 0 && w->err == 0) {
		size_t n = sizeof(w->b) - w->n;

		if (n > len)
			n = len;
		memcpy(w->b + w->n, p, n);
		w->n += n;
		p += n;
		len -= n;
		if (w->n == sizeof(w->b))
			wfile_flush(w);
	}
}

/* Buffers a NUL-terminated string. */
static void
wfile_puts(struct wfile *w, const char *s)
{
	wfile_put(w, s, strlen(s));
}

/* Removes the temporary file after a signal, then exits 75. */
static void
on_signal(int sig)
{
	if (tmp_armed)
		(void)unlinkat(tmp_dfd, tmp_name, 0);
	if (sig == SIGALRM && farewell != NULL)
		(void)!write(STDOUT_FILENO, farewell, strlen(farewell));
	_exit(RQ_EX_TEMPFAIL);
}

void
send_alarm_farewell(const char *msg)
{
	farewell = msg;
}

/* Installs on_signal() for the signals that end a submission. */
static void
signals_catch(void)
{
	static const int sigs[] = { SIGHUP, SIGINT, SIGTERM, SIGQUIT, SIGALRM,
		SIGUSR1, SIGUSR2 };
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigfillset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaction(sigs[i], &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGXFSZ, SIG_IGN); /* write() then fails with EFBIG */
}

/* Blocks the signals signals_catch() handles (around the rename). */
static void
signals_block(void)
{
	sigset_t set;

	sigfillset(&set);
	sigprocmask(SIG_BLOCK, &set, NULL);
}

/* Formats into a new string stored in *out (freed by the caller). */
static void __attribute__((format(printf, 2, 3)))
str_printf(char **out, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(out, fmt, ap) < 0)
		abort();
	va_end(ap);
}

/*
 * Writes the quoted form of a display name for From: (controls become
 * spaces; quoted when it holds RFC 5322 specials).
 */
static void
wfile_put_name(struct wfile *w, const char *name)
{
	bool quote = false;

	for (const char *p = name; *p; p++)
		if (strchr("()<>[]:;@\\,\".", *p) != NULL)
			quote = true; /* an RFC 5322 special, or a dot */
	if (quote)
		wfile_put(w, "\"", 1);
	for (const char *p = name; *p; p++) {
		char ch = *p;

		if ((unsigned char)ch < 0x20 || ch == 0x7f)
			ch = ' ';
		if (quote && (ch == '"' || ch == '\\'))
			wfile_put(w, "\\", 1);
		wfile_put(w, &ch, 1);
	}
	if (quote)
		wfile_put(w, "\"", 1);
}

/* State of one submission, shared by the steps of cmd_send(). */
struct submit {
	struct send_opts o;
	const char *spool;
	const char *origin; /* the domain of unqualified addresses */
	FILE *in; /* the message */
	char *tmpdir, *incdir, *name, *final_path;
	struct wfile *w;
	struct header h;
	struct rcpt_list rcpts;
	struct buf sender;
	char notify[32];
	char *envid; /* -V as xtext */
	char *gecos; /* the login's full name (passwd), when -f is not given */
	char *line; /* LINE_CHUNK + 1 bytes */
	struct buf written; /* the header section as written */
	bool bol, next_bol; /* s->line starts a line; the next one will */
	bool ended; /* input ended by a "." line or EOF */
};

/*
 * Opens spool directory PATH (never through a link) into *dfd and
 * refuses one that would not keep a submission private (75, so the
 * caller tries again: the daemon repairs modes when it starts): others
 * may list it or remove what they do not own, or it is not the
 * daemon's, or it hands no drop group down to a submitter who is
 * neither root nor its owner (the daemon could not read the file).
 */
static int
spool_dir_open(const char *path, int *dfd, struct stat *st)
{
	struct passwd *pw;
	uid_t me = geteuid();

	*dfd = open(path, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (*dfd < 0 || fstat(*dfd, st) != 0) {
		int err = errno;
		bool link = lstat(path, st) == 0 && S_ISLNK(st->st_mode);

		return send_fail(RQ_EX_TEMPFAIL, "spool directory %.200s: %s",
		    path,
		    link ? "a symbolic link, not a directory" : strerror(err));
	}
	if (spool_user[0] != '\0' && (pw = getpwnam(spool_user)) != NULL &&
	    st->st_uid != pw->pw_uid)
		return send_fail(RQ_EX_TEMPFAIL,
		    "spool directory %.200s belongs to uid %u, not to %.64s: "
		    "refusing to write there",
		    path, (unsigned)st->st_uid, spool_user);
	if ((st->st_mode & S_IWOTH) &&
	    (!(st->st_mode & S_ISVTX) || (st->st_mode & S_IROTH)))
		return send_fail(RQ_EX_TEMPFAIL,
		    "spool directory %.200s has mode %04o: other users could "
		    "list or remove submissions (relayq run sets %04o when it "
		    "starts)",
		    path, (unsigned)(st->st_mode & 07777),
		    (unsigned)PRIV_DROP_MODE);
	if (me != 0 && me != st->st_uid &&
	    (st->st_mode & (S_IWGRP | S_IWOTH)) && !(st->st_mode & S_ISGID))
		return send_fail(RQ_EX_TEMPFAIL,
		    "spool directory %.200s has mode %04o: no drop group "
		    "(setgid), so the daemon could not read your message "
		    "(relayq run sets %04o when it starts)",
		    path, (unsigned)(st->st_mode & 07777),
		    (unsigned)PRIV_DROP_MODE);
	return RQ_EX_OK;
}

/*
 * Creates spool_dir/tmp/NAME with O_EXCL|O_NOFOLLOW, readable by the
 * daemon alone: mode 0600 when the submitter owns tmp/, else 0640 with
 * the group of tmp/ (the daemon's: handed down by its setgid bit, set
 * by fchown when root submits), as Postfix's maildrop files belong to
 * their submitter and the postdrop group.  The file keeps its owner, so
 * the daemon logs who submitted it.
 */
static int
spool_create(struct submit *s)
{
	struct stat st, ist, fst;
	uint64_t rnd;
	int fd = -1, rc;

	if ((rc = spool_dir_open(s->incdir, &inc_dfd, &ist)) != RQ_EX_OK ||
	    (rc = spool_dir_open(s->tmpdir, &tmp_dfd, &st)) != RQ_EX_OK)
		return rc;
	for (int tries = 0; tries < 10 && fd < 0; tries++) {
		if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
			rnd = (uint64_t)rq_now_us() ^
			    ((uint64_t)getpid() << 32);
		free(s->name);
		str_printf(&s->name, "%lld.%d.%016llx", (long long)rq_now(),
		    (int)getpid(), (unsigned long long)rnd);
		snprintf(tmp_name, sizeof(tmp_name), "%s", s->name);
		snprintf(
		    tmp_path, sizeof(tmp_path), "%s/%s", s->tmpdir, s->name);
		fd = openat(tmp_dfd, tmp_name,
		    O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd >= 0)
			tmp_armed = 1;
		else if (errno != EEXIST)
			break;
	}
	if (fd < 0)
		return send_fail(RQ_EX_TEMPFAIL, "cannot create %.200s: %s",
		    tmp_path, strerror(errno));
	s->w->fd = fd;
	if (geteuid() == st.st_uid)
		return RQ_EX_OK;
	errno = 0;
	if ((geteuid() == 0 && fchown(fd, (uid_t)-1, st.st_gid) != 0) ||
	    fstat(fd, &fst) != 0 || fst.st_gid != st.st_gid ||
	    fchmod(fd, 0640) != 0)
		return send_fail(RQ_EX_TEMPFAIL,
		    "%.200s: cannot give it to group %u: %s", tmp_path,
		    (unsigned)st.st_gid,
		    errno ? strerror(errno) : "not inherited");
	return RQ_EX_OK;
}

/* Says why address text TEXT (from WHERE) was refused; returns 65. */
static int
addr_fail(const struct submit *s, enum mail_addr_result r, const char *where,
    const char *text)
{
	if (r == MAIL_ADDR_TOOMANY)
		return send_fail(RQ_EX_DATAERR,
		    "too many recipients: more than %zu (max_recipients)",
		    s->rcpts.max);
	if (r == MAIL_ADDR_TOOLONG)
		return send_fail(RQ_EX_DATAERR,
		    "bad %s \"%.60s...\": address too long: %zu bytes, a "
		    "local part of %zu (at most %d in all)",
		    where, text, s->rcpts.err.len, s->rcpts.err.local,
		    ADDR_MAX);
	return send_fail(RQ_EX_DATAERR, "bad %s \"%.200s\"", where, text);
}

/* Says that the message is over max_message_size; returns 65. */
static int
too_large(const struct submit *s)
{
	int rc = send_fail(RQ_EX_DATAERR,
	    "message too large (max_message_size is %llu bytes, the "
	    "envelope lines included)",
	    (unsigned long long)s->w->max);

	why_big = true;
	return rc;
}

/*
 * Reads one line of input, or LINE_CHUNK bytes of a longer one, into
 * s->line; returns its length, or -1 at the end of the message.  s->bol
 * tells whether the piece starts a line (only then is it a header or
 * a "." line), so memory stays bounded whatever the input.
 */
static ssize_t
input_line(struct submit *s)
{
	size_t n = 0;
	int ch;

	if (s->ended)
		return -1;
	if (s->line == NULL)
		s->line = xmalloc(LINE_CHUNK + 1); /* + the LF of a CRLF */
	errno = 0;
	while (n < LINE_CHUNK && (ch = getc_unlocked(s->in)) != EOF) {
		if (ch == '\r') {
			int next = getc_unlocked(s->in);

			if (next == '\n') {
				s->line[n++] = '\r';
				s->line[n++] = '\n';
				break;
			}
			/* a bare CR ends a line, as on intake: an LF here */
			if (next != EOF)
				ungetc(next, s->in);
			ch = '\n';
		}
		s->line[n++] = (char)ch;
		if (ch == '\n')
			break;
	}
	s->bol = s->next_bol;
	if (n > 0)
		s->next_bol = s->line[n - 1] == '\n';
	if (n == 0 ||
	    (s->bol && !s->o.ignore_dots && is_dot_line(s->line, n))) {
		s->ended = true;
		return -1;
	}
	return (ssize_t)n;
}

/*
 * Reads the header section into s->h; the first body line, if any, is
 * left in s->line with its length in *pending (else *pending is -1).
 */
static int
header_read(struct submit *s, ssize_t *pending)
{
	struct header *h = &s->h;
	ssize_t n;
	bool first = true;

	*pending = -1;
	while ((n = input_line(s)) >= 0) {
		const char *l = s->line;
		size_t len = (size_t)n, nl, vo;

		if (!s->bol) {
			/* The rest of a long line: of the field being read,
			 * or of the mbox From line skipped. */
			if (h->n > 0) {
				h->f[h->n - 1].len += len;
				buf_add(&h->raw, l, len);
			}
			if (h->raw.len > s->w->max)
				return too_large(s);
			continue;
		}
		if (first) {
			h->eol_crlf = len >= 2 && l[len - 2] == '\r' &&
			    l[len - 1] == '\n';
			first = false;
			/* an mbox separator, or its quoted ">From " form:
			 * dropped, as Postfix's sendmail drops them */
			if (mail_mbox_from_is(l, len) ||
			    (len > 1 && l[0] == '>' &&
				mail_mbox_from_is(l + 1, len - 1)))
				continue;
		}
		if ((l[0] == ' ' || l[0] == '\t') && h->n > 0) {
			h->f[h->n - 1].len += len;
		} else if ((nl = field_name_len(l, len, &vo)) > 0) {
			if (h->n == h->cap) {
				h->cap = h->cap ? h->cap * 2 : 32;
				h->f = xrealloc(h->f, h->cap * sizeof(*h->f));
			}
			h->f[h->n].off = h->raw.len;
			h->f[h->n].len = len;
			h->f[h->n].value = vo;
			h->f[h->n++].namelen = nl;
		} else {
			h->blank_seen = is_blank_line(l, len);
			*pending = n;
			return RQ_EX_OK;
		}
		buf_add(&h->raw, l, len);
		if (h->raw.len > s->w->max)
			return too_large(s);
	}
	if (ferror(s->in))
		return send_fail(
		    RQ_EX_IOERR, "reading the message: %s", strerror(errno));
	return RQ_EX_OK;
}

/*
 * With -t, adds the recipients of To:/Cc:/Bcc: (or of the Resent-
 * fields when the message has any).
 */
static int
header_extract(struct submit *s)
{
	static const char *const plain[] = { "To", "Cc", "Bcc" };
	static const char *const resent[] = { "Resent-To", "Resent-Cc",
		"Resent-Bcc" };
	const char *const *names = plain;
	struct header *h = &s->h;

	/* Resent- recipients replace the others only when there are any
	 * (a Resent-From: alone changes nothing), as Postfix. */
	for (size_t i = 0; i < h->n; i++)
		for (int k = 0; k < 3; k++)
			if (field_is(h, &h->f[i], resent[k]))
				names = resent;
	for (size_t i = 0; i < h->n; i++) {
		const struct hfield *f = &h->f[i];

		for (int k = 0; k < 3; k++) {
			enum mail_addr_result r;

			if (!field_is(h, f, names[k]))
				continue;
			r = rcpts_parse(&s->rcpts, h->raw.p + f->off + f->value,
			    f->len - f->value, s->origin);
			if (r == MAIL_ADDR_BAD)
				return send_fail(RQ_EX_DATAERR,
				    "bad address in the %s: header", names[k]);
			if (r != MAIL_ADDR_OK)
				return addr_fail(s, r, "address in the header",
				    h->raw.p + f->off + f->value);
		}
	}
	return RQ_EX_OK;
}

/* Writes the envelope headers, the edited header section and From:. */
static void
header_write(struct submit *s)
{
	const char *eol = s->h.eol_crlf ? "\r\n" : "\n";
	struct header *h = &s->h;
	struct wfile *w = s->w;
	bool has_from = false, leading = true;

	wfile_puts(w, "X-Sender: <");
	wfile_puts(w, s->sender.p);
	wfile_puts(w, ">");
	if (s->o.ret != NULL)
		wfile_puts(w,
		    strcasecmp(s->o.ret, "full") == 0 ? " RET=FULL"
						      : " RET=HDRS");
	if (s->o.envid != NULL) {
		wfile_puts(w, " ENVID=");
		wfile_puts(w, s->envid);
	}
	wfile_puts(w, eol);
	for (size_t i = 0; i < s->rcpts.set.n; i++) {
		const char *nt = s->notify, *orcpt = NULL;
		char own[32];

		if (i < s->rcpts.nparam) {
			if (s->rcpts.notify[i] != 0) {
				mail_notify_format(
				    s->rcpts.notify[i], own, sizeof(own));
				nt = own;
			}
			orcpt = s->rcpts.orcpt[i];
		}
		wfile_puts(w, "X-Receiver: <");
		wfile_puts(w, s->rcpts.set.v[i]);
		wfile_puts(w, ">");
		if (nt[0] != '\0') {
			wfile_puts(w, " NOTIFY=");
			wfile_puts(w, nt);
		}
		if (orcpt != NULL) {
			wfile_puts(w, " ORCPT=");
			wfile_puts(w, orcpt);
		}
		wfile_puts(w, eol);
	}
	for (size_t i = 0; i < h->n; i++) {
		const struct hfield *f = &h->f[i];
		bool env = field_is(h, f, "X-Sender") ||
		    field_is(h, f, "X-Receiver");

		if (field_is(h, f, "From"))
			has_from = true;
		/* Leading X-Sender/X-Receiver would join the envelope
		 * written above; intake reads no others, which stay. */
		leading = leading && env;
		if (field_is(h, f, "Bcc") || field_is(h, f, "Resent-Bcc") ||
		    leading)
			continue;
		wfile_put(w, h->raw.p + f->off, f->len);
	}
	if (h->raw.len > 0 && h->raw.p[h->raw.len - 1] != '\n')
		wfile_puts(w, eol); /* the input ended inside the header */
	if (!has_from && s->sender.len > 0) {
		const char *name = s->o.fullname;

		if (name == NULL)
			name = getenv("NAME");
		if (name == NULL || name[0] == '\0')
			name = s->gecos;
		wfile_puts(w, "From: ");
		if (name != NULL && name[0] != '\0') {
			wfile_put_name(w, name);
			wfile_puts(w, " <");
			wfile_puts(w, s->sender.p);
			wfile_puts(w, ">");
		} else {
			wfile_puts(w, s->sender.p);
		}
		wfile_puts(w, eol);
	} else if (!has_from) {
		/* The null sender: MAILER-DAEMON, as Postfix's cleanup. */
		wfile_puts(w, "From: MAILER-DAEMON@");
		wfile_puts(w, s->origin);
		wfile_puts(w, eol);
	}
	if (!h->blank_seen)
		wfile_puts(w, eol);
}

/*
 * Parses the header section written (envelope headers included) as
 * intake will: what intake would move to bad/ is refused here, with the
 * same reason (65), and the file never reaches incoming/.
 */
static int
header_check(struct submit *s)
{
	struct qp_result r;
	int rc = RQ_EX_OK;

	if (qp_message_parse(s->written.p, s->written.len, s->origin,
		s->rcpts.max, &r) != QP_OK)
		rc = send_fail(RQ_EX_DATAERR, "message refused: %s", r.why);
	qp_result_free(&r);
	return rc;
}

/* Copies the rest of the input (the body) to the file. */
static int
body_copy(struct submit *s, ssize_t pending)
{
	ssize_t n = pending;

	if (n < 0)
		n = input_line(s);
	for (; n >= 0; n = input_line(s)) {
		wfile_put(s->w, s->line, (size_t)n);
		if (s->w->total > s->w->max)
			return too_large(s);
		if (s->w->err != 0)
			break;
	}
	if (ferror(s->in))
		return send_fail(
		    RQ_EX_IOERR, "reading the message: %s", strerror(errno));
	return RQ_EX_OK;
}

/*
 * Makes the file durable and moves it into incoming/: fsync, rename,
 * then fsync of incoming/ (or syncfs() when the submitter may not open
 * the directory).  Signals are blocked from the rename on, so the exit
 * status tells the truth; if the directory cannot be synced the file is
 * taken back out (75) unless the daemon has already queued it (0).
 */
static int
spool_commit(struct submit *s)
{
	struct wfile *w = s->w;
	int dfd, r;

	wfile_flush(w);
	if (w->err == 0 && fsync(w->fd) != 0)
		w->err = errno;
	if (w->err != 0)
		return send_fail(RQ_EX_TEMPFAIL, "writing %.200s: %s", tmp_path,
		    strerror(w->err));
	str_printf(&s->final_path, "%s/%s", s->incdir, s->name);
	signals_block();
	if (renameat(tmp_dfd, tmp_name, inc_dfd, tmp_name) != 0)
		return send_fail(RQ_EX_TEMPFAIL,
		    "cannot move the message into %.200s: %s", s->incdir,
		    strerror(errno));
	tmp_armed = 0;
	dfd = openat(inc_dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		r = fsync(dfd);
		close(dfd);
	} else {
		r = syncfs(w->fd);
	}
	if (r != 0) {
		int err = errno;

		/* The rename may not be durable: take the file back if the
		 * daemon has not (it unlinks only after its commit). */
		if (unlinkat(inc_dfd, tmp_name, 0) == 0)
			return send_fail(RQ_EX_TEMPFAIL, "syncing %.200s: %s",
			    s->incdir, strerror(err));
	}
	r = close(w->fd);
	w->fd = -1;
	(void)r; /* data already fsync'd; close cannot lose it */
	return RQ_EX_OK;
}

/* Gives the addresses RCPT argument I named their NOTIFY and ORCPT (-bs:
 * one RCPT TO each): those it added (set index BEFORE on) take them, an
 * address named before merges them as intake does (mail_notify_merge(),
 * the first ORCPT stays). */
static void
rcpt_params_set(struct submit *s, size_t before, int i)
{
	struct rcpt_list *l = &s->rcpts;
	const char *nt = s->o.rcpt_notify ? s->o.rcpt_notify[i] : NULL;
	const char *orcpt = s->o.rcpt_orcpt ? s->o.rcpt_orcpt[i] : NULL;
	unsigned bits = 0;

	if (nt != NULL && !mail_notify_parse(nt, strlen(nt), 0, &bits))
		bits = 0; /* checked by the caller */
	l->notify = xrealloc(l->notify, l->set.n * sizeof(*l->notify));
	l->orcpt = xrealloc(l->orcpt, l->set.n * sizeof(*l->orcpt));
	for (size_t k = l->nparam; k < l->set.n; k++) {
		l->notify[k] = 0;
		l->orcpt[k] = NULL;
	}
	l->nparam = l->set.n;
	for (size_t h = 0; h < l->nhit; h++) {
		size_t k = l->hit[h];

		if (k >= before) {
			l->notify[k] = bits;
			l->orcpt[k] = orcpt;
			continue;
		}
		l->notify[k] = mail_notify_merge(l->notify[k], bits);
		if (l->orcpt[k] == NULL)
			l->orcpt[k] = orcpt;
	}
}

/* Checks the options and works out the sender and command-line rcpts. */
static int
submit_prepare(struct submit *s)
{
	struct send_opts *o = &s->o;
	unsigned notify;

	if (o->nrcpt == 0 && !o->extract)
		return send_fail(RQ_EX_USAGE,
		    "no recipients given (name them, or use -t to take them "
		    "from the message)");
	if (o->ret != NULL && strcasecmp(o->ret, "full") != 0 &&
	    strcasecmp(o->ret, "hdrs") != 0)
		return send_fail(RQ_EX_USAGE,
		    "-R takes full or hdrs, not \"%.64s\"", o->ret);
	if (o->notify != NULL) {
		if (!mail_notify_parse(o->notify, strlen(o->notify),
			MAIL_NOTIFY_STRICT, &notify))
			return send_fail(RQ_EX_USAGE,
			    "-N takes never, or a list of success, failure, "
			    "delay; not \"%.64s\"",
			    o->notify);
		mail_notify_format(notify, s->notify, sizeof(s->notify));
	}
	if (o->envid != NULL) {
		if (o->envid[0] == '\0' || strlen(o->envid) > ENVID_MAX ||
		    !is_printable(o->envid))
			return send_fail(RQ_EX_USAGE,
			    "-V: the envelope id must be printable ASCII, 1 "
			    "to %d characters",
			    ENVID_MAX);
		s->envid = mail_xtext_encode(o->envid);
	}
	if (o->sender != NULL) {
		enum mail_addr_result r = sender_parse(
		    o->sender, s->origin, &s->sender);

		if (r == MAIL_ADDR_TOOLONG)
			return send_fail(RQ_EX_DATAERR,
			    "bad sender address \"%.60s...\": address too "
			    "long (at most %d bytes)",
			    o->sender, ADDR_MAX);
		if (r != MAIL_ADDR_OK)
			return send_fail(RQ_EX_DATAERR,
			    "bad sender address \"%.200s\"", o->sender);
	} else {
		struct passwd *pw = getpwuid(getuid());
		const char *login = pw ? pw->pw_name : getenv("LOGNAME");
		char *a;

		if (login == NULL || login[0] == '\0')
			return send_fail(RQ_EX_USAGE,
			    "cannot tell your login name: use -f SENDER");
		str_printf(&a, "%s@%s", login, s->origin);
		buf_add(&s->sender, a, strlen(a));
		free(a);
		/* the full name From: gets without -F or $NAME, as Postfix's
		 * sendmail takes it: the GECOS field up to its first comma */
		if (pw != NULL && pw->pw_gecos != NULL &&
		    strcspn(pw->pw_gecos, ",") > 0)
			s->gecos = xstrndup(
			    pw->pw_gecos, strcspn(pw->pw_gecos, ","));
	}
	for (int i = 0; i < o->nrcpt; i++) {
		const char *r = o->rcpts[i];
		enum mail_addr_result ar = MAIL_ADDR_BAD;
		size_t before = s->rcpts.set.n;

		if (strpbrk(r, "\r\n") == NULL)
			ar = rcpts_parse(&s->rcpts, r, strlen(r), s->origin);
		if (ar == MAIL_ADDR_OK && s->rcpts.found == 0)
			ar = MAIL_ADDR_BAD; /* no address in it */
		if (ar != MAIL_ADDR_OK)
			return addr_fail(s, ar, "recipient address", r);
		if (o->rcpt_notify != NULL || o->rcpt_orcpt != NULL)
			rcpt_params_set(s, before, i);
	}
	return RQ_EX_OK;
}

/* Frees what a submission holds and removes an unfinished file. */
static void
submit_free(struct submit *s)
{
	if (s->w->fd >= 0)
		close(s->w->fd);
	if (tmp_armed) {
		(void)unlinkat(tmp_dfd, tmp_name, 0);
		tmp_armed = 0;
	}
	if (tmp_dfd >= 0)
		close(tmp_dfd);
	if (inc_dfd >= 0)
		close(inc_dfd);
	tmp_dfd = inc_dfd = -1;
	mail_addr_set_free(&s->rcpts.set);
	free(s->rcpts.notify);
	free(s->rcpts.hit);
	free(s->rcpts.orcpt);
	free(s->envid);
	free(s->gecos);
	free(s->h.raw.p);
	free(s->h.f);
	free(s->sender.p);
	free(s->line);
	free(s->written.p);
	free(s->tmpdir);
	free(s->incdir);
	free(s->name);
	free(s->final_path);
	free(s->w);
}

/* Runs -bp as `relayq mailq`, -q as `relayq flush`. */
static int
mode_run(const struct send_opts *o)
{
	char *argv[4];
	int argc = 0;

	argv[argc++] = (char *)(o->mode == MODE_MAILQ ? "mailq" : "flush");
	if (o->cfg_path != NULL) {
		argv[argc++] = (char *)"-c";
		argv[argc++] = (char *)o->cfg_path;
	}
	argv[argc] = NULL;
	optind = 1;
	if (o->mode == MODE_MAILQ)
		return cmd_mailq(argc, argv);
	cmd_flush_silent();
	return cmd_flush(argc, argv);
}

/* Submits one message; see cmd_send.h.  The steps: the envelope
 * (submit_prepare), the file in tmp/ (spool_create), the header
 * (header_read, -t: header_extract, header_write, header_check), the
 * body (body_copy), then fsync and rename (spool_commit). */
int
send_submit(const struct cfg *cfg, const struct send_opts *o, FILE *in)
{
	const struct cfg_scope *sc = cfg_scope(cfg, NULL);
	struct submit s;
	ssize_t pending;
	int rc;

	memset(&s, 0, sizeof(s));
	why_last[0] = '\0';
	s.o = *o;
	s.in = in;
	s.spool = cfg_str(sc, CFG_SPOOL_DIR);
	spool_user = cfg_str(sc, CFG_USER);
	/* as intake qualifies: origin (/etc/mailname, else the FQDN) */
	s.origin = cfg_str(sc, CFG_ORIGIN);
	s.rcpts.max = (size_t)cfg_int(sc, CFG_MAX_RECIPIENTS);
	s.w = xcalloc(1, sizeof(*s.w));
	s.w->fd = -1;
	s.next_bol = true;
	s.w->max = (uint64_t)cfg_int(sc, CFG_MAX_MESSAGE_SIZE);
	str_printf(&s.tmpdir, "%s/tmp", s.spool);
	str_printf(&s.incdir, "%s/incoming", s.spool);

	if ((rc = submit_prepare(&s)) != RQ_EX_OK ||
	    (rc = spool_create(&s)) != RQ_EX_OK ||
	    (rc = header_read(&s, &pending)) != RQ_EX_OK)
		goto out;
	if (s.h.raw.len > 0 && memchr(s.h.raw.p, '\0', s.h.raw.len) != NULL) {
		rc = send_fail(
		    RQ_EX_DATAERR, "binary data (NUL) in the header section");
		goto out;
	}
	if (s.o.extract && (rc = header_extract(&s)) != RQ_EX_OK)
		goto out;
	if (s.rcpts.set.n == 0) {
		rc = send_fail(RQ_EX_USAGE,
		    "no recipient addresses found in the message header");
		goto out;
	}
	s.w->tee = &s.written;
	header_write(&s);
	s.w->tee = NULL;
	if ((rc = header_check(&s)) != RQ_EX_OK ||
	    (rc = body_copy(&s, pending)) != RQ_EX_OK)
		goto out;
	rc = spool_commit(&s);
out:
	submit_free(&s);
	return rc;
}

int
cmd_send(int argc, char **argv)
{
	struct send_opts o;
	struct cfg *cfg;
	bool help;
	int rc;

	if ((rc = opts_parse(argc, argv, &o, &help)) != RQ_EX_OK)
		return rc;
	if (help) {
		usage(stdout);
		return RQ_EX_OK;
	}
	/* as Postfix's sendmail: -t only in delivery mode */
	if (o.extract &&
	    (o.mode == MODE_SMTP || o.mode == MODE_VERIFY ||
		o.mode == MODE_ALIASES))
		return send_fail(
		    RQ_EX_USAGE, "-t can be used only in delivery mode");
	if (o.mode == MODE_MAILQ || o.mode == MODE_FLUSH)
		return mode_run(&o);
	if (o.mode == MODE_QINTERVAL)
		return RQ_EX_OK; /* ignored, as Postfix's sendmail: relayq run
				    retries on its own schedule */
	cfg = tools_cfg_load(tools_cfg_path(o.cfg_path));
	switch (o.mode) {
	case MODE_ALIASES:
		rc = send_aliases_run(cfg);
		break;
	case MODE_VERIFY:
		rc = send_verify_run(cfg, &o);
		break;
	case MODE_SMTP:
		signals_catch();
		rc = send_smtp_run(cfg, &o);
		break;
	default:
		signals_catch();
		rc = send_submit(cfg, &o, stdin);
		break;
	}
	cfg_free(cfg);
	return rc;
}
