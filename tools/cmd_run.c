/*
 * cmd_run.c - `relayq run`: the daemon in the foreground (spool pickup,
 * delivery, expiry); see runner/runner.h.  SIGTERM/SIGINT stop it
 * cleanly, SIGHUP reloads the config.
 */
#include <getopt.h>
#include <stdlib.h>

#include "runner.h"
#include "tools.h"

static void
usage(FILE *fp)
{
	fprintf(fp,
	    "usage: relayq run [-c FILE] [--exit-when-idle]\n"
	    "Runs the daemon in the foreground: takes in the spool, delivers\n"
	    "what is due, sends delay warnings and bounces.\n"
	    "  -c FILE           the config file\n"
	    "  --exit-when-idle  exit 0 once the spool is empty and nothing\n"
	    "                    is due before its next retry\n"
	    "SIGTERM/SIGINT: stop cleanly; SIGHUP: reload the config.\n");
}

int
cmd_run(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "config", required_argument, NULL, 'c' },
		{ "exit-when-idle", no_argument, NULL, 'x' },
		{ NULL, 0, NULL, 0 },
	};
	struct runner_opts opts = { false };
	const char *path = NULL;
	int ch;

	while ((ch = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 'x':
			opts.exit_when_idle = true;
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
	path = tools_cfg_path(path);
	return runner_main(tools_cfg_load(path), path, &opts);
}
