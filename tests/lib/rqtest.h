/*
 * rqtest.h - a minimal table-driven unit test harness: CHECK macros that
 * count failures and report FILE:LINE, and rqtest_done() that prints
 * "N passed, N failed" and returns the exit status.
 */
#ifndef RELAYQ_RQTEST_H
#define RELAYQ_RQTEST_H

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static int rqtest_pass, rqtest_fail;

#define CHECK(cond) \
	do { \
		if (cond) { \
			rqtest_pass++; \
		} else { \
			rqtest_fail++; \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, \
			    __LINE__, #cond); \
		} \
	} while (0)

#define CHECK_INT(a, b) \
	do { \
		long long a_ = (long long)(a), b_ = (long long)(b); \
		if (a_ == b_) { \
			rqtest_pass++; \
		} else { \
			rqtest_fail++; \
			fprintf(stderr, "%s:%d: %s == %lld, expected %lld\n", \
			    __FILE__, __LINE__, #a, a_, b_); \
		} \
	} while (0)

#define CHECK_STR(a, b) \
	do { \
		const char *a_ = (a), *b_ = (b); \
		if (a_ != NULL && b_ != NULL && strcmp(a_, b_) == 0) { \
			rqtest_pass++; \
		} else { \
			rqtest_fail++; \
			fprintf(stderr, \
			    "%s:%d: %s == \"%s\", expected \"%s\"\n", \
			    __FILE__, __LINE__, #a, a_ ? a_ : "(null)", \
			    b_ ? b_ : "(null)"); \
		} \
	} while (0)

/* Prints the totals; returns the process exit status. */
static inline int
rqtest_done(void)
{
	printf("%d passed, %d failed\n", rqtest_pass, rqtest_fail);
	return rqtest_fail ? 1 : 0;
}

#endif
