/*
 * cluster_int.h - private to cluster/: the cluster object, the
 * destinations it keeps leases and tokens for, one Redis call, and the
 * functions between cluster.c (the policy: leases, tokens, host status,
 * heartbeat, fallback), cluster_link.c (the connection to Redis: calls,
 * deadlines, NOSCRIPT, reconnects) and cluster_lua.c (the scripts).
 */
#ifndef RELAYQ_CLUSTER_INT_H
#define RELAYQ_CLUSTER_INT_H

#include <sys/queue.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "cluster.h"

/* The scripts (cluster_lua.c). */
enum cluster_script {
	CS_ACQUIRE,
	CS_TICK,
	CS_RATE,
	CS_VIEW,
	CS_NSCRIPT,
	CS_NONE = -1, /* a plain command */
};
extern const char *const cluster_lua[CS_NSCRIPT];
extern const char *const cluster_lua_name[CS_NSCRIPT];
void cluster_lua_sha(enum cluster_script, char out[41]);

#define CLUSTER_HASH 1024

struct ccall;
/* What becomes of a call's reply: REPLY is NULL when the call failed
 * (timeout, connection lost, cluster freed); it is valid only during
 * the call. */
typedef void (*cluster_done_fn)(
    struct cluster *, struct ccall *, const redisReply *reply);

/* One Redis call in flight (in send order: replies come in order). */
struct ccall {
	TAILQ_ENTRY(ccall) entry;
	struct cluster *c;
	enum cluster_script script;
	int argc;
	char **argv; /* kept for a retry after NOSCRIPT */
	size_t *argvlen;
	int64_t deadline_us; /* monotonic */
	bool retried;
	bool secret; /* AUTH: its arguments are zeroed when freed */
	cluster_done_fn done;
	void *arg;
	uint64_t *ids; /* acquire: the lease numbers asked for */
	size_t nids;
	bool adopt; /* acquire: claiming the node's leases after an outage */
	char **keys; /* tick: the destinations renewed */
	size_t nkeys;
};

/* A destination the node holds leases or tokens for. */
struct cdest {
	struct cdest *hnext; /* in the cluster's hash */
	TAILQ_ENTRY(cdest) entry; /* every destination */
	struct cluster *c;
	char *key;
	/* connection leases: the numbers of those held (names
	 * NODE#START#N), and the limit they were taken under */
	uint64_t *ids;
	size_t held, aids;
	unsigned limit;
	size_t fb_held; /* leases held when Redis went away */
	bool acquiring, adopting; /* an acquire call is out */
	int64_t retry_us; /* after a refusal: ask again then (mono) */
	int64_t backoff_us;
	int64_t last_go_us; /* a lease was last used then (mono) */
	int64_t contended_us; /* another node waits for a lease: until */
	/* rate tokens: due times (mono us), a ring */
	int64_t *tok;
	size_t ntok, tok_head, atok;
	int64_t tok_T; /* us between tokens of the current rate */
	bool reserving;
	int64_t rate_retry_us;
	/* what the dispatcher tells the runner */
	bool wake, woken, down, retire;
	struct cdest *wnext;
	int64_t down_until;
	char down_dsn[16];
	char down_why[400];
	struct event *timer; /* backoff and token wake-ups */
	int64_t timer_at;
	int64_t last_used_us;
};

enum cluster_link_state { LINK_DOWN, LINK_CONNECTING, LINK_UP };

struct cluster {
	struct event_base *base;
	struct cluster_conf conf; /* strings copied below */
	char *password, *name, *node;
	char addr_text[160]; /* for log lines */
	struct cluster_hooks hooks;
	char lease_prefix[128]; /* "NODE#START#" */
	uint64_t next_id;
	/* the link (cluster_link.c) */
	redisAsyncContext *ac;
	enum cluster_link_state state;
	bool tried; /* the first connection attempt has ended */
	bool up_once, fallen; /* has been up; has worked in fallback */
	int announced; /* last transition logged: 0 none, 1 up, 2 down */
	TAILQ_HEAD(, ccall) calls;
	struct event *ev_deadline, *ev_retry;
	char sha[CS_NSCRIPT][41];
	bool freeing;
	/* the policy (cluster.c) */
	struct event *ev_tick, *ev_dispatch;
	unsigned tick_n;
	unsigned live_nodes;
	int64_t grace_until_us; /* after an outage: new leases at the share */
	int64_t settle_until_us; /* in fallback: the leases held bound */
	struct cdest *dests[CLUSTER_HASH];
	TAILQ_HEAD(, cdest) all;
	struct cdest *wake_head;
	bool wake_all;
	struct cluster_stats st;
};

/* ---- cluster_link.c ---- */

/* Starts connecting (now, or after the retry delay). */
void cluster_link_start(struct cluster *);
/* Whether calls can be sent. */
bool cluster_link_up(const struct cluster *);
/*
 * Sends a call: script S (EVALSHA, or EVAL's text again after NOSCRIPT)
 * or, for CS_NONE, the command in ARGV; ARGV (ARGC strings of ARGVLEN
 * bytes, or NUL-terminated when ARGVLEN is NULL) is copied.  DONE (may
 * be NULL) gets the reply.  Returns the call (to attach ids or keys),
 * or NULL when the link is not up (DONE is then not called).
 */
struct ccall *cluster_call(struct cluster *, enum cluster_script s, int argc,
    const char *const *argv, const size_t *argvlen, cluster_done_fn done,
    void *arg);
/* Sends what is queued without waiting, then closes the link (free). */
void cluster_link_stop(struct cluster *);

/* ---- cluster.c, for the link ---- */

/* The link came up (UP) or went down (WHY). */
void cluster_link_changed(struct cluster *, bool up, const char *why);

#endif
