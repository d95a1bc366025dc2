/*
 * http_server.c - the listener: binds http_listen (TCP, or a unix
 * socket made as the daemon's user, mode 0660), hands connections to
 * evhttp within bounds, checks the token (without one, that the Host
 * header names this host: http_host_ok()), routes GET /metrics, /,
 * /api/summary and /api/queue to their pages, and checks the config
 * (http_cfg_check).
 *
 * Public: http_server_new(), http_server_cfg_set(), http_server_free(),
 * http_cfg_check().
 *
 * The bounds (libevent 2.1's evhttp has no connection limit, and only
 * idle timeouts, which a client sending a byte now and then never
 * meets).  Every connection evhttp accepts gets its bufferevent from
 * conn_new() (evhttp_set_bevcb), which counts it and keeps a reference
 * to it; right after the accept the connection asks evhttp to tell it
 * of the end (evhttp_connection_set_closecb).  So the open connections
 * are counted: beyond HTTP_CONN_MAX, those quiet longest (EVICT_US at
 * least) are ended (conns_trim: a flood of idle connections churns
 * through the slots instead of holding them, and a scraper that
 * connects and asks at once gets in), and the listener is disabled
 * while 2 x HTTP_CONN_MAX are open (ended ones go at evhttp's next
 * read), or while a new connection's
 * descriptor number says fewer than HTTP_FD_RESERVE are left (the SMTP
 * client keeps its own SMTP_FD_RESERVE, smaller, so it runs short after
 * us); further clients wait in the kernel's backlog, costing the daemon
 * nothing.
 * Each connection has a deadline: a whole request within
 * HTTP_REQUEST_SECS of the accept, then the next within HTTP_IDLE_SECS
 * of the last request; when it passes the socket is shut down, evhttp
 * sees the end and frees the connection.  evhttp itself refuses a
 * request line and headers over HTTP_HEADERS_MAX bytes (it stops
 * reading there), any body, and methods but GET and HEAD.
 *
 * Invariants: the server only reads the queue (short read transactions
 * in the pages); a page's work is bounded (see the pages); nothing here
 * blocks.  After http_server_free() no callback touches the server:
 * the connections are detached from it (and evhttp frees them).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include "http_int.h"

/* One connection evhttp has, from its accept to its free.  The daemon
 * holds a reference to its bufferevent, so that the struct can be looked
 * at after evhttp freed it (its callbacks are then NULL); evhttp closes
 * the socket itself. */
struct http_conn {
	struct http_server *srv; /* NULL once the server is gone */
	struct http_conn *next, *prev;
	struct bufferevent *bev;
	struct event *deadline;
	int64_t active_us; /* its accept, or its last request (monotonic) */
	bool checked; /* the descriptor reserve was looked at */
	bool ended; /* shut down: only waiting for evhttp to see it */
};

/* A connection quiet for this long may be ended for a newer one. */
#define EVICT_US 100000

/* The unix socket made, to remove at the end. */
static struct {
	dev_t dev;
	ino_t ino;
	bool made;
} sock_made;

/* Enables the listener unless the connections or descriptors say no. */
static void
accept_update(struct http_server *srv)
{
	struct evconnlistener *l;

	if (srv->bound == NULL)
		return;
	l = evhttp_bound_socket_get_listener(srv->bound);
	if (srv->nconn >= 2 * HTTP_CONN_MAX || srv->fd_short)
		evconnlistener_disable(l);
	else
		evconnlistener_enable(l);
}

/* The pause for want of descriptors is over: accept again. */
static void
resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct http_server *srv = arg;

	srv->fd_short = false;
	accept_update(srv);
}

/* Whether descriptor FD (the lowest free one when it was made, so about
 * as many are open) leaves fewer than HTTP_FD_RESERVE. */
static bool
fd_short(int fd)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
		return false;
	return (rlim_t)fd + HTTP_FD_RESERVE >= rl.rlim_cur;
}

/* The connection is gone: forget it (its bufferevent goes with the
 * reference dropped here). */
static void
conn_done(struct http_conn *c)
{
	struct http_server *srv = c->srv;

	if (c->deadline != NULL)
		event_free(c->deadline);
	if (srv != NULL) {
		if (c->prev != NULL)
			c->prev->next = c->next;
		else
			srv->conns = c->next;
		if (c->next != NULL)
			c->next->prev = c->prev;
		else
			srv->last = c->prev;
		srv->nconn--;
		if (!c->ended)
			srv->nlive--;
		accept_update(srv);
	}
	bufferevent_decref(c->bev);
	free(c);
}

/* evhttp frees the connection (evhttp_connection_set_closecb). */
static void
conn_closed(struct evhttp_connection *evcon, void *arg)
{
	conn_done(arg);
}

/* Whether evhttp still has C's connection (it clears the callbacks of
 * a bufferevent it frees); *EVCON gets it. */
static bool
conn_alive(struct http_conn *c, struct evhttp_connection **evcon)
{
	bufferevent_data_cb rcb = NULL;
	void *arg = NULL;

	bufferevent_getcb(c->bev, &rcb, NULL, NULL, &arg);
	*evcon = arg;
	return rcb != NULL && arg != NULL;
}

/*
 * Right after the accept (C's timer, or its first request if that comes
 * first): asks evhttp to tell of the connection's end, and looks at the
 * descriptor reserve.  False when the connection is to end now.
 */
static bool
conn_attach(struct http_conn *c, struct evhttp_connection *evcon)
{
	struct http_server *srv = c->srv;
	struct timeval one = { 1, 0 };
	int fd = bufferevent_getfd(c->bev);

	c->checked = true;
	evhttp_connection_set_closecb(evcon, conn_closed, c);
	if (fd < 0 || srv == NULL || !fd_short(fd))
		return true;
	if (rq_now() - srv->fd_warned >= 60) {
		srv->fd_warned = rq_now();
		log_warn("http",
		    "fewer than %d file descriptors left: HTTP connections "
		    "refused for a second",
		    HTTP_FD_RESERVE);
	}
	srv->fd_short = true;
	evtimer_add(srv->resume, &one);
	accept_update(srv);
	return false;
}

/* Ends C: shuts its socket down (evhttp sees the end and frees it). */
static void
conn_end(struct http_conn *c)
{
	struct timeval one = { 1, 0 };
	int fd = bufferevent_getfd(c->bev);

	if (!c->ended) {
		if (fd >= 0)
			shutdown(fd, SHUT_RDWR);
		c->ended = true;
		if (c->srv != NULL)
			c->srv->nlive--;
	}
	evtimer_add(c->deadline, &one); /* in case evhttp does not tell */
}

/*
 * Ends the connections quiet longest (for EVICT_US at least) until no
 * more than HTTP_CONN_MAX are open; when the others are younger, looks
 * again once they are not.  A flood of idle connections so churns
 * through the slots (each new one ends an old one), while a client that
 * connects and sends its request at once gets it read first.
 */
static void
conns_trim(struct http_server *srv)
{
	int64_t now = rq_mono_us(), wait = -1;

	for (struct http_conn *c = srv->last;
	     c != NULL && srv->nlive > HTTP_CONN_MAX; c = c->prev) {
		int64_t quiet = now - c->active_us;

		if (c->ended)
			continue;
		if (quiet >= EVICT_US)
			conn_end(c);
		else if (wait < 0 || EVICT_US - quiet < wait)
			wait = EVICT_US - quiet;
	}
	if (srv->nlive > HTTP_CONN_MAX && wait >= 0) {
		struct timeval tv = { 0, (suseconds_t)wait + 1000 };

		evtimer_add(srv->trim, &tv);
	}
}

/* The trim timer. */
static void
trim_cb(evutil_socket_t fd, short what, void *arg)
{
	conns_trim(arg);
}

/*
 * A connection's timer: right after the accept, conn_attach(); then the
 * end of its time to send a request, and after that once a second, in
 * case evhttp freed it without telling.
 */
static void
conn_deadline_cb(evutil_socket_t unused, short what, void *arg)
{
	struct http_conn *c = arg;
	struct evhttp_connection *evcon;
	struct timeval tv = { HTTP_REQUEST_SECS, 0 };

	if (!conn_alive(c, &evcon)) {
		conn_done(c);
		return;
	}
	if (!c->checked && conn_attach(c, evcon)) {
		evtimer_add(c->deadline, &tv);
		return;
	}
	conn_end(c);
}

/* evhttp accepted a connection: its bufferevent, counted (bevcb). */
static struct bufferevent *
conn_new(struct event_base *base, void *arg)
{
	struct http_server *srv = arg;
	struct http_conn *c = xcalloc(1, sizeof(*c));
	struct timeval zero = { 0, 0 };

	c->srv = srv;
	c->bev = bufferevent_socket_new(base, -1, 0);
	c->deadline = evtimer_new(base, conn_deadline_cb, c);
	if (c->bev == NULL || c->deadline == NULL) {
		fprintf(stderr, "relayq: out of memory\n");
		abort();
	}
	bufferevent_incref(c->bev);
	c->next = srv->conns;
	if (srv->conns != NULL)
		srv->conns->prev = c;
	else
		srv->last = c;
	srv->conns = c;
	srv->nconn++;
	srv->nlive++;
	c->active_us = rq_mono_us();
	evtimer_add(c->deadline, &zero); /* evhttp's connection is made */
	conns_trim(srv);
	accept_update(srv);
	return c->bev;
}

/* The connection of REQ, or NULL. */
static struct http_conn *
conn_of(struct http_server *srv, struct evhttp_request *req)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	struct bufferevent *bev = evcon
	    ? evhttp_connection_get_bufferevent(evcon)
	    : NULL;

	for (struct http_conn *c = srv->conns; c != NULL; c = c->next)
		if (c->bev == bev)
			return c;
	return NULL;
}

/* The reason phrase of CODE. */
static const char *
reason(int code)
{
	switch (code) {
	case 200:
		return "OK";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 503:
		return "Service Unavailable";
	default:
		return "Error";
	}
}

/* Every request: its deadline moves on, the token, then its page. */
static void
dispatch(struct evhttp_request *req, void *arg)
{
	static const struct {
		const char *path;
		void (*page)(struct http_req *);
	} pages[] = {
		{ "/metrics", http_page_metrics },
		{ "/", http_page_status },
		{ "/api/summary", http_page_summary },
		{ "/api/queue", http_page_queue },
	};
	struct http_server *srv = arg;
	struct http_conn *c = conn_of(srv, req);
	struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	const char *token = cfg_http_token(srv->cfg);
	struct timeval idle = { HTTP_IDLE_SECS, 0 };
	struct http_req r;
	enum evhttp_cmd_type cmd;
	size_t i;

	if (c != NULL) {
		struct evhttp_connection *evcon;

		if (!c->checked && conn_alive(c, &evcon) &&
		    !conn_attach(c, evcon)) {
			conn_end(c);
			evhttp_send_error(req, 503, NULL);
			return;
		}
		if (!c->ended)
			evtimer_add(c->deadline, &idle);
		c->active_us = rq_mono_us();
	}
	memset(&r, 0, sizeof(r));
	r.srv = srv;
	r.out = evbuffer_new();
	r.code = 200;
	r.ctype = "text/plain; charset=utf-8";
	r.query = uri ? evhttp_uri_get_query(uri) : NULL;
	evhttp_add_header(oh, "Cache-Control", "no-store");
	evhttp_add_header(oh, "X-Content-Type-Options", "nosniff");
	evhttp_add_header(oh, "Content-Security-Policy",
	    "default-src 'none'; style-src 'unsafe-inline'");
	cmd = evhttp_request_get_command(req);
	if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
		r.code = 405;
		evhttp_add_header(oh, "Allow", "GET, HEAD");
		evbuffer_add_printf(r.out, "method not allowed\n");
	} else if (token == NULL && !srv->addr.unix_path &&
	    !http_host_ok(evhttp_find_header(
			      evhttp_request_get_input_headers(req), "Host"),
		cfg_str(cfg_scope(srv->cfg, NULL), CFG_HOSTNAME))) {
		/* a name not ours: DNS rebinding (http_host_ok()) */
		r.code = 403;
		evbuffer_add_printf(r.out,
		    "Host names neither this host nor a loopback address "
		    "(a listener with http_token answers any name)\n");
	} else if (token != NULL &&
	    !http_auth_ok(
		evhttp_find_header(
		    evhttp_request_get_input_headers(req), "Authorization"),
		token)) {
		r.code = 401;
		evhttp_add_header(
		    oh, "WWW-Authenticate", "Bearer realm=\"relayq\"");
		evhttp_add_header(oh, "WWW-Authenticate",
		    "Basic realm=\"relayq\", charset=\"UTF-8\"");
		evbuffer_add_printf(r.out, "authorization required\n");
	} else {
		for (i = 0; i < sizeof(pages) / sizeof(pages[0]); i++)
			if (path != NULL && strcmp(path, pages[i].path) == 0)
				break;
		if (i < sizeof(pages) / sizeof(pages[0])) {
			pages[i].page(&r);
		} else {
			r.code = 404;
			evbuffer_add_printf(r.out, "not found\n");
		}
	}
	evhttp_add_header(oh, "Content-Type",
	    r.code == 200 ? r.ctype : "text/plain; charset=utf-8");
	if (cmd == EVHTTP_REQ_HEAD) {
		/* the headers of a GET, its length, and no body */
		char n[24];
		size_t len = evbuffer_get_length(r.out);

		snprintf(n, sizeof(n), "%zu", len);
		evhttp_add_header(oh, "Content-Length", n);
		evbuffer_drain(r.out, len);
	}
	evhttp_send_reply(req, r.code, reason(r.code), r.out);
	evbuffer_free(r.out);
}

/* A listening unix socket at PATH, replacing a stale one (nobody
 * listening); -1 with ERR. */
static int
listen_unix(const char *path, char *err, size_t errlen)
{
	struct sockaddr_un sa;
	struct stat st;
	int fd;

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	if (lstat(path, &st) == 0) {
		int probe;

		if (!S_ISSOCK(st.st_mode)) {
			snprintf(
			    err, errlen, "%s exists and is not a socket", path);
			return -1;
		}
		probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (probe >= 0 &&
		    connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			close(probe);
			snprintf(err, errlen,
			    "%s: another process listens there", path);
			return -1;
		}
		if (probe >= 0)
			close(probe);
		(void)unlink(path); /* stale: nobody listens */
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
	    chmod(path, 0660) != 0 || listen(fd, SOMAXCONN) != 0) {
		snprintf(err, errlen, "%s", strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	if (lstat(path, &st) == 0) {
		sock_made.dev = st.st_dev;
		sock_made.ino = st.st_ino;
		sock_made.made = true;
	}
	return fd;
}

/* A listening TCP socket for A ("" host: every address, IPv6 and
 * IPv4 when the host has IPv6); -1 with ERR. */
static int
listen_tcp(const struct http_addr *a, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int fd, on = 1, off = 0;
	bool v6 = strchr(a->host, ':') != NULL || a->host[0] == '\0';

	for (int tries = 0; tries < 2; tries++, v6 = false) {
		memset(&ss, 0, sizeof(ss));
		if (v6) {
			struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

			s6->sin6_family = AF_INET6;
			s6->sin6_port = htons(a->port);
			if (a->host[0] != '\0')
				inet_pton(AF_INET6, a->host, &s6->sin6_addr);
			len = sizeof(*s6);
		} else {
			struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

			s4->sin_family = AF_INET;
			s4->sin_port = htons(a->port);
			if (a->host[0] != '\0')
				inet_pton(AF_INET, a->host, &s4->sin_addr);
			len = sizeof(*s4);
		}
		fd = socket(ss.ss_family,
		    SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0 && v6 && a->host[0] == '\0' && errno == EAFNOSUPPORT)
			continue; /* no IPv6 here: every IPv4 address */
		if (fd < 0)
			break;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
		if (v6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY,
			    a->host[0] == '\0' ? &off : &on, sizeof(on));
		if (bind(fd, (struct sockaddr *)&ss, len) == 0 &&
		    listen(fd, SOMAXCONN) == 0)
			return fd;
		close(fd);
		fd = -1;
		break;
	}
	snprintf(err, errlen, "%s", strerror(errno));
	return -1;
}

/* The process's start (unix seconds), as the process collector of the
 * Prometheus client libraries reads it; now when it cannot be read. */
static int64_t
process_start(void)
{
	char buf[1024], *p;
	unsigned long long ticks = 0, btime = 0;
	long hz = sysconf(_SC_CLK_TCK);
	FILE *fp;
	size_t n;

	if ((fp = fopen("/proc/self/stat", "re")) == NULL)
		return rq_now();
	n = fread(buf, 1, sizeof(buf) - 1, fp);
	fclose(fp);
	buf[n] = '\0';
	/* field 22, counted after the ")" that ends the command name */
	if ((p = strrchr(buf, ')')) == NULL ||
	    sscanf(p + 2,
		"%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d "
		"%*d %*d %*d %*d %llu",
		&ticks) != 1)
		return rq_now();
	if ((fp = fopen("/proc/stat", "re")) == NULL)
		return rq_now();
	while (fgets(buf, sizeof(buf), fp) != NULL)
		if (sscanf(buf, "btime %llu", &btime) == 1)
			break;
	fclose(fp);
	if (btime == 0 || hz <= 0)
		return rq_now();
	return (int64_t)(btime + ticks / (unsigned long long)hz);
}

/* Binds http_listen and starts serving; see http.h. */
struct http_server *
http_server_new(struct event_base *base, const struct cfg *cfg, struct queue *q,
    struct http_stats *stats, const struct http_hooks *hooks, char *err,
    size_t errlen)
{
	const char *listen = cfg_str(cfg_scope(cfg, NULL), CFG_HTTP_LISTEN);
	struct http_server *srv;
	const char *why;
	char e[512];
	int fd;

	srv = xcalloc(1, sizeof(*srv));
	if (http_addr_parse(listen, &srv->addr, &why) < 0) {
		snprintf(err, errlen, "http_listen %.200s: %s", listen, why);
		free(srv);
		return NULL;
	}
	fd = srv->addr.unix_path ? listen_unix(srv->addr.path, e, sizeof(e))
				 : listen_tcp(&srv->addr, e, sizeof(e));
	if (fd < 0) {
		snprintf(err, errlen, "http_listen %.200s: cannot listen: %s",
		    listen, e);
		free(srv);
		return NULL;
	}
	srv->base = base;
	srv->cfg = cfg;
	srv->q = q;
	srv->stats = stats;
	srv->hooks = *hooks;
	srv->started = process_start();
	srv->http = evhttp_new(base);
	srv->resume = evtimer_new(base, resume_cb, srv);
	srv->trim = evtimer_new(base, trim_cb, srv);
	if (srv->http == NULL || srv->resume == NULL || srv->trim == NULL) {
		fprintf(stderr, "relayq: out of memory\n");
		abort();
	}
	evhttp_set_max_headers_size(srv->http, HTTP_HEADERS_MAX);
	evhttp_set_max_body_size(srv->http, 0);
	evhttp_set_timeout(srv->http, HTTP_IDLE_SECS);
	/* every method reaches dispatch(), which answers all but GET and
	 * HEAD with 405 and Allow (RFC 9110 15.5.6), not evhttp's 501 */
	evhttp_set_allowed_methods(srv->http,
	    EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
		EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
		EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
	evhttp_set_bevcb(srv->http, conn_new, srv);
	evhttp_set_gencb(srv->http, dispatch, srv);
	srv->bound = evhttp_accept_socket_with_handle(srv->http, fd);
	if (srv->bound == NULL) {
		snprintf(
		    err, errlen, "http_listen %.200s: cannot listen", listen);
		close(fd);
		http_server_free(srv);
		return NULL;
	}
	log_info("http", "listening on %.200s%s", listen,
	    cfg_http_token(cfg) ? " (token required)" : "");
	return srv;
}

/* Takes a reloaded config (its token). */
void
http_server_cfg_set(struct http_server *srv, const struct cfg *cfg)
{
	if (srv != NULL)
		srv->cfg = cfg;
}

/* Stops serving; see http.h. */
void
http_server_free(struct http_server *srv)
{
	struct stat st;

	if (srv == NULL)
		return;
	/* evhttp frees the connections, telling conn_closed() of those
	 * it was asked to; the others are freed here */
	for (struct http_conn *c = srv->conns, *next; c != NULL; c = next) {
		struct evhttp_connection *evcon;

		next = c->next;
		c->srv = NULL;
		if (!c->checked || !conn_alive(c, &evcon))
			conn_done(c);
		else if (c->deadline != NULL)
			evtimer_del(c->deadline);
	}
	srv->conns = srv->last = NULL;
	srv->bound = NULL;
	if (srv->http != NULL)
		evhttp_free(srv->http);
	if (srv->resume != NULL)
		event_free(srv->resume);
	if (srv->trim != NULL)
		event_free(srv->trim);
	if (srv->addr.unix_path && sock_made.made &&
	    lstat(srv->addr.path, &st) == 0 && st.st_dev == sock_made.dev &&
	    st.st_ino == sock_made.ino)
		(void)unlink(srv->addr.path);
	sock_made.made = false;
	free(srv);
}

/* Refuses an http_listen that does not parse, or that is public
 * without http_token. */
int
http_cfg_check(const struct cfg *cfg, char *err, size_t errlen)
{
	return http_cfg_check_at(
	    cfg, cfg_str(cfg_scope(cfg, NULL), CFG_HTTP_LISTEN), err, errlen);
}

int
http_cfg_check_at(
    const struct cfg *cfg, const char *listen, char *err, size_t errlen)
{
	const struct cfg_scope *g = cfg_scope(cfg, NULL);
	const char *why;
	struct http_addr a;

	if (listen[0] == '\0')
		return 0;
	if (http_addr_parse(listen, &a, &why) < 0) {
		snprintf(err, errlen, "%s:%d: http_listen %.200s: %s",
		    cfg_path(cfg), cfg_line(cfg, g, CFG_HTTP_LISTEN), listen,
		    why);
		return -1;
	}
	if (!a.loopback && cfg_str(g, CFG_HTTP_TOKEN)[0] == '\0') {
		snprintf(err, errlen,
		    "%s:%d: http_listen %.200s%s is not a loopback address: "
		    "set http_token (anyone who can reach it would read the "
		    "queue)",
		    cfg_path(cfg), cfg_line(cfg, g, CFG_HTTP_LISTEN), listen,
		    strcmp(listen, cfg_str(g, CFG_HTTP_LISTEN)) != 0
			? " (the listener until a restart)"
			: "");
		return -1;
	}
	return 0;
}
