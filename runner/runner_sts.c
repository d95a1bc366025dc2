/*
 * runner_sts.c - where MTA-STS policies (RFC 8461) come from: the
 * _mta-sts TXT record through c-ares, the policy file over HTTPS with
 * libevent's evhttp and OpenSSL, and the cache in the queue's policy db
 * ("sts:DOMAIN"), so that a policy survives a restart.
 *
 * Public (runner-private): runner_sts_new(), runner_sts_free(),
 * runner_sts_lookup(), runner_sts_cancel().
 *
 * The rules, as RFC 8461 5.1 and 3.3 say:
 * - the TXT id equal to the cached policy's and the cache not expired:
 *   the cached policy, no fetch;
 * - else the policy is fetched from https://mta-sts.DOMAIN/.well-known/
 *   mta-sts.txt (mta_sts_port): the certificate must verify for that name
 *   (tls_ca_file, else the system's CAs; SNI sent), the answer must be a
 *   200 with Content-Type text/plain, no redirect is followed, at most
 *   STS_BODY_MAX bytes, within STS_FETCH_TIMEOUT seconds; a good policy
 *   is cached until max_age runs out;
 * - no TXT record, a failed TXT lookup or a failed fetch: the cached
 *   policy while it has not expired (a failed refresh keeps it), else
 *   none.
 *
 * Invariant: a callback never runs from inside runner_sts_lookup(); a
 * request is finished from its own zero-timeout event, and freed there.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/http.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "queue.h"
#include "runner_dns.h"
#include "runner_sts.h"

#define STS_FETCH_TIMEOUT 10 /* seconds, the whole HTTPS exchange */

struct sts_req {
	struct sts_req *next, *prev;
	struct sts *sts;
	char domain[256];
	char host[300]; /* mta-sts.DOMAIN */
	char *cafile;
	uint16_t port;
	sts_policy_cb *cb;
	void *arg;
	bool cancelled;
	bool in_dns; /* a resolver callback is still due */
	struct sts_policy cached;
	bool have_cached;
	char txt_id[STS_ID_MAX + 1];
	struct sts_policy got; /* the fetched policy */
	bool have_got;
	struct evhttp_connection *evcon;
	struct event *finish;
};

struct sts {
	struct event_base *base;
	struct dns *dns;
	struct queue *q;
	struct sts_req *reqs;
};

struct sts *
runner_sts_new(struct event_base *base, struct dns *dns, struct queue *q)
{
	struct sts *s = xcalloc(1, sizeof(*s));

	s->base = base;
	s->dns = dns;
	s->q = q;
	return s;
}

/* Unlinks and frees REQ. */
static void
sts_req_free(struct sts_req *req)
{
	if (req->prev)
		req->prev->next = req->next;
	else
		req->sts->reqs = req->next;
	if (req->next)
		req->next->prev = req->prev;
	if (req->evcon)
		evhttp_connection_free(req->evcon);
	if (req->finish)
		event_free(req->finish);
	free(req->cafile);
	free(req);
}

void
runner_sts_free(struct sts *s)
{
	if (s == NULL)
		return;
	while (s->reqs != NULL)
		sts_req_free(s->reqs);
	free(s);
}

void
runner_sts_cancel(struct sts *s, void *arg)
{
	for (struct sts_req *r = s->reqs; r != NULL; r = r->next)
		if (r->arg == arg)
			r->cancelled = true;
}

/* The finish event: hands the policy (if any) over and frees REQ. */
static void
sts_finish_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sts_req *req = arg;
	const struct sts_policy *p = NULL;
	int64_t now = rq_now();

	if (req->have_got)
		p = &req->got;
	else if (req->have_cached && req->cached.expires > now)
		p = &req->cached;
	if (p != NULL && p->mode == STS_MODE_NONE)
		p = NULL;
	if (!req->cancelled)
		req->cb(req->arg, p);
	sts_req_free(req);
}

/* Ends REQ: its callback runs from the event loop. */
static void
sts_req_done(struct sts_req *req)
{
	static const struct timeval zero;

	if (req->finish == NULL)
		req->finish = evtimer_new(req->sts->base, sts_finish_cb, req);
	evtimer_add(req->finish, &zero);
}

/* A fetch failed for WHY: log it, fall back to the cache. */
static void
sts_fetch_failed(struct sts_req *req, const char *why)
{
	if (req->have_cached && req->cached.expires > rq_now())
		log_warn("smtp",
		    "MTA-STS: %.200s: policy fetch from %.250s failed: %s; "
		    "keeping the cached policy (id %s, mode %s)",
		    req->domain, req->host, why, req->cached.id,
		    runner_sts_mode_name(req->cached.mode));
	else
		log_warn("smtp",
		    "MTA-STS: %.200s: policy fetch from %.250s failed: %s; "
		    "no policy",
		    req->domain, req->host, why);
	sts_req_done(req);
}

/* Caches REQ's fetched policy in the queue's policy db. */
static void
sts_cache_store(struct sts_req *req)
{
	char key[300], rec[STS_MX_MAX * 260 + 128];
	size_t n = runner_sts_record_format(&req->got, rec, sizeof(rec));
	struct queue_txn *t;

	snprintf(key, sizeof(key), "sts:%s", req->domain);
	if (n == 0 || (t = queue_txn_begin(req->sts->q)) == NULL)
		return;
	queue_policy_put(t, key, rec, n);
	if (queue_txn_commit(t) != QUEUE_OK)
		log_warn("smtp", "MTA-STS: %.200s: the policy was not cached",
		    req->domain);
}

/* Whether Content-Type value CT is text/plain (parameters allowed). */
static bool
sts_text_plain(const char *ct)
{
	size_t n = strlen("text/plain");

	if (ct == NULL)
		return false;
	while (*ct == ' ')
		ct++;
	return strncasecmp(ct, "text/plain", n) == 0 &&
	    (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

/* The HTTPS answer (or the failure: HREQ NULL or code 0) arrived. */
static void
sts_http_done(struct evhttp_request *hreq, void *arg)
{
	struct sts_req *req = arg;
	struct evbuffer *body;
	const char *why = NULL;
	char buf[STS_BODY_MAX + 1], reason[200];
	int code = hreq ? evhttp_request_get_response_code(hreq) : 0;
	size_t len;

	if (code == 0) {
		struct bufferevent *bev = req->evcon
		    ? evhttp_connection_get_bufferevent(req->evcon)
		    : NULL;
		SSL *ssl = bev ? bufferevent_openssl_get_ssl(bev) : NULL;
		long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;

		if (vr != X509_V_OK)
			snprintf(reason, sizeof(reason),
			    "certificate not verified: %s",
			    X509_verify_cert_error_string(vr));
		else
			snprintf(reason, sizeof(reason),
			    "no answer (connection, TLS, timeout or over %d "
			    "bytes)",
			    STS_BODY_MAX);
		ERR_clear_error();
		sts_fetch_failed(req, reason);
		return;
	}
	if (code != 200) {
		snprintf(reason, sizeof(reason), "HTTP status %d%s", code,
		    code / 100 == 3 ? " (redirects are not followed)" : "");
		sts_fetch_failed(req, reason);
		return;
	}
	if (!sts_text_plain(evhttp_find_header(
		evhttp_request_get_input_headers(hreq), "Content-Type"))) {
		sts_fetch_failed(req, "Content-Type is not text/plain");
		return;
	}
	body = evhttp_request_get_input_buffer(hreq);
	len = evbuffer_get_length(body);
	if (len > STS_BODY_MAX) {
		sts_fetch_failed(req, "policy too large");
		return;
	}
	evbuffer_copyout(body, buf, len);
	buf[len] = '\0';
	if (runner_sts_policy_parse(buf, len, &req->got, &why) < 0) {
		snprintf(reason, sizeof(reason), "bad policy: %s", why);
		sts_fetch_failed(req, reason);
		return;
	}
	snprintf(req->got.id, sizeof(req->got.id), "%s", req->txt_id);
	req->got.expires = rq_now() + req->got.max_age;
	req->have_got = true;
	log_info("smtp",
	    "MTA-STS: %.200s: policy id %s, mode %s, max_age %lld, %zu mx "
	    "pattern(s), from https://%.250s/.well-known/mta-sts.txt",
	    req->domain, req->got.id, runner_sts_mode_name(req->got.mode),
	    (long long)req->got.max_age, req->got.nmx, req->host);
	sts_cache_store(req);
	sts_req_done(req);
}

/* Makes the verifying SSL for REQ's policy host; NULL on failure. */
static SSL *
sts_ssl_new(struct sts_req *req)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	SSL *ssl = NULL;
	int ok;

	if (ctx == NULL)
		return NULL;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (req->cafile[0] != '\0')
		ok = SSL_CTX_load_verify_locations(ctx, req->cafile, NULL);
	else
		ok = SSL_CTX_set_default_verify_paths(ctx);
	if (ok == 1 && (ssl = SSL_new(ctx)) != NULL) {
		SSL_set_tlsext_host_name(ssl, req->host);
		SSL_set1_host(ssl, req->host);
	}
	SSL_CTX_free(ctx); /* the SSL holds a reference */
	ERR_clear_error();
	return ssl;
}

/* The policy host's addresses arrived: GET the policy from the first. */
static void
sts_route_cb(void *arg, struct route *rt)
{
	struct sts_req *req = arg;
	struct evhttp_request *hreq;
	struct evkeyvalq *h;
	struct bufferevent *bev;
	char ip[INET6_ADDRSTRLEN] = "";
	SSL *ssl;

	req->in_dns = false;
	if (req->cancelled) {
		runner_dns_route_free(rt);
		sts_req_free(req);
		return;
	}
	if (rt->status != ROUTE_OK || rt->naddr == 0) {
		runner_dns_route_free(rt);
		sts_fetch_failed(req, "no address");
		return;
	}
	if (rt->addr[0].sa.ss_family == AF_INET6)
		inet_ntop(AF_INET6,
		    &((struct sockaddr_in6 *)&rt->addr[0].sa)->sin6_addr, ip,
		    sizeof(ip));
	else
		inet_ntop(AF_INET,
		    &((struct sockaddr_in *)&rt->addr[0].sa)->sin_addr, ip,
		    sizeof(ip));
	runner_dns_route_free(rt);
	if ((ssl = sts_ssl_new(req)) == NULL) {
		sts_fetch_failed(req, "TLS setup failed");
		return;
	}
	bev = bufferevent_openssl_socket_new(req->sts->base, -1, ssl,
	    BUFFEREVENT_SSL_CONNECTING,
	    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (bev == NULL) {
		SSL_free(ssl);
		sts_fetch_failed(req, "TLS setup failed");
		return;
	}
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	req->evcon = evhttp_connection_base_bufferevent_new(
	    req->sts->base, NULL, bev, ip, req->port);
	if (req->evcon == NULL) {
		bufferevent_free(bev);
		sts_fetch_failed(req, "HTTP setup failed");
		return;
	}
	evhttp_connection_set_timeout(req->evcon, STS_FETCH_TIMEOUT);
	evhttp_connection_set_retries(req->evcon, 0);
	evhttp_connection_set_max_body_size(req->evcon, STS_BODY_MAX);
	evhttp_connection_set_max_headers_size(req->evcon, 16384);
	hreq = evhttp_request_new(sts_http_done, req);
	h = evhttp_request_get_output_headers(hreq);
	evhttp_add_header(h, "Host", req->host);
	evhttp_add_header(h, "User-Agent", "relayq");
	evhttp_add_header(h, "Connection", "close");
	if (evhttp_make_request(req->evcon, hreq, EVHTTP_REQ_GET,
		"/.well-known/mta-sts.txt") != 0)
		sts_fetch_failed(req, "HTTP request failed");
}

/* The _mta-sts TXT record arrived (or not). */
static void
sts_txt_cb(void *arg, enum dns_txt_status st, const char *text)
{
	struct sts_req *req = arg;
	int64_t now = rq_now();

	req->in_dns = false;
	if (req->cancelled) {
		sts_req_free(req);
		return;
	}
	if (st != DNS_TXT_OK ||
	    runner_sts_txt_parse(text, strlen(text), req->txt_id) < 0) {
		/* no (usable) record: the cache alone decides */
		sts_req_done(req);
		return;
	}
	if (req->have_cached && req->cached.expires > now &&
	    strcmp(req->cached.id, req->txt_id) == 0) {
		sts_req_done(req);
		return;
	}
	req->in_dns = true;
	runner_dns_route(req->sts->dns, req->host, req->port, false, false,
	    sts_route_cb, req);
}

void
runner_sts_lookup(struct sts *s, const struct cfg_scope *sc, const char *domain,
    sts_policy_cb *cb, void *arg)
{
	struct sts_req *req = xcalloc(1, sizeof(*req));
	char key[300], name[300], *rec;
	size_t len;

	req->sts = s;
	snprintf(req->domain, sizeof(req->domain), "%s", domain);
	snprintf(req->host, sizeof(req->host), "mta-sts.%s", domain);
	req->cafile = xstrdup(cfg_str(sc, CFG_TLS_CA_FILE));
	req->port = (uint16_t)cfg_int(sc, CFG_MTA_STS_PORT);
	req->cb = cb;
	req->arg = arg;
	req->next = s->reqs;
	if (s->reqs)
		s->reqs->prev = req;
	s->reqs = req;
	snprintf(key, sizeof(key), "sts:%s", domain);
	if (queue_policy_get(s->q, key, &rec, &len) == QUEUE_OK) {
		req->have_cached = runner_sts_record_parse(
				       rec, len, &req->cached) == 0;
		if (!req->have_cached)
			log_warn("smtp",
			    "MTA-STS: %.200s: the cached policy is damaged; "
			    "ignored",
			    domain);
		free(rec);
	}
	snprintf(name, sizeof(name), "_mta-sts.%s", domain);
	req->in_dns = true;
	runner_dns_txt(s->dns, name, "v=STSv1", sts_txt_cb, req);
}
