/*
 * cluster.h - several relayq nodes as one MTA: destination limits and
 * host status shared through Redis (doc/design.md, "Cluster").
 *
 * One struct cluster per daemon, on the daemon's event_base; only
 * runner/ calls it.  It talks to Redis with hiredis' asynchronous API
 * (nothing here blocks), under its own deadlines, and falls back to
 * cluster_fallback while Redis cannot be reached.  Destinations are
 * named by the runner's destination keys; the cluster keeps, per key,
 * the connection leases and rate tokens this node holds.
 *
 * The runner asks before it opens a connection (cluster_conn_may) and
 * before it sends a message under max_message_rate (cluster_rate_take),
 * tells when a connection closed (cluster_conn_closed) and when it
 * found a host down (cluster_host_down).  The cluster answers through
 * the hooks, always from a loop turn of its own (never from inside a
 * call of the runner's, never inside a hiredis callback).
 *
 * Ownership: cluster_new() copies its settings; the caller frees the
 * cluster with cluster_free() before the event_base.  Strings passed in
 * are copied where kept.
 */
#ifndef RELAYQ_CLUSTER_H
#define RELAYQ_CLUSTER_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "cfg.h"

struct event_base;
struct cluster;

/* What a node publishes about itself with its heartbeat. */
struct cluster_counts {
	uint64_t msgs; /* messages in its queue */
	uint64_t pending; /* recipients pending (due or in flight) */
	uint64_t deferred; /* recipients deferred */
	uint64_t held; /* messages on hold */
	uint64_t conns; /* its open SMTP connections */
};

/* How the cluster reaches the runner; every hook gets ARG. */
struct cluster_hooks {
	void *arg;
	/* The connections open to KEY now (connecting, busy, idle). */
	unsigned (*conns)(void *arg, const char *key);
	/* Something changed for KEY (a lease or token came, Redis came or
	 * went): look at its waiting jobs again.  KEY NULL: every
	 * destination. */
	void (*wake)(void *arg, const char *key);
	/* The node holds fewer leases for KEY than it has connections:
	 * N of them must close after the message they are sending. */
	void (*retire)(void *arg, const char *key, unsigned n);
	/* Another node marked KEY down: skip it until UNTIL (unix
	 * seconds), deferring its jobs with DSN and WHY. */
	void (*down)(void *arg, const char *key, int64_t until, const char *dsn,
	    const char *why);
	/* The counts the heartbeat publishes. */
	void (*counts)(void *arg, struct cluster_counts *);
};

/* The settings of a cluster (from the cluster_* keys). */
struct cluster_conf {
	struct cfg_redis_addr addr;
	const char *password; /* NULL: no AUTH */
	const char *name; /* key prefix */
	const char *node; /* this node's name */
	int64_t lease_ms; /* cluster_lease_time */
	enum cfg_cluster_fallback fallback;
};

/* Reads the cluster_* keys of CFG (after cfg_files_load) into CONF, the
 * node name defaulting to HOST (made fit for a key); false when
 * cluster_redis is empty (no cluster).  CONF points into CFG and NODEBUF
 * (NODELEN bytes). */
bool cluster_conf_get(const struct cfg *cfg, const char *host,
    struct cluster_conf *conf, char *nodebuf, size_t nodelen);

/* Starts the cluster on BASE: connects to Redis at once (the answer
 * comes through the hooks); until then no new connection is allowed. */
struct cluster *cluster_new(struct event_base *base,
    const struct cluster_conf *conf, const struct cluster_hooks *hooks);

/* Gives back every lease this node holds (best effort, without
 * waiting) and frees the cluster.  NULL is a no-op. */
void cluster_free(struct cluster *);

/* Answers of cluster_conn_may() and cluster_rate_take(). */
enum cluster_answer {
	CLUSTER_GO, /* go ahead: a lease or token is held for it */
	CLUSTER_WAIT, /* not now: the wake hook says when to ask again */
	CLUSTER_LOCAL, /* Redis is away: apply the limit given back, alone */
};

/*
 * May a new connection to KEY be opened now?  OPEN: the connections the
 * node has to KEY; LIMIT: KEY's max_connections (cluster-wide); WANT:
 * how many new ones the jobs waiting could use.  GO when the node holds
 * a lease not yet used by a connection, or (Redis away) under the
 * fallback; WAIT otherwise, after asking Redis for leases when none is
 * asked for yet.  Never LOCAL.
 */
enum cluster_answer cluster_conn_may(struct cluster *, const char *key,
    unsigned open, unsigned limit, unsigned want);

/* A connection to KEY closed (OPEN are left, JOBS wait for KEY): leases
 * no connection needs are given back when no job waits. */
void cluster_conn_closed(
    struct cluster *, const char *key, unsigned open, bool jobs);

/*
 * Takes a token of KEY's cluster-wide max_message_rate *RATE for one
 * message; WANT: how many messages could go now.  GO: taken; WAIT:
 * none yet (asked for, or the next one is not due: the wake hook says
 * when); LOCAL: Redis is away, use the node's own bucket with *RATE,
 * which is then this node's part of the rate.
 */
enum cluster_answer cluster_rate_take(
    struct cluster *, const char *key, struct cfg_rate *rate, unsigned want);

/* This node found KEY down for SECS seconds (timeout.hoststatus): every
 * node skips it until then (DSN and WHY go with it). */
void cluster_host_down(struct cluster *, const char *key, int64_t secs,
    const char *dsn, const char *why);

/* Counters for the metrics endpoint: leases held and tokens taken. */
struct cluster_stats {
	bool shared; /* Redis is reachable: the limits are shared */
	unsigned live_nodes; /* as the last heartbeat counted them */
	uint64_t leases; /* connection leases held now */
	uint64_t tokens; /* rate tokens reserved and not yet used */
	uint64_t tokens_taken; /* rate tokens used since start */
	uint64_t tokens_dropped; /* reserved but unused in time */
	uint64_t calls; /* Redis calls sent since start */
	uint64_t fallbacks; /* switches to cluster_fallback */
};
void cluster_stats_get(const struct cluster *, struct cluster_stats *);

/* `relayq cluster`: prints the live nodes with their queue counts and
 * the shared limits in use per destination, asking Redis (blocking,
 * with a timeout: a command, not the daemon).  Returns a sysexits code
 * (0; 75 when Redis cannot be reached; 78 without cluster_redis). */
int cluster_view_print(const struct cfg *cfg, FILE *out);

#endif
