/*
 * test_cfg_files.c - table-driven unit tests for the smarthost tables:
 * the auth_file parser (keys, users, passwords, token commands and their
 * quoting, every error, no secret in any error), the sender_relayhost
 * parser, and, with real files in a temporary directory, the lookups
 * (credentials by sender then host, route precedence, mechanisms, the
 * effective TLS level, fingerprints, fallback relays) and the refusals
 * of cfg_files_load() (modes, owners).
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cfg_int.h"
#include "rqtest.h"

#define SECRET "s3cr3t-Pa55"

struct auth_case {
	const char *in;
	const char *err; /* substring of the error; NULL: must parse */
	const char *key, *user, *password; /* of the last entry */
	const char *argv[8]; /* the token command, when password is NULL */
	size_t n; /* entries */
};

static const struct auth_case auth_cases[] = {
	{ "[smtp.example.net]:587 user:" SECRET "\n", NULL,
	    "[smtp.example.net]:587", "user", SECRET, { NULL }, 1 },
	{ "smtp.example.net   user:pa ss:w" SECRET "  \r\n", NULL,
	    "smtp.example.net", "user", "pa ss:w" SECRET, { NULL }, 1 },
	{ "\t[SMTP.Example.NET] User:" SECRET, NULL, "[smtp.example.net]",
	    "User", SECRET, { NULL }, 1 },
	{ "# comment\n\n   \n@Example.COM app:" SECRET "\n", NULL,
	    "@example.com", "app", SECRET, { NULL }, 1 },
	{ "App@Example.com app@example.com:" SECRET, NULL, "app@example.com",
	    "app@example.com", SECRET, { NULL }, 1 },
	{ "<> bounces:" SECRET, NULL, "<>", "bounces", SECRET, { NULL }, 1 },
	{ "[::1]:2525 u:" SECRET, NULL, "[::1]:2525", "u", SECRET, { NULL },
	    1 },
	{ "[ipv6:::1]:25 u:" SECRET, NULL, "[::1]:25", "u", SECRET, { NULL },
	    1 },
	{ "h.example:2525 u:" SECRET "\nh.example u:x\n", NULL, "h.example",
	    "u", "x", { NULL }, 2 },
	{ "[h]:587 u:|/usr/bin/get-token --account 'my acct' "
	  "\"a \\\"b\\\" \\\\ \\n\" c\\ d ''",
	    NULL, "[h]:587", "u", NULL,
	    { "/usr/bin/get-token", "--account", "my acct", "a \"b\" \\ \\n",
		"c d", "" },
	    1 },
	{ "[h] u:|/bin/sh -c 'printf %s\\\\n tok; echo $HOME'", NULL, "[h]",
	    "u", NULL, { "/bin/sh", "-c", "printf %s\\\\n tok; echo $HOME" },
	    1 },
	/* errors */
	{ "[h]:587\n", "1: expected DESTINATION user:password", NULL, NULL,
	    NULL, { NULL }, 0 },
	{ "\n[h]:587 " SECRET "\n", "2: expected user:password", NULL, NULL,
	    NULL, { NULL }, 0 },
	{ "[h]:587 :" SECRET, "1: empty user name", NULL, NULL, NULL, { NULL },
	    0 },
	{ "[h]:587 u:", "1: empty password", NULL, NULL, NULL, { NULL }, 0 },
	{ "[h:587 u:" SECRET, "1: bad DESTINATION \"[h:587\": missing ]", NULL,
	    NULL, NULL, { NULL }, 0 },
	{ "h:99999 u:" SECRET, "port out of range", NULL, NULL, NULL, { NULL },
	    0 },
	{ "h/x u:" SECRET, "bad character in host name", NULL, NULL, NULL,
	    { NULL }, 0 },
	{ "@ u:" SECRET, "1: bad sender \"@\"", NULL, NULL, NULL, { NULL }, 0 },
	{ "user@ u:" SECRET, "1: bad sender", NULL, NULL, NULL, { NULL }, 0 },
	/* fields swapped or misplaced: refused, the password never quoted */
	{ "me@example.com:" SECRET " [h]:587",
	    "1: bad sender \"me@example.com:...\"", NULL, NULL, NULL, { NULL },
	    0 },
	{ "me:" SECRET " [h]:587", "1: bad DESTINATION \"me:...\"", NULL, NULL,
	    NULL, { NULL }, 0 },
	{ "a@b@c u:" SECRET, "1: bad sender", NULL, NULL, NULL, { NULL }, 0 },
	{ "[h] u:|relative/cmd " SECRET,
	    "1: the token command must be an "
	    "absolute path",
	    NULL, NULL, NULL, { NULL }, 0 },
	{ "[h] u:|/bin/x '" SECRET, "1: unbalanced quote", NULL, NULL, NULL,
	    { NULL }, 0 },
	{ "[h] u:|/bin/x \"" SECRET, "1: unbalanced quote", NULL, NULL, NULL,
	    { NULL }, 0 },
	{ "[h] u:|", "1: empty token command", NULL, NULL, NULL, { NULL }, 0 },
	{ "[h] u:|   ", "1: empty token command", NULL, NULL, NULL, { NULL },
	    0 },
	{ "[H] u:" SECRET "\n# x\n[h] v:" SECRET,
	    "3: duplicate DESTINATION \"[h]\" (first on line 1)", NULL, NULL,
	    NULL, { NULL }, 0 },
};

/* Checks the auth_file parser against the table. */
static void
test_auth_parse(void)
{
	for (size_t i = 0; i < sizeof(auth_cases) / sizeof(auth_cases[0]);
	     i++) {
		const struct auth_case *c = &auth_cases[i];
		size_t len = strlen(c->in), n = 99;
		char *buf = malloc(len + 1), err[512] = "";
		struct cfg_auth *v = NULL;
		enum cfg_result r;

		memcpy(buf, c->in, len);
		r = cfg_auth_parse("AF", buf, len, &v, &n, err, sizeof(err));
		if (c->err != NULL) {
			CHECK_INT(r, CFG_ERR_SYNTAX);
			if (strstr(err, c->err) == NULL ||
			    strncmp(err, "AF:", 3) != 0)
				fprintf(
				    stderr, "case %zu: error \"%s\"\n", i, err);
			CHECK(strstr(err, c->err) != NULL);
			CHECK(strncmp(err, "AF:", 3) == 0);
			/* never the secret, whatever the error */
			CHECK(strstr(err, SECRET) == NULL);
			CHECK(strstr(err, "s3cr3t") == NULL);
			free(buf);
			continue;
		}
		CHECK_INT(r, CFG_OK);
		if (r != CFG_OK) {
			fprintf(stderr, "case %zu: %s\n", i, err);
			free(buf);
			continue;
		}
		CHECK_INT(n, c->n);
		{
			const struct cfg_auth *a = &v[n - 1];

			CHECK_STR(a->key, c->key);
			CHECK_STR(a->user, c->user);
			CHECK_STR(a->file, "AF");
			CHECK(strstr(a->id, a->user) != NULL);
			CHECK(strstr(a->id, SECRET) == NULL);
			if (c->password != NULL) {
				CHECK_STR(a->password, c->password);
				CHECK(a->argv == NULL);
			} else {
				size_t k;

				CHECK(a->password == NULL);
				CHECK(a->argv != NULL);
				for (k = 0; a->argv && c->argv[k] != NULL; k++)
					CHECK_STR(a->argv[k], c->argv[k]);
				CHECK(a->argv && a->argv[k] == NULL);
			}
		}
		cfg_auth_table_free(v, n);
		free(buf);
	}
}

struct sender_case {
	const char *in;
	const char *err;
	const char *key, *host; /* of entry 0 (sorted) */
	unsigned port;
	bool no_mx;
	size_t n;
};

static const struct sender_case sender_cases[] = {
	{ "App@Example.COM [smtp.one.example]:587\n", NULL, "app@example.com",
	    "smtp.one.example", 587, true, 1 },
	{ "@b.example smtp.two.example:2525\n<> [bounce.example]\n", NULL, "<>",
	    "bounce.example", 0, true, 2 },
	{ "# c\n\n@a.example  [::1]:25  \r\n", NULL, "@a.example", "::1", 25,
	    true, 1 },
	{ "@a.example\n", "1: expected SENDER [host]:port", NULL, NULL, 0,
	    false, 0 },
	{ "nobody [h]:25\n", "1: bad sender \"nobody\"", NULL, NULL, 0, false,
	    0 },
	{ "@a.example [h:25\n", "1: bad relay \"[h:25\" for @a.example", NULL,
	    NULL, 0, false, 0 },
	/* a credentials file given as sender_relayhost: no password shown */
	{ "b@a.example billing:Secr3t\n",
	    "1: bad relay \"billing:...\" for b@a.example", NULL, NULL, 0,
	    false, 0 },
	{ "@a.example [h]:25\n@A.example [i]:25\n",
	    "2: duplicate sender \"@a.example\"", NULL, NULL, 0, false, 0 },
};

/* Checks the sender_relayhost parser against the table. */
static void
test_sender_parse(void)
{
	for (size_t i = 0; i < sizeof(sender_cases) / sizeof(sender_cases[0]);
	     i++) {
		const struct sender_case *c = &sender_cases[i];
		struct cfg_sender_route *v = NULL;
		size_t n = 0;
		char err[512] = "";
		enum cfg_result r = cfg_sender_map_parse(
		    "SR", c->in, strlen(c->in), &v, &n, err, sizeof(err));

		if (c->err != NULL) {
			CHECK_INT(r, CFG_ERR_SYNTAX);
			if (strstr(err, c->err) == NULL)
				fprintf(stderr, "case %zu: \"%s\"\n", i, err);
			CHECK(strstr(err, c->err) != NULL);
			continue;
		}
		CHECK_INT(r, CFG_OK);
		CHECK_INT(n, c->n);
		if (r == CFG_OK && n > 0) {
			CHECK_STR(v[0].key, c->key);
			CHECK_STR(v[0].relay.host, c->host);
			CHECK_INT(v[0].relay.port, c->port);
			CHECK_INT(v[0].relay.no_mx, c->no_mx);
		}
		for (size_t k = 0; k < n; k++) {
			free((char *)v[k].key);
			free((char *)v[k].text);
		}
		free(v);
	}
}

static char dir[] = "/tmp/relayq-cfgfiles-XXXXXX";

/* Writes TEXT to DIR/NAME with MODE; returns the path (static). */
static const char *
put(const char *name, const char *text, mode_t mode)
{
	static char path[8][256];
	static int k;
	char *p = path[k++ % 8];
	FILE *fp;

	snprintf(p, 256, "%s/%s", dir, name);
	fp = fopen(p, "w");
	fputs(text, fp);
	fclose(fp);
	chmod(p, mode);
	return p;
}

/* Loads config TEXT and its files; NULL (with ERR) on error. */
static struct cfg *
load(const char *text, char *err, size_t errlen)
{
	struct cfg *cfg;

	if (cfg_parse_buf("C", text, strlen(text), &cfg, err, errlen) != CFG_OK)
		return NULL;
	if (cfg_files_load(cfg, err, errlen) != CFG_OK) {
		cfg_free(cfg);
		return NULL;
	}
	return cfg;
}

/* Route precedence and credential lookups against real files. */
static void
test_lookups(void)
{
	char conf[2048], err[1024] = "";
	const char *af, *sr;
	struct cfg *cfg;
	struct cfg_route rt;
	const struct cfg_auth *a;
	struct cfg_hostport hp;
	enum cfg_sasl m[CFG_SASL_MAX];
	const char *why;

	af = put("auth",
	    "[relay.example]:587 relay-user:" SECRET "\n"
	    "@apps.example apps:" SECRET "\n"
	    "one@apps.example one:" SECRET "\n"
	    "[fb.example] fb-user:" SECRET "\n"
	    "plain.example:2525 plain-user:" SECRET "\n"
	    "[tok.example]:465 tok-user:|/usr/bin/token --x\n",
	    0600);
	sr = put("senders",
	    "@apps.example [tok.example]:465\n"
	    "<> [bounce.example]:25\n"
	    "two@apps.example plain.example:2525\n",
	    0644);
	snprintf(conf, sizeof(conf),
	    "auth_file = %s\nsender_relayhost = %s\n"
	    "relayhost = [relay.example]:587\n"
	    "fallback_relay = [fb.example], other.example:26\n"
	    "[domain mx.example]\nrelayhost =\n"
	    "[domain pinned.example]\nrelayhost = [relay.example]:587\n"
	    "tls_fingerprint = SHA256:%s\n"
	    "auth_mechanisms = login xoauth2\n"
	    "[domain .sub.example]\ntls = none\n",
	    af, sr,
	    "00112233445566778899AABBCCDDEEFF00112233445566778899aabbccddeeff");
	cfg = load(conf, err, sizeof(err));
	CHECK(cfg != NULL);
	if (cfg == NULL) {
		fprintf(stderr, "%s\n", err);
		return;
	}
	/* 1. no sender route: the global relayhost, host credentials */
	cfg_route_get(cfg, "dst.example", "x@other.example", &rt);
	CHECK_STR(rt.via, "relayhost");
	CHECK_STR(rt.relay->host, "relay.example");
	CHECK_INT(rt.port, 587);
	CHECK(rt.auth != NULL && strcmp(rt.auth->user, "relay-user") == 0);
	CHECK_INT(cfg_tls_level(rt.scope, rt.auth, rt.port), CFG_TLS_ENCRYPT);
	CHECK(!cfg_tls_wrapper(rt.scope, rt.port));
	CHECK_INT(cfg_auth_mechs(rt.scope, rt.auth, m), 2);
	CHECK(m[0] == CFG_SASL_PLAIN && m[1] == CFG_SASL_LOGIN);
	/* 2. a sender route (by @domain) with sender credentials */
	cfg_route_get(cfg, "dst.example", "Any@Apps.Example", &rt);
	CHECK_STR(rt.via, "sender");
	CHECK_STR(rt.relay->host, "tok.example");
	CHECK_INT(rt.port, 465);
	CHECK(rt.auth && strcmp(rt.auth->user, "apps") == 0);
	CHECK(cfg_tls_wrapper(rt.scope, rt.port));
	/* the exact address beats @domain, for routes and credentials */
	cfg_route_get(cfg, "dst.example", "two@apps.example", &rt);
	CHECK_STR(rt.relay->host, "plain.example");
	CHECK_INT(rt.port, 2525);
	CHECK(rt.auth && strcmp(rt.auth->user, "apps") == 0);
	cfg_route_get(cfg, "dst.example", "one@apps.example", &rt);
	CHECK(rt.auth && strcmp(rt.auth->user, "one") == 0);
	/* <> has a route but no credentials of its own: none for the host */
	cfg_route_get(cfg, "dst.example", "", &rt);
	CHECK_STR(rt.relay->host, "bounce.example");
	CHECK(rt.auth == NULL);
	CHECK_INT(cfg_tls_level(rt.scope, rt.auth, rt.port), CFG_TLS_MAY);
	/* 3. a [domain] relayhost beats the sender route; empty means MX */
	cfg_route_get(cfg, "mx.example", "any@apps.example", &rt);
	CHECK_STR(rt.via, "mx");
	CHECK(rt.relay == NULL && rt.auth == NULL);
	CHECK_INT(rt.port, 25);
	cfg_route_get(cfg, "pinned.example", "x@other.example", &rt);
	CHECK_STR(rt.via, "domain");
	CHECK(rt.auth && strcmp(rt.auth->user, "relay-user") == 0);
	CHECK_INT(cfg_tls_level(rt.scope, rt.auth, rt.port), CFG_TLS_PINNED);
	{
		unsigned char fp[CFG_FINGERPRINT_MAX][32];

		CHECK_INT(
		    cfg_fingerprints(rt.scope, fp, CFG_FINGERPRINT_MAX), 1);
		CHECK_INT(fp[0][0], 0x00);
		CHECK_INT(fp[0][10], 0xaa);
		CHECK_INT(fp[0][31], 0xff);
	}
	/* auth_mechanisms: only those fitting the credential, in order */
	CHECK_INT(cfg_auth_mechs(rt.scope, rt.auth, m), 1);
	CHECK(m[0] == CFG_SASL_LOGIN);
	/* a section without relayhost: the sender route still applies */
	cfg_route_get(cfg, "a.sub.example", "any@apps.example", &rt);
	CHECK_STR(rt.via, "sender");
	CHECK_STR(cfg_scope_name(rt.scope), ".sub.example");
	/* a token credential: its own default mechanisms */
	cfg_hostport_parse("[tok.example]:465", 17, &hp, &why);
	a = cfg_auth_lookup(cfg, NULL, &hp, 465);
	CHECK(a && a->argv && strcmp(a->argv[0], "/usr/bin/token") == 0);
	CHECK_INT(cfg_auth_mechs(cfg_scope(cfg, NULL), a, m), 2);
	CHECK(m[0] == CFG_SASL_OAUTHBEARER && m[1] == CFG_SASL_XOAUTH2);
	/* host keys: [host] matches any port, host:port only that port */
	cfg_hostport_parse("[fb.example]:25", 15, &hp, &why);
	a = cfg_auth_lookup(cfg, "x@y.example", &hp, 25);
	CHECK(a && strcmp(a->user, "fb-user") == 0);
	cfg_hostport_parse("plain.example", 13, &hp, &why);
	CHECK(cfg_auth_lookup(cfg, NULL, &hp, 2525) != NULL);
	CHECK(cfg_auth_lookup(cfg, NULL, &hp, 25) == NULL);
	cfg_hostport_parse("[PLAIN.example]:2525", 20, &hp, &why);
	CHECK(cfg_auth_lookup(cfg, NULL, &hp, 2525) != NULL);
	cfg_hostport_parse("[relay.example]", 15, &hp, &why);
	CHECK(cfg_auth_lookup(cfg, NULL, &hp, 25) == NULL);
	/* fallback relays: a missing port is smtp_port */
	{
		struct cfg_hostport fb[CFG_FALLBACK_MAX];
		size_t n = cfg_fallback_relays(
		    cfg_scope(cfg, NULL), fb, CFG_FALLBACK_MAX);

		CHECK_INT(n, 2);
		CHECK_STR(fb[0].host, "fb.example");
		CHECK_INT(fb[0].port, 25);
		CHECK_INT(fb[0].no_mx, 1);
		CHECK_STR(fb[1].host, "other.example");
		CHECK_INT(fb[1].port, 26);
		CHECK_INT(fb[1].no_mx, 0);
	}
	cfg_free(cfg);
}

struct refusal {
	const char *what;
	mode_t mode;
	uid_t owner; /* (uid_t)-1: ours */
	const char *err;
};

/* cfg_files_load() refuses files others can read, or owned by others. */
static void
test_refusals(void)
{
	static const struct refusal cases[] = {
		{ "auth", 0640, (uid_t)-1, "C:2: auth_file " },
		{ "auth", 0604, (uid_t)-1, "mode 0604 lets group or others" },
		{ "auth", 0602, (uid_t)-1, "mode 0602" },
		{ "auth", 0620, (uid_t)-1, "mode 0620" },
		{ "auth", 0600, 12345, "owned by uid 12345" },
		{ "auth", 0400, (uid_t)-1, NULL },
		{ "key", 0644, (uid_t)-1, "C:4: tls_key_file " },
		{ "key", 0640, (uid_t)-1, NULL },
	};
	char conf[1024], err[1024];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *af = put("auth2", "[h] u:" SECRET "\n", 0600);
		const char *kf = put("key2", "not a key\n", 0600);
		const char *p = strcmp(cases[i].what, "auth") == 0 ? af : kf;
		struct cfg *cfg;

		chmod(p, cases[i].mode);
		if (cases[i].owner != (uid_t)-1 && geteuid() == 0)
			CHECK_INT(chown(p, cases[i].owner, 0), 0);
		else if (cases[i].owner != (uid_t)-1)
			continue; /* only root can give files away */
		snprintf(conf, sizeof(conf),
		    "# x\nauth_file = %s\ntls_cert_file = %s\n"
		    "tls_key_file = %s\n[domain d.example]\ntls = may\n",
		    af, kf, kf);
		err[0] = '\0';
		cfg = load(conf, err, sizeof(err));
		if (cases[i].err == NULL) {
			const struct cfg_pem *pem;

			CHECK(cfg != NULL);
			if (cfg == NULL) {
				fprintf(stderr, "refusal %zu: %s\n", i, err);
				continue;
			}
			/* the pair is loaded, once, for every scope */
			pem = cfg_tls_client_cert(cfg_scope(cfg, NULL));
			CHECK(pem != NULL);
			CHECK(pem && pem->keylen == 10 &&
			    memcmp(pem->key, "not a key\n", 10) == 0);
			CHECK(pem && strcmp(pem->key_file, kf) == 0);
			CHECK_INT(pem ? pem->line : 0, 3);
			CHECK(cfg_tls_client_cert(
				  cfg_scope(cfg, "d.example")) == pem);
		} else {
			CHECK(cfg == NULL);
			if (strstr(err, cases[i].err) == NULL)
				fprintf(stderr, "refusal %zu: %s\n", i, err);
			CHECK(strstr(err, cases[i].err) != NULL);
			CHECK(strstr(err, SECRET) == NULL);
		}
		cfg_free(cfg);
		unlink(af);
		unlink(kf);
	}
}

/* The value checks of the list keys, through the config parser. */
static void
test_list_values(void)
{
	static const struct {
		const char *line, *err;
	} cases[] = {
		{ "auth_mechanisms = LOGIN, plain oauthbearer\n", NULL },
		{ "auth_mechanisms = cram-md5\n", "unknown mechanism" },
		{ "auth_mechanisms =\n", "expected one or more" },
		{ "tls_fingerprint = sha256:"
		  "00:11:22:33:44:55:66:77:88:99:aa:"
		  "bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:"
		  "ee:ff\n",
		    NULL },
		{ "tls_fingerprint = SHA256:0011\n", "expected SHA256:" },
		{ "tls_fingerprint = SHA1:00\n", "expected SHA256:" },
		{ "fallback_relay = [a]:25 b.example c:26\n", NULL },
		{ "fallback_relay = [a:25\n", "missing ]" },
		{ "fallback_relay = a:0\n", "port out of range" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct cfg *cfg = NULL;
		char err[512] = "";
		enum cfg_result r = cfg_parse_buf("C", cases[i].line,
		    strlen(cases[i].line), &cfg, err, sizeof(err));

		if (cases[i].err == NULL) {
			CHECK_INT(r, CFG_OK);
		} else {
			CHECK_INT(r, CFG_ERR_SYNTAX);
			CHECK(strstr(err, cases[i].err) != NULL);
			CHECK(strncmp(err, "C:1: bad value for ", 19) == 0);
		}
		cfg_free(cfg);
	}
}

int
main(void)
{
	if (mkdtemp(dir) == NULL)
		return 1;
	test_auth_parse();
	test_sender_parse();
	test_lookups();
	test_refusals();
	test_list_values();
	{
		char cmd[300];

		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		if (system(cmd) != 0)
			return 1;
	}
	return rqtest_done();
}
