/*
 * cmd_run.c - `relayq run`: the daemon in the foreground (spool pickup,
 * delivery, expiry); see runner/runner.h.  SIGTERM/SIGINT stop it
 * cleanly, SIGHUP reloads the config.
 */
#include <stdlib.h>

#include "runner.h"
#include "tools.h"

static const struct option run_longopts[] = {
	{ "config", required_argument, NULL, 'c' },
	{ "exit-when-idle", no_argument, NULL, 'x' },
	{ NULL, 0, NULL, 0 },
};

/* Takes --exit-when-idle into the runner's options ARG. */
static int
run_opt(void *arg, int ch, const char *optarg)
{
	((struct runner_opts *)arg)->exit_when_idle = true;
	return RQ_EX_OK;
}

static const struct tools_cmd run_cmd = {
	"usage: relayq run [-c FILE] [--exit-when-idle]\n"
	"Runs the daemon in the foreground: takes in the spool, delivers\n"
	"what is due, sends delay warnings and bounces.\n"
	"  -c FILE           the config file\n"
	"  --exit-when-idle  exit 0 once the spool is empty and nothing\n"
	"                    is due before its next retry\n"
	"SIGTERM/SIGINT: stop cleanly; SIGHUP: reload the config.\n",
	NULL,
	run_longopts,
	TOOLS_OPERANDS_NONE,
	run_opt,
};

int
cmd_run(int argc, char **argv)
{
	struct runner_opts opts = { false };
	struct tools_opts o;

	if (!tools_opts_parse(&run_cmd, argc, argv, &opts, &o))
		return o.exit_code;
	return runner_main(tools_cfg_load(o.cfg_path), o.cfg_path, &opts);
}
