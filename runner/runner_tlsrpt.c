/*
 * runner_tlsrpt.c - SMTP TLS reporting (RFC 8460): counts the TLS
 * sessions of each destination domain per UTC day, and once a day sends
 * the domains that publish a _smtp._tls TXT record with a mailto: rua
 * their report: JSON, gzip'd, in a multipart/report; report-type=tlsrpt
 * message put into relayq's own queue (from <>, like a DSN).
 *
 * Runner-private: runner_tlsrpt_new(), runner_tlsrpt_free(),
 * runner_tlsrpt_count().
 *
 * What counts (tlsrpt = yes, domains routed by MX): a session with TLS
 * up is a success, each TLS failure the SMTP client noted (struct
 * smtp_tls_fail) a failure with its result-type, MX host and IP; a
 * plaintext session without a policy counts for nothing.  The policy is
 * "tlsa" when the route had usable DANE records, "sts" under an MTA-STS
 * policy, else "no-policy-found".
 *
 * Durability: counts live in memory and are written to the queue's policy
 * db ("rpt:YYYYMMDD:DOMAIN") every RPT_FLUSH seconds and at shutdown (a
 * crash loses at most that much counting, never mail).  A day's report
 * is inserted and its record removed in one transaction; a record whose
 * domain has no TLSRPT record is dropped, one whose lookup fails is kept
 * and tried again for RPT_KEEP_DAYS.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <libdeflate.h>

#include "runner_int.h"

#define RPT_FLUSH 60 /* seconds between writes of the counts */
#define RPT_CHECK 3600 /* seconds between looks for reports due */
#define RPT_KEEP_DAYS 7
#define RPT_FAILS 16 /* failure-details kept per domain and day */
#define RPT_POLICY_LINES 24

struct rpt_fail {
	char type[40];
	char mx[256];
	char ip[48];
	uint64_t n;
};

struct rpt_entry {
	struct rpt_entry *next;
	char day[9]; /* YYYYMMDD, UTC */
	char domain[256];
	char ptype[20]; /* "tlsa", "sts", "no-policy-found" */
	char pol[RPT_POLICY_LINES][200]; /* policy-string lines */
	size_t npol;
	char mx[STS_MX_MAX][256]; /* sts: mx-host */
	size_t nmx;
	uint64_t ok, fail;
	struct rpt_fail f[RPT_FAILS];
	size_t nf;
	bool dirty;
};

/* A report being sent: its record, waiting for the TXT lookup. */
struct rpt_send {
	struct rpt_send *next;
	struct tlsrpt *t;
	char key[300];
	char *val;
	size_t len;
	bool stale; /* older than RPT_KEEP_DAYS */
	bool asked; /* its TXT lookup is on its way */
};

struct tlsrpt {
	struct runner *r;
	struct rpt_entry *entries;
	struct rpt_send *sends;
	struct event *flush, *check;
	bool checked; /* the start-up look for reports due is done */
};

/* Today's UTC day as YYYYMMDD into DAY, for unix time NOW. */
static void
rpt_day(int64_t now, char day[9])
{
	time_t t = (time_t)now;
	struct tm tm;

	gmtime_r(&t, &tm);
	if (strftime(day, 9, "%Y%m%d", &tm) == 0)
		snprintf(day, 9, "00000000");
}

/* The record text of E into a malloc'd string; *LEN its length. */
static char *
rpt_record_format(const struct rpt_entry *e, size_t *len)
{
	size_t cap = 512 + e->npol * 210 + e->nmx * 260 + e->nf * 360, o;
	char *b = xmalloc(cap);

	o = (size_t)snprintf(b, cap, "rpt1 %s %llu %llu\n", e->ptype,
	    (unsigned long long)e->ok, (unsigned long long)e->fail);
	for (size_t i = 0; i < e->npol; i++)
		o += (size_t)snprintf(b + o, cap - o, "p %s\n", e->pol[i]);
	for (size_t i = 0; i < e->nmx; i++)
		o += (size_t)snprintf(b + o, cap - o, "m %s\n", e->mx[i]);
	for (size_t i = 0; i < e->nf; i++)
		o += (size_t)snprintf(b + o, cap - o, "f %s %s %s %llu\n",
		    e->f[i].type, e->f[i].mx, e->f[i].ip,
		    (unsigned long long)e->f[i].n);
	*len = o;
	return b;
}

/* Reads record text BUF (LEN bytes) into E (day, domain kept); 0 or -1. */
static int
rpt_record_parse(const char *buf, size_t len, struct rpt_entry *e)
{
	size_t pos = 0;
	bool head = false;

	while (pos < len) {
		const char *l = buf + pos, *nl = memchr(l, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - l) : len - pos;
		char line[600];
		unsigned long long a, b;

		pos += n + 1;
		if (n >= sizeof(line))
			return -1;
		memcpy(line, l, n);
		line[n] = '\0';
		if (!head) {
			if (sscanf(line, "rpt1 %19s %llu %llu", e->ptype, &a,
				&b) != 3)
				return -1;
			e->ok = a;
			e->fail = b;
			head = true;
		} else if (strncmp(line, "p ", 2) == 0 &&
		    e->npol < RPT_POLICY_LINES) {
			snprintf(e->pol[e->npol++], sizeof(e->pol[0]), "%.199s",
			    line + 2);
		} else if (strncmp(line, "m ", 2) == 0 && e->nmx < STS_MX_MAX) {
			snprintf(e->mx[e->nmx++], sizeof(e->mx[0]), "%.255s",
			    line + 2);
		} else if (line[0] == 'f' && e->nf < RPT_FAILS) {
			struct rpt_fail *f = &e->f[e->nf];

			if (sscanf(line, "f %39s %255s %47s %llu", f->type,
				f->mx, f->ip, &a) != 4)
				return -1;
			f->n = a;
			e->nf++;
		}
	}
	return head ? 0 : -1;
}

/* The entry of DOMAIN for DAY: in memory, else from the queue, else new. */
static struct rpt_entry *
rpt_entry_get(struct tlsrpt *t, const char *day, const char *domain)
{
	struct rpt_entry *e;
	char key[300], *val;
	size_t len;

	for (e = t->entries; e != NULL; e = e->next)
		if (strcmp(e->day, day) == 0 && strcmp(e->domain, domain) == 0)
			return e;
	e = xcalloc(1, sizeof(*e));
	snprintf(e->day, sizeof(e->day), "%s", day);
	snprintf(e->domain, sizeof(e->domain), "%s", domain);
	snprintf(key, sizeof(key), "rpt:%s:%s", day, domain);
	if (queue_policy_get(t->r->q, key, &val, &len) == QUEUE_OK) {
		if (rpt_record_parse(val, len, e) < 0) {
			struct rpt_entry z = { 0 };

			memcpy(z.day, e->day, sizeof(z.day));
			memcpy(z.domain, e->domain, sizeof(z.domain));
			*e = z;
		}
		free(val);
	}
	e->next = t->entries;
	t->entries = e;
	return e;
}

/* Writes the dirty entries to the queue; forgets those of past days. */
static void
rpt_flush(struct tlsrpt *t)
{
	struct rpt_entry **pp, *e;
	struct queue_txn *txn = NULL;
	char today[9];

	rpt_day(rq_now(), today);
	for (e = t->entries; e != NULL; e = e->next) {
		char key[300], *val;
		size_t len;

		if (!e->dirty)
			continue;
		if (txn == NULL && (txn = queue_txn_begin(t->r->q)) == NULL)
			return;
		snprintf(key, sizeof(key), "rpt:%s:%s", e->day, e->domain);
		val = rpt_record_format(e, &len);
		queue_policy_put(txn, key, val, len);
		free(val);
	}
	if (txn != NULL) {
		if (queue_txn_commit(txn) != QUEUE_OK) {
			log_warn(NULL, "TLS-RPT: counts not saved");
			return;
		}
	}
	for (pp = &t->entries; (e = *pp) != NULL;) {
		e->dirty = false;
		if (strcmp(e->day, today) != 0) {
			*pp = e->next;
			free(e);
		} else {
			pp = &e->next;
		}
	}
}

static void
rpt_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	rpt_flush(arg);
}

/* Sets E's policy from destination D (route and MTA-STS policy). */
static void
rpt_policy_set(struct rpt_entry *e, const struct dest *d)
{
	const struct route *rt = d->route;

	e->npol = 0;
	e->nmx = 0;
	for (size_t i = 0; rt != NULL && i < rt->naddr; i++) {
		const struct route_addr *a = &rt->addr[i];

		for (size_t k = 0; k < a->ntlsa && e->npol < RPT_POLICY_LINES;
		     k++) {
			char hex[2 * SMTP_TLSA_DATA_MAX + 1], line[200];
			size_t j;

			for (j = 0; j < a->tlsa[k].len && j < 64; j++)
				snprintf(
				    hex + 2 * j, 3, "%02x", a->tlsa[k].data[j]);
			hex[2 * j] = '\0';
			snprintf(line, sizeof(line), "%u %u %u %.140s",
			    a->tlsa[k].usage, a->tlsa[k].selector,
			    a->tlsa[k].mtype, hex);
			for (j = 0; j < e->npol; j++)
				if (strcmp(e->pol[j], line) == 0)
					break;
			if (j == e->npol)
				snprintf(e->pol[e->npol++], sizeof(e->pol[0]),
				    "%s", line);
		}
	}
	if (e->npol > 0) {
		snprintf(e->ptype, sizeof(e->ptype), "tlsa");
		return;
	}
	if (d->sts != NULL) {
		snprintf(e->ptype, sizeof(e->ptype), "sts");
		snprintf(
		    e->pol[e->npol++], sizeof(e->pol[0]), "version: STSv1");
		snprintf(e->pol[e->npol++], sizeof(e->pol[0]), "mode: %s",
		    runner_sts_mode_name(d->sts->mode));
		for (size_t i = 0; i < d->sts->nmx; i++) {
			if (e->npol < RPT_POLICY_LINES - 1)
				snprintf(e->pol[e->npol++], sizeof(e->pol[0]),
				    "mx: %.180s", d->sts->mx[i]);
			snprintf(e->mx[e->nmx++], sizeof(e->mx[0]), "%s",
			    d->sts->mx[i]);
		}
		snprintf(e->pol[e->npol++], sizeof(e->pol[0]), "max_age: %lld",
		    (long long)d->sts->max_age);
		return;
	}
	snprintf(e->ptype, sizeof(e->ptype), "no-policy-found");
}

/* Counts a failed session of E: result-type TYPE at MX host MX (IP). */
static void
rpt_fail_add(
    struct rpt_entry *e, const char *type, const char *mx, const char *ip)
{
	size_t k;

	e->fail++;
	for (k = 0; k < e->nf; k++)
		if (strcmp(e->f[k].type, type) == 0 &&
		    strcmp(e->f[k].mx, mx) == 0 && strcmp(e->f[k].ip, ip) == 0)
			break;
	if (k == e->nf) {
		if (e->nf == RPT_FAILS)
			return;
		snprintf(e->f[k].type, sizeof(e->f[k].type), "%s", type);
		snprintf(e->f[k].mx, sizeof(e->f[k].mx), "%s", mx);
		snprintf(e->f[k].ip, sizeof(e->f[k].ip), "%s", ip);
		e->nf++;
	}
	e->f[k].n++;
}

/* Counts the sessions of result RES of destination D; see the top. */
void
runner_tlsrpt_count(
    struct runner *r, const struct dest *d, const struct smtp_result *res)
{
	struct tlsrpt *t = r->tlsrpt;
	struct rpt_entry *e;
	char day[9];

	if (t == NULL || d == NULL || !d->mx || strchr(d->key, '/') != NULL ||
	    (res->ntls_fails == 0 && res->tls_proto[0] == '\0') ||
	    (res->reused && res->ntls_fails == 0))
		return;
	rpt_day(rq_now(), day);
	e = rpt_entry_get(t, day, d->lookup);
	rpt_policy_set(e, d);
	if (res->tls_proto[0] != '\0' && !res->reused) {
		/* a session is a success or a failure: one with TLS up that
		 * failed all the same (MTA-STS testing) is a failure, and so
		 * is one with an MX host a testing policy does not name (its
		 * validation failed, RFC 8461 5: enforce would skip it) */
		bool failed = strcmp(e->ptype, "sts") == 0 &&
		    d->sts->mode == STS_MODE_TESTING &&
		    !runner_sts_mx_match(d->sts, res->host);

		if (failed)
			rpt_fail_add(
			    e, "validation-failure", res->host, res->ip);
		for (size_t i = 0; i < res->ntls_fails; i++)
			failed = failed ||
			    strcmp(res->tls_fails[i].ip, res->ip) == 0;
		if (!failed)
			e->ok++;
	}
	for (size_t i = 0; i < res->ntls_fails; i++)
		rpt_fail_add(e, res->tls_fails[i].type, res->tls_fails[i].host,
		    res->tls_fails[i].ip);
	e->dirty = true;
}

/* Appends S to B as a JSON string (quoted, escaped). */
static void
json_str(struct evbuffer *b, const char *s)
{
	evbuffer_add(b, "\"", 1);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			evbuffer_add_printf(b, "\\%c", c);
		else if (c < 0x20)
			evbuffer_add_printf(b, "\\u%04x", c);
		else
			evbuffer_add(b, s, 1);
	}
	evbuffer_add(b, "\"", 1);
}

/* The RFC 8460 JSON report of E (day DAY) into B. */
static void
rpt_json(struct evbuffer *b, const struct rpt_entry *e, const char *org,
    const char *contact, const char *id, int64_t start)
{
	char t0[32], t1[32];
	time_t s0 = (time_t)start, s1 = (time_t)(start + 86399);
	struct tm tm;

	gmtime_r(&s0, &tm);
	strftime(t0, sizeof(t0), "%Y-%m-%dT%H:%M:%SZ", &tm);
	gmtime_r(&s1, &tm);
	strftime(t1, sizeof(t1), "%Y-%m-%dT%H:%M:%SZ", &tm);
	evbuffer_add_printf(b, "{\"organization-name\":");
	json_str(b, org);
	evbuffer_add_printf(b,
	    ",\"date-range\":{\"start-datetime\":\"%s\","
	    "\"end-datetime\":\"%s\"},\"contact-info\":",
	    t0, t1);
	json_str(b, contact);
	evbuffer_add_printf(b, ",\"report-id\":");
	json_str(b, id);
	evbuffer_add_printf(b, ",\"policies\":[{\"policy\":{\"policy-type\":");
	json_str(b, e->ptype);
	evbuffer_add_printf(b, ",\"policy-string\":[");
	for (size_t i = 0; i < e->npol; i++) {
		if (i)
			evbuffer_add(b, ",", 1);
		json_str(b, e->pol[i]);
	}
	evbuffer_add_printf(b, "],\"policy-domain\":");
	json_str(b, e->domain);
	if (e->nmx > 0) {
		evbuffer_add_printf(b, ",\"mx-host\":[");
		for (size_t i = 0; i < e->nmx; i++) {
			if (i)
				evbuffer_add(b, ",", 1);
			json_str(b, e->mx[i]);
		}
		evbuffer_add(b, "]", 1);
	}
	evbuffer_add_printf(b,
	    "},\"summary\":{\"total-successful-session-count\":%llu,"
	    "\"total-failure-session-count\":%llu}",
	    (unsigned long long)e->ok, (unsigned long long)e->fail);
	if (e->nf > 0) {
		evbuffer_add_printf(b, ",\"failure-details\":[");
		for (size_t i = 0; i < e->nf; i++) {
			evbuffer_add_printf(
			    b, "%s{\"result-type\":", i ? "," : "");
			json_str(b, e->f[i].type);
			evbuffer_add_printf(b, ",\"receiving-mx-hostname\":");
			json_str(b, e->f[i].mx);
			evbuffer_add_printf(b, ",\"receiving-ip\":");
			json_str(b, e->f[i].ip);
			evbuffer_add_printf(b,
			    ",\"failed-session-count\":%llu}",
			    (unsigned long long)e->f[i].n);
		}
		evbuffer_add(b, "]", 1);
	}
	evbuffer_add_printf(b, "}]}\n");
}

/* Unix time of 00:00 UTC of DAY (YYYYMMDD). */
static int64_t
rpt_day_start(const char *day)
{
	struct tm tm;

	memset(&tm, 0, sizeof(tm));
	if (sscanf(day, "%4d%2d%2d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday) != 3)
		return 0;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	return (int64_t)timegm(&tm);
}

/*
 * Builds the report mail of E to RUA (an address): headers, a text part
 * and the gzip'd JSON as application/tlsrpt+gzip (RFC 8460 5.3), CRLF
 * line ends.  Returns it malloc'd, *LEN bytes.
 */
static char *
rpt_mail(
    struct tlsrpt *t, const struct rpt_entry *e, const char *rua, size_t *len)
{
	const struct cfg_scope *g = cfg_scope(t->r->rc->cfg, NULL);
	const char *host = cfg_str(g, CFG_HOSTNAME);
	const char *org = cfg_str(g, CFG_TLSRPT_ORGANIZATION);
	const char *contact = cfg_str(g, CFG_TLSRPT_CONTACT);
	char pm[300], id[400], bnd[64], date[64], *out, *b64;
	unsigned char *gz;
	struct evbuffer *json = evbuffer_new(), *m = evbuffer_new();
	struct libdeflate_compressor *c;
	int64_t start = rpt_day_start(e->day);
	size_t jlen, glen;
	time_t now = (time_t)rq_now();
	struct tm tm;

	if (org[0] == '\0')
		org = host;
	snprintf(pm, sizeof(pm), "postmaster@%.250s", host);
	if (contact[0] == '\0')
		contact = pm;
	snprintf(id, sizeof(id), "%s_%.250s_%lld.%d@%.100s", e->day, e->domain,
	    (long long)now, (int)getpid(), host);
	rpt_json(json, e, org, contact, id, start);
	jlen = evbuffer_get_length(json);
	c = libdeflate_alloc_compressor(6);
	if (c == NULL)
		fatal(RQ_EX_SOFTWARE, "out of memory");
	glen = libdeflate_gzip_compress_bound(c, jlen);
	gz = xmalloc(glen);
	glen = libdeflate_gzip_compress(
	    c, evbuffer_pullup(json, -1), jlen, gz, glen);
	libdeflate_free_compressor(c);
	b64 = xmalloc(RQ_B64_LEN(glen) + 1);
	rq_base64_encode(gz, glen, b64);
	free(gz);
	snprintf(
	    bnd, sizeof(bnd), "tlsrpt-%lld-%d", (long long)now, (int)getpid());
	gmtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
	evbuffer_add_printf(m,
	    "From: TLS reporting <%s>\r\nTo: <%s>\r\nDate: %s\r\n"
	    "Subject: Report Domain: %s Submitter: %s Report-ID: <%s>\r\n"
	    "TLS-Report-Domain: %s\r\nTLS-Report-Submitter: %s\r\n"
	    "Message-ID: <%s>\r\nMIME-Version: 1.0\r\n"
	    "Content-Type: multipart/report; report-type=\"tlsrpt\";\r\n"
	    "\tboundary=\"%s\"\r\n\r\n"
	    "--%s\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
	    "This is an aggregate TLS report (RFC 8460) from %s.\r\n\r\n"
	    "--%s\r\nContent-Type: application/tlsrpt+gzip\r\n"
	    "Content-Transfer-Encoding: base64\r\n"
	    "Content-Disposition: attachment;\r\n"
	    "\tfilename=\"%s!%s!%lld!%lld.json.gz\"\r\n\r\n",
	    /* the submitter is a domain (RFC 8460 5.3, the file name's
	     * "sender"): the hostname; the organization's name stays in
	     * the text and the JSON */
	    pm, rua, date, e->domain, host, id, e->domain, host, id, bnd, bnd,
	    org, bnd, host, e->domain, (long long)start,
	    (long long)(start + 86399));
	for (size_t o = 0, n = strlen(b64); o < n; o += 76)
		evbuffer_add_printf(m, "%.76s\r\n", b64 + o);
	evbuffer_add_printf(m, "\r\n--%s--\r\n", bnd);
	free(b64);
	*len = evbuffer_get_length(m);
	out = xmalloc(*len + 1);
	evbuffer_remove(m, out, *len);
	out[*len] = '\0';
	evbuffer_free(m);
	evbuffer_free(json);
	return out;
}

/* The first mailto: address of rua list RUA ("mailto:a@b,https://..."),
 * into OUT; false if none. */
static bool
rpt_rua_mailto(const char *txt, char *out, size_t len)
{
	const char *p = strstr(txt, "rua=");

	if (p == NULL)
		return false;
	for (p += 4; *p;) {
		size_t n = strcspn(p, ",;");

		while (*p == ' ' && n > 0) {
			p++;
			n--;
		}
		if (n > 7 && strncasecmp(p, "mailto:", 7) == 0 && n - 7 < len &&
		    memchr(p + 7, '@', n - 7) != NULL) {
			size_t k = n - 7;

			memcpy(out, p + 7, k);
			while (k > 0 && out[k - 1] == ' ')
				k--;
			out[k] = '\0';
			/* RFC 8460 3: a "!size" suffix may follow */
			out[strcspn(out, "!")] = '\0';
			return true;
		}
		if (p[n] != ',')
			break;
		p += n + 1;
	}
	return false;
}

/* Removes send S from its list and frees it. */
static void
rpt_send_free(struct rpt_send *s)
{
	struct rpt_send **pp;

	for (pp = &s->t->sends; *pp != NULL; pp = &(*pp)->next)
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	free(s->val);
	free(s);
}

/* Whether T still has start-up work (--exit-when-idle waits for it). */
bool
runner_tlsrpt_busy(const struct tlsrpt *t)
{
	return t != NULL && (!t->checked || t->sends != NULL);
}

/* The _smtp._tls record of a report's domain arrived: send or drop. */
static void
rpt_txt_cb(void *arg, enum dns_txt_status st, const char *text)
{
	struct rpt_send *s = arg;
	struct tlsrpt *t = s->t;
	struct rpt_entry e;
	struct queue_txn *txn;
	struct queue_msg env;
	struct queue_rcpt er;
	char rua[300], *mail = NULL;
	const char *colon;
	size_t mlen = 0;
	uint64_t id = 0;

	if (st == DNS_TXT_TEMP && !s->stale) {
		rpt_send_free(s); /* next time */
		runner_idle_check(t->r);
		return;
	}
	memset(&e, 0, sizeof(e));
	colon = strchr(s->key + 4, ':');
	snprintf(e.day, sizeof(e.day), "%.8s", s->key + 4);
	snprintf(e.domain, sizeof(e.domain), "%s", colon ? colon + 1 : "");
	if (st == DNS_TXT_OK && rpt_record_parse(s->val, s->len, &e) == 0 &&
	    rpt_rua_mailto(text, rua, sizeof(rua))) {
		mail = rpt_mail(t, &e, rua, &mlen);
		/* receivers ignore an unsigned report (RFC 8460 5.3) */
		queue_dkim_sign(t->r->rc->cfg, "TLS-RPT", &mail, &mlen);
	}
	if ((txn = queue_txn_begin(t->r->q)) == NULL) {
		free(mail);
		rpt_send_free(s);
		runner_idle_check(t->r);
		return;
	}
	if (mail != NULL) {
		memset(&env, 0, sizeof(env));
		memset(&er, 0, sizeof(er));
		er.addr = rua;
		er.notify = QNOTIFY_NEVER;
		env.cls = CFG_DSN;
		env.flags = QMSG_TLS_RELAXED; /* RFC 8460 3 */
		env.sender = (char *)"";
		env.uid = (uint32_t)getuid();
		env.nrcpt = 1;
		env.rcpts = &er;
		queue_msg_insert(txn, &env, mail, mlen, &id);
	}
	queue_policy_put(txn, s->key, NULL, 0);
	if (queue_txn_commit(txn) == QUEUE_OK) {
		if (mail != NULL) {
			log_info(NULL,
			    "TLS-RPT: report for %s on %s to <%s> queued "
			    "(%llu ok, %llu failed sessions)",
			    e.domain, e.day, rua, (unsigned long long)e.ok,
			    (unsigned long long)e.fail);
			runner_sched_kick(t->r);
		}
	}
	free(mail);
	rpt_send_free(s);
	runner_idle_check(t->r);
}

/* Takes a stored record: of a past day, it is sent (or dropped). */
static bool
rpt_due_cb(const char *key, const void *val, size_t len, void *arg)
{
	struct tlsrpt *t = arg;
	struct rpt_send *s;
	char today[9];
	const char *colon = strchr(key + 4, ':');

	rpt_day(rq_now(), today);
	if (strlen(key) < 13 || colon == NULL ||
	    strncmp(key + 4, today, 8) >= 0)
		return true;
	for (s = t->sends; s != NULL; s = s->next)
		if (strcmp(s->key, key) == 0)
			return true; /* already on its way */
	s = xcalloc(1, sizeof(*s));
	s->t = t;
	snprintf(s->key, sizeof(s->key), "%s", key);
	s->val = xmalloc(len + 1);
	memcpy(s->val, val, len);
	s->val[len] = '\0';
	s->len = len;
	s->stale = rpt_day_start(key + 4) <
	    rq_now() - (int64_t)RPT_KEEP_DAYS * 86400;
	s->next = t->sends;
	t->sends = s;
	return true;
}

/* Looks for reports due: every record of a past day. */
static void
rpt_check_cb(evutil_socket_t fd, short what, void *arg)
{
	struct tlsrpt *t = arg;
	struct rpt_send *s, *next;

	rpt_flush(t);
	queue_policy_scan(t->r->q, "rpt:", rpt_due_cb, t);
	/* the lookups start after the scan (its read txn is done) */
	for (s = t->sends; s != NULL; s = next) {
		char name[300];

		next = s->next;
		if (s->asked)
			continue;
		s->asked = true;
		snprintf(name, sizeof(name), "_smtp._tls.%s",
		    strchr(s->key + 4, ':') + 1);
		runner_dns_txt(t->r->dns, name, "v=TLSRPTv1", rpt_txt_cb, s);
	}
	if (!t->checked) {
		t->checked = true;
		runner_idle_check(t->r);
	}
}

/* Starts TLS-RPT for R when tlsrpt = yes; see runner_int.h. */
struct tlsrpt *
runner_tlsrpt_new(struct runner *r)
{
	struct tlsrpt *t;
	struct timeval fl = { RPT_FLUSH, 0 }, ck = { RPT_CHECK, 0 };

	if (!cfg_int(cfg_scope(r->rc->cfg, NULL), CFG_TLSRPT))
		return NULL;
	t = xcalloc(1, sizeof(*t));
	t->r = r;
	t->flush = event_new(r->base, -1, EV_PERSIST, rpt_flush_cb, t);
	event_add(t->flush, &fl);
	t->check = event_new(r->base, -1, EV_PERSIST, rpt_check_cb, t);
	event_add(t->check, &ck);
	event_active(t->check, EV_TIMEOUT, 0); /* once at start-up */
	return t;
}

/* Saves the counts and frees T (the resolver is gone already). */
void
runner_tlsrpt_free(struct tlsrpt *t)
{
	struct rpt_entry *e;

	if (t == NULL)
		return;
	rpt_flush(t);
	while ((e = t->entries) != NULL) {
		t->entries = e->next;
		free(e);
	}
	while (t->sends != NULL)
		rpt_send_free(t->sends);
	event_free(t->flush);
	event_free(t->check);
	free(t);
}
