/*
 * expiry.c - the queue side of notices: delay warnings at queuewarn,
 * returns at queuereturn, bounces of recipients that failed permanently,
 * success notices, and `relayq bounce`.
 *
 * Public: expiry_next(), expiry_run(), expiry_after_results(),
 * expiry_bounce_now().
 *
 * Invariants:
 * - a notice is inserted (class dsn, sender <>, NOTIFY=NEVER) in the same
 *   write transaction that records its event on the original: the
 *   WARNED flag, the expiry index entry cleared, recipients BOUNCED and
 *   marked notified, or the message removed.  A crash thus yields
 *   neither a lost notice nor a duplicate.  The same transaction adds
 *   it to the queue's tally QTALLY_DSN + its event (relayq_dsn_total).
 * - a notice goes where mail to its addressee would go: a local
 *   sender (root@origin) through the alias table, as intake sends it
 *   (ORCPT: the address as written; the notice's To: unchanged).
 * - never a notice to the null sender, so never a bounce of a bounce; a
 *   notice (class dsn) that cannot be delivered is logged and dropped,
 *   with an optional copy to postmaster (notify_postmaster) that is
 *   itself never copied again.
 * - the scan uses the queue's expiry index (time|id|kind): no walk of
 *   the queue, no polling; held messages are not in the index.
 * - expiry_run() does a bounded amount of work per call (RUN_MAX events,
 *   RUN_RCPTS recipients: a big message a slice at a time, a notice per
 *   slice, recipients warned marked QRCPT_WARNED), so the event loop is
 *   never blocked long; expiry_next() is then already due.
 * - expiry_after_rcpts() costs O(the recipients listed); the walks of
 *   expiry_after_results() and of an event decode only the recipients
 *   they act on (queue_txn_load_some()).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "expiry.h"
#include "mail.h"

#define SUBSYS "bounce" /* the notices; expiry itself is qmgr's */
#define RUN_BATCH 128 /* events per write transaction */
#define RUN_MAX 256 /* events per expiry_run() call */
/* Recipients an event handles per transaction: a message with more is
 * warned or returned a slice at a time, a notice per slice, over as
 * many loop turns (its expiry entry stays due until the last). */
#define RUN_RCPTS 2000
#define BACKOFF 30 /* seconds to wait after a failed transaction */

/* After a failed transaction, expiry_next() is not earlier than this: a
 * stuck entry must not make the daemon spin. */
static int64_t expiry_backoff_until;

_Static_assert(QTALLY_DSN + EXPIRY_EV_RELAYED < QTALLY_RUNNER,
    "a tally slot for every notice event");

/* Logs R of M returned to its sender, in the delivery log's layout
 * (tries last, as pflogsumm wants; the status as Postfix's), and counts
 * it in TXN (relayq_deliveries_total{status="expired"}). */
static void
log_expired(struct queue_txn *txn, const struct queue_msg *m,
    const struct queue_rcpt *r, int64_t now, const char *status,
    const char *why)
{
	long long d = (long long)(now - m->arrival);

	if (m->cls < CFG_NCLASS)
		queue_tally_add(txn, QTALLY_EXPIRED + (unsigned)m->cls, 1);

	log_info("qmgr",
	    "%s: to=<%.200s>, relay=none, delay=%lld, delays=%lld/0/0/0, "
	    "dsn=%s, status=expired, returned to sender (%.200s), tries=%u",
	    m->idstr, r->addr, d, d, status, why, r->attempts);
}

/* A notice's recipient being collected, with the buffers behind it. */
struct nrcpt {
	struct expiry_dsn_rcpt r;
	char mta[256];
	char diag[520];
};

/* Effective NOTIFY: RFC 3461 leaves the default to the MTA; like
 * sendmail, no NOTIFY means FAILURE,DELAY. */
static unsigned
notify_of(const struct queue_rcpt *r)
{
	return r->notify != 0 ? r->notify : QNOTIFY_FAILURE | QNOTIFY_DELAY;
}

/*
 * True when a failure of R is to be reported: its NOTIFY asks for it, or
 * M is from the null sender (then the failure is only logged, and maybe
 * copied to postmaster).
 */
static bool
notify_failure(const struct queue_msg *m, const struct queue_rcpt *r)
{
	unsigned nt = notify_of(r);

	if (m->sender[0] == '\0')
		return true;
	return !(nt & QNOTIFY_NEVER) && (nt & QNOTIFY_FAILURE);
}

/* The reporting MTA's name: hostname (the host's FQDN unless set). */
static void
host_name(const struct cfg *cfg, char *buf, size_t len)
{
	snprintf(buf, len, "%s", cfg_str(cfg_scope(cfg, NULL), CFG_HOSTNAME));
}

/*
 * Splits a recipient's last reason as the runner records it ("host
 * H[IP] said: 550 5.1.1 ... (in reply to RCPT TO command)", "connect to
 * H[IP]:25: ...", or a bare reply) into the remote MTA and the
 * diagnostic text for the delivery-status part.
 */
static void
reason_split(
    const char *reason, char *mta, size_t mlen, char *diag, size_t dlen)
{
	static const char *const pfx[] = { "host ", "connect to ",
		"conversation with ", "delivery via " };
	const char *p, *said, *tail;
	size_t n;

	mta[0] = diag[0] = '\0';
	if (reason == NULL)
		return;
	for (size_t i = 0; i < sizeof(pfx) / sizeof(pfx[0]); i++) {
		size_t plen = strlen(pfx[i]);

		if (strncmp(reason, pfx[i], plen) != 0)
			continue;
		p = reason + plen;
		n = strcspn(p, "[: ");
		if (n > 0 && n < mlen) {
			memcpy(mta, p, n);
			mta[n] = '\0';
		}
		break;
	}
	said = strstr(reason, " said: ");
	if (said != NULL)
		p = said + 7;
	else
		p = reason;
	n = strlen(p);
	tail = strstr(p, " (in reply to ");
	if (tail != NULL)
		n = (size_t)(tail - p);
	if (n >= dlen)
		n = dlen - 1;
	memcpy(diag, p, n);
	diag[n] = '\0';
}

/* Fills N for recipient R of M with ACTION and STATUS (NULL: R's). */
static void
nrcpt_fill(struct nrcpt *n, const struct queue_msg *m,
    const struct queue_rcpt *r, enum expiry_action action, const char *status)
{
	memset(n, 0, sizeof(*n));
	reason_split(
	    r->reply, n->mta, sizeof(n->mta), n->diag, sizeof(n->diag));
	n->r.addr = r->addr;
	n->r.orcpt = r->orcpt;
	n->r.action = action;
	n->r.status = status != NULL ? status : r->dsn_status;
	n->r.remote_mta = n->mta[0] ? n->mta : NULL;
	n->r.diag = n->diag[0] ? n->diag : NULL;
	n->r.reason = r->reply;
	n->r.last_attempt = r->last_attempt;
	n->r.retry_until = action == EXPIRY_ACT_DELAYED ? m->return_at : 0;
}

/* Adds an address a notice's addressee expands to (mail_alias_expand()'s
 * callback), once. */
static enum mail_addr_result
notice_rcpt_found(void *arg, const char *addr)
{
	mail_addr_set_put(arg, addr, MAIL_ALIAS_FANOUT, NULL);
	return MAIL_ADDR_OK;
}

/*
 * Builds a notice about M (whose message is BODY) for the NR recipients
 * in RC and inserts it, addressed to TO (its envelope: TO's aliases when
 * TO is local mail), in TXN; *dsn_id gets its id.
 */
static enum queue_result
notice_insert(struct queue_txn *txn, const struct cfg *cfg,
    const struct queue_msg *m, const char *body, size_t bodylen,
    enum expiry_event ev, const struct nrcpt *rc, size_t nr, const char *to,
    int64_t now, uint64_t *dsn_id)
{
	struct expiry_dsn_rcpt *rs = xcalloc(nr, sizeof(*rs));
	struct expiry_dsn d;
	struct queue_msg env;
	struct queue_rcpt *er;
	struct mail_addr_set to_set;
	char host[256], *orcpt = NULL, *xt;
	enum queue_result res;
	size_t len;
	char *out;

	for (size_t i = 0; i < nr; i++)
		rs[i] = rc[i].r;
	host_name(cfg, host, sizeof(host));
	memset(&d, 0, sizeof(d));
	d.event = ev;
	d.hostname = host;
	d.origin = cfg_str(cfg_scope(cfg, NULL), CFG_ORIGIN);
	d.queue_id = m->idstr;
	d.sender = to;
	d.arrival = m->arrival;
	d.envid = m->envid;
	/* RFC 3461: the whole message only in a failure notice; without
	 * RET, as Postfix and sendmail, the whole message too. */
	d.ret_full = ev == EXPIRY_EV_FAILED && m->ret != QRET_HDRS;
	d.msg = body;
	d.msglen = bodylen;
	d.size_limit = (size_t)cfg_int(
	    cfg_scope(cfg, NULL), CFG_BOUNCE_SIZE_LIMIT);
	d.now = now;
	d.boundary = NULL; /* random */
	d.rcpts = rs;
	d.nrcpts = nr;
	out = expiry_dsn_build(&d, &len);
	free(rs);

	memset(&to_set, 0, sizeof(to_set));
	if (mail_alias_expand(cfg_mail_local(cfg), to, notice_rcpt_found,
		&to_set, NULL) != MAIL_ADDR_OK ||
	    to_set.n == 0) {
		mail_addr_set_free(&to_set);
		memset(&to_set, 0, sizeof(to_set));
		mail_addr_set_put(&to_set, to, MAIL_ALIAS_FANOUT, NULL);
	}
	xt = mail_xtext_encode(to);
	orcpt = xmalloc(strlen(xt) + 8);
	sprintf(orcpt, "rfc822;%s", xt);
	free(xt);
	er = xcalloc(to_set.n, sizeof(*er));
	for (size_t i = 0; i < to_set.n; i++) {
		er[i].idx = (uint32_t)i;
		er[i].addr = to_set.v[i];
		/* the addressee as written, when aliasing changed it */
		er[i].orcpt = strcmp(to_set.v[i], to) != 0 ? orcpt : NULL;
		er[i].notify = QNOTIFY_NEVER; /* never a notice about one */
	}
	memset(&env, 0, sizeof(env));
	env.cls = CFG_DSN;
	env.sender = (char *)"";
	env.uid = (uint32_t)getuid();
	env.arrival = 0;
	env.nrcpt = to_set.n;
	env.rcpts = er;
	res = queue_msg_insert(txn, &env, out, len, dsn_id);
	free(out);
	if (res == QUEUE_OK) /* the daemon's relayq_dsn_total */
		queue_tally_add(txn, QTALLY_DSN + (unsigned)ev, 1);
	free(er);
	free(orcpt);
	mail_addr_set_free(&to_set);
	return res;
}

/* The event's words for the log. */
static const char *
event_log_name(enum expiry_event ev)
{
	switch (ev) {
	case EXPIRY_EV_DELAYED:
		return "sender delay notification";
	case EXPIRY_EV_FAILED:
		return "sender non-delivery notification";
	default:
		return "sender delivery status notification";
	}
}

/* True when M is a notice relayq sent to postmaster PM (never
 * copied): each recipient is PM, or one of its aliases (its ORCPT PM). */
static bool
is_postmaster_copy(const struct queue_msg *m, const char *pm)
{
	char *xt = mail_xtext_encode(pm);
	bool all = m->nrcpt > 0;

	for (size_t i = 0; i < m->nrcpt && all; i++) {
		const char *o = m->rcpts[i].orcpt;

		all = strcasecmp(m->rcpts[i].addr, pm) == 0 ||
		    (o != NULL && strncasecmp(o, "rfc822;", 7) == 0 &&
			strcasecmp(o + 7, xt) == 0);
	}
	free(xt);
	return all;
}

/*
 * A notice M (sender <>) could not be delivered to the NR recipients in
 * RC: logs it, and with notify_postmaster sends postmaster a copy of the
 * failure with the notice attached.
 */
static enum queue_result
notice_undeliverable(struct queue_txn *txn, const struct cfg *cfg,
    const struct queue_msg *m, const char *body, size_t bodylen,
    const struct nrcpt *rc, size_t nr, int64_t now)
{
	const char *pm = cfg_str(cfg_scope(cfg, NULL), CFG_POSTMASTER);
	uint64_t cid = 0;
	enum queue_result res;

	for (size_t i = 0; i < nr; i++) {
		const char *why = rc[i].r.reason ? rc[i].r.reason
						 : rc[i].r.status;

		if (m->cls == CFG_DSN)
			log_warn(SUBSYS,
			    "%s: undeliverable notice to <%.200s> dropped "
			    "(%.200s)",
			    m->idstr, rc[i].r.addr, why);
		else
			log_info(SUBSYS,
			    "%s: to=<%.200s>: no non-delivery notification "
			    "to the null sender (%.200s)",
			    m->idstr, rc[i].r.addr, why);
	}
	if (!cfg_int(cfg_scope(cfg, NULL), CFG_NOTIFY_POSTMASTER) ||
	    m->cls != CFG_DSN)
		return QUEUE_OK;
	if (is_postmaster_copy(m, pm))
		return QUEUE_OK;
	res = notice_insert(txn, cfg, m, body, bodylen, EXPIRY_EV_FAILED, rc,
	    nr, pm, now, &cid);
	if (res == QUEUE_OK)
		log_info(SUBSYS,
		    "%s: postmaster non-delivery notification: %016llX",
		    m->idstr, (unsigned long long)cid);
	return res;
}

/*
 * Reports the NR recipients of M in RC with a notice of event EV to the
 * sender (or, for an undeliverable notice, to the log and postmaster).
 */
static enum queue_result
report(struct queue_txn *txn, const struct cfg *cfg, const struct queue_msg *m,
    enum expiry_event ev, const struct nrcpt *rc, size_t nr, int64_t now)
{
	char *body = NULL;
	size_t bodylen = 0;
	uint64_t did = 0;
	enum queue_result res;

	if (nr == 0)
		return QUEUE_OK;
	if (m->sender[0] == '\0' && ev != EXPIRY_EV_FAILED)
		return QUEUE_OK;
	res = queue_txn_body_load(txn, m->id, &body, &bodylen);
	if (res != QUEUE_OK)
		return res;
	if (m->sender[0] == '\0') {
		res = notice_undeliverable(
		    txn, cfg, m, body, bodylen, rc, nr, now);
	} else {
		res = notice_insert(txn, cfg, m, body, bodylen, ev, rc, nr,
		    m->sender, now, &did);
		if (res == QUEUE_OK)
			log_info(SUBSYS, "%s: %s: %016llX", m->idstr,
			    event_log_name(ev), (unsigned long long)did);
	}
	free(body);
	return res;
}

/* True when recipient R has not been reported by a notice yet. */
static bool
rcpt_unreported(const struct queue_rcpt *r)
{
	return (r->flags & QRCPT_NOTIFIED) == 0;
}

/* Marks recipient IDX of message ID as reported. */
static enum queue_result
rcpt_mark_reported(struct queue_txn *txn, uint64_t id, uint32_t idx)
{
	return queue_rcpt_flags_set(txn, id, idx, QRCPT_NOTIFIED, 0);
}

/*
 * Handles a queuewarn event of message M (loaded with the recipients to
 * warn about in this slice) inside TXN: a notice listing them, each
 * marked QRCPT_WARNED.  LAST: no other recipient is left to warn about,
 * the message is marked WARNED.  *DONE: the event is over (the last
 * slice, or no warning at all).
 */
static enum queue_result
warn_msg(struct queue_txn *txn, const struct cfg *cfg,
    const struct queue_msg *m, bool last, int64_t now, bool *done)
{
	struct nrcpt *rc;
	size_t nr = 0;
	enum queue_result res = QUEUE_OK;
	char *body = NULL;
	size_t bodylen = 0;

	*done = true;
	if (m->flags & (QMSG_HELD | QMSG_WARNED))
		return QUEUE_OK;
	if (m->flags & QMSG_RETURNED) /* returned meanwhile: no warning */
		return queue_msg_flags_set(txn, m->id, QMSG_WARNED, 0);
	/* No warning to the null sender, nor just before the return (a
	 * message released from hold, or a daemon that was down). */
	if (m->sender[0] == '\0' || (m->return_at != 0 && m->return_at <= now))
		return queue_msg_flags_set(txn, m->id, QMSG_WARNED, 0);
	rc = xcalloc(m->nrcpt ? m->nrcpt : 1, sizeof(*rc));
	for (size_t i = 0; i < m->nrcpt; i++) {
		const struct queue_rcpt *r = &m->rcpts[i];

		if (r->state != RCPT_PENDING && r->state != RCPT_DEFERRED)
			continue;
		if ((notify_of(r) & QNOTIFY_NEVER) ||
		    !(notify_of(r) & QNOTIFY_DELAY))
			continue;
		nrcpt_fill(&rc[nr++], m, r, EXPIRY_ACT_DELAYED, NULL);
	}
	if (nr > 0) {
		res = queue_txn_body_load(txn, m->id, &body, &bodylen);
		if (res == QUEUE_OK && expiry_msg_is_bulk(body, bodylen)) {
			log_info(SUBSYS,
			    "%s: no delay notification: "
			    "Precedence: bulk, junk or list",
			    m->idstr);
			nr = 0;
			last = true;
		}
		free(body);
	}
	if (res == QUEUE_OK && nr > 0)
		res = report(txn, cfg, m, EXPIRY_EV_DELAYED, rc, nr, now);
	for (size_t i = 0; i < m->nrcpt && res == QUEUE_OK && !last; i++)
		res = queue_rcpt_flags_set(
		    txn, m->id, m->rcpts[i].idx, QRCPT_WARNED, 0);
	if (res == QUEUE_OK && last)
		res = queue_msg_flags_set(txn, m->id, QMSG_WARNED, 0);
	*done = last;
	free(rc);
	return res;
}

/*
 * Returns every recipient of M (as loaded: all, or a slice) not yet done
 * with STATUS and REASON (NULL: each one's last reply) and reports
 * them, inside TXN.  LAST: no other is left, the message is marked
 * RETURNED and taken out of the queue.
 */
static enum queue_result
return_msg(struct queue_txn *txn, const struct cfg *cfg,
    const struct queue_msg *m, const char *status, const char *reason,
    bool last, int64_t now, size_t *inflight)
{
	struct nrcpt *rc = xcalloc(m->nrcpt ? m->nrcpt : 1, sizeof(*rc));
	size_t nr = 0;
	enum queue_result res = QUEUE_OK;

	if (inflight != NULL)
		*inflight = 0;
	log_hold();
	for (size_t i = 0; i < m->nrcpt && res == QUEUE_OK; i++) {
		const struct queue_rcpt *r = &m->rcpts[i];
		bool live = r->state == RCPT_PENDING ||
		    r->state == RCPT_DEFERRED;

		/* A recipient in flight is left to its result: returned by
		 * expiry_after_results() if that is a deferral (the message
		 * is then marked RETURNED), never bounced while it may be
		 * being delivered. */
		if (live && (r->flags & QRCPT_LEASED)) {
			if (inflight != NULL)
				++*inflight;
			continue;
		}
		/* A bounce not reported yet (none should be: it is reported
		 * in the transaction that records it) goes along. */
		if (!live && !(r->state == RCPT_BOUNCED && rcpt_unreported(r)))
			continue;
		if (live) {
			res = queue_rcpt_update(txn, m->id, r->idx,
			    RCPT_BOUNCED, 0, reason, status);
			log_expired(txn, m, r, now, status,
			    r->reply ? r->reply : "never tried");
		}
		if (res == QUEUE_OK)
			res = rcpt_mark_reported(txn, m->id, r->idx);
		if (res != QUEUE_OK || !notify_failure(m, r))
			continue;
		nrcpt_fill(
		    &rc[nr], m, r, EXPIRY_ACT_FAILED, live ? status : NULL);
		if (live && reason != NULL)
			rc[nr].r.reason = reason;
		else if (live && r->reply == NULL)
			rc[nr].r.reason = "delivery time expired";
		nr++;
	}
	log_release();
	if (res == QUEUE_OK && nr > 0)
		res = report(txn, cfg, m, EXPIRY_EV_FAILED, rc, nr, now);
	if (res == QUEUE_OK && last)
		res = queue_msg_flags_set(txn, m->id, QMSG_RETURNED, 0);
	if (res == QUEUE_OK && last)
		res = queue_msg_reschedule(txn, m->id);
	free(rc);
	return res;
}

/* What event_pick() saw of a message and took of it. */
struct pick {
	enum queue_expiry_kind kind;
	size_t taken, max;
	bool more; /* one to act on is left for the next slice */
	bool fresh; /* one not done was never tried */
};

/*
 * The recipients an expiry event acts on in this slice (a
 * queue_rcpt_pick): for a warning, those not done, not warned about yet
 * and asking for delay notices; for a return, those not done and not in
 * flight, and bounces not reported yet.  At most max of them.
 */
static bool
event_pick(const struct queue_msg *m, const struct queue_rcpt *r, void *arg)
{
	struct pick *pk = arg;
	bool open = r->state == RCPT_PENDING || r->state == RCPT_DEFERRED;
	bool want;

	if (open && r->attempts == 0)
		pk->fresh = true;
	if (pk->kind == QEXP_WARN)
		want = open && !(r->flags & QRCPT_WARNED) &&
		    !(notify_of(r) & QNOTIFY_NEVER) &&
		    (notify_of(r) & QNOTIFY_DELAY);
	else
		want = (open && !(r->flags & QRCPT_LEASED)) ||
		    (r->state == RCPT_BOUNCED && rcpt_unreported(r));
	if (!want)
		return false;
	if (pk->taken == pk->max) {
		pk->more = true;
		return false;
	}
	pk->taken++;
	return true;
}

/*
 * Handles one due expiry event inside TXN, a slice of at most MAX
 * recipients (*TAKEN gets how many); the event's entry stays (due) until
 * its last slice.  With timeout.queuereturn = now (as sendmail's) a
 * message is returned at its first temporary failure, not before its
 * first attempt: the return is then left to expiry_after_results().
 */
static enum queue_result
event_handle(struct queue_txn *txn, const struct cfg *cfg,
    const struct queue_expiry_ev *ev, int64_t now, size_t max, size_t *taken)
{
	struct queue_msg *m = NULL;
	struct pick pk = { ev->kind, 0, max, false, false };
	enum queue_result res;
	bool done = true;

	*taken = 0;
	res = queue_txn_load_some(txn, ev->id, event_pick, &pk, &m);
	if (res == QUEUE_NOTFOUND)
		return QUEUE_OK; /* gone meanwhile */
	if (res != QUEUE_OK)
		return res;
	*taken = pk.taken;
	if (m->flags & QMSG_HELD) {
		/* held mail does not expire: release restores the entry */
	} else if (ev->kind == QEXP_WARN) {
		res = warn_msg(txn, cfg, m, !pk.more, now, &done);
	} else if (!(pk.fresh &&
		       cfg_time(cfg_scope(cfg, NULL), CFG_T_QUEUERETURN, m->cls,
			   false) == 0)) {
		res = return_msg(
		    txn, cfg, m, "4.4.7", NULL, !pk.more, now, NULL);
		done = !pk.more;
	}
	if (res == QUEUE_OK && done) {
		res = queue_expiry_clear(txn, ev->id, (int)ev->kind);
		if (res == QUEUE_NOTFOUND)
			res = QUEUE_OK; /* handled by someone else meanwhile */
	}
	queue_msg_free(m);
	return res;
}

/* When the next warning or return is due; see expiry.h. */
int64_t
expiry_next(struct queue *q)
{
	int64_t t = queue_expiry_next(q);

	if (t != INT64_MAX && t < expiry_backoff_until)
		t = expiry_backoff_until;
	return t;
}

/*
 * Runs EVS[0..N) in one transaction, as many as RUN_RCPTS recipients
 * allow (at least one; *DONE gets how many, and is less than N or 0
 * when the recipients ran out: the rest stays due for the next call);
 * returns the commit's result.
 */
static enum queue_result
run_batch(struct queue *q, const struct cfg *cfg,
    const struct queue_expiry_ev *evs, size_t n, int64_t now, size_t *done)
{
	struct queue_txn *txn = queue_txn_begin(q);
	enum queue_result res = QUEUE_OK;
	size_t left = RUN_RCPTS, taken;

	*done = 0;
	if (txn == NULL)
		return QUEUE_ERR;
	for (size_t i = 0; i < n && res == QUEUE_OK && left > 0; i++) {
		res = event_handle(txn, cfg, &evs[i], now, left, &taken);
		left -= taken < left ? taken : left;
		(*done)++;
	}
	if (left == 0 && *done == n)
		*done = 0; /* maybe a slice of the last: not over */
	if (res != QUEUE_OK) {
		queue_txn_abort(txn);
		return res;
	}
	return queue_txn_commit(txn);
}

/* Handles due warnings and returns; see expiry.h. */
void
expiry_run(struct queue *q, const struct cfg *cfg, int64_t now)
{
	struct queue_expiry_ev evs[RUN_BATCH];
	size_t done = 0, n;

	if (now < expiry_backoff_until)
		return;
	expiry_backoff_until = 0;
	while (done < RUN_MAX &&
	    (n = queue_expiry_due_list(q, now, evs, RUN_BATCH)) > 0) {
		size_t k;

		if (run_batch(q, cfg, evs, n, now, &k) == QUEUE_OK) {
			if (k < n)
				break; /* a slice's worth: the rest next turn */
			done += k;
			continue;
		}
		/* Find the one that fails: each alone. */
		for (size_t i = 0; i < n; i++) {
			enum queue_result res = run_batch(
			    q, cfg, &evs[i], 1, now, &k);

			if (res != QUEUE_OK) {
				log_err("qmgr",
				    "%016llX: cannot handle its %s time "
				    "(queue error %d); trying again in %ds",
				    (unsigned long long)evs[i].id,
				    evs[i].kind == QEXP_WARN ? "queuewarn"
							     : "queuereturn",
				    (int)res, BACKOFF);
				expiry_backoff_until = now + BACKOFF;
				return;
			}
		}
		done += n;
	}
}

/* Whether M's deferred recipients are returned at once (see
 * expiry_after_results()). */
static bool
returns_now(const struct cfg *cfg, const struct queue_msg *m)
{
	return (m->flags & QMSG_RETURNED) ||
	    (!(m->flags & QMSG_HELD) &&
		cfg_time(cfg_scope(cfg, NULL), CFG_T_QUEUERETURN, m->cls,
		    false) == 0);
}

/* The recipients expiry_after_results() may act on: returned now, or
 * done and not reported yet (a queue_rcpt_pick; ARG is the cfg).  The
 * others are not even decoded, so a message with many recipients costs
 * a cursor step per recipient here. */
static bool
after_results_pick(
    const struct queue_msg *m, const struct queue_rcpt *r, void *arg)
{
	if (r->state == RCPT_DEFERRED && r->attempts > 0 &&
	    !(r->flags & QRCPT_LEASED) && returns_now(arg, m))
		return true;
	return rcpt_unreported(r) &&
	    (r->state == RCPT_BOUNCED ||
		(r->state == RCPT_DELIVERED && (r->notify & QNOTIFY_SUCCESS)));
}

static enum queue_result after_results(
    struct queue_txn *, const struct cfg *, struct queue_msg *, int64_t now);

/* Reports recipients that just failed or were delivered; see expiry.h. */
enum queue_result
expiry_after_results(
    struct queue_txn *txn, const struct cfg *cfg, uint64_t id, int64_t now)
{
	struct queue_msg *m = NULL;
	enum queue_result res;

	res = queue_txn_load_some(
	    txn, id, after_results_pick, (void *)(uintptr_t)cfg, &m);
	if (res == QUEUE_NOTFOUND)
		return QUEUE_OK;
	if (res != QUEUE_OK)
		return res;
	return after_results(txn, cfg, m, now);
}

/* The same for the recipients listed; see expiry.h. */
enum queue_result
expiry_after_rcpts(struct queue_txn *txn, const struct cfg *cfg, uint64_t id,
    const uint32_t *idx, size_t n, int64_t now)
{
	struct queue_msg *m = NULL;
	enum queue_result res;

	res = queue_txn_load_rcpts(
	    txn, id, idx, n, after_results_pick, (void *)(uintptr_t)cfg, &m);
	if (res == QUEUE_NOTFOUND)
		return QUEUE_OK;
	if (res != QUEUE_OK)
		return res;
	return after_results(txn, cfg, m, now);
}

/* Reports the recipients of M (loaded with after_results_pick) and
 * frees M. */
static enum queue_result
after_results(struct queue_txn *txn, const struct cfg *cfg, struct queue_msg *m,
    int64_t now)
{
	struct nrcpt *fail, *ok;
	size_t nf = 0, nok = 0;
	enum queue_result res = QUEUE_OK;
	uint64_t id = m->id;
	bool ret_now;

	if (m->nrcpt == 0) {
		queue_msg_free(m);
		return QUEUE_OK;
	}
	ret_now = returns_now(cfg, m);
	fail = xcalloc(m->nrcpt ? m->nrcpt : 1, sizeof(*fail));
	ok = xcalloc(m->nrcpt ? m->nrcpt : 1, sizeof(*ok));
	for (size_t i = 0; i < m->nrcpt && res == QUEUE_OK; i++) {
		const struct queue_rcpt *r = &m->rcpts[i];
		unsigned nt = notify_of(r);

		if (ret_now && r->state == RCPT_DEFERRED && r->attempts > 0 &&
		    !(r->flags & QRCPT_LEASED)) {
			/* Returned: at the first temporary failure with
			 * timeout.queuereturn = now (with that failure's
			 * status), or a recipient that was in flight when
			 * its message was returned (4.4.7). */
			const char *st = r->dsn_status[0] == '4' &&
				!(m->flags & QMSG_RETURNED)
			    ? r->dsn_status
			    : (m->flags & QMSG_ADMIN_RETURN) ? "5.0.0"
							     : "4.4.7";

			res = queue_rcpt_update(
			    txn, id, r->idx, RCPT_BOUNCED, 0, NULL, st);
			log_expired(
			    txn, m, r, now, st, r->reply ? r->reply : "");
			if (res == QUEUE_OK)
				res = rcpt_mark_reported(txn, id, r->idx);
			if (res == QUEUE_OK && notify_failure(m, r))
				nrcpt_fill(
				    &fail[nf++], m, r, EXPIRY_ACT_FAILED, st);
			continue;
		}
		/* Delivered recipients that asked for no success notice
		 * are left alone: no write on the common path. */
		if (r->state != RCPT_BOUNCED &&
		    !(r->state == RCPT_DELIVERED &&
			(r->notify & QNOTIFY_SUCCESS)))
			continue;
		if (!rcpt_unreported(r))
			continue;
		res = rcpt_mark_reported(txn, id, r->idx);
		if ((nt & QNOTIFY_NEVER) && m->sender[0] != '\0')
			continue;
		if (r->state == RCPT_BOUNCED && notify_failure(m, r)) {
			nrcpt_fill(&fail[nf++], m, r, EXPIRY_ACT_FAILED, NULL);
		} else if (r->state == RCPT_DELIVERED &&
		    (r->notify & QNOTIFY_SUCCESS) &&
		    !(r->flags & QRCPT_RELAYED_DSN)) {
			/* Handed to a next hop without DSN: "relayed"
			 * (RFC 3461 5.2.3).  A hop that offered DSN took
			 * NOTIFY with the message, and the success notice
			 * is its to send, as with Postfix's smtp. */
			nrcpt_fill(&ok[nok++], m, r, EXPIRY_ACT_RELAYED, NULL);
		}
	}
	if (res == QUEUE_OK && nf > 0)
		res = report(txn, cfg, m, EXPIRY_EV_FAILED, fail, nf, now);
	if (res == QUEUE_OK && nok > 0)
		res = report(txn, cfg, m, EXPIRY_EV_RELAYED, ok, nok, now);
	free(fail);
	free(ok);
	queue_msg_free(m);
	return res;
}

/* Returns a message to its sender now; see expiry.h. */
enum queue_result
expiry_bounce_now(
    struct queue *q, const struct cfg *cfg, uint64_t id, size_t *inflight)
{
	struct queue_txn *txn = queue_txn_begin(q);
	struct queue_msg *m = NULL;
	enum queue_result res;
	int64_t now = rq_now();

	*inflight = 0;
	if (txn == NULL)
		return QUEUE_ERR;
	res = queue_txn_load(txn, id, &m);
	if (res == QUEUE_OK) {
		/* Its expiry entries go with it when it is removed. */
		res = return_msg(txn, cfg, m, "5.0.0",
		    "message returned to sender by the mail system "
		    "administrator",
		    true, now, inflight);
		/* what is in flight returns as 5.0.0 when its attempt ends
		 * in a deferral (postsuper -e's forced_expire) */
		if (res == QUEUE_OK && *inflight > 0)
			res = queue_msg_flags_set(
			    txn, id, QMSG_ADMIN_RETURN, 0);
		queue_msg_free(m);
	}
	if (res != QUEUE_OK) {
		queue_txn_abort(txn);
		return res;
	}
	res = queue_txn_commit(txn);
	if (res == QUEUE_OK)
		queue_wakeup_send(q);
	return res;
}
