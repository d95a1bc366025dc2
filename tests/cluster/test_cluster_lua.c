/*
 * test_cluster_lua.c - the cluster's Lua scripts (cluster/cluster_lua.c,
 * the same text the daemon sends) against a throwaway redis-server on
 * 127.0.0.1 and a free port, in a temporary directory: leases granted
 * up to the limit, renewed, refused, expired on Redis' clock; the host
 * status check; the heartbeat, renewals and lost leases of the tick;
 * the GCRA's reservations, their due times and the key's expiry;
 * EVALSHA of the digest cluster_lua_sha() computes (NOSCRIPT first,
 * then SCRIPT LOAD gives the same digest); the view.  And one run of
 * cluster.c itself on an event loop: a destination that waits for its
 * next rate call while its timer is armed for an earlier deadline (a
 * lease backoff) is woken for both.
 */
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "cluster_int.h"
#include "rqtest.h"

static pid_t redis_pid;
static redisContext *rc;
static int redis_port;
static char dir[] = "/tmp/relayq-lua-XXXXXX";

/* A free TCP port on 127.0.0.1. */
static int
free_port(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
		abort();
	port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

/* Starts redis-server and connects to it (exits 1 when it cannot). */
static void
redis_start(void)
{
	char port[16];
	struct timeval tv = { 2, 0 };

	if (mkdtemp(dir) == NULL)
		abort();
	redis_port = free_port();
	snprintf(port, sizeof(port), "%d", redis_port);
	redis_pid = fork();
	if (redis_pid == 0) {
		if (freopen("/dev/null", "w", stdout) == NULL)
			_exit(127);
		execlp("redis-server", "redis-server", "--port", port, "--bind",
		    "127.0.0.1", "--save", "", "--appendonly", "no", "--dir",
		    dir, "--loglevel", "warning", (char *)NULL);
		perror("redis-server (tools/install-deps.sh --test)");
		_exit(127);
	}
	for (int i = 0; i < 500; i++) {
		rc = redisConnectWithTimeout("127.0.0.1", atoi(port), tv);
		if (rc != NULL && rc->err == 0)
			return;
		redisFree(rc);
		rc = NULL;
		usleep(10000);
	}
	fprintf(stderr, "redis-server did not start\n");
	exit(1);
}

/* Stops redis-server and removes its directory. */
static void
redis_stop(void)
{
	redisFree(rc);
	kill(redis_pid, SIGTERM);
	waitpid(redis_pid, NULL, 0);
	rmdir(dir);
}

/* Runs script S with NKEYS of the ARGC arguments in ARGV as keys. */
static redisReply *
eval(enum cluster_script s, int nkeys, int argc, const char **argv)
{
	const char *v[64];
	char nk[8];

	snprintf(nk, sizeof(nk), "%d", nkeys);
	v[0] = "EVAL";
	v[1] = cluster_lua[s];
	v[2] = nk;
	for (int i = 0; i < argc; i++)
		v[3 + i] = argv[i];
	return redisCommandArgv(rc, argc + 3, v, NULL);
}

/* Sends a plain command. */
static redisReply *
cmd(const char *fmt, const char *a, const char *b)
{
	return redisCommand(rc, fmt, a, b);
}

/* The acquire script's answer as "1:1,1,0" / "0:TEXT", for checks. */
static void
acquire(const char *limit, const char *lease_ms, const char *down,
    const char *const *names, int n, char *out, size_t len)
{
	const char *v[32] = { "t:lease:d", "t:down:d", "t:dests", "t:dinfo:d",
		"t:wait:d", lease_ms, limit, down, "d" };
	redisReply *r;
	size_t off;

	for (int i = 0; i < n; i++)
		v[9 + i] = names[i];
	r = eval(CS_ACQUIRE, 5, 9 + n, v);
	out[0] = '\0';
	if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
		snprintf(out, len, "error %s", r && r->str ? r->str : "");
		freeReplyObject(r);
		return;
	}
	off = (size_t)snprintf(out, len, "%lld:", r->element[0]->integer);
	for (size_t i = 1; i < r->elements && off < len; i++) {
		if (r->element[i]->type == REDIS_REPLY_STRING)
			off += (size_t)snprintf(out + off, len - off, "%s%s",
			    i > 1 ? "," : "", r->element[i]->str);
		else if (r->element[0]->integer == 1)
			off += (size_t)snprintf(out + off, len - off, "%s%lld",
			    i > 1 ? "," : "", r->element[i]->integer);
	}
	freeReplyObject(r);
}

/* Leases: granted to the limit, renewed, refused, expired.  The leases
 * are long enough (2 s) that a loaded machine's pauses between two
 * calls never expire them early; the waits are longer than they are. */
static void
test_acquire(void)
{
	static const struct {
		const char *limit, *lease_ms;
		const char *names[4];
		int n;
		int sleep_ms; /* before the call */
		const char *want;
	} steps[] = {
		/* three asked, two slots */
		{ "2", "2000", { "a#1#1", "a#1#2", "b#1#1" }, 3, 0, "1:1,1,0" },
		/* held ones are renewed (not counted twice), b still out */
		{ "2", "2000", { "a#1#2", "b#1#1" }, 2, 0, "1:1,0" },
		/* a larger limit lets b in */
		{ "3", "2000", { "b#1#1" }, 1, 0, "1:1" },
		/* all expire on Redis' clock: every slot free again */
		{ "1", "1000", { "c#1#1", "c#1#2" }, 2, 2100, "1:1,0" },
	};
	char got[128];
	redisReply *r;

	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		if (steps[i].sleep_ms)
			usleep((useconds_t)steps[i].sleep_ms * 1000);
		acquire(steps[i].limit, steps[i].lease_ms, "1", steps[i].names,
		    steps[i].n, got, sizeof(got));
		CHECK_STR(got, steps[i].want);
	}
	r = cmd("ZCARD %s", "t:lease:d", NULL);
	CHECK_INT(r->integer, 1);
	freeReplyObject(r);
	/* the set itself expires when nobody renews */
	usleep(1100000);
	r = cmd("EXISTS %s", "t:lease:d", NULL);
	CHECK_INT(r->integer, 0);
	freeReplyObject(r);
	r = cmd("HGET %s %s", "t:dinfo:d", "conn_limit");
	CHECK_STR(r->str, "1");
	freeReplyObject(r);
}

/* The host status: checked first when asked, ignored for renewals. */
static void
test_down(void)
{
	const char *names[1] = { "a#1#9" };
	char got[256];
	redisReply *r;

	r = redisCommand(rc, "SET t:down:d %s PX 5000", "4.4.1 host said: 421");
	freeReplyObject(r);
	acquire("4", "30000", "1", names, 1, got, sizeof(got));
	CHECK_STR(got, "0:4.4.1 host said: 421");
	acquire("4", "30000", "0", names, 1, got, sizeof(got));
	CHECK_STR(got, "1:1");
	r = cmd("DEL %s %s", "t:down:d", "t:lease:d");
	freeReplyObject(r);
}

/* The tick: heartbeat, live count, renewals, lost leases, the down
 * mark of a destination the node holds leases for. */
static void
test_tick(void)
{
	const char *v[] = { "t:nodes", "t:node:n1", "t:lease:x", "t:wait:x",
		"t:down:x", "t:lease:y", "t:wait:y", "t:down:y", "n1", "1500",
		"2000", "1", "msgs", "42", "2", "2", "n1#1#1", "n1#1#2", "1",
		"1", "n1#1#3" };
	const char *other[] = { "t:lease:y", "t:down:y", "t:dests", "t:dinfo:y",
		"t:wait:y", "1500", "1", "0", "y", "n2#1#1", "n2#1#2" };
	redisReply *r;

	/* y is full (n2's lease; n2 refused a second: y is contended)
	 * before n1 renews its own there */
	r = eval(CS_ACQUIRE, 5, 11, other);
	freeReplyObject(r);
	/* another node found y down */
	r = redisCommand(rc, "SET t:down:y %s PX 5000", "4.4.1 said: 421");
	freeReplyObject(r);
	r = eval(CS_TICK, 8, (int)(sizeof(v) / sizeof(v[0])), v);
	CHECK(r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 9);
	if (r == NULL || r->elements != 9) {
		freeReplyObject(r);
		return;
	}
	CHECK_INT(r->element[0]->integer, 1); /* n1 is live */
	/* x: both renewed (taken again: there is room), nobody waits */
	CHECK_INT(r->element[1]->elements, 0);
	CHECK_INT(r->element[2]->integer, 0);
	CHECK_STR(r->element[3]->str, "");
	/* y: n1#1#3 is not there and y is full: lost; n2 waits; y is
	 * down for 5 s */
	CHECK_INT(r->element[5]->elements, 1);
	if (r->element[5]->elements == 1)
		CHECK_STR(r->element[5]->element[0]->str, "n1#1#3");
	CHECK_INT(r->element[6]->integer, 1);
	CHECK_STR(r->element[7]->str, "4.4.1 said: 421");
	CHECK(r->element[8]->integer > 0 && r->element[8]->integer <= 5000);
	freeReplyObject(r);
	r = cmd("HGET %s %s", "t:node:n1", "msgs");
	CHECK_STR(r->str, "42");
	freeReplyObject(r);
	r = cmd("ZCARD %s", "t:lease:x", NULL);
	CHECK_INT(r->integer, 2);
	freeReplyObject(r);
	/* a node silent for lease_ms is forgotten, its hash expires */
	usleep(1600000);
	r = cmd("EXISTS %s %s", "t:node:n1", "t:nodes");
	CHECK_INT(r->integer, 0);
	freeReplyObject(r);
}

/* One reservation of the rate script: {count, first, next}. */
static void
reserve(const char *T, const char *tau, const char *want, const char *horizon,
    long long out[3])
{
	const char *v[] = { "t:rate:r", "t:dests", "t:dinfo:r", T, tau, want,
		horizon, "r", "10/1s" };
	redisReply *r = eval(CS_RATE, 3, 9, v);

	out[0] = out[1] = out[2] = -1;
	CHECK(r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 3);
	if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 3)
		for (int i = 0; i < 3; i++)
			out[i] = r->element[i]->integer;
	freeReplyObject(r);
}

/* Microseconds of the monotonic clock. */
static long long
mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/*
 * The GCRA: 1/s (T = 1 s), burst 3 (tau = 2 s).  Due times are checked
 * against the time that passed between the calls as measured here
 * (before and after each), so a loaded machine's pauses move the
 * bounds, not the verdict; T is long enough that no pause between two
 * calls spans it.
 */
static void
test_rate(void)
{
	long long got[3], b1, a1, b3, a3, wait_us;
	redisReply *r;

	/* the burst is due now, the 4th a T later, within the horizon */
	b1 = mono_us();
	reserve("1000000", "2000000", "10", "1000000", got);
	a1 = mono_us();
	CHECK_INT(got[0], 4);
	CHECK_INT(got[1], -2000000);
	CHECK_INT(got[2], 2000000);
	/* nothing else within the horizon now */
	reserve("1000000", "2000000", "10", "1000000", got);
	CHECK_INT(got[0], 0);
	CHECK(got[2] > 1000000 && got[2] <= 2000000);
	/* want caps the batch; the 5th token was due 2 T after the first
	 * call: its due time counts from this call */
	usleep(2500000);
	b3 = mono_us();
	reserve("1000000", "2000000", "1", "1000000", got);
	a3 = mono_us();
	CHECK_INT(got[0], 1);
	CHECK(got[1] >= 2000000 - (a3 - b1) - 2000 &&
	    got[1] <= 2000000 - (b3 - a1) + 2000);
	r = cmd("HGET %s %s", "t:dinfo:r", "granted");
	CHECK_STR(r->str, "5");
	freeReplyObject(r);
	/* the state expires once the bucket is full again (5 T after the
	 * first call, plus a second) */
	wait_us = a1 + 6200000 - mono_us();
	if (wait_us > 0)
		usleep((useconds_t)wait_us);
	r = cmd("EXISTS %s", "t:rate:r", NULL);
	CHECK_INT(r->integer, 0);
	freeReplyObject(r);
	reserve("1000000", "2000000", "3", "0", got);
	CHECK_INT(got[0], 3); /* a full burst again */
}

/* EVALSHA of our digest: NOSCRIPT before SCRIPT LOAD, the same digest
 * from Redis, then it runs. */
static void
test_sha(void)
{
	/* EVAL cached them: forget them, as a restarted Redis has */
	freeReplyObject(redisCommand(rc, "SCRIPT FLUSH"));
	for (int s = 0; s < CS_NSCRIPT; s++) {
		char sha[41];
		redisReply *r;

		cluster_lua_sha(s, sha);
		r = redisCommand(rc, "EVALSHA %s 0", sha);
		CHECK(r != NULL && r->type == REDIS_REPLY_ERROR &&
		    strncmp(r->str, "NOSCRIPT", 8) == 0);
		freeReplyObject(r);
		r = redisCommand(rc, "SCRIPT LOAD %s", cluster_lua[s]);
		CHECK(r != NULL && r->type == REDIS_REPLY_STRING);
		if (r != NULL && r->type == REDIS_REPLY_STRING)
			CHECK_STR(r->str, sha);
		freeReplyObject(r);
	}
	{
		char sha[41];
		redisReply *r;

		cluster_lua_sha(CS_VIEW, sha);
		r = redisCommand(rc, "EVALSHA %s 2 %s %s %s", sha, "t:nodes",
		    "t:dests", "t");
		CHECK(r != NULL && r->type == REDIS_REPLY_ARRAY &&
		    r->elements == 3);
		freeReplyObject(r);
	}
}

/* The view lists a destination with its leases and host status. */
static void
test_view(void)
{
	const char *names[2] = { "n7#1#1", "n8#1#1" };
	const char *v[] = { "t:nodes", "t:dests", "t" };
	char got[64];
	redisReply *r;

	acquire("4", "30000", "1", names, 2, got, sizeof(got));
	CHECK_STR(got, "1:1,1");
	r = redisCommand(rc, "SET t:down:d %s PX 5000", "4.4.1 gone");
	freeReplyObject(r);
	r = eval(CS_VIEW, 2, 3, v);
	CHECK(r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 3);
	if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 3) {
		const redisReply *dl = r->element[2];
		int found = 0;

		for (size_t i = 0; i < dl->elements; i++) {
			const redisReply *e = dl->element[i];

			if (strcmp(e->element[0]->str, "d") != 0)
				continue;
			found = 1;
			CHECK_INT(e->element[1]->elements, 2);
			CHECK_STR(e->element[3]->str, "4.4.1 gone");
			CHECK(e->element[4]->integer > 0);
		}
		CHECK(found);
	}
	freeReplyObject(r);
}

/* The cluster's hooks, for test_wake: the wakes of key "w" counted. */
static int wakes, wakes_all;
static unsigned
hook_conns(void *arg, const char *key)
{
	return 0;
}
static void
hook_wake(void *arg, const char *key)
{
	if (key == NULL)
		wakes_all++;
	else if (strcmp(key, "w") == 0)
		wakes++;
}
static void
hook_retire(void *arg, const char *key, unsigned n)
{
}
static void
hook_down(
    void *arg, const char *key, int64_t until, const char *dsn, const char *why)
{
}
static void
hook_counts(void *arg, struct cluster_counts *n)
{
}

/* Runs BASE's loop until *FLAG (or a change of the int it points at
 * from WAS) or MS milliseconds. */
static bool
loop_until(struct event_base *base, const int *flag, int was, int ms)
{
	int64_t end = rq_mono_us() + (int64_t)ms * 1000;

	while (*flag == was && rq_mono_us() < end) {
		struct timeval tv = { 0, 10000 };

		event_base_loopexit(base, &tv);
		event_base_dispatch(base);
	}
	return *flag != was;
}

/* One timer serves a destination's deadlines: a rate call's retry
 * (about 0.9 s out, 1 message a second) armed while the timer waits
 * for a lease backoff (25 ms) must still come after the backoff's wake
 * (the runner asks for the token then, too early: the destination
 * then sleeps until the retry, not for good). */
static void
test_wake(void)
{
	struct event_base *base = event_base_new();
	struct cluster_hooks h = { NULL, hook_conns, hook_wake, hook_retire,
		hook_down, hook_counts };
	struct cluster_conf conf = { .name = "tw",
		.node = "n1",
		.lease_ms = 30000,
		.fallback = CFG_CLUSTER_SHARE };
	struct cfg_rate rate = { 1, 1 };
	struct cluster *c;
	struct cdest *d;
	int w;
	bool go = false;

	snprintf(conf.addr.ip, sizeof(conf.addr.ip), "127.0.0.1");
	conf.addr.port = (uint16_t)redis_port;
	/* another node holds the one lease: ours is refused */
	freeReplyObject(redisCommand(rc, "ZADD tw:lease:w 9999999999999 x#1"));
	c = cluster_new(base, &conf, &h);
	CHECK(loop_until(base, &wakes_all, 0, 5000)); /* the link is up */
	/* the burst's token */
	w = wakes;
	CHECK_INT(cluster_rate_take(c, "w", &rate, 1), CLUSTER_WAIT);
	CHECK(loop_until(base, &wakes, w, 2000));
	CHECK_INT(cluster_rate_take(c, "w", &rate, 1), CLUSTER_GO);
	/* a refused lease: the timer waits for the backoff */
	TAILQ_FOREACH(d, &c->all, entry)
	if (strcmp(d->key, "w") == 0)
		break;
	CHECK(d != NULL);
	if (d == NULL)
		return;
	CHECK_INT(cluster_conn_may(c, "w", 0, 1, 1), CLUSTER_WAIT);
	for (int i = 0; i < 200 && d->acquiring; i++)
		loop_until(base, &(int){ 0 }, 0, 1);
	/* (on a loaded machine the backoff may be over already: then the
	 * case is not made, and the checks below hold all the same) */
	CHECK(!d->acquiring && d->retry_us > 0);
	/* no token left: the next rate call is due in about 0.9 s */
	CHECK_INT(cluster_rate_take(c, "w", &rate, 1), CLUSTER_WAIT);
	for (int i = 0; i < 200 && d->reserving; i++)
		loop_until(base, &(int){ 0 }, 0, 1);
	CHECK(!d->reserving && d->rate_retry_us > d->retry_us);
	/* asked now (the backoff's wake may have come meanwhile) and at
	 * every wake, as the runner does: a token within 3 s */
	go = cluster_rate_take(c, "w", &rate, 1) == CLUSTER_GO;
	for (int64_t end = rq_mono_us() + 3000000; !go && rq_mono_us() < end;) {
		w = wakes;
		if (!loop_until(base, &wakes, w, 3000))
			break;
		go = cluster_rate_take(c, "w", &rate, 1) == CLUSTER_GO;
	}
	CHECK(go);
	cluster_free(c);
	event_base_free(base);
}

int
main(void)
{
	signal(SIGPIPE, SIG_IGN);
	redis_start();
	test_acquire();
	test_down();
	test_tick();
	test_rate();
	test_sha();
	test_view();
	test_wake();
	redis_stop();
	return rqtest_done();
}
