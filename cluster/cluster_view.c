/*
 * cluster_view.c - `relayq cluster`: what the cluster looks like from
 * Redis: the nodes with their last heartbeat and queue counts, and per
 * destination the leases in use (by node) under its max_connections,
 * its rate and its shared host status.  One read-only script (view)
 * gives it all at one instant.
 *
 * Public: cluster_view_print().
 *
 * This is a command, not the daemon: it may block, but never longer
 * than VIEW_TIMEOUT_MS per step (connect, each reply).  Text from Redis
 * is printed through rq_sanitize().
 */
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "cluster_int.h"

#define VIEW_TIMEOUT_MS 2000
#define LIVE_MS 2000 /* as cluster.c */

/* The value of FIELD in a HGETALL reply H, or "". */
static const char *
hget(const redisReply *h, const char *field)
{
	if (h == NULL || h->type != REDIS_REPLY_ARRAY)
		return "";
	for (size_t i = 0; i + 1 < h->elements; i += 2)
		if (h->element[i]->type == REDIS_REPLY_STRING &&
		    strcmp(h->element[i]->str, field) == 0 &&
		    h->element[i + 1]->type == REDIS_REPLY_STRING)
			return h->element[i + 1]->str;
	return "";
}

/* A reply's string (sanitized into BUF), or "". */
static const char *
rstr(const redisReply *r, char *buf, size_t len)
{
	if (r == NULL || r->type != REDIS_REPLY_STRING) {
		buf[0] = '\0';
		return buf;
	}
	rq_sanitize(buf, len, r->str, r->len);
	return buf;
}

/* Prints the nodes part of the view reply N (now: NOW ms). */
static void
view_nodes(FILE *out, const redisReply *n, long long now)
{
	unsigned live = 0;
	char name[80], num[6][24];

	for (size_t i = 0; i < n->elements; i++) {
		const redisReply *e = n->element[i];

		if (e->type == REDIS_REPLY_ARRAY && e->elements == 3 &&
		    now - strtoll(e->element[1]->str, NULL, 10) <= LIVE_MS)
			live++;
	}
	fprintf(out, "%u live node%s\n\n", live, live == 1 ? "" : "s");
	fprintf(out, "%-24s %-7s %8s %8s %8s %6s %6s %6s\n", "node", "seen",
	    "msgs", "pending", "deferred", "held", "conns", "leases");
	for (size_t i = 0; i < n->elements; i++) {
		const redisReply *e = n->element[i], *h;
		long long seen;
		char ago[16];
		const char *f[] = { "msgs", "pending", "deferred", "held",
			"conns", "leases" };

		if (e->type != REDIS_REPLY_ARRAY || e->elements != 3)
			continue;
		h = e->element[2];
		seen = now - strtoll(e->element[1]->str, NULL, 10);
		if (seen <= LIVE_MS)
			snprintf(ago, sizeof(ago), "%.1fs", seen / 1000.0);
		else
			snprintf(ago, sizeof(ago), "gone");
		for (int k = 0; k < 6; k++)
			rq_sanitize(num[k], sizeof(num[k]), hget(h, f[k]),
			    strlen(hget(h, f[k])));
		fprintf(out, "%-24s %-7s %8s %8s %8s %6s %6s %6s\n",
		    rstr(e->element[0], name, sizeof(name)), ago, num[0],
		    num[1], num[2], num[3], num[4], num[5]);
	}
}

/* Appends "node=N" counts of lease names L to BUF. */
static void
view_by_node(const redisReply *l, char *buf, size_t len)
{
	size_t off = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < l->elements; i++) {
		const char *s = l->element[i]->str, *h = strchr(s, '#');
		size_t n = h ? (size_t)(h - s) : strlen(s), cnt = 0, j;
		char node[80];

		for (j = 0; j < i; j++)
			if (strncmp(l->element[j]->str, s, n) == 0 &&
			    l->element[j]->str[n] == '#')
				break;
		if (j < i)
			continue; /* counted at its first lease */
		for (j = i; j < l->elements; j++)
			if (strncmp(l->element[j]->str, s, n) == 0 &&
			    l->element[j]->str[n] == '#')
				cnt++;
		rq_sanitize(node, sizeof(node), s, n);
		off += (size_t)snprintf(buf + off, off < len ? len - off : 0,
		    "%s%s=%zu", off ? " " : "", node, cnt);
		if (off >= len)
			break;
	}
}

/* Prints the destinations part of the view reply D. */
static void
view_dests(FILE *out, const redisReply *d)
{
	fprintf(out, "\n%-36s %-7s %-20s %-16s %s\n", "destination", "conns",
	    "by node", "rate", "host status");
	for (size_t i = 0; i < d->elements; i++) {
		const redisReply *e = d->element[i];
		char key[300], bynode[200], conns[32], rate[48], down[300];
		const char *lim, *rt;

		if (e->type != REDIS_REPLY_ARRAY || e->elements != 6 ||
		    e->element[1]->type != REDIS_REPLY_ARRAY)
			continue;
		lim = hget(e->element[2], "conn_limit");
		rt = hget(e->element[2], "rate");
		view_by_node(e->element[1], bynode, sizeof(bynode));
		snprintf(conns, sizeof(conns), "%zu/%.8s",
		    e->element[1]->elements, lim[0] ? lim : "-");
		if (rt[0])
			snprintf(rate, sizeof(rate), "%.20s +%lldms", rt,
			    (long long)e->element[5]->integer / 1000);
		else
			snprintf(rate, sizeof(rate), "-");
		if (e->element[3]->type == REDIS_REPLY_STRING &&
		    e->element[3]->len > 0) {
			char why[240];

			snprintf(down, sizeof(down), "down %llds: %s",
			    (long long)e->element[4]->integer / 1000,
			    rstr(e->element[3], why, sizeof(why)));
		} else {
			snprintf(down, sizeof(down), "up");
		}
		fprintf(out, "%-36s %-7s %-20s %-16s %s\n",
		    rstr(e->element[0], key, sizeof(key)), conns,
		    bynode[0] ? bynode : "-", rate, down);
	}
}

/* Connects to the cluster's Redis (and logs in); NULL with WHY. */
static redisContext *
view_connect(const struct cluster_conf *conf, char *why, size_t len)
{
	struct timeval tv = { VIEW_TIMEOUT_MS / 1000,
		(VIEW_TIMEOUT_MS % 1000) * 1000 };
	redisContext *rc;
	redisReply *r;

	if (conf->addr.unix_socket)
		rc = redisConnectUnixWithTimeout(conf->addr.path, tv);
	else
		rc = redisConnectWithTimeout(
		    conf->addr.ip, conf->addr.port, tv);
	if (rc == NULL || rc->err) {
		snprintf(why, len, "%s", rc ? rc->errstr : "out of memory");
		redisFree(rc);
		return NULL;
	}
	redisSetTimeout(rc, tv);
	if (conf->password != NULL) {
		r = redisCommand(rc, "AUTH %s", conf->password);
		if (r == NULL || r->type == REDIS_REPLY_ERROR) {
			snprintf(why, len, "AUTH: %s", r ? r->str : rc->errstr);
			freeReplyObject(r);
			redisFree(rc);
			return NULL;
		}
		freeReplyObject(r);
	}
	return rc;
}

int
cluster_view_print(const struct cfg *cfg, FILE *out)
{
	struct cluster_conf conf;
	char node[80], why[300], nodes[100], dests[100];
	redisContext *rc;
	redisReply *r;
	int code = RQ_EX_OK;

	if (!cluster_conf_get(cfg, "?", &conf, node, sizeof(node))) {
		fprintf(stderr,
		    "relayq cluster: cluster_redis is not set: "
		    "this node is alone\n");
		return RQ_EX_CONFIG;
	}
	rc = view_connect(&conf, why, sizeof(why));
	if (rc == NULL) {
		fprintf(
		    stderr, "relayq cluster: cannot reach Redis: %s\n", why);
		return RQ_EX_TEMPFAIL;
	}
	snprintf(nodes, sizeof(nodes), "%s:nodes", conf.name);
	snprintf(dests, sizeof(dests), "%s:dests", conf.name);
	r = redisCommand(rc, "EVAL %s 2 %s %s %s", cluster_lua[CS_VIEW], nodes,
	    dests, conf.name);
	if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
	    r->element[1]->type != REDIS_REPLY_ARRAY ||
	    r->element[2]->type != REDIS_REPLY_ARRAY) {
		fprintf(stderr, "relayq cluster: the view script failed: %s\n",
		    r && r->type == REDIS_REPLY_ERROR ? r->str
			: r			      ? "unexpected reply"
						      : rc->errstr);
		code = RQ_EX_TEMPFAIL;
	} else {
		if (conf.addr.unix_socket)
			fprintf(out, "cluster %s on Redis unix:%s: ", conf.name,
			    conf.addr.path);
		else
			fprintf(out, "cluster %s on Redis %s:%u: ", conf.name,
			    conf.addr.ip, (unsigned)conf.addr.port);
		view_nodes(out, r->element[1], r->element[0]->integer);
		view_dests(out, r->element[2]);
	}
	freeReplyObject(r);
	redisFree(rc);
	return code;
}
