/*
 * opts.c - the command-line handling every subcommand shares: -c FILE
 * (the config: -c, else $RELAYQ_CONFIG, else the default), -h/--help
 * (the usage on standard output, exit 0), a usage error (the usage on
 * standard error, exit 64: an unknown option, operands where none are
 * taken, none where some are needed).  A command describes its own
 * options in a struct tools_cmd and handles only those.
 *
 * Public: tools_opts_parse(), tools_usage_fail().
 * `relayq send` parses sendmail's options by hand (getopt cannot take
 * them) and only shares tools_cfg_path().
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "queue.h"
#include "tools.h"

/* CMD's long options after --help, in a new array the caller frees. */
static struct option *
longopts_merge(const struct tools_cmd *cmd)
{
	static const struct option help = { "help", no_argument, NULL, 'h' };
	struct option *v;
	size_t n = 0;

	while (cmd->longopts != NULL && cmd->longopts[n].name != NULL)
		n++;
	v = xcalloc(n + 2, sizeof(*v));
	v[0] = help;
	if (n > 0)
		memcpy(v + 1, cmd->longopts, n * sizeof(*v));
	return v;
}

/* Parses a queue ID as mailq prints it; see tools.h. */
bool
tools_queue_id(const char *word, size_t len, uint64_t *id)
{
	char buf[17];
	size_t n = len;

	while (n > 0 && strchr("*!#", word[n - 1]) != NULL)
		n--;
	if (n != 16 || len - n > 3)
		return false;
	memcpy(buf, word, n);
	buf[n] = '\0';
	return queue_id_parse(buf, id);
}

/* Prints CMD's usage to standard error; returns 64. */
int
tools_usage_fail(const struct tools_cmd *cmd)
{
	fputs(cmd->usage, stderr);
	return RQ_EX_USAGE;
}

/* True when the operands of ARGV fit what CMD takes. */
static bool
operands_fit(const struct tools_cmd *cmd, int argc)
{
	switch (cmd->operands) {
	case TOOLS_OPERANDS_NONE:
		return optind >= argc;
	case TOOLS_OPERANDS_SOME:
		return optind < argc;
	case TOOLS_OPERANDS_ANY:
		break;
	}
	return true;
}

/* Parses a subcommand's command line; see tools.h. */
bool
tools_opts_parse(const struct tools_cmd *cmd, int argc, char **argv, void *arg,
    struct tools_opts *out)
{
	struct option *longopts = longopts_merge(cmd);
	const char *path = NULL;
	char shortopts[64];
	int ch, rc = RQ_EX_OK;
	bool help = false;

	snprintf(shortopts, sizeof(shortopts), "c:h%s",
	    cmd->shortopts != NULL ? cmd->shortopts : "");
	while (rc == RQ_EX_OK && !help &&
	    (ch = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
		if (ch == 'c')
			path = optarg;
		else if (ch == 'h')
			help = true;
		else if (ch == '?' || cmd->opt == NULL)
			rc = tools_usage_fail(cmd);
		else
			rc = cmd->opt(arg, ch, optarg);
	}
	free(longopts);
	if (help) {
		fputs(cmd->usage, stdout);
		out->exit_code = RQ_EX_OK;
		return false;
	}
	if (rc == RQ_EX_OK && !operands_fit(cmd, argc))
		rc = tools_usage_fail(cmd);
	out->exit_code = rc;
	out->cfg_path = tools_cfg_path(path);
	out->first = optind;
	return rc == RQ_EX_OK;
}
