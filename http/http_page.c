/*
 * http_page.c - GET /: the status page a person reads at a glance, as
 * one self-contained HTML document: CSS in it, the charts inline SVG
 * drawn here, no script, font or anything else fetched, a meta refresh
 * every PAGE_REFRESH seconds, laid out to be read on a phone (the
 * tables scroll sideways, the charts scale).
 *
 * http-private: http_page_status().
 *
 * What it shows: per class the messages waiting, in flight and held,
 * the recipients waiting, the oldest message's age and when its
 * queuewarn and queuereturn fall due; the last hour as two charts (the
 * queue per class, sampled every HTTP_RING_STEP seconds, and results
 * per second); the twenty domains with the most recipients waiting,
 * with their host status and last error; the last fifty failures.
 * Every text from outside (domains, addresses, replies) is escaped.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "http_int.h"

#define PAGE_REFRESH 10 /* seconds */
#define PAGE_DOMAINS 20
#define CHART_W 720 /* the charts' viewBox */
#define CHART_H 200
#define CHART_X0 76 /* left margin, for the scale */
#define CHART_Y0 16 /* top margin */
#define CHART_Y1 176 /* the baseline */

static const char *const class_colour[CFG_NCLASS] = { "#d62728", "#1f77b4",
	"#2ca02c", "#9467bd" };
static const char *const result_colour[HTTP_NRESULT] = { "#2ca02c", "#ff7f0e",
	"#d62728" };
static const char *const result_name[HTTP_NRESULT] = { "sent", "deferred",
	"bounced" };

static const char style[] =
    "body{font:15px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;"
    "margin:0 auto;max-width:1100px;padding:8px 12px;color:#222;"
    "background:#fafafa}"
    "h1{font-size:1.3em;margin:.3em 0}h2{font-size:1.1em;margin:1.2em 0 .4em}"
    ".meta{color:#555;font-size:.9em;margin:0}"
    ".tiles{display:flex;flex-wrap:wrap;gap:8px;margin:.6em 0}"
    ".tile{background:#fff;border:1px solid #ddd;border-radius:6px;"
    "padding:6px 10px;min-width:7em}.tile b{display:block;font-size:1.3em}"
    ".scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}"
    "table{border-collapse:collapse;background:#fff;width:100%;"
    "font-size:.92em}"
    "th,td{border-bottom:1px solid #e4e4e4;padding:4px 8px;text-align:left;"
    "vertical-align:top}th{background:#f0f0f0;white-space:nowrap}"
    "td.n{text-align:right;font-variant-numeric:tabular-nums}"
    "td.why{min-width:16em;word-break:break-word}td.t{white-space:nowrap}"
    ".down{color:#b00;font-weight:600}.late{color:#b00}"
    ".charts{display:flex;flex-wrap:wrap;gap:12px}"
    "figure{margin:0;flex:1 1 340px;background:#fff;border:1px solid #ddd;"
    "border-radius:6px;padding:6px}figcaption{font-weight:600}"
    "svg{width:100%;height:auto;display:block}"
    "svg text{font-size:19px;fill:#555}svg .grid{stroke:#ddd}"
    "svg polyline{fill:none;stroke-width:2}"
    ".key{display:inline-block;width:.8em;height:.8em;margin:0 .3em 0 .8em;"
    "border-radius:2px}.legend{margin:.3em 0 0;font-size:.9em}"
    "footer{margin:1.5em 0 .5em;color:#666;font-size:.85em}"
    "a{color:#1f5fa8}";

/* Appends a duration ("3d 4h", "12m 5s", "42s") of SECS to B. */
static void
span_add(struct evbuffer *b, int64_t secs)
{
	if (secs < 0)
		secs = 0;
	if (secs >= 86400)
		evbuffer_add_printf(b, "%lldd %lldh", (long long)(secs / 86400),
		    (long long)(secs % 86400 / 3600));
	else if (secs >= 3600)
		evbuffer_add_printf(b, "%lldh %lldm", (long long)(secs / 3600),
		    (long long)(secs % 3600 / 60));
	else if (secs >= 60)
		evbuffer_add_printf(b, "%lldm %llds", (long long)(secs / 60),
		    (long long)(secs % 60));
	else
		evbuffer_add_printf(b, "%llds", (long long)secs);
}

/* Appends local time T ("2024-05-01 12:03:04") to B. */
static void
time_add(struct evbuffer *b, int64_t t)
{
	struct tm tm;
	time_t tt = (time_t)t;
	char buf[64];

	localtime_r(&tt, &tm);
	strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm);
	evbuffer_add_printf(b, "%s", buf);
}

/* A due time cell: "in 3h 2m" or "overdue 5m", the time in a title. */
static void
due_cell(struct evbuffer *b, int64_t due, int64_t now)
{
	if (due <= 0) {
		evbuffer_add_printf(b, "<td>never</td>");
		return;
	}
	evbuffer_add_printf(
	    b, "<td class=\"t%s\" title=\"", due >= now ? "" : " late");
	time_add(b, due);
	evbuffer_add_printf(b, "\">%s", due >= now ? "in " : "overdue ");
	span_add(b, due >= now ? due - now : now - due);
	evbuffer_add_printf(b, "</td>");
}

/* The table of classes. */
static void
page_classes(struct http_req *r, const struct http_view *v,
    const struct queue_oldest *o, bool walked)
{
	struct evbuffer *b = r->out;

	evbuffer_add_printf(b,
	    "<h2>Queue by priority class</h2><div class=\"scroll\">"
	    "<table id=\"classes\"><thead><tr><th>Class</th><th>Waiting</th>"
	    "<th>In flight</th><th>Held</th><th>Recipients waiting</th>"
	    "<th>Oldest</th><th title=\"timeout.queuewarn\">Warning due</th>"
	    "<th title=\"timeout.queuereturn\">Return due</th></tr></thead>"
	    "<tbody>");
	for (int c = 0; c < CFG_NCLASS; c++) {
		bool have = walked && o->found[c] && o->arrival[c] > 0;

		evbuffer_add_printf(b,
		    "<tr data-class=\"%s\"><th><span class=\"key\" "
		    "style=\"background:%s\"></span>%s</th>"
		    "<td class=\"n\">%llu</td><td class=\"n\">%llu</td>"
		    "<td class=\"n\">%llu</td><td class=\"n\">%llu</td>",
		    cfg_class_name(c), class_colour[c], cfg_class_name(c),
		    (unsigned long long)(v->msgs[c][0] + v->msgs[c][1]),
		    (unsigned long long)v->msgs[c][3],
		    (unsigned long long)v->msgs[c][2],
		    (unsigned long long)(v->counts.rcpts[c][RCPT_PENDING] +
			v->counts.rcpts[c][RCPT_DEFERRED]));
		if (!have) {
			evbuffer_add_printf(b,
			    "<td>%s</td><td>-</td><td>-</td>",
			    walked && o->found[c] ? "-" : "(counting)");
		} else {
			evbuffer_add_printf(
			    b, "<td class=\"t\" title=\"arrived ");
			time_add(b, o->arrival[c]);
			evbuffer_add_printf(b, "\">");
			span_add(b, v->now - o->arrival[c]);
			evbuffer_add_printf(b, "</td>");
			if (o->warned[c])
				evbuffer_add_printf(b, "<td>sent</td>");
			else
				due_cell(b, o->warn_at[c], v->now);
			due_cell(b, o->return_at[c], v->now);
		}
		evbuffer_add_printf(b, "</tr>");
	}
	evbuffer_add_printf(b, "</tbody></table></div>");
}

/* The top of a chart's scale for values up to MAX: 1, 2, 4 or 5 times a
 * power of ten, so that its quarters are round numbers. */
static double
chart_top(double max)
{
	double p = 1e-3;

	while (p * 10 <= max)
		p *= 10;
	if (max <= p)
		return p;
	if (max <= 2 * p)
		return 2 * p;
	if (max <= 4 * p)
		return 4 * p;
	return max <= 5 * p ? 5 * p : 10 * p;
}

/* The x of point I of HTTP_RING. */
static double
chart_x(int i)
{
	return CHART_X0 +
	    (double)i * (CHART_W - CHART_X0 - 8) / (HTTP_RING - 1);
}

/* A chart's frame: grid, scale (0 to MAX, UNIT), time axis. */
static void
chart_frame(struct evbuffer *b, const char *id, const char *caption, double max,
    const char *unit)
{
	evbuffer_add_printf(b,
	    "<figure class=\"chart\" id=\"%s\"><figcaption>%s</figcaption>"
	    "<svg viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"%s\">",
	    id, caption, CHART_W, CHART_H, caption);
	for (int k = 0; k <= 4; k++) {
		double y = CHART_Y1 - (double)k * (CHART_Y1 - CHART_Y0) / 4;

		evbuffer_add_printf(b,
		    "<line class=\"grid\" x1=\"%d\" y1=\"%.1f\" x2=\"%d\" "
		    "y2=\"%.1f\"/><text x=\"%d\" y=\"%.1f\" "
		    "text-anchor=\"end\">%.4g%s</text>",
		    CHART_X0, y, CHART_W - 8, y, CHART_X0 - 4, y + 4,
		    max * k / 4, k == 4 ? unit : "");
	}
	evbuffer_add_printf(b,
	    "<text x=\"%d\" y=\"%d\">-60 min</text><text x=\"%.1f\" y=\"%d\" "
	    "text-anchor=\"middle\">-30 min</text><text x=\"%d\" y=\"%d\" "
	    "text-anchor=\"end\">now</text>",
	    CHART_X0, CHART_H - 4, chart_x(HTTP_RING / 2), CHART_H - 4,
	    CHART_W - 8, CHART_H - 4);
}

/* One series: VALS[i] for the points with HAVE[i], as polylines broken
 * where a point is missing. */
static void
chart_line(struct evbuffer *b, const double *vals, const bool *have, double max,
    const char *colour, const char *name)
{
	bool open = false;
	int last = -1;

	for (int i = 0; i < HTTP_RING; i++) {
		if (!have[i]) {
			if (open)
				evbuffer_add_printf(b, "\"/>");
			open = false;
			continue;
		}
		last = i;
		if (!open)
			evbuffer_add_printf(b,
			    "<polyline data-series=\"%s\" stroke=\"%s\" "
			    "points=\"",
			    name, colour);
		evbuffer_add_printf(b, "%s%.1f,%.1f", open ? " " : "",
		    chart_x(i),
		    CHART_Y1 - vals[i] / max * (CHART_Y1 - CHART_Y0));
		open = true;
	}
	if (open)
		evbuffer_add_printf(b, "\"/>");
	if (last >= 0) /* the newest point, seen even when alone */
		evbuffer_add_printf(b,
		    "<circle data-series=\"%s\" cx=\"%.1f\" cy=\"%.1f\" "
		    "r=\"3\" fill=\"%s\"/>",
		    name, chart_x(last),
		    CHART_Y1 - vals[last] / max * (CHART_Y1 - CHART_Y0),
		    colour);
}

/* A legend entry. */
static void
legend(struct evbuffer *b, const char *colour, const char *name)
{
	evbuffer_add_printf(b,
	    "<span class=\"key\" style=\"background:%s\"></span>%s", colour,
	    name);
}

/* The two charts of the last hour. */
static void
page_charts(struct http_req *r, const struct http_view *v)
{
	const struct http_stats *s = r->srv->stats;
	struct evbuffer *b = r->out;
	int64_t start = v->now - v->now % HTTP_RING_STEP -
	    (int64_t)(HTTP_RING - 1) * HTTP_RING_STEP;
	double vals[HTTP_RING], max = 1;
	bool have[HTTP_RING];

	evbuffer_add_printf(b, "<h2>Last hour</h2><div class=\"charts\">");
	for (int i = 0; i < HTTP_RING; i++) {
		const struct http_slot *sl = http_stats_slot(
		    s, start + (int64_t)i * HTTP_RING_STEP);

		for (int c = 0; sl != NULL && sl->sampled && c < CFG_NCLASS;
		     c++)
			if ((double)sl->msgs[c] > max)
				max = (double)sl->msgs[c];
	}
	max = chart_top(max);
	chart_frame(b, "chart-queue", "Messages queued per class", max, "");
	for (int c = 0; c < CFG_NCLASS; c++) {
		for (int i = 0; i < HTTP_RING; i++) {
			const struct http_slot *sl = http_stats_slot(
			    s, start + (int64_t)i * HTTP_RING_STEP);

			have[i] = sl != NULL && sl->sampled;
			vals[i] = have[i] ? (double)sl->msgs[c] : 0;
		}
		chart_line(
		    b, vals, have, max, class_colour[c], cfg_class_name(c));
	}
	evbuffer_add_printf(b, "</svg><p class=\"legend\">");
	for (int c = 0; c < CFG_NCLASS; c++)
		legend(b, class_colour[c], cfg_class_name(c));
	evbuffer_add_printf(b, "</p></figure>");

	max = 0.1;
	for (int i = 0; i < HTTP_RING; i++) {
		const struct http_slot *sl = http_stats_slot(
		    s, start + (int64_t)i * HTTP_RING_STEP);

		for (int k = 0; sl != NULL && k < HTTP_NRESULT; k++)
			if ((double)sl->n[k] / HTTP_RING_STEP > max)
				max = (double)sl->n[k] / HTTP_RING_STEP;
	}
	max = chart_top(max);
	chart_frame(b, "chart-rate", "Delivery results per second", max, "/s");
	for (int k = 0; k < HTTP_NRESULT; k++) {
		for (int i = 0; i < HTTP_RING; i++) {
			const struct http_slot *sl = http_stats_slot(
			    s, start + (int64_t)i * HTTP_RING_STEP);

			have[i] = start + (int64_t)i * HTTP_RING_STEP >=
			    r->srv->started - HTTP_RING_STEP;
			vals[i] = sl ? (double)sl->n[k] / HTTP_RING_STEP : 0;
		}
		chart_line(
		    b, vals, have, max, result_colour[k], result_name[k]);
	}
	evbuffer_add_printf(b, "</svg><p class=\"legend\">");
	for (int k = 0; k < HTTP_NRESULT; k++)
		legend(b, result_colour[k], result_name[k]);
	evbuffer_add_printf(b, "</p></figure></div>");
}

/* The biggest destinations, with host status and last error. */
static void
page_domains(struct http_req *r, const struct http_view *v)
{
	struct http_server *srv = r->srv;
	struct evbuffer *b = r->out;
	struct http_domain *rows;
	uint64_t tot[11];
	size_t n;
	enum queue_result qr;
	char status[512];

	rows = http_domains_get(srv->q, v->now, PAGE_DOMAINS, &n, tot, &qr);
	evbuffer_add_printf(b,
	    "<h2>Destinations with the most recipients waiting</h2>"
	    "<div class=\"scroll\"><table id=\"destinations\"><thead><tr>"
	    "<th>Domain</th><th>Waiting</th><th>Host status</th>"
	    "<th>Last error</th></tr></thead><tbody>");
	if (n == 0)
		evbuffer_add_printf(b, "<tr><td colspan=\"4\">%s</td></tr>",
		    qr == QUEUE_OK ? "nothing waiting"
				   : "cannot read the queue");
	for (size_t i = 0; i < n; i++) {
		const struct http_err *e = http_stats_err(
		    srv->stats, rows[i].name);

		status[0] = '\0';
		if (srv->hooks.dest_status != NULL)
			srv->hooks.dest_status(srv->hooks.arg, rows[i].name,
			    status, sizeof(status));
		evbuffer_add_printf(b, "<tr><td>");
		http_html_str(b, rows[i].name);
		evbuffer_add_printf(b, "</td><td class=\"n\">%llu</td><td%s>",
		    (unsigned long long)rows[i].n[0],
		    strncmp(status, "down", 4) == 0 ? " class=\"down\"" : "");
		http_html_str(b, status[0] ? status : "-");
		evbuffer_add_printf(b, "</td><td class=\"why\">");
		if (e != NULL) {
			time_add(b, e->time);
			evbuffer_add_printf(b, ": ");
			http_html_str(b, e->why);
		} else {
			evbuffer_add_printf(b, "-");
		}
		evbuffer_add_printf(b, "</td></tr>");
	}
	evbuffer_add_printf(b, "</tbody></table></div>");
	http_domains_free(rows, n);
}

/* The last failures, newest first. */
static void
page_failures(struct http_req *r)
{
	const struct http_stats *s = r->srv->stats;
	struct evbuffer *b = r->out;

	evbuffer_add_printf(b,
	    "<h2>Last %d failures</h2><div class=\"scroll\">"
	    "<table id=\"failures\"><thead><tr><th>Time</th><th>Queue ID</th>"
	    "<th>Recipient</th><th>Class</th><th>Result</th><th>Reason</th>"
	    "</tr></thead><tbody>",
	    HTTP_FAIL_MAX);
	if (s->nfails == 0)
		evbuffer_add_printf(b,
		    "<tr><td colspan=\"6\">none since the daemon started"
		    "</td></tr>");
	for (size_t i = 0; i < s->nfails; i++) {
		const struct http_fail *f =
		    &s->fails[(s->fnext + HTTP_FAIL_MAX - 1 - i) %
			HTTP_FAIL_MAX];

		evbuffer_add_printf(b, "<tr><td class=\"t\">");
		time_add(b, f->time);
		evbuffer_add_printf(b, "</td><td>%s</td><td>", f->qid);
		http_html_str(b, f->rcpt);
		evbuffer_add_printf(b, "</td><td>%s</td><td>%s ",
		    cfg_class_name(f->cls), result_name[f->res]);
		http_html_str(b, f->dsn);
		evbuffer_add_printf(b, "</td><td class=\"why\">");
		http_html_str(b, f->why);
		evbuffer_add_printf(b, "</td></tr>");
	}
	evbuffer_add_printf(b, "</tbody></table></div>");
}

/* The head of the page: name, clock, tiles with the totals. */
static void
page_head(struct http_req *r, const struct http_view *v)
{
	struct evbuffer *b = r->out;
	const char *host = cfg_str(cfg_scope(r->srv->cfg, NULL), CFG_HOSTNAME);
	char hn[256];
	uint64_t w = 0, f = 0, h = 0;

	if (host[0] == '\0') {
		if (gethostname(hn, sizeof(hn)) != 0)
			snprintf(hn, sizeof(hn), "localhost");
		hn[sizeof(hn) - 1] = '\0';
		host = hn;
	}
	for (int c = 0; c < CFG_NCLASS; c++) {
		w += v->msgs[c][0] + v->msgs[c][1];
		h += v->msgs[c][2];
		f += v->msgs[c][3];
	}
	evbuffer_add_printf(b,
	    "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
	    "<meta name=\"viewport\" content=\"width=device-width, "
	    "initial-scale=1\"><meta http-equiv=\"refresh\" content=\"%d\">"
	    "<title>relayq on ",
	    PAGE_REFRESH);
	http_html_str(b, host);
	evbuffer_add_printf(b,
	    "</title><style>%s</style></head><body><header>"
	    "<h1>relayq on ",
	    style);
	http_html_str(b, host);
	evbuffer_add_printf(
	    b, "</h1><p class=\"meta\">version %s, up ", RELAYQ_VERSION);
	span_add(b, v->now - r->srv->started);
	evbuffer_add_printf(b, ", at ");
	time_add(b, v->now);
	evbuffer_add_printf(b,
	    " (refreshes every %d s)</p></header><div class=\"tiles\">"
	    "<div class=\"tile\">waiting<b>%llu</b></div>"
	    "<div class=\"tile\">in flight<b>%llu</b></div>"
	    "<div class=\"tile\">held<b>%llu</b></div>"
	    "<div class=\"tile\">connections<b>%u</b></div>"
	    "<div class=\"tile\">destinations down<b>%u</b></div>"
	    "<div class=\"tile\">queue map<b>%.0f%%</b></div></div>",
	    PAGE_REFRESH, (unsigned long long)w, (unsigned long long)f,
	    (unsigned long long)h, v->live.conns, v->live.dests_down,
	    v->st.map_size
		? 100.0 * (double)v->st.map_used / (double)v->st.map_size
		: 0.0);
}

/* GET /. */
void
http_page_status(struct http_req *r)
{
	struct http_view v;
	struct queue_oldest *o = &r->srv->oldest;
	bool walked;

	if (!http_view_get(r, &v))
		return;
	walked = queue_oldest_get(r->srv->q, &v.st, o, HTTP_OLDEST_STEPS) ==
	    QUEUE_OK;
	r->ctype = "text/html; charset=utf-8";
	page_head(r, &v);
	page_classes(r, &v, o, walked);
	page_charts(r, &v);
	page_domains(r, &v);
	page_failures(r);
	evbuffer_add_printf(r->out,
	    "<footer>Also as <a href=\"/metrics\">Prometheus metrics</a>, "
	    "<a href=\"/api/summary\">/api/summary</a> and "
	    "<a href=\"/api/queue\">/api/queue</a> (JSON). relayq(8) says "
	    "what each number means.</footer></body></html>\n");
}
