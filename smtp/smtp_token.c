/*
 * smtp_token.c - the token command of an auth_file entry
 * (`user:|/path/to/command args`): run on the client's event loop for
 * each new connection that needs it, before connect(2), as the session's
 * first phase (SMTP_PH_TOKEN, under timeout.misc); its first output line
 * is the OAuth 2.0 token that XOAUTH2 or OAUTHBEARER sends.
 *
 * Module functions: smtp_token_start(), smtp_token_cancel(),
 * smtp_token_forget(), smtp_kids_reap_all().
 *
 * How: fork, and in the child (only async-signal-safe calls) a new
 * process group, default signal dispositions and mask, /dev/null as
 * standard input, pipes as standard output and error, every other
 * descriptor closed, execve() of the absolute path with the words of the
 * entry: no shell unless the entry names one.  The parent reads both
 * pipes from libevent (never blocking), and once standard output is at
 * its end waits for the exit status with WNOHANG polls.  A command that
 * fails, prints no token or outlives the phase deadline (then its whole
 * process group is killed) ends the session by rule 15c of
 * smtp_policy.c.  Children not yet reaped when their connection goes are
 * handed to the client, which reaps them with WNOHANG polls: the loop
 * never waits for a child.
 *
 * Invariants: the token is only in conn->token (zeroed and freed once
 * the AUTH command carrying it is written, or when the connection goes)
 * and in the read buffer (zeroed before it is freed); it is never
 * logged; a child is always reaped.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "smtp_int.h"

#define TOKEN_MAX 16384 /* bytes of the first line kept */
#define ERR_MAX 256 /* bytes of standard error kept */
#define WAIT_POLL_US 5000 /* exit status polls after EOF */
#define REAP_POLL_US 100000 /* polls for children of closed sessions */

extern char **environ;

struct smtp_token {
	struct smtp_conn *conn;
	pid_t pid;
	int out, err; /* our ends of the pipes, -1 once at EOF */
	struct event *ev_out, *ev_err, *ev_wait;
	char *buf; /* standard output (secret), TOKEN_MAX + 1 bytes */
	size_t len;
	char errbuf[ERR_MAX + 1];
	size_t errlen;
};

/* ---- the children of closed sessions ---- */

/* Polls the client's children; re-arms while some are left. */
static void
kids_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_client *client = arg;
	struct timeval tv = { 0, REAP_POLL_US };
	size_t i = 0;

	while (i < client->nkids) {
		pid_t r = waitpid(client->kids[i], NULL, WNOHANG);

		if (r == 0) {
			i++;
			continue;
		}
		client->kids[i] = client->kids[--client->nkids];
	}
	if (client->nkids > 0)
		evtimer_add(client->kids_ev, &tv);
}

/* Kills child PID's process group and leaves it to the client. */
static void
kids_add(struct smtp_client *client, pid_t pid)
{
	struct timeval tv = { 0, REAP_POLL_US };

	kill(-pid, SIGKILL);
	kill(pid, SIGKILL);
	if (waitpid(pid, NULL, WNOHANG) != 0)
		return;
	client->kids = xrealloc(
	    client->kids, (client->nkids + 1) * sizeof(*client->kids));
	client->kids[client->nkids++] = pid;
	if (client->kids_ev == NULL)
		client->kids_ev = evtimer_new(client->base, kids_cb, client);
	if (!evtimer_pending(client->kids_ev, NULL))
		evtimer_add(client->kids_ev, &tv);
}

/* Reaps what can be reaped now (the client is being freed). */
void
smtp_kids_reap_all(struct smtp_client *client)
{
	for (size_t i = 0; i < client->nkids; i++) {
		kill(-client->kids[i], SIGKILL);
		waitpid(client->kids[i], NULL, WNOHANG);
	}
	free(client->kids);
	client->kids = NULL;
	client->nkids = 0;
	if (client->kids_ev != NULL)
		event_free(client->kids_ev);
	client->kids_ev = NULL;
}

/* ---- one command ---- */

/* Frees T: events, pipes, buffers (zeroed); not the child. */
static void
token_free(struct smtp_token *t)
{
	if (t->ev_out != NULL)
		event_free(t->ev_out);
	if (t->ev_err != NULL)
		event_free(t->ev_err);
	if (t->ev_wait != NULL)
		event_free(t->ev_wait);
	if (t->out >= 0)
		close(t->out);
	if (t->err >= 0)
		close(t->err);
	rq_cleanse(t->buf, TOKEN_MAX + 1);
	free(t->buf);
	free(t);
}

/* Ends CONN's command with the failure FMT (rule 15c). */
static void __attribute__((format(printf, 2, 3)))
token_fail(struct smtp_conn *conn, const char *fmt, ...)
{
	char why[SMTP_TEXT_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	smtp_token_failed(conn, why);
}

/* The first line of the command's error output, for a reason. */
static const char *
token_stderr(struct smtp_token *t, char *buf, size_t len)
{
	char *nl;

	t->errbuf[t->errlen] = '\0';
	nl = strchr(t->errbuf, '\n');
	rq_sanitize(
	    buf, len, t->errbuf, nl ? (size_t)(nl - t->errbuf) : t->errlen);
	return buf;
}

/* The child exited with STATUS: take the token or fail. */
static void
token_done(struct smtp_token *t, int status)
{
	struct smtp_conn *conn = t->conn;
	char err[200], *nl;
	size_t n;

	t->pid = 0;
	token_stderr(t, err, sizeof(err));
	if (WIFSIGNALED(status)) {
		token_fail(conn, "was killed by signal %d%s%s",
		    WTERMSIG(status), err[0] ? ": " : "", err);
		return;
	}
	if (WEXITSTATUS(status) != 0) {
		token_fail(conn, "exited with status %d%s%s",
		    WEXITSTATUS(status), err[0] ? ": " : "", err);
		return;
	}
	t->buf[t->len] = '\0';
	nl = memchr(t->buf, '\n', t->len);
	n = nl ? (size_t)(nl - t->buf) : t->len;
	while (n > 0 &&
	    (t->buf[n - 1] == '\r' || t->buf[n - 1] == ' ' ||
		t->buf[n - 1] == '\t'))
		n--;
	if (n == 0 || memchr(t->buf, '\0', n) != NULL) {
		token_fail(
		    conn, "printed no token%s%s", err[0] ? ": " : "", err);
		return;
	}
	conn->token = xmalloc(n + 1);
	memcpy(conn->token, t->buf, n);
	conn->token[n] = '\0';
	conn->tok = NULL;
	token_free(t);
	smtp_conn_connect(conn);
}

/* Looks for the child's exit (after EOF on its output). */
static void
token_wait_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_token *t = arg;
	struct timeval tv = { 0, WAIT_POLL_US };
	int status;
	pid_t r = waitpid(t->pid, &status, WNOHANG);

	if (r == t->pid) {
		token_done(t, status);
		return;
	}
	if (r < 0 && errno != EINTR) {
		t->pid = 0;
		token_fail(
		    t->conn, "cannot be waited for: %s", strerror(errno));
		return;
	}
	evtimer_add(t->ev_wait, &tv);
}

/* Standard output: keep the start (the first line), drain the rest. */
static void
token_out_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_token *t = arg;
	char junk[4096];
	ssize_t n;

	for (;;) {
		if (t->len < TOKEN_MAX)
			n = read(fd, t->buf + t->len, TOKEN_MAX - t->len);
		else
			n = read(fd, junk, sizeof(junk));
		if (n > 0) {
			if (t->len < TOKEN_MAX)
				t->len += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		/* EOF (or an error): wait for the exit status. */
		event_del(t->ev_out);
		close(t->out);
		t->out = -1;
		token_wait_cb(-1, 0, t);
		break;
	}
	rq_cleanse(junk, sizeof(junk));
}

/* Standard error: keep its start for the reason, drain the rest. */
static void
token_err_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_token *t = arg;
	char junk[1024];
	ssize_t n;

	for (;;) {
		n = read(fd, junk, sizeof(junk));
		if (n > 0) {
			size_t k = (size_t)n;

			if (k > ERR_MAX - t->errlen)
				k = ERR_MAX - t->errlen;
			memcpy(t->errbuf + t->errlen, junk, k);
			t->errlen += k;
			continue;
		}
		if (n < 0 && (errno == EINTR))
			continue;
		if (n == 0 || errno != EAGAIN) {
			event_del(t->ev_err);
			close(t->err);
			t->err = -1;
		}
		break;
	}
}

/* In the child: set up and exec ARGV; only async-signal-safe calls. */
static void __attribute__((noreturn))
token_child(const char *const *argv, int out, int err)
{
	static const char msg[] = "cannot execute the token command\n";
	struct sigaction sa;
	sigset_t none;
	int null, sig;

	setpgid(0, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_DFL;
	for (sig = 1; sig < NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			sigaction(sig, &sa, NULL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	null = open("/dev/null", O_RDONLY);
	if (null < 0 || dup2(null, 0) < 0 || dup2(out, 1) < 0 ||
	    dup2(err, 2) < 0)
		_exit(126);
	if (close_range(3, ~0U, 0) < 0)
		for (int fd = 3; fd < 4096; fd++)
			close(fd);
	execve(argv[0], (char *const *)argv, environ);
	if (write(2, msg, sizeof(msg) - 1) < 0)
		_exit(127);
	_exit(127);
}

/* Starts CONN's token command; CONN is in SMTP_PH_TOKEN.  On success
 * smtp_conn_connect() follows, else rule 15c (smtp_token_failed). */
void
smtp_token_start(struct smtp_conn *conn)
{
	const struct cfg_auth *a = conn->req->req.auth;
	struct event_base *base = conn->client->base;
	struct smtp_token *t;
	int po[2], pe[2];
	pid_t pid;

	if (access(a->argv[0], X_OK) != 0) {
		token_fail(conn, "%s", strerror(errno));
		return;
	}
	if (pipe2(po, O_CLOEXEC) < 0) {
		token_fail(conn, "pipe: %s", strerror(errno));
		return;
	}
	if (pipe2(pe, O_CLOEXEC) < 0) {
		close(po[0]);
		close(po[1]);
		token_fail(conn, "pipe: %s", strerror(errno));
		return;
	}
	pid = fork();
	if (pid == 0)
		token_child(a->argv, po[1], pe[1]);
	close(po[1]);
	close(pe[1]);
	if (pid < 0) {
		close(po[0]);
		close(pe[0]);
		token_fail(conn, "fork: %s", strerror(errno));
		return;
	}
	t = xcalloc(1, sizeof(*t));
	t->conn = conn;
	t->pid = pid;
	t->out = po[0];
	t->err = pe[0];
	t->buf = xmalloc(TOKEN_MAX + 1);
	fcntl(t->out, F_SETFL, O_NONBLOCK);
	fcntl(t->err, F_SETFL, O_NONBLOCK);
	t->ev_out = event_new(
	    base, t->out, EV_READ | EV_PERSIST, token_out_cb, t);
	t->ev_err = event_new(
	    base, t->err, EV_READ | EV_PERSIST, token_err_cb, t);
	t->ev_wait = evtimer_new(base, token_wait_cb, t);
	if (t->ev_out == NULL || t->ev_err == NULL || t->ev_wait == NULL)
		abort();
	event_add(t->ev_out, NULL);
	event_add(t->ev_err, NULL);
	conn->tok = t;
}

/* Stops CONN's command, if one runs: kill it, leave it to the reaper. */
void
smtp_token_cancel(struct smtp_conn *conn)
{
	struct smtp_token *t = conn->tok;

	if (t == NULL)
		return;
	conn->tok = NULL;
	if (t->pid > 0)
		kids_add(conn->client, t->pid);
	token_free(t);
}

/* Zeroes and frees CONN's token (AUTH is over, or the session). */
void
smtp_token_forget(struct smtp_conn *conn)
{
	if (conn->token != NULL) {
		rq_cleanse(conn->token, strlen(conn->token));
		free(conn->token);
		conn->token = NULL;
	}
}
