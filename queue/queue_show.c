/*
 * queue_show.c - how the commands and the HTTP API show a message: the
 * filters `mailq` and /api/queue share (class, state, destination
 * domain, age), the name of the queue Postfix would list it in, and
 * its JSON form (`mailq --json`'s lines, /api/queue's messages).
 *
 * Public: queue_msg_matches(), queue_msg_queue_name(), queue_msg_json().
 *
 * Pure functions of a message read by queue_msgs_scan(): no LMDB here.
 */
#include <string.h>
#include <strings.h>

#include "queue.h"

/* Whether ADDR is in DOMAIN or one of its subdomains. */
static bool
addr_in_domain(const char *addr, const char *domain)
{
	const char *at = strrchr(addr, '@');
	size_t n, dn = strlen(domain);

	if (at == NULL)
		return false;
	at++;
	n = strlen(at);
	if (n == dn)
		return strcasecmp(at, domain) == 0;
	return n > dn && at[n - dn - 1] == '.' &&
	    strcasecmp(at + n - dn, domain) == 0;
}

/* Whether M passes F; see queue.h. */
bool
queue_msg_matches(const struct queue_filter *f, const struct queue_msg *m)
{
	bool any_state = f->state < 0, any_dom = f->domain == NULL;

	if (f->cls >= 0 && (int)m->cls != f->cls)
		return false;
	if (f->older > 0 && m->arrival > f->older)
		return false;
	if (f->state == QUEUE_NSTATE) {
		if (!(m->flags & QMSG_HELD))
			return false;
		any_state = true;
	}
	for (size_t i = 0; i < m->nrcpt && !(any_state && any_dom); i++) {
		const struct queue_rcpt *r = &m->rcpts[i];
		/* without --state, a domain matches the recipients not yet
		 * done (what qshape counts, what waits for that domain) */
		bool st = any_state
		    ? r->state == RCPT_PENDING || r->state == RCPT_DEFERRED
		    : (int)r->state == f->state;
		bool dm = any_dom || addr_in_domain(r->addr, f->domain);

		if (st && dm)
			return true;
	}
	return any_state && any_dom;
}

/* The Postfix queue name of M; see queue.h. */
const char *
queue_msg_queue_name(const struct queue_msg *m)
{
	bool tried = false;

	if (m->flags & QMSG_HELD)
		return "hold";
	for (size_t i = 0; i < m->nrcpt; i++) {
		if (m->rcpts[i].flags & QRCPT_LEASED)
			return "active";
		if (m->rcpts[i].attempts > 0)
			tried = true;
	}
	return tried ? "deferred" : "incoming";
}

/* Writes the string literal LIT through PUT. */
#define PUT_LIT(lit) put(arg, (lit), sizeof(lit) - 1)

/* Writes V in decimal through PUT (no printf: mailq writes millions). */
static void
put_u64(rq_put_fn *put, void *arg, uint64_t v)
{
	char b[24];
	size_t i = sizeof(b);

	do {
		b[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v > 0);
	put(arg, b + i, sizeof(b) - i);
}

/* Writes S through PUT. */
static void
put_str(rq_put_fn *put, void *arg, const char *s)
{
	put(arg, s, strlen(s));
}

/* Writes M as one JSON object; see queue.h. */
void
queue_msg_json(const struct queue_msg *m, rq_put_fn *put, void *arg)
{
	PUT_LIT("{\"queue_id\":\"");
	put_str(put, arg, m->idstr);
	PUT_LIT("\",\"queue_name\":\"");
	put_str(put, arg, queue_msg_queue_name(m));
	PUT_LIT("\",\"priority\":\"");
	put_str(put, arg, cfg_class_name(m->cls));
	PUT_LIT("\",\"arrival_time\":");
	put_u64(put, arg, (uint64_t)m->arrival);
	PUT_LIT(",\"message_size\":");
	put_u64(put, arg, m->size);
	/* as postsuper -e: returned when its attempt in flight ends */
	if (m->flags & QMSG_ADMIN_RETURN)
		PUT_LIT(",\"forced_expire\":true,\"sender\":");
	else
		PUT_LIT(",\"forced_expire\":false,\"sender\":");
	rq_json_str(put, arg, m->sender);
	if (m->flags & QMSG_HELD)
		PUT_LIT(",\"held\":true");
	else
		PUT_LIT(",\"held\":false");
	if (m->flags & QMSG_WARNED)
		PUT_LIT(",\"warned\":true");
	else
		PUT_LIT(",\"warned\":false");
	PUT_LIT(",\"recipients\":[");
	for (size_t i = 0; i < m->nrcpt; i++) {
		const struct queue_rcpt *r = &m->rcpts[i];
		bool open = r->state == RCPT_PENDING ||
		    r->state == RCPT_DEFERRED;

		if (i > 0)
			PUT_LIT(",");
		PUT_LIT("{\"address\":");
		rq_json_str(put, arg, r->addr);
		PUT_LIT(",\"state\":\"");
		put_str(put, arg, queue_state_name(r->state));
		PUT_LIT("\",\"attempts\":");
		put_u64(put, arg, r->attempts);
		/* null while in delivery (its time is the lease's end) or
		 * held (nothing is tried then) */
		PUT_LIT(",\"next_attempt\":");
		if (open && r->next_attempt > 0 && !(r->flags & QRCPT_LEASED) &&
		    !(m->flags & QMSG_HELD))
			put_u64(put, arg, (uint64_t)r->next_attempt);
		else
			PUT_LIT("null");
		PUT_LIT(",\"reason\":");
		rq_json_str(put, arg, r->reply);
		/* as postqueue -j: a recipient still to do, with a reason */
		if (r->reply != NULL && open) {
			PUT_LIT(",\"delay_reason\":");
			rq_json_str(put, arg, r->reply);
		}
		PUT_LIT("}");
	}
	PUT_LIT("]}");
}
