/*
 * fuzz_mail_addr.c - libFuzzer target for the shared address-list parser
 * (cfg/mail_addr.c) under every combination of its syntax flags (intake's
 * and `relayq send`'s among them) and for the address set it feeds.
 * Input: two bytes of flags, one byte choosing the longest address and
 * the qualifying domain, then the text.  Checks that every address
 * handed on is safe to write into an X-Receiver: line (no control byte,
 * at most max_len, empty only as MAIL_ADDR_ONE's null sender), that a
 * failure says why, and that the set finds each address it holds.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cfg.h"
#include "mail.h"

/* What the callback checks against. */
struct sink {
	const struct mail_addr_syntax *syn;
	struct mail_addr_set set;
	size_t found;
};

/* Checks one address and adds it to the set (at most 3, to reach
 * MAIL_ADDR_TOOMANY). */
static enum mail_addr_result
found(void *arg, const char *addr)
{
	struct sink *k = arg;
	size_t n = strlen(addr);

	if (n > k->syn->max_len || (n == 0 && !(k->syn->flags & MAIL_ADDR_ONE)))
		abort();
	for (const char *p = addr; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			abort();
	if (k->found++ > 0 && (k->syn->flags & MAIL_ADDR_ONE))
		abort(); /* one at most */
	return mail_addr_set_put(&k->set, addr, 3, NULL) == MAIL_SET_FULL
	    ? MAIL_ADDR_TOOMANY
	    : MAIL_ADDR_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t lens[] = { 254, MAIL_ADDR_LEN_MAX, 10, 1 };
	static const char *const domains[] = { "example.org", NULL, "q.test",
		"" };
	struct mail_addr_syntax syn;
	struct mail_addr_error err;
	struct sink k;
	enum mail_addr_result r;

	if (size < 3)
		return 0;
	memset(&k, 0, sizeof(k));
	syn.flags = ((unsigned)data[0] | (unsigned)data[1] << 8) & 0x1ffu;
	syn.max_len = lens[data[2] & 3];
	syn.qualify = domains[(data[2] >> 2) & 3];
	k.syn = &syn;
	r = mail_addrlist_parse(
	    (const char *)data + 3, size - 3, &syn, found, &k, &err);
	if (r == MAIL_ADDR_BAD && err.why == NULL)
		abort();
	if (r == MAIL_ADDR_TOOLONG &&
	    (err.len <= syn.max_len || err.local > err.len))
		abort();
	for (size_t i = 0; i < k.set.n; i++) {
		size_t idx = SIZE_MAX;
		char *copy = xstrdup(k.set.v[i]);

		if (mail_addr_set_put(&k.set, copy, 0, &idx) !=
			MAIL_SET_FOUND ||
		    idx != i)
			abort();
		free(copy);
	}
	mail_addr_set_free(&k.set);
	return 0;
}
