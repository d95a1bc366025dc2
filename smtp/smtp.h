/*
 * smtp.h - the asynchronous SMTP client (placeholder until issue 4 lands).
 */
#ifndef RELAYQ_SMTP_H
#define RELAYQ_SMTP_H

#include "cfg.h"

#endif
