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

#endif
