/*
 * smtpc.c - a test and benchmark driver for the smtp client: sends
 * messages through smtp_request_submit() and prints each result as a
 * JSON line.
 *
 *   smtpc -c CONF [-d DOMAIN] [-C CLASS] [-1] -a [NAME@]IP:PORT ...
 *         -f SENDER -r RCPT ... [-N NOTIFY] [-O] [-V ENVID] [-R full|hdrs]
 *         [-m FILE | -z SIZE] [-n COUNT] [-p PARALLEL] [-i SECONDS] [-q]
 *         [-A SECONDS] [-H RELAY]
 *
 * The settings come from CONF's scope for DOMAIN (-d; the destination
 * key is DOMAIN too, or "default").  The files CONF names (auth_file,
 * client certificates) are loaded as the daemon loads them; with -H the
 * request carries the credentials of mail from SENDER through RELAY (as
 * written in relayhost, e.g. "[127.0.0.1]:2525"), if any; -H given more
 * than once: message i uses the credentials of the (i mod N)th (to test
 * that connections are never shared between credentials).  -n messages are sent, at most -p at
 * once; with -i each next message waits that long after the previous
 * one's result (to test the connection cache).  -q prints only the
 * summary line and the results of messages not delivered to everyone.
 * -A aborts everything (smtp_client_shutdown with abort_active) after
 * SECONDS.  A final {"summary": ...} line gives
 * counts, the time taken and messages per second; after it the client
 * is shut down gracefully (idle connections QUIT).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <event2/event.h>

#include "smtp.h"

#define MAX_ADDRS 8
#define MAX_RCPTS 10000

static struct event_base *base;
static struct smtp_client *client;
static struct smtp_request req;
static unsigned long total = 1, submitted, finished, parallel = 1;
static unsigned long counts[6];
static double interval;
static bool quiet;
static int64_t t_start;
static struct event *next_ev, *abort_ev;
static const struct cfg_auth *auths[4];
static size_t nauths;

/* Prints S as a JSON string. */
static void
json_str(const char *s)
{
	putchar('"');
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

static void submit_more(void);

/* Prints one result as a JSON line and submits more. */
static void
done_cb(void *arg, const struct smtp_result *res)
{
	unsigned long n = (unsigned long)(uintptr_t)arg;
	size_t i;

	finished++;
	for (i = 0; i < res->nrcpts; i++)
		counts[res->rcpts[i].cls % 6]++;
	for (i = 0; quiet && i < res->nrcpts && res->rcpts[i].cls == 2; i++)
		;
	if (!quiet || i < res->nrcpts) {
		printf("{\"msg\": %lu, \"host\": ", n);
		json_str(res->host);
		printf(", \"ip\": ");
		json_str(res->ip);
		printf(", \"port\": %u, \"tls\": ", res->port);
		json_str(res->tls_proto);
		printf(", \"cipher\": ");
		json_str(res->tls_cipher);
		printf(", \"auth\": ");
		json_str(res->auth_mech);
		printf(", \"verified\": %s, \"reused\": %s, \"host_down\": %s, "
		       "\"transactions\": %u, \"setup\": %.6f, "
		       "\"elapsed\": %.6f, \"rcpts\": [",
		    res->tls_verified ? "true" : "false",
		    res->reused ? "true" : "false",
		    res->host_down ? "true" : "false", res->transactions,
		    (res->t_ready - res->t_submit) / 1e6,
		    (res->t_done - res->t_submit) / 1e6);
		for (i = 0; i < res->nrcpts; i++) {
			const struct smtp_rcpt_result *r = &res->rcpts[i];

			printf("%s{\"addr\": ", i ? ", " : "");
			json_str(req.rcpts[i].addr);
			printf(", \"cls\": %d, \"code\": %d, \"status\": ",
			    r->cls, r->code);
			json_str(r->status);
			printf(", \"phase\": ");
			json_str(r->phase_name);
			printf(", \"text\": ");
			json_str(r->text);
			printf(", \"reply\": ");
			json_str(r->reply);
			printf("}");
		}
		printf("]}\n");
		fflush(stdout);
	}
	if (interval > 0 && submitted < total) {
		struct timeval tv;

		tv.tv_sec = (time_t)interval;
		tv.tv_usec = (suseconds_t)((interval - (double)tv.tv_sec) *
		    1e6);
		evtimer_add(next_ev, &tv);
		return;
	}
	submit_more();
}

/* The client has closed every connection. */
static void
shutdown_cb(void *arg)
{
	event_base_loopexit(base, NULL);
}

/* Submits messages up to the parallel limit; at the end shuts down. */
static void
submit_more(void)
{
	while (submitted < total && submitted - finished < parallel) {
		req.arg = (void *)(uintptr_t)submitted;
		if (nauths > 0)
			req.auth = auths[submitted % nauths];
		if (smtp_request_submit(client, &req) != SMTP_SUBMIT_OK) {
			fprintf(stderr, "smtpc: submit refused\n");
			exit(1);
		}
		submitted++;
		if (interval > 0)
			break;
	}
	if (finished == total) {
		double secs = (rq_now_us() - t_start) / 1e6;

		printf("{\"summary\": {\"messages\": %lu, \"sent\": %lu, "
		       "\"deferred\": %lu, \"bounced\": %lu, "
		       "\"seconds\": %.3f, \"rate\": %.1f}}\n",
		    total, counts[2], counts[4], counts[5], secs,
		    secs > 0 ? total / secs : 0.0);
		fflush(stdout);
		smtp_client_shutdown(client, false, shutdown_cb, NULL);
	}
}

/* The -i timer: submit the next message. */
static void
next_cb(evutil_socket_t fd, short what, void *arg)
{
	submit_more();
}

/* The -A timer: abort whatever is in flight. */
static void
abort_cb(evutil_socket_t fd, short what, void *arg)
{
	total = submitted;
	smtp_client_shutdown(client, true, shutdown_cb, NULL);
}

/* Parses [NAME@]IP:PORT (IPv6 in brackets) into A. */
static int
addr_parse(const char *s, struct smtp_addr *a)
{
	const char *at = strchr(s, '@'), *ip = at ? at + 1 : s, *colon;
	char host[128];
	size_t n;
	int port;

	memset(a, 0, sizeof(*a));
	if (ip[0] == '[') {
		const char *end = strchr(ip, ']');
		struct sockaddr_in6 *s6 = (void *)&a->sa;

		if (end == NULL || end[1] != ':' || (n = end - ip - 1) >= 128)
			return -1;
		memcpy(host, ip + 1, n);
		host[n] = '\0';
		port = atoi(end + 2);
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		if (inet_pton(AF_INET6, host, &s6->sin6_addr) != 1)
			return -1;
		a->salen = sizeof(*s6);
	} else {
		struct sockaddr_in *s4 = (void *)&a->sa;

		colon = strrchr(ip, ':');
		if (colon == NULL || (n = colon - ip) >= 128)
			return -1;
		memcpy(host, ip, n);
		host[n] = '\0';
		port = atoi(colon + 1);
		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
			return -1;
		a->salen = sizeof(*s4);
	}
	a->host = at ? xstrndup(s, at - s) : xstrdup(host);
	return 0;
}

/* Reads file PATH whole into *BUF. */
static size_t
file_read(const char *path, char **buf)
{
	FILE *fp = fopen(path, "rb");
	size_t len = 0, cap = 65536, n;

	if (fp == NULL) {
		fprintf(stderr, "smtpc: %s: %s\n", path, strerror(errno));
		exit(1);
	}
	*buf = xmalloc(cap);
	while ((n = fread(*buf + len, 1, cap - len, fp)) > 0) {
		len += n;
		if (len == cap)
			*buf = xrealloc(*buf, cap *= 2);
	}
	fclose(fp);
	return len;
}

int
main(int argc, char **argv)
{
	static struct smtp_addr addrs[MAX_ADDRS];
	static struct smtp_rcpt rcpts[MAX_RCPTS];
	const char *conf = NULL, *domain = NULL, *sender = "sender@example.org";
	const char *relays[4];
	size_t nrelays = 0;
	unsigned notify = 0;
	bool orcpt = false;
	size_t naddrs = 0, nrcpts = 0, size = 0, i;
	char *msg = NULL, err[1024];
	size_t msglen = 0;
	double abort_after = 0;
	struct cfg *cfg;
	int c;

	memset(&req, 0, sizeof(req));
	req.cls = CFG_NORMAL;
	while ((c = getopt(
		    argc, argv, "1a:A:c:C:d:f:H:i:m:n:N:Op:qr:R:V:z:")) != -1) {
		switch (c) {
		case '1':
			req.first_attempt = true;
			break;
		case 'a':
			if (naddrs == MAX_ADDRS ||
			    addr_parse(optarg, &addrs[naddrs]) < 0) {
				fprintf(
				    stderr, "smtpc: bad address %s\n", optarg);
				return 64;
			}
			naddrs++;
			break;
		case 'A':
			abort_after = atof(optarg);
			break;
		case 'c':
			conf = optarg;
			break;
		case 'C':
			req.cls = cfg_class_parse(optarg, strlen(optarg));
			if ((int)req.cls < 0)
				return 64;
			break;
		case 'd':
			domain = optarg;
			break;
		case 'f':
			sender = optarg;
			break;
		case 'H':
			if (nrelays == 4)
				return 64;
			relays[nrelays++] = optarg;
			break;
		case 'i':
			interval = atof(optarg);
			break;
		case 'm':
			msglen = file_read(optarg, &msg);
			break;
		case 'n':
			total = strtoul(optarg, NULL, 10);
			break;
		case 'N':
			if (strcasestr(optarg, "never"))
				notify |= SMTP_NOTIFY_NEVER;
			if (strcasestr(optarg, "success"))
				notify |= SMTP_NOTIFY_SUCCESS;
			if (strcasestr(optarg, "failure"))
				notify |= SMTP_NOTIFY_FAILURE;
			if (strcasestr(optarg, "delay"))
				notify |= SMTP_NOTIFY_DELAY;
			break;
		case 'O':
			orcpt = true;
			break;
		case 'p':
			parallel = strtoul(optarg, NULL, 10);
			break;
		case 'q':
			quiet = true;
			break;
		case 'r':
			if (nrcpts == MAX_RCPTS)
				return 64;
			rcpts[nrcpts++].addr = optarg;
			break;
		case 'R':
			req.ret = strcasecmp(optarg, "full") == 0
			    ? SMTP_RET_FULL
			    : SMTP_RET_HDRS;
			break;
		case 'V':
			req.envid = optarg;
			break;
		case 'z':
			size = strtoul(optarg, NULL, 10);
			break;
		default:
			fprintf(stderr, "usage: see smtpc.c\n");
			return 64;
		}
	}
	if (conf == NULL || naddrs == 0 || nrcpts == 0 || parallel == 0) {
		fprintf(stderr, "smtpc: -c, -a and -r are required\n");
		return 64;
	}
	if (cfg_load(conf, &cfg, err, sizeof(err)) != CFG_OK ||
	    cfg_files_load(cfg, err, sizeof(err)) != CFG_OK) {
		fprintf(stderr, "%s\n", err);
		cfg_free(cfg);
		return 78;
	}
	log_host_set("smtpc"); /* to standard error */
	{
		struct rlimit rl;

		/* room for thousands of concurrent sessions (-p) */
		if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
			rl.rlim_cur = rl.rlim_max;
			setrlimit(RLIMIT_NOFILE, &rl);
		}
	}
	if (msg == NULL) {
		static const char line[] = "0123456789abcdefghijklmnopqrstuvwxy"
					   "zABCDEFGHIJKLMNOPQRSTUVWXYZ0123456"
					   "789\r\n";
		size_t off;

		msg = xmalloc(size + 256);
		off = (size_t)snprintf(msg, 256,
		    "From: <%s>\r\nTo: <%s>\r\nSubject: smtpc test\r\n\r\n",
		    sender, rcpts[0].addr);
		while (off < size) {
			size_t n = sizeof(line) - 1;

			if (n > size - off)
				n = size - off;
			memcpy(msg + off, line, n);
			off += n;
		}
		if (size == 0)
			off += (size_t)snprintf(msg + off, 64, "hello\r\n");
		msglen = off;
	}
	for (i = 0; i < nrcpts; i++) {
		rcpts[i].notify = notify;
		if (orcpt) {
			char *o = xmalloc(strlen(rcpts[i].addr) + 8);

			sprintf(o, "rfc822;%s", rcpts[i].addr);
			rcpts[i].orcpt = o;
		}
	}
	base = smtp_event_base_new();
	client = smtp_client_new(base,
	    cfg_str(cfg_scope(cfg, NULL), CFG_HOSTNAME)[0]
		? cfg_str(cfg_scope(cfg, NULL), CFG_HOSTNAME)
		: "smtpc.test");
	req.dest_key = domain ? domain : "default";
	req.addrs = addrs;
	req.naddrs = naddrs;
	req.scope = cfg_scope(cfg, domain);
	for (i = 0; i < nrelays; i++) {
		struct cfg_hostport hp;
		const char *why;

		if (cfg_hostport_parse(
			relays[i], strlen(relays[i]), &hp, &why) < 0) {
			fprintf(stderr, "smtpc: -H %s: %s\n", relays[i], why);
			return 64;
		}
		auths[nauths++] = cfg_auth_lookup(cfg, sender, &hp,
		    hp.port ? hp.port
			    : (uint16_t)cfg_int(req.scope, CFG_SMTP_PORT));
	}
	req.sender = sender;
	req.rcpts = rcpts;
	req.nrcpts = nrcpts;
	req.msg = msg;
	req.msglen = msglen;
	req.done = done_cb;
	next_ev = evtimer_new(base, next_cb, NULL);
	if (abort_after > 0) {
		struct timeval tv = { (time_t)abort_after,
			(suseconds_t)((abort_after - (long)abort_after) *
			    1e6) };

		abort_ev = evtimer_new(base, abort_cb, NULL);
		evtimer_add(abort_ev, &tv);
	}
	t_start = rq_now_us();
	submit_more();
	event_base_dispatch(base);
	smtp_client_free(client);
	event_free(next_ev);
	if (abort_ev != NULL)
		event_free(abort_ev);
	for (i = 0; i < naddrs; i++)
		free((char *)addrs[i].host);
	for (i = 0; i < nrcpts; i++)
		free((char *)rcpts[i].orcpt);
	event_base_free(base);
	cfg_free(cfg);
	free(msg);
	return 0;
}
