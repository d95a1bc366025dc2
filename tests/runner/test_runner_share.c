/*
 * test_runner_share.c - how the priority classes share the runner
 * (runner_share.c), table-driven: the smooth weighted round robin of a
 * destination (weights and waiting jobs per class in, the order of the
 * granted connection slots out) and a scheduling pass's division of the
 * in-memory budget (free slots, recipient budget, weights and due
 * messages per class in, what each class takes out).  The end-to-end
 * counterpart is test_runner.py test_priority_under_one_connection.
 * And a destination's concurrency window (runner_conc_*): settings,
 * requests in flight and a run of results in, each step and the final
 * window out; its end-to-end counterpart is test_runner_conc.py.
 *
 * Classes are written U (urgent), D (dsn), N (normal), L (non-urgent).
 */
#include <stdlib.h>
#include <string.h>

#include "rqtest.h"
#include "runner_int.h"

static const char letter[CFG_NCLASS] = {
	[CFG_URGENT] = 'U',
	[CFG_DSN] = 'D',
	[CFG_NORMAL] = 'N',
	[CFG_NONURGENT] = 'L',
};

/* Weights as runner_share_weights() gives them: dsn has normal's. */
static void
weights_set(unsigned w[CFG_NCLASS], unsigned u, unsigned n, unsigned l)
{
	w[CFG_URGENT] = u;
	w[CFG_NORMAL] = n;
	w[CFG_NONURGENT] = l;
	w[CFG_DSN] = n;
}

/* The order in which a destination with WAIT jobs per class (U, D, N,
 * L) grants its slots, one letter a slot. */
static void
wrr_order(const unsigned w[CFG_NCLASS], const unsigned wait_udnl[4], char *out,
    size_t len)
{
	static const enum cfg_class udnl[4] = { CFG_URGENT, CFG_DSN, CFG_NORMAL,
		CFG_NONURGENT };
	unsigned left[CFG_NCLASS];
	int credit[CFG_NCLASS] = { 0 };
	bool waiting[CFG_NCLASS];
	size_t o = 0;
	int c;

	for (int i = 0; i < 4; i++)
		left[udnl[i]] = wait_udnl[i];
	for (;;) {
		for (c = 0; c < CFG_NCLASS; c++)
			waiting[c] = left[c] > 0;
		c = runner_share_wrr_pick(credit, w, waiting);
		if (c < 0 || o + 1 >= len)
			break;
		left[c]--;
		out[o++] = letter[c];
	}
	out[o] = '\0';
}

static void
test_wrr(void)
{
	static const struct {
		unsigned u, n, l; /* priority_weights */
		unsigned wait[4]; /* jobs waiting: U, D, N, L */
		const char *order; /* the slots granted, in order */
	} t[] = {
		/* the default weights, a few of each */
		{ 8, 4, 1, { 3, 0, 3, 3 }, "UNUUNNLLL" },
		/* urgent and normal: 2 to 1 while both wait */
		{ 8, 4, 1, { 13, 0, 13, 0 }, "UNUUNUUNUUNUUNUUNUUNNNNNNN" },
		/* each 13 slots while all wait: 8 U, 4 N, 1 L */
		{ 8, 4, 1, { 9, 0, 9, 9 }, "UNUUNULUNUUNUUNNNNLNLLLLLLL" },
		/* a flood of urgent does not starve non-urgent */
		{ 8, 4, 1, { 20, 0, 0, 2 }, "UUUULUUUUUUUULUUUUUUUU" },
		/* dsn has normal's weight; a tie goes to dsn (first) */
		{ 8, 4, 1, { 0, 3, 3, 0 }, "DNDNDN" },
		{ 8, 4, 1, { 1, 2, 2, 1 }, "UDNDNL" },
		/* one class alone goes at once */
		{ 8, 4, 1, { 0, 0, 0, 3 }, "LLL" },
		{ 8, 4, 1, { 0, 0, 0, 0 }, "" },
		/* equal weights: plain round robin in class order */
		{ 1, 1, 1, { 2, 0, 2, 2 }, "UNLUNL" },
		/* reversed weights */
		{ 1, 4, 8, { 3, 0, 3, 3 }, "LNLLNUNUU" },
		/* weight 0 goes only when nothing else waits */
		{ 0, 4, 1, { 2, 0, 2, 0 }, "NNUU" },
		{ 0, 0, 0, { 2, 0, 2, 2 }, "UUNNLL" },
	};
	char got[128];

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		unsigned w[CFG_NCLASS];

		weights_set(w, t[i].u, t[i].n, t[i].l);
		wrr_order(w, t[i].wait, got, sizeof(got));
		CHECK_STR(got, t[i].order);
	}
}

/*
 * A queue for runner_share_pass(): per class, DUE messages of PER
 * recipients each.  A take leases whole messages while its recipient
 * budget lasts; the message it stops in keeps the rest due (a slice),
 * whose next take needs no new slot in memory (as queue_due_take_rcpts
 * and the runner's messages in memory).
 */
struct fakeq {
	size_t room; /* free slots in memory */
	size_t due[CFG_NCLASS], per[CFG_NCLASS];
	size_t left[CFG_NCLASS]; /* recipients left of a sliced message */
	size_t msgs[CFG_NCLASS], rcpts[CFG_NCLASS]; /* what was taken */
};

static size_t
fake_take(void *arg, enum cfg_class c, size_t n, size_t *budget)
{
	struct fakeq *q = arg;
	size_t got = 0;

	while (n > 0 && *budget > 0 && q->due[c] > 0) {
		size_t k = q->left[c] ? q->left[c] : q->per[c];

		if (q->left[c] == 0)
			q->room = q->room > 0 ? q->room - 1 : 0;
		if (k > *budget)
			k = *budget;
		*budget -= k;
		q->rcpts[c] += k;
		q->left[c] = (q->left[c] ? q->left[c] : q->per[c]) - k;
		if (q->left[c] == 0)
			q->due[c]--;
		got++;
		n--;
	}
	q->msgs[c] += got;
	return got;
}

static size_t
fake_room(void *arg)
{
	return ((struct fakeq *)arg)->room;
}

static void
test_pass(void)
{
	static const struct {
		size_t room, rcpts; /* free slots, recipient budget */
		unsigned u, n, l; /* priority_weights */
		size_t due[4], per[4]; /* U, D, N, L: messages, recipients */
		size_t msgs[4]; /* taken (slices count) */
		size_t rcpt[4]; /* recipients leased */
	} t[] = {
		/* all due: 8/13, 4/13, 1/13; the rounding rest to urgent */
		{ 2000, 2000, 8, 4, 1, { 5000, 0, 5000, 5000 }, { 1, 1, 1, 1 },
		    { 1232, 0, 615, 153 }, { 1232, 0, 615, 153 } },
		/* one class alone takes everything */
		{ 2000, 2000, 8, 4, 1, { 0, 0, 0, 5000 }, { 1, 1, 1, 1 },
		    { 0, 0, 0, 2000 }, { 0, 0, 0, 2000 } },
		/* urgent leaves most of its share: normal (first in order)
		 * gets it, not non-urgent */
		{ 2000, 2000, 8, 4, 1, { 10, 0, 5000, 5000 }, { 1, 1, 1, 1 },
		    { 10, 0, 1837, 153 }, { 10, 0, 1837, 153 } },
		/* what normal leaves goes to urgent first */
		{ 2000, 2000, 8, 4, 1, { 5000, 0, 5, 5000 }, { 1, 1, 1, 1 },
		    { 1842, 0, 5, 153 }, { 1842, 0, 5, 153 } },
		/* few free slots: shared the same way */
		{ 100, 2000, 8, 4, 1, { 5000, 0, 5000, 5000 }, { 1, 1, 1, 1 },
		    { 63, 0, 30, 7 }, { 63, 0, 30, 7 } },
		/* less due than room: everything */
		{ 2000, 2000, 8, 4, 1, { 3, 2, 4, 5 }, { 1, 1, 1, 1 },
		    { 3, 2, 4, 5 }, { 3, 2, 4, 5 } },
		/* dsn with normal's weight, before normal */
		{ 2000, 2000, 8, 4, 1, { 0, 5000, 5000, 0 }, { 1, 1, 1, 1 },
		    { 0, 1000, 1000, 0 }, { 0, 1000, 1000, 0 } },
		/* big urgent messages do not take all the recipients:
		 * 1,333 of them (two messages, the second a slice), normal
		 * its 666, and the last one goes to urgent's slice */
		{ 2000, 2000, 8, 4, 1, { 3, 0, 5000, 0 }, { 1000, 1, 1, 1 },
		    { 3, 0, 666, 0 }, { 1334, 0, 666, 0 } },
		/* one message of 5,000 recipients alone: a slice of 2,000 */
		{ 2000, 2000, 8, 4, 1, { 0, 0, 1, 0 }, { 1, 1, 5000, 1 },
		    { 0, 0, 1, 0 }, { 0, 0, 2000, 0 } },
		/* a due class of weight 0 counts as 1 */
		{ 2000, 2000, 0, 4, 1, { 5000, 0, 5000, 0 }, { 1, 1, 1, 1 },
		    { 400, 0, 1600, 0 }, { 400, 0, 1600, 0 } },
		/* every due class gets at least one message */
		{ 1, 2000, 8, 4, 1, { 5000, 0, 5000, 5000 }, { 1, 1, 1, 1 },
		    { 1, 0, 1, 1 }, { 1, 0, 1, 1 } },
		/* nothing due */
		{ 2000, 2000, 8, 4, 1, { 0, 0, 0, 0 }, { 1, 1, 1, 1 },
		    { 0, 0, 0, 0 }, { 0, 0, 0, 0 } },
	};
	static const enum cfg_class udnl[4] = { CFG_URGENT, CFG_DSN, CFG_NORMAL,
		CFG_NONURGENT };

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct fakeq q;
		struct runner_share_in in;
		struct runner_share_ops ops = { fake_take, fake_room, &q };
		size_t took, want = 0;

		memset(&q, 0, sizeof(q));
		memset(&in, 0, sizeof(in));
		q.room = in.room = t[i].room;
		in.rcpts = t[i].rcpts;
		weights_set(in.weight, t[i].u, t[i].n, t[i].l);
		for (int k = 0; k < 4; k++) {
			q.due[udnl[k]] = t[i].due[k];
			q.per[udnl[k]] = t[i].per[k];
			in.due[udnl[k]] = t[i].due[k] > 0;
		}
		took = runner_share_pass(&in, &ops);
		for (int k = 0; k < 4; k++) {
			CHECK_INT(q.msgs[udnl[k]], t[i].msgs[k]);
			CHECK_INT(q.rcpts[udnl[k]], t[i].rcpt[k]);
			want += t[i].msgs[k];
		}
		CHECK_INT(took, want);
	}
}

/* The weights of a config: dsn gets normal's. */
static void
test_weights(void)
{
	static const char conf[] =
	    "priority_weights = urgent=9 normal=3 non-urgent=2\n";
	struct cfg *cfg;
	char err[256];
	unsigned w[CFG_NCLASS];

	CHECK_INT(
	    cfg_parse_buf("t.conf", conf, strlen(conf), &cfg, err, sizeof(err)),
	    CFG_OK);
	runner_share_weights(cfg_scope(cfg, NULL), w);
	CHECK_INT(w[CFG_URGENT], 9);
	CHECK_INT(w[CFG_NORMAL], 3);
	CHECK_INT(w[CFG_NONURGENT], 2);
	CHECK_INT(w[CFG_DSN], 3);
	cfg_free(cfg);
}

/*
 * The concurrency window: from INITIAL (capped at MAX), with BUSY
 * requests in flight, each letter of EVENTS (S success, F connection
 * failure, N neutral) fed in turn; STEPS has one letter per event (+
 * grew, - shrank, . same) and WINDOW is the end.
 */
static void
test_conc(void)
{
	static const struct {
		unsigned initial, max, busy;
		const char *events, *steps;
		unsigned window;
	} t[] = {
		/* a window's worth of successes opens it by one */
		{ 5, 20, 100, "", "", 5 },
		{ 5, 20, 100, "SSSSS", "....+", 6 },
		{ 5, 20, 100, "SSSSSSSSSSS", "....+.....+", 7 },
		{ 1, 20, 100, "SSS", "+.+", 3 },
		/* never above max_connections, whatever the start */
		{ 5, 5, 100, "SSSSSSSSSS", "..........", 5 },
		{ 30, 20, 100, "S", ".", 20 },
		{ 4, 5, 100, "SSSSSSSSSS", "...+......", 5 },
		/* no growth without demand: window < busy + initial */
		{ 5, 20, 0, "SSSSSSSSSS", "..........", 5 },
		{ 5, 20, 1, "SSSSSSSSSSSSSSSSSSSS", "....+...............", 6 },
		/* a window's worth of failures closes it by one, not below 1 */
		{ 5, 20, 100, "FFFFF", "....-", 4 },
		{ 5, 20, 100, "FFFFFFFFF", "....-...-", 3 },
		{ 2, 20, 100, "FFFFFF", ".-....", 1 },
		{ 1, 20, 100, "FFFF", "....", 1 },
		/* one kind restarts the count of the other */
		{ 5, 20, 100, "SSSSFSSSSS", ".........+", 6 },
		{ 5, 20, 100, "FFFFSFFFFF", ".........-", 4 },
		/* neutral results count for nothing and restart nothing */
		{ 5, 20, 100, "SSNSSS", ".....+", 6 },
		{ 5, 20, 100, "FFNFFF", ".....-", 4 },
		/* a start of 0 is 1 */
		{ 0, 20, 100, "", "", 1 },
	};

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct runner_conc c;
		char steps[64];
		size_t n = strlen(t[i].events);

		runner_conc_init(&c, t[i].initial, t[i].max);
		for (size_t k = 0; k < n; k++) {
			enum runner_conc_event ev = t[i].events[k] == 'S'
			    ? CONC_SUCCESS
			    : t[i].events[k] == 'F' ? CONC_FAILURE
						    : CONC_NEUTRAL;
			enum runner_conc_step st = runner_conc_feedback(
			    &c, ev, t[i].busy, t[i].initial, t[i].max);

			steps[k] = st == CONC_GREW ? '+'
			    : st == CONC_SHRANK	   ? '-'
						   : '.';
		}
		steps[n] = '\0';
		CHECK_STR(steps, t[i].steps);
		CHECK_INT(c.window, t[i].window);
	}
}

int
main(void)
{
	test_wrr();
	test_pass();
	test_weights();
	test_conc();
	return rqtest_done();
}
