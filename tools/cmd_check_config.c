/*
 * cmd_check_config.c - `relayq check-config`: validates the config and
 * the files it names (auth_file, sender_relayhost, client certificates:
 * what `relayq run` refuses to start with) and prints every effective
 * setting, the credentials without secrets and the route of each
 * destination, sorted, for scripts to diff.
 */
#include <getopt.h>
#include <stdlib.h>

#include "runner.h"
#include "tools.h"

static void
usage(FILE *fp)
{
	fprintf(fp,
	    "usage: relayq check-config [-c FILE] [-q]\n"
	    "Validates the config file and prints every effective setting,\n"
	    "global, per [domain] section and per priority class, one\n"
	    "`key = value` per line, sorted, intervals in seconds.\n"
	    "  -c FILE  the config file\n"
	    "  -q       validate only, print nothing\n"
	    "Exit 0 when valid; 78 and FILE:LINE: message otherwise.\n");
}

int
cmd_check_config(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "config", required_argument, NULL, 'c' },
		{ "quiet", no_argument, NULL, 'q' },
		{ NULL, 0, NULL, 0 },
	};
	const char *path = NULL;
	bool quiet = false;
	struct cfg *cfg;
	char err[1024];
	int ch;

	while ((ch = getopt_long(argc, argv, "c:qh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 'q':
			quiet = true;
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
	if (runner_cfg_prepare(cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		cfg_free(cfg);
		return RQ_EX_CONFIG;
	}
	if (!quiet)
		cfg_dump(cfg, stdout);
	cfg_free(cfg);
	return fflush(stdout) == 0 ? RQ_EX_OK : RQ_EX_IOERR;
}
