/*
 * test_smtp_auth.c - table-driven unit tests for the SASL side of the
 * smtp module's pure functions: base64 (RFC 4648 vectors, bad input,
 * bounds), the client responses of PLAIN, XOAUTH2 and OAUTHBEARER (with
 * saslname escaping), and EHLO's AUTH list ("AUTH x y", "AUTH=x y").
 */
#include <stdlib.h>
#include <string.h>

#include "rqtest.h"
#include "smtp_int.h"

static const struct {
	const char *raw, *b64;
} b64_cases[] = {
	{ "", "" },
	{ "f", "Zg==" },
	{ "fo", "Zm8=" },
	{ "foo", "Zm9v" },
	{ "foob", "Zm9vYg==" },
	{ "fooba", "Zm9vYmE=" },
	{ "foobar", "Zm9vYmFy" },
	{ "Username:", "VXNlcm5hbWU6" },
	{ "Password:", "UGFzc3dvcmQ6" },
	{ "\xff\xfe\xfd", "//79" },
	{ "\x01", "AQ==" },
};

/* Encodes and decodes the RFC 4648 vectors. */
static void
test_base64(void)
{
	for (size_t i = 0; i < sizeof(b64_cases) / sizeof(b64_cases[0]); i++) {
		const char *raw = b64_cases[i].raw, *enc = b64_cases[i].b64;
		char out[64];
		unsigned char dec[64];
		size_t n;

		CHECK_INT(rq_base64_encode(raw, strlen(raw), out), strlen(enc));
		CHECK_STR(out, enc);
		CHECK(rq_base64_decode(enc, strlen(enc), dec, sizeof(dec), &n));
		CHECK_INT(n, strlen(raw));
		CHECK(memcmp(dec, raw, n) == 0);
	}
}

/* Rejects what is not base64, and what does not fit. */
static void
test_base64_bad(void)
{
	static const char *const bad[] = { "Zg=", "Zg",
		"Z===", "Zm9v=", "Z=g=", "Zm9v Zg==", "Zm9v\r\n", "Zm-v",
		"=Zm9", "Zg==Zg==", "Zm8=Zg==", "*" };
	unsigned char dec[64];
	size_t n = 99;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		bool ok = rq_base64_decode(
		    bad[i], strlen(bad[i]), dec, sizeof(dec), &n);

		if (ok)
			fprintf(stderr, "accepted %s\n", bad[i]);
		CHECK(!ok);
	}
	/* 6 bytes need 6: 5 is too small */
	CHECK(!rq_base64_decode("Zm9vYmFy", 8, dec, 5, &n));
	CHECK(rq_base64_decode("Zm9vYmFy", 8, dec, 6, &n));
	CHECK_INT(n, 6);
}

static const struct {
	enum cfg_sasl mech;
	const char *user, *secret, *host;
	unsigned port;
	const char *want; /* base64 of the response, "" for none */
} resp_cases[] = {
	/* RFC 4616: "\0tim\0tanstaaftanstaaf" */
	{ CFG_SASL_PLAIN, "tim", "tanstaaftanstaaf", "h", 25,
	    "AHRpbQB0YW5zdGFhZnRhbnN0YWFm" },
	/* Google's documented XOAUTH2 example */
	{ CFG_SASL_XOAUTH2, "someuser@example.com",
	    "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg", "h", 25,
	    "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdD"
	    "RxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ==" },
	/* RFC 7628 3.2.1 (host and port as sent) */
	{ CFG_SASL_OAUTHBEARER, "user@example.com",
	    "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==", "server.example.com",
	    143,
	    "bixhPXVzZXJAZXhhbXBsZS5jb20sAWhvc3Q9c2VydmVyLmV4YW1wbGUuY29tAXBvcn"
	    "Q9MTQzAWF1dGg9QmVhcmVyIHZGOWRmdDRxbVRjMk52YjNSbGNrQmhiSFJoZG1semRH"
	    "RXVZMjl0Q2c9PQEB" },
	{ CFG_SASL_LOGIN, "u", "p", "h", 25, "" },
};

/* The client responses against published examples. */
static void
test_responses(void)
{
	for (size_t i = 0; i < sizeof(resp_cases) / sizeof(resp_cases[0]);
	     i++) {
		unsigned char raw[512];
		char b64[800];
		size_t n = smtp_sasl_response(resp_cases[i].mech,
		    resp_cases[i].user, resp_cases[i].secret,
		    resp_cases[i].host, (uint16_t)resp_cases[i].port, raw,
		    sizeof(raw));

		rq_base64_encode(raw, n, b64);
		CHECK_STR(b64, resp_cases[i].want);
	}
}

/* OAUTHBEARER escapes "," and "=" in the user; a short buffer gives 0
 * and is zeroed. */
static void
test_response_edges(void)
{
	unsigned char raw[256];
	size_t n;

	n = smtp_sasl_response(
	    CFG_SASL_OAUTHBEARER, "a,b=c", "T", "h", 587, raw, sizeof(raw));
	CHECK_INT(n,
	    strlen("n,a=a=2Cb=3Dc,\1host=h\1port=587\1auth=Bearer "
		   "T\1\1"));
	CHECK(memcmp(raw, "n,a=a=2Cb=3Dc,\1host=h\1port=587\1auth=Bearer T\1\1",
		  n) == 0);
	memset(raw, 'x', sizeof(raw));
	CHECK_INT(smtp_sasl_response(
		      CFG_SASL_PLAIN, "user", "secret-pw", "h", 25, raw, 10),
	    0);
	for (size_t i = 0; i < 10; i++)
		CHECK_INT(raw[i], 0);
	CHECK_INT(raw[10], 'x');
	n = smtp_sasl_response(
	    CFG_SASL_PLAIN, "u", "p", "h", 25, raw, sizeof(raw));
	CHECK_INT(n, 4);
	CHECK(memcmp(raw, "\0u\0p", 4) == 0);
}

static const struct {
	const char *in;
	bool offered;
	unsigned bits;
	const char *list;
} ehlo_cases[] = {
	{ "250-mx\r\n250-AUTH PLAIN LOGIN\r\n250 SIZE 10\r\n", true,
	    SMTP_AUTH_BIT(CFG_SASL_PLAIN) | SMTP_AUTH_BIT(CFG_SASL_LOGIN),
	    "PLAIN LOGIN" },
	{ "250-mx\r\n250 AUTH=LOGIN xoauth2\r\n", true,
	    SMTP_AUTH_BIT(CFG_SASL_LOGIN) | SMTP_AUTH_BIT(CFG_SASL_XOAUTH2),
	    "LOGIN xoauth2" },
	{ "250-mx\r\n250-AUTH CRAM-MD5 DIGEST-MD5\r\n250-AUTH=PLAIN\r\n"
	  "250 OK\r\n",
	    true, SMTP_AUTH_BIT(CFG_SASL_PLAIN), "CRAM-MD5 DIGEST-MD5" },
	{ "250-mx\r\n250-AUTH\r\n250 OK\r\n", true, 0, "" },
	{ "250-mx\r\n250-AUTH  OAUTHBEARER\tGSSAPI  \r\n250 X\r\n", true,
	    SMTP_AUTH_BIT(CFG_SASL_OAUTHBEARER), "OAUTHBEARER GSSAPI  " },
	{ "250-mx\r\n250-AUTHX PLAIN\r\n250-XAUTH PLAIN\r\n250 OK\r\n", false,
	    0, "" },
	/* the greeting line is not a keyword */
	{ "250 AUTH PLAIN\r\n", false, 0, "" },
	{ "250-mx\r\n250 AUTH PLAINX LOGINPLAIN PLAIN\r\n", true,
	    SMTP_AUTH_BIT(CFG_SASL_PLAIN), "PLAINX LOGINPLAIN PLAIN" },
};

/* EHLO's AUTH keyword: both forms, unknown mechanisms, the list. */
static void
test_ehlo_auth(void)
{
	for (size_t i = 0; i < sizeof(ehlo_cases) / sizeof(ehlo_cases[0]);
	     i++) {
		struct smtp_ehlo e;

		smtp_ehlo_parse(ehlo_cases[i].in, strlen(ehlo_cases[i].in), &e);
		CHECK_INT(e.auth_offered, ehlo_cases[i].offered);
		CHECK_INT(e.auth, ehlo_cases[i].bits);
		CHECK_STR(e.auth_list, ehlo_cases[i].list);
	}
}

/* A 334 challenge, as the reply parser and the decoder see it. */
static void
test_challenge(void)
{
	static const char r[] = "334 VXNlcm5hbWU6\r\n";
	struct smtp_reply reply;
	unsigned char dec[64];
	size_t used, n;

	CHECK_INT(smtp_reply_parse(r, strlen(r), &reply, &used), SMTP_PARSE_OK);
	CHECK_INT(reply.code, 334);
	CHECK_STR(reply.text, "VXNlcm5hbWU6");
	CHECK(rq_base64_decode(
	    reply.text, strlen(reply.text), dec, sizeof(dec), &n));
	CHECK_INT(n, 9);
	CHECK(memcmp(dec, "Username:", 9) == 0);
	CHECK_STR(smtp_phase_name(SMTP_PH_AUTH), "AUTH");
	CHECK_STR(smtp_phase_name(SMTP_PH_TOKEN), "token command");
}

int
main(void)
{
	test_base64();
	test_base64_bad();
	test_responses();
	test_response_edges();
	test_ehlo_auth();
	test_challenge();
	return rqtest_done();
}
