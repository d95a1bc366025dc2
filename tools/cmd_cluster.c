/*
 * cmd_cluster.c - `relayq cluster`: the cluster as Redis sees it (live
 * nodes, each node's queue counts, the shared limits in use per
 * destination).  `mailq` and `summary` stay per node; this is the one
 * view of all of them.
 */
#include <getopt.h>
#include <stdlib.h>

#include "runner.h"
#include "tools.h"

static void
usage(FILE *fp)
{
	fprintf(fp,
	    "usage: relayq cluster [-c FILE]\n"
	    "Lists the nodes of the cluster cluster_redis names (live ones\n"
	    "and those silent for less than cluster_lease_time) with their\n"
	    "queue counts, then per destination the connection leases in\n"
	    "use (by node) under max_connections, the rate and the shared\n"
	    "host status.\n"
	    "Exit 0; 75 when Redis cannot be reached; 78 without a cluster.\n");
}

int
cmd_cluster(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "config", required_argument, NULL, 'c' },
		{ NULL, 0, NULL, 0 },
	};
	const char *path = NULL;
	struct cfg *cfg;
	char err[1024];
	int ch, code;

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
	if (optind < argc) {
		usage(stderr);
		return RQ_EX_USAGE;
	}
	cfg = tools_cfg_load(tools_cfg_path(path));
	/* the password file, with the daemon's rules */
	if (runner_cfg_prepare(cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		cfg_free(cfg);
		return RQ_EX_CONFIG;
	}
	code = runner_cluster_view(cfg, stdout);
	cfg_free(cfg);
	if (fflush(stdout) != 0 && code == RQ_EX_OK)
		code = RQ_EX_IOERR;
	return code;
}
