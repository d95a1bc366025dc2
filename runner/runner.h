/*
 * runner.h - the daemon: the one event_base, spool pickup, delivery
 * scheduling and expiry (placeholder until issues 3 and 5 land).
 */
#ifndef RELAYQ_RUNNER_H
#define RELAYQ_RUNNER_H

#include "cfg.h"

#endif
