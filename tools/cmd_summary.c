/*
 * cmd_summary.c - `relayq summary`: recipients not yet done by
 * destination domain x age bucket (the buckets of Postfix's qshape), and
 * messages and recipients by priority x state; `--json` prints the same
 * as one JSON object, written by the builder the daemon's /api/summary
 * uses (http_summary_json), so the two match; the text's domain table
 * is the one the status page shows (http_domains_get).
 *
 * Public: cmd_summary().  Reads only the counts the queue keeps up to
 * date in its write transactions (never walks the messages), so it costs
 * the same for 10 messages as for 10 million; --json also looks for the
 * oldest message of each class (a walk in arrival order that stops at
 * the first of each).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "http.h"
#include "queue.h"
#include "tools.h"

static void
print_row(const char *name, const uint64_t *n)
{
	printf("%30.30s %7llu", name, (unsigned long long)n[0]);
	for (int b = 1; b <= HTTP_AGE_NB; b++)
		printf(" %5llu", (unsigned long long)n[b]);
	printf("\n");
}

/* --json: the summary as /api/summary writes it (its "daemon" null;
 * Q NULL: no queue yet, all zeros).  Closes Q, frees CFG. */
static int
summary_json(struct cfg *cfg, struct queue *q, size_t top)
{
	struct evbuffer *b = evbuffer_new();
	struct queue_oldest oldest;
	enum queue_result qr = QUEUE_OK;
	int rc;

	memset(&oldest, 0, sizeof(oldest));
	qr = http_summary_json(b, q, cfg, rq_now(), top, &oldest, SIZE_MAX);
	queue_close(q);
	cfg_free(cfg);
	if (qr != QUEUE_OK) {
		evbuffer_free(b);
		return tools_fail(
		    RQ_EX_TEMPFAIL, "summary", "cannot read the queue");
	}
	while (evbuffer_get_length(b) > 0) {
		size_t n = evbuffer_get_contiguous_space(b);

		tools_out((const char *)evbuffer_pullup(b, (ssize_t)n), n);
		evbuffer_drain(b, n);
	}
	evbuffer_free(b);
	rc = tools_out_done();
	return rc;
}

/* Options of summary, filled by summary_opt(). */
struct summary_args {
	size_t top; /* domains shown */
	bool json;
};

static const struct option summary_longopts[] = {
	{ "top", required_argument, NULL, 't' },
	{ "json", no_argument, NULL, 'j' },
	{ NULL, 0, NULL, 0 },
};

/* Takes --top N or --json into ARG (a struct summary_args). */
static int
summary_opt(void *arg, int ch, const char *optarg)
{
	struct summary_args *a = arg;

	char *end;

	if (ch == 'j') {
		a->json = true;
		return RQ_EX_OK;
	}
	errno = 0;
	a->top = (size_t)strtoull(optarg, &end, 10);
	if (optarg[0] < '0' || optarg[0] > '9' || *end != '\0' || errno != 0)
		return tools_fail(RQ_EX_USAGE, "summary",
		    "--top: \"%.40s\" is not a number of domains", optarg);
	return RQ_EX_OK;
}

static const struct tools_cmd summary_cmd = {
	"usage: relayq summary [-c FILE] [--top N] [--json]\n"
	"Shows the shape of the queue, as Postfix's qshape: recipients\n"
	"not yet delivered by destination domain and age in minutes\n"
	"(column T is the total; a column counts ages up to its label),\n"
	"then messages and recipients by priority and state.\n"
	"  --top N   show only the N biggest domains\n"
	"  --json    one JSON object (as the daemon's /api/summary)\n"
	"Exit 0; 77 not root or the queue owner; 75 queue error.\n",
	"t:j",
	summary_longopts,
	TOOLS_OPERANDS_NONE,
	summary_opt,
};

int
cmd_summary(int argc, char **argv)
{
	struct tools_opts o;
	struct summary_args args = { SIZE_MAX, false };
	struct queue_counts cn;
	struct cfg *cfg;
	struct queue *q;
	struct http_domain *rows = NULL;
	size_t nrows = 0, top = SIZE_MAX;
	uint64_t tot[HTTP_AGE_NB + 1] = { 0 };
	enum queue_result qr = QUEUE_OK;
	uint64_t tm = 0, tb = 0, ts[QUEUE_NSTATE] = { 0 };
	int rc;

	if (!tools_opts_parse(&summary_cmd, argc, argv, &args, &o))
		return o.exit_code;
	top = args.top;
	if ((rc = tools_queue_open("summary", o.cfg_path, true, &cfg, &q)) !=
	    RQ_EX_OK)
		return rc;
	if (args.json)
		return summary_json(cfg, q, top);
	memset(&cn, 0, sizeof(cn));
	if (q != NULL) {
		rows = http_domains_get(q, rq_now(), top, &nrows, tot, &qr);
		if (qr != QUEUE_OK || queue_counts_get(q, &cn) != QUEUE_OK) {
			http_domains_free(rows, nrows);
			queue_close(q);
			cfg_free(cfg);
			return tools_fail(
			    RQ_EX_TEMPFAIL, "summary", "cannot read the queue");
		}
		queue_close(q);
	}
	cfg_free(cfg);
	printf("Recipients not yet done, by domain and age (minutes):\n");
	printf("%30s %7s", "", "T");
	for (int b = 0; b < HTTP_AGE_NB - 1; b++)
		printf(" %5d", http_age_buckets[b]);
	printf(" %5s\n", "1280+");
	print_row("TOTAL", tot);
	for (size_t i = 0; i < nrows; i++)
		print_row(rows[i].name, rows[i].n);
	printf("\nBy priority and state:\n");
	printf("%-11s %9s %10s %9s %9s %9s %9s\n", "priority", "messages",
	    "Kbytes", "pending", "deferred", "delivered", "bounced");
	for (int c = 0; c < CFG_NCLASS; c++) {
		printf("%-11s %9llu %10llu", cfg_class_name(c),
		    (unsigned long long)cn.msgs[c],
		    (unsigned long long)((cn.bytes[c] + 1023) / 1024));
		for (int s = 0; s < QUEUE_NSTATE; s++) {
			printf(" %9llu", (unsigned long long)cn.rcpts[c][s]);
			ts[s] += cn.rcpts[c][s];
		}
		printf("\n");
		tm += cn.msgs[c];
		tb += cn.bytes[c];
	}
	printf("%-11s %9llu %10llu", "TOTAL", (unsigned long long)tm,
	    (unsigned long long)((tb + 1023) / 1024));
	for (int s = 0; s < QUEUE_NSTATE; s++)
		printf(" %9llu", (unsigned long long)ts[s]);
	printf("\nheld: %llu\n", (unsigned long long)cn.held);
	http_domains_free(rows, nrows);
	return fflush(stdout) == 0 ? RQ_EX_OK : RQ_EX_IOERR;
}
