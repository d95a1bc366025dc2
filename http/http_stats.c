/*
 * http_stats.c - what the runner keeps in memory for the status page:
 * the last fifty failures, each destination domain's last error, and a
 * ring of an hour's results and queue sizes for the charts; the delay
 * buckets of the histogram (whose counts are tallies of the queue).
 *
 * Public: http_stats_new(), http_stats_free(), http_stats_result(),
 * http_stats_sample(), http_delay_bucket().  http-private:
 * http_stats_err(), http_stats_slot(), http_delay_le.
 *
 * Invariants: everything is bounded (HTTP_FAIL_MAX failures,
 * HTTP_ERR_MAX domains, evicted in the order they came; HTTP_RING
 * slots, reused as time goes round); a result costs O(1) (a hash
 * lookup, a few copies).  It lives as long as the daemon, so a reload
 * keeps it; a restart starts it empty (the counters of /metrics are
 * the queue's tallies: they go on).
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "http_int.h"

/* Upper bounds of the delay histogram, seconds: a second to a week
 * (queuereturn's range). */
const double http_delay_le[HTTP_DELAY_NB] = { 1, 5, 10, 30, 60, 300, 900, 1800,
	3600, 7200, 14400, 43200, 86400, 172800, 432000, 604800 };

/* The bucket of a delay; see http.h. */
unsigned
http_delay_bucket(int64_t delay_us)
{
	double d = delay_us > 0 ? (double)delay_us / 1e6 : 0;
	unsigned b = 0;

	while (b < HTTP_DELAY_NB && d > http_delay_le[b])
		b++;
	return b;
}

/* Makes the record; see http.h. */
struct http_stats *
http_stats_new(void)
{
	struct http_stats *s = xcalloc(1, sizeof(*s));

	for (size_t i = 0; i < sizeof(s->buckets) / sizeof(s->buckets[0]); i++)
		s->buckets[i] = -1;
	return s;
}

/* Frees the record. */
void
http_stats_free(struct http_stats *s)
{
	free(s);
}

/* FNV-1a of a domain, a bucket of s->buckets. */
static size_t
dom_hash(const char *d)
{
	uint32_t h = 2166136261u;

	for (; *d != '\0'; d++)
		h = (h ^ (unsigned char)*d) * 16777619u;
	return h % (2 * HTTP_ERR_MAX);
}

/* DOMAIN's last error, or NULL. */
const struct http_err *
http_stats_err(const struct http_stats *s, const char *domain)
{
	for (int i = s->buckets[dom_hash(domain)]; i >= 0; i = s->errs[i].next)
		if (strcmp(s->errs[i].domain, domain) == 0)
			return &s->errs[i];
	return NULL;
}

/* Takes entry I (the next to go) out of its bucket. */
static void
err_unlink(struct http_stats *s, int i)
{
	int *pp = &s->buckets[dom_hash(s->errs[i].domain)];

	while (*pp != i)
		pp = &s->errs[*pp].next;
	*pp = s->errs[i].next;
	s->errs[i].used = false;
}

/* Records DOMAIN's last error. */
static void
err_set(struct http_stats *s, const char *domain, int64_t now, const char *dsn,
    const char *why)
{
	struct http_err *e = (struct http_err *)http_stats_err(s, domain);

	if (e == NULL) {
		int i = (int)s->evict;
		size_t h = dom_hash(domain);

		s->evict = (s->evict + 1) % HTTP_ERR_MAX;
		if (s->errs[i].used)
			err_unlink(s, i);
		e = &s->errs[i];
		snprintf(e->domain, sizeof(e->domain), "%s", domain);
		e->used = true;
		e->next = s->buckets[h];
		s->buckets[h] = i;
	}
	e->time = now;
	snprintf(e->dsn, sizeof(e->dsn), "%s", dsn ? dsn : "");
	rq_sanitize(
	    e->why, sizeof(e->why), why ? why : "", why ? strlen(why) : 0);
}

/* The ring's slot for time T, made current (emptied) when it held an
 * older step. */
static struct http_slot *
slot_at(struct http_stats *s, int64_t t)
{
	int64_t start = t - t % HTTP_RING_STEP;
	struct http_slot *sl = &s->ring[(start / HTTP_RING_STEP) % HTTP_RING];

	if (sl->t != start) {
		memset(sl, 0, sizeof(*sl));
		sl->t = start;
	}
	return sl;
}

/* The ring's slot for time T if it holds T's step, else NULL. */
const struct http_slot *
http_stats_slot(const struct http_stats *s, int64_t t)
{
	int64_t start = t - t % HTTP_RING_STEP;
	const struct http_slot *sl =
	    &s->ring[(start / HTTP_RING_STEP) % HTTP_RING];

	return sl->t == start ? sl : NULL;
}

/* Counts one result; see http.h. */
void
http_stats_result(struct http_stats *s, enum cfg_class cls,
    enum http_result res, int64_t now_us, const char *qid, const char *rcpt,
    const char *dsn, const char *why)
{
	int64_t now = now_us / 1000000;
	struct http_fail *f;
	const char *at;
	char dom[256];
	size_t i;

	if ((unsigned)cls >= CFG_NCLASS || (unsigned)res >= HTTP_NRESULT)
		return;
	slot_at(s, now)->n[res]++;
	if (res == HTTP_SENT)
		return;
	f = &s->fails[s->fnext];
	s->fnext = (s->fnext + 1) % HTTP_FAIL_MAX;
	if (s->nfails < HTTP_FAIL_MAX)
		s->nfails++;
	f->time = now;
	f->cls = cls;
	f->res = res;
	snprintf(f->qid, sizeof(f->qid), "%s", qid ? qid : "");
	rq_sanitize(f->rcpt, sizeof(f->rcpt), rcpt ? rcpt : "",
	    rcpt ? strlen(rcpt) : 0);
	snprintf(f->dsn, sizeof(f->dsn), "%s", dsn ? dsn : "");
	rq_sanitize(
	    f->why, sizeof(f->why), why ? why : "", why ? strlen(why) : 0);
	at = rcpt ? strrchr(rcpt, '@') : NULL;
	if (at == NULL || at[1] == '\0')
		return;
	for (i = 0; at[1 + i] != '\0' && i < sizeof(dom) - 1; i++)
		dom[i] = (char)tolower((unsigned char)at[1 + i]);
	dom[i] = '\0';
	err_set(s, dom, now, dsn, why);
}

/* Records the queue's size for the charts; see http.h. */
void
http_stats_sample(
    struct http_stats *s, const uint64_t msgs[CFG_NCLASS], int64_t now)
{
	struct http_slot *sl = slot_at(s, now);

	memcpy(sl->msgs, msgs, sizeof(sl->msgs));
	sl->sampled = true;
}
