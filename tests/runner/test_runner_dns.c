/*
 * test_runner_dns.c - the resolver and MX routing against a real DNS
 * server: dnsmasq on a loopback port, started and stopped by this test.
 * Checks preference order, shuffling of equal preferences, no-MX to A,
 * null MX (5.1.10), NXDOMAIN (5.1.2), address-only routes and a dead
 * server (defer).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "rqtest.h"
#include "runner_dns.h"

static struct event_base *base;
static struct route *got;

static void
route_cb(void *arg, struct route *r)
{
	got = r;
	event_base_loopbreak(base);
}

/* Routes HOST synchronously; the caller frees the result. */
static struct route *
lookup(struct dns *dns, const char *host, bool mx)
{
	got = NULL;
	runner_dns_route(dns, host, 2525, mx, false, route_cb, NULL);
	event_base_dispatch(base);
	return got;
}

static const char *
ip(const struct route *r, size_t i)
{
	static char buf[8][64];
	const struct sockaddr_in *sin = (const void *)&r->addr[i].sa;

	if (i >= r->naddr || sin->sin_family != AF_INET)
		return "(none)";
	inet_ntop(AF_INET, &sin->sin_addr, buf[i % 8], sizeof(buf[0]));
	return buf[i % 8];
}

static int
free_udp_port(void)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_DGRAM, 0), port;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	bind(fd, (struct sockaddr *)&sin, sizeof(sin));
	getsockname(fd, (struct sockaddr *)&sin, &len);
	port = ntohs(sin.sin_port);
	close(fd);
	return port;
}

static pid_t
dnsmasq_start(int port)
{
	char portarg[32];
	pid_t pid;

	snprintf(portarg, sizeof(portarg), "--port=%d", port);
	pid = fork();
	if (pid == 0) {
		execl("/usr/sbin/dnsmasq", "dnsmasq", "--no-daemon", portarg,
		    "--listen-address=127.0.0.1", "--bind-interfaces",
		    "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
		    "--pid-file", "--local=/test/",
		    "--mx-host=multi.test,mx1.test,10",
		    "--mx-host=multi.test,mx2.test,20",
		    "--mx-host=multi.test,mx3.test,20",
		    "--mx-host=multi.test,mx4.test,30",
		    "--host-record=mx1.test,127.0.0.2",
		    "--host-record=mx2.test,127.0.0.3",
		    "--host-record=mx3.test,127.0.0.4",
		    "--host-record=mx4.test,127.0.0.6",
		    "--host-record=nomx.test,127.0.0.5",
		    "--mx-host=ghost.test,nowhere.test,10",
		    "--dns-rr=nullmx.test,15,000000",
		    "--log-facility=/dev/null", (char *)NULL);
		_exit(127);
	}
	return pid;
}

int
main(void)
{
	struct cfg_hostport srv;
	struct dns *dns;
	struct route *r;
	char err[256];
	int port = free_udp_port(), i, first2 = 0, first3 = 0;
	pid_t pid;

	if (access("/usr/sbin/dnsmasq", X_OK) != 0) {
		printf("skipped: no /usr/sbin/dnsmasq\n");
		return 0;
	}
	signal(SIGPIPE, SIG_IGN);
	base = event_base_new();
	memset(&srv, 0, sizeof(srv));
	snprintf(srv.host, sizeof(srv.host), "127.0.0.1");
	srv.port = (uint16_t)port;

	/* A dead server: refused or timed out, so defer. */
	dns = runner_dns_new(base, &srv, NULL, err, sizeof(err));
	CHECK(dns != NULL);
	r = lookup(dns, "multi.test", true);
	CHECK(r != NULL && r->status == ROUTE_DEFER);
	CHECK(r != NULL && strcmp(r->dsn, "4.4.3") == 0);
	runner_dns_route_free(r);

	pid = dnsmasq_start(port);
	/* Wait until it answers. */
	for (i = 0; i < 100; i++) {
		r = lookup(dns, "nomx.test", true);
		if (r->status == ROUTE_OK)
			break;
		runner_dns_route_free(r);
		usleep(50000);
	}
	CHECK(r->status == ROUTE_OK);
	CHECK_INT(r->naddr, 1);
	CHECK_STR(ip(r, 0), "127.0.0.5");
	CHECK_INT(
	    ntohs(((struct sockaddr_in *)&r->addr[0].sa)->sin_port), 2525);
	runner_dns_route_free(r);

	for (i = 0; i < 40; i++) {
		r = lookup(dns, "multi.test", true);
		CHECK(r->status == ROUTE_OK);
		CHECK_INT(r->naddr, 4);
		CHECK_STR(ip(r, 0), "127.0.0.2");
		CHECK_STR(r->addr[0].host, "mx1.test");
		CHECK_INT(r->addr[0].pref, 10);
		CHECK_STR(ip(r, 3), "127.0.0.6");
		if (strcmp(ip(r, 1), "127.0.0.3") == 0)
			first2++;
		else if (strcmp(ip(r, 1), "127.0.0.4") == 0)
			first3++;
		runner_dns_route_free(r);
	}
	CHECK(first2 > 0 && first3 > 0 && first2 + first3 == 40);

	r = lookup(dns, "nullmx.test", true);
	CHECK(r->status == ROUTE_FAIL);
	CHECK_STR(r->dsn, "5.1.10");
	runner_dns_route_free(r);

	r = lookup(dns, "nx.test", true);
	CHECK(r->status == ROUTE_FAIL);
	CHECK_STR(r->dsn, "5.1.2");
	runner_dns_route_free(r);

	r = lookup(dns, "ghost.test", true);
	CHECK(r->status == ROUTE_DEFER);
	runner_dns_route_free(r);

	r = lookup(dns, "mx3.test", false);
	CHECK(r->status == ROUTE_OK);
	CHECK_STR(ip(r, 0), "127.0.0.4");
	runner_dns_route_free(r);

	r = lookup(dns, "127.0.0.9", false);
	CHECK(r->status == ROUTE_OK);
	CHECK_STR(ip(r, 0), "127.0.0.9");
	runner_dns_route_free(r);

	r = lookup(dns, "nx.test", false);
	CHECK(r->status == ROUTE_DEFER);
	runner_dns_route_free(r);

	/* A lookup still pending when the resolver goes away. */
	runner_dns_route(dns, "multi.test", 25, true, false, route_cb, NULL);
	runner_dns_free(dns);

	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	event_base_free(base);
	return rqtest_done();
}
