/*
 * fault_main.c - faultsmtp, the scriptable fault-injecting SMTP server
 * of relayq's tests.
 *
 *   faultsmtp -l 127.0.0.1:PORT [-l [::1]:PORT ...] -s SCRIPT
 *             [-d DUMPDIR] [-e EVENTLOG] [--cert FILE --key FILE]
 *
 * One libevent loop, one thread, any number of connections, bound only to
 * the given addresses.  Prints "ready" on standard output once listening
 * ("ready PORT..." with the real ports, one per -l, if any -l asked for
 * port 0).  SIGTERM or SIGINT ends it cleanly (exit 0).  The script
 * language is described in fault_script.c, the event log in fault_out.c;
 * DUMPDIR receives CONN-SEQ.eml (the DATA bytes exactly as received, up to
 * and including the final "\r\n.\r\n") and CONN-SEQ.env (the MAIL FROM
 * line and each accepted RCPT TO line) for every accepted message.
 *
 * Public: main().
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <event2/listener.h>
#include <openssl/err.h>

#include "cfg.h"
#include "faultsmtp.h"

#define MAX_LISTEN 16

/* Prints the usage and exits with EX_USAGE. */
static void __attribute__((noreturn)) usage(void)
{
	fprintf(stderr,
	    "usage: faultsmtp -l ADDR:PORT [-l ADDR:PORT ...] -s SCRIPT "
	    "[-d DUMPDIR] [-e EVENTLOG] [--cert FILE --key FILE]\n");
	exit(RQ_EX_USAGE);
}

/* Reads a whole file into a new buffer; *len gets its size. */
static char *
file_read(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t n = 0, cap = 0;

	if (f == NULL)
		fatal(
		    RQ_EX_NOINPUT, "cannot open %s: %s", path, strerror(errno));
	for (;;) {
		size_t r;

		if (cap - n < 4096) {
			cap = cap ? cap * 2 : 8192;
			buf = xrealloc(buf, cap);
		}
		r = fread(buf + n, 1, cap - n, f);
		n += r;
		if (r == 0)
			break;
	}
	if (ferror(f))
		fatal(RQ_EX_IOERR, "cannot read %s", path);
	fclose(f);
	*len = n;
	return buf;
}

/* Builds the server-side TLS context from a certificate chain and key. */
static SSL_CTX *
tls_setup(const char *cert, const char *key)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	char err[256];

	if (ctx == NULL)
		fatal(RQ_EX_SOFTWARE, "SSL_CTX_new failed");
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		ERR_error_string_n(ERR_get_error(), err, sizeof(err));
		fatal(RQ_EX_CONFIG, "cannot load %s / %s: %s", cert, key, err);
	}
	return ctx;
}

/*
 * Parses "IPV4:PORT" or "[IPV6]:PORT" (port 0 allowed, unlike
 * evutil_parse_sockaddr_port()) into SS; returns false if malformed.
 */
static bool
listen_parse(const char *arg, struct sockaddr_storage *ss, int *sl)
{
	const char *colon = strrchr(arg, ':');
	char host[INET6_ADDRSTRLEN + 2], *end;
	size_t hl;
	unsigned long port;

	if (colon == NULL || colon == arg)
		return false;
	port = strtoul(colon + 1, &end, 10);
	if (colon[1] == '\0' || *end != '\0' || port > 65535)
		return false;
	hl = (size_t)(colon - arg);
	if (arg[0] == '[') {
		if (hl < 3 || arg[hl - 1] != ']')
			return false;
		arg++;
		hl -= 2;
	}
	if (hl >= sizeof(host))
		return false;
	memcpy(host, arg, hl);
	host[hl] = '\0';
	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, host, &((struct sockaddr_in *)ss)->sin_addr) ==
	    1) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		*sl = sizeof(*sin);
		return true;
	}
	if (inet_pton(
		AF_INET6, host, &((struct sockaddr_in6 *)ss)->sin6_addr) == 1) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		*sl = sizeof(*sin6);
		return true;
	}
	return false;
}

/* A new connection: set it up and start its session. */
static void
accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
    int salen, void *arg)
{
	struct fault_server *srv = arg;
	char host[NI_MAXHOST] = "?", serv[NI_MAXSERV] = "?", peer[300];
	int one = 1;

	getnameinfo(sa, (socklen_t)salen, host, sizeof(host), serv,
	    sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV);
	snprintf(peer, sizeof(peer),
	    sa->sa_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, serv);
	/* trickled and partial replies must leave byte by byte */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	evutil_make_socket_nonblocking(fd);
	fault_session_start(srv, fd, peer);
}

/* accept() failed (EMFILE and the like): say so, keep going. */
static void
accept_error_cb(struct evconnlistener *l, void *arg)
{
	static int64_t last;
	int64_t now = rq_now();

	if (now != last)
		log_warn("faultsmtp", "accept: %s", strerror(errno));
	last = now;
}

/* SIGTERM/SIGINT: leave the loop. */
static void
signal_cb(evutil_socket_t sig, short what, void *arg)
{
	event_base_loopbreak(arg);
}

/* Frees the sessions that closed during the last loop turn. */
static void
reap_cb(evutil_socket_t fd, short what, void *arg)
{
	fault_session_reap(arg);
}

/* Raises the open-file limit so thousands of sessions fit. */
static void
files_raise(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* Parses the options, listens, and runs the loop until a signal. */
int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "cert", required_argument, NULL, 'C' },
		{ "key", required_argument, NULL, 'K' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct fault_server srv;
	const char *listen[MAX_LISTEN], *script = NULL, *events = NULL;
	const char *cert = NULL, *key = NULL;
	struct evconnlistener *ls[MAX_LISTEN];
	struct event *sigs[2];
	struct event_config *evcfg;
	int nlisten = 0, c;
	bool any_zero = false;
	char err[300], *buf;
	size_t len;

	memset(&srv, 0, sizeof(srv));
	while (
	    (c = getopt_long(argc, argv, "l:s:d:e:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'l':
			if (nlisten == MAX_LISTEN)
				fatal(RQ_EX_USAGE, "too many -l");
			listen[nlisten++] = optarg;
			break;
		case 's':
			script = optarg;
			break;
		case 'd':
			srv.dump_dir = optarg;
			break;
		case 'e':
			events = optarg;
			break;
		case 'C':
			cert = optarg;
			break;
		case 'K':
			key = optarg;
			break;
		default:
			usage();
		}
	}
	if (optind != argc || nlisten == 0 || script == NULL ||
	    (cert == NULL) != (key == NULL))
		usage();

	buf = file_read(script, &len);
	if (fault_script_parse(buf, len, &srv.script, err, sizeof(err)) !=
	    FAULT_PARSE_OK)
		fatal(RQ_EX_CONFIG, "%s: %s", script, err);
	free(buf);
	if (cert != NULL)
		srv.tls = tls_setup(cert, key);
	if (srv.dump_dir != NULL && mkdir(srv.dump_dir, 0755) != 0 &&
	    errno != EEXIST)
		fatal(RQ_EX_CANTCREAT, "cannot create %s: %s", srv.dump_dir,
		    strerror(errno));
	if (events != NULL) {
		srv.events = fopen(events, "w");
		if (srv.events == NULL)
			fatal(RQ_EX_CANTCREAT, "cannot create %s: %s", events,
			    strerror(errno));
	}
	signal(SIGPIPE, SIG_IGN);
	files_raise();

	/* a coarse clock could end a stall a few ms early: tests check
	 * "not earlier than" */
	evcfg = event_config_new();
	if (evcfg == NULL)
		fatal(RQ_EX_SOFTWARE, "event_config_new failed");
	event_config_set_flag(evcfg, EVENT_BASE_FLAG_PRECISE_TIMER);
	srv.base = event_base_new_with_config(evcfg);
	event_config_free(evcfg);
	if (srv.base == NULL)
		fatal(RQ_EX_SOFTWARE, "event_base_new failed");
	srv.reaper = event_new(srv.base, -1, 0, reap_cb, &srv);
	sigs[0] = evsignal_new(srv.base, SIGTERM, signal_cb, srv.base);
	sigs[1] = evsignal_new(srv.base, SIGINT, signal_cb, srv.base);
	evsignal_add(sigs[0], NULL);
	evsignal_add(sigs[1], NULL);
	for (int i = 0; i < nlisten; i++) {
		struct sockaddr_storage ss;
		int sl = sizeof(ss);

		if (!listen_parse(listen[i], &ss, &sl))
			fatal(RQ_EX_USAGE, "bad listen address %s", listen[i]);
		if ((ss.ss_family == AF_INET &&
			((struct sockaddr_in *)&ss)->sin_port == 0) ||
		    (ss.ss_family == AF_INET6 &&
			((struct sockaddr_in6 *)&ss)->sin6_port == 0))
			any_zero = true;
		ls[i] = evconnlistener_new_bind(srv.base, accept_cb, &srv,
		    LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE |
			LEV_OPT_CLOSE_ON_EXEC,
		    1024, (struct sockaddr *)&ss, sl);
		if (ls[i] == NULL)
			fatal(RQ_EX_OSERR, "cannot listen on %s: %s", listen[i],
			    strerror(errno));
		evconnlistener_set_error_cb(ls[i], accept_error_cb);
	}
	printf("ready");
	for (int i = 0; any_zero && i < nlisten; i++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		unsigned port = 0;

		getsockname(
		    evconnlistener_get_fd(ls[i]), (struct sockaddr *)&ss, &sl);
		if (ss.ss_family == AF_INET)
			port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
		else if (ss.ss_family == AF_INET6)
			port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
		printf(" %u", port);
	}
	printf("\n");
	fflush(stdout);

	event_base_dispatch(srv.base);

	fault_server_shutdown(&srv);
	for (int i = 0; i < nlisten; i++)
		evconnlistener_free(ls[i]);
	event_free(sigs[0]);
	event_free(sigs[1]);
	event_free(srv.reaper);
	event_base_free(srv.base);
	libevent_global_shutdown();
	if (srv.events != NULL)
		fclose(srv.events);
	SSL_CTX_free(srv.tls);
	fault_script_free(srv.script);
	return RQ_EX_OK;
}
