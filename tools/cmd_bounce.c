/*
 * cmd_bounce.c - `relayq bounce ID...`: returns messages to their senders
 * now, with a failure DSN naming every recipient not yet delivered, and
 * removes them from the queue (Postfix's `postsuper -e` then a queue run;
 * sendmail has no equivalent).  Works while `relayq run` is running: the
 * notice is queued in the same transaction and the daemon is woken.
 *
 * Invariants: one queue transaction per message, so a crash leaves each
 * message either untouched or returned with its notice queued.
 */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "expiry.h"
#include "tools.h"

static void
usage(FILE *fp)
{
	fprintf(fp,
	    "usage: relayq bounce [-c FILE] ID...\n"
	    "Returns each message to its sender now: a delivery status\n"
	    "notification (Action: failed) names every recipient not yet\n"
	    "delivered, and the message leaves the queue.  No notice goes\n"
	    "to the null sender or to recipients with NOTIFY=NEVER.\n"
	    "  -c FILE  the config file\n"
	    "Exit 0 when every message was returned; 66 when one was not\n"
	    "in the queue; 75 on a queue error; 77 without permission.\n");
}

int
cmd_bounce(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "config", required_argument, NULL, 'c' },
		{ NULL, 0, NULL, 0 },
	};
	const char *path = NULL;
	struct cfg *cfg;
	struct queue *q;
	int ch, rc = RQ_EX_OK;

	while ((ch = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 'h':
			usage(stdout);
			return RQ_EX_OK;
		default:
			usage(stderr);
			return RQ_EX_USAGE;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return RQ_EX_USAGE;
	}
	for (int i = optind; i < argc; i++) {
		uint64_t id;

		if (!queue_id_parse(argv[i], &id))
			return tools_fail(RQ_EX_USAGE, "bounce",
			    "not a queue ID: \"%.64s\"", argv[i]);
	}
	cfg = tools_cfg_load(tools_cfg_path(path));
	/* as the queue's owner; the queue's "removed" and the notice lines
	 * go to the daemon's log, as postsuper's go to syslog */
	rc = tools_queue_open("bounce", cfg, false, &q);
	if (rc != RQ_EX_OK) {
		cfg_free(cfg);
		return rc;
	}
	for (int i = optind; i < argc; i++) {
		uint64_t id;
		char idstr[17];
		enum queue_result res;

		queue_id_parse(argv[i], &id);
		queue_id_format(id, idstr);
		res = q != NULL ? expiry_bounce_now(q, cfg, id)
				: QUEUE_NOTFOUND; /* no queue yet */
		switch (res) {
		case QUEUE_OK:
			printf("%s: returned to sender\n", idstr);
			break;
		case QUEUE_NOTFOUND:
			tools_fail(0, "bounce", "%s: no such message", idstr);
			if (rc == RQ_EX_OK)
				rc = RQ_EX_NOINPUT;
			break;
		default:
			tools_fail(
			    0, "bounce", "%s: queue error %d", idstr, (int)res);
			rc = RQ_EX_TEMPFAIL;
			break;
		}
	}
	queue_close(q);
	log_close();
	cfg_free(cfg);
	if (fflush(stdout) != 0 && rc == RQ_EX_OK)
		rc = RQ_EX_IOERR;
	return rc;
}
