/*
 * test_cfg_dkim.c - unit tests of cfg_dkim.c: the dkim_key_table parser
 * (table-driven), and which keys cfg_dkim_lookup() picks for a From:
 * domain, with real keys made by OpenSSL in a temporary directory and
 * loaded through cfg_files_load().
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "cfg_int.h"
#include "rqtest.h"

struct parse_case {
	const char *in;
	const char *err; /* substring of the error, or NULL */
	size_t n;
	const char *sender, *selector, *key, *domain; /* of the first */
	size_t len; /* bytes of IN; 0: strlen */
};

static const struct parse_case parse_cases[] = {
	{ "", NULL, 0, NULL, NULL, NULL, NULL, 0 },
	{ "# only a comment\n\n   \n", NULL, 0, NULL, NULL, NULL, NULL, 0 },
	{ "Example.COM  S1\t/k.pem\n", NULL, 1, "example.com", "s1", "/k.pem",
	    "example.com", 0 },
	{ "  .example.org ed /k d.example\r\n", NULL, 1, ".example.org", "ed",
	    "/k", "d.example", 0 },
	{ ".example.org ed /k\n", NULL, 1, ".example.org", "ed", "/k",
	    "example.org", 0 },
	{ "a.test s1 /k\na.test s2 /k2\n", NULL, 2, "a.test", "s1", "/k",
	    "a.test", 0 },
	{ "a.test s1 /k\na.test s1 /k2\n", "SR:2: duplicate entry for a.test",
	    0, NULL, NULL, NULL, NULL, 0 },
	{ "a.test s1 /k\na.test s2 /k\na.test s3 /k\na.test s4 /k\n"
	  "a.test s5 /k\n",
	    "SR:5: more than 4 keys for a.test", 0, NULL, NULL, NULL, NULL, 0 },
	{ "a.test s1\n", "SR:1: expected SENDER-DOMAIN", 0, NULL, NULL, NULL,
	    NULL, 0 },
	{ "a.test s1 /k d.test extra\n", "SR:1: expected", 0, NULL, NULL, NULL,
	    NULL, 0 },
	{ "a@b.test s1 /k\n", "SR:1: bad sender domain", 0, NULL, NULL, NULL,
	    NULL, 0 },
	{ "a..test s1 /k\n", "bad sender domain", 0, NULL, NULL, NULL, NULL,
	    0 },
	{ "..a.test s1 /k\n", "bad sender domain", 0, NULL, NULL, NULL, NULL,
	    0 },
	{ "a.test s;1 /k\n", "SR:1: bad selector", 0, NULL, NULL, NULL, NULL,
	    0 },
	{ "a.test s1 k.pem\n", "is not an absolute path", 0, NULL, NULL, NULL,
	    NULL, 0 },
	{ "a.test s1 /k .d.test\n", "bad signing domain", 0, NULL, NULL, NULL,
	    NULL, 0 },
	{ "# x\na.test s1 /k\nb.test\0 s /k\n", "SR:3: NUL byte", 0, NULL, NULL,
	    NULL, NULL, 30 },
};

/* The parser, case by case. */
static void
test_parse(void)
{
	for (size_t i = 0; i < sizeof(parse_cases) / sizeof(parse_cases[0]);
	     i++) {
		const struct parse_case *c = &parse_cases[i];
		struct cfg_dkim_entry *v = NULL;
		size_t n = 0, len = c->len ? c->len : strlen(c->in);
		char err[512] = "";
		enum cfg_result r;

		r = cfg_dkim_table_parse(
		    "SR", c->in, len, &v, &n, err, sizeof(err));
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
			CHECK_STR(v[0].sender, c->sender);
			CHECK_STR(v[0].selector, c->selector);
			CHECK_STR(v[0].key_file, c->key);
			CHECK_STR(v[0].domain, c->domain);
		}
		if (r == CFG_OK)
			cfg_dkim_entries_free(v, n);
	}
}

static char dir[] = "/tmp/relayq-cfgdkim-XXXXXX";

/* Writes a new key of TYPE ("RSA", "ED25519") to DIR/NAME, mode 0600. */
static const char *
keygen(const char *name, const char *type)
{
	static char path[8][256];
	static int k;
	char *p = path[k++ % 8];
	EVP_PKEY *pk = strcmp(type, "RSA") == 0
	    ? EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048)
	    : EVP_PKEY_Q_keygen(NULL, NULL, type);
	FILE *fp;

	snprintf(p, 256, "%s/%s", dir, name);
	fp = fopen(p, "w");
	PEM_write_PrivateKey(fp, pk, NULL, NULL, 0, NULL, NULL);
	fclose(fp);
	chmod(p, 0600);
	EVP_PKEY_free(pk);
	return p;
}

/* Which keys a From: domain gets. */
static void
test_lookup(void)
{
	char conf[2048], table[1024], tpath[300], err[1024] = "";
	const char *rsa = keygen("rsa.pem", "RSA");
	const char *ed = keygen("ed.pem", "ED25519");
	const struct cfg_dkim_key *k[CFG_DKIM_SIGS_MAX];
	struct cfg *cfg;
	struct cfg_dkim *dk;
	FILE *fp;

	snprintf(table, sizeof(table),
	    "both.test r1 %s\nboth.test e1 %s\n.sub.test s %s\n"
	    "x.sub.test exact %s\n",
	    rsa, ed, ed, rsa);
	snprintf(tpath, sizeof(tpath), "%s/table", dir);
	fp = fopen(tpath, "w");
	fputs(table, fp);
	fclose(fp);
	snprintf(conf, sizeof(conf),
	    "dkim_key_file = %s\ndkim_selector = g\ndkim_domain = g.test\n"
	    "dkim_key_table = %s\n",
	    rsa, tpath);
	if (cfg_parse_buf("C", conf, strlen(conf), &cfg, err, sizeof(err)) !=
	    CFG_OK) {
		fprintf(stderr, "%s\n", err);
		CHECK(0);
		return;
	}
	CHECK_INT(cfg_files_load(cfg, err, sizeof(err)), CFG_OK);
	dk = cfg_dkim_hold(cfg);
	CHECK(dk != NULL);
	cfg_free(cfg); /* the reference outlives the cfg */
	CHECK_INT(cfg_dkim_lookup(dk, "both.test", k), 2);
	CHECK_STR(k[0]->selector, "r1");
	CHECK_INT(k[0]->alg, CFG_DKIM_RSA_SHA256);
	CHECK_INT(k[0]->bits, 2048);
	CHECK_STR(k[1]->selector, "e1");
	CHECK_INT(k[1]->alg, CFG_DKIM_ED25519_SHA256);
	CHECK(strstr(k[1]->pem, "-----BEGIN PRIVATE KEY-----") == k[1]->pem);
	CHECK_INT(cfg_dkim_lookup(dk, "a.both.test", k), 0);
	CHECK_INT(cfg_dkim_lookup(dk, "sub.test", k), 0);
	CHECK_INT(cfg_dkim_lookup(dk, "a.b.sub.test", k), 1);
	CHECK_STR(k[0]->selector, "s");
	CHECK_STR(k[0]->domain, "sub.test");
	CHECK_INT(cfg_dkim_lookup(dk, "x.sub.test", k), 1);
	CHECK_STR(k[0]->selector, "exact");
	CHECK_INT(cfg_dkim_lookup(dk, "g.test", k), 1);
	CHECK_STR(k[0]->selector, "g");
	CHECK_INT(cfg_dkim_lookup(dk, "mail.g.test", k), 1);
	CHECK_INT(cfg_dkim_lookup(dk, "xg.test", k), 0);
	CHECK_INT(cfg_dkim_lookup(dk, "test", k), 0);
	CHECK_INT(cfg_dkim_lookup(dk, "", k), 0);
	cfg_dkim_release(dk);
}

int
main(void)
{
	char cmd[300];

	if (mkdtemp(dir) == NULL)
		return 1;
	test_parse();
	test_lookup();
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
	return rqtest_done();
}
