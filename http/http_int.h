/*
 * http_int.h - private to http/: what struct http_stats keeps
 * (http_stats.c), the server and one request as the pages see them
 * (http_server.c), and the writers the pages share: Prometheus samples
 * (http_metrics.c), JSON and HTML text (http_summary.c, http_page.c).
 */
#ifndef RELAYQ_HTTP_INT_H
#define RELAYQ_HTTP_INT_H

#include <event2/buffer.h>

#include "http.h"

/* ---- what the status page keeps (http_stats.c) ---- */

#define HTTP_FAIL_MAX 50 /* failures kept for the status page */
#define HTTP_ERR_MAX 1024 /* domains whose last error is kept */
extern const double http_delay_le[HTTP_DELAY_NB];

/* One failure (deferred or bounced) of the last fifty. */
struct http_fail {
	int64_t time;
	enum cfg_class cls;
	enum http_result res;
	char qid[17];
	char rcpt[256];
	char dsn[16];
	char why[300];
};

/* A destination domain's last error. */
struct http_err {
	char domain[256];
	int64_t time;
	char dsn[16];
	char why[300];
	int next; /* in its bucket, -1: none */
	bool used;
};

/* HTTP_RING_STEP seconds of the status page's charts. */
struct http_slot {
	int64_t t; /* its start (a multiple of HTTP_RING_STEP), 0: unused */
	uint32_t n[HTTP_NRESULT]; /* results recorded in it */
	bool sampled; /* msgs holds the queue at its end */
	uint64_t msgs[CFG_NCLASS];
};

struct http_stats {
	struct http_fail fails[HTTP_FAIL_MAX]; /* a ring: fnext the oldest */
	size_t nfails, fnext;
	struct http_err errs[HTTP_ERR_MAX]; /* evicted in turn (evict) */
	int buckets[2 * HTTP_ERR_MAX]; /* by domain hash, -1: empty */
	size_t evict;
	struct http_slot ring[HTTP_RING];
};

/* DOMAIN's last error, or NULL. */
const struct http_err *
http_stats_err(const struct http_stats *, const char *domain);
/* The slot for time T if it holds T's step, else NULL. */
const struct http_slot *http_stats_slot(const struct http_stats *, int64_t t);

/* ---- the server, as the pages see it (http_server.c) ---- */

struct http_server {
	struct event_base *base;
	struct evhttp *http;
	struct evhttp_bound_socket *bound;
	struct http_addr addr;
	const struct cfg *cfg;
	struct queue *q;
	struct http_stats *stats;
	struct http_hooks hooks;
	struct http_conn *conns, *last; /* newest first; last: the oldest */
	unsigned nconn; /* connections evhttp has */
	unsigned nlive; /* of those, not ended (conns_trim) */
	struct event *trim; /* ends quiet ones beyond HTTP_CONN_MAX */
	bool fd_short; /* paused for want of descriptors */
	int64_t fd_warned; /* when that was last logged */
	struct event *resume; /* ends the pause */
	struct queue_oldest oldest; /* the oldest-message cursors */
	int64_t started; /* the process's start, unix seconds */
};

/* What a page handler is given and fills. */
struct http_req {
	struct http_server *srv;
	const char *query; /* the raw query string, or NULL */
	struct evbuffer *out; /* the body */
	const char *ctype; /* its Content-Type */
	int code; /* 200, or an error (out then holds its text) */
};

/* The most steps a request's oldest-message walk takes. */
#define HTTP_OLDEST_STEPS 100000

/* Pages: /metrics (http_metrics.c), / (http_page.c), /api/summary and
 * /api/queue (http_summary.c). */
void http_page_metrics(struct http_req *);
void http_page_status(struct http_req *);
void http_page_summary(struct http_req *);
void http_page_queue(struct http_req *);

/* Everything a page shows of the queue and the runner, read once. */
struct http_view {
	int64_t now;
	struct queue_counts counts;
	struct queue_stats st;
	uint64_t tally[QUEUE_TALLY_MAX]; /* the counters (http.h) */
	struct http_live live;
	/* messages per class by state as exported: pending, deferred,
	 * held, in flight (the deferred less those in flight) */
	uint64_t msgs[CFG_NCLASS][4];
};
/* Reads V; false (and an error reply in R) when the queue cannot be
 * read. */
bool http_view_get(struct http_req *, struct http_view *v);
extern const char *const http_mstate_names[4];

/* The "daemon" member of /api/summary into B: in flight, connections,
 * destinations, failures, the charts' data (http_summary.c). */
void http_summary_daemon(
    struct http_req *, const struct http_view *, struct evbuffer *b);

/* ---- text writers ---- */

/* Appends the string literal LIT to B. */
#define HTTP_ADD(b, lit) evbuffer_add((b), (lit), sizeof(lit) - 1)

/* Appends N bytes at P to the evbuffer ARG: the rq_put_fn the
 * shared writers (rq_json_str, queue_msg_json) are given. */
void http_put(void *arg, const char *p, size_t n);
/* S as a JSON string (NULL: null); bytes that are not UTF-8 as the
 * code points of the same value, as mailq --json writes them. */
void http_json_str(struct evbuffer *, const char *s);
/* S with & < > " ' escaped for HTML text and attributes. */
void http_html_str(struct evbuffer *, const char *s);
/* A Prometheus label value: \ " and newline escaped. */
void http_prom_label(struct evbuffer *, const char *s);
/* A sample value as Prometheus reads it (integers exactly). */
void http_prom_value(struct evbuffer *, double v);

#endif
