/*
 * tools.h - the relayq command line: subcommand dispatch and the helpers
 * the subcommands share.  Each subcommand is `int cmd_NAME(int argc,
 * char **argv)` with argv[0] the command's name; it returns a sysexits.h
 * code.
 */
#ifndef RELAYQ_TOOLS_H
#define RELAYQ_TOOLS_H

#include "cfg.h"

/* The config path: -c FILE, else $RELAYQ_CONFIG, else the default. */
const char *tools_cfg_path(const char *opt);

/*
 * Loads the config at PATH (see tools_cfg_path); on error prints
 * "FILE:LINE: message" to stderr and exits 78.  The caller frees.
 */
struct cfg *tools_cfg_load(const char *path);

/* Prints "relayq COMMAND: message" to stderr; returns CODE. */
int tools_fail(int code, const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

int cmd_check_config(int argc, char **argv);
int cmd_cluster(int argc, char **argv);

/*
 * Queue commands (cmd_mailq.c): checks that the caller is root or the
 * owner of queue_dir (else prints "permission denied" and returns 77),
 * then opens the queue into *qp (NULL, with 0, when no queue exists
 * yet).  Returns a sysexits code.  The caller closes *qp.
 */
struct queue;
int tools_queue_open(
    const char *cmd, const struct cfg *, bool readonly, struct queue **qp);
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
int cmd_run(int argc, char **argv);
int cmd_bounce(int argc, char **argv);
int cmd_send(int argc, char **argv);

#endif
