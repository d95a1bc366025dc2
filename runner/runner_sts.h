/*
 * runner_sts.h - private to runner/: MTA-STS (RFC 8461).  The pure parts
 * (runner_sts_parse.c: the TXT record, the policy file, MX patterns, the
 * cache record) and the policy source (runner_sts.c: TXT through c-ares,
 * the policy over HTTPS with evhttp and OpenSSL, the cache in the queue's
 * policy db).
 */
#ifndef RELAYQ_RUNNER_STS_H
#define RELAYQ_RUNNER_STS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "cfg.h"

#define STS_MX_MAX 16 /* mx: lines kept per policy */
#define STS_ID_MAX 32 /* RFC 8461 3.1: 1*32(ALPHA / DIGIT) */
#define STS_MAX_AGE_MAX 31557600 /* RFC 8461 3.2 */
#define STS_BODY_MAX 65536 /* the policy file's size limit */

enum sts_mode {
	STS_MODE_NONE = 0,
	STS_MODE_TESTING,
	STS_MODE_ENFORCE,
};

struct sts_policy {
	char id[STS_ID_MAX + 1]; /* the TXT record's id it was fetched for */
	enum sts_mode mode;
	int64_t max_age; /* seconds */
	int64_t expires; /* unix time: fetched + max_age */
	char mx[STS_MX_MAX][256]; /* patterns, lowercase: "mx.example.org",
				     "*.example.org" */
	size_t nmx;
};

/* Reads the TXT record TXT (LEN bytes): "v=STSv1; id=ID;" (RFC 8461
 * 3.1), other fields ignored.  0 with ID filled in, or -1. */
int runner_sts_txt_parse(const char *txt, size_t len, char id[STS_ID_MAX + 1]);

/* Reads the policy file BUF (LEN bytes, RFC 8461 3.2) into *P (id and
 * expires untouched).  0, or -1 with *WHY a static reason. */
int runner_sts_policy_parse(
    const char *buf, size_t len, struct sts_policy *p, const char **why);

/* Whether MX host HOST (no trailing dot needed) matches one of P's mx
 * patterns: equal, or "*." and exactly one more left label. */
bool runner_sts_mx_match(const struct sts_policy *p, const char *host);

/* The cache record of P: text, NUL-terminated, into BUF (LEN bytes);
 * returns its length (0 if it does not fit). */
size_t
runner_sts_record_format(const struct sts_policy *p, char *buf, size_t len);

/* Reads a cache record (from runner_sts_record_format); 0 or -1. */
int runner_sts_record_parse(const char *buf, size_t len, struct sts_policy *p);

/* The mode's name: "none", "testing", "enforce". */
const char *runner_sts_mode_name(enum sts_mode);

/* ---- the policy source (runner_sts.c) ---- */

struct sts;
struct dns;
struct queue;

/* A policy source on BASE using resolver DNS and queue Q for its cache. */
struct sts *
runner_sts_new(struct event_base *base, struct dns *dns, struct queue *q);

/* Frees it; pending lookups' callbacks are not called. */
void runner_sts_free(struct sts *);

/*
 * The policy of DOMAIN under scope SC (tls_ca_file, mta_sts_port): the
 * TXT record decides whether the cached policy is still good (same id,
 * not expired); else the policy is fetched, checked and cached; a failed
 * fetch keeps an unexpired cached policy.  CB(ARG, policy or NULL for
 * none) runs later, from the event loop; the policy is valid during the
 * call only.  OWNER tags the request for runner_sts_cancel().
 */
typedef void sts_policy_cb(void *arg, const struct sts_policy *);
void runner_sts_lookup(struct sts *, const struct cfg_scope *sc,
    const char *domain, sts_policy_cb *cb, void *arg);

/* Cancels the pending lookups whose callback argument is ARG. */
void runner_sts_cancel(struct sts *, void *arg);

#endif
