/*
 * test_runner_tlsa.c - runner_dns_tlsa_parse(), table-driven: answers
 * built here byte by byte, with the usable records counted (usages 2 and
 * 3 only, selectors 0 and 1, matching types of the right length; full
 * data longer than kept as its SHA-512) and malformed answers refused.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#include "rqtest.h"
#include "runner_dns.h"

/* An answer: header, the question "_25._tcp.mx.test. TLSA", then N RRs
 * (a compressed owner pointing at the question). */
struct rr {
	unsigned type;
	unsigned char rdata[80];
	size_t rdlen;
};

/* Builds the answer of RRS (N of them) into BUF; returns its length. */
static size_t
answer(unsigned char *buf, const struct rr *rrs, size_t n)
{
	static const unsigned char q[] = "\3_25\4_tcp\2mx\4test";
	size_t len = 0;

	memset(buf, 0, 12);
	buf[2] = 0x81;
	buf[3] = 0xa0; /* RA, AD */
	buf[5] = 1;
	buf[7] = (unsigned char)n;
	len = 12;
	memcpy(buf + len, q, sizeof(q)); /* with the root's 0 */
	len += sizeof(q);
	buf[len++] = 0;
	buf[len++] = 52;
	buf[len++] = 0;
	buf[len++] = 1;
	for (size_t i = 0; i < n; i++) {
		buf[len++] = 0xc0;
		buf[len++] = 12;
		buf[len++] = (unsigned char)(rrs[i].type >> 8);
		buf[len++] = (unsigned char)rrs[i].type;
		buf[len++] = 0;
		buf[len++] = 1;
		memset(buf + len, 0, 3);
		len += 3;
		buf[len++] = 60;
		buf[len++] = 0;
		buf[len++] = (unsigned char)rrs[i].rdlen;
		memcpy(buf + len, rrs[i].rdata, rrs[i].rdlen);
		len += rrs[i].rdlen;
	}
	return len;
}

/* A TLSA rdata of USAGE SELECTOR MTYPE with LEN data bytes of 0xab. */
static struct rr
tlsa(int usage, int selector, int mtype, size_t len)
{
	struct rr r;

	memset(&r, 0, sizeof(r));
	r.type = 52;
	r.rdata[0] = (unsigned char)usage;
	r.rdata[1] = (unsigned char)selector;
	r.rdata[2] = (unsigned char)mtype;
	memset(r.rdata + 3, 0xab, len);
	r.rdlen = 3 + len;
	return r;
}

int
main(void)
{
	static const struct {
		int usage, selector, mtype;
		size_t len;
		int usable;
	} one[] = {
		{ 3, 1, 1, 32, 1 }, /* DANE-EE SPKI SHA-256 */
		{ 3, 0, 1, 32, 1 }, /* DANE-EE cert SHA-256 */
		{ 2, 1, 1, 32, 1 }, /* DANE-TA */
		{ 3, 1, 2, 64, 1 }, /* SHA-512 */
		{ 3, 1, 0, 40, 1 }, /* full data that fits */
		{ 3, 1, 0, 70, 2 }, /* full data longer than kept: SHA-512 */
		{ 3, 1, 1, 31, 0 }, /* wrong length for SHA-256 */
		{ 3, 1, 2, 32, 0 }, /* wrong length for SHA-512 */
		{ 3, 1, 3, 32, 0 }, /* unknown matching type */
		{ 3, 2, 1, 32, 0 }, /* unknown selector */
		{ 1, 1, 1, 32, 0 }, /* PKIX-EE: unusable for SMTP */
		{ 0, 1, 1, 32, 0 }, /* PKIX-TA: unusable for SMTP */
		{ 4, 1, 1, 32, 0 }, /* unknown usage */
	};
	unsigned char buf[1024];
	struct smtp_tlsa out[4];
	struct rr rrs[6];
	size_t len, nall, i;

	for (i = 0; i < sizeof(one) / sizeof(one[0]); i++) {
		rrs[0] = tlsa(
		    one[i].usage, one[i].selector, one[i].mtype, one[i].len);
		len = answer(buf, rrs, 1);
		CHECK_INT(runner_dns_tlsa_parse(buf, len, out, 4, &nall),
		    one[i].usable != 0);
		CHECK_INT(nall, 1);
		if (one[i].usable == 2) {
			/* matched as type 2, the SHA-512 of the same bytes */
			unsigned char md[64];

			SHA512(rrs[0].rdata + 3, one[i].len, md);
			CHECK_INT(out[0].mtype, 2);
			CHECK_INT(out[0].len, 64);
			CHECK(memcmp(out[0].data, md, 64) == 0);
		} else if (one[i].usable) {
			CHECK_INT(out[0].usage, one[i].usage);
			CHECK_INT(out[0].selector, one[i].selector);
			CHECK_INT(out[0].mtype, one[i].mtype);
			CHECK_INT(out[0].len, one[i].len);
			CHECK(out[0].data[0] == 0xab);
		}
	}

	/* Mixed with a CNAME and an RRSIG; more than MAX usable: capped. */
	rrs[0].type = 5;
	rrs[0].rdlen = 2;
	rrs[0].rdata[0] = 0xc0;
	rrs[0].rdata[1] = 12;
	for (i = 1; i < 6; i++)
		rrs[i] = tlsa(3, 1, 1, 32);
	rrs[3] = tlsa(1, 1, 1, 32);
	len = answer(buf, rrs, 6);
	CHECK_INT(runner_dns_tlsa_parse(buf, len, out, 3, &nall), 3);
	CHECK_INT(nall, 5);

	/* No answer at all (NODATA): 0 of 0. */
	len = answer(buf, rrs, 0);
	CHECK_INT(runner_dns_tlsa_parse(buf, len, out, 4, &nall), 0);
	CHECK_INT(nall, 0);

	/* Malformed: short header, truncated RR, rdata past the end, a bad
	 * label, a TLSA rdata shorter than 3 bytes. */
	CHECK_INT(runner_dns_tlsa_parse(buf, 5, out, 4, &nall), -1);
	rrs[0] = tlsa(3, 1, 1, 32);
	len = answer(buf, rrs, 1);
	CHECK_INT(runner_dns_tlsa_parse(buf, len - 1, out, 4, &nall), -1);
	CHECK_INT(runner_dns_tlsa_parse(buf, 40, out, 4, &nall), -1);
	buf[12] = 0x80; /* a label type that does not exist */
	CHECK_INT(runner_dns_tlsa_parse(buf, len, out, 4, &nall), -1);
	rrs[0] = tlsa(3, 1, 1, 0);
	rrs[0].rdlen = 2;
	len = answer(buf, rrs, 1);
	CHECK_INT(runner_dns_tlsa_parse(buf, len, out, 4, &nall), -1);
	return rqtest_done();
}
