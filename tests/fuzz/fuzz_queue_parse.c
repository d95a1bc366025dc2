/*
 * fuzz_queue_parse.c - libFuzzer target: any bytes as a dropped spool
 * file, taken in as intake does (bare CRs made line ends, then parsed and
 * built).  Checks the parser's invariants: recipients are non-empty,
 * free of control bytes, distinct and at most max_rcpt; and that what is
 * stored is what was checked: CRLF line endings only (no bare CR a
 * receiver could read as a line end), no header line over QP_LINE_MAX
 * bytes, no Bcc: field left, and as many Received: fields as the hop
 * count said (plus the one added).  Every other input is parsed with
 * intake's local-mail rules (a small alias table and sender map: the
 * header address edits, the sender map, alias expansion), every other
 * without.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mail.h"
#include "queue_parse.h"

/* The local-mail rules of the inputs parsed with them. */
static const char fuzz_aliases[] = "root: admin@example.net, ops\n"
				   "ops: a@x.test, \"|/bin/cmd\"\n"
				   "postmaster: root\nl1: l2\nl2: l1\n";
static const char fuzz_map[] =
    "root alerts@example.com\n"
    "@host.lan @example.com\n"
    "a@fuzz.test aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@x.test\n";

/* The rules, made once. */
static const struct mail_local *
fuzz_local(void)
{
	static struct mail_local ml;
	static struct mail_aliases *a;
	static struct mail_map *m;
	char err[256];

	if (a == NULL) {
		if (mail_aliases_parse("a", fuzz_aliases, strlen(fuzz_aliases),
			&a, err, sizeof(err)) != MAIL_TABLE_OK ||
		    mail_map_parse("m", fuzz_map, strlen(fuzz_map), &m, err,
			sizeof(err)) != MAIL_TABLE_OK)
			abort();
		ml.origin = "fuzz.test";
		ml.hostname = "host.fuzz.test";
		ml.aliases = a;
		ml.sender_map = m;
	}
	return &ml;
}

/* Aborts if S holds a byte below 0x20 or 0x7f, or is empty. */
static void
check_addr(const char *s)
{
	if (s == NULL || s[0] == '\0')
		abort();
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			abort();
}

/* Checks the header section of built message OUT (N bytes); returns
 * the number of Received: fields in it. */
static unsigned
check_header(const char *out, size_t n)
{
	size_t pos = 0;
	unsigned received = 0;

	while (pos < n) {
		const char *crlf = memmem(out + pos, n - pos, "\r\n", 2);
		size_t len, name;

		if (crlf == NULL)
			abort(); /* the header section has its empty line */
		len = (size_t)(crlf - (out + pos));
		if (len == 0)
			break;
		if (len > QP_LINE_MAX)
			abort();
		if (out[pos] != ' ' && out[pos] != '\t') {
			const char *colon = memchr(out + pos, ':', len);

			if (colon == NULL)
				abort(); /* a header line that is no field */
			name = (size_t)(colon - (out + pos));
			while (name > 0 &&
			    (out[pos + name - 1] == ' ' ||
				out[pos + name - 1] == '\t'))
				name--;
			if (name == 3 && strncasecmp(out + pos, "Bcc", 3) == 0)
				abort();
			if (name == 8 &&
			    strncasecmp(out + pos, "Received", 8) == 0)
				received++;
		}
		pos += len + 2;
	}
	return received;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct qp_result r;
	struct qp_ctx ctx;
	size_t max = (size & 3) == 0 ? 3 : 0;
	char *buf = malloc(size + 1);

	if (buf == NULL)
		return 0;
	if (size > 0)
		memcpy(buf, data, size);
	qp_bare_cr_fix(buf, size);
	for (size_t i = 0; i < size; i++)
		if (buf[i] == '\r' && (i + 1 == size || buf[i + 1] != '\n'))
			abort();
	ctx.qualify = "fuzz.test";
	ctx.max_rcpt = max;
	ctx.ml = (size & 4) ? fuzz_local() : NULL;
	if (qp_message_parse_ctx(buf, size, &ctx, &r) == QP_OK) {
		size_t n;
		char *out;

		if (r.nrcpt == 0 || r.hdr_end > size ||
		    (max > 0 && r.nrcpt > max))
			abort();
		for (size_t i = 0; i < r.nrcpt; i++)
			check_addr(r.rcpts[i].addr);
		for (size_t i = 0; i < r.nrcpt && r.nrcpt < 200; i++)
			for (size_t j = i + 1; j < r.nrcpt; j++)
				if (strcmp(r.rcpts[i].addr, r.rcpts[j].addr) ==
				    0)
					abort();
		if (r.sender != NULL && r.sender[0] != '\0')
			check_addr(r.sender);
		out = qp_message_build(buf, size, &r, "Received: x\r\n",
		    "Date: d\r\n", "Message-ID: <m@x>\r\n", &n);
		for (size_t i = 0; i < n; i++) {
			if (out[i] == '\n' && (i == 0 || out[i - 1] != '\r'))
				abort();
			if (out[i] == '\r' &&
			    (i + 1 == n || out[i + 1] != '\n'))
				abort();
		}
		if (n < 2 || memcmp(out + n - 2, "\r\n", 2) != 0)
			abort();
		if (check_header(out, n) != r.nreceived + 1)
			abort();
		free(out);
	} else if (r.why == NULL) {
		abort();
	}
	qp_result_free(&r);
	free(buf);
	return 0;
}
