/*
 * cmd_newaliases.c - the alias modes of `relayq send`: -bi, -I and the
 * `newaliases` name (check alias_file and sender_map, report every
 * error and warning), and -bv (print where each address would be
 * delivered: syntax, qualification with origin, alias expansion).
 *
 * relayq reads alias_file as text at each config load (no .db to
 * build), so newaliases only checks it: exit 0 when it parses (the
 * warnings about |command, /file and :include: entries, which relayq
 * skips, go to standard error, as Postfix's postalias warns), 65 on a
 * syntax error, 78 when a file cannot be read or is unsafe.
 *
 * Public (cmd_send.h): send_aliases_run(), send_verify_run().
 * Invariant: neither mode writes anything (no spool file, no queue).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd_send.h"
#include "mail.h"

#define VERIFY_ADDR_MAX 254 /* as send: RFC 5321 4.5.3.1.3 */

/* Loads the local-mail tables of CFG; prints why and returns the exit
 * code on failure, else 0 with the warnings printed. */
static int
tables_load(struct cfg *cfg)
{
	char err[1024];
	const char *const *warn;
	size_t nwarn;
	enum cfg_result r = cfg_local_load(cfg, err, sizeof(err));

	if (r != CFG_OK) {
		fprintf(stderr, "relayq newaliases: %s\n", err);
		return r == CFG_ERR_SYNTAX ? RQ_EX_DATAERR : RQ_EX_CONFIG;
	}
	warn = cfg_alias_warnings(cfg, &nwarn);
	for (size_t i = 0; i < nwarn; i++)
		fprintf(stderr, "relayq newaliases: warning: %s\n", warn[i]);
	return RQ_EX_OK;
}

/* Checks alias_file (and sender_map); see cmd_send.h. */
int
send_aliases_run(struct cfg *cfg)
{
	/* no alias_file: nothing to check, and nothing said (as
	 * Postfix's newaliases with no alias_database) */
	return tables_load(cfg);
}

/* One -bv operand being verified. */
struct verify {
	const char *input;
	const struct mail_local *ml;
	size_t n; /* addresses printed */
};

/* Prints one address an operand is delivered to. */
static enum mail_addr_result
verify_target(void *arg, const char *addr)
{
	struct verify *v = arg;

	printf("%s... deliverable: <%s>\n", v->input, addr);
	v->n++;
	return MAIL_ADDR_OK;
}

/* Expands one address of an operand (mail_addrlist_parse's callback). */
static enum mail_addr_result
verify_addr(void *arg, const char *addr)
{
	struct verify *v = arg;
	struct mail_expand_info info;
	enum mail_addr_result r;

	memset(&info, 0, sizeof(info));
	r = mail_alias_expand(v->ml, addr, verify_target, v, &info);
	if (r == MAIL_ADDR_TOOMANY)
		printf("%s... aliases give too many addresses (at most %d)\n",
		    v->input, MAIL_ALIAS_FANOUT);
	if (info.skipped > 0)
		printf("%s... note: %zu |command, /file or :include: "
		       "target(s) skipped (relayq delivers no mail locally)\n",
		    v->input, info.skipped);
	if (info.loops > 0)
		printf("%s... note: alias loop: %zu name(s) reached again\n",
		    v->input, info.loops);
	return r;
}

/* Prints where each address of O would go; see cmd_send.h. */
int
send_verify_run(struct cfg *cfg, const struct send_opts *o)
{
	const char *origin = cfg_str(cfg_scope(cfg, NULL), CFG_ORIGIN);
	const struct mail_addr_syntax syn = { MAIL_ADDR_WORD_LIMIT, origin,
		VERIFY_ADDR_MAX };
	int rc = tables_load(cfg);
	bool bad = false;

	if (rc != RQ_EX_OK)
		return rc;
	if (o->nrcpt == 0) {
		fprintf(stderr,
		    "relayq send: -bv: name the addresses to "
		    "verify\n");
		return RQ_EX_USAGE;
	}
	for (int i = 0; i < o->nrcpt; i++) {
		struct verify v = { o->rcpts[i], cfg_mail_local(cfg), 0 };
		struct mail_addr_error err;
		enum mail_addr_result r = MAIL_ADDR_BAD;

		if (send_addr_ok(cfg, o->rcpts[i], false))
			r = mail_addrlist_parse(o->rcpts[i],
			    strlen(o->rcpts[i]), &syn, verify_addr, &v, &err);
		if (r == MAIL_ADDR_OK && v.n > 0)
			continue;
		if (r != MAIL_ADDR_TOOMANY)
			printf("%s... bad address\n", o->rcpts[i]);
		bad = true;
	}
	if (fflush(stdout) != 0)
		return RQ_EX_IOERR;
	return bad ? RQ_EX_DATAERR : RQ_EX_OK;
}
