/*
 * test_expiry_slices.c - a delay warning and a return of a message with
 * 5,000 recipients against a real LMDB queue: each expiry_run() call
 * handles a slice of 2,000 recipients (a notice each, listing exactly
 * those), the event stays due until its last slice, nobody is warned
 * twice, and the message leaves the queue with the last slice of its
 * return.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "expiry.h"
#include "rqtest.h"

#define N 5000

static struct cfg *cfg;
static struct queue *q;

static size_t
occurrences(const char *s, const char *what)
{
	size_t n = 0;

	while (s != NULL && (s = strstr(s, what)) != NULL) {
		n++;
		s += strlen(what);
	}
	return n;
}

struct seen {
	uint64_t ids[16];
	size_t n, others;
};

static bool
notices_cb(const struct queue_msg *m, void *arg)
{
	struct seen *s = arg;

	if (m->cls != CFG_DSN)
		s->others++;
	else if (s->n < 16)
		s->ids[s->n++] = m->id;
	return true;
}

/* The recipients each notice in the queue lists, in id order, into
 * COUNTS; how many notices. */
static size_t
notices(size_t *counts, const char *action, size_t *others)
{
	struct seen s;

	memset(&s, 0, sizeof(s));
	queue_msgs_scan(q, 0, notices_cb, &s);
	for (size_t i = 0; i < s.n; i++) {
		char *b = NULL;
		size_t len;

		CHECK_INT(queue_body_load(q, s.ids[i], &b, &len), QUEUE_OK);
		counts[i] = occurrences(b, action);
		free(b);
	}
	*others = s.others;
	return s.n;
}

int
main(void)
{
	char dir[] = "/tmp/relayq-slices-XXXXXX", conf[512], err[512];
	struct queue_rcpt *rs = xcalloc(N, sizeof(*rs));
	char(*addr)[32] = xcalloc(N, 32);
	const char *body = "From: a@example.org\r\nSubject: x\r\n\r\nhi\r\n";
	struct queue_msg env;
	struct queue_txn *txn;
	size_t counts[16], others;
	int64_t now = rq_now();
	uint64_t id;

	if (mkdtemp(dir) == NULL)
		return 2;
	snprintf(conf, sizeof(conf),
	    "queue_dir = %s/q\nspool_dir = %s/s\nhostname = relayq.test\n"
	    "timeout.queuewarn = 10s\ntimeout.queuereturn = 50s\n"
	    "max_message_size = 1m\n",
	    dir, dir);
	if (cfg_parse_buf("test.conf", conf, strlen(conf), &cfg, err,
		sizeof(err)) != CFG_OK) {
		fprintf(stderr, "%s\n", err);
		return 2;
	}
	q = queue_open(cfg, false, err, sizeof(err));
	if (q == NULL)
		return 2;
	log_set_level(LOG_LVL_ERR);
	for (size_t i = 0; i < N; i++) {
		snprintf(addr[i], 32, "r%zu@example.net", i);
		rs[i].addr = addr[i];
	}
	memset(&env, 0, sizeof(env));
	env.cls = CFG_NORMAL;
	env.sender = (char *)"a@example.org";
	env.arrival = now - 20;
	env.nrcpt = N;
	env.rcpts = rs;
	txn = queue_txn_begin(q);
	CHECK_INT(
	    queue_msg_insert(txn, &env, body, strlen(body), &id), QUEUE_OK);
	CHECK_INT(queue_txn_commit(txn), QUEUE_OK);

	/* the warning: three slices, one notice each, then not due */
	for (int k = 0; k < 3; k++) {
		CHECK(expiry_next(q) <= now);
		expiry_run(q, cfg, now);
		CHECK_INT(notices(counts, "Action: delayed", &others), k + 1);
	}
	CHECK(expiry_next(q) > now);
	CHECK_INT(counts[0], 2000);
	CHECK_INT(counts[1], 2000);
	CHECK_INT(counts[2], 1000);
	expiry_run(q, cfg, now);
	CHECK_INT(notices(counts, "Action: delayed", &others), 3);
	CHECK_INT(others, 1);

	/* the return (at +30 s; the notices' own returns are at +50):
	 * three slices, the message gone with the last */
	for (int k = 0; k < 3 && others == 1; k++) {
		expiry_run(q, cfg, now + 40);
		notices(counts, "Action: failed", &others);
		CHECK_INT(others, k < 2 ? 1 : 0);
	}
	{
		size_t n = notices(counts, "Action: failed", &others), sum = 0;

		for (size_t i = 0; i < n; i++)
			sum += counts[i];
		CHECK_INT(sum, N);
	}
	CHECK_INT(others, 0);
	queue_close(q);
	cfg_free(cfg);
	free(rs);
	free(addr);
	snprintf(conf, sizeof(conf), "rm -rf %s", dir);
	if (system(conf) != 0)
		return 2;
	return rqtest_done();
}
