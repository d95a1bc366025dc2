/*
 * queue.h - the on-disk LMDB queue (placeholder until issue 3 lands).
 */
#ifndef RELAYQ_QUEUE_H
#define RELAYQ_QUEUE_H

#include "cfg.h"

#endif
