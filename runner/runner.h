/*
 * runner.h - the daemon (`relayq run`): the one event_base that takes in
 * the spool, schedules due recipients by class, routes them (relayhost or
 * MX through c-ares), delivers them with the SMTP client under the
 * connection and rate limits, commits every result in group commits, and
 * runs the expiry scans.  See doc/design.md, "Runner".
 */
#ifndef RELAYQ_RUNNER_H
#define RELAYQ_RUNNER_H

#include <stdbool.h>

#include "cfg.h"

struct runner_opts {
	/* Exit 0 once the spool is empty and nothing is due before its
	 * next retry (batch use, benchmarks). */
	bool exit_when_idle;
};

/*
 * Runs the daemon with CFG (loaded from CFG_PATH, which SIGHUP reloads)
 * until SIGTERM/SIGINT or, with exit_when_idle, until idle.  Takes
 * ownership of CFG (it frees it, or its replacement after a reload).
 * Returns a sysexits.h code: 0 on a clean stop.
 */
int runner_main(
    struct cfg *cfg, const char *cfg_path, const struct runner_opts *opts);

/*
 * Loads the files CFG names (auth_file, sender_relayhost, client
 * certificates: cfg_files_load) and checks that each client certificate
 * matches its key, as `relayq run` does at start-up and on SIGHUP and
 * check-config does.  0, or -1 with ERR "FILE:LINE: message" (no
 * secret in it).
 */
int runner_cfg_prepare(struct cfg *cfg, char *err, size_t errlen);

/*
 * `relayq cluster`: prints the cluster CFG's cluster_redis names as
 * Redis sees it (live nodes, their queue counts, the shared limits in
 * use per destination) to OUT.  Call runner_cfg_prepare() first (the
 * password).  Returns a sysexits code (78 without cluster_redis, 75
 * when Redis cannot be reached).
 */
int runner_cluster_view(const struct cfg *cfg, FILE *out);

#endif
