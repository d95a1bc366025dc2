/*
 * runner_job.c - jobs: one message's leased recipients for one
 * destination, built as a take hands them out, submitted to the SMTP
 * client when their destination lets them go (runner_dest.c), and ended
 * by the client's callback.
 *
 * Runner-private: runner_job_add(), runner_job_submit(),
 * runner_job_free().
 *
 * The rules.  A take puts all the recipients of a message for one
 * destination into one job (the client splits it by
 * max_recipients_per_transaction), and a slice's recipients join the
 * job of the same message still waiting at their destination, up to
 * RUNNER_TAKE_RCPTS recipients a job; a recipient without a domain is
 * bounced at once (5.1.3).  The destination is runner_route.c's choice
 * for the recipient's domain and the message's sender.  The body is
 * loaded, and so a deletion noticed, at a message's first submit.  A
 * job whose result says the host is down (host_down) goes, whole and
 * without a result, to the next fallback relay of its destination when
 * there is one (runner_route_fallback), and the destination is marked
 * down as such a result marks it; otherwise its results are recorded.
 * Recipients the client did not try for a local reason (no file
 * descriptor left) are put back at the head of their destination's list
 * without a result (no attempt is counted: the shortage is the
 * daemon's, not the message's), and the connections in all are then
 * capped at those open for FD_CAP_US (none at all for FD_WAIT_US when
 * none is open).
 *
 * Every finished request feeds its destination's concurrency window
 * (runner_dest_feedback): a session is success, a host found down is a
 * connection-level failure.
 *
 * Invariants: a job holds a reference to its message (runner_sched.c)
 * until runner_job_free(); a job's results are recorded before the job
 * is freed; a finished job frees its slot for its destination, then for
 * the destinations waiting for any slot, then, when a quarter of the
 * in-memory budget is free, for a scheduling pass.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "mail.h"
#include "runner_int.h"

#define FD_CAP_US 10000000 /* connections capped after a local failure */
#define FD_WAIT_US 1000000 /* ... or none at all, with none open */

/* Frees a job and drops its message reference. */
void
runner_job_free(struct runner *r, struct job *j)
{
	runner_rmsg_release(r, j->m);
	free(j->idx);
	free(j);
}

/* Bounces recipient I of M at once (DSN, WHY): an address no SMTP
 * server could be given, which no retry mends. */
static void
job_fail_address(struct runner *r, struct rmsg *m, size_t i, const char *dsn,
    const char *why)
{
	struct job *j = xcalloc(1, sizeof(*j));

	j->m = m;
	m->refs++;
	j->cls = m->msg->cls;
	j->idx = xmalloc(sizeof(*j->idx));
	j->idx[0] = (uint32_t)i;
	j->nidx = j->aidx = 1;
	j->dest = NULL;
	runner_result_job_fail(r, j, 5, dsn, why);
	runner_job_free(r, j);
}

/*
 * The job of M for D that this take fills: the one it started there,
 * or one of M (an earlier slice) still waiting there for a connection,
 * or a new one, added to the take's *JOBS.
 */
static struct job *
job_of_take(struct runner *r, struct rmsg *m, struct dest *d,
    struct job ***jobs, size_t *njobs, size_t *ajobs)
{
	struct job *j;

	if (d->build_gen == r->build_gen) {
		j = d->build; /* O(1): no search among this take's jobs */
	} else if ((j = d->wait_tail[m->msg->cls]) != NULL && j->m == m &&
	    j->nidx < RUNNER_TAKE_RCPTS) {
		/* a job of this message (an earlier slice) still waits for
		 * a connection: one job, not a small one per slice */
		d->build = j;
		d->build_gen = r->build_gen;
	} else {
		j = xcalloc(1, sizeof(*j));
		j->m = m;
		m->refs++;
		j->dest = d;
		j->cls = m->msg->cls;
		d->build = j;
		d->build_gen = r->build_gen;
		if (*njobs == *ajobs) {
			*ajobs = *ajobs ? *ajobs * 2 : 8;
			*jobs = xrealloc(*jobs, *ajobs * sizeof(**jobs));
		}
		(*jobs)[(*njobs)++] = j;
	}
	return j;
}

/* Adds recipient I of M to this take's job for its destination. */
struct job *
runner_job_add(struct runner *r, struct rmsg *m, size_t i, struct job ***jobs,
    size_t *njobs, size_t *ajobs)
{
	struct queue_rcpt *q = &m->msg->rcpts[i];
	const char *at = strrchr(q->addr, '@');
	char dom[256];
	struct dest *d;
	struct job *j;
	size_t k, n;

	if (at == NULL || at[1] == '\0') {
		job_fail_address(
		    r, m, i, "5.1.3", "bad address syntax: no domain");
		return NULL;
	}
	/* what intake took but no SMTP command line can carry (a '<' in
	 * a domain literal, say): returned now, alone; the others go */
	if (!smtp_path_ok(q->addr)) {
		job_fail_address(r, m, i, "5.1.3",
		    "bad address syntax: cannot be given to an SMTP server");
		return NULL;
	}
	if (!smtp_path_ok(m->msg->sender)) {
		job_fail_address(r, m, i, "5.1.7",
		    "bad sender address syntax: cannot be given to an SMTP "
		    "server");
		return NULL;
	}
	n = strlen(at + 1);
	if (n >= sizeof(dom))
		n = sizeof(dom) - 1;
	for (k = 0; k < n; k++)
		dom[k] = (char)tolower((unsigned char)at[1 + k]);
	dom[n] = '\0';
	d = runner_route_dest(
	    r, dom, m->msg->sender, (m->msg->flags & QMSG_TLS_RELAXED) != 0);
	j = job_of_take(r, m, d, jobs, njobs, ajobs);
	if (j->nidx == j->aidx) {
		j->aidx = j->aidx ? j->aidx * 2 : 8;
		j->idx = xrealloc(j->idx, j->aidx * sizeof(*j->idx));
	}
	j->idx[j->nidx++] = (uint32_t)i;
	if (j->nidx >= RUNNER_TAKE_RCPTS)
		d->build_gen = 0; /* full: the next one starts a new job */
	return j;
}

/*
 * The recipients of J that the client did not try for a local reason
 * (no file descriptor left): a new job for them, which the caller puts
 * back (no attempt is counted: it is the daemon's shortage, not the
 * message's); NULL when there are none, or when stopping (they keep
 * their leases and are retried at once on the next start).  Caps the
 * connections in all at those open now for a while (none for
 * FD_WAIT_US when none is open), so that the shortage is not hit again
 * at once.
 */
static struct job *
job_local_split(struct runner *r, struct job *j, const struct smtp_result *res)
{
	struct job *b;
	int64_t now = rq_now_us();
	size_t n = 0, first = 0;
	unsigned open;

	for (size_t i = 0; i < res->nrcpts && i < j->nidx; i++)
		if (res->rcpts[i].local && n++ == 0)
			first = i;
	if (n == 0)
		return NULL;
	open = smtp_client_conn_total(r->smtp);
	r->fd_cap = open;
	r->fd_cap_until = now + (open > 0 ? FD_CAP_US : FD_WAIT_US);
	log_warn("qmgr",
	    "%s: %zu recipient%s put back, no attempt counted: %.200s; "
	    "at most %u connections for %d s",
	    j->m->msg->idstr, n, n == 1 ? "" : "s", res->rcpts[first].text,
	    open, (int)((r->fd_cap_until - now) / 1000000));
	if (r->stopping)
		return NULL;
	b = xcalloc(1, sizeof(*b));
	b->m = j->m;
	b->m->refs++;
	b->dest = j->dest;
	b->cls = j->cls;
	b->aidx = n;
	b->idx = xcalloc(n, sizeof(*b->idx));
	for (size_t i = 0; i < res->nrcpts && i < j->nidx; i++)
		if (res->rcpts[i].local)
			b->idx[b->nidx++] = j->idx[i];
	return b;
}

/* A request finished: record its results and fill the freed slot. */
static void
job_done_cb(void *arg, const struct smtp_result *res)
{
	struct job *j = arg, *back;
	struct dest *d = j->dest;
	struct runner *r = d->runner;
	struct dest *fd;

	runner_dest_feedback(d, res);
	d->active--;
	r->active--;
	if (res->next_taken)
		d->chained--; /* the job behind it has the connection now */
	if (res->host_down && (fd = runner_route_fallback(r, d)) != NULL) {
		/* Unreachable: the next fallback relay takes the job. */
		runner_dest_host_down(r, d, res);
		runner_dest_job_move(
		    r, j, fd, res->nrcpts ? res->rcpts[0].text : "");
		runner_dest_kick(r, d);
		runner_dest_ready_kick(r);
		return;
	}
	back = job_local_split(r, j, res);
	runner_result_job_done(r, j, res); /* all but those put back */
	runner_job_free(r, j);
	if (back != NULL)
		runner_dest_putback(d, back);
	runner_dest_kick(r, d);
	runner_dest_ready_kick(r);
	if (runner_sched_room(r) >= r->max_msgs / 4)
		runner_sched_kick(r);
}

/* Loads J's message body at its first submit; false when J is over
 * (the message was deleted meanwhile, or a read error failed J). */
static bool
job_body_load(struct runner *r, struct job *j)
{
	struct rmsg *m = j->m;
	enum queue_result qr;

	if (m->body != NULL)
		return true;
	qr = queue_body_load(r->q, m->msg->id, &m->body, &m->bodylen);
	if (qr == QUEUE_NOTFOUND) {
		/* Deleted meanwhile: nothing to deliver. */
		runner_job_free(r, j);
		return false;
	}
	if (qr != QUEUE_OK) {
		runner_result_job_fail(
		    r, j, 4, "4.3.0", "queue file read error");
		runner_job_free(r, j);
		return false;
	}
	return true;
}

/* The client's recipients for J (ORCPT decoded; free with
 * job_rcpts_free()); *FIRST: none of them was tried before. */
static struct smtp_rcpt *
job_rcpts_make(const struct job *j, bool *first)
{
	struct smtp_rcpt *rc = xcalloc(j->nidx, sizeof(*rc));

	*first = true;
	for (size_t i = 0; i < j->nidx; i++) {
		const struct queue_rcpt *q = &j->m->msg->rcpts[j->idx[i]];

		rc[i].addr = q->addr;
		rc[i].notify = q->notify;
		/* the queue keeps ORCPT as received (xtext); the client
		 * wants it plain and encodes it itself */
		rc[i].orcpt = q->orcpt
		    ? mail_xtext_decode(q->orcpt, strlen(q->orcpt), 0, NULL)
		    : NULL;
		if (q->attempts > 0)
			*first = false;
	}
	return rc;
}

/* Frees what job_rcpts_make() made. */
static void
job_rcpts_free(struct smtp_rcpt *rc, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free((char *)rc[i].orcpt);
	free(rc);
}

/* Submits job J to the SMTP client (its destination let it go). */
void
runner_job_submit(struct runner *r, struct job *j)
{
	struct dest *d = j->dest;
	struct rmsg *m = j->m;
	struct smtp_request req;
	struct smtp_rcpt *rc;
	enum smtp_submit_result sr;
	char *envid;
	bool first;

	if (!job_body_load(r, j))
		return;
	rc = job_rcpts_make(j, &first);
	memset(&req, 0, sizeof(req));
	req.dest_key = d->key;
	req.auth = d->auth;
	req.addrs = d->addrs;
	req.naddrs = d->route->naddr;
	req.scope = d->scope;
	req.tls_relaxed = d->tls_relaxed;
	req.cls = m->msg->cls;
	req.first_attempt = first;
	req.sender = m->msg->sender;
	req.rcpts = rc;
	req.nrcpts = j->nidx;
	envid = m->msg->envid
	    ? mail_xtext_decode(m->msg->envid, strlen(m->msg->envid), 0, NULL)
	    : NULL;
	req.envid = envid;
	req.ret = m->msg->ret == QRET_FULL ? SMTP_RET_FULL
	    : m->msg->ret == QRET_HDRS	   ? SMTP_RET_HDRS
					   : SMTP_RET_NONE;
	req.msg = m->body;
	req.msglen = m->bodylen;
	req.done = job_done_cb;
	req.arg = j;
	j->submit_us = rq_now_us();
	sr = smtp_request_submit(r->smtp, &req);
	job_rcpts_free(rc, j->nidx);
	free(envid);
	if (sr == SMTP_SUBMIT_OK || sr == SMTP_SUBMIT_NEXT) {
		d->active++;
		r->active++;
		d->chained += sr == SMTP_SUBMIT_NEXT;
		return;
	}
	if (sr == SMTP_SUBMIT_SHUTDOWN) {
		runner_job_free(
		    r, j); /* keeps its lease: retried after restart */
		return;
	}
	runner_result_job_fail(
	    r, j, 4, "4.3.0", "internal error: invalid request");
	runner_job_free(r, j);
}
