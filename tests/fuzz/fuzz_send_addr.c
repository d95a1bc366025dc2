/*
 * fuzz_send_addr.c - libFuzzer target for the parsers of `relayq send`
 * (tools/cmd_send.c, included here to reach its static functions): the
 * address-list parser used for RCPT arguments and -t, the -f parser, -N
 * and the xtext encoder.  The first byte picks the parser.  Checks that
 * every address accepted is safe to write into an X-Receiver: line.
 */
#define cmd_send fuzz_cmd_send_unused
#include "../../tools/cmd_send.c"

int
tools_fail(int code, const char *cmd, const char *fmt, ...)
{
	(void)cmd;
	(void)fmt;
	return code;
}

int
cmd_mailq(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	abort();
}

int
cmd_flush(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	abort();
}

const char *
tools_cfg_path(const char *opt)
{
	return opt;
}

struct cfg *
tools_cfg_load(const char *path)
{
	(void)path;
	abort();
}

/* Aborts unless S is printable and short enough for a spool header. */
static void
check_addr(const char *s)
{
	if (strlen(s) > ADDR_MAX)
		abort();
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct addr_list l = { 0 };
	struct buf b = { 0 };
	char out[ENVID_MAX * 3 + 1], *str;
	size_t count = 0;

	if (size < 1)
		return 0;
	str = xstrndup((const char *)data + 1, size - 1);
	switch (data[0] & 3) {
	case 0:
		if (addr_list_parse(&l, (const char *)data + 1, size - 1,
			"example.org", &count) == ADDR_OK)
			for (size_t i = 0; i < l.n; i++)
				check_addr(l.v[i]);
		break;
	case 1:
		if (sender_parse(str, "example.org", &b) == ADDR_OK)
			check_addr(b.p);
		break;
	case 2:
		if (notify_parse(str, out, sizeof(out)) &&
		    strpbrk(out, " \r\n") != NULL)
			abort();
		break;
	case 3:
		if (strlen(str) <= ENVID_MAX &&
		    xtext_encode(str, out, sizeof(out)))
			for (char *p = out; *p; p++)
				if (*p <= ' ' || *p > '~' || *p == '=')
					abort();
		break;
	}
	addr_list_free(&l);
	free(b.p);
	free(str);
	return 0;
}
