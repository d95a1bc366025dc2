/*
 * runner_route.c - which destination a recipient's job goes to, and
 * where it goes next when that destination cannot be reached: the route
 * of (recipient domain, sender) by relayq.conf(5)'s precedence
 * (cfg_route_get: [domain] relayhost, sender_relayhost, relayhost, MX),
 * the credentials it logs in with (by sender, then by relay), one
 * destination per (scope, relay, credentials), and the fallback_relay
 * chain (Postfix's smtp_fallback_relay); plus the loading and checking
 * of the files a config names, at start-up, on SIGHUP and for
 * check-config.
 *
 * Public: runner_cfg_prepare().  Runner-private: runner_route_dest(),
 * runner_route_fallback().
 *
 * Invariants: a destination's key names its credentials (auth->id), so
 * the SMTP client's connection cache, keyed by it, never shares a
 * connection between different credentials (the client checks it too);
 * MX destinations never carry credentials; a job moves down the
 * fallback chain only after a result with host_down (no address got as
 * far as MAIL FROM: unreachable, or 4xx/421 before MAIL) or a temporary
 * routing failure, never after a refusal of the mail itself or a TLS or
 * AUTH policy failure; a destination made with an older config has no
 * fallback (its jobs are deferred and routed afresh on their retry).
 * Moving a job and marking the destination it left down
 * (runner_dest_host_down) are runner_dest.c's.
 */
#include <stdio.h>
#include <string.h>

#include "http.h"
#include "runner_int.h"

/* The destination of RELAY (credentials AUTH) in scope SC, fallback
 * position FB (0: the route itself). */
static struct dest *
relay_dest(struct runner *r, const struct cfg_scope *sc,
    const struct cfg_hostport *relay, uint16_t port,
    const struct cfg_auth *auth, int fb)
{
	const char *sn = cfg_scope_name(sc);
	char key[1200], pos[32] = "";

	if (fb > 0)
		snprintf(pos, sizeof(pos), "fallback%d/", fb);
	snprintf(key, sizeof(key), "%s/%s%s%s%s:%u%s%s", sn ? sn : "", pos,
	    relay->no_mx ? "[" : "", relay->host, relay->no_mx ? "]" : "",
	    (unsigned)port, auth ? " auth=" : "", auth ? auth->id : "");
	return runner_dest_get(
	    r, key, sc, relay->host, port, !relay->no_mx, auth, fb);
}

/* The destination of mail from SENDER to DOMAIN under the current
 * config, made if new; TLS_RELAXED: a TLS-RPT report's (by MX, its own
 * destination, whose TLS failures do not hold it back: RFC 8460 3; a
 * relay is the admin's own path and keeps its settings). */
struct dest *
runner_route_dest(
    struct runner *r, const char *domain, const char *sender, bool tls_relaxed)
{
	struct cfg_route rt;
	struct dest *d;
	char key[300];

	cfg_route_get(r->rc->cfg, domain, sender, &rt);
	if (rt.relay == NULL && tls_relaxed) {
		snprintf(key, sizeof(key), "tlsrpt/%s", domain);
		d = runner_dest_get(
		    r, key, rt.scope, domain, rt.port, true, NULL, 0);
		d->tls_relaxed = true;
		return d;
	}
	if (rt.relay == NULL)
		return runner_dest_get(
		    r, domain, rt.scope, domain, rt.port, true, NULL, 0);
	return relay_dest(r, rt.scope, rt.relay, rt.port, rt.auth, 0);
}

/* The next destination of D's fallback_relay chain (with that relay's
 * own credentials), or NULL when there is none (or D is of an older
 * config). */
struct dest *
runner_route_fallback(struct runner *r, struct dest *d)
{
	struct cfg_hostport fb[CFG_FALLBACK_MAX];
	const struct cfg_auth *auth;
	size_t n;

	if (d->retired || d->rc != r->rc || r->stopping)
		return NULL;
	n = cfg_fallback_relays(d->scope, fb, CFG_FALLBACK_MAX);
	if ((size_t)d->fb >= n)
		return NULL;
	/* the fallback's own credentials (by relay), never the sender's:
	 * those are for the sender's provider, not for this host */
	auth = cfg_auth_lookup(r->rc->cfg, NULL, &fb[d->fb], fb[d->fb].port);
	return relay_dest(
	    r, d->scope, &fb[d->fb], fb[d->fb].port, auth, d->fb + 1);
}

/* Loads the files CFG names and checks its client certificates; see
 * runner.h. */
int
runner_cfg_prepare(struct cfg *cfg, char *err, size_t errlen)
{
	const struct cfg_pem *pems;
	size_t n;
	char why[512];

	if (cfg_files_load(cfg, err, errlen) != CFG_OK ||
	    http_cfg_check(cfg, err, errlen) < 0)
		return -1;
	pems = cfg_tls_client_certs(cfg, &n);
	for (size_t i = 0; i < n; i++) {
		if (smtp_tls_cert_check(&pems[i], why, sizeof(why)) == 0)
			continue;
		snprintf(err, errlen, "%s:%d: tls_cert_file %s: %s",
		    cfg_path(cfg), pems[i].line, pems[i].cert_file, why);
		return -1;
	}
	return 0;
}
