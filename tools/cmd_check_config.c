/*
 * cmd_check_config.c - `relayq check-config`: validates the config and
 * the files it names (auth_file, sender_relayhost, client certificates:
 * what `relayq run` refuses to start with) and prints every effective
 * setting, the credentials without secrets and the route of each
 * destination, sorted, for scripts to diff.
 */
#include <stdlib.h>

#include "runner.h"
#include "tools.h"

static const struct option check_config_longopts[] = {
	{ "config", required_argument, NULL, 'c' },
	{ "quiet", no_argument, NULL, 'q' },
	{ NULL, 0, NULL, 0 },
};

/* Takes -q (validate only): ARG is the quiet flag. */
static int
check_config_opt(void *arg, int ch, const char *optarg)
{
	*(bool *)arg = true;
	return RQ_EX_OK;
}

static const struct tools_cmd check_config_cmd = {
	"usage: relayq check-config [-c FILE] [-q]\n"
	"Validates the config file and prints every effective setting,\n"
	"global, per [domain] section and per priority class, one\n"
	"`key = value` per line, sorted, intervals in seconds.\n"
	"  -c FILE  the config file\n"
	"  -q       validate only, print nothing\n"
	"Exit 0 when valid; 78 and FILE:LINE: message otherwise.\n",
	"q",
	check_config_longopts,
	TOOLS_OPERANDS_NONE,
	check_config_opt,
};

int
cmd_check_config(int argc, char **argv)
{
	struct tools_opts o;
	bool quiet = false;
	struct cfg *cfg;
	char err[1024];
	const char *const *warn;
	size_t nwarn;

	if (!tools_opts_parse(&check_config_cmd, argc, argv, &quiet, &o))
		return o.exit_code;
	cfg = tools_cfg_load(o.cfg_path);
	if (runner_cfg_prepare(cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		cfg_free(cfg);
		return RQ_EX_CONFIG;
	}
	/* alias entries relayq reads but skips (|command, /file,
	 * :include:, a name given twice): said, not an error */
	warn = cfg_alias_warnings(cfg, &nwarn);
	for (size_t i = 0; i < nwarn; i++)
		fprintf(stderr, "%s\n", warn[i]);
	if (!quiet)
		cfg_dump(cfg, stdout);
	cfg_free(cfg);
	return fflush(stdout) == 0 ? RQ_EX_OK : RQ_EX_IOERR;
}
