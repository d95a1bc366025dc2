/*
 * http_summary.c - the queue as JSON: the summary `relayq summary
 * --json` prints and /api/summary serves (one builder, so they match),
 * the daemon's own part of /api/summary (in flight, connections,
 * destinations with their last error and host status, the last
 * failures, an hour of the charts' data), and /api/queue, the listing
 * paged like `mailq --json`; plus what every page reads first
 * (http_view_get) and the destination domains by size.
 *
 * Public: http_summary_json(), http_domains_get(), http_domains_free(),
 * http_age_buckets (`relayq summary` shows the same table as text).
 * http-private: http_view_get(), http_summary_daemon(),
 * http_page_summary(), http_page_queue(), http_mstate_names.
 *
 * Costs: the counts, the message states and the oldest messages are
 * short read transactions (the oldest-message walk bounded per request);
 * the domains are the queue's per-domain counts (what `relayq summary`
 * reads: proportional to the domains and minutes with mail waiting,
 * never to the messages); /api/queue reads at most LIST_SCAN messages
 * and LIST_RCPTS recipients a request (short transactions of a few
 * hundred messages) and says where to go on ("next").
 */
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "http_int.h"

#define LIST_SCAN 20000 /* messages an /api/queue request looks at */
#define LIST_RCPTS 100000 /* recipients it reads */
#define DAEMON_DOMAINS 20 /* destinations in the daemon's part */

const char *const http_mstate_names[4] = { "pending", "deferred", "held",
	"in_flight" };
const int http_age_buckets[HTTP_AGE_NB - 1] = { 5, 10, 20, 40, 80, 160, 320,
	640, 1280 };

/* Reads what every page shows; see http_int.h. */
bool
http_view_get(struct http_req *r, struct http_view *v)
{
	struct http_server *srv = r->srv;

	memset(v, 0, sizeof(*v));
	v->now = rq_now();
	if (queue_counts_get(srv->q, &v->counts) != QUEUE_OK ||
	    queue_stats_get(srv->q, &v->st) != QUEUE_OK ||
	    queue_tallies_get(srv->q, v->tally) != QUEUE_OK) {
		r->code = 503;
		evbuffer_add_printf(r->out, "cannot read the queue\n");
		return false;
	}
	if (srv->hooks.live != NULL)
		srv->hooks.live(srv->hooks.arg, &v->live);
	for (int c = 0; c < CFG_NCLASS; c++) {
		uint64_t *m = v->msgs[c], f = v->live.in_flight[c];
		int from = v->st.exact ? QMS_DEFERRED : QMS_PENDING;

		m[0] = v->st.msgs[c][QMS_PENDING];
		m[1] = v->st.msgs[c][QMS_DEFERRED];
		m[2] = v->st.msgs[c][QMS_HELD];
		/* every message in flight was taken: counted as deferred */
		if (f > m[from])
			f = m[from];
		m[from] -= f;
		m[3] = f;
	}
	return true;
}

/* ---- destination domains by size ---- */

struct dtab {
	struct http_domain *v; /* open addressing */
	size_t cap, used;
	int64_t now_min;
	uint64_t *tot;
};

/* FNV-1a of a domain. */
static uint64_t
str_hash(const char *s)
{
	uint64_t h = 1469598103934665603ull;

	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

/* DOMAIN's row of T, added when new. */
static struct http_domain *
dtab_row(struct dtab *t, const char *domain)
{
	size_t i;

	if ((t->used + 1) * 2 > t->cap) {
		struct http_domain *old = t->v;
		size_t ocap = t->cap;

		t->cap = ocap ? ocap * 2 : 256;
		t->v = xcalloc(t->cap, sizeof(*t->v));
		for (size_t k = 0; k < ocap; k++) {
			if (old[k].name == NULL)
				continue;
			i = str_hash(old[k].name) & (t->cap - 1);
			while (t->v[i].name != NULL)
				i = (i + 1) & (t->cap - 1);
			t->v[i] = old[k];
		}
		free(old);
	}
	i = str_hash(domain) & (t->cap - 1);
	while (t->v[i].name != NULL) {
		if (strcmp(t->v[i].name, domain) == 0)
			return &t->v[i];
		i = (i + 1) & (t->cap - 1);
	}
	t->v[i].name = xstrdup(domain);
	t->used++;
	return &t->v[i];
}

/* One (domain, arrival minute) count: into its age bucket. */
static void
dtab_cb(const char *domain, int64_t minute, uint64_t n, void *arg)
{
	struct dtab *t = arg;
	struct http_domain *d = dtab_row(t, domain[0] ? domain : "(none)");
	int64_t age = t->now_min - minute;
	int b = 0;

	while (b < HTTP_AGE_NB - 1 && age >= http_age_buckets[b])
		b++;
	d->n[0] += n;
	d->n[b + 1] += n;
	t->tot[0] += n;
	t->tot[b + 1] += n;
}

/* Orders domains by count, then name. */
static int
dom_cmp(const void *a, const void *b)
{
	const struct http_domain *x = a, *y = b;

	if (x->n[0] != y->n[0])
		return x->n[0] > y->n[0] ? -1 : 1;
	return strcmp(x->name, y->name);
}

/* The TOP biggest destination domains by recipients waiting, with
 * their age buckets. */
struct http_domain *
http_domains_get(struct queue *q, int64_t now, size_t top, size_t *n,
    uint64_t tot[HTTP_AGE_NB + 1], enum queue_result *qr)
{
	struct dtab t;
	struct http_domain *rows;
	size_t k = 0;

	memset(&t, 0, sizeof(t));
	memset(tot, 0, (HTTP_AGE_NB + 1) * sizeof(*tot));
	t.now_min = now / 60;
	t.tot = tot;
	*qr = queue_domain_counts_get(q, dtab_cb, &t);
	rows = xcalloc(t.used + 1, sizeof(*rows));
	for (size_t i = 0; i < t.cap; i++)
		if (t.v[i].name != NULL)
			rows[k++] = t.v[i];
	free(t.v);
	qsort(rows, k, sizeof(*rows), dom_cmp);
	for (size_t i = top; i < k; i++)
		free(rows[i].name);
	*n = k < top ? k : top;
	return rows;
}

/* Frees what http_domains_get() returned. */
void
http_domains_free(struct http_domain *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i].name);
	free(v);
}

/* ---- the summary ---- */

/* A unix time, or null when 0. */
static void
json_time(struct evbuffer *b, int64_t t)
{
	if (t > 0)
		evbuffer_add_printf(b, "%lld", (long long)t);
	else
		HTTP_ADD(b, "null");
}

/* One class of the summary. */
static void
summary_class(struct evbuffer *b, const struct cfg *cfg, int c, int64_t now,
    const struct queue_counts *cn, const struct queue_stats *st,
    const struct queue_oldest *o)
{
	const struct cfg_scope *g = cfg_scope(cfg, NULL);
	bool have = o->found[c] && o->arrival[c] > 0;

	evbuffer_add_printf(
	    b, "{\"class\":\"%s\",\"messages\":{", cfg_class_name(c));
	for (int s = 0; s < QUEUE_NMSTATE; s++)
		evbuffer_add_printf(b, "%s\"%s\":%llu", s ? "," : "",
		    http_mstate_names[s], (unsigned long long)st->msgs[c][s]);
	evbuffer_add_printf(b, "},\"messages_total\":%llu,\"recipients\":{",
	    (unsigned long long)cn->msgs[c]);
	for (int s = 0; s < QUEUE_NSTATE; s++)
		evbuffer_add_printf(b, "%s\"%s\":%llu", s ? "," : "",
		    queue_state_name(s), (unsigned long long)cn->rcpts[c][s]);
	evbuffer_add_printf(b, "},\"bytes\":%llu,\"oldest_arrival\":",
	    (unsigned long long)cn->bytes[c]);
	json_time(b, have ? o->arrival[c] : 0);
	HTTP_ADD(b, ",\"oldest_age\":");
	if (have)
		evbuffer_add_printf(b, "%lld",
		    (long long)(now > o->arrival[c] ? now - o->arrival[c] : 0));
	else
		HTTP_ADD(b, "null");
	evbuffer_add_printf(b,
	    ",\"queuewarn\":%lld,\"queuereturn\":%lld,\"warned\":%s"
	    ",\"warn_due\":",
	    (long long)cfg_time(g, CFG_T_QUEUEWARN, c, false),
	    (long long)cfg_time(g, CFG_T_QUEUERETURN, c, false),
	    have && o->warned[c] ? "true" : "false");
	json_time(b, have && !o->warned[c] ? o->warn_at[c] : 0);
	HTTP_ADD(b, ",\"return_due\":");
	json_time(b, have ? o->return_at[c] : 0);
	HTTP_ADD(b, "}");
}

/* The summary with DAEMON (NULL: null) as its last member. */
static enum queue_result
summary_write(struct evbuffer *b, struct queue *q, const struct cfg *cfg,
    int64_t now, size_t top, struct queue_oldest *o, size_t steps,
    void (*daemon)(struct evbuffer *, void *), void *arg)
{
	struct queue_counts cn;
	struct queue_stats st;
	struct http_domain *rows;
	uint64_t tot[11];
	size_t n;
	enum queue_result qr;

	memset(&cn, 0, sizeof(cn));
	memset(&st, 0, sizeof(st));
	memset(tot, 0, sizeof(tot));
	rows = NULL;
	n = 0;
	for (int c = 0; c < CFG_NCLASS; c++) {
		o->found[c] = true;
		o->arrival[c] = 0;
	}
	if (q != NULL) { /* NULL: no queue yet, an empty one */
		if ((qr = queue_counts_get(q, &cn)) != QUEUE_OK ||
		    (qr = queue_stats_get(q, &st)) != QUEUE_OK ||
		    (qr = queue_oldest_get(q, &st, o, steps)) != QUEUE_OK)
			return qr;
		rows = http_domains_get(q, now, top, &n, tot, &qr);
		if (qr != QUEUE_OK) {
			http_domains_free(rows, n);
			return qr;
		}
	}
	evbuffer_add_printf(b, "{\"time\":%lld,\"classes\":[", (long long)now);
	for (int c = 0; c < CFG_NCLASS; c++) {
		if (c > 0)
			HTTP_ADD(b, ",");
		summary_class(b, cfg, c, now, &cn, &st, o);
	}
	evbuffer_add_printf(b, "],\"held\":%llu,\"age_buckets\":[",
	    (unsigned long long)cn.held);
	for (int i = 0; i < 9; i++)
		evbuffer_add_printf(
		    b, "%s%d", i ? "," : "", http_age_buckets[i]);
	evbuffer_add_printf(b, "],\"recipients_waiting\":%llu,\"by_age\":[",
	    (unsigned long long)tot[0]);
	for (int i = 1; i <= 10; i++)
		evbuffer_add_printf(
		    b, "%s%llu", i > 1 ? "," : "", (unsigned long long)tot[i]);
	HTTP_ADD(b, "],\"domains\":[");
	for (size_t i = 0; i < n; i++) {
		evbuffer_add_printf(b, "%s{\"domain\":", i ? "," : "");
		http_json_str(b, rows[i].name);
		evbuffer_add_printf(b, ",\"recipients\":%llu,\"by_age\":[",
		    (unsigned long long)rows[i].n[0]);
		for (int k = 1; k <= 10; k++)
			evbuffer_add_printf(b, "%s%llu", k > 1 ? "," : "",
			    (unsigned long long)rows[i].n[k]);
		HTTP_ADD(b, "]}");
	}
	http_domains_free(rows, n);
	HTTP_ADD(b, "],\"daemon\":");
	if (daemon != NULL)
		daemon(b, arg);
	else
		HTTP_ADD(b, "null");
	HTTP_ADD(b, "}\n");
	return QUEUE_OK;
}

/* Writes the summary `relayq summary --json` prints; see http.h. */
enum queue_result
http_summary_json(struct evbuffer *out, struct queue *q, const struct cfg *cfg,
    int64_t now, size_t top, struct queue_oldest *oldest, size_t steps)
{
	return summary_write(out, q, cfg, now, top, oldest, steps, NULL, NULL);
}

/* ---- the daemon's part ---- */

/* What daemon_write() is given. */
struct daemon_arg {
	struct http_req *r;
	const struct http_view *v;
};

/* The daemon's part of /api/summary (see http_summary_daemon()). */
static void
daemon_write(struct evbuffer *b, void *arg)
{
	struct daemon_arg *a = arg;

	http_summary_daemon(a->r, a->v, b);
}

/* Writes the daemon's part of /api/summary into B. */
void
http_summary_daemon(
    struct http_req *r, const struct http_view *v, struct evbuffer *b)
{
	struct http_server *srv = r->srv;
	const struct http_stats *s = srv->stats;
	struct http_domain *rows;
	uint64_t tot[11];
	size_t n;
	enum queue_result qr;
	char status[512];
	int64_t start = v->now - v->now % HTTP_RING_STEP -
	    (HTTP_RING - 1) * HTTP_RING_STEP;

	evbuffer_add_printf(b,
	    "{\"version\":\"%s\",\"started\":%lld,\"messages\":{",
	    RELAYQ_VERSION, (long long)srv->started);
	for (int c = 0; c < CFG_NCLASS; c++) {
		evbuffer_add_printf(
		    b, "%s\"%s\":{", c ? "," : "", cfg_class_name(c));
		for (int k = 0; k < 4; k++)
			evbuffer_add_printf(b, "%s\"%s\":%llu", k ? "," : "",
			    http_mstate_names[k],
			    (unsigned long long)v->msgs[c][k]);
		HTTP_ADD(b, "}");
	}
	evbuffer_add_printf(b,
	    "},\"connections\":{\"open\":%u,\"idle\":%u},"
	    "\"destinations_down\":%u,\"destinations\":[",
	    v->live.conns - v->live.conns_idle, v->live.conns_idle,
	    v->live.dests_down);
	rows = http_domains_get(srv->q, v->now, DAEMON_DOMAINS, &n, tot, &qr);
	for (size_t i = 0; i < n; i++) {
		const struct http_err *e = http_stats_err(s, rows[i].name);

		status[0] = '\0';
		if (srv->hooks.dest_status != NULL)
			srv->hooks.dest_status(srv->hooks.arg, rows[i].name,
			    status, sizeof(status));
		evbuffer_add_printf(b, "%s{\"domain\":", i ? "," : "");
		http_json_str(b, rows[i].name);
		evbuffer_add_printf(b, ",\"recipients\":%llu,\"status\":",
		    (unsigned long long)rows[i].n[0]);
		http_json_str(b, status[0] ? status : NULL);
		HTTP_ADD(b, ",\"last_error\":");
		http_json_str(b, e ? e->why : NULL);
		HTTP_ADD(b, ",\"last_error_time\":");
		json_time(b, e ? e->time : 0);
		HTTP_ADD(b, "}");
	}
	http_domains_free(rows, n);
	HTTP_ADD(b, "],\"failures\":[");
	for (size_t i = 0; i < s->nfails; i++) {
		/* newest first */
		const struct http_fail *f =
		    &s->fails[(s->fnext + HTTP_FAIL_MAX - 1 - i) %
			HTTP_FAIL_MAX];

		evbuffer_add_printf(b,
		    "%s{\"time\":%lld,\"queue_id\":\"%s\",\"class\":\"%s\","
		    "\"status\":\"%s\",\"recipient\":",
		    i ? "," : "", (long long)f->time, f->qid,
		    cfg_class_name(f->cls),
		    f->res == HTTP_BOUNCED ? "bounced" : "deferred");
		http_json_str(b, f->rcpt);
		HTTP_ADD(b, ",\"dsn\":");
		http_json_str(b, f->dsn);
		HTTP_ADD(b, ",\"reason\":");
		http_json_str(b, f->why);
		HTTP_ADD(b, "}");
	}
	evbuffer_add_printf(b,
	    "],\"history\":{\"step\":%d,\"start\":%lld,\"queue\":{",
	    HTTP_RING_STEP, (long long)start);
	for (int c = 0; c < CFG_NCLASS; c++) {
		evbuffer_add_printf(
		    b, "%s\"%s\":[", c ? "," : "", cfg_class_name(c));
		for (int i = 0; i < HTTP_RING; i++) {
			const struct http_slot *sl = http_stats_slot(
			    s, start + (int64_t)i * HTTP_RING_STEP);

			if (i > 0)
				HTTP_ADD(b, ",");
			if (sl != NULL && sl->sampled)
				evbuffer_add_printf(
				    b, "%llu", (unsigned long long)sl->msgs[c]);
			else
				HTTP_ADD(b, "null");
		}
		HTTP_ADD(b, "]");
	}
	HTTP_ADD(b, "}");
	for (int k = 0; k < HTTP_NRESULT; k++) {
		static const char *const names[HTTP_NRESULT] = { "sent",
			"deferred", "bounced" };

		evbuffer_add_printf(b, ",\"%s\":[", names[k]);
		for (int i = 0; i < HTTP_RING; i++) {
			const struct http_slot *sl = http_stats_slot(
			    s, start + (int64_t)i * HTTP_RING_STEP);

			evbuffer_add_printf(
			    b, "%s%u", i ? "," : "", sl ? sl->n[k] : 0);
		}
		HTTP_ADD(b, "]");
	}
	HTTP_ADD(b, "}}");
}

/* The value of query parameter NAME in R, or NULL. */
static const char *
query_get(struct evkeyvalq *q, const char *name)
{
	return evhttp_find_header(q, name);
}

/* GET /api/summary[?top=N]: the summary with the daemon's part. */
void
http_page_summary(struct http_req *r)
{
	struct http_server *srv = r->srv;
	struct evkeyvalq q;
	const char *top = NULL;
	size_t ntop = SIZE_MAX;
	enum queue_result qr;
	struct http_view v;
	struct daemon_arg da = { r, &v };

	TAILQ_INIT(&q);
	if (r->query != NULL && evhttp_parse_query_str(r->query, &q) == 0)
		top = query_get(&q, "top");
	if (top != NULL) {
		char *end;
		unsigned long val = strtoul(top, &end, 10);

		if (*top == '\0' || *end != '\0' || val == 0 || val > 1000000) {
			r->code = 400;
			evbuffer_add_printf(r->out, "bad top\n");
			evhttp_clear_headers(&q);
			return;
		}
		ntop = val;
	}
	evhttp_clear_headers(&q);
	if (!http_view_get(r, &v))
		return;
	r->ctype = "application/json";
	qr = summary_write(r->out, srv->q, srv->cfg, v.now, ntop, &srv->oldest,
	    HTTP_OLDEST_STEPS, daemon_write, &da);
	if (qr != QUEUE_OK) {
		r->code = 503;
		evbuffer_drain(r->out, evbuffer_get_length(r->out));
		evbuffer_add_printf(r->out, "cannot read the queue\n");
	}
}

/* ---- /api/queue ---- */

struct list {
	struct evbuffer *b;
	struct queue_filter f; /* mailq's filters (no age) */
	size_t limit, n, scanned, rcpts;
	uint64_t last; /* the last message looked at */
	bool full; /* limit reached, or the scan budget */
	bool more; /* and a message follows (the page has a "next") */
};

/* queue_msgs_scan's callback: lists M when it matches; at the limit or
 * the budget, looks whether another message follows, and stops. */
static bool
list_cb(const struct queue_msg *m, void *arg)
{
	struct list *l = arg;

	if (l->full) {
		l->more = true;
		return false;
	}
	l->last = m->id;
	l->scanned++;
	l->rcpts += m->nrcpt;
	if (queue_msg_matches(&l->f, m)) {
		evbuffer_add_printf(l->b, "%s\n", l->n ? "," : "");
		queue_msg_json(m, http_put, l->b);
		l->n++;
	}
	if (l->n >= l->limit || l->scanned >= LIST_SCAN ||
	    l->rcpts >= LIST_RCPTS)
		l->full = true;
	return true;
}

/* GET /api/queue?class=&state=&domain=&limit=&after=: messages in id
 * (= arrival) order, as mailq --json writes them, with "next" (the
 * `after` of the next page, or null when no message follows). */
void
http_page_queue(struct http_req *r)
{
	struct evkeyvalq q;
	struct list l;
	uint64_t after;
	char next[17];
	bool ok;

	memset(&l, 0, sizeof(l));
	TAILQ_INIT(&q);
	if (r->query != NULL && evhttp_parse_query_str(r->query, &q) != 0) {
		r->code = 400;
		evbuffer_add_printf(r->out, "bad query string\n");
		return;
	}
	ok = http_query_class(query_get(&q, "class"), &l.f.cls) &&
	    http_query_state(query_get(&q, "state"), &l.f.state) &&
	    http_query_limit(query_get(&q, "limit"), &l.limit) &&
	    http_query_after(query_get(&q, "after"), &after);
	l.f.domain = query_get(&q, "domain");
	if (l.f.domain != NULL && l.f.domain[0] == '\0')
		l.f.domain = NULL;
	if (!ok) {
		r->code = 400;
		evbuffer_add_printf(r->out,
		    "bad parameter: class (urgent, normal, non-urgent, dsn), "
		    "state (pending, deferred, delivered, bounced, held), "
		    "limit (1 to 1000), after (a queue ID)\n");
		evhttp_clear_headers(&q);
		return;
	}
	r->ctype = "application/json";
	l.b = r->out;
	HTTP_ADD(r->out, "{\"messages\":[");
	if (after != UINT64_MAX) /* the last ID: nothing after it */
		queue_msgs_scan(r->srv->q, after + 1, list_cb, &l);
	HTTP_ADD(r->out, "\n],\"next\":");
	if (l.more) {
		queue_id_format(l.last, next);
		evbuffer_add_printf(r->out, "\"%s\"}\n", next);
	} else {
		HTTP_ADD(r->out, "null}\n");
	}
	evhttp_clear_headers(&q);
}
