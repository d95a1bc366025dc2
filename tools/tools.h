/*
 * tools.h - the relayq command line: subcommand dispatch and the helpers
 * the subcommands share.  Each subcommand is `int cmd_NAME(int argc,
 * char **argv)` with argv[0] the command's name; it returns a sysexits.h
 * code.
 */
#ifndef RELAYQ_TOOLS_H
#define RELAYQ_TOOLS_H

#include <getopt.h>

#include "cfg.h"

/* The config path: -c FILE, else $RELAYQ_CONFIG, else the default. */
const char *tools_cfg_path(const char *opt);

/*
 * Loads the config at PATH (see tools_cfg_path); on error prints
 * "FILE:LINE: message" to stderr and exits 78.  The caller frees.
 */
struct cfg *tools_cfg_load(const char *path);

/* What operands (after the options) a command takes. */
enum tools_operands {
	TOOLS_OPERANDS_NONE, /* none: one is a usage error */
	TOOLS_OPERANDS_SOME, /* at least one (queue IDs) */
	TOOLS_OPERANDS_ANY, /* the command checks them itself */
};

/* A subcommand's command line, as tools_opts_parse() reads it. */
struct tools_cmd {
	const char *usage; /* the text --help and usage errors print */
	const char *shortopts; /* its own letters (not -c, -h); or NULL */
	const struct option *longopts; /* its own (not --help), {NULL}-ended;
					  "config" -> 'c' where it takes it */
	enum tools_operands operands;
	/* Handles one of its own options (CH as getopt_long returns it):
	 * returns RQ_EX_OK to go on, or the code to exit with after saying
	 * why (tools_usage_fail() for a usage error).  NULL: none. */
	int (*opt)(void *arg, int ch, const char *optarg);
};

/* A command line parsed by tools_opts_parse(). */
struct tools_opts {
	const char *cfg_path; /* -c FILE, else $RELAYQ_CONFIG, else the
				 default (tools_cfg_path()) */
	int first; /* argv index of the first operand */
	int exit_code; /* when tools_opts_parse() returned false */
};

/*
 * Parses the options of subcommand CMD (argv[0] is its name): -c FILE,
 * -h/--help, and CMD's own (handed to CMD->opt with ARG), then checks
 * the operands.  Returns true to run the command; false when it is to
 * exit with OUT->exit_code: 0 after --help printed the usage, 64 after
 * a usage error printed it to stderr, or what CMD->opt returned.
 */
bool tools_opts_parse(const struct tools_cmd *cmd, int argc, char **argv,
    void *arg, struct tools_opts *out);

/* Prints CMD's usage to stderr; returns 64 (RQ_EX_USAGE). */
int tools_usage_fail(const struct tools_cmd *cmd);

/* Exit code for a queue ID not in the queue (sysexits' EX_NOUSER: the
 * addressee, here the message, is unknown): every queue command. */
#define EX_NOSUCHMSG 67

/* Parses queue ID WORD (LEN bytes): 16 hex digits, with mailq's marks
 * after it allowed (`*` in delivery, `!` held, Postfix's `#`). */
bool tools_queue_id(const char *word, size_t len, uint64_t *id);

/* Prints "relayq COMMAND: message" to stderr; returns CODE. */
int tools_fail(int code, const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

int cmd_check_config(int argc, char **argv);
int cmd_cluster(int argc, char **argv);

/*
 * Queue commands (cmd_mailq.c): loads the config at PATH into *cfgp (as
 * tools_cfg_load(): exit 78 on error), checks that the caller is root
 * or the owner of queue_dir (else prints "permission denied" and
 * returns 77), then opens the queue into *qp (NULL, with 0, when no
 * queue exists yet).  Returns a sysexits code; on any but 0 *cfgp is
 * freed (NULL).  The caller closes *qp and frees *cfgp.
 */
struct queue;
int tools_queue_open(const char *cmd, const char *path, bool readonly,
    struct cfg **cfgp, struct queue **qp);
/* Buffered standard output for big listings; tools_out_done() flushes
 * and returns 0 or 74 on a write error. */
void tools_out(const char *s, size_t n);
void tools_outs(const char *s);
void tools_out_u64(uint64_t v);
void tools_out_json(const char *s); /* a JSON string, NULL as null */
void tools_out_flush(void);
int tools_out_done(void);
int cmd_mailq(int argc, char **argv);
int cmd_summary(int argc, char **argv);
int cmd_show(int argc, char **argv);
int cmd_hold(int argc, char **argv);
int cmd_release(int argc, char **argv);
int cmd_delete(int argc, char **argv);
int cmd_flush(int argc, char **argv);
/* From now on flush says nothing on success (sendmail -q, which cron
 * runs, is silent as Postfix's). */
void cmd_flush_silent(void);
int cmd_run(int argc, char **argv);
int cmd_bounce(int argc, char **argv);
int cmd_send(int argc, char **argv);

#endif
