/*
 * runner_cluster.c - the runner's side of a cluster (cluster/, when
 * cluster_redis is set): the hooks runner_dest.c calls where a
 * connection is about to be opened, where the rate bucket is consulted
 * and where a host is marked down, the SMTP client's close hook, and
 * the cluster's hooks back into the runner (wake a destination, retire
 * connections whose lease is lost, a host another node found down, the
 * counts the heartbeat publishes).
 *
 * Public: runner_cluster_view().  Runner-private: runner_cluster_open(),
 * runner_cluster_close(), runner_cluster_conn_may(),
 * runner_cluster_rate(), runner_cluster_host_down().
 *
 * Without a cluster every hook answers as a lone node would (go, the
 * node's own bucket, nothing shared), so the runner behaves exactly as
 * before.  With one, max_connections and max_message_rate are the
 * cluster's (per destination key), max_connections_total stays this
 * node's.  The cluster settings are read at start-up: a reload keeps
 * them (a change needs a restart, like dns_server).
 */
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "runner_int.h"

/* cluster hook: the connections open to KEY. */
static unsigned
hook_conns(void *arg, const char *key)
{
	struct runner *r = arg;

	return r->smtp ? smtp_client_conn_count(r->smtp, key) : 0;
}

/* cluster hook: look at KEY's waiting jobs again (NULL: every
 * destination's). */
static void
hook_wake(void *arg, const char *key)
{
	struct runner *r = arg;
	struct dest *d, *next;

	if (r->stopping)
		return;
	if (key != NULL) {
		d = runner_dest_find(r, key);
		if (d != NULL && d->nwait > 0)
			runner_dest_kick(r, d);
		return;
	}
	for (d = r->all_dests; d != NULL; d = next) {
		next = d->next; /* a kick frees at most D itself */
		if (d->nwait > 0)
			runner_dest_kick(r, d);
	}
	runner_dest_ready_kick(r);
}

/* cluster hook: N connections of KEY lost their lease. */
static void
hook_retire(void *arg, const char *key, unsigned n)
{
	struct runner *r = arg;

	if (r->smtp != NULL)
		(void)smtp_client_conn_retire(r->smtp, key, n);
}

/* cluster hook: another node found KEY down until UNTIL. */
static void
hook_down(
    void *arg, const char *key, int64_t until, const char *dsn, const char *why)
{
	struct runner *r = arg;
	struct dest *d = runner_dest_find(r, key);

	if (d == NULL || r->stopping)
		return;
	d->down_until = until;
	snprintf(d->down_why, sizeof(d->down_why), "%s", why);
	snprintf(d->down_dsn, sizeof(d->down_dsn), "%s", dsn);
	runner_dest_kick(r, d); /* its jobs are deferred, no connection */
}

/* cluster hook: the counts the heartbeat publishes. */
static void
hook_counts(void *arg, struct cluster_counts *n)
{
	struct runner *r = arg;
	struct queue_counts qc;

	memset(n, 0, sizeof(*n));
	if (queue_counts_get(r->q, &qc) == QUEUE_OK) {
		for (int c = 0; c < CFG_NCLASS; c++) {
			n->msgs += qc.msgs[c];
			n->pending += qc.rcpts[c][RCPT_PENDING];
			n->deferred += qc.rcpts[c][RCPT_DEFERRED];
		}
		n->held = qc.held;
	}
	n->conns = r->smtp ? smtp_client_conn_total(r->smtp) : 0;
}

/* smtp close hook: a connection of KEY is gone; its lease goes back
 * unless a job waits for it. */
static void
smtp_closed(void *arg, const char *key)
{
	struct runner *r = arg;
	struct dest *d = runner_dest_find(r, key);

	if (r->cluster != NULL)
		cluster_conn_closed(r->cluster, key,
		    smtp_client_conn_count(r->smtp, key),
		    d != NULL && d->nwait > 0 && !r->stopping);
}

/* Joins the cluster CFG names, if any, as HOST (after the client). */
void
runner_cluster_open(struct runner *r, const struct cfg *cfg, const char *host)
{
	struct cluster_conf conf;
	struct cluster_hooks hooks = { r, hook_conns, hook_wake, hook_retire,
		hook_down, hook_counts };
	char node[80];

	if (!cluster_conf_get(cfg, host, &conf, node, sizeof(node)))
		return;
	r->cluster = cluster_new(r->base, &conf, &hooks);
	smtp_client_on_close(r->smtp, smtp_closed, r);
}

/* Leaves the cluster, giving back the leases (after the client). */
void
runner_cluster_close(struct runner *r)
{
	struct cluster_stats st;

	if (r->cluster == NULL)
		return;
	cluster_stats_get(r->cluster, &st);
	log_info("cluster",
	    "left the cluster: %llu Redis calls, %llu rate tokens used, "
	    "%llu dropped, %llu switches to cluster_fallback",
	    (unsigned long long)st.calls, (unsigned long long)st.tokens_taken,
	    (unsigned long long)st.tokens_dropped,
	    (unsigned long long)st.fallbacks);
	cluster_free(r->cluster);
	r->cluster = NULL;
}

/* May D open a new connection now?  Without a cluster, yes; with one,
 * under a lease (or the fallback); when not, the cluster wakes D. */
bool
runner_cluster_conn_may(struct runner *r, struct dest *d)
{
	unsigned open, maxc, want;

	if (r->cluster == NULL)
		return true;
	open = smtp_client_conn_count(r->smtp, d->key);
	maxc = (unsigned)cfg_int(d->scope, CFG_MAX_CONNECTIONS);
	want = maxc > open ? maxc - open : 1;
	if (want > d->nwait)
		want = (unsigned)d->nwait;
	return cluster_conn_may(r->cluster, d->key, open, maxc, want) ==
	    CLUSTER_GO;
}

/* How D's next message goes under max_message_rate *RATE: the
 * cluster's token, a wait, or the node's own bucket (*RATE then this
 * node's part of it). */
enum runner_rate
runner_cluster_rate(struct runner *r, struct dest *d, struct cfg_rate *rate)
{
	unsigned maxc, want;

	if (r->cluster == NULL)
		return RUNNER_RATE_LOCAL;
	maxc = (unsigned)cfg_int(d->scope, CFG_MAX_CONNECTIONS);
	want = maxc > runner_dest_busy(d) ? maxc - runner_dest_busy(d) : 1;
	if (want > d->nwait)
		want = (unsigned)d->nwait;
	switch (cluster_rate_take(r->cluster, d->key, rate, want)) {
	case CLUSTER_GO:
		return RUNNER_RATE_GO;
	case CLUSTER_WAIT:
		return RUNNER_RATE_WAIT;
	case CLUSTER_LOCAL:
		break;
	}
	return RUNNER_RATE_LOCAL;
}

/* D was found down for SECS seconds: the other nodes skip it too. */
void
runner_cluster_host_down(struct runner *r, struct dest *d, int64_t secs)
{
	if (r->cluster != NULL)
		cluster_host_down(
		    r->cluster, d->key, secs, d->down_dsn, d->down_why);
}

/* `relayq cluster`; see runner.h. */
int
runner_cluster_view(const struct cfg *cfg, FILE *out)
{
	return cluster_view_print(cfg, out);
}
