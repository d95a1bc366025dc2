/*
 * test_queue_slices.c - unit tests of the queue paths that keep costs
 * linear in a message's recipients (issue 10, item 4), on a real LMDB in
 * a temporary directory: takes under a recipient budget (slices, the
 * resume point, the schedule and lease entries meanwhile),
 * queue_msg_load_leased(), queue_txn_load_rcpts(), results, flush and
 * removal of a message with many recipients, counts kept right; a take
 * in the transaction that records results (queue_txn_take_rcpts()).
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"
#include "queue.h"
#include "queue_int.h"
#include "rqtest.h"

#define N 5000

static char tmpdir[64];

static struct cfg *
make_cfg(void)
{
	char text[1024], err[512];
	struct cfg *cfg = NULL;

	snprintf(text, sizeof(text),
	    "spool_dir = %s/spool\nqueue_dir = %s/queue\nhostname = "
	    "relayq.test\nqueue_map_size = 256m\nmax_message_size = 1m\n",
	    tmpdir, tmpdir);
	if (cfg_parse_buf("t.conf", text, strlen(text), &cfg, err,
		sizeof(err)) != CFG_OK) {
		fprintf(stderr, "cfg: %s\n", err);
		exit(2);
	}
	return cfg;
}

/* Inserts a message of class normal with N recipients r0..r(N-1). */
static uint64_t
insert(struct queue *q, size_t n)
{
	struct queue_rcpt *r = xcalloc(n, sizeof(*r));
	struct queue_msg env;
	struct queue_txn *t = queue_txn_begin(q);
	const char *body = "Subject: x\r\n\r\nbody\r\n";
	char(*addr)[32] = xcalloc(n, 32);
	uint64_t id = 0;

	for (size_t i = 0; i < n; i++) {
		snprintf(addr[i], 32, "r%zu@d%zu.test", i, i % 7);
		r[i].addr = addr[i];
	}
	memset(&env, 0, sizeof(env));
	env.cls = CFG_NORMAL;
	env.sender = (char *)"s@a.test";
	env.arrival = rq_now() - 10;
	env.nrcpt = n;
	env.rcpts = r;
	CHECK_INT(queue_msg_insert(t, &env, body, strlen(body), &id), QUEUE_OK);
	CHECK_INT(queue_txn_commit(t), QUEUE_OK);
	free(r);
	free(addr);
	return id;
}

/* How many recipients of ID are leased, and in what state. */
static size_t
count_state(
    struct queue *q, uint64_t id, enum queue_rcpt_state st, unsigned flag)
{
	struct queue_msg *m;
	size_t n = 0;

	if (queue_msg_load(q, id, &m) != QUEUE_OK)
		return SIZE_MAX;
	for (size_t i = 0; i < m->nrcpt; i++)
		if (m->rcpts[i].state == st &&
		    (flag == 0 || (m->rcpts[i].flags & flag)))
			n++;
	queue_msg_free(m);
	return n;
}

static void
test_take_slices(struct queue *q)
{
	uint64_t id = insert(q, N);
	int64_t now = rq_now(), until = now + 600;
	struct queue_take tk[4];
	struct queue_msg *m;
	size_t budget, total, got = 0;
	uint32_t next = 0;
	struct queue_counts cn;

	/* slices of 2,000: [0,2000), [2000,4000), [4000,5000) */
	for (int k = 0; k < 3; k++) {
		budget = 2000;
		CHECK_INT(queue_due_take_rcpts(
			      q, CFG_NORMAL, now, until, tk, 4, &budget),
		    1);
		CHECK_INT(tk[0].id, id);
		CHECK_INT(tk[0].lo, next);
		CHECK_INT(tk[0].hi, k < 2 ? next + 2000 : N);
		CHECK_INT(budget, k < 2 ? 0 : 1000);
		/* still due while recipients wait; at lease_until after */
		CHECK_INT(queue_due_next_class(q, CFG_NORMAL) <= now, k < 2);
		CHECK_INT(queue_msg_load_leased(
			      q, id, tk[0].lo, tk[0].hi, &m, &total),
		    QUEUE_OK);
		CHECK_INT(total, N);
		CHECK_INT(m->nrcpt, tk[0].hi - tk[0].lo);
		CHECK_INT(m->rcpts[0].idx, tk[0].lo);
		CHECK(m->rcpts[0].flags & QRCPT_LEASED);
		got += m->nrcpt;
		queue_msg_free(m);
		next = tk[0].hi;
	}
	CHECK_INT(got, N);
	CHECK_INT(queue_due_next_class(q, CFG_NORMAL), until);
	CHECK_INT(count_state(q, id, RCPT_PENDING, QRCPT_LEASED), N);
	budget = 2000;
	CHECK_INT(
	    queue_due_take_rcpts(q, CFG_NORMAL, now, until, tk, 4, &budget), 0);
	/* a range with none leased loads none */
	CHECK_INT(queue_msg_load_leased(q, id, N, N + 5, &m, &total), QUEUE_OK);
	CHECK_INT(m->nrcpt, 0);
	queue_msg_free(m);

	/* results: O(1) each; half delivered, the others deferred */
	{
		struct queue_txn *t = queue_txn_begin(q);
		uint32_t idx[3] = { 0, 1, N + 7 };

		for (uint32_t i = 0; i < N; i++)
			CHECK_INT(queue_rcpt_update(t, id, i,
				      i % 2 ? RCPT_DEFERRED : RCPT_DELIVERED,
				      now + 3600, "250 ok", "2.0.0"),
			    QUEUE_OK);
		/* the ones asked for, those that exist */
		CHECK_INT(queue_txn_load_rcpts(t, id, idx, 3, NULL, NULL, &m),
		    QUEUE_OK);
		CHECK_INT(m->nrcpt, 2);
		CHECK_INT(m->rcpts[1].idx, 1);
		CHECK_INT(m->rcpts[1].state, RCPT_DEFERRED);
		queue_msg_free(m);
		CHECK_INT(queue_msg_reschedule(t, id), QUEUE_OK);
		CHECK_INT(queue_txn_commit(t), QUEUE_OK);
	}
	CHECK_INT(queue_due_next_class(q, CFG_NORMAL), now + 3600);
	CHECK_INT(count_state(q, id, RCPT_DEFERRED, 0), N / 2);
	CHECK_INT(count_state(q, id, RCPT_PENDING, QRCPT_LEASED), 0);
	queue_counts_get(q, &cn);
	CHECK_INT(cn.rcpts[CFG_NORMAL][RCPT_DELIVERED], N / 2);
	CHECK_INT(cn.rcpts[CFG_NORMAL][RCPT_DEFERRED], N / 2);

	/* flush: due now; then the rest delivered removes it, counts 0 */
	{
		struct queue_txn *t = queue_txn_begin(q);

		CHECK_INT(queue_msg_flush(t, id, now), QUEUE_OK);
		CHECK_INT(queue_txn_commit(t), QUEUE_OK);
	}
	CHECK_INT(queue_due_next_class(q, CFG_NORMAL), now);
	budget = 100000;
	CHECK_INT(
	    queue_due_take_rcpts(q, CFG_NORMAL, now, until, tk, 4, &budget), 1);
	CHECK_INT(tk[0].lo, 1);
	CHECK_INT(tk[0].hi, N);
	CHECK_INT(budget, 100000 - N / 2);
	{
		struct queue_txn *t = queue_txn_begin(q);

		for (uint32_t i = 1; i < N; i += 2)
			CHECK_INT(queue_rcpt_update(t, id, i, RCPT_DELIVERED, 0,
				      "250 ok", "2.0.0"),
			    QUEUE_OK);
		CHECK_INT(queue_msg_reschedule(t, id), QUEUE_OK);
		CHECK_INT(queue_txn_commit(t), QUEUE_OK);
	}
	CHECK_INT(queue_msg_load(q, id, &m), QUEUE_NOTFOUND);
	CHECK_INT(queue_due_next(q), INT64_MAX);
	queue_counts_get(q, &cn);
	CHECK_INT(cn.msgs[CFG_NORMAL], 0);
	CHECK_INT(cn.rcpts[CFG_NORMAL][RCPT_DELIVERED], 0);
	CHECK_INT(cn.rcpts[CFG_NORMAL][RCPT_DEFERRED], 0);
}

/* A crash between slices: every leased recipient is due again, and the
 * next take starts from the first. */
static void
test_recover_between_slices(struct queue *q)
{
	uint64_t id = insert(q, 3000);
	int64_t now = rq_now();
	struct queue_take tk[2];
	size_t budget = 1000;

	CHECK_INT(
	    queue_due_take_rcpts(q, CFG_NORMAL, now, now + 600, tk, 2, &budget),
	    1);
	CHECK_INT(tk[0].hi, 1000);
	queue_leases_recover(q);
	CHECK_INT(count_state(q, id, RCPT_PENDING, QRCPT_LEASED), 0);
	budget = 5000;
	CHECK_INT(queue_due_take_rcpts(
		      q, CFG_NORMAL, rq_now(), now + 600, tk, 2, &budget),
	    1);
	CHECK_INT(tk[0].lo, 0);
	CHECK_INT(tk[0].hi, 3000);
	CHECK_INT(budget, 2000);
	{
		struct queue_txn *t = queue_txn_begin(q);

		CHECK_INT(queue_msg_remove(t, id), QUEUE_OK);
		CHECK_INT(queue_txn_commit(t), QUEUE_OK);
	}
}

/*
 * A take inside a write txn that also records results (a scheduling
 * pass, issue 18): it sees the results (a message they end is gone, a
 * deferred recipient is not due), and its leases hold only once that
 * txn commits: an abort leases nothing and loses no recipient.
 */
static void
test_take_in_results_txn(struct queue *q)
{
	uint64_t a = insert(q, 3), b = insert(q, 2), c;
	int64_t now = rq_now(), until = now + 600;
	struct queue_take tk[4];
	struct queue_msg *m;
	size_t budget = 100;
	struct queue_txn *t;

	CHECK_INT(
	    queue_due_take_rcpts(q, CFG_NORMAL, now, until, tk, 4, &budget), 2);
	c = insert(q, 4); /* due now, not leased yet */
	for (int commit = 0; commit < 2; commit++) {
		t = queue_txn_begin(q);
		for (uint32_t i = 0; i < 3; i++)
			CHECK_INT(queue_rcpt_update(t, a, i, RCPT_DELIVERED, 0,
				      "250 ok", "2.0.0"),
			    QUEUE_OK);
		for (uint32_t i = 0; i < 2; i++)
			CHECK_INT(queue_rcpt_update(t, b, i, RCPT_DEFERRED,
				      now + 3600, "451 later", "4.0.0"),
			    QUEUE_OK);
		CHECK_INT(queue_msg_reschedule(t, a), QUEUE_OK);
		CHECK_INT(queue_msg_reschedule(t, b), QUEUE_OK);
		budget = 100;
		CHECK_INT(queue_txn_take_rcpts(
			      t, CFG_NORMAL, now, until, tk, 4, &budget),
		    1);
		CHECK_INT(tk[0].id, c);
		CHECK_INT(tk[0].lo, 0);
		CHECK_INT(tk[0].hi, 4);
		CHECK_INT(budget, 96);
		if (commit) {
			CHECK_INT(queue_txn_commit(t), QUEUE_OK);
			break;
		}
		queue_txn_abort(t);
		/* nothing of it holds: a and b still leased, c due */
		CHECK_INT(count_state(q, a, RCPT_PENDING, QRCPT_LEASED), 3);
		CHECK_INT(count_state(q, b, RCPT_PENDING, QRCPT_LEASED), 2);
		CHECK_INT(count_state(q, c, RCPT_PENDING, QRCPT_LEASED), 0);
		CHECK_INT(queue_due_next_class(q, CFG_NORMAL) <= now, 1);
	}
	CHECK_INT(queue_msg_load(q, a, &m), QUEUE_NOTFOUND);
	CHECK_INT(count_state(q, b, RCPT_DEFERRED, 0), 2);
	CHECK_INT(count_state(q, c, RCPT_PENDING, QRCPT_LEASED), 4);
	CHECK_INT(queue_due_next_class(q, CFG_NORMAL), until);
	t = queue_txn_begin(q);
	CHECK_INT(queue_msg_remove(t, b), QUEUE_OK);
	CHECK_INT(queue_msg_remove(t, c), QUEUE_OK);
	CHECK_INT(queue_txn_commit(t), QUEUE_OK);
}

int
main(void)
{
	char cmd[200], err[256];
	struct cfg *cfg;
	struct queue *q;

	snprintf(tmpdir, sizeof(tmpdir), "/tmp/rq-slices-test-XXXXXX");
	if (mkdtemp(tmpdir) == NULL)
		return 2;
	log_set_level(LOG_LVL_ERR);
	cfg = make_cfg();
	q = queue_open(cfg, false, err, sizeof(err));
	CHECK(q != NULL);
	if (q != NULL) {
		test_take_slices(q);
		test_recover_between_slices(q);
		test_take_in_results_txn(q);
		queue_close(q);
	}
	cfg_free(cfg);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	if (system(cmd) != 0)
		return 2;
	return rqtest_done();
}
