/*
 * cmd_bounce.c - `relayq bounce ID...`: returns messages to their senders
 * now, with a failure DSN naming every recipient not yet delivered, and
 * removes them from the queue (Postfix's `postsuper -e` then a queue run;
 * sendmail has no equivalent).  Works while `relayq run` is running: the
 * notice is queued in the same transaction and the daemon is woken.
 *
 * The notices go where the daemon's would: to a local sender's aliases
 * (alias_file is read here as the daemon reads it; one it cannot read
 * is an error, 78, before anything is returned).
 *
 * Invariants: one queue transaction per message, so a crash leaves each
 * message either untouched or returned with its notice queued.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "expiry.h"
#include "tools.h"

static const struct option bounce_longopts[] = {
	{ "config", required_argument, NULL, 'c' },
	{ NULL, 0, NULL, 0 },
};

static const struct tools_cmd bounce_cmd = {
	"usage: relayq bounce [-c FILE] ID...\n"
	"Returns each message to its sender now: a delivery status\n"
	"notification (Action: failed) names every recipient not yet\n"
	"delivered, and the message leaves the queue.  No notice goes\n"
	"to the null sender or to recipients with NOTIFY=NEVER.\n"
	"  -c FILE  the config file\n"
	"Exit 0 when every message was returned; 67 when one was not\n"
	"in the queue; 75 on a queue error; 77 without permission.\n",
	NULL,
	bounce_longopts,
	TOOLS_OPERANDS_SOME,
	NULL,
};

int
cmd_bounce(int argc, char **argv)
{
	struct tools_opts o;
	struct cfg *cfg;
	struct queue *q;
	int rc = RQ_EX_OK;
	char err[1024];

	if (!tools_opts_parse(&bounce_cmd, argc, argv, NULL, &o))
		return o.exit_code;
	for (int i = o.first; i < argc; i++) {
		uint64_t id;

		if (!tools_queue_id(argv[i], strlen(argv[i]), &id))
			return tools_fail(RQ_EX_USAGE, "bounce",
			    "\"%.64s\" is not a queue ID (16 hex digits)",
			    argv[i]);
	}
	/* as the queue's owner; the queue's "removed" and the notice lines
	 * go to the daemon's log, as postsuper's go to syslog */
	if ((rc = tools_queue_open("bounce", o.cfg_path, false, &cfg, &q)) !=
	    RQ_EX_OK)
		return rc;
	if (cfg_local_load(cfg, err, sizeof(err)) != CFG_OK) {
		fprintf(stderr, "%s\n", err);
		queue_close(q);
		cfg_free(cfg);
		return RQ_EX_CONFIG;
	}
	for (int i = o.first; i < argc; i++) {
		uint64_t id;
		char idstr[17];
		enum queue_result res;
		size_t inflight = 0;

		tools_queue_id(argv[i], strlen(argv[i]), &id);
		queue_id_format(id, idstr);
		res = q != NULL ? expiry_bounce_now(q, cfg, id, &inflight)
				: QUEUE_NOTFOUND; /* no queue yet */
		switch (res) {
		case QUEUE_OK:
			if (inflight == 0)
				printf("%s: returned to sender\n", idstr);
			else
				printf("%s: returned to sender; %zu "
				       "recipient%s in delivery now: "
				       "returned if that attempt fails\n",
				    idstr, inflight, inflight == 1 ? "" : "s");
			break;
		case QUEUE_NOTFOUND:
			tools_fail(0, "bounce", "%s: no such message", idstr);
			if (rc == RQ_EX_OK)
				rc = EX_NOSUCHMSG;
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
