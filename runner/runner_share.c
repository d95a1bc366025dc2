/*
 * runner_share.c - how the priority classes share the runner: pure
 * decisions (no event_base, no queue), which runner_sched.c and
 * runner_dest.c call and tests/runner/test_runner_share.c checks.
 *
 * Runner-private: runner_class_order[], runner_share_weights(),
 * runner_share_pass(), runner_share_wrr_pick(), runner_conc_init(),
 * runner_conc_feedback().
 *
 * The rules.  Each class has the weight priority_weights gives it; the
 * dsn class (the notices relayq sends itself) has normal's.  Ties and
 * leftovers go in the order urgent, dsn, normal, non-urgent.
 *
 * Memory: a scheduling pass shares the free part of the in-memory
 * budget (message slots) and its recipient budget among the classes
 * that have due work, each in proportion to its weight (a due class of
 * weight 0 counts as 1, and gets at least one message and one
 * recipient), so that a class's flood or big message does not take all
 * of them.  What a class leaves (it had less due than its share) goes
 * to the classes that used all of theirs, in the order above, as long
 * as slots and recipients are left.
 *
 * Connections: a destination short of connection slots picks the class
 * of its next job by smooth weighted round robin (as nginx's upstreams)
 * over the classes with a job waiting: each adds its weight to its
 * credit, the one with the most credit (the first in the order above
 * on a tie) goes and gives back the sum of the weights.  Urgent goes
 * first, but over any run of picks each class gets its weighted part,
 * so a flood of one class never starves another.
 *
 * Concurrency (as Postfix's qmgr finds a receiver's limit): a
 * destination starts with a window of initial_destination_concurrency
 * connections (at most max_connections).  Each request that got a
 * session is positive feedback of 1/window: a window's worth of them
 * (counted since the last step) opens it by one, up to max_connections,
 * and only while the destination has more than window - initial
 * requests in flight (BUSY), so an idle one does not grow without
 * proof.  Each connection-level failure is negative feedback of
 * 1/window: a window's worth closes it by one, never below 1.  Feedback
 * of one kind restarts the count of the other (hysteresis), so a window
 * moves only on a run of like results.  Integer counts, no rounding.
 */
#include "runner_int.h"

const enum cfg_class runner_class_order[CFG_NCLASS] = { CFG_URGENT, CFG_DSN,
	CFG_NORMAL, CFG_NONURGENT };

/* Fills W with the weight of each class under the global scope G. */
void
runner_share_weights(const struct cfg_scope *g, unsigned w[CFG_NCLASS])
{
	for (int c = 0; c < CFG_NCLASS; c++)
		w[c] = cfg_weight(g, c == CFG_DSN ? CFG_NORMAL : c);
}

/*
 * One pass's takes (see the rules above): first each due class its
 * share of IN's slots and recipients, then what is left to the classes
 * that used all of theirs.  Returns the messages OPS took in all.
 */
size_t
runner_share_pass(
    const struct runner_share_in *in, const struct runner_share_ops *ops)
{
	size_t budget = in->rcpts, took = 0, room;
	unsigned w[CFG_NCLASS], sumw = 0;
	bool more[CFG_NCLASS];
	int i;

	for (i = 0; i < CFG_NCLASS; i++) {
		enum cfg_class c = runner_class_order[i];

		w[c] = in->due[c] ? in->weight[c] : 0;
		if (in->due[c] && w[c] == 0)
			w[c] = 1;
		sumw += w[c];
		more[c] = false;
	}
	/* Each class with due work gets its weighted share... */
	for (i = 0; i < CFG_NCLASS && sumw > 0; i++) {
		enum cfg_class c = runner_class_order[i];
		size_t share, rb, got;

		if (!in->due[c])
			continue;
		share = in->room * w[c] / sumw;
		if (share == 0)
			share = 1;
		/* the recipients too: each class its weighted share (a
		 * class's big message does not take all of them) */
		rb = in->rcpts * w[c] / sumw;
		if (rb == 0)
			rb = 1;
		if (rb > budget)
			rb = budget;
		budget -= rb;
		got = ops->take(ops->arg, c, share, &rb);
		budget += rb;
		more[c] = got == share || rb == 0;
		took += got;
	}
	/* ...and what others left goes in priority order. */
	for (i = 0; i < CFG_NCLASS && budget > 0; i++) {
		enum cfg_class c = runner_class_order[i];

		room = ops->room(ops->arg);
		if (room == 0)
			break;
		if (more[c])
			took += ops->take(ops->arg, c, room, &budget);
	}
	return took;
}

/*
 * Picks the class of a destination's next job among those WAITING, by
 * smooth weighted round robin over CREDIT (the destination's state,
 * updated); returns -1 when none waits.
 */
int
runner_share_wrr_pick(int credit[CFG_NCLASS], const unsigned w[CFG_NCLASS],
    const bool waiting[CFG_NCLASS])
{
	int total = 0, best = -1, i;

	for (i = 0; i < CFG_NCLASS; i++) {
		int c = runner_class_order[i];

		if (!waiting[c])
			continue;
		credit[c] += (int)w[c];
		total += (int)w[c];
		if (best < 0 || credit[c] > credit[best])
			best = c;
	}
	if (best >= 0)
		credit[best] -= total;
	return best;
}

/* Starts window C at INITIAL connections, capped at MAX (at least 1). */
void
runner_conc_init(struct runner_conc *c, unsigned initial, unsigned max)
{
	c->window = initial < max ? initial : max;
	if (c->window < 1)
		c->window = 1;
	c->good = c->bad = 0;
}

/*
 * Applies one request's event EV to window C (BUSY: requests in flight,
 * this one included; INITIAL, MAX: the settings, see the rules above);
 * says whether the window moved.
 */
enum runner_conc_step
runner_conc_feedback(struct runner_conc *c, enum runner_conc_event ev,
    unsigned busy, unsigned initial, unsigned max)
{
	if (max < 1)
		max = 1;
	if (c->window > max) /* a smaller max_connections */
		c->window = max;
	if (c->window < 1)
		c->window = 1;
	switch (ev) {
	case CONC_SUCCESS:
		c->bad = 0;
		if (c->window >= max || c->window >= busy + initial)
			return CONC_SAME;
		if (++c->good < c->window)
			return CONC_SAME;
		c->good = 0;
		c->window++;
		return CONC_GREW;
	case CONC_FAILURE:
		c->good = 0;
		if (++c->bad < c->window)
			return CONC_SAME;
		c->bad = 0;
		if (c->window == 1)
			return CONC_SAME;
		c->window--;
		return CONC_SHRANK;
	case CONC_NEUTRAL:
		break;
	}
	return CONC_SAME;
}
