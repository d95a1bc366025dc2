/*
 * intake_wait.h - for tests that drive intake by hand: queue_intake_run()
 * with QI_WAIT waited out on the wake fd, as the runner's loop does.
 */
#ifndef RELAYQ_INTAKE_WAIT_H
#define RELAYQ_INTAKE_WAIT_H

#include <poll.h>

#include "queue.h"

/* queue_intake_run() until it says anything but QI_WAIT (or the wake fd
 * stays quiet for 30 s: then QI_WAIT, which the caller's check fails). */
static inline enum queue_intake_result
intake_run_wait(struct queue_intake *qi, size_t max_files)
{
	enum queue_intake_result ir;

	while ((ir = queue_intake_run(qi, max_files)) == QI_WAIT) {
		struct pollfd p = { queue_intake_wake_fd(qi), POLLIN, 0 };

		if (poll(&p, 1, 30000) != 1)
			break;
	}
	return ir;
}

#endif
