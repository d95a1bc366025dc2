/*
 * test_expiry_queue.c - the queue side of expiry against a real LMDB
 * queue in a temporary directory: warnings and returns from the expiry
 * index, exactly one notice per event (also when run again, and none when
 * the transaction is aborted: what a crash before the commit leaves),
 * bounces reported once across result transactions, NOTIFY, the null
 * sender, held and in-flight recipients, and expiry_bounce_now().
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "expiry.h"
#include "rqtest.h"

static struct cfg *cfg;
static struct queue *q;
static int64_t now;

static const char body[] = "From: Alice <alice@example.org>\r\n"
			   "Subject: test\r\n"
			   "\r\n"
			   "hello\r\n";

/* Inserts a message of class normal that arrived AGO seconds ago. */
static uint64_t
msg_add(const char *sender, int64_t ago, const char *const *rcpts,
    const unsigned *notify, size_t n, const char *bodytext)
{
	struct queue_rcpt rs[8];
	struct queue_msg env;
	struct queue_txn *txn = queue_txn_begin(q);
	uint64_t id = 0;

	memset(&env, 0, sizeof(env));
	memset(rs, 0, sizeof(rs));
	for (size_t i = 0; i < n; i++) {
		rs[i].addr = (char *)rcpts[i];
		rs[i].notify = notify ? notify[i] : 0;
	}
	env.cls = CFG_NORMAL;
	env.sender = (char *)sender;
	env.arrival = now - ago;
	env.nrcpt = n;
	env.rcpts = rs;
	CHECK(txn != NULL);
	CHECK_INT(queue_msg_insert(txn, &env, bodytext ? bodytext : body,
		      strlen(bodytext ? bodytext : body), &id),
	    QUEUE_OK);
	CHECK_INT(queue_txn_commit(txn), QUEUE_OK);
	return id;
}

struct count {
	size_t dsn, other;
	uint64_t last_dsn;
};

static bool
count_cb(const struct queue_msg *m, void *arg)
{
	struct count *c = arg;

	if (m->cls == CFG_DSN) {
		c->dsn++;
		c->last_dsn = m->id;
	} else {
		c->other++;
	}
	return true;
}

/* Counts the notices and the other messages in the queue. */
static struct count
census(void)
{
	struct count c = { 0, 0, 0 };

	queue_msgs_scan(q, 0, count_cb, &c);
	return c;
}

/* Removes every message (between tests). */
static bool
collect_cb(const struct queue_msg *m, void *arg)
{
	uint64_t **p = arg;

	*(*p)++ = m->id;
	return true;
}

static void
queue_empty(void)
{
	uint64_t ids[256], *p = ids;
	struct queue_txn *txn;

	queue_msgs_scan(q, 0, collect_cb, &p);
	txn = queue_txn_begin(q);
	for (uint64_t *i = ids; i < p; i++)
		queue_msg_remove(txn, *i);
	CHECK_INT(queue_txn_commit(txn), QUEUE_OK);
}

/* The body of notice ID (malloc'ed). */
static char *
notice_body(uint64_t id)
{
	char *b = NULL;
	size_t len;

	CHECK_INT(queue_body_load(q, id, &b, &len), QUEUE_OK);
	return b;
}

/* Warning at queuewarn, once; return at queuereturn, once; then gone. */
static void
test_warn_then_return(void)
{
	static const char *const rc[] = { "bob@example.net",
		"carol@example.net" };
	uint64_t id = msg_add("alice@example.org", 20, rc, NULL, 2, NULL);
	struct count c;
	char *b;

	CHECK(expiry_next(q) <= now);
	expiry_run(q, cfg, now);
	c = census();
	CHECK_INT(c.dsn, 1);
	CHECK_INT(c.other, 1);
	b = notice_body(c.last_dsn);
	CHECK(b != NULL && strstr(b, "Action: delayed") != NULL);
	CHECK(b != NULL && strstr(b, "rfc822; carol@example.net") != NULL);
	CHECK(b != NULL && strstr(b, "To: <alice@example.org>") != NULL);
	free(b);
	/* Again: nothing new; the next event is the return. */
	expiry_run(q, cfg, now);
	CHECK_INT(census().dsn, 1);
	/* (the notice's own warning is due at now + 10: it is of class
	 * dsn, and the plain timeout.queuewarn sets that class too) */
	CHECK(expiry_next(q) > now);
	{
		struct queue_msg *m = NULL;

		CHECK_INT(queue_msg_load(q, id, &m), QUEUE_OK);
		CHECK(m != NULL && (m->flags & QMSG_WARNED));
		CHECK(m != NULL && m->return_at == now - 20 + 50);
		queue_msg_free(m);
	}
	/* The return. */
	expiry_run(q, cfg, now + 30);
	c = census();
	CHECK_INT(c.dsn, 2);
	CHECK_INT(c.other, 0);
	b = notice_body(c.last_dsn);
	CHECK(b != NULL && strstr(b, "Status: 4.4.7") != NULL);
	CHECK(b != NULL && strstr(b, "Action: failed") != NULL);
	free(b);
	expiry_run(q, cfg, now + 35);
	CHECK_INT(census().dsn, 2);
	/* The notices' own return (sender <>): logged and dropped. */
	expiry_run(q, cfg, now + 60);
	CHECK_INT(census().dsn, 0);
	queue_empty();
}

/* Null sender, NOTIFY=NEVER, NOTIFY without DELAY, Precedence: bulk. */
static void
test_who_not(void)
{
	static const char *const rc[] = { "a@example.net", "b@example.net",
		"c@example.net" };
	static const unsigned nt[] = { QNOTIFY_NEVER, QNOTIFY_FAILURE,
		QNOTIFY_FAILURE | QNOTIFY_DELAY };
	static const char bulk[] =
	    "Precedence: bulk\r\nSubject: x\r\n\r\nhi\r\n";
	struct count c;
	char *b;

	msg_add("", 20, rc, NULL, 1, NULL);
	msg_add("alice@example.org", 20, rc, nt, 3, NULL);
	msg_add("alice@example.org", 20, rc, NULL, 1, bulk);
	expiry_run(q, cfg, now);
	c = census();
	CHECK_INT(c.dsn, 1); /* only c@ of the second gets a warning */
	b = notice_body(c.last_dsn);
	CHECK(b != NULL && strstr(b, "rfc822; c@example.net") != NULL);
	CHECK(b != NULL && strstr(b, "rfc822; b@example.net") == NULL);
	CHECK(b != NULL && strstr(b, "rfc822; a@example.net") == NULL);
	free(b);
	expiry_run(q, cfg, now + 30);
	c = census();
	/* returns: none to <>, b and c for the second, one for bulk */
	CHECK_INT(c.dsn, 3);
	CHECK_INT(c.other, 0);
	queue_empty();
}

/* An aborted transaction (a crash before the commit) leaves no notice
 * and the event still due; after_results reports each bounce once. */
static void
test_results_once(void)
{
	static const char *const rc[] = { "x@example.net", "y@example.net",
		"z@example.net" };
	static const unsigned nt[] = { 0, 0, QNOTIFY_SUCCESS };
	uint64_t id = msg_add("alice@example.org", 1, rc, nt, 3, NULL);
	struct queue_txn *txn;
	struct count c;
	char *b;

	/* x bounces; the txn is aborted: nothing happened. */
	txn = queue_txn_begin(q);
	CHECK_INT(queue_rcpt_update(txn, id, 0, RCPT_BOUNCED, 0,
		      "host mx.example.net[192.0.2.1] said: 550 5.1.1 no "
		      "(in reply to RCPT TO command)",
		      "5.1.1"),
	    QUEUE_OK);
	CHECK_INT(expiry_after_results(txn, cfg, id, now), QUEUE_OK);
	queue_txn_abort(txn);
	CHECK_INT(census().dsn, 0);

	/* Again, committed: one bounce; a second call in the same txn
	 * (another job of the message) adds nothing. */
	txn = queue_txn_begin(q);
	CHECK_INT(queue_rcpt_update(txn, id, 0, RCPT_BOUNCED, 0,
		      "host mx.example.net[192.0.2.1] said: 550 5.1.1 no "
		      "(in reply to RCPT TO command)",
		      "5.1.1"),
	    QUEUE_OK);
	CHECK_INT(expiry_after_results(txn, cfg, id, now), QUEUE_OK);
	CHECK_INT(expiry_after_results(txn, cfg, id, now), QUEUE_OK);
	CHECK_INT(queue_msg_reschedule(txn, id), QUEUE_OK);
	CHECK_INT(queue_txn_commit(txn), QUEUE_OK);
	c = census();
	CHECK_INT(c.dsn, 1);
	b = notice_body(c.last_dsn);
	CHECK(b != NULL && strstr(b, "Status: 5.1.1") != NULL);
	CHECK(
	    b != NULL && strstr(b, "Remote-MTA: dns; mx.example.net") != NULL);
	CHECK(b != NULL &&
	    strstr(b, "Diagnostic-Code: smtp; 550 5.1.1 no\r\n") != NULL);
	free(b);

	/* Later: y bounces and z (NOTIFY=SUCCESS) is delivered: one bounce
	 * naming y only, one success notice. */
	txn = queue_txn_begin(q);
	CHECK_INT(queue_rcpt_update(
		      txn, id, 1, RCPT_BOUNCED, 0, "552 5.2.2 full", "5.2.2"),
	    QUEUE_OK);
	CHECK_INT(queue_rcpt_update(
		      txn, id, 2, RCPT_DELIVERED, 0, "250 2.0.0 Ok", "2.0.0"),
	    QUEUE_OK);
	CHECK_INT(expiry_after_results(txn, cfg, id, now + 1), QUEUE_OK);
	CHECK_INT(queue_msg_reschedule(txn, id), QUEUE_OK);
	CHECK_INT(queue_txn_commit(txn), QUEUE_OK);
	c = census();
	CHECK_INT(c.dsn, 3);
	CHECK_INT(c.other, 0); /* all done: removed */
	queue_empty();
}

/* NOTIFY=SUCCESS handed to a next hop that took NOTIFY (it offered DSN):
 * no notice of relayq's own, as with Postfix; without that flag the
 * notice says Action: relayed. */
static void
test_success_to_dsn_hop(void)
{
	static const char *const rc[] = { "d@example.net", "n@example.net" };
	static const unsigned nt[] = { QNOTIFY_SUCCESS, QNOTIFY_SUCCESS };
	uint64_t id = msg_add("alice@example.org", 1, rc, nt, 2, NULL);
	struct queue_txn *txn = queue_txn_begin(q);
	struct count c;
	char *b;

	for (uint32_t i = 0; i < 2; i++)
		CHECK_INT(queue_rcpt_update(txn, id, i, RCPT_DELIVERED, 0,
			      "250 2.0.0 Ok", "2.0.0"),
		    QUEUE_OK);
	CHECK_INT(
	    queue_rcpt_flags_set(txn, id, 0, QRCPT_RELAYED_DSN, 0), QUEUE_OK);
	CHECK_INT(expiry_after_results(txn, cfg, id, now), QUEUE_OK);
	CHECK_INT(queue_msg_reschedule(txn, id), QUEUE_OK);
	CHECK_INT(queue_txn_commit(txn), QUEUE_OK);
	c = census();
	CHECK_INT(c.dsn, 1);
	CHECK_INT(c.other, 0);
	b = notice_body(c.last_dsn);
	CHECK(b != NULL && strstr(b, "Action: relayed") != NULL);
	CHECK(b != NULL && strstr(b, "n@example.net") != NULL);
	CHECK(b != NULL && strstr(b, "d@example.net") == NULL);
	free(b);
	queue_empty();
}

/* Held messages do not expire; expiry_bounce_now() returns at once. */
static void
test_hold_and_bounce_now(void)
{
	static const char *const rc[] = { "h@example.net" };
	uint64_t id = msg_add("alice@example.org", 100, rc, NULL, 1, NULL);
	struct queue_txn *txn = queue_txn_begin(q);
	struct count c;
	size_t inflight;
	char *b;

	CHECK_INT(queue_msg_hold(txn, id, NULL), QUEUE_OK);
	CHECK_INT(queue_txn_commit(txn), QUEUE_OK);
	CHECK(expiry_next(q) == INT64_MAX);
	expiry_run(q, cfg, now + 1000);
	CHECK_INT(census().dsn, 0);
	CHECK_INT(expiry_bounce_now(q, cfg, id, &inflight), QUEUE_OK);
	CHECK_INT(inflight, 0);
	c = census();
	CHECK_INT(c.dsn, 1);
	CHECK_INT(c.other, 0);
	b = notice_body(c.last_dsn);
	CHECK(b != NULL && strstr(b, "administrator") != NULL);
	free(b);
	CHECK_INT(expiry_bounce_now(q, cfg, id, &inflight), QUEUE_NOTFOUND);
	queue_empty();
}

/* A recipient in flight at the return is left to its result. */
static void
test_leased_left_alone(void)
{
	static const char *const rc[] = { "l@example.net" };
	uint64_t ids[4];
	uint64_t id = msg_add("alice@example.org", 100, rc, NULL, 1, NULL);
	struct queue_txn *txn;
	struct count c;

	CHECK_INT(queue_due_take(q, CFG_NORMAL, now, now + 600, ids, 4), 1);
	expiry_run(q, cfg, now);
	c = census();
	CHECK_INT(c.other, 1); /* still there: l@ is in flight */
	/* Its result: a deferral, now returned (4.4.7), message gone. */
	txn = queue_txn_begin(q);
	CHECK_INT(queue_rcpt_update(txn, id, 0, RCPT_DEFERRED, now + 60,
		      "451 4.3.0 later", "4.3.0"),
	    QUEUE_OK);
	CHECK_INT(expiry_after_results(txn, cfg, id, now), QUEUE_OK);
	CHECK_INT(queue_msg_reschedule(txn, id), QUEUE_OK);
	CHECK_INT(queue_txn_commit(txn), QUEUE_OK);
	c = census();
	CHECK_INT(c.other, 0);
	CHECK(c.dsn >= 1);
	queue_empty();
}

/* relayq bounce of a message in delivery: the recipient in flight is
 * left to its attempt (forced_expire), then returned with 5.0.0 at its
 * deferral, with no delay warning in between. */
static void
test_bounce_in_flight(void)
{
	static const char *const rc[] = { "f@example.net" };
	uint64_t ids[4];
	uint64_t id = msg_add("alice@example.org", 100, rc, NULL, 1, NULL);
	struct queue_txn *txn;
	struct queue_msg *m;
	struct count c;
	size_t inflight;
	char *b;

	CHECK_INT(queue_due_take(q, CFG_NORMAL, now, now + 600, ids, 4), 1);
	CHECK_INT(expiry_bounce_now(q, cfg, id, &inflight), QUEUE_OK);
	CHECK_INT(inflight, 1);
	CHECK_INT(queue_msg_load(q, id, &m), QUEUE_OK);
	CHECK((m->flags & QMSG_ADMIN_RETURN) && (m->flags & QMSG_RETURNED));
	queue_msg_free(m);
	expiry_run(q, cfg, now + 7 * 86400); /* past queuewarn */
	CHECK_INT(census().dsn, 0);
	txn = queue_txn_begin(q);
	CHECK_INT(queue_rcpt_update(txn, id, 0, RCPT_DEFERRED, now + 60,
		      "451 4.3.0 later", "4.3.0"),
	    QUEUE_OK);
	CHECK_INT(expiry_after_results(txn, cfg, id, now), QUEUE_OK);
	CHECK_INT(queue_msg_reschedule(txn, id), QUEUE_OK);
	CHECK_INT(queue_txn_commit(txn), QUEUE_OK);
	c = census();
	CHECK_INT(c.other, 0);
	CHECK_INT(c.dsn, 1);
	b = notice_body(c.last_dsn);
	CHECK(b != NULL && strstr(b, "Status: 5.0.0") != NULL);
	CHECK(b != NULL && strstr(b, "Action: failed") != NULL);
	free(b);
	queue_empty();
}

/* timeout.queuereturn = now: returned at the first temporary failure,
 * with that failure's status. */
static void
test_return_now(void)
{
	static const char *const rc[] = { "n@example.net" };
	static const char conf[] = "timeout.queuereturn = now\n";
	struct cfg *now_cfg;
	struct queue_txn *txn;
	struct count c;
	char err[256], *b;
	uint64_t id = msg_add("alice@example.org", 0, rc, NULL, 1, NULL);

	CHECK_INT(cfg_parse_buf("now.conf", conf, strlen(conf), &now_cfg, err,
		      sizeof(err)),
	    CFG_OK);
	txn = queue_txn_begin(q);
	CHECK_INT(queue_rcpt_update(txn, id, 0, RCPT_DEFERRED, now + 60,
		      "host mx.example.net[192.0.2.1] said: 451 4.3.0 later "
		      "(in reply to RCPT TO command)",
		      "4.3.0"),
	    QUEUE_OK);
	CHECK_INT(expiry_after_results(txn, now_cfg, id, now), QUEUE_OK);
	CHECK_INT(queue_msg_reschedule(txn, id), QUEUE_OK);
	CHECK_INT(queue_txn_commit(txn), QUEUE_OK);
	c = census();
	CHECK_INT(c.other, 0);
	CHECK_INT(c.dsn, 1);
	b = notice_body(c.last_dsn);
	CHECK(b != NULL && strstr(b, "Status: 4.3.0") != NULL);
	CHECK(b != NULL && strstr(b, "Action: failed") != NULL);
	free(b);
	cfg_free(now_cfg);
	queue_empty();
}

int
main(void)
{
	char dir[] = "/tmp/relayq-expiry-XXXXXX", conf[512], err[512];

	if (mkdtemp(dir) == NULL)
		return 2;
	snprintf(conf, sizeof(conf),
	    "queue_dir = %s/q\nspool_dir = %s/s\nhostname = relayq.test\n"
	    "timeout.queuewarn = 10s\ntimeout.queuereturn = 50s\n",
	    dir, dir);
	if (cfg_parse_buf("test.conf", conf, strlen(conf), &cfg, err,
		sizeof(err)) != CFG_OK) {
		fprintf(stderr, "%s\n", err);
		return 2;
	}
	q = queue_open(cfg, false, err, sizeof(err));
	if (q == NULL) {
		fprintf(stderr, "queue_open: %s\n", err);
		return 2;
	}
	log_set_level(LOG_LVL_ERR);
	now = rq_now();
	test_warn_then_return();
	test_who_not();
	test_results_once();
	test_success_to_dsn_hop();
	test_hold_and_bounce_now();
	test_leased_left_alone();
	test_bounce_in_flight();
	test_return_now();
	queue_close(q);
	cfg_free(cfg);
	{
		char cmd[600];

		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		if (system(cmd) != 0)
			fprintf(stderr, "cannot remove %s\n", dir);
	}
	return rqtest_done();
}
