/*
 * expiry.h - delay warnings and bounces as RFC 3464 DSNs (placeholder
 * until issue 6 lands).
 */
#ifndef RELAYQ_EXPIRY_H
#define RELAYQ_EXPIRY_H

#include "queue.h"

#endif
