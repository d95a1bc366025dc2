/*
 * http_metrics.c - GET /metrics: the Prometheus text format, version
 * 0.0.4, with names and labels as Prometheus' naming guide says (base
 * units, _total for counters, a label's values summing to the whole),
 * and the process metrics every Prometheus client library exports
 * (their process collector, from /proc/self).  relayq(8) lists every
 * metric with its meaning.
 *
 * http-private: http_page_metrics().
 *
 * Where the numbers come from: the gauges of the queue from its counts
 * and its message-state counts (short read transactions: recomputed on
 * every scrape, so right after a restart), the oldest messages from a
 * bounded walk (a class not reached within HTTP_OLDEST_STEPS is left
 * out of that scrape, never guessed), the counters from the queue's
 * tallies (what was committed: they go on across reloads and restarts;
 * http.h), the runner's gauges and the counters that are not the
 * queue's (phase timeouts, files moved to bad/) from struct http_live.
 * Every label value a series can have is written, 0 or not, so a rate()
 * never starts from a missing series.
 */
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "http_int.h"

/* The HELP and TYPE lines of a metric family. */
static void
family(struct evbuffer *b, const char *name, const char *type, const char *help)
{
	evbuffer_add_printf(
	    b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One sample: NAME{K1="V1",...} V with NLABELS pairs of (key, value)
 * after V in the arguments. */
static void
sample(struct evbuffer *b, const char *name, double v, int nlabels, ...)
{
	va_list ap;

	evbuffer_add_printf(b, "%s", name);
	va_start(ap, nlabels);
	for (int i = 0; i < nlabels; i++) {
		const char *k = va_arg(ap, const char *);
		const char *lv = va_arg(ap, const char *);

		evbuffer_add_printf(b, "%s%s=\"", i ? "," : "{", k);
		http_prom_label(b, lv);
		HTTP_ADD(b, "\"");
	}
	va_end(ap);
	evbuffer_add_printf(b, "%s ", nlabels ? "}" : "");
	http_prom_value(b, v);
	HTTP_ADD(b, "\n");
}

/* The queue's gauges. */
static void
metrics_queue(struct http_req *r, const struct http_view *v)
{
	struct evbuffer *b = r->out;
	const struct cfg_scope *g = cfg_scope(r->srv->cfg, NULL);
	struct queue_oldest *o = &r->srv->oldest;
	bool walked = queue_oldest_get(
			  r->srv->q, &v->st, o, HTTP_OLDEST_STEPS) == QUEUE_OK;

	family(b, "relayq_queue_messages", "gauge",
	    "Messages in the queue by priority class and state: pending (not "
	    "yet taken for delivery), deferred (taken before, waiting for a "
	    "retry), held, in_flight (taken by the runner: waiting for a "
	    "connection or being delivered).");
	for (int c = 0; c < CFG_NCLASS; c++)
		for (int s = 0; s < 4; s++)
			sample(b, "relayq_queue_messages",
			    (double)v->msgs[c][s], 2, "class",
			    cfg_class_name(c), "state", http_mstate_names[s]);
	family(b, "relayq_queue_recipients", "gauge",
	    "Recipients not yet delivered or bounced, by priority class and "
	    "state: pending (never tried), deferred (tried, waiting for a "
	    "retry); those of held and in-flight messages included.");
	for (int c = 0; c < CFG_NCLASS; c++)
		for (int s = RCPT_PENDING; s <= RCPT_DEFERRED; s++)
			sample(b, "relayq_queue_recipients",
			    (double)v->counts.rcpts[c][s], 2, "class",
			    cfg_class_name(c), "state", queue_state_name(s));
	family(b, "relayq_queue_bytes", "gauge",
	    "Size of the queued messages by priority class, in bytes.");
	for (int c = 0; c < CFG_NCLASS; c++)
		sample(b, "relayq_queue_bytes", (double)v->counts.bytes[c], 1,
		    "class", cfg_class_name(c));
	family(b, "relayq_queue_oldest_age_seconds", "gauge",
	    "Age of the oldest message of the class not on hold (0: none).");
	for (int c = 0; walked && c < CFG_NCLASS; c++) {
		if (!o->found[c])
			continue; /* not reached this time: no guess */
		sample(b, "relayq_queue_oldest_age_seconds",
		    o->arrival[c] > 0 && v->now > o->arrival[c]
			? (double)(v->now - o->arrival[c])
			: 0,
		    1, "class", cfg_class_name(c));
	}
	family(b, "relayq_queuewarn_seconds", "gauge",
	    "timeout.queuewarn of the class: a delay warning is sent when a "
	    "message is this old (0: never).");
	for (int c = 0; c < CFG_NCLASS; c++)
		sample(b, "relayq_queuewarn_seconds",
		    (double)cfg_time(g, CFG_T_QUEUEWARN, c, false), 1, "class",
		    cfg_class_name(c));
	family(b, "relayq_queuereturn_seconds", "gauge",
	    "timeout.queuereturn of the class: a message this old is "
	    "returned to its sender.");
	for (int c = 0; c < CFG_NCLASS; c++)
		sample(b, "relayq_queuereturn_seconds",
		    (double)cfg_time(g, CFG_T_QUEUERETURN, c, false), 1,
		    "class", cfg_class_name(c));
	family(b, "relayq_queue_map_used_bytes", "gauge",
	    "Bytes of the LMDB map in use (its free pages not counted).");
	sample(b, "relayq_queue_map_used_bytes", (double)v->st.map_used, 0);
	family(b, "relayq_queue_map_size_bytes", "gauge",
	    "Size of the LMDB map (queue_map_size): intake stops before the "
	    "used bytes reach it.");
	sample(b, "relayq_queue_map_size_bytes", (double)v->st.map_size, 0);
}

/* The cluster's side (cluster_redis set): leases, tokens, Redis calls. */
static void
metrics_cluster(struct evbuffer *b, const struct http_live *lv)
{
	static const struct {
		const char *name, *type, *help;
	} m[] = {
		{ "relayq_cluster_shared", "gauge",
		    "1 while Redis answers and limits are shared, 0 under "
		    "cluster_fallback." },
		{ "relayq_cluster_nodes", "gauge",
		    "Live nodes of the cluster, as the last heartbeat "
		    "counted." },
		{ "relayq_cluster_leases", "gauge",
		    "Connection leases this node holds." },
		{ "relayq_cluster_tokens", "gauge",
		    "Rate tokens this node has reserved and not used yet." },
		{ "relayq_cluster_tokens_used_total", "counter",
		    "Rate tokens this node used." },
		{ "relayq_cluster_tokens_dropped_total", "counter",
		    "Rate tokens reserved but not used in time." },
		{ "relayq_cluster_redis_calls_total", "counter",
		    "Calls this node sent to Redis." },
		{ "relayq_cluster_fallbacks_total", "counter",
		    "Switches to cluster_fallback (Redis unreachable)." },
	};
	double v[] = { lv->cluster_shared ? 1 : 0, (double)lv->cluster_nodes,
		(double)lv->cluster_leases, (double)lv->cluster_tokens,
		(double)lv->cluster_tokens_used,
		(double)lv->cluster_tokens_dropped, (double)lv->cluster_calls,
		(double)lv->cluster_fallbacks };

	for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
		family(b, m[i].name, m[i].type, m[i].help);
		sample(b, m[i].name, v[i], 0);
	}
}

/* The counters, the runner's gauges. */
static void
metrics_runner(struct http_req *r, const struct http_view *v)
{
	static const char *const results[HTTP_NRESULT] = { "sent", "deferred",
		"bounced" };
	static const char *const dsn[4] = { "delay", "failure", "success",
		"relayed" };
	const uint64_t *t = v->tally;
	const struct http_live *lv = &v->live;
	struct evbuffer *b = r->out;
	char le[32];

	family(b, "relayq_deliveries_total", "counter",
	    "Delivery attempts of recipients by priority class and result "
	    "(one per line of the delivery log).");
	for (int c = 0; c < CFG_NCLASS; c++) {
		for (int k = 0; k < HTTP_NRESULT; k++)
			sample(b, "relayq_deliveries_total",
			    (double)(t[HTTP_TALLY_RESULT(c, k)] +
				(k == HTTP_BOUNCED ? t[QTALLY_LOOP + c] : 0)),
			    2, "class", cfg_class_name(c), "status",
			    results[k]);
		/* returned by expiry (timeout.queuereturn, `relayq bounce`) */
		sample(b, "relayq_deliveries_total",
		    (double)t[QTALLY_EXPIRED + c], 2, "class",
		    cfg_class_name(c), "status", "expired");
	}
	family(b, "relayq_delivery_delay_seconds", "histogram",
	    "Time from a message's arrival to a recipient's final result "
	    "(sent or bounced).");
	for (int c = 0; c < CFG_NCLASS; c++) {
		uint64_t cum = 0;

		for (int i = 0; i <= HTTP_DELAY_NB; i++) {
			cum += t[HTTP_TALLY_DELAY(c, i)];
			if (i < HTTP_DELAY_NB)
				snprintf(
				    le, sizeof(le), "%g", http_delay_le[i]);
			else
				snprintf(le, sizeof(le), "+Inf");
			sample(b, "relayq_delivery_delay_seconds_bucket",
			    (double)cum, 2, "class", cfg_class_name(c), "le",
			    le);
		}
		sample(b, "relayq_delivery_delay_seconds_sum",
		    (double)t[HTTP_TALLY_DELAY_MS(c)] / 1000, 1, "class",
		    cfg_class_name(c));
		sample(b, "relayq_delivery_delay_seconds_count", (double)cum, 1,
		    "class", cfg_class_name(c));
	}
	family(b, "relayq_smtp_phase_timeouts_total", "counter",
	    "SMTP phase deadlines that passed, by phase.");
	for (size_t i = 0; i < lv->nphases; i++)
		if (lv->phase_names[i] != NULL)
			sample(b, "relayq_smtp_phase_timeouts_total",
			    (double)lv->timeouts[i], 1, "phase",
			    lv->phase_names[i]);
	family(b, "relayq_dsn_total", "counter",
	    "Delivery status notifications queued, by type.");
	for (int i = 0; i < 4; i++)
		sample(b, "relayq_dsn_total", (double)t[QTALLY_DSN + i], 1,
		    "type", dsn[i]);
	family(b, "relayq_intake_messages_total", "counter",
	    "Messages taken into the queue from the spool.");
	sample(b, "relayq_intake_messages_total", (double)t[QTALLY_INTAKE], 0);
	family(b, "relayq_intake_rejected_total", "counter",
	    "Spool files moved to bad/, by reason.");
	for (int i = 0; i < QUEUE_NBAD; i++)
		sample(b, "relayq_intake_rejected_total",
		    (double)lv->intake.rejected[i], 1, "reason",
		    queue_bad_reason_name(i));
	family(b, "relayq_connections", "gauge",
	    "SMTP connections: open (connecting or in a session), idle (kept "
	    "for reuse).");
	sample(b, "relayq_connections", (double)(lv->conns - lv->conns_idle), 1,
	    "state", "open");
	sample(b, "relayq_connections", (double)lv->conns_idle, 1, "state",
	    "idle");
	family(b, "relayq_destinations_down", "gauge",
	    "Destinations marked down (timeout.hoststatus).");
	sample(b, "relayq_destinations_down", (double)lv->dests_down, 0);
	if (lv->cluster)
		metrics_cluster(b, lv);
}

/* What the process collector of the client libraries exports. */
static void
metrics_process(struct http_req *r)
{
	struct evbuffer *b = r->out;
	char buf[1024], *p;
	unsigned long utime = 0, stime = 0, vsize = 0;
	long rss = 0, hz = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
	struct rlimit rl;
	struct dirent *de;
	FILE *fp;
	DIR *d;
	size_t n = 0;
	long fds = -1;

	if ((fp = fopen("/proc/self/stat", "re")) != NULL) {
		n = fread(buf, 1, sizeof(buf) - 1, fp);
		fclose(fp);
	}
	buf[n] = '\0';
	if ((p = strrchr(buf, ')')) != NULL)
		(void)sscanf(p + 2,
		    "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d "
		    "%*d %*d %*d %*d %*d %*u %lu %ld",
		    &utime, &stime, &vsize, &rss);
	if ((d = opendir("/proc/self/fd")) != NULL) {
		fds = 0;
		while ((de = readdir(d)) != NULL)
			if (de->d_name[0] != '.')
				fds++;
		closedir(d);
		fds--; /* the directory's own */
	}
	family(b, "process_cpu_seconds_total", "counter",
	    "Total user and system CPU time spent in seconds.");
	sample(b, "process_cpu_seconds_total",
	    hz > 0 ? (double)(utime + stime) / (double)hz : 0, 0);
	family(
	    b, "process_open_fds", "gauge", "Number of open file descriptors.");
	sample(b, "process_open_fds", (double)fds, 0);
	family(b, "process_max_fds", "gauge",
	    "Maximum number of open file descriptors.");
	sample(b, "process_max_fds",
	    getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
		? (double)rl.rlim_cur
		: -1,
	    0);
	family(b, "process_virtual_memory_bytes", "gauge",
	    "Virtual memory size in bytes.");
	sample(b, "process_virtual_memory_bytes", (double)vsize, 0);
	family(b, "process_resident_memory_bytes", "gauge",
	    "Resident memory size in bytes.");
	sample(
	    b, "process_resident_memory_bytes", (double)rss * (double)page, 0);
	family(b, "process_start_time_seconds", "gauge",
	    "Start time of the process since unix epoch in seconds.");
	sample(b, "process_start_time_seconds", (double)r->srv->started, 0);
}

/* GET /metrics. */
void
http_page_metrics(struct http_req *r)
{
	struct http_view v;

	if (!http_view_get(r, &v))
		return;
	r->ctype = "text/plain; version=0.0.4; charset=utf-8";
	family(r->out, "relayq_build_info", "gauge",
	    "A metric with a constant '1' value labeled by the version of "
	    "relayq.");
	sample(r->out, "relayq_build_info", 1, 1, "version", RELAYQ_VERSION);
	metrics_queue(r, &v);
	metrics_runner(r, &v);
	metrics_process(r);
}
