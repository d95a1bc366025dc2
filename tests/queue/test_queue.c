/*
 * test_queue.c - unit tests of queue/: the message and address parsers
 * (table-driven), and the LMDB queue in a temporary directory: intake
 * (group commit, exactly-once identities, bad input), the schedule with
 * leases, recipient updates and removal, hold/release/flush, the expiry
 * index, counts, paged scans, corrupt records, and the per-recipient
 * attempt history (kept to the newest QUEUE_HIST_MAX, removed with the
 * message), and the body record's decoder over valid and damaged records.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "cfg.h"
#include "intake_wait.h"
#include "queue.h"
#include "queue_int.h"
#include "queue_parse.h"
#include "rqtest.h"

/* ---- parser tables ---- */

static const struct {
	const char *in;
	const char *want; /* addresses joined by " ", NULL: must fail */
} addrlists[] = {
	{ "a@b.example", "a@b.example" },
	{ "Joe Q. Public <john.q.public@example.com>",
	    "john.q.public@example.com" },
	{ "Mary Smith <mary@x.test>, jdoe@example.org, Who? <one@y.test>",
	    "mary@x.test jdoe@example.org one@y.test" },
	{ "\"Giant; \\\"Big\\\" Box\" <sysservices@example.net>",
	    "sysservices@example.net" },
	{ "A Group:Ed Jones <c@a.test>,joe@where.test,John <jdoe@one.test>;",
	    "c@a.test joe@where.test jdoe@one.test" },
	{ "Undisclosed recipients:;", "" },
	{ "Pete(A nice \\) chap) <pete(his account)@silly.test(his host)>",
	    "pete@silly.test" },
	{ "\"john doe\"@example.com", "\"john doe\"@example.com" },
	{ "<@route.test,@other.test:user@dom.test>", "user@dom.test" },
	{ "root", "root@relayq.test" },
	{ "a@[192.0.2.1]", "a@[192.0.2.1]" },
	{ "x@y.test,\r\n z@w.test", "x@y.test z@w.test" },
	{ "(comment only) a@b.test (trailing)", "a@b.test" },
	{ "a@b.test, , c@d.test", "a@b.test c@d.test" },
	{ "a@b\rc.test", NULL },
	{ "<a@b.test", NULL },
	{ "<>", NULL },
	{ "a b@c.test", NULL },
	{ "a@", NULL },
	{ "\"unterminated@x.test", NULL },
	{ "(unterminated a@b.test", NULL },
	{ "a@b.test; c@d.test", NULL },
	{ "\"a\\\r\"@b.test", NULL },
};

static void
test_addrlists(void)
{
	for (size_t i = 0; i < sizeof(addrlists) / sizeof(addrlists[0]); i++) {
		struct qp_result r;
		const char *why = NULL;
		char got[1024] = "";
		bool ok;

		memset(&r, 0, sizeof(r));
		ok = qp_addrlist_parse(addrlists[i].in, strlen(addrlists[i].in),
		    "relayq.test", &r, &why);
		for (size_t k = 0; k < r.nrcpt; k++) {
			if (k > 0)
				strcat(got, " ");
			strcat(got, r.rcpts[k].addr);
		}
		if (addrlists[i].want == NULL) {
			if (ok)
				fprintf(
				    stderr, "case %zu: accepted %s\n", i, got);
			CHECK(!ok);
			CHECK(why != NULL);
		} else {
			if (!ok)
				fprintf(stderr, "case %zu: %s\n", i, why);
			CHECK(ok);
			CHECK_STR(got, addrlists[i].want);
		}
		qp_result_free(&r);
	}
}

static const struct {
	const char *in;
	const char *rcpts; /* NULL: bad */
	const char *sender;
	int cls;
	const char *why; /* substring of the reason when bad */
} messages[] = {
	{ "X-Sender: <s@a.test>\nX-Receiver: <r1@b.test>\nX-Receiver: "
	  "r2@c.test NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;r2@c.test\n"
	  "Subject: hi\n\nbody\n",
	    "r1@b.test r2@c.test", "s@a.test", CFG_NORMAL, NULL },
	{ "From: Joe <joe@a.test>\nTo: x@b.test, \"Y Z\" <y@c.test>\n"
	  "Cc: c@d.test\nBcc: hidden@e.test\nPriority: URGENT\n\nhi\n",
	    "x@b.test y@c.test c@d.test hidden@e.test", "joe@a.test",
	    CFG_URGENT, NULL },
	{ "Sender: s@a.test\nFrom: f@a.test\nTo: t@b.test\nPriority: "
	  "non-urgent\r\n\r\nx",
	    "t@b.test", "s@a.test", CFG_NONURGENT, NULL },
	{ "To: t@b.test\nPriority: whatever\n\n", "t@b.test", NULL, CFG_NORMAL,
	    NULL },
	/* folded, and with a comment: the word counts (RFC 2156) */
	{ "To: t@b.test\nPriority:\n urgent\n\n", "t@b.test", NULL, CFG_URGENT,
	    NULL },
	{ "To: t@b.test\nPriority: (asap) non-urgent (later)\n\n", "t@b.test",
	    NULL, CFG_NONURGENT, NULL },
	{ "To: t@b.test\nPriority: urgent-ish\n\n", "t@b.test", NULL,
	    CFG_NORMAL, NULL },
	{ "X-Sender: <>\nX-Receiver: <r@b.test>\n\n", "r@b.test", "",
	    CFG_NORMAL, NULL },
	{ "", NULL, NULL, 0, "empty" },
	{ "From: a@b.test\nSubject: none\n\nbody\n", NULL, NULL, 0,
	    "no recipients" },
	/* header only, no empty line: a message (interface.md) */
	{ "To: a@b.test\nSubject: x", "a@b.test", NULL, CFG_NORMAL, NULL },
	{ "To: a@b.test\nSubject: x\n", "a@b.test", NULL, CFG_NORMAL, NULL },
	{ "\x7f\x45LF\x01\x02\n\n", NULL, NULL, 0, "not a message" },
	{ "To: a@b.test\nX-J: a\0b\n\n", NULL, NULL, 0, "NUL" },
	{ "X-Receiver: <a\rb@x.test>\n\n", NULL, NULL, 0, "CR/LF/NUL" },
	{ "X-Receiver: <\"a\x1b\"@x.test>\n\n", NULL, NULL, 0,
	    "control character in an address" },
	{ "To: \"x\x1b[2J\" <b@x.test>\n\n", NULL, NULL, 0,
	    "control character in an address" },
	{ "To: <a@b.test\n\n", NULL, NULL, 0, "address" },
	{ "X-Receiver: <r@b.test> NOTIFY=BOGUS\n\n", NULL, NULL, 0,
	    "bad parameter in X-Receiver: \"NOTIFY=BOGUS\" (it takes "
	    "<address> then NOTIFY= and ORCPT=)" },
	/* a display name is not an SMTP path: the reason says what is */
	{ "X-Sender: Joe <j@a.test>\nX-Receiver: <r@b.test>\n\n", NULL, NULL, 0,
	    "bad parameter in X-Sender: \"<j@a.test>\" (it takes <address> "
	    "then RET= and ENVID=)" },
};

static void
test_messages(void)
{
	for (size_t i = 0; i < sizeof(messages) / sizeof(messages[0]); i++) {
		struct qp_result r;
		size_t len = strlen(messages[i].in);
		enum qp_status st;
		char got[1024] = "";

		if (strstr(messages[i].in, "X-J:") != NULL)
			len = 27; /* holds a NUL */
		st = qp_message_parse(
		    messages[i].in, len, "relayq.test", 0, &r);
		for (size_t k = 0; k < r.nrcpt; k++) {
			if (k > 0)
				strcat(got, " ");
			strcat(got, r.rcpts[k].addr);
		}
		if (messages[i].rcpts == NULL) {
			CHECK_INT(st, QP_BAD);
			if (st == QP_BAD &&
			    strstr(r.why, messages[i].why) == NULL)
				fprintf(stderr, "case %zu: why %s\n", i, r.why);
			CHECK(st == QP_BAD &&
			    strstr(r.why, messages[i].why) != NULL);
		} else {
			if (st != QP_OK)
				fprintf(stderr, "case %zu: %s\n", i, r.why);
			CHECK_INT(st, QP_OK);
			CHECK_STR(got, messages[i].rcpts);
			if (messages[i].sender != NULL)
				CHECK_STR(r.sender, messages[i].sender);
			else
				CHECK(r.sender == NULL);
			CHECK_INT(r.cls, messages[i].cls);
		}
		qp_result_free(&r);
	}
}

static void
test_build(void)
{
	const char *in = "X-Sender: <s@a.test> RET=HDRS ENVID=abc\n"
			 "X-Receiver: <r@b.test> NOTIFY=NEVER\n"
			 "Subject: hi\nBcc: x@y.test\nTo: r@b.test\n\n"
			 "line1\r\nline2\nlast";
	struct qp_result r;
	char *out;
	size_t n;

	CHECK_INT(qp_message_parse(in, strlen(in), NULL, 0, &r), QP_OK);
	CHECK_INT(r.ret, QRET_HDRS);
	CHECK_STR(r.envid, "abc");
	CHECK_INT(r.nrcpt, 1);
	CHECK_INT(r.rcpts[0].notify, QNOTIFY_NEVER);
	out = qp_message_build(in, strlen(in), &r, "Received: x\r\n",
	    "Date: d\r\n", "Message-ID: <m@x>\r\n", &n);
	CHECK_STR(out,
	    "Received: x\r\nSubject: hi\r\nTo: r@b.test\r\nDate: d\r\n"
	    "Message-ID: <m@x>\r\n\r\nline1\r\nline2\r\nlast\r\n");
	CHECK_INT(n, strlen(out));
	free(out);
	qp_result_free(&r);

	/* a non-header line starts the body; an empty line is put before */
	in = "To: a@b.test\nthis is body\n";
	CHECK_INT(qp_message_parse(in, strlen(in), NULL, 0, &r), QP_OK);
	out = qp_message_build(in, strlen(in), &r, NULL, NULL, NULL, &n);
	CHECK_STR(out, "To: a@b.test\r\n\r\nthis is body\r\n");
	free(out);
	qp_result_free(&r);
}

static void
test_ids(void)
{
	char buf[17];
	uint64_t id = 0;

	queue_id_format(0x0123456789ABCDEFull, buf);
	CHECK_STR(buf, "0123456789ABCDEF");
	CHECK(queue_id_parse("0123456789abcdef", &id));
	CHECK(id == 0x0123456789ABCDEFull);
	CHECK(queue_id_parse("1f", &id) && id == 0x1f);
	CHECK(!queue_id_parse("", &id));
	CHECK(!queue_id_parse("0123456789ABCDEF0", &id));
	CHECK(!queue_id_parse("12G", &id));
}

static const struct {
	const char *in, *want;
} escapes[] = {
	{ "plain-name.1", "plain-name.1" },
	{ "", "" },
	{ "a b", "a b" },
	{ "evil\nNov 29 relayq: to=<x>", "evil\\x0aNov 29 relayq: to=<x>" },
	{ "\r\t\x1b[2J", "\\x0d\\x09\\x1b[2J" },
	{ "back\\slash\\x0a", "back\\\\slash\\\\x0a" },
	{ "m\xc3\xbcller\x7f\xff", "m\\xc3\\xbcller\\x7f\\xff" },
};

/* Names from outside are escaped for log lines (table), and a long one
 * is cut, never overflowing. */
static void
test_name_escape(void)
{
	char out[QUEUE_ESC_MAX], in[600];

	for (size_t i = 0; i < sizeof(escapes) / sizeof(escapes[0]); i++)
		CHECK_STR(
		    queue_name_escape(out, escapes[i].in), escapes[i].want);
	/* a 255-byte name of control bytes fits whole */
	memset(in, '\n', 255);
	in[255] = '\0';
	queue_name_escape(out, in);
	CHECK_INT(strlen(out), 255 * 4);
	/* longer text is cut with "..." */
	memset(in, '\001', sizeof(in) - 1);
	in[sizeof(in) - 1] = '\0';
	queue_name_escape(out, in);
	CHECK(strlen(out) < QUEUE_ESC_MAX);
	CHECK(strcmp(out + strlen(out) - 3, "...") == 0);
}

/* ---- the queue in a temporary directory ---- */

static char tmpdir[256];

static struct cfg *
make_cfg(const char *extra)
{
	char text[4096], err[512];
	struct cfg *cfg = NULL;

	/* a small map takes small messages only (see relayq.conf(5)) */
	snprintf(text, sizeof(text),
	    "spool_dir = %s/spool\nqueue_dir = %s/queue\nhostname = "
	    "relayq.test\nmax_message_size = 64k\n%s%s",
	    tmpdir, tmpdir,
	    strstr(extra, "queue_map_size") ? "" : "queue_map_size = 64m\n",
	    extra);
	if (cfg_parse_buf("t.conf", text, strlen(text), &cfg, err,
		sizeof(err)) != CFG_OK) {
		fprintf(stderr, "cfg: %s\n", err);
		exit(2);
	}
	return cfg;
}

static void
drop(const char *name, const char *text)
{
	char path[512];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/spool/incoming/%s", tmpdir, name);
	fp = fopen(path, "w");
	fputs(text, fp);
	fclose(fp);
}

static int
count_dir(const char *sub)
{
	char path[512];
	DIR *d;
	struct dirent *de;
	int n = 0;

	snprintf(path, sizeof(path), "%s/spool/%s", tmpdir, sub);
	d = opendir(path);
	if (d == NULL)
		return -1;
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static bool
count_cb(const struct queue_msg *m, void *arg)
{
	(*(size_t *)arg)++;
	return true;
}

static bool
first_cb(const struct queue_msg *m, void *arg)
{
	*(uint64_t *)arg = m->id;
	return false;
}

static void
test_queue_db(void)
{
	struct cfg *cfg = make_cfg("timeout.queuewarn = 1h\n"
				   "timeout.queuereturn = 2d\n");
	char err[256], *body;
	struct queue *q = queue_open(cfg, false, err, sizeof(err));
	struct queue_intake *qi;
	struct queue_msg *m;
	struct queue_counts cn;
	struct queue_txn *t;
	struct queue_expiry_ev ev[8];
	uint64_t ids[16], id = 0;
	size_t n, len;
	int64_t now = rq_now();

	CHECK(q != NULL);
	if (q == NULL) {
		fprintf(stderr, "%s\n", err);
		return;
	}
	qi = queue_intake_open(q, cfg);
	CHECK(qi != NULL);
	drop("m1",
	    "X-Sender: <s@a.test>\nX-Receiver: <r1@b.test>\n"
	    "X-Receiver: <r2@c.test>\nPriority: urgent\nSubject: "
	    "one\n\nhello\n");
	drop("m2",
	    "From: f@a.test\nTo: t@b.test\nDate: x\nMessage-ID: "
	    "<y@z>\n\nbody two\n");
	drop(".hidden", "To: t@b.test\n\nx\n");
	drop("bad1", "From: f@a.test\n\nno rcpt\n");
	drop("bad2", "");
	mkdir("/tmp/x", 0700);
	{
		char p[512];

		snprintf(p, sizeof(p), "%s/spool/incoming/dir", tmpdir);
		mkdir(p, 0700);
		snprintf(p, sizeof(p), "%s/spool/incoming/link", tmpdir);
		CHECK(symlink("/etc/passwd", p) == 0);
	}
	CHECK_INT(intake_run_wait(qi, 100), QI_IDLE);
	CHECK_INT(count_dir("incoming"), 0);
	CHECK_INT(count_dir("bad"), 8); /* 4 files + 4 reasons */
	n = 0;
	CHECK_INT(queue_msgs_scan(q, 0, count_cb, &n), 2);
	CHECK_INT(n, 2);
	CHECK_INT(queue_counts_get(q, &cn), QUEUE_OK);
	CHECK_INT(cn.msgs[CFG_URGENT], 1);
	CHECK_INT(cn.msgs[CFG_NORMAL], 1);
	CHECK_INT(cn.rcpts[CFG_URGENT][RCPT_PENDING], 2);
	CHECK(queue_due_next(q) <= rq_now());
	CHECK(queue_expiry_next(q) >= now + 3600 &&
	    queue_expiry_next(q) <= rq_now() + 3600);

	/* m1: urgent, two recipients */
	n = queue_due_take(q, CFG_URGENT, rq_now(), rq_now() + 600, ids, 16);
	CHECK_INT(n, 1);
	CHECK_INT(queue_due_take(
		      q, CFG_URGENT, rq_now(), rq_now() + 600, ids + 1, 16),
	    0);
	CHECK_INT(queue_msg_load(q, ids[0], &m), QUEUE_OK);
	CHECK_INT(m->nrcpt, 2);
	CHECK_STR(m->sender, "s@a.test");
	CHECK(m->rcpts[0].flags & QRCPT_LEASED);
	CHECK(m->due >= now + 600);
	queue_msg_free(m);
	CHECK_INT(queue_body_load(q, ids[0], &body, &len), QUEUE_OK);
	CHECK(strncmp(body, "Received: by relayq.test", 24) == 0);
	CHECK(strstr(body, "X-Sender") == NULL);
	CHECK(strstr(body, "\r\nSubject: one\r\n") != NULL);
	CHECK(strstr(body, "\r\nDate: ") != NULL);
	CHECK(strstr(body, "\r\nMessage-ID: <") != NULL);
	CHECK(len > 6 && strcmp(body + len - 9, "\r\nhello\r\n") == 0);
	free(body);

	/* a crash: the lease is recovered, due now */
	queue_leases_recover(q);
	CHECK_INT(queue_msg_load(q, ids[0], &m), QUEUE_OK);
	CHECK(!(m->rcpts[0].flags & QRCPT_LEASED));
	CHECK(m->due <= rq_now());
	queue_msg_free(m);

	n = queue_due_take(q, CFG_URGENT, rq_now(), rq_now() + 600, ids, 16);
	CHECK_INT(n, 1);
	t = queue_txn_begin(q);
	CHECK_INT(queue_rcpt_update(
		      t, ids[0], 0, RCPT_DELIVERED, 0, "250 ok", "2.0.0"),
	    QUEUE_OK);
	CHECK_INT(queue_rcpt_update(t, ids[0], 1, RCPT_DEFERRED, now + 300,
		      "451 later\r\nx", "4.0.0"),
	    QUEUE_OK);
	CHECK_INT(queue_msg_reschedule(t, ids[0]), QUEUE_OK);
	CHECK_INT(queue_rcpt_update(t, 12345, 0, RCPT_DELIVERED, 0, NULL, NULL),
	    QUEUE_NOTFOUND);
	CHECK_INT(queue_txn_commit(t), QUEUE_OK);
	CHECK_INT(queue_msg_load(q, ids[0], &m), QUEUE_OK);
	CHECK_INT(m->rcpts[0].state, RCPT_DELIVERED);
	CHECK_INT(m->rcpts[1].state, RCPT_DEFERRED);
	CHECK_INT(m->rcpts[1].attempts, 2 - 1);
	CHECK_STR(m->rcpts[1].reply, "451 later  x");
	CHECK_STR(m->rcpts[1].dsn_status, "4.0.0");
	queue_msg_free(m);
	/* recipient flags: set, kept across an update, cleared */
	t = queue_txn_begin(q);
	CHECK_INT(
	    queue_rcpt_flags_set(t, ids[0], 0, QRCPT_NOTIFIED, 0), QUEUE_OK);
	CHECK_INT(queue_rcpt_flags_set(t, ids[0], 9, QRCPT_NOTIFIED, 0),
	    QUEUE_NOTFOUND);
	CHECK_INT(queue_txn_commit(t), QUEUE_OK);
	CHECK_INT(queue_msg_load(q, ids[0], &m), QUEUE_OK);
	CHECK(m->rcpts[0].flags & QRCPT_NOTIFIED);
	CHECK(!(m->rcpts[1].flags & QRCPT_NOTIFIED));
	CHECK_INT(m->due, now + 300);
	queue_msg_free(m);
	CHECK_INT(queue_due_next_class(q, CFG_URGENT), now + 300);
	queue_counts_get(q, &cn);
	CHECK_INT(cn.rcpts[CFG_URGENT][RCPT_DELIVERED], 1);
	CHECK_INT(cn.rcpts[CFG_URGENT][RCPT_DEFERRED], 1);

	/* hold: off the schedule and the expiry index; flush; release */
	t = queue_txn_begin(q);
	CHECK_INT(queue_msg_hold(t, ids[0], NULL), QUEUE_OK);
	CHECK_INT(queue_txn_commit(t), QUEUE_OK);
	CHECK_INT(queue_due_next_class(q, CFG_URGENT), INT64_MAX);
	queue_counts_get(q, &cn);
	CHECK_INT(cn.held, 1);
	CHECK_INT(queue_expiry_due_list(q, INT64_MAX - 1, ev, 8), 2);
	t = queue_txn_begin(q);
	CHECK_INT(queue_msg_flush(t, ids[0], now), QUEUE_OK);
	CHECK_INT(queue_msg_release(t, ids[0], NULL), QUEUE_OK);
	CHECK_INT(queue_txn_commit(t), QUEUE_OK);
	CHECK_INT(queue_due_next_class(q, CFG_URGENT), now);
	CHECK_INT(queue_expiry_due_list(q, INT64_MAX - 1, ev, 8), 4);
	queue_counts_get(q, &cn);
	CHECK_INT(cn.held, 0);

	/* expiry clear, then finishing the last recipient removes it */
	n = queue_expiry_due_list(q, INT64_MAX - 1, ev, 8);
	t = queue_txn_begin(q);
	CHECK_INT(queue_expiry_clear(t, ev[0].id, ev[0].kind), QUEUE_OK);
	CHECK_INT(queue_expiry_clear(t, ev[0].id, ev[0].kind), QUEUE_NOTFOUND);
	CHECK_INT(queue_txn_commit(t), QUEUE_OK);
	CHECK_INT(queue_expiry_due_list(q, INT64_MAX - 1, ev, 8), n - 1);
	t = queue_txn_begin(q);
	CHECK_INT(
	    queue_rcpt_update(t, ids[0], 1, RCPT_BOUNCED, 0, "550 no", "5.1.1"),
	    QUEUE_OK);
	CHECK_INT(queue_msg_reschedule(t, ids[0]), QUEUE_OK);
	CHECK_INT(queue_txn_commit(t), QUEUE_OK);
	CHECK_INT(queue_msg_load(q, ids[0], &m), QUEUE_NOTFOUND);
	queue_counts_get(q, &cn);
	CHECK_INT(cn.msgs[CFG_URGENT], 0);
	CHECK_INT(cn.rcpts[CFG_URGENT][RCPT_DELIVERED], 0);
	CHECK_INT(queue_expiry_due_list(q, INT64_MAX - 1, ev, 8), 2);

	/* insert a DSN built in memory */
	{
		struct queue_rcpt r = { 0 };
		struct queue_msg env = { 0 };
		const char *dsn = "From: MAILER-DAEMON\r\n\r\nbounce\r\n";

		r.addr = (char *)"s@a.test";
		env.cls = CFG_DSN;
		env.sender = (char *)"";
		env.nrcpt = 1;
		env.rcpts = &r;
		t = queue_txn_begin(q);
		CHECK_INT(
		    queue_msg_insert(t, &env, dsn, strlen(dsn), &id), QUEUE_OK);
		CHECK_INT(queue_txn_commit(t), QUEUE_OK);
		CHECK_INT(queue_body_load(q, id, &body, &len), QUEUE_OK);
		CHECK_STR(body, dsn);
		free(body);
		CHECK(queue_due_next_class(q, CFG_DSN) <= rq_now());
	}

	/* corrupt record: set aside, never a crash */
	{
		uint8_t k[8];
		MDB_val key = { 8, k }, val = { 3, (void *)"bad" };
		MDB_txn *txn;

		qkey_id(k, id);
		mdb_txn_begin(q->env, NULL, 0, &txn);
		mdb_put(txn, q->dbi[QDB_MSG], &key, &val, 0);
		mdb_txn_commit(txn);
		n = 0;
		queue_msgs_scan(q, 0, count_cb, &n);
		CHECK_INT(n, 1);
		CHECK_INT(queue_msg_load(q, id, &m), QUEUE_CORRUPT);
		n = queue_due_take(
		    q, CFG_DSN, rq_now(), rq_now() + 60, ids, 16);
		CHECK_INT(n, 0);
		CHECK_INT(queue_msg_load(q, id, &m), QUEUE_NOTFOUND);
		CHECK_INT(queue_due_next_class(q, CFG_DSN), INT64_MAX);
	}

	/* exactly once: a file whose identity is recorded is only unlinked */
	drop("again", "To: t@b.test\n\nagain\n");
	{
		char p[512];
		struct stat st;
		uint8_t k[440];
		size_t kl;
		MDB_val key, val;
		uint8_t v[16] = { 0 };
		MDB_txn *txn;

		snprintf(p, sizeof(p), "%s/spool/incoming/again", tmpdir);
		stat(p, &st);
		qbe64_put(k, (uint64_t)st.st_dev);
		qbe64_put(k + 8, (uint64_t)st.st_ino);
		qbe64_put(k + 16, (uint64_t)st.st_size);
		qbe64_put(k + 24,
		    (uint64_t)st.st_mtim.tv_sec * 1000000000ull +
			(uint64_t)st.st_mtim.tv_nsec);
		memcpy(k + 32, "again", 5);
		kl = 37;
		key.mv_size = kl;
		key.mv_data = k;
		val.mv_size = 16;
		val.mv_data = v;
		v[7] = 1;
		mdb_txn_begin(q->env, NULL, 0, &txn);
		mdb_put(txn, q->dbi[QDB_IDENT], &key, &val, 0);
		mdb_txn_commit(txn);
	}
	queue_intake_rescan(qi);
	intake_run_wait(qi, 100);
	CHECK_INT(count_dir("incoming"), 0);
	n = 0;
	queue_msgs_scan(q, 0, count_cb, &n);
	CHECK_INT(n, 1);

	/* many files: group commit, all queued once */
	for (int i = 0; i < 500; i++) {
		char name[32], text[128];

		snprintf(name, sizeof(name), "bulk%d", i);
		snprintf(text, sizeof(text),
		    "To: u%d@b.test\nPriority: non-urgent\n\nmsg %d\n", i, i);
		drop(name, text);
	}
	{
		enum queue_intake_result ir;
		int rounds = 0;

		while ((ir = intake_run_wait(qi, 128)) == QI_MORE)
			rounds++;
		CHECK_INT(ir, QI_IDLE);
		CHECK(rounds >= 3);
	}
	CHECK_INT(count_dir("incoming"), 0);
	n = 0;
	queue_msgs_scan(q, 0, count_cb, &n);
	CHECK_INT(n, 501);
	queue_counts_get(q, &cn);
	CHECK_INT(cn.msgs[CFG_NONURGENT], 500);
	id = 0;
	queue_msgs_scan(q, 0, first_cb, &id);
	CHECK(id != 0);

	/* delete everything */
	{
		uint64_t all[600];
		size_t na = 0;
		struct ctx {
			uint64_t *v;
			size_t *n;
		};

		n = 0;
		while (queue_due_take(q, CFG_NONURGENT, rq_now(), rq_now() + 60,
			   all + na, 100) > 0) {
			na = 0;
			break;
		}
		n = 0;
		id = 0;
		for (;;) {
			uint64_t fid = 0;

			queue_msgs_scan(q, id, first_cb, &fid);
			if (fid == 0)
				break;
			t = queue_txn_begin(q);
			CHECK_INT(queue_msg_remove(t, fid), QUEUE_OK);
			CHECK_INT(queue_txn_commit(t), QUEUE_OK);
			id = fid + 1;
			n++;
		}
		CHECK_INT(n, 501);
		(void)na;
	}
	/* the corrupt DSN's counts stay (its record was unreadable); its
	 * expiry entries are dropped when found orphaned */
	CHECK_INT(queue_expiry_due_list(q, INT64_MAX - 1, ev, 8), 0);
	queue_counts_get(q, &cn);
	for (int c = 0; c < CFG_DSN; c++) {
		CHECK_INT(cn.msgs[c], 0);
		CHECK_INT(cn.bytes[c], 0);
		for (int s = 0; s < QUEUE_NSTATE; s++)
			CHECK_INT(cn.rcpts[c][s], 0);
	}
	CHECK_INT(queue_due_next(q), INT64_MAX);
	CHECK_INT(queue_expiry_next(q), INT64_MAX);
	queue_intake_close(qi);
	queue_close(q);
	cfg_free(cfg);
}

/* The number of hist records of message ID (raw, not validated). */
static size_t
hist_count(struct queue *q, uint64_t id)
{
	uint8_t k[8];
	MDB_val key = { 8, k }, val;
	MDB_txn *txn;
	MDB_cursor *c;
	size_t n = 0;
	int rc;

	qkey_id(k, id);
	if (mdb_txn_begin(q->env, NULL, MDB_RDONLY, &txn) != 0)
		return (size_t)-1;
	mdb_cursor_open(txn, q->dbi[QDB_HIST], &c);
	rc = mdb_cursor_get(c, &key, &val, MDB_SET_RANGE);
	for (; rc == 0 && key.mv_size == 16 && qbe64_get(key.mv_data) == id;
	     rc = mdb_cursor_get(c, &key, &val, MDB_NEXT))
		n++;
	mdb_cursor_close(c);
	mdb_txn_abort(txn);
	return n;
}

/* mailq's filters: without --state, --domain matches recipients not yet
 * done only (a message delivered there and waiting elsewhere is not
 * listed for that domain). */
static void
test_filter_match(void)
{
	struct queue_rcpt r[2];
	struct queue_msg m = { 0 };
	struct queue_filter f = { -1, -1, "done.test", 0 };

	memset(r, 0, sizeof(r));
	r[0].addr = (char *)"a@mx.done.test";
	r[0].state = RCPT_DELIVERED;
	r[1].addr = (char *)"b@wait.test";
	r[1].state = RCPT_DEFERRED;
	m.cls = CFG_NORMAL;
	m.nrcpt = 2;
	m.rcpts = r;
	CHECK(!queue_msg_matches(&f, &m));
	f.domain = "wait.test";
	CHECK(queue_msg_matches(&f, &m));
	f.domain = "done.test";
	f.state = RCPT_DELIVERED;
	CHECK(queue_msg_matches(&f, &m));
	f.domain = "ait.test"; /* not a parent domain */
	f.state = -1;
	CHECK(!queue_msg_matches(&f, &m));
	f.domain = NULL;
	CHECK(queue_msg_matches(&f, &m));
}

/* Inserts a message to RCPTS recipients at a.test; returns its id. */
static uint64_t
hist_msg(struct queue *q, size_t nrcpt)
{
	struct queue_rcpt r[4];
	struct queue_msg env = { 0 };
	const char *body = "Subject: h\r\n\r\nhist\r\n";
	struct queue_txn *t = queue_txn_begin(q);
	uint64_t id = 0;

	memset(r, 0, sizeof(r));
	for (size_t i = 0; i < nrcpt; i++)
		r[i].addr = (char *)"h@a.test";
	env.cls = CFG_NORMAL;
	env.sender = (char *)"s@a.test";
	env.nrcpt = nrcpt;
	env.rcpts = r;
	CHECK_INT(queue_msg_insert(t, &env, body, strlen(body), &id), QUEUE_OK);
	CHECK_INT(queue_txn_commit(t), QUEUE_OK);
	return id;
}

/* One attempt's result for recipient IDX of ID, committed. */
static void
hist_update(struct queue *q, uint64_t id, uint32_t idx,
    enum queue_rcpt_state st, const char *reply, const char *dsn)
{
	struct queue_txn *t = queue_txn_begin(q);

	CHECK_INT(queue_rcpt_update(t, id, idx, st, rq_now() + 60, reply, dsn),
	    QUEUE_OK);
	CHECK_INT(queue_msg_reschedule(t, id), QUEUE_OK);
	CHECK_INT(queue_txn_commit(t), QUEUE_OK);
}

/* The attempt history: one record per update, the 20 newest kept, read
 * oldest first, bad records skipped, removed and quarantined with the
 * message. */
static void
test_history(void)
{
	struct cfg *cfg = make_cfg("");
	char err[256], reply[64];
	struct queue *q = queue_open(cfg, false, err, sizeof(err));
	struct queue_attempt *v;
	struct queue_txn *t;
	struct queue_msg *m;
	uint64_t a, b;
	size_t n;

	CHECK(q != NULL);
	if (q == NULL) {
		fprintf(stderr, "%s\n", err);
		cfg_free(cfg);
		return;
	}
	a = hist_msg(q, 2);
	b = hist_msg(q, 1);
	CHECK_INT(queue_attempts_load(q, a, 0, &v, &n), QUEUE_OK);
	CHECK_INT(n, 0);
	CHECK(v == NULL);
	for (int i = 1; i <= 25; i++) {
		snprintf(reply, sizeof(reply), "451 4.3.0 try %d", i);
		hist_update(q, a, 0, RCPT_DEFERRED, reply, "4.3.0");
		CHECK_INT(hist_count(q, a), i < QUEUE_HIST_MAX ? i : 20);
	}
	hist_update(q, a, 1, RCPT_DEFERRED, "451 a\r\nb", "4.2.0");
	hist_update(q, a, 1, RCPT_DEFERRED, NULL, NULL);
	hist_update(q, a, 1, RCPT_DEFERRED, "452 full", "4.2.2");
	hist_update(q, b, 0, RCPT_DEFERRED, "421 bye", "4.4.2");
	CHECK_INT(hist_count(q, a), 23);
	CHECK_INT(hist_count(q, b), 1);

	/* exactly the 20 newest, oldest first */
	CHECK_INT(queue_attempts_load(q, a, 0, &v, &n), QUEUE_OK);
	CHECK_INT(n, QUEUE_HIST_MAX);
	if (n == QUEUE_HIST_MAX) {
		CHECK_INT(v[0].attempt, 6);
		CHECK_STR(v[0].reply, "451 4.3.0 try 6");
		CHECK_INT(v[19].attempt, 25);
		CHECK_STR(v[19].reply, "451 4.3.0 try 25");
		CHECK_STR(v[19].dsn_status, "4.3.0");
		CHECK_INT(v[19].state, RCPT_DEFERRED);
		for (size_t i = 1; i < n; i++)
			CHECK(v[i].time >= v[i - 1].time &&
			    v[i].attempt == v[i - 1].attempt + 1);
		CHECK(v[19].time > 0 && v[19].time <= rq_now());
	}
	queue_attempts_free(v, n);
	CHECK_INT(queue_msg_load(q, a, &m), QUEUE_OK);
	CHECK_INT(m->rcpts[0].attempts, 25);
	queue_msg_free(m);

	/* what each attempt said: sanitised; NULL stays NULL */
	CHECK_INT(queue_attempts_load(q, a, 1, &v, &n), QUEUE_OK);
	CHECK_INT(n, 3);
	if (n == 3) {
		CHECK_STR(v[0].reply, "451 a  b");
		CHECK_STR(v[0].dsn_status, "4.2.0");
		CHECK(v[1].reply == NULL);
		CHECK_STR(v[1].dsn_status, "");
		CHECK_STR(v[2].reply, "452 full");
	}
	queue_attempts_free(v, n);
	CHECK_INT(queue_attempts_load(q, 12345, 0, &v, &n), QUEUE_OK);
	CHECK_INT(n, 0);

	/* a bad record is skipped, never a crash */
	{
		uint8_t k[16];
		MDB_val key = { 16, k }, val = { 3, (void *)"bad" };
		MDB_txn *txn;

		qkey_hist(k, a, 1, 2);
		mdb_txn_begin(q->env, NULL, 0, &txn);
		mdb_put(txn, q->dbi[QDB_HIST], &key, &val, 0);
		mdb_txn_commit(txn);
	}
	CHECK_INT(queue_attempts_load(q, a, 1, &v, &n), QUEUE_OK);
	CHECK_INT(n, 2);
	if (n == 2) {
		CHECK_INT(v[0].attempt, 1);
		CHECK_INT(v[1].attempt, 3);
	}
	queue_attempts_free(v, n);

	/* remove deletes A's records and only those */
	t = queue_txn_begin(q);
	CHECK_INT(queue_msg_remove(t, a), QUEUE_OK);
	CHECK_INT(queue_txn_commit(t), QUEUE_OK);
	CHECK_INT(hist_count(q, a), 0);
	CHECK_INT(hist_count(q, b), 1);
	CHECK_INT(queue_attempts_load(q, a, 0, &v, &n), QUEUE_OK);
	CHECK_INT(n, 0);

	/* a message set aside takes its history along to corrupt */
	{
		uint8_t k[8], ck[21];
		MDB_val key = { 8, k }, val = { 3, (void *)"bad" };
		MDB_val ckey = { 21, ck };
		MDB_txn *txn;

		qkey_id(k, b);
		mdb_txn_begin(q->env, NULL, 0, &txn);
		mdb_put(txn, q->dbi[QDB_MSG], &key, &val, 0);
		mdb_txn_commit(txn);
		t = queue_txn_begin(q);
		CHECK_INT(queue_txn_load(t, b, &m), QUEUE_CORRUPT);
		CHECK_INT(queue_txn_commit(t), QUEUE_OK);
		CHECK_INT(hist_count(q, b), 0);
		memcpy(ck, "hist", 5);
		qkey_hist(ck + 5, b, 0, 1);
		mdb_txn_begin(q->env, NULL, MDB_RDONLY, &txn);
		CHECK_INT(mdb_get(txn, q->dbi[QDB_CORRUPT], &ckey, &val), 0);
		mdb_txn_abort(txn);
	}

	/* a queue made before `hist`: read-only tools still open it (no
	 * history), the daemon's read-write open creates the db */
	{
		MDB_txn *txn;

		mdb_txn_begin(q->env, NULL, 0, &txn);
		CHECK_INT(mdb_drop(txn, q->dbi[QDB_HIST], 1), 0);
		CHECK_INT(mdb_txn_commit(txn), 0);
		queue_close(q);
		q = queue_open(cfg, true, err, sizeof(err));
		CHECK(q != NULL);
		if (q != NULL) {
			CHECK(q->nohist);
			CHECK_INT(
			    queue_attempts_load(q, b, 0, &v, &n), QUEUE_OK);
			CHECK_INT(n, 0);
			queue_close(q);
		}
		q = queue_open(cfg, false, err, sizeof(err));
		CHECK(q != NULL && !q->nohist);
	}
	queue_close(q);
	cfg_free(cfg);
}

/* A tiny map: intake pauses, files stay, and it resumes with room. */
static void
test_mapfull(void)
{
	struct cfg *cfg = make_cfg("");
	struct cfg *small;
	char err[256], path[1024];
	struct queue *q;
	struct queue_intake *qi;
	enum queue_intake_result ir;
	size_t n = 0;
	uint64_t seed = 42;

	snprintf(
	    path, sizeof(path), "rm -rf %s/queue %s/spool", tmpdir, tmpdir);
	CHECK_INT(system(path), 0);
	small = make_cfg("queue_map_size = 1m\n");
	q = queue_open(small, false, err, sizeof(err));
	CHECK(q != NULL);
	qi = queue_intake_open(q, small);
	for (int i = 0; i < 400; i++) {
		char name[32], *text = xmalloc(8200);

		snprintf(name, sizeof(name), "big%d", i);
		snprintf(text, 8200, "To: u%d@b.test\n\n", i);
		for (int k = (int)strlen(text); k < 8190; k++) {
			seed = seed * 6364136223846793005ull +
			    1442695040888963407ull;
			text[k] = (char)('a' + (seed >> 33) % 26);
		}
		text[8190] = '\n';
		text[8191] = '\0';
		drop(name, text);
		free(text);
	}
	while ((ir = intake_run_wait(qi, 100)) == QI_MORE)
		;
	CHECK_INT(ir, QI_PAUSED);
	/* a close does not wait for the removals: files queued may still
	 * be there, to be removed as already queued (below: exactly 400) */
	queue_intake_close(qi);
	qi = queue_intake_open(q, small);
	CHECK(count_dir("incoming") > 0);
	queue_msgs_scan(q, 0, count_cb, &n);
	CHECK((int)n + count_dir("incoming") >= 400);
	CHECK((int)n < 400);
	/* room comes back (a bigger map, as after a reload) */
	queue_cfg_set(q, cfg);
	while ((ir = intake_run_wait(qi, 100)) != QI_IDLE)
		CHECK(ir == QI_MORE);
	CHECK_INT(count_dir("incoming"), 0);
	n = 0;
	queue_msgs_scan(q, 0, count_cb, &n);
	CHECK_INT(n, 400);
	queue_intake_close(qi);
	queue_close(q);
	cfg_free(small);
	cfg_free(cfg);
}

/* ---- body records ---- */

static const char body_text[] =
    "From: a@b.test\r\nSubject: body\r\n\r\n"
    "line one\r\n.dot line\r\n\xc3\xa9t\xc3\xa9\r\n"
    "line one\r\nline one\r\nline one\r\nline one\r\nline one\r\n";

/* How a case damages a good level-LEVEL record of body_text. */
enum body_damage {
	BD_NONE,
	BD_CRC, /* a bit of the record's crc32 flipped */
	BD_DATA, /* a bit of the deflate data flipped */
	BD_TRUNC, /* the last byte (of the trailer) gone */
	BD_TRAIL, /* a byte after the stream */
	BD_LONGER, /* raw length one more than the data inflates to */
	BD_SHORTER, /* raw length one less */
	BD_FDICT, /* the zlib header asks for a preset dictionary */
	BD_METHOD, /* the zlib header's method is not deflate */
	BD_VERSION, /* the record's version byte */
	BD_STORED, /* method 0, the text as is */
	BD_STORED_CRC, /* method 0, crc32 wrong */
	BD_ZLIB, /* the stream written by zlib's compress2() */
	BD_EMPTY, /* an empty body */
};

static const struct {
	enum body_damage damage;
	int level;
	enum queue_result want;
} body_cases[] = {
	{ BD_NONE, 1, QUEUE_OK },
	{ BD_NONE, 6, QUEUE_OK },
	{ BD_NONE, 12, QUEUE_OK },
	{ BD_EMPTY, 1, QUEUE_OK },
	{ BD_STORED, 0, QUEUE_OK },
	{ BD_ZLIB, 1, QUEUE_OK },
	{ BD_ZLIB, 9, QUEUE_OK },
	{ BD_CRC, 1, QUEUE_CORRUPT },
	{ BD_DATA, 1, QUEUE_CORRUPT },
	{ BD_TRUNC, 1, QUEUE_CORRUPT },
	{ BD_TRAIL, 1, QUEUE_CORRUPT },
	{ BD_LONGER, 1, QUEUE_CORRUPT },
	{ BD_SHORTER, 1, QUEUE_CORRUPT },
	{ BD_FDICT, 1, QUEUE_CORRUPT },
	{ BD_METHOD, 1, QUEUE_CORRUPT },
	{ BD_VERSION, 1, QUEUE_CORRUPT },
	{ BD_STORED_CRC, 0, QUEUE_CORRUPT },
};

/* Makes case I's record in B. */
static void
body_case_make(struct qbuf *b, size_t i)
{
	size_t len = body_cases[i].damage == BD_EMPTY ? 0 : strlen(body_text);
	uint32_t crc = (uint32_t)crc32(0, (const Bytef *)body_text, (uInt)len);
	uLongf zlen;
	int f;

	qrec_body_encode(b, body_text, len, body_cases[i].level);
	switch (body_cases[i].damage) {
	case BD_CRC:
		b->p[10] ^= 0x01;
		break;
	case BD_DATA:
		b->p[14 + 4] ^= 0x10;
		break;
	case BD_TRUNC:
		b->n--;
		break;
	case BD_TRAIL:
		qbuf_u8(b, 0);
		break;
	case BD_LONGER:
	case BD_SHORTER:
		qbe64_put(b->p + 2,
		    len + (body_cases[i].damage == BD_LONGER ? 1 : -1));
		break;
	case BD_FDICT:
		/* FDICT set, FCHECK still right: only the flag refuses */
		f = (b->p[15] | 0x20) & 0xe0;
		b->p[15] = (uint8_t)(f +
		    (31 - ((b->p[14] << 8) | f) % 31) % 31);
		break;
	case BD_METHOD:
		b->p[14] = (uint8_t)((b->p[14] & 0xf0) | 7);
		b->p[15] = (uint8_t)(b->p[15] & 0xe0);
		b->p[15] = (uint8_t)(b->p[15] +
		    (31 - ((b->p[14] << 8) | b->p[15]) % 31) % 31);
		break;
	case BD_VERSION:
		b->p[0]++;
		break;
	case BD_STORED:
	case BD_STORED_CRC:
		b->n = 14;
		b->p[1] = 0;
		qbe32_put(b->p + 10,
		    crc ^ (body_cases[i].damage == BD_STORED_CRC ? 1u : 0u));
		qbuf_put(b, body_text, len);
		break;
	case BD_ZLIB:
		zlen = compressBound((uLong)len);
		b->n = 14;
		if (b->cap < 14 + zlen) {
			b->cap = 14 + zlen;
			b->p = realloc(b->p, b->cap);
		}
		if (compress2(b->p + 14, &zlen, (const Bytef *)body_text,
			(uLong)len, body_cases[i].level) != Z_OK)
			abort();
		b->n = 14 + zlen;
		break;
	default:
		break;
	}
}

static void
test_body_records(void)
{
	for (size_t i = 0; i < sizeof(body_cases) / sizeof(body_cases[0]);
	     i++) {
		struct qbuf b = { NULL, 0, 0 };
		char *out = NULL;
		size_t len = 99;
		enum queue_result r;

		body_case_make(&b, i);
		r = qrec_body_decode(1, b.p, b.n, &out, &len);
		if (r != body_cases[i].want)
			fprintf(stderr, "body case %zu\n", i);
		CHECK_INT(r, body_cases[i].want);
		if (r == QUEUE_OK) {
			size_t want = body_cases[i].damage == BD_EMPTY
			    ? 0
			    : strlen(body_text);

			CHECK_INT(len, want);
			CHECK(memcmp(out, body_text, want) == 0);
			CHECK(out[len] == '\0');
		}
		free(out);
		free(b.p);
	}
	qrec_thread_done();
}

int
main(void)
{
	char cmd[400];

	snprintf(tmpdir, sizeof(tmpdir), "/tmp/rq-queue-test-XXXXXX");
	if (mkdtemp(tmpdir) == NULL)
		return 2;
	log_set_level(LOG_LVL_ERR);
	test_ids();
	test_name_escape();
	test_addrlists();
	test_messages();
	test_filter_match();
	test_build();
	test_body_records();
	test_queue_db();
	test_history();
	test_mapfull();
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	if (system(cmd) != 0)
		return 2;
	return rqtest_done();
}
