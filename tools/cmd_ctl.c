/*
 * cmd_ctl.c - the commands that change queued messages, like Postfix's
 * postsuper and postqueue -f: `hold ID...`, `release ID...`,
 * `delete ID...|--all`, `flush [ID...]`.
 *
 * Public: cmd_hold(), cmd_release(), cmd_delete(), cmd_flush().
 * An ID of `-` reads IDs from standard input (postsuper -d - style), so
 * `mailq | awk ... | tr -d '*!' | relayq delete -` works; IDs may carry
 * mailq's marks; each message is done once however often it is named.
 * Changes go in short write transactions of at most CTL_BATCH messages,
 * then the daemon is woken (queue_wakeup_send), so it sees them at once and
 * is never blocked for long.  A flush also leaves flush notes
 * (queue_flush_note): the daemon forgets the host status of the
 * destinations flushed (all of them without IDs: one note), as
 * postqueue -f.  Exit 0; 64 usage; 67 (EX_NOUSER) when a named message
 * does not exist (the others are still done); 77 permission; 75 queue
 * error.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "queue.h"
#include "tools.h"

#define CTL_BATCH 1000

enum ctl_op { CTL_HOLD, CTL_RELEASE, CTL_DELETE, CTL_FLUSH };

static const struct {
	const char *name, *done;
} ctl_text[] = {
	[CTL_HOLD] = { "hold", "placed on hold" },
	[CTL_RELEASE] = { "release", "released" },
	[CTL_DELETE] = { "delete", "deleted" },
	[CTL_FLUSH] = { "flush", "flushed" },
};

static const struct option ctl_longopts[] = {
	{ "all", no_argument, NULL, 'a' },
	{ NULL, 0, NULL, 0 },
};

static int ctl_opt(void *arg, int ch, const char *optarg);

/* The end of every ctl command's usage. */
#define CTL_USAGE_END \
	"IDs are the 16 hex digits mailq shows (its * or ! after them is\n" \
	"allowed); an ID of - reads IDs from standard input, one per line\n" \
	"or separated by blanks, as postsuper does.\n" \
	"Safe while `relayq run` runs; it notices within a second.\n" \
	"Exit 0; 64 usage; 67 a named message does not exist (the others\n" \
	"are still done); 77 not root or the queue owner; 75 queue error.\n"

/* The command line of command NAME taking ARGS, HELP saying what it
 * does (the IDs and --all are checked by ctl_main()). */
#define CTL_CMD(name, args, help) \
	{ \
		"usage: relayq " name " [-c FILE] " args \
		"\n" help CTL_USAGE_END, \
		    NULL, ctl_longopts, TOOLS_OPERANDS_ANY, ctl_opt \
	}

static const struct tools_cmd ctl_cmds[] = {
	[CTL_HOLD] = CTL_CMD("hold", "ID...",
	    "Puts messages on hold (postsuper -h): no delivery attempts, and\n"
	    "no delay warning or bounce while held (their time stands still\n"
	    "only for the schedule: a message past queuereturn is bounced\n"
	    "right after its release).\n"),
	[CTL_RELEASE] = CTL_CMD("release", "ID...",
	    "Releases held messages (postsuper -H): they are scheduled again\n"
	    "as their recipients' retry times say.\n"),
	[CTL_DELETE] = CTL_CMD("delete", "ID... | --all",
	    "Removes messages from the queue (postsuper -d); no DSN is "
	    "sent.\n"),
	[CTL_FLUSH] = CTL_CMD("flush", "[ID...]",
	    "Makes deferred recipients due now (postqueue -f / -i): of every\n"
	    "message, or of the messages named.  Held messages stay held.\n"),
};

/* What the command line of a ctl command asks for. */
struct ctl_args {
	enum ctl_op op;
	bool all; /* --all (delete), or flush without IDs */
};

/* Takes --all into ARG, a struct ctl_args: delete's only. */
static int
ctl_opt(void *arg, int ch, const char *optarg)
{
	struct ctl_args *ca = arg;

	if (ca->op != CTL_DELETE)
		return tools_usage_fail(&ctl_cmds[ca->op]);
	ca->all = true;
	return RQ_EX_OK;
}

/* Applies OP to message ID in T; a flush leaves a flush note for ID
 * when NOTE (not when one note covers every message).  *CHANGED: false
 * for a hold of a held message or a release of one not held. */
static enum queue_result
apply(enum ctl_op op, struct queue_txn *t, uint64_t id, int64_t now, bool note,
    bool *changed)
{
	enum queue_result r;

	*changed = true;
	switch (op) {
	case CTL_HOLD:
		return queue_msg_hold(t, id, changed);
	case CTL_RELEASE:
		return queue_msg_release(t, id, changed);
	case CTL_DELETE:
		return queue_msg_remove(t, id);
	case CTL_FLUSH:
		/* and the daemon forgets the host status of its
		 * destinations (queue_flush_note) */
		r = queue_msg_flush(t, id, now);
		return r == QUEUE_OK && note ? queue_flush_note(t, id) : r;
	}
	abort();
}

/* Runs OP over IDS[0..n) in transactions of CTL_BATCH (NOTE: as
 * apply()); counts results. */
static int
apply_ids(enum ctl_op op, struct queue *q, const uint64_t *ids, size_t n,
    bool note, uint64_t *ndone, bool *missing)
{
	int64_t now = rq_now();

	for (size_t i = 0; i < n;) {
		struct queue_txn *t = queue_txn_begin(q);
		size_t done = 0, end = i + CTL_BATCH < n ? i + CTL_BATCH : n;
		enum queue_result r;

		if (t == NULL)
			return RQ_EX_TEMPFAIL;
		for (; i < end; i++) {
			bool changed;

			r = apply(op, t, ids[i], now, note, &changed);
			if (r == QUEUE_OK) {
				done += changed; /* as postsuper: what moved */
			} else if (r == QUEUE_NOTFOUND || r == QUEUE_CORRUPT) {
				fprintf(stderr,
				    "relayq %s: %016llX: no such message\n",
				    ctl_text[op].name,
				    (unsigned long long)ids[i]);
				*missing = true;
			} else {
				break;
			}
		}
		r = queue_txn_commit(t);
		if (r != QUEUE_OK)
			return tools_fail(RQ_EX_TEMPFAIL, ctl_text[op].name,
			    "queue error (%s)",
			    r == QUEUE_MAPFULL ? "map full" : "see the log");
		*ndone += done;
	}
	return RQ_EX_OK;
}

/* Collects ids of one page of the queue. */
struct page {
	enum ctl_op op;
	int64_t now;
	uint64_t ids[CTL_BATCH];
	size_t n;
	uint64_t last;
	bool any;
};

static bool
page_cb(const struct queue_msg *m, void *arg)
{
	struct page *pg = arg;
	bool want = true;

	pg->last = m->id;
	pg->any = true;
	if (pg->op == CTL_FLUSH) {
		want = false;
		for (size_t i = 0; i < m->nrcpt; i++) {
			const struct queue_rcpt *r = &m->rcpts[i];

			if ((r->state == RCPT_PENDING ||
				r->state == RCPT_DEFERRED) &&
			    r->next_attempt > pg->now &&
			    !(r->flags & QRCPT_LEASED))
				want = true;
		}
	}
	if (want)
		pg->ids[pg->n++] = m->id;
	return pg->n < CTL_BATCH;
}

/* Notes a flush of everything: the daemon forgets every host status,
 * as with Postfix's postqueue -f, whatever was waiting. */
static int
flush_all_note(struct queue *q)
{
	struct queue_txn *t = queue_txn_begin(q);

	if (t == NULL)
		return tools_fail(
		    RQ_EX_TEMPFAIL, "flush", "queue error (see the log)");
	queue_flush_note(t, 0);
	if (queue_txn_commit(t) != QUEUE_OK)
		return tools_fail(
		    RQ_EX_TEMPFAIL, "flush", "queue error (see the log)");
	return RQ_EX_OK;
}

/* Queue IDs named on the command line or read from standard input. */
struct id_list {
	uint64_t *v;
	size_t n, cap;
};

/* Adds the queue ID in WORD[0..LEN) to L (see tools_queue_id()).
 * Returns 0, or 64 after saying why. */
static int
ids_add(const char *cmd, struct id_list *l, const char *word, size_t len)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 64;
		l->v = xrealloc(l->v, l->cap * sizeof(*l->v));
	}
	if (!tools_queue_id(word, len, &l->v[l->n]))
		return tools_fail(RQ_EX_USAGE, cmd,
		    "\"%.*s\" is not a queue ID (16 hex digits)",
		    (int)(len < 64 ? len : 64), word);
	l->n++;
	return RQ_EX_OK;
}

/* Reads queue IDs from FP, as postsuper does for an ID of "-": words
 * separated by blanks or newlines.  Returns 0, or 64 (nothing is done
 * then: a pipeline that went wrong deletes nothing). */
static int
ids_read(const char *cmd, FILE *fp, struct id_list *l)
{
	char word[80];
	size_t n = 0;
	int c;

	do {
		c = getc(fp);
		if (c != EOF && c != ' ' && c != '\t' && c != '\n' &&
		    c != '\r') {
			if (n < sizeof(word))
				word[n] = (char)c;
			n++;
			continue;
		}
		if (n > 0 &&
		    ids_add(
			cmd, l, word, n < sizeof(word) ? n : sizeof(word)) != 0)
			return RQ_EX_USAGE;
		n = 0;
	} while (c != EOF);
	if (ferror(fp))
		return tools_fail(
		    RQ_EX_IOERR, cmd, "standard input: %s", strerror(errno));
	return RQ_EX_OK;
}

/* Orders two queue IDs, for qsort(). */
static int
id_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Sorts L and drops repeated IDs: a pipeline may name a message twice
 * (as postsuper, each is done once, and never "no such message"). */
static void
ids_unique(struct id_list *l)
{
	size_t n = 0;

	if (l->n == 0)
		return;
	qsort(l->v, l->n, sizeof(*l->v), id_cmp);
	for (size_t i = 1; i < l->n; i++)
		if (l->v[i] != l->v[n])
			l->v[++n] = l->v[i];
	l->n = n + 1;
}

static bool ctl_silent; /* see cmd_flush_silent() */

void
cmd_flush_silent(void)
{
	ctl_silent = true;
}

static int
ctl_main(enum ctl_op op, int argc, char **argv)
{
	const char *name = ctl_text[op].name;
	struct ctl_args ca = { op, false };
	bool missing = false;
	struct tools_opts o;
	struct cfg *cfg;
	struct queue *q;
	struct id_list idl = { NULL, 0, 0 };
	uint64_t *ids, ndone = 0;
	size_t nids;
	int rc;

	if (!tools_opts_parse(&ctl_cmds[op], argc, argv, &ca, &o))
		return o.exit_code;
	if (op == CTL_FLUSH && o.first == argc)
		ca.all = true;
	if ((ca.all && o.first < argc) || (!ca.all && o.first == argc))
		return tools_usage_fail(&ctl_cmds[op]);
	for (int i = o.first; i < argc; i++) {
		rc = strcmp(argv[i], "-") == 0
		    ? ids_read(name, stdin, &idl)
		    : ids_add(name, &idl, argv[i], strlen(argv[i]));
		if (rc != RQ_EX_OK) {
			free(idl.v);
			return rc;
		}
	}
	ids_unique(&idl);
	ids = idl.v;
	nids = idl.n;
	rc = tools_queue_open(name, o.cfg_path, false, &cfg, &q);
	if (rc != RQ_EX_OK || q == NULL) {
		free(ids);
		cfg_free(cfg);
		if (rc == RQ_EX_OK && !ca.all && nids > 0)
			return tools_fail(EX_NOSUCHMSG, name,
			    "no such message (the queue is empty)");
		return rc;
	}
	if (op == CTL_FLUSH && ca.all)
		rc = flush_all_note(q);
	if (rc != RQ_EX_OK) {
		/* said why */
	} else if (!ca.all) {
		rc = apply_ids(op, q, ids, nids, true, &ndone, &missing);
	} else {
		struct page *pg = xcalloc(1, sizeof(*pg));
		uint64_t from = 0;

		pg->op = op;
		pg->now = rq_now();
		do {
			pg->n = 0;
			pg->any = false;
			queue_msgs_scan(q, from, page_cb, pg);
			rc = apply_ids(
			    op, q, pg->ids, pg->n, false, &ndone, &missing);
			from = pg->last + 1;
		} while (rc == RQ_EX_OK && pg->any && pg->last != UINT64_MAX);
		missing = false; /* vanished meanwhile: not the user's error */
		free(pg);
	}
	if (ndone > 0 || op == CTL_FLUSH)
		queue_wakeup_send(q);
	queue_close(q);
	cfg_free(cfg);
	free(ids);
	if (!ctl_silent)
		fprintf(stderr, "relayq %s: %llu message%s %s\n", name,
		    (unsigned long long)ndone, ndone == 1 ? "" : "s",
		    ctl_text[op].done);
	if (rc != RQ_EX_OK)
		return rc;
	return missing ? EX_NOSUCHMSG : RQ_EX_OK;
}

int
cmd_hold(int argc, char **argv)
{
	return ctl_main(CTL_HOLD, argc, argv);
}

int
cmd_release(int argc, char **argv)
{
	return ctl_main(CTL_RELEASE, argc, argv);
}

int
cmd_delete(int argc, char **argv)
{
	return ctl_main(CTL_DELETE, argc, argv);
}

int
cmd_flush(int argc, char **argv)
{
	return ctl_main(CTL_FLUSH, argc, argv);
}
