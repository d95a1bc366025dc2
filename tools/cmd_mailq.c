/*
 * cmd_mailq.c - `relayq mailq` (also run as `mailq`): lists the queue in
 * sendmail/Postfix style or as JSON lines, with filters by priority,
 * state, destination domain and age; plus tools_queue_open(), the
 * config loading, permission check and queue opening shared by the
 * queue commands.
 *
 * Public: cmd_mailq(), tools_queue_open(), tools_out_*().
 * The listing pages through the queue with short read transactions
 * (queue_msgs_scan), so it never holds the database or blocks the daemon, and
 * its memory does not grow with the queue.
 */
#include <errno.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "priv.h"
#include "queue.h"
#include "tools.h"

/* Becomes uid UID (group GID when it has no passwd entry) for good. */
static int
tools_become(const char *cmd, const char *dir, uid_t uid, gid_t gid)
{
	struct passwd *pw = getpwuid(uid);
	struct priv_id id;

	memset(&id, 0, sizeof(id));
	id.uid = uid;
	id.gid = pw != NULL ? pw->pw_gid : gid;
	if (pw != NULL)
		snprintf(id.name, sizeof(id.name), "%s", pw->pw_name);
	if (!priv_switch(&id, false))
		return tools_fail(RQ_EX_OSERR, cmd,
		    "cannot become uid %u, the owner of %s: %s", (unsigned)uid,
		    dir, strerror(errno));
	return RQ_EX_OK;
}

/*
 * Opens the queue for command CMD as the owner of queue_dir: root
 * becomes that user first (as Postfix's postqueue runs as the mail
 * system's owner), so it never opens a file the owner could have
 * replaced with a link; anyone else gets "permission denied" (77).  A
 * queue_dir others can change is refused (78), as the daemon does.
 */
static int
queue_open_as_owner(
    const char *cmd, const struct cfg *cfg, bool readonly, struct queue **qp)
{
	const struct cfg_scope *g = cfg_scope(cfg, NULL);
	const char *dir = cfg_str(g, CFG_QUEUE_DIR);
	struct stat st;
	char err[1024];
	int rc;

	*qp = NULL;
	if (stat(dir, &st) < 0) {
		if (errno == ENOENT)
			return RQ_EX_OK; /* no queue yet: an empty queue */
		return tools_fail(
		    RQ_EX_NOPERM, cmd, "%s: %s", dir, strerror(errno));
	}
	if (!S_ISDIR(st.st_mode))
		return tools_fail(
		    RQ_EX_CONFIG, cmd, "queue_dir %s: not a directory", dir);
	if (geteuid() == 0 && st.st_uid != 0 &&
	    (rc = tools_become(cmd, dir, st.st_uid, st.st_gid)) != RQ_EX_OK)
		return rc;
	if (geteuid() != st.st_uid)
		return tools_fail(RQ_EX_NOPERM, cmd,
		    "permission denied: only root and the queue owner (uid "
		    "%u) may use the queue",
		    (unsigned)st.st_uid);
	if (priv_dir_foreign(&st, st.st_uid, getegid()))
		return tools_fail(RQ_EX_CONFIG, cmd,
		    "queue_dir %s (mode %04o, group %u) can be changed by "
		    "others than its owner: refusing to use it",
		    dir, (unsigned)(st.st_mode & 07777), (unsigned)st.st_gid);
	if (geteuid() == 0 && !priv_path_trusted(dir, err, sizeof(err)))
		return tools_fail(RQ_EX_CONFIG, cmd, "%s", err);
	/* what the command changes is logged where the daemon logs */
	(void)log_open(cfg_str(g, CFG_LOG_FILE),
	    (int)cfg_int(g, CFG_SYSLOG_FACILITY), cfg_str(g, CFG_HOSTNAME));
	*qp = queue_open(cfg, readonly, err, sizeof(err));
	if (*qp == NULL) {
		if (readonly && strstr(err, "not initialised") != NULL)
			return RQ_EX_OK;
		return tools_fail(RQ_EX_TEMPFAIL, cmd, "%s", err);
	}
	return RQ_EX_OK;
}

/* Loads the config and opens its queue; see tools.h. */
int
tools_queue_open(const char *cmd, const char *path, bool readonly,
    struct cfg **cfgp, struct queue **qp)
{
	int rc;

	*cfgp = tools_cfg_load(path);
	rc = queue_open_as_owner(cmd, *cfgp, readonly, qp);
	if (rc != RQ_EX_OK) {
		cfg_free(*cfgp);
		*cfgp = NULL;
	}
	return rc;
}

/* ---- a fast output buffer (stdout is the bottleneck for 1M lines) ---- */

static char obuf[1 << 16];
static size_t olen;
static bool oerr;

void
tools_out_flush(void)
{
	if (olen > 0 && fwrite(obuf, 1, olen, stdout) != olen)
		oerr = true;
	olen = 0;
}

void
tools_out(const char *s, size_t n)
{
	if (olen + n > sizeof(obuf)) {
		tools_out_flush();
		if (n > sizeof(obuf)) {
			if (fwrite(s, 1, n, stdout) != n)
				oerr = true;
			return;
		}
	}
	memcpy(obuf + olen, s, n);
	olen += n;
}

void
tools_outs(const char *s)
{
	tools_out(s, strlen(s));
}

void
tools_out_u64(uint64_t v)
{
	char b[24];
	int i = 23;

	b[i] = '\0';
	do {
		b[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v > 0);
	tools_out(b + i, (size_t)(23 - i));
}

/* Passes N bytes at P to tools_out() (an rq_put_fn). */
static void
out_put(void *arg, const char *p, size_t n)
{
	tools_out(p, n);
}

/* Writes S as a JSON string (NULL as null), as rq_json_str() does. */
void
tools_out_json(const char *s)
{
	rq_json_str(out_put, NULL, s);
}

int
tools_out_done(void)
{
	tools_out_flush();
	if (fflush(stdout) != 0)
		oerr = true;
	return oerr ? RQ_EX_IOERR : RQ_EX_OK;
}

/* ---- mailq ---- */

struct mailq {
	bool json;
	struct queue_filter f; /* which messages are shown */
	uint64_t nmsg, bytes;
};

/* Returns true if rcpt R is shown in text mode. */
static bool
rcpt_shown(const struct mailq *mq, const struct queue_rcpt *r)
{
	if (mq->f.state >= 0 && mq->f.state < QUEUE_NSTATE)
		return (int)r->state == mq->f.state;
	return r->state == RCPT_PENDING || r->state == RCPT_DEFERRED;
}

/* Copies S into BUF (LEN bytes) safe for a terminal: control bytes and
 * invalid UTF-8 as '?' (as postqueue's printable()). */
static const char *
text_safe(char *buf, size_t len, const char *s)
{
	size_t n = strlen(s);

	if (n >= len)
		n = len - 1;
	memcpy(buf, s, n);
	buf[log_line_escape(buf, n)] = '\0';
	return buf;
}

/* postqueue -p's columns: ID (with its status marks), size, arrival
 * time (asctime(3)'s first 19 bytes), then sender or recipient. */
#define PQ_HEAD_FORMAT "%-17s %8s %-19s %s\n"
#define PQ_SENDER_FORMAT "%-17s %8llu %19.19s %s %s\n"

/* Writes one message as postqueue -p does, the priority class after the
 * sender; then each recipient shown, after its "(reason)" line when the
 * reason differs from the one above it. */
static void
out_text_msg(const struct mailq *mq, const struct queue_msg *m)
{
	static const char *const wday[] = { "Sun", "Mon", "Tue", "Wed", "Thu",
		"Fri", "Sat" };
	static const char *const mon[] = { "Jan", "Feb", "Mar", "Apr", "May",
		"Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	const char *qn = queue_msg_queue_name(m), *shown = "";
	char line[2048], when[64], addr[1024], why[1024], id[24];
	struct tm tm;
	time_t t = (time_t)m->arrival;

	localtime_r(&t, &tm);
	snprintf(when, sizeof(when), "%.3s %.3s%3d %.2d:%.2d:%.2d",
	    wday[tm.tm_wday % 7], mon[tm.tm_mon % 12], tm.tm_mday, tm.tm_hour,
	    tm.tm_min, tm.tm_sec);
	snprintf(id, sizeof(id), "%s%s", m->idstr,
	    strcmp(qn, "active") == 0	  ? "*"
		: strcmp(qn, "hold") == 0 ? "!"
					  : "");
	snprintf(line, sizeof(line), PQ_SENDER_FORMAT, id,
	    (unsigned long long)m->size, when,
	    m->sender != NULL && m->sender[0] != '\0'
		? text_safe(addr, sizeof(addr), m->sender)
		: "MAILER-DAEMON",
	    cfg_class_name(m->cls));
	tools_outs(line);
	/* those with a reason first, as postqueue lists its defer log
	 * before the rest */
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < m->nrcpt; i++) {
			const struct queue_rcpt *r = &m->rcpts[i];
			const char *reason = r->reply ? r->reply : "";
			int pad;

			if (!rcpt_shown(mq, r) ||
			    (pass == 0) != (r->reply != NULL))
				continue;
			if (strcmp(shown, reason) != 0) {
				shown = reason;
				text_safe(why, sizeof(why),
				    reason[0] ? reason : "reason unavailable");
				pad = 76 - (int)strlen(why);
				snprintf(line, sizeof(line), "%*s(%s)\n",
				    pad > 0 ? pad : 0, "", why);
				tools_outs(line);
			}
			snprintf(line, sizeof(line), PQ_HEAD_FORMAT, "", "", "",
			    text_safe(addr, sizeof(addr), r->addr));
			tools_outs(line);
		}
	}
	tools_outs("\n");
}

static bool
mailq_cb(const struct queue_msg *m, void *arg)
{
	struct mailq *mq = arg;

	if (!queue_msg_matches(&mq->f, m))
		return true;
	mq->nmsg++;
	mq->bytes += m->size;
	if (!mq->json && mq->nmsg == 1) {
		char head[128];

		snprintf(head, sizeof(head), PQ_HEAD_FORMAT,
		    "----Queue ID-----", "--Size--", "---Arrival Time----",
		    "--Sender/Recipient------");
		tools_outs(head);
	}
	if (mq->json) {
		queue_msg_json(m, out_put, NULL);
		tools_out("\n", 1);
	} else
		out_text_msg(mq, m);
	return true;
}

static const struct option mailq_longopts[] = {
	{ "json", no_argument, NULL, 'j' },
	{ "priority", required_argument, NULL, 'p' },
	{ "state", required_argument, NULL, 's' },
	{ "domain", required_argument, NULL, 'd' },
	{ "older-than", required_argument, NULL, 'o' },
	{ NULL, 0, NULL, 0 },
};

/* Takes one of mailq's options (its filters, --json) into ARG, a
 * struct mailq. */
static int
mailq_opt(void *arg, int ch, const char *optarg)
{
	struct mailq *mq = arg;
	const char *why;
	int64_t secs;
	static unsigned given; /* each filter once: no silent last-wins */
	const char *name = ch == 'p' ? "--priority"
	    : ch == 's'		     ? "--state"
	    : ch == 'd'		     ? "--domain"
	    : ch == 'o'		     ? "--older-than"
				     : NULL;

	if (name != NULL && (given & (1u << (ch & 31))))
		return tools_fail(RQ_EX_USAGE, "mailq", "%s given twice", name);
	given |= 1u << (ch & 31);
	switch (ch) {
	case 'j':
		mq->json = true;
		break;
	case 'p':
		mq->f.cls = cfg_class_parse(optarg, strlen(optarg));
		if (mq->f.cls < 0)
			return tools_fail(RQ_EX_USAGE, "mailq",
			    "unknown priority \"%.64s\"", optarg);
		break;
	case 's':
		if (strcmp(optarg, "held") == 0) {
			mq->f.state = QUEUE_NSTATE;
			break;
		}
		for (int st = 0; st < QUEUE_NSTATE; st++)
			if (strcmp(optarg, queue_state_name(st)) == 0)
				mq->f.state = st;
		if (mq->f.state < 0)
			return tools_fail(RQ_EX_USAGE, "mailq",
			    "unknown state \"%.64s\"", optarg);
		break;
	case 'd':
		if (optarg[0] == '\0')
			return tools_fail(
			    RQ_EX_USAGE, "mailq", "--domain: empty domain");
		mq->f.domain = optarg;
		break;
	case 'o':
		if (cfg_interval_parse(
			optarg, strlen(optarg), 1, false, &secs, &why) < 0)
			return tools_fail(RQ_EX_USAGE, "mailq",
			    "--older-than \"%.64s\": %s", optarg, why);
		mq->f.older = rq_now() - secs;
		if (mq->f.older <= 0)
			mq->f.older = 1;
		break;
	}
	return RQ_EX_OK;
}

static const struct tools_cmd mailq_cmd = {
	"usage: relayq mailq [-c FILE] [--json] [--priority P] [--state S]\n"
	"                    [--domain D] [--older-than INTERVAL]\n"
	"Lists the queue as Postfix's postqueue -p does, in queue ID order\n"
	"(by arrival within a priority class): one block per message\n"
	"(queue ID, `*` while in delivery, `!` when held;\n"
	"size, arrival time, sender, then the priority class), then each\n"
	"recipient not yet done, after a `(reason)` line.\n"
	"  --json            one JSON object per message per line\n"
	"  --priority P      urgent, normal, non-urgent or dsn\n"
	"  --state S         pending, deferred, delivered, bounced or held:\n"
	"                    messages with a recipient in that state\n"
	"  --domain D        messages with a recipient in D or below it\n"
	"                    not yet done (with --state: in that state)\n"
	"  --older-than I    arrived at least I ago (e.g. 30m, 2h, 1d;\n"
	"                    a bare number is seconds)\n"
	"Reads with short transactions; safe while `relayq run` runs.\n"
	"Exit 0; 64 usage; 77 not root or the queue owner; 75 queue error.\n",
	"jp:s:d:o:",
	mailq_longopts,
	TOOLS_OPERANDS_NONE,
	mailq_opt,
};

int
cmd_mailq(int argc, char **argv)
{
	struct mailq mq = { false, { -1, -1, NULL, 0 }, 0, 0 };
	struct tools_opts o;
	struct cfg *cfg;
	struct queue *q;
	int rc;

	if (!tools_opts_parse(&mailq_cmd, argc, argv, &mq, &o))
		return o.exit_code;
	if ((rc = tools_queue_open("mailq", o.cfg_path, true, &cfg, &q)) !=
	    RQ_EX_OK)
		return rc;
	if (q != NULL) {
		queue_msgs_scan(q, 0, mailq_cb, &mq);
		queue_close(q);
	}
	if (!mq.json) {
		if (mq.nmsg == 0) {
			tools_outs("Mail queue is empty\n");
		} else {
			char line[128];

			snprintf(line, sizeof(line),
			    "-- %llu Kbytes in %llu Request%s.\n",
			    (unsigned long long)(mq.bytes / 1024),
			    (unsigned long long)mq.nmsg,
			    mq.nmsg == 1 ? "" : "s");
			tools_outs(line);
		}
	}
	cfg_free(cfg);
	return tools_out_done();
}
