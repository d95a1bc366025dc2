/*
 * runner_int.h - private to runner/: the daemon's state shared by
 * runner_main.c (start-up, loop, signals, intake, reload, shutdown),
 * runner_sched.c (scheduling passes: taking due work, messages in
 * memory), runner_share.c (how the priority classes share: pure
 * decisions), runner_dest.c (destinations: wait lists, routes, limits,
 * host status), runner_route.c (which destination a job goes to:
 * routes, credentials, fallback relays), runner_job.c (building jobs,
 * submitting them to the SMTP client, their end), runner_result.c
 * (backoff, group commit, delivery log), runner_cluster.c (the hooks of
 * a cluster: limits and host status shared through Redis) and
 * runner_http.c (the HTTP listener's side in the runner).
 *
 * Ownership: a struct rmsg (a leased message in memory) is shared by its
 * jobs (one per destination) and freed when the last one is done; a job
 * belongs to its destination's wait list until submitted, then to the
 * SMTP client's done callback.  A struct rcfg is refcounted by the
 * destinations made with it, so a reload never frees settings a request
 * in flight still reads.
 */
#ifndef RELAYQ_RUNNER_INT_H
#define RELAYQ_RUNNER_INT_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>

#include "cfg.h"
#include "queue.h"
#include "runner.h"
#include "runner_dns.h"
#include "runner_sts.h"
#include "smtp.h"

/* A configuration with the number of users still holding it. */
struct rcfg {
	struct cfg *cfg;
	unsigned refs;
};

/*
 * A leased message in memory: its envelope and the leased recipients
 * taken so far (a message with many recipients is taken a slice at a
 * time, each slice appended to msg->rcpts while earlier ones are still
 * in flight).
 */
struct rmsg {
	struct rmsg *hnext; /* in the runner's id hash */
	struct queue_msg *msg; /* rcpts: the ones in memory, nrcpt of them */
	size_t total; /* the message's recipient count */
	uint8_t *inmem; /* bit per recipient index: in memory (total bits) */
	char *body; /* loaded at the first submit */
	size_t bodylen;
	unsigned refs; /* jobs not yet done */
	/* ends of it (refs fell to 0) waiting for their commit: it stays
	 * in memory, so that its recipients are not taken again, until the
	 * last is committed (rmsg_end) */
	unsigned ends;
	int64_t taken_us; /* when the runner took it (delays a/b) */
};

/* One message's recipients for one destination: one smtp_request_submit. */
struct job {
	struct job *next; /* in a destination's wait list */
	struct rmsg *m;
	struct dest *dest;
	uint32_t *idx; /* indexes into m->msg->rcpts */
	size_t nidx, aidx;
	int64_t submit_us;
	enum cfg_class cls;
};

enum dest_route_state { DR_NONE, DR_RESOLVING, DR_OK };

/* A destination's concurrency window (runner_share.c): how many
 * connections it may have now, and the feedback toward the next step. */
struct runner_conc {
	unsigned window; /* 1..max_connections */
	unsigned good; /* successes since the last step (each 1/window) */
	unsigned bad; /* connection-level failures since the last step */
};

/* What a finished request says of its destination's concurrency. */
enum runner_conc_event {
	CONC_NEUTRAL, /* nothing (a local shortage, a policy failure) */
	CONC_SUCCESS, /* a session: a MAIL FROM transaction went out */
	CONC_FAILURE, /* connection-level: no session at any address */
};

/* How a feedback changed the window. */
enum runner_conc_step { CONC_SAME, CONC_GREW, CONC_SHRANK };

/* A destination: a domain (by MX), or a relay with its credentials
 * (runner_route.c). */
struct dest {
	struct runner *runner;
	struct dest *hnext; /* in the runner's destination hash */
	struct dest *next; /* in the runner's list of all destinations */
	char *key; /* the smtp client's dest_key */
	char *lookup; /* the name to route: domain or relay host */
	uint16_t port;
	bool mx; /* MX lookup of lookup */
	bool retired; /* made with an older config: takes no new jobs */
	/* TLS-RPT reports' MX destination (QMSG_TLS_RELAXED, key
	 * "tlsrpt/DOMAIN"): tls = may at most, no DANE, no MTA-STS */
	bool tls_relaxed;
	struct rcfg *rc;
	const struct cfg_scope *scope;
	enum dest_route_state rstate;
	struct route *route;
	int64_t route_until; /* the route is reused until then */
	struct smtp_addr *addrs; /* from route */
	struct job *wait_head[CFG_NCLASS], *wait_tail[CFG_NCLASS];
	size_t nwait;
	int wrr[CFG_NCLASS]; /* smooth weighted round robin state */
	unsigned active; /* submitted requests */
	/* of those, riding behind another on its connection (SMTP_SUBMIT_
	 * NEXT) until that one is done: active - chained connections are
	 * in use (runner_dest_busy) */
	unsigned chained;
	struct runner_conc conc; /* connections it may have now */
	int64_t down_until; /* hoststatus: skip until then */
	int64_t last_used; /* for the janitor */
	char down_why[SMTP_TEXT_MAX];
	char down_dsn[16];
	double tokens; /* max_message_rate bucket */
	int64_t tokens_us;
	struct event *timer; /* rate or hoststatus wake-up */
	bool queued; /* on the runner's ready list */
	struct dest *rnext;
	struct job *build; /* the job being built by take number build_gen */
	uint64_t build_gen;
	/* smarthost (runner_route.c): the credentials its requests log in
	 * with (in rc's cfg; NULL: none) and its place in the fallback_relay
	 * chain (0: a route, k: the k-th fallback relay) */
	const struct cfg_auth *auth;
	int fb;
	/* MTA-STS (runner_sts.c): the policy of the last route (NULL: none) */
	struct sts_policy *sts;
};

/* One recipient's result waiting for the group commit. */
struct pres {
	uint64_t id;
	uint32_t idx;
	enum queue_rcpt_state state;
	int64_t next_attempt;
	char *reply; /* the reason as logged */
	char dsn[16];
	char *log; /* the delivery log line, written before the commit */
	bool job_end; /* the last result of its job */
	bool relayed_dsn; /* delivered to a DSN-capable hop: NOTIFY went on */
	bool msg_end; /* idx NO_RCPT: the message left memory */
	uint8_t cls; /* the message's class (the tallies, runner_http.c) */
	int64_t delay_us; /* from its arrival to this result */
};

#define RUNNER_HASH 4096
/* Recipients leased per scheduling pass, and the most a job carries: a
 * pass (a loop turn), a submit and a job's results stay short however
 * many recipients the due messages have. */
#define RUNNER_TAKE_RCPTS 2000

struct runner {
	struct event_base *base;
	struct rcfg *rc; /* the current config */
	const char *cfg_path;
	struct runner_opts opts;
	struct queue *q;
	struct queue_intake *qi;
	struct smtp_client *smtp;
	struct dns *dns;
	struct cluster *cluster; /* cluster_redis: shared limits, or NULL */
	struct sts *sts; /* MTA-STS policies */
	struct tlsrpt *tlsrpt; /* TLS-RPT counts and reports; NULL: off */

	struct event *ev_intake, *ev_intake_more, *ev_rescan, *ev_wakeup;
	struct event *ev_intake_wake; /* the unlinkers caught up (QI_WAIT) */
	struct event *ev_sched, *ev_commit, *ev_expiry, *ev_stop_grace;
	struct event *ev_janitor;
	struct event *ev_sig[3];
	bool intake_idle; /* the spool has been emptied once */
	bool intake_paused;
	bool stopping, stopped;
	int exit_code; /* of a clean stop: 0, or 75 (see rescan_cb) */

	struct rmsg *msgs[RUNNER_HASH]; /* leased messages by id */
	size_t nmsgs, max_msgs;
	uint64_t build_gen; /* sched_take_one() calls */
	/* Out of file descriptors (a local failure came back): at most
	 * fd_cap connections in all until fd_cap_until (us). */
	unsigned fd_cap;
	int64_t fd_cap_until;
	int64_t fd_warned; /* when the shortage was last logged (us) */
	struct dest *dests[RUNNER_HASH]; /* current destinations by key */
	struct dest *all_dests;
	struct dest *ready; /* destinations that may submit */
	unsigned active; /* requests submitted, all destinations */

	/* results waiting for the commit: pres[phead..npres), nends of
	 * them the end of a message (which leaves memory at the commit) */
	struct pres *pres;
	size_t phead, npres, apres, nends;
	int64_t commit_us; /* what a commit takes (us), smoothed */
	int64_t pres_first_us; /* when the oldest came (us); 0: long ago */
	int64_t sched_at; /* when ev_sched fires (us), INT64_MAX: unarmed */
	struct runner_http *http; /* the HTTP listener, or NULL */
};

/* runner_main.c */
void runner_idle_check(struct runner *);
void runner_rcfg_unref(struct rcfg *);

/* runner_sched.c */
void runner_sched_init(struct runner *);
void runner_sched_destroy(struct runner *);
void runner_sched_arm(struct runner *);
void runner_sched_kick(struct runner *);
void runner_sched_pass(struct runner *, bool commit);
size_t runner_sched_room(const struct runner *);
bool runner_sched_busy(const struct runner *);
void runner_rmsg_release(struct runner *, struct rmsg *);
void runner_rmsg_end(struct runner *, uint64_t id);

/* runner_share.c */
extern const enum cfg_class runner_class_order[CFG_NCLASS];
void runner_share_weights(const struct cfg_scope *, unsigned w[CFG_NCLASS]);
/* What a scheduling pass may take: free message slots, recipients, and
 * per class whether work is due and its weight (runner_share_weights). */
struct runner_share_in {
	size_t room;
	size_t rcpts;
	bool due[CFG_NCLASS];
	unsigned weight[CFG_NCLASS];
};
/* How a pass takes: take() takes up to N messages of class C and at
 * most *RCPTS recipients (taking *RCPTS down by those it leased) and
 * returns how many messages; room() returns the free slots now. */
struct runner_share_ops {
	size_t (*take)(void *arg, enum cfg_class c, size_t n, size_t *rcpts);
	size_t (*room)(void *arg);
	void *arg;
};
size_t runner_share_pass(
    const struct runner_share_in *, const struct runner_share_ops *);
int runner_share_wrr_pick(int credit[CFG_NCLASS], const unsigned w[CFG_NCLASS],
    const bool waiting[CFG_NCLASS]);
void runner_conc_init(struct runner_conc *, unsigned initial, unsigned max);
enum runner_conc_step runner_conc_feedback(struct runner_conc *,
    enum runner_conc_event, unsigned busy, unsigned initial, unsigned max);

/* runner_dest.c */
void runner_dest_init(struct runner *);
void runner_dest_destroy(struct runner *);
struct dest *runner_dest_get(struct runner *, const char *key,
    const struct cfg_scope *sc, const char *lookup, uint16_t port, bool mx,
    const struct cfg_auth *auth, int fb);
void runner_dest_enqueue(struct dest *, struct job *);
void runner_dest_putback(struct dest *, struct job *);
void runner_dest_job_move(
    struct runner *, struct job *, struct dest *, const char *why);
void runner_dest_kick(struct runner *, struct dest *);
/* The SMTP client's next hook (smtp_client_on_next): ARG the runner,
 * REQ_ARG the job about to send its dot. */
void runner_dest_next(void *arg, void *req_arg);
void runner_dest_idle(void *arg, const char *key);
/* D's connections in use: its requests in flight but those riding
 * behind another. */
static inline unsigned
runner_dest_busy(const struct dest *d)
{
	return d->active - d->chained;
}
void runner_dest_ready_kick(struct runner *);
void runner_dest_host_down(
    struct runner *, struct dest *, const struct smtp_result *);
void runner_dest_feedback(struct dest *, const struct smtp_result *);
/* Forgets the host status of D (NULL: of every destination), as a
 * flush asks (Postfix's postqueue -f): its jobs go out again at once. */
void runner_dest_host_clear(struct runner *, struct dest *d);
void runner_dest_reload(struct runner *);
void runner_dest_jobs_drop(struct runner *);
struct dest *runner_dest_find(struct runner *, const char *key);

/* runner_route.c */
struct dest *runner_route_dest(
    struct runner *, const char *domain, const char *sender, bool tls_relaxed);
struct dest *runner_route_fallback(struct runner *, struct dest *);

/* runner_job.c */
struct job *runner_job_add(struct runner *, struct rmsg *, size_t i,
    struct job ***jobs, size_t *njobs, size_t *ajobs);
void runner_job_submit(struct runner *, struct job *);
void runner_job_free(struct runner *, struct job *);

/* runner_cluster.c */
void runner_cluster_open(struct runner *, const struct cfg *, const char *host);
void runner_cluster_close(struct runner *);
bool runner_cluster_conn_may(struct runner *, struct dest *);
enum runner_rate {
	RUNNER_RATE_GO, /* the cluster's token: send */
	RUNNER_RATE_WAIT, /* the cluster wakes the destination */
	RUNNER_RATE_LOCAL, /* the node's own bucket decides */
};
enum runner_rate
runner_cluster_rate(struct runner *, struct dest *, struct cfg_rate *);
void runner_cluster_host_down(struct runner *, struct dest *, int64_t secs);

/* runner_result.c */
/* runner_tlsrpt.c: TLS reporting (RFC 8460), on with tlsrpt = yes. */
struct tlsrpt;
struct tlsrpt *runner_tlsrpt_new(struct runner *);
void runner_tlsrpt_free(struct tlsrpt *);
bool runner_tlsrpt_busy(const struct tlsrpt *);
void runner_tlsrpt_count(
    struct runner *, const struct dest *, const struct smtp_result *);

void runner_result_job_done(
    struct runner *, struct job *, const struct smtp_result *);
void runner_result_job_fail(
    struct runner *, struct job *, int cls, const char *dsn, const char *why);
void runner_result_commit(struct runner *, bool all);
enum queue_result
runner_result_put(struct runner *, struct queue_txn *, size_t *n, size_t *ends);
void runner_result_done(struct runner *, size_t n, enum queue_result);
enum queue_result runner_result_txn_commit(struct runner *, struct queue_txn *);
void runner_result_msg_done(struct runner *, uint64_t id);
int64_t runner_result_backoff(const struct cfg_scope *, uint32_t attempts);
void runner_result_format_delay(char *buf, size_t len, double secs);

/* runner_http.c */
void runner_http_start(struct runner *, const struct cfg *);
void runner_http_reload(struct runner *);
int runner_http_reload_check(
    const struct runner *, const struct cfg *n, char *err, size_t errlen);
void runner_http_result(struct runner *, const struct queue_msg *,
    const struct queue_rcpt *, enum queue_rcpt_state, const char *dsn,
    const char *why);
void runner_http_tally(struct queue_txn *, const struct pres *);
void runner_http_stop(struct runner *);

#endif
