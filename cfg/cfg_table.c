/*
 * cfg_table.c - the table of every configuration key: name, type, default,
 * bounds, the unit of a bare number, where it may be set, and a line of
 * help.  The parser, the defaults, check-config and the man page all come
 * from this one table (doc/relayq.conf.5 must list the same keys).
 */
#include "cfg_int.h"

#define S 1LL
#define MIN (60 * S)
#define HOUR (60 * MIN)
#define DAY (24 * HOUR)
#define WEEK (7 * DAY)
#define YEAR (365 * DAY)
#define KB 1024LL
#define MB (1024 * KB)
#define GB (1024 * MB)
#define TB (1024 * GB)

#define DOM CF_DOMAIN
#define PHASE (CF_DOMAIN | CF_CLASS | CF_FIRST)
#define NOCLS \
	{ \
		NULL, NULL, NULL, NULL \
	}

const struct cfg_def cfg_defs[CFG_NKEYS] = {
	[CFG_SPOOL_DIR] = { "spool_dir", CT_PATH, "/var/spool/relayq", 0, 0, 0,
	    0, NOCLS, NULL, "the drop directory tree" },
	[CFG_QUEUE_DIR] = { "queue_dir", CT_PATH, "/var/lib/relayq", 0, 0, 0, 0,
	    NOCLS, NULL, "the LMDB environment" },
	[CFG_HOSTNAME] = { "hostname", CT_STR, "", 0, 0, 0, 0, NOCLS, NULL,
	    "HELO name and DSN reporting MTA; empty: the host's FQDN" },
	[CFG_LOG_FILE] = { "log_file", CT_PATH, "", 0, 0, 0, CF_DASH, NOCLS,
	    NULL,
	    "where the log goes: empty: syslog; -: standard error; or "
	    "a file" },
	[CFG_USER] = { "user", CT_STR, "", 0, 0, 0, 0, NOCLS, NULL,
	    "the user `run` switches to when started as root" },
	[CFG_QUEUE_MAP_SIZE] = { "queue_map_size", CT_SIZE, "16g", 1 * MB,
	    4 * TB, 0, 0, NOCLS, NULL, "the largest size of the LMDB queue" },
	[CFG_RESCAN_INTERVAL] = { "rescan_interval", CT_TIME, "10s", 1 * S,
	    1 * DAY, S, 0, NOCLS, NULL,
	    "how often incoming/ is rescanned besides inotify" },
	[CFG_MAX_MESSAGE_SIZE] = { "max_message_size", CT_SIZE, "50m", 1 * KB,
	    2 * GB, 0, 0, NOCLS, NULL, "larger drops go to bad/" },
	[CFG_INTAKE_BATCH] = { "intake_batch", CT_INT, "2000", 1, 100000, 0, 0,
	    NOCLS, NULL, "most messages taken in per queue commit" },
	/* at most what the queue's envelope record holds (QP_RCPT_MAX) */
	[CFG_MAX_RECIPIENTS] = { "max_recipients", CT_INT, "10000", 1, 1000000,
	    0, 0, NOCLS, NULL, "messages with more recipients go to bad/" },
	[CFG_HOPCOUNT_LIMIT] = { "hopcount_limit", CT_INT, "50", 1, 100000, 0,
	    0, NOCLS, NULL, "this many Received: headers: bounced as a loop" },
	[CFG_MIN_FREE_SPACE] = { "min_free_space", CT_SIZE, "100m", 0, 1 * TB,
	    0, 0, NOCLS, NULL,
	    "intake pauses while the queue's or spool's file system has "
	    "less free; 0: no check" },

	[CFG_T_QUEUEWARN] = { "timeout.queuewarn", CT_TIME, "4h", 0, 10 * YEAR,
	    HOUR, CF_CLASS, { "1h", NULL, "12h", NULL }, NULL,
	    "when a delay warning is sent; 0: never" },
	[CFG_T_QUEUERETURN] = { "timeout.queuereturn", CT_TIME, "5d", 0,
	    10 * YEAR, DAY, CF_CLASS | CF_NOW, { "2d", NULL, "7d", NULL }, NULL,
	    "when an undelivered message is returned" },
	[CFG_BOUNCE_SIZE_LIMIT] = { "bounce_size_limit", CT_SIZE, "50k", 1 * KB,
	    1 * GB, 0, 0, NOCLS, NULL,
	    "most bytes of the original a notice includes" },
	[CFG_NOTIFY_POSTMASTER] = { "notify_postmaster", CT_BOOL, "no", 0, 1, 0,
	    0, NOCLS, NULL, "copy undeliverable notices to postmaster" },

	[CFG_RELAYHOST] = { "relayhost", CT_HOSTPORT, "", 0, 0, 0, DOM, NOCLS,
	    NULL, "smarthost [host]:port; empty: MX lookup" },
	[CFG_SMTP_PORT] = { "smtp_port", CT_INT, "25", 1, 65535, 0, DOM, NOCLS,
	    NULL, "port of MX hosts and of a relayhost without one" },
	[CFG_DNS_SERVER] = { "dns_server", CT_HOSTPORT, "", 0, 0, 0, 0, NOCLS,
	    NULL, "resolver address; empty: /etc/resolv.conf" },
	[CFG_MAX_CONNECTIONS] = { "max_connections", CT_INT, "20", 1, 100000, 0,
	    DOM, NOCLS, NULL, "concurrent connections per destination domain" },
	[CFG_INITIAL_DEST_CONCURRENCY] = { "initial_destination_concurrency",
	    CT_INT, "5", 1, 100000, 0, DOM, NOCLS, NULL,
	    "connections a destination starts with; grows to max_connections "
	    "on success" },
	[CFG_MAX_CONNECTIONS_TOTAL] = { "max_connections_total", CT_INT, "500",
	    1, 1000000, 0, 0, NOCLS, NULL, "concurrent connections in all" },
	[CFG_MAX_DELIVERIES_PER_CONN] = { "max_deliveries_per_connection",
	    CT_INT, "0", 0, 100000000, 0, DOM, NOCLS, NULL,
	    "messages per connection; 0: no limit" },
	[CFG_MAX_RCPTS_PER_TXN] = { "max_recipients_per_transaction", CT_INT,
	    "100", 1, 100000, 0, DOM, NOCLS, NULL, "RCPT TO per transaction" },
	[CFG_MAX_MESSAGE_RATE] = { "max_message_rate", CT_RATE, "", 0, 0, 0,
	    DOM, NOCLS, NULL, "messages per time to a destination (100/s)" },
	[CFG_PRIORITY_WEIGHTS] = { "priority_weights", CT_WEIGHTS,
	    "urgent=8 normal=4 non-urgent=1", 0, 0, 0, 0, NOCLS, NULL,
	    "share of connection slots per class" },
	[CFG_TLS] = { "tls", CT_TLS, "may", 0, 0, 0, DOM, NOCLS, NULL,
	    "none, may, encrypt, verify, dane or dane-only" },
	[CFG_TLS_CA_FILE] = { "tls_ca_file", CT_PATH, "", 0, 0, 0, DOM, NOCLS,
	    NULL, "CA bundle for verify; empty: the system's" },
	[CFG_CONN_CACHE_TIME] = { "connection_cache_time", CT_TIME, "2s", 0,
	    1 * HOUR, S, DOM, NOCLS, NULL,
	    "how long an idle connection is kept for reuse" },
	[CFG_RETRY_MIN] = { "retry.min", CT_TIME, "5m", 1 * S, 10 * YEAR, S,
	    DOM, NOCLS, NULL, "first retry delay" },
	[CFG_RETRY_MAX] = { "retry.max", CT_TIME, "4h", 1 * S, 10 * YEAR, S,
	    DOM, NOCLS, NULL, "cap of the exponential retry delay" },
	[CFG_DELIVERY_LEASE] = { "delivery_lease", CT_TIME, "10m", 1 * S,
	    1 * DAY, S, 0, NOCLS, NULL,
	    "how far a recipient's due time moves while it is in flight" },
	[CFG_T_HOSTSTATUS] = { "timeout.hoststatus", CT_TIME, "30m", 0,
	    1 * WEEK, MIN, DOM, NOCLS, NULL,
	    "how long a host found down is skipped" },

	[CFG_T_CONNECT] = { "timeout.connect", CT_TIME, "30s", 1 * S, 1 * DAY,
	    MIN, PHASE, NOCLS, "10s", "connect(2)" },
	[CFG_T_INITIAL] = { "timeout.initial", CT_TIME, "5m", 1 * S, 1 * DAY,
	    MIN, PHASE, NOCLS, NULL, "wait for the greeting" },
	[CFG_T_HELO] = { "timeout.helo", CT_TIME, "5m", 1 * S, 1 * DAY, MIN,
	    PHASE, NOCLS, NULL, "wait for the EHLO/HELO reply" },
	[CFG_T_STARTTLS] = { "timeout.starttls", CT_TIME, "1m", 1 * S, 1 * DAY,
	    MIN, PHASE, NOCLS, NULL, "STARTTLS reply and TLS handshake" },
	[CFG_T_MAIL] = { "timeout.mail", CT_TIME, "5m", 1 * S, 1 * DAY, MIN,
	    PHASE, NOCLS, NULL, "wait for the MAIL FROM reply" },
	[CFG_T_RCPT] = { "timeout.rcpt", CT_TIME, "5m", 1 * S, 1 * DAY, MIN,
	    PHASE, NOCLS, NULL, "wait for each RCPT TO reply" },
	[CFG_T_DATAINIT] = { "timeout.datainit", CT_TIME, "2m", 1 * S, 1 * DAY,
	    MIN, PHASE, NOCLS, NULL, "wait for the DATA reply" },
	[CFG_T_DATABLOCK] = { "timeout.datablock", CT_TIME, "3m", 1 * S,
	    1 * DAY, MIN, PHASE, NOCLS, NULL, "each block of the body sent" },
	[CFG_T_DATAFINAL] = { "timeout.datafinal", CT_TIME, "10m", 1 * S,
	    1 * DAY, MIN, PHASE, NOCLS, NULL, "wait for the reply to the dot" },
	[CFG_T_RSET] = { "timeout.rset", CT_TIME, "5m", 1 * S, 1 * DAY, MIN,
	    PHASE, NOCLS, NULL, "wait for the RSET reply" },
	[CFG_T_QUIT] = { "timeout.quit", CT_TIME, "2m", 1 * S, 1 * DAY, MIN,
	    PHASE, NOCLS, NULL, "wait for the QUIT reply" },
	[CFG_T_MISC] = { "timeout.misc", CT_TIME, "2m", 1 * S, 1 * DAY, MIN,
	    PHASE, NOCLS, NULL, "other commands (NOOP)" },

	/* smarthost (issue 12): cfg_files.c reads the files, cfg_route.c
	 * checks the lists (cfg_checks) and answers route questions */
	[CFG_AUTH_FILE] = { "auth_file", CT_PATH, "", 0, 0, 0, 0, NOCLS, NULL,
	    "credentials: DESTINATION user:password (or user:|command)" },
	[CFG_AUTH_MECHANISMS] = { "auth_mechanisms", CT_STR, "plain login", 0,
	    0, 0, DOM, NOCLS, NULL,
	    "SASL mechanisms by preference: plain login xoauth2 oauthbearer" },
	[CFG_AUTH_PLAINTEXT] = { "auth_plaintext", CT_BOOL, "no", 0, 1, 0, DOM,
	    NOCLS, NULL, "allow AUTH without TLS" },
	[CFG_TLS_WRAPPER] = { "tls_wrapper", CT_BOOL, "no", 0, 1, 0, DOM, NOCLS,
	    NULL, "TLS from the first byte (port 465 always)" },
	[CFG_TLS_CERT_FILE] = { "tls_cert_file", CT_PATH, "", 0, 0, 0, DOM,
	    NOCLS, NULL, "client certificate (PEM, chain after it)" },
	[CFG_TLS_KEY_FILE] = { "tls_key_file", CT_PATH, "", 0, 0, 0, DOM, NOCLS,
	    NULL, "the client certificate's key; empty: tls_cert_file" },
	[CFG_TLS_FINGERPRINT] = { "tls_fingerprint", CT_STR, "", 0, 0, 0, DOM,
	    NOCLS, NULL,
	    "SHA256:... of the server's certificate or public key" },
	[CFG_SENDER_RELAYHOST] = { "sender_relayhost", CT_PATH, "", 0, 0, 0, 0,
	    NOCLS, NULL, "routes by sender: SENDER [host]:port" },
	[CFG_FALLBACK_RELAY] = { "fallback_relay", CT_STR, "", 0, 0, 0, DOM,
	    NOCLS, NULL, "relays tried when the destination is unreachable" },

	/* cluster (issue 16): cfg_cluster.c checks the values, cfg_files.c
	 * reads the password, cluster/ shares the limits */
	[CFG_CLUSTER_REDIS] = { "cluster_redis", CT_STR, "", 0, 0, 0, 0, NOCLS,
	    NULL, "Redis of the cluster: IP:port or unix:/path; empty: alone" },
	[CFG_CLUSTER_PASSWORD] = { "cluster_password", CT_PATH, "", 0, 0, 0, 0,
	    NOCLS, NULL, "file holding the Redis password (mode 0600)" },
	[CFG_CLUSTER_NAME] = { "cluster_name", CT_STR, "relayq", 0, 0, 0, 0,
	    NOCLS, NULL, "the cluster's Redis key prefix" },
	[CFG_CLUSTER_NODE] = { "cluster_node", CT_STR, "", 0, 0, 0, 0, NOCLS,
	    NULL, "this node's name in the cluster; empty: the host name" },
	[CFG_CLUSTER_LEASE_TIME] = { "cluster_lease_time", CT_TIME, "30s",
	    3 * S, 1 * HOUR, S, 0, NOCLS, NULL,
	    "a dead node's connection slots are free again after this" },
	[CFG_CLUSTER_FALLBACK] = { "cluster_fallback", CT_STR, "share", 0, 0, 0,
	    0, NOCLS, NULL,
	    "while Redis is unreachable: share, local or hold" },
	/* the machine's own mail (issue 13): cfg_ident.c derives the
	 * identity left unset, cfg_files.c reads the tables */
	[CFG_ORIGIN] = { "origin", CT_STR, "", 0, 0, 0, 0, NOCLS, NULL,
	    "domain of unqualified addresses and of MAILER-DAEMON; empty: "
	    "/etc/mailname, else hostname" },
	[CFG_HELO_NAME] = { "helo_name", CT_STR, "", 0, 0, 0, DOM, NOCLS, NULL,
	    "what EHLO/HELO says; empty: hostname" },
	[CFG_POSTMASTER] = { "postmaster", CT_STR, "", 0, 0, 0, 0, NOCLS, NULL,
	    "where notify_postmaster copies go; empty: postmaster@origin" },
	[CFG_ALIAS_FILE] = { "alias_file", CT_PATH, "", 0, 0, 0, 0, NOCLS, NULL,
	    "aliases(5) for local recipients; unset: /etc/aliases if it "
	    "exists; empty: none" },
	[CFG_LOCAL_FALLBACK] = { "local_fallback", CT_STR, "", 0, 0, 0, 0,
	    NOCLS, NULL,
	    "where local mail without an alias goes; empty: NAME@origin" },
	[CFG_SENDER_MAP] = { "sender_map", CT_PATH, "", 0, 0, 0, 0, NOCLS, NULL,
	    "rewrites the envelope sender and From/Sender/Reply-To/"
	    "Return-Path: KEY ADDRESS lines" },
	/* logging (issue 13) */
	[CFG_SYSLOG_FACILITY] = { "syslog_facility", CT_FACILITY, "mail", 0, 0,
	    0, 0, NOCLS, NULL,
	    "syslog facility of the log (log_file empty): mail, daemon, user, "
	    "local0..local7" },
	/* observability (issue 15): http/ serves, runner_http.c checks
	 * http_listen (runner_cfg_prepare), cfg_files.c reads http_token */
	[CFG_HTTP_LISTEN] = { "http_listen", CT_STR, "", 0, 0, 0, 0, NOCLS,
	    NULL,
	    "metrics and status page: host:port, [v6]:port or a socket "
	    "path; empty: none" },
	[CFG_HTTP_TOKEN] = { "http_token", CT_PATH, "", 0, 0, 0, 0, NOCLS, NULL,
	    "file of the bearer token HTTP clients must send" },
	/* TLS policy (issue 17): DANE's resolver trust, MTA-STS, TLS-RPT */
	[CFG_DNSSEC] = { "dnssec", CT_STR, "ad", 0, 0, 0, 0, NOCLS, NULL,
	    "how DNSSEC security is known: ad (the resolver's AD bit) or "
	    "validate (in-process, libunbound)" },
	[CFG_DNSSEC_TRUST_REMOTE] = { "dnssec_trust_remote", CT_BOOL, "no", 0,
	    1, 0, 0, NOCLS, NULL,
	    "trust the AD bit of a dns_server that is not on loopback" },
	[CFG_MTA_STS] = { "mta_sts", CT_BOOL, "yes", 0, 1, 0, DOM, NOCLS, NULL,
	    "apply MTA-STS policies (with tls = may or dane, MX routes)" },
	[CFG_MTA_STS_PORT] = { "mta_sts_port", CT_INT, "443", 1, 65535, 0, 0,
	    NOCLS, NULL, "the HTTPS port MTA-STS policies are fetched from" },
	[CFG_TLSRPT] = { "tlsrpt", CT_BOOL, "no", 0, 1, 0, 0, NOCLS, NULL,
	    "send daily TLS reports (RFC 8460) to domains that ask" },
	[CFG_TLSRPT_ORGANIZATION] = { "tlsrpt_organization", CT_STR, "", 0, 0,
	    0, 0, NOCLS, NULL,
	    "organization-name of the reports; empty: hostname" },
	[CFG_TLSRPT_CONTACT] = { "tlsrpt_contact", CT_STR, "", 0, 0, 0, 0,
	    NOCLS, NULL,
	    "contact-info of the reports; empty: postmaster@hostname" },
	[CFG_DNSSEC_TRUST_ANCHOR] = { "dnssec_trust_anchor", CT_PATH,
	    "/usr/share/dns/root.key", 0, 0, 0, 0, NOCLS, NULL,
	    "trust anchors (DS or DNSKEY records) for dnssec = validate" },
	/* DKIM signing (issue 17): cfg_dkim.c reads and checks the keys,
	 * queue/queue_dkim.c signs at intake */
	[CFG_DKIM_KEY_FILE] = { "dkim_key_file", CT_PATH, "", 0, 0, 0, 0, NOCLS,
	    NULL, "DKIM private key (PEM, RSA or Ed25519)" },
	[CFG_DKIM_SELECTOR] = { "dkim_selector", CT_STR, "", 0, 0, 0, 0, NOCLS,
	    NULL, "the s= of dkim_key_file's signatures" },
	[CFG_DKIM_DOMAIN] = { "dkim_domain", CT_STR, "", 0, 0, 0, 0, NOCLS,
	    NULL,
	    "the d= of dkim_key_file's signatures; mail from it and "
	    "its subdomains is signed" },
	[CFG_DKIM_KEY_TABLE] = { "dkim_key_table", CT_PATH, "", 0, 0, 0, 0,
	    NOCLS, NULL,
	    "keys by sender domain: DOMAIN SELECTOR KEY-FILE [D-DOMAIN]" },
};
