/*
 * http.h - the daemon's HTTP face: a small read-only server on
 * libevent's evhttp that serves /metrics (Prometheus text format 0.0.4),
 * / (a status page: HTML, CSS and inline SVG drawn here, nothing
 * fetched from elsewhere), /api/summary and /api/queue (JSON), and the
 * summary builder `relayq summary --json` shares with /api/summary.
 *
 * What it serves comes from the queue (its counts, its tallies and
 * short, bounded read transactions: never a walk of the whole queue per
 * request), from what the runner keeps for the status page in a struct
 * http_stats (updated where results are recorded), and from what only
 * the runner knows, asked through struct http_hooks.  It knows nothing
 * of the runner or the SMTP client, and never writes to the queue: the
 * runner adds its results to the queue's tallies (HTTP_TALLY_*).
 *
 * Hostile clients: beyond HTTP_CONN_MAX connections the ones quiet
 * longest are ended, and the listener stops accepting while twice that
 * many are open (the ended ones not yet gone) or fewer than
 * HTTP_FD_RESERVE descriptors are left; a request line and headers of at
 * most
 * HTTP_HEADERS_MAX bytes, no body, a whole request within
 * HTTP_REQUEST_SECS of the connection (or of the last reply), GET and
 * HEAD only.
 *
 * Ownership: http_server_new() returns a server freed with
 * http_server_free(); the event_base, the queue, the cfg (until the next
 * http_server_cfg_set()) and the stats must outlive it.  The stats are
 * the runner's (http_stats_new/free), so they outlive a reload.
 */
#ifndef RELAYQ_HTTP_H
#define RELAYQ_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "cfg.h"
#include "queue.h"

struct event_base;
struct evbuffer;
struct http_server;
struct http_stats;

#define HTTP_CONN_MAX 64 /* connections kept at once (see above) */
#define HTTP_FD_RESERVE 128 /* descriptors left for everything else */
#define HTTP_HEADERS_MAX 8192 /* request line and headers, bytes */
#define HTTP_REQUEST_SECS 10 /* to send a whole request */
#define HTTP_IDLE_SECS 30 /* a kept-alive connection after a reply */

/* ---- results, counted (tallies) and kept for the page (http_stats.c) ---- */

/* What became of a recipient's delivery attempt. */
enum http_result { HTTP_SENT, HTTP_DEFERRED, HTTP_BOUNCED };
#define HTTP_NRESULT 3

/*
 * The metrics' counters are tallies of the queue (queue_tally_add), each
 * added to in the transaction that commits its events, so they survive
 * a reload and a restart: intake's (QTALLY_INTAKE), expiry's notices
 * (QTALLY_DSN + the event, in the order delay, failure, success,
 * relayed) and, from QTALLY_RUNNER on, the delivery results the runner
 * commits, per class: by result, the final ones (sent, bounced) by delay
 * bucket (HTTP_DELAY_NB upper bounds, then +Inf) and the sum of their
 * delays in milliseconds.
 */
#define HTTP_DELAY_NB 16 /* delay histogram buckets, +Inf aside */
#define HTTP_TALLY_CLASS (HTTP_NRESULT + HTTP_DELAY_NB + 2)
#define HTTP_TALLY_RESULT(c, k) (QTALLY_RUNNER + (c)*HTTP_TALLY_CLASS + (k))
#define HTTP_TALLY_DELAY(c, b) (HTTP_TALLY_RESULT(c, HTTP_NRESULT) + (b))
#define HTTP_TALLY_DELAY_MS(c) HTTP_TALLY_DELAY(c, HTTP_DELAY_NB + 1)
_Static_assert(HTTP_TALLY_DELAY_MS(CFG_NCLASS - 1) < QTALLY_FINAL,
    "the runner's tallies fit below the others' final results");
/* The delay bucket (0 .. HTTP_DELAY_NB) of a final result DELAY_US
 * microseconds after its message's arrival. */
unsigned http_delay_bucket(int64_t delay_us);

/* Makes the (empty) record of a daemon started now; never fails. */
struct http_stats *http_stats_new(void);
void http_stats_free(struct http_stats *);

/*
 * Records one result of a recipient of class CLS at NOW (microseconds)
 * for the status page:
 * the rate ring, and for a failure the last fifty and its domain's last
 * error.  QID, RCPT, DSN and WHY are copied (bounded).
 */
void http_stats_result(struct http_stats *, enum cfg_class cls,
    enum http_result res, int64_t now_us, const char *qid, const char *rcpt,
    const char *dsn, const char *why);

/* Records the queue's messages per class at NOW (seconds) for the
 * status page's chart (the runner calls it every HTTP_RING_STEP). */
#define HTTP_RING_STEP 10 /* seconds a point of the charts covers */
#define HTTP_RING 360 /* points: an hour */
void http_stats_sample(
    struct http_stats *, const uint64_t msgs[CFG_NCLASS], int64_t now);

/* ---- what only the runner knows, asked per request ---- */

struct http_live {
	uint64_t in_flight[CFG_NCLASS]; /* messages the runner holds */
	unsigned conns, conns_idle; /* SMTP connections, idle ones */
	unsigned dests_down; /* destinations marked down */
	/* phase deadlines that passed: NPHASES counts, named */
	const char *const *phase_names; /* NULL name: not exported */
	const uint64_t *timeouts;
	size_t nphases;
	struct queue_intake_stats intake; /* its rejected[] (not a tally) */
	/* cluster_redis set: the cluster's side (cluster_stats_get()) */
	bool cluster;
	bool cluster_shared; /* Redis reachable: the limits are shared */
	unsigned cluster_nodes; /* live nodes, as last counted */
	uint64_t cluster_leases, cluster_tokens; /* held, reserved now */
	uint64_t cluster_tokens_used, cluster_tokens_dropped; /* since start */
	uint64_t cluster_calls, cluster_fallbacks; /* since start */
};

struct http_hooks {
	/* Fills *LIVE (zeroed first). */
	void (*live)(void *arg, struct http_live *live);
	/* Writes DOMAIN's host status ("up", "down until 12:03:00: why",
	 * "" when unknown) into BUF. */
	void (*dest_status)(
	    void *arg, const char *domain, char *buf, size_t len);
	void *arg;
};

/* ---- the server (http_server.c) ---- */

/*
 * Binds http_listen of CFG on BASE and serves from Q, STATS and HOOKS
 * (copied).  NULL with ERR ("http_listen ADDR: cannot bind: why") when
 * the address cannot be parsed or bound.  Call it as the daemon's user
 * (a socket path is created by it).
 */
struct http_server *
http_server_new(struct event_base *, const struct cfg *, struct queue *,
    struct http_stats *, const struct http_hooks *, char *err, size_t errlen);
/* Takes a reloaded CFG (the token, the queuewarn times): http_listen
 * itself changes only with a restart. */
void http_server_cfg_set(struct http_server *, const struct cfg *);
/* Closes every connection and the listener (removes a socket file). */
void http_server_free(struct http_server *);

/*
 * The checks check-config, `run` and a reload make (runner_cfg_prepare):
 * http_listen parses, and anything but loopback or a socket path needs
 * http_token.  0, or -1 with ERR "FILE:LINE: message".
 */
int http_cfg_check(const struct cfg *, char *err, size_t errlen);
/* The same check for the listener LISTEN, which a reload keeps: a new
 * config may not drop the token of a listener that is not loopback. */
int http_cfg_check_at(
    const struct cfg *, const char *listen, char *err, size_t errlen);

/* ---- the summary (http_summary.c) ---- */

/*
 * Writes the queue's summary as one JSON object (`relayq summary
 * --json`, and /api/summary without its "daemon" member): per class the
 * messages by state, the recipients by state, bytes, the oldest message
 * and when its queuewarn and queuereturn fall due; the recipients not
 * yet done by destination domain and age (qshape's buckets), the TOP
 * biggest domains (SIZE_MAX: all), and "daemon": null (what the daemon
 * adds there is its own).  OLDEST carries the walk's cursors from call
 * to call (zeroed at first) and STEPS bounds it (SIZE_MAX for the
 * command).  Q NULL: no queue yet (an empty one).  Returns QUEUE_OK or
 * the read error.
 */
enum queue_result
http_summary_json(struct evbuffer *out, struct queue *, const struct cfg *,
    int64_t now, size_t top, struct queue_oldest *oldest, size_t steps);

/*
 * The biggest destination domains (recipients not yet done), at most
 * TOP, as qshape shows them (the page, the summaries and `relayq
 * summary`): sorted by count, then name, each with its recipients by
 * age in minutes (the HTTP_AGE_NB buckets of http_age_buckets, whose
 * last is open).  TOT gets the totals; *N how many rows; *QR the read
 * error.  The array and its names are freed with http_domains_free().
 */
#define HTTP_AGE_NB 10 /* age buckets: http_age_buckets[], then beyond */
extern const int http_age_buckets[HTTP_AGE_NB - 1]; /* minutes, qshape's */
struct http_domain {
	char *name;
	uint64_t n[HTTP_AGE_NB + 1]; /* [0] total, then by age bucket */
};
struct http_domain *http_domains_get(struct queue *, int64_t now, size_t top,
    size_t *n, uint64_t tot[HTTP_AGE_NB + 1], enum queue_result *qr);
void http_domains_free(struct http_domain *, size_t n);

/* ---- pure parsers (http_parse.c): unit-tested and fuzzed ---- */

/* A parsed http_listen. */
struct http_addr {
	bool unix_path; /* a socket path (path set) */
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char host[64]; /* numeric address; "" for every address */
	uint16_t port;
	bool loopback; /* 127/8, ::1, localhost, or a socket path */
};
/*
 * Parses http_listen S: "/path" (a unix socket), "HOST:PORT" with HOST
 * an IPv4 address, "localhost" or empty (every address), "[IPv6]:PORT".
 * 0, or -1 with *WHY.
 */
int http_addr_parse(const char *s, struct http_addr *, const char **why);

/*
 * Whether the Authorization header value AUTH (NULL: none) carries
 * TOKEN: "Bearer TOKEN", or "Basic" with TOKEN as the password (any
 * user: what a browser can send).  Compares in constant time.
 */
bool http_auth_ok(const char *auth, const char *token);

/*
 * Whether Host header value HOST (NULL: none, as HTTP/1.0 clients send)
 * names what a listener without a token answers: an IPv4 or [IPv6]
 * literal, "localhost" or a name under it (RFC 6761), or MYNAME (the
 * daemon's hostname), any of them with a :port.  A page a browser got
 * from elsewhere and that DNS rebinding pointed at 127.0.0.1 carries its
 * own name, and is refused (the queue's addresses are not its to read).
 */
bool http_host_ok(const char *host, const char *myname);

/*
 * Parses an /api/queue query value: a class ("urgent", ...; -1 when
 * NULL), a state ("pending", "deferred", "delivered", "bounced",
 * "held"; -1 when NULL, QUEUE_NSTATE for held), a limit (1..1000), a
 * queue ID to start after.  false when the value is not one.
 */
bool http_query_class(const char *s, int *cls);
bool http_query_state(const char *s, int *state);
bool http_query_limit(const char *s, size_t *limit);
bool http_query_after(const char *s, uint64_t *id);

#endif
