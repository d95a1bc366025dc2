/*
 * runner_http.c - the runner's side of the HTTP listener (http/): it
 * starts the server at start-up (a bind failure stops the daemon), gives
 * it what only the runner knows (messages in flight, connections, hosts
 * down, phase timeouts, notices and intake counts; a domain's host
 * status), counts each recorded result, samples the queue for the
 * charts, and hands the server a reloaded config.
 *
 * Runner-private: runner_http_start(), runner_http_reload(),
 * runner_http_result(), runner_http_tally(), runner_http_stop().
 *
 * Invariants: with http_listen empty nothing here costs anything but
 * the message-state recount a queue written by an older relayq needs
 * once (queue_stats_rebuild, at every start: a no-op once done) and
 * the tallies of each result, added in the transaction that commits it
 * (so the counters of /metrics are what the queue committed, across
 * reloads and restarts); what the status page keeps (struct http_stats)
 * lives as long as the daemon, so a reload keeps it; what a request asks of the runner is O(messages in memory
 * + destinations), both bounded by the runner's budgets.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/event.h>

#include "cluster.h"
#include "expiry.h"
#include "http.h"
#include "runner_int.h"

/* What the runner keeps for the listener. */
struct runner_http {
	struct http_server *srv;
	struct http_stats *stats;
	struct event *sample; /* the charts' queue sample */
	uint64_t timeouts[SMTP_NPHASE];
	char listen[256]; /* as started: a change needs a restart */
};

/* The label of each phase in relayq_smtp_phase_timeouts_total. */
static const char *const phase_label[SMTP_NPHASE] = {
	[SMTP_PH_TOKEN] = "token",
	[SMTP_PH_CONNECT] = "connect",
	[SMTP_PH_GREETING] = "greeting",
	[SMTP_PH_EHLO] = "ehlo",
	[SMTP_PH_HELO] = "helo",
	[SMTP_PH_STARTTLS] = "starttls",
	[SMTP_PH_TLS] = "tls",
	[SMTP_PH_AUTH] = "auth",
	[SMTP_PH_MAIL] = "mail",
	[SMTP_PH_RCPT] = "rcpt",
	[SMTP_PH_DATA] = "data",
	[SMTP_PH_BODY] = "body",
	[SMTP_PH_DOT] = "dot",
	[SMTP_PH_RSET] = "rset",
	[SMTP_PH_QUIT] = "quit",
	[SMTP_PH_NOOP] = "noop",
};

/* What only the runner knows, for a request (struct http_hooks). */
static void
live_cb(void *arg, struct http_live *lv)
{
	struct runner *r = arg;
	struct smtp_client_stats ss;
	int64_t now = rq_now();

	for (size_t b = 0; b < RUNNER_HASH; b++)
		for (const struct rmsg *m = r->msgs[b]; m != NULL; m = m->hnext)
			if ((unsigned)m->msg->cls < CFG_NCLASS)
				lv->in_flight[m->msg->cls]++;
	smtp_client_stats_get(r->smtp, &ss);
	lv->conns = ss.conns;
	lv->conns_idle = ss.idle;
	memcpy(r->http->timeouts, ss.timeouts, sizeof(ss.timeouts));
	lv->timeouts = r->http->timeouts;
	lv->phase_names = phase_label;
	lv->nphases = SMTP_NPHASE;
	for (const struct dest *d = r->all_dests; d != NULL; d = d->next)
		if (d->down_until > now)
			lv->dests_down++;
	queue_intake_stats_get(r->qi, &lv->intake);
	if (r->cluster != NULL) {
		struct cluster_stats cs;

		cluster_stats_get(r->cluster, &cs);
		lv->cluster = true;
		lv->cluster_shared = cs.shared;
		lv->cluster_nodes = cs.live_nodes;
		lv->cluster_leases = cs.leases;
		lv->cluster_tokens = cs.tokens;
		lv->cluster_tokens_used = cs.tokens_taken;
		lv->cluster_tokens_dropped = cs.tokens_dropped;
		lv->cluster_calls = cs.calls;
		lv->cluster_fallbacks = cs.fallbacks;
	}
}

/* DOMAIN's host status: that of the destination its mail goes to now
 * (the domain itself by MX, or its relay), as far as the runner has one
 * in memory (struct http_hooks). */
static void
dest_status_cb(void *arg, const char *domain, char *buf, size_t len)
{
	struct runner *r = arg;
	struct cfg_route rt;
	const char *target;
	int64_t now = rq_now();

	cfg_route_get(r->rc->cfg, domain, "", &rt);
	target = rt.relay != NULL ? rt.relay->host : domain;
	buf[0] = '\0';
	for (const struct dest *d = r->all_dests; d != NULL; d = d->next) {
		char until[32];
		struct tm tm;
		time_t t;

		if (d->retired || d->fb != 0 || d->port != rt.port ||
		    strcasecmp(d->lookup, target) != 0)
			continue;
		if (d->down_until <= now) {
			snprintf(buf, len, "up, %u in flight%s%s", d->active,
			    rt.relay ? ", via " : "", rt.relay ? target : "");
			continue; /* another (credentials) may be down */
		}
		t = (time_t)d->down_until;
		localtime_r(&t, &tm);
		strftime(until, sizeof(until), "%H:%M:%S", &tm);
		snprintf(buf, len, "down until %s%s%s: %.300s", until,
		    rt.relay ? ", via " : "", rt.relay ? target : "",
		    d->down_why);
		return;
	}
}

/* Samples the queue for the charts, in the middle of each step. */
static void
sample_cb(evutil_socket_t fd, short what, void *arg)
{
	struct runner *r = arg;
	struct queue_counts cn;
	int64_t now = rq_now();
	struct timeval tv = {
		HTTP_RING_STEP - now % HTTP_RING_STEP + HTTP_RING_STEP / 2, 0
	};

	if (tv.tv_sec > HTTP_RING_STEP)
		tv.tv_sec -= HTTP_RING_STEP;
	if (queue_counts_get(r->q, &cn) == QUEUE_OK)
		http_stats_sample(r->http->stats, cn.msgs, now);
	evtimer_add(r->http->sample, &tv);
}

/* Counts the states of an older queue's messages once, and starts the
 * listener when http_listen is set (a failure is fatal: the admin asked
 * for it). */
void
runner_http_start(struct runner *r, const struct cfg *cfg)
{
	const char *listen = cfg_str(cfg_scope(cfg, NULL), CFG_HTTP_LISTEN);
	struct http_hooks hooks = { live_cb, dest_status_cb, r };
	char err[1024];

	queue_stats_rebuild(r->q);
	if (listen[0] == '\0')
		return;
	r->http = xcalloc(1, sizeof(*r->http));
	snprintf(r->http->listen, sizeof(r->http->listen), "%s", listen);
	r->http->stats = http_stats_new();
	r->http->srv = http_server_new(
	    r->base, cfg, r->q, r->http->stats, &hooks, err, sizeof(err));
	if (r->http->srv == NULL)
		fatal(RQ_EX_OSERR, "%s", err);
	r->http->sample = evtimer_new(r->base, sample_cb, r);
	sample_cb(-1, 0, r);
}

/* A reload: the server takes the new config (its token); a new
 * http_listen waits for a restart. */
void
runner_http_reload(struct runner *r)
{
	const char *listen = cfg_str(
	    cfg_scope(r->rc->cfg, NULL), CFG_HTTP_LISTEN);

	if (r->http == NULL) {
		if (listen[0] != '\0')
			log_warn(NULL,
			    "http_listen is set: the listener starts "
			    "with the next restart");
		return;
	}
	if (strcmp(listen, r->http->listen) != 0)
		log_warn(NULL,
		    "http_listen changed: still on %.200s until a restart",
		    r->http->listen);
	http_server_cfg_set(r->http->srv, r->rc->cfg);
}

/* Whether config N may be loaded with the listener running now (its
 * address kept until a restart); 0, or -1 with ERR. */
int
runner_http_reload_check(
    const struct runner *r, const struct cfg *n, char *err, size_t errlen)
{
	if (r->http == NULL)
		return 0;
	return http_cfg_check_at(n, r->http->listen, err, errlen);
}

/* Counts a result just queued for the commit: recipient Q of MSG is now
 * in state ST, with DSN and WHY. */
void
runner_http_result(struct runner *r, const struct queue_msg *msg,
    const struct queue_rcpt *q, enum queue_rcpt_state st, const char *dsn,
    const char *why)
{
	if (r->http == NULL)
		return;
	http_stats_result(r->http->stats, msg->cls,
	    st == RCPT_DELIVERED     ? HTTP_SENT
		: st == RCPT_BOUNCED ? HTTP_BOUNCED
				     : HTTP_DEFERRED,
	    rq_now_us(), msg->idstr, q->addr, dsn, why);
}

/* Adds result P to the queue's tallies in T, which commits it (http.h):
 * the counters of /metrics, kept with or without a listener. */
void
runner_http_tally(struct queue_txn *t, const struct pres *p)
{
	enum http_result k = p->state == RCPT_DELIVERED ? HTTP_SENT
	    : p->state == RCPT_BOUNCED			? HTTP_BOUNCED
							: HTTP_DEFERRED;

	if (p->cls >= CFG_NCLASS)
		return;
	queue_tally_add(t, HTTP_TALLY_RESULT(p->cls, k), 1);
	if (k == HTTP_DEFERRED)
		return;
	queue_tally_add(
	    t, HTTP_TALLY_DELAY(p->cls, http_delay_bucket(p->delay_us)), 1);
	if (p->delay_us > 0)
		queue_tally_add(t, HTTP_TALLY_DELAY_MS(p->cls),
		    (uint64_t)(p->delay_us / 1000));
}

/* Stops the listener and frees what it had. */
void
runner_http_stop(struct runner *r)
{
	if (r->http == NULL)
		return;
	http_server_free(r->http->srv);
	if (r->http->sample != NULL)
		event_free(r->http->sample);
	http_stats_free(r->http->stats);
	free(r->http);
	r->http = NULL;
}
