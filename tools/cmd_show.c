/*
 * cmd_show.c - `relayq show ID`: a message's envelope, each recipient's
 * state and history (attempts, last and next attempt, last reply, then
 * one line per kept attempt, oldest first), then the message exactly as
 * it will be sent (CRLF line endings), like Postfix's postcat -q.
 *
 * Public: cmd_show().  Exit 0; 64 usage; 67 (EX_NOUSER) no such message;
 * 77 permission; 75 queue error.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "queue.h"
#include "tools.h"

/* printf into the buffered output. */
static void __attribute__((format(printf, 1, 2)))
tools_printf(const char *fmt, ...)
{
	char buf[2048];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n > 0)
		tools_out(
		    buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

/* Formats unix time T as "2026-11-22 03:17:07 +0000" into buf. */
static const char *
fmt_date(int64_t t, char *buf, size_t len)
{
	struct tm tm;
	time_t tt = (time_t)t;

	localtime_r(&tt, &tm);
	if (strftime(buf, len, "%Y-%m-%d %H:%M:%S %z", &tm) == 0)
		snprintf(buf, len, "%lld", (long long)t);
	return buf;
}

/* Formats unix time T as "2026-11-22 03:17:07 +0000 (1795321027)". */
static const char *
fmt_time(int64_t t, char *buf, size_t len)
{
	char b[64];

	if (t <= 0)
		return "-";
	snprintf(
	    buf, len, "%s (%lld)", fmt_date(t, b, sizeof(b)), (long long)t);
	return buf;
}

/*
 * Prints the kept attempts of recipient IDX, oldest first, one a line:
 * "      2026-11-22 06:00:00 +0000 deferred 4.4.1 (reply)".  Nothing when
 * there are none; a line saying so when they cannot be read.
 */
static void
show_history(struct queue *q, uint64_t id, uint32_t idx)
{
	struct queue_attempt *v;
	size_t n;
	char t1[64];

	if (queue_attempts_load(q, id, idx, &v, &n) != QUEUE_OK) {
		tools_printf("    history: (cannot be read)\n");
		return;
	}
	if (n > 0)
		tools_printf("    history:\n");
	for (size_t i = 0; i < n; i++)
		tools_printf("      %s %s%s%s%s%.1000s%s\n",
		    fmt_date(v[i].time, t1, sizeof(t1)),
		    queue_state_name(v[i].state),
		    v[i].dsn_status[0] != '\0' ? " " : "", v[i].dsn_status,
		    v[i].reply != NULL ? " (" : "",
		    v[i].reply != NULL ? v[i].reply : "",
		    v[i].reply != NULL ? ")" : "");
	queue_attempts_free(v, n);
}

/* Prints one message; returns a sysexits code. */
static int
show_one(struct queue *q, uint64_t id, bool env, bool body)
{
	struct queue_msg *m = NULL;
	enum queue_result r;
	char *buf = NULL, t1[96];
	size_t len = 0;

	r = queue_msg_load(q, id, &m);
	if (r == QUEUE_OK && body)
		r = queue_body_load(q, id, &buf, &len);
	if (r != QUEUE_OK) {
		queue_msg_free(m);
		if (r == QUEUE_NOTFOUND)
			return tools_fail(EX_NOSUCHMSG, "show",
			    "%016llX: no such message", (unsigned long long)id);
		return tools_fail(RQ_EX_TEMPFAIL, "show",
		    "%016llX: cannot read the message (%s)",
		    (unsigned long long)id,
		    r == QUEUE_CORRUPT ? "invalid record" : "queue error");
	}
	if (env) {
		tools_printf("*** ENVELOPE RECORDS %s ***\n", m->idstr);
		tools_printf("queue_id: %s\n", m->idstr);
		tools_printf("priority: %s\n", cfg_class_name(m->cls));
		tools_printf(
		    "arrival_time: %s\n", fmt_time(m->arrival, t1, sizeof(t1)));
		tools_printf(
		    "message_size: %llu\n", (unsigned long long)m->size);
		tools_printf("sender: <%s>\n", m->sender);
		tools_printf("owner_uid: %u\n", m->uid);
		tools_printf(
		    "held: %s\n", (m->flags & QMSG_HELD) ? "yes" : "no");
		tools_printf(
		    "warned: %s\n", (m->flags & QMSG_WARNED) ? "yes" : "no");
		tools_printf("ret: %s\n",
		    m->ret == QRET_FULL	      ? "FULL"
			: m->ret == QRET_HDRS ? "HDRS"
					      : "-");
		tools_printf("envid: %s\n", m->envid ? m->envid : "-");
		tools_printf(
		    "next_due: %s\n", fmt_time(m->due, t1, sizeof(t1)));
		tools_printf(
		    "warn_at: %s\n", fmt_time(m->warn_at, t1, sizeof(t1)));
		tools_printf(
		    "return_at: %s\n", fmt_time(m->return_at, t1, sizeof(t1)));
		for (size_t i = 0; i < m->nrcpt; i++) {
			const struct queue_rcpt *rc2 = &m->rcpts[i];

			tools_printf("recipient: <%s>\n", rc2->addr);
			tools_printf("    state: %s%s\n",
			    queue_state_name(rc2->state),
			    (rc2->flags & QRCPT_LEASED) ? " (in flight)" : "");
			tools_printf("    attempts: %u\n", rc2->attempts);
			tools_printf("    last_attempt: %s\n",
			    fmt_time(rc2->last_attempt, t1, sizeof(t1)));
			if (rc2->state == RCPT_PENDING ||
			    rc2->state == RCPT_DEFERRED)
				tools_printf("    next_attempt: %s\n",
				    fmt_time(
					rc2->next_attempt, t1, sizeof(t1)));
			if (rc2->dsn_status[0] != '\0')
				tools_printf("    dsn: %s\n", rc2->dsn_status);
			if (rc2->reply != NULL)
				tools_printf("    reason: %s\n", rc2->reply);
			if (rc2->orcpt != NULL)
				tools_printf("    orcpt: %s\n", rc2->orcpt);
			if (rc2->notify != 0)
				tools_printf("    notify: %s%s%s%s\n",
				    (rc2->notify & QNOTIFY_NEVER) ? "NEVER"
								  : "",
				    (rc2->notify & QNOTIFY_SUCCESS) ? "SUCCESS "
								    : "",
				    (rc2->notify & QNOTIFY_FAILURE) ? "FAILURE "
								    : "",
				    (rc2->notify & QNOTIFY_DELAY) ? "DELAY"
								  : "");
			show_history(q, id, rc2->idx);
		}
		if (body)
			tools_printf("*** MESSAGE CONTENTS %s ***\n", m->idstr);
	}
	if (body)
		tools_out(buf, len);
	free(buf);
	queue_msg_free(m);
	return RQ_EX_OK;
}

static const struct option show_longopts[] = {
	{ "envelope", no_argument, NULL, 'e' },
	{ "body", no_argument, NULL, 'b' },
	{ NULL, 0, NULL, 0 },
};

/* What show prints: the envelope, the message, or both. */
struct show_parts {
	bool env, body;
};

/* Takes --envelope (the envelope only) or --body (the message only)
 * into ARG, a struct show_parts. */
static int
show_opt(void *arg, int ch, const char *optarg)
{
	struct show_parts *p = arg;

	if (ch == 'e')
		p->body = false;
	else
		p->env = false;
	return RQ_EX_OK;
}

static const struct tools_cmd show_cmd = {
	"usage: relayq show [-c FILE] [--envelope | --body] ID...\n"
	"Prints a queued message: envelope, every recipient with its\n"
	"state and history, then the message as it will be sent.\n"
	"  --envelope  the envelope and recipients only\n"
	"  --body      the message only, byte for byte (CRLF)\n"
	"Exit 0; 64 usage; 67 no such message; 77 not root or the\n"
	"queue owner; 75 queue error.\n",
	"eb",
	show_longopts,
	TOOLS_OPERANDS_SOME,
	show_opt,
};

int
cmd_show(int argc, char **argv)
{
	struct show_parts parts = { true, true };
	struct tools_opts o;
	struct cfg *cfg;
	struct queue *q;
	uint64_t *ids;
	int rc, worst = RQ_EX_OK;

	if (!tools_opts_parse(&show_cmd, argc, argv, &parts, &o))
		return o.exit_code;
	if (!parts.env && !parts.body)
		return tools_usage_fail(&show_cmd);
	ids = xcalloc((size_t)(argc - o.first), sizeof(*ids));
	for (int i = o.first; i < argc; i++) {
		if (!tools_queue_id(
			argv[i], strlen(argv[i]), &ids[i - o.first])) {
			free(ids);
			return tools_fail(RQ_EX_USAGE, "show",
			    "\"%.64s\" is not a queue ID (16 hex digits)",
			    argv[i]);
		}
	}
	rc = tools_queue_open("show", o.cfg_path, true, &cfg, &q);
	if (rc != RQ_EX_OK || q == NULL) {
		free(ids);
		cfg_free(cfg);
		return rc != RQ_EX_OK
		    ? rc
		    : tools_fail(EX_NOSUCHMSG, "show", "%s: no such message",
			  argv[o.first]);
	}
	for (int i = 0; i < argc - o.first; i++) {
		rc = show_one(q, ids[i], parts.env, parts.body);
		if (rc != RQ_EX_OK && worst == RQ_EX_OK)
			worst = rc;
	}
	queue_close(q);
	cfg_free(cfg);
	free(ids);
	rc = tools_out_done();
	return worst != RQ_EX_OK ? worst : rc;
}
