/*
 * fuzz_expiry_dsn.c - libFuzzer target: any bytes as the original message
 * and as the remote text of a notice.  The first bytes choose the event,
 * RET and the size cap; the rest is split into a reply, an ORCPT, an
 * ENVID and the message.  Checks that every notice line ends in CRLF and
 * that the header helpers never read past the buffer.
 */
#include <stdlib.h>
#include <string.h>

#include "expiry.h"

/* Takes the next NUL-terminated piece of DATA (a malloc'ed copy). */
static char *
piece(const uint8_t **data, size_t *size)
{
	const uint8_t *end = memchr(*data, '\0', *size);
	size_t n = end ? (size_t)(end - *data) : *size;
	char *s = xstrndup((const char *)*data, n);

	*data += n + (end ? 1 : 0);
	*size -= n + (end ? 1 : 0);
	return s;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct expiry_dsn_rcpt r = { 0 };
	struct expiry_dsn d = { 0 };
	char *diag, *orcpt, *envid, *out, buf[128];
	size_t len;

	if (size < 3)
		return 0;
	d.event = (enum expiry_event)(data[0] % 4);
	d.ret_full = data[1] & 1;
	d.size_limit = 1 + (size_t)data[2] * 16;
	data += 3;
	size -= 3;
	diag = piece(&data, &size);
	orcpt = piece(&data, &size);
	envid = piece(&data, &size);
	r.addr = diag;
	r.orcpt = orcpt;
	r.action = (enum expiry_action)(d.event == EXPIRY_EV_DELAYED ? 1 : 0);
	r.status = envid;
	r.remote_mta = orcpt;
	r.diag = diag;
	r.last_attempt = 1795000000;
	r.retry_until = 1795000000;
	d.hostname = "fuzz.test";
	d.queue_id = orcpt;
	d.sender = envid;
	d.arrival = 1794990000;
	d.envid = envid;
	d.msg = (const char *)data;
	d.msglen = size;
	d.now = 1795000000;
	d.boundary = "fuzz";
	d.rcpts = &r;
	d.nrcpts = 1;
	out = expiry_dsn_build(&d, &len);
	for (size_t i = 0; i < len; i++) {
		if (out[i] == '\n' && (i == 0 || out[i - 1] != '\r'))
			abort();
		if (out[i] == '\r' && (i + 1 >= len || out[i + 1] != '\n'))
			abort();
	}
	free(out);
	(void)expiry_msg_header_get(
	    d.msg, size, "Precedence", buf, sizeof(buf));
	(void)expiry_msg_is_bulk(d.msg, size);
	if (expiry_msg_header_len(d.msg, size) > size)
		abort();
	free(diag);
	free(orcpt);
	free(envid);
	return 0;
}
