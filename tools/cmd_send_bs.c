/*
 * cmd_send_bs.c - `sendmail -bs`: an SMTP server on standard input and
 * output for local programs (PHP, Symfony Mailer, Alpine), as sendmail's
 * and Postfix's -bs.  Each message goes into the spool through
 * send_submit(), the path `relayq send` takes, so it is checked and
 * written exactly as a command-line submission: MAIL FROM is -f, each
 * RCPT TO a recipient argument (with its NOTIFY and ORCPT), RET and
 * ENVID as -R and -V.
 *
 * Commands: EHLO, HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT, VRFY (252),
 * HELP; EHLO offers PIPELINING, SIZE, 8BITMIME, DSN and
 * ENHANCEDSTATUSCODES.  Replies are written when no input is waiting
 * (PIPELINING: a pipelined group is answered at once, in order).  The
 * message of DATA is un-dot-stuffed into an unlinked temporary file,
 * then submitted with the dots ignored.  A submission that fails says
 * why in its reply: 554 for what send refuses (65), 451 for what may
 * work later (75).
 *
 * A client silent for BS_IDLE_SECS ends the session (exit 75).
 *
 * Public (cmd_send.h): send_smtp_run().
 * Invariant: "250 ... queued" is written exactly when send_submit()
 * put the message into incoming/ (fsync'd).
 */
#include <sys/stat.h>

#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cmd_send.h"
#include "mail.h"

#define BS_LINE_MAX 2048 /* a command line (RFC 5321: 512) */
#define BS_XTEXT_MAX 500 /* an ORCPT as intake takes it */
#define BS_ENVID_MAX 100 /* RFC 3461 4.4 */
#define BS_ERRORS_MAX 20 /* bad commands before the session ends */
/* A client silent this long is gone: SIGALRM ends the session (75,
 * nothing half-written left: send's handler), as Postfix's
 * smtpd_timeout. */
#define BS_IDLE_SECS 300

/* Standard input, read by hand so that we know when none waits. */
struct bs_in {
	char buf[65536];
	size_t pos, len;
	bool eof;
};

/* One SMTP session and its transaction. */
struct bs {
	const struct cfg *cfg;
	const struct send_opts *base; /* the command line */
	struct bs_in in;
	const char *host;
	uint64_t max_size;
	size_t max_rcpt;
	bool greeted, esmtp; /* HELO or EHLO said; which */
	bool have_mail;
	char *sender, *ret, *envid;
	char **rcpts, **notify, **orcpt;
	size_t nrcpt;
	int errors;
};

/* Fills the input buffer; false at end of input. */
static bool
in_fill(struct bs_in *in)
{
	ssize_t n;

	if (in->pos < in->len)
		return true;
	if (in->eof)
		return false;
	fflush(stdout); /* nothing waits: say what was answered */
	alarm(BS_IDLE_SECS);
	do
		n = read(STDIN_FILENO, in->buf, sizeof(in->buf));
	while (n < 0 && errno == EINTR);
	alarm(0);
	if (n <= 0) {
		in->eof = true;
		return false;
	}
	in->pos = 0;
	in->len = (size_t)n;
	return true;
}

/* The next byte of input, or EOF. */
static int
in_getc(struct bs_in *in)
{
	if (!in_fill(in))
		return EOF;
	return (unsigned char)in->buf[in->pos++];
}

/* The next byte without taking it, or EOF. */
static int
in_peek(struct bs_in *in)
{
	if (!in_fill(in))
		return EOF;
	return (unsigned char)in->buf[in->pos];
}

/*
 * Reads one command line into LINE (without its CRLF or LF); false at
 * end of input.  *LONG is set when it was longer than BS_LINE_MAX (the
 * rest is skipped).
 */
static bool
line_read(struct bs *s, char *line, bool *toolong)
{
	size_t n = 0;
	int ch;

	*toolong = false;
	while ((ch = in_getc(&s->in)) != EOF && ch != '\n') {
		if (n + 1 < BS_LINE_MAX)
			line[n++] = (char)ch;
		else
			*toolong = true;
	}
	if (ch == EOF && n == 0)
		return false;
	if (n > 0 && line[n - 1] == '\r')
		n--;
	line[n] = '\0';
	return true;
}

/* Writes one reply line (CRLF added). */
static void __attribute__((format(printf, 2, 3)))
reply(struct bs *s, const char *fmt, ...)
{
	va_list ap;

	(void)s;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fputs("\r\n", stdout);
}

/* Forgets the transaction (RSET, after DATA, a new EHLO). */
static void
txn_reset(struct bs *s)
{
	for (size_t i = 0; i < s->nrcpt; i++) {
		free(s->rcpts[i]);
		free(s->notify[i]);
		free(s->orcpt[i]);
	}
	free(s->rcpts);
	free(s->notify);
	free(s->orcpt);
	free(s->sender);
	free(s->ret);
	free(s->envid);
	s->rcpts = s->notify = s->orcpt = NULL;
	s->sender = s->ret = s->envid = NULL;
	s->nrcpt = 0;
	s->have_mail = false;
}

/*
 * Splits "FROM:<addr> PARAMS" (after the verb): the path into *ADDR
 * (malloc'd, without <>), *PARAMS to what follows.  False when it is not
 * a path.
 */
static bool
path_split(const char *arg, const char *what, char **addr, char **params)
{
	size_t wn = strlen(what);
	const char *p = arg, *end;

	if (strncasecmp(p, what, wn) != 0)
		return false;
	p += wn;
	while (*p == ' ')
		p++;
	if (*p == '<') {
		bool quoted = false;

		for (end = p + 1; *end != '\0'; end++) {
			if (*end == '\\' && end[1] != '\0')
				end++;
			else if (*end == '"')
				quoted = !quoted;
			else if (*end == '>' && !quoted)
				break;
		}
		if (*end != '>')
			return false;
		*addr = strndup(p + 1, (size_t)(end - p - 1));
		end++;
	} else {
		/* no brackets (old clients): up to the first blank */
		end = p + strcspn(p, " ");
		if (end == p)
			return false;
		*addr = strndup(p, (size_t)(end - p));
	}
	if (*addr == NULL)
		abort();
	if (*end != '\0' && *end != ' ') {
		free(*addr);
		return false;
	}
	while (*end == ' ')
		end++;
	*params = (char *)end;
	return true;
}

/* The next "KEY=VALUE" of PARAMS: *K, *V (NUL-terminated in place);
 * false at the end. */
static bool
param_next(char **params, char **k, char **v)
{
	char *p = *params, *eq;

	while (*p == ' ')
		p++;
	if (*p == '\0')
		return false;
	*k = p;
	p += strcspn(p, " ");
	if (*p != '\0')
		*p++ = '\0';
	*params = p;
	eq = strchr(*k, '=');
	*v = eq != NULL ? eq + 1 : NULL;
	if (eq != NULL)
		*eq = '\0';
	return true;
}

/* True if S is printable ASCII (what an ENVID may decode to). */
static bool
printable(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] < 0x20 || s[i] > 0x7e)
			return false;
	return true;
}

/* MAIL FROM:<addr> [SIZE=] [BODY=] [RET=] [ENVID=] [SMTPUTF8]. */
/* Whether parameter K was given before in this command (SEEN: the
 * names so far, each between spaces, upper case); adds it. */
static bool
param_seen(char seen[128], const char *k)
{
	char w[24];
	size_t n = strlen(k);

	if (n + 2 >= sizeof(w))
		return false;
	w[0] = ' ';
	for (size_t i = 0; i < n; i++)
		w[i + 1] = (char)toupper((unsigned char)k[i]);
	w[n + 1] = ' ';
	w[n + 2] = '\0';
	if (strstr(seen, w) != NULL)
		return true;
	if (strlen(seen) + n + 2 < 128)
		strcat(seen[0] ? seen : strcpy(seen, " "), w + 1);
	return false;
}

static void
cmd_mail(struct bs *s, const char *arg)
{
	char *addr = NULL, *params, *k, *v, *copy = NULL;
	char seen[128] = "";

	/* no HELO required first, as Postfix (smtpd_helo_required = no) */
	if (s->have_mail) {
		reply(s, "503 5.5.1 Error: nested MAIL command");
		return;
	}
	copy = strdup(arg);
	if (copy == NULL)
		abort();
	if (!path_split(copy, "FROM:", &addr, &params)) {
		free(copy);
		{
			reply(s, "501 5.5.4 Syntax: MAIL FROM:<address>");
			return;
		}
	}
	txn_reset(s);
	while (param_next(&params, &k, &v)) {
		if (param_seen(seen, k)) {
			reply(s, "501 5.5.4 Duplicate parameter: %.64s", k);
			goto bad;
		}
		if (strcasecmp(k, "SIZE") == 0 &&
		    (v == NULL || v[strspn(v, "0123456789")] != '\0' ||
			v[0] == '\0')) {
			reply(s, "501 5.5.4 Bad SIZE parameter");
			goto bad;
		} else if (strcasecmp(k, "SIZE") == 0) {
			if (strtoull(v, NULL, 10) > s->max_size) {
				reply(s,
				    "552 5.3.4 Message size exceeds fixed "
				    "limit");
				goto bad;
			}
		} else if (strcasecmp(k, "BODY") == 0 && v != NULL &&
		    (strcasecmp(v, "7BIT") == 0 ||
			strcasecmp(v, "8BITMIME") == 0)) {
			/* taken as it comes: relayq sends 8-bit data on */
		} else if (strcasecmp(k, "RET") == 0 && v != NULL &&
		    (strcasecmp(v, "FULL") == 0 ||
			strcasecmp(v, "HDRS") == 0)) {
			free(s->ret);
			s->ret = strdup(v);
		} else if (strcasecmp(k, "ENVID") == 0 && v != NULL &&
		    mail_xtext_valid(v, strlen(v))) {
			size_t n;
			char *d = mail_xtext_decode(v, strlen(v), 0, &n);

			if (n == 0 || n > BS_ENVID_MAX || !printable(d, n)) {
				free(d);
				reply(s, "501 5.5.4 Bad ENVID parameter");
				goto bad;
			}
			free(s->envid);
			s->envid = d;
		} else {
			reply(s, "555 5.5.4 Unsupported option: %.64s", k);
			goto bad;
		}
	}
	if (!send_addr_ok(s->cfg, addr, true)) {
		reply(s, "501 5.1.7 Bad sender address syntax");
		goto bad;
	}
	s->sender = addr[0] != '\0' ? addr : strdup("<>");
	if (s->sender != addr)
		free(addr);
	addr = NULL;
	s->have_mail = true;
	free(copy);
	{
		reply(s, "250 2.1.0 Ok");
		return;
	}
bad:
	free(addr);
	free(copy);
	txn_reset(s);
}

/* RCPT TO:<addr> [NOTIFY=] [ORCPT=]. */
static void
cmd_rcpt(struct bs *s, const char *arg)
{
	char *addr = NULL, *params, *k, *v, *copy;
	char *notify = NULL, *orcpt = NULL;
	unsigned bits;

	if (!s->have_mail) {
		reply(s, "503 5.5.1 Error: need MAIL command");
		return;
	}
	if ((copy = strdup(arg)) == NULL)
		abort();
	if (!path_split(copy, "TO:", &addr, &params)) {
		free(copy);
		{
			reply(s, "501 5.5.4 Syntax: RCPT TO:<address>");
			return;
		}
	}
	while (param_next(&params, &k, &v)) {
		if (strcasecmp(k, "NOTIFY") == 0 && v != NULL &&
		    mail_notify_parse(
			v, strlen(v), MAIL_NOTIFY_STRICT, &bits)) {
			free(notify);
			notify = strdup(v);
		} else if (strcasecmp(k, "ORCPT") == 0 && v != NULL &&
		    strlen(v) <= BS_XTEXT_MAX && strchr(v, ';') != NULL &&
		    mail_xtext_valid(v, strlen(v))) {
			free(orcpt);
			orcpt = strdup(v);
		} else {
			reply(s, "555 5.5.4 Unsupported option: %.64s", k);
			goto out;
		}
	}
	if (!send_addr_ok(s->cfg, addr, false)) {
		reply(s, "501 5.1.3 Bad recipient address syntax");
		goto out;
	}
	if (s->nrcpt >= s->max_rcpt) {
		reply(s, "452 4.5.3 Error: too many recipients");
		goto out;
	}
	s->rcpts = realloc(s->rcpts, (s->nrcpt + 1) * sizeof(*s->rcpts));
	s->notify = realloc(s->notify, (s->nrcpt + 1) * sizeof(*s->notify));
	s->orcpt = realloc(s->orcpt, (s->nrcpt + 1) * sizeof(*s->orcpt));
	if (s->rcpts == NULL || s->notify == NULL || s->orcpt == NULL)
		abort();
	s->rcpts[s->nrcpt] = addr;
	s->notify[s->nrcpt] = notify;
	s->orcpt[s->nrcpt] = orcpt;
	s->nrcpt++;
	addr = notify = orcpt = NULL;
	reply(s, "250 2.1.5 Ok");
out:
	free(addr);
	free(notify);
	free(orcpt);
	free(copy);
}

/*
 * Reads the message after 354 up to its "." line into FP, dots
 * un-stuffed; *OVER when it was longer than max_size (the rest is read
 * and dropped).  False at end of input before the "." line.
 */
static bool
data_read(struct bs *s, FILE *fp, bool *over)
{
	uint64_t total = 0;
	bool bol = true;
	int ch;

	*over = false;
	while ((ch = in_getc(&s->in)) != EOF) {
		if (bol && ch == '.') {
			int next = in_peek(&s->in);

			if (next == '\r' || next == '\n') {
				(void)in_getc(&s->in);
				if (next == '\r' && in_peek(&s->in) == '\n')
					(void)in_getc(&s->in);
				return true;
			}
			if (next == EOF)
				return false;
			ch = in_getc(&s->in); /* the stuffed dot is dropped */
		}
		bol = ch == '\n';
		if (++total > s->max_size)
			*over = true;
		else
			putc(ch, fp);
	}
	return false;
}

/* The reply to a submission that failed with sysexits code RC. */
static void
submit_reply(struct bs *s, int rc)
{
	char why[400];
	size_t n;

	snprintf(why, sizeof(why), "%s", send_why());
	for (n = 0; why[n] != '\0'; n++)
		if ((unsigned char)why[n] < 0x20)
			why[n] = ' ';
	if (rc == RQ_EX_TEMPFAIL || rc == RQ_EX_IOERR || rc == RQ_EX_OSERR)
		reply(s, "451 4.3.0 Error: %s", why);
	else if (send_too_large())
		reply(s, "552 5.3.4 Error: %s", why); /* RFC 1870 */
	else
		reply(s, "554 5.6.0 Error: %s", why);
}

/* DATA: the message, then submitted as `send` submits one. */
static bool
cmd_data(struct bs *s)
{
	struct send_opts o = *s->base;
	FILE *fp;
	bool over, done;
	int rc;
	sigset_t all;

	if (!s->have_mail) {
		reply(s, "503 5.5.1 Error: need MAIL command");
		return true;
	}
	if (s->nrcpt == 0) {
		reply(s, "554 5.5.1 Error: no valid recipients");
		return true;
	}
	if ((fp = tmpfile()) == NULL) {
		reply(s, "451 4.3.0 Error: no temporary file: %s",
		    strerror(errno));
		return true;
	}
	reply(s, "354 End data with <CR><LF>.<CR><LF>");
	done = data_read(s, fp, &over);
	if (!done) {
		fclose(fp);
		return false; /* the client went away: nothing queued */
	}
	if (over) {
		reply(s, "552 5.3.4 Message size exceeds fixed limit");
	} else if (fflush(fp) != 0 || ferror(fp) || fseek(fp, 0, SEEK_SET)) {
		reply(
		    s, "451 4.3.0 Error: temporary file: %s", strerror(errno));
	} else {
		o.sender = s->sender;
		o.ret = s->ret;
		o.envid = s->envid;
		o.extract = false;
		o.ignore_dots = true;
		o.mode = MODE_SEND;
		o.nrcpt = (int)s->nrcpt;
		o.rcpts = s->rcpts;
		o.rcpt_notify = (const char *const *)s->notify;
		o.rcpt_orcpt = (const char *const *)s->orcpt;
		rc = send_submit(s->cfg, &o, fp);
		if (rc == RQ_EX_OK)
			reply(s, "250 2.0.0 Ok: queued");
		else
			submit_reply(s, rc);
		/* send_submit() blocks signals from its rename on: the
		 * outcome is said, so they may end us again */
		fflush(stdout);
		sigfillset(&all);
		sigprocmask(SIG_UNBLOCK, &all, NULL);
	}
	fclose(fp);
	txn_reset(s);
	return true;
}

/* EHLO or HELO. */
static void
cmd_hello(struct bs *s, const char *arg, bool esmtp)
{
	if (arg[0] == '\0') {
		reply(s, "501 Syntax: %s hostname", esmtp ? "EHLO" : "HELO");
		return;
	}
	txn_reset(s);
	s->greeted = true;
	s->esmtp = esmtp;
	if (!esmtp) {
		reply(s, "250 %s", s->host);
		return;
	}
	reply(s, "250-%s", s->host);
	reply(s, "250-PIPELINING");
	reply(s, "250-SIZE %llu", (unsigned long long)s->max_size);
	reply(s, "250-8BITMIME");
	reply(s, "250-DSN");
	reply(s, "250 ENHANCEDSTATUSCODES");
}

/* Runs one command line; false to end the session. */
static bool
command_run(struct bs *s, char *line)
{
	size_t vn = strcspn(line, " ");
	char *arg = line + vn;

	while (*arg == ' ')
		arg++;
	if (vn == 4 && strncasecmp(line, "EHLO", 4) == 0)
		cmd_hello(s, arg, true);
	else if (vn == 4 && strncasecmp(line, "HELO", 4) == 0)
		cmd_hello(s, arg, false);
	else if (vn == 4 && strncasecmp(line, "MAIL", 4) == 0)
		cmd_mail(s, arg);
	else if (vn == 4 && strncasecmp(line, "RCPT", 4) == 0)
		cmd_rcpt(s, arg);
	else if (vn == 4 && strncasecmp(line, "DATA", 4) == 0)
		return cmd_data(s);
	else if (vn == 4 && strncasecmp(line, "RSET", 4) == 0) {
		txn_reset(s);
		reply(s, "250 2.0.0 Ok");
	} else if (vn == 4 && strncasecmp(line, "NOOP", 4) == 0)
		reply(s, "250 2.0.0 Ok");
	else if (vn == 4 && strncasecmp(line, "VRFY", 4) == 0)
		reply(s, "252 2.0.0 Send some mail, I'll try my best");
	else if (vn == 4 && strncasecmp(line, "HELP", 4) == 0)
		reply(s, "214 2.0.0 EHLO HELO MAIL RCPT DATA RSET NOOP QUIT");
	else if (vn == 4 && strncasecmp(line, "QUIT", 4) == 0) {
		reply(s, "221 2.0.0 Bye");
		return false;
	} else {
		reply(s, "502 5.5.2 Error: command not recognized");
		if (++s->errors >= BS_ERRORS_MAX) {
			reply(
			    s, "421 4.7.0 %s Error: too many errors", s->host);
			return false;
		}
	}
	return true;
}

/* Runs -bs; see cmd_send.h. */
int
send_smtp_run(const struct cfg *cfg, const struct send_opts *o)
{
	const struct cfg_scope *sc = cfg_scope(cfg, NULL);
	struct bs *s = calloc(1, sizeof(*s));
	char *line = malloc(BS_LINE_MAX);
	bool toolong;

	if (s == NULL || line == NULL)
		abort();
	s->cfg = cfg;
	s->base = o;
	s->host = cfg_str(sc, CFG_HOSTNAME);
	s->max_size = (uint64_t)cfg_int(sc, CFG_MAX_MESSAGE_SIZE);
	s->max_rcpt = (size_t)cfg_int(sc, CFG_MAX_RECIPIENTS);
	if (s->max_rcpt == 0)
		s->max_rcpt = (size_t)-1;
	send_quiet();
	{
		static char bye[300];

		snprintf(bye, sizeof(bye),
		    "421 4.4.2 %.200s Error: timeout exceeded\r\n", s->host);
		send_alarm_farewell(bye);
	}
	reply(s, "220 %s ESMTP relayq", s->host);
	while (line_read(s, line, &toolong)) {
		if (toolong) {
			reply(s, "500 5.5.0 Error: line too long");
			continue;
		}
		if (!command_run(s, line))
			break;
	}
	fflush(stdout);
	txn_reset(s);
	free(line);
	free(s);
	return RQ_EX_OK;
}
