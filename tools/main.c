/*
 * main.c - the relayq binary: dispatches `relayq COMMAND` to its
 * subcommand, and acts as `relayq mailq` / `relayq send` when invoked
 * through a link named mailq / sendmail, and as `relayq send -bi`
 * (check alias_file) when invoked as newaliases (a suffix after a '.',
 * as in sendmail.relayq, does not count).
 *
 * Only commands that work are listed in the table (and so in --help).
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "tools.h"

#define DEFAULT_CONFIG "/etc/relayq/relayq.conf"

struct command {
	const char *name;
	int (*fn)(int, char **);
	const char *args;
	const char *help;
};

static const struct command commands[] = {
	{ "run", cmd_run, "[--exit-when-idle]",
	    "the daemon: spool pickup, delivery, expiry" },
	{ "check-config", cmd_check_config, "",
	    "validate the config and print every effective setting" },
	{ "send", cmd_send, "[-f SENDER] [-t] [RCPT...]",
	    "submit a message (sendmail-compatible)" },
	{ "bounce", cmd_bounce, "ID...",
	    "return messages to their senders now, with a DSN" },
	{ "mailq", cmd_mailq, "[--json] [--priority P] [--state S] ...",
	    "list the queue" },
	{ "summary", cmd_summary, "", "queue shape by domain, age, priority" },
	{ "show", cmd_show, "ID", "a message's envelope, history and text" },
	{ "hold", cmd_hold, "ID...", "stop delivery attempts of messages" },
	{ "release", cmd_release, "ID...", "resume held messages" },
	{ "delete", cmd_delete, "ID... | --all", "remove messages, no DSN" },
	{ "flush", cmd_flush, "[ID...]", "make deferred recipients due now" },
	{ "cluster", cmd_cluster, "",
	    "the cluster's nodes and shared limits (Redis)" },
};
#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static void
usage(FILE *fp)
{
	fprintf(fp,
	    "usage: relayq [-c FILE] COMMAND [options]\n"
	    "       relayq --version | --help\n\ncommands:\n");
	for (size_t i = 0; i < NCOMMANDS; i++) {
		char head[64];

		snprintf(head, sizeof(head), "%s %s", commands[i].name,
		    commands[i].args);
		fprintf(fp, "  %-34s %s\n", head, commands[i].help);
	}
	fprintf(fp,
	    "\nEvery command takes -c FILE (else $RELAYQ_CONFIG, else "
	    "%s)\nand --help.  See relayq(8) and relayq.conf(5).\n",
	    DEFAULT_CONFIG);
}

static const char *cfg_opt; /* a global -c given before the command */

const char *
tools_cfg_path(const char *opt)
{
	const char *env;

	if (opt != NULL)
		return opt;
	if (cfg_opt != NULL)
		return cfg_opt;
	env = getenv("RELAYQ_CONFIG");
	if (env != NULL && env[0] != '\0')
		return env;
	return DEFAULT_CONFIG;
}

struct cfg *
tools_cfg_load(const char *path)
{
	struct cfg *cfg;
	char err[1024];

	if (cfg_load(path, &cfg, err, sizeof(err)) != CFG_OK) {
		fprintf(stderr, "%s\n", err);
		exit(RQ_EX_CONFIG);
	}
	return cfg;
}

int
tools_fail(int code, const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "relayq %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return code;
}

/* Runs command NAME with argv[0] = NAME. */
static int
dispatch(const char *name, int argc, char **argv)
{
	for (size_t i = 0; i < NCOMMANDS; i++) {
		if (strcmp(commands[i].name, name) == 0) {
			optind = 1;
			return commands[i].fn(argc, argv);
		}
	}
	fprintf(stderr, "relayq: unknown command \"%.64s\"\n", name);
	usage(stderr);
	return RQ_EX_USAGE;
}

int
main(int argc, char **argv)
{
	const char *base = strrchr(argv[0], '/');
	char name[32];
	size_t n;
	int i = 1;

	base = base ? base + 1 : argv[0];
	/* the name up to its first '.': "sendmail.relayq", as an
	 * alternatives(8) setup may name the link, is sendmail */
	n = strcspn(base, ".");
	if (n > 0 && n < sizeof(name)) {
		memcpy(name, base, n);
		name[n] = '\0';
		base = name;
	}
	if (strcmp(base, "mailq") == 0) {
		argv[0] = (char *)"mailq";
		return dispatch("mailq", argc, argv);
	}
	if (strcmp(base, "sendmail") == 0) {
		argv[0] = (char *)"send";
		return dispatch("send", argc, argv);
	}
	if (strcmp(base, "newaliases") == 0) {
		/* as `sendmail -bi`: check alias_file */
		static char bi[] = "-bi";
		char **av = xcalloc((size_t)argc + 2, sizeof(*av));
		int rc;

		av[0] = (char *)"send";
		av[1] = bi;
		for (int k = 1; k < argc; k++)
			av[k + 1] = argv[k];
		rc = dispatch("send", argc + 1, av);
		free(av);
		return rc;
	}
	while (i < argc && argv[i][0] == '-') {
		if (strcmp(argv[i], "--version") == 0 ||
		    strcmp(argv[i], "-V") == 0) {
			printf("relayq %s\n", RELAYQ_VERSION);
			return RQ_EX_OK;
		}
		if (strcmp(argv[i], "--help") == 0 ||
		    strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			return RQ_EX_OK;
		}
		if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
			cfg_opt = argv[i + 1];
			i += 2;
			continue;
		}
		if (strncmp(argv[i], "-c", 2) == 0 && argv[i][2] != '\0') {
			cfg_opt = argv[i] + 2;
			i++;
			continue;
		}
		fprintf(stderr, "relayq: unknown option \"%.64s\"\n", argv[i]);
		usage(stderr);
		return RQ_EX_USAGE;
	}
	if (i >= argc) {
		usage(stderr);
		return RQ_EX_USAGE;
	}
	return dispatch(argv[i], argc - i, argv + i);
}
