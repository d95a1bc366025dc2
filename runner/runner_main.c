/*
 * runner_main.c - the daemon's shell: start-up (the files the config
 * names, process set-up, privileges, queue and intake, resolver and
 * client, events), the one event_base and its loop, spool intake
 * (inotify fd, "more" re-activation, map-full pause, rescan timer),
 * control wake-ups from other processes (and the flush notes, which
 * make it forget host status), the expiry timer, signals
 * (SIGTERM/SIGINT stop, SIGHUP reload, which rereads the files the
 * config names too), --exit-when-idle, the loop probe, and shutdown.
 *
 * Privileges: started as root, the daemon creates and checks queue_dir,
 * spool_dir and the log's directory, then becomes `user` before it opens
 * anything inside them; as that user it gives its directories their
 * modes.  See cfg/priv.c and the SECURITY section of relayq(8).
 *
 * Public: runner_main(); runner-private: runner_idle_check(),
 * runner_rcfg_unref().
 *
 * Invariants: no write transaction spans a loop turn (intake, and result
 * commits with the takes of a scheduling pass, each open and commit
 * their own); a stop finishes the commit in progress, lets sessions end
 * politely (STOP_GRACE_SECS) and commits every result before exiting 0;
 * a bad config on SIGHUP is refused and the old one kept.
 */
#include <ctype.h>
#include <errno.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "expiry.h"
#include "priv.h"
#include "runner_int.h"

#define STOP_GRACE_SECS 10 /* polite stop, then abort active sessions */
/* Messages a flush names whose destinations are looked up; more: all. */
#define FLUSH_NOTES_MAX 1000

static const struct timeval zero_tv;

/* Drops a reference to a config; frees it with the last. */
void
runner_rcfg_unref(struct rcfg *rc)
{
	if (rc != NULL && --rc->refs == 0) {
		cfg_free(rc->cfg);
		free(rc);
	}
}

/*
 * RELAYQ_LOOP_PROBE=MS (a debugging aid, see relayq(8)): a timer every
 * MS milliseconds measures how late the loop runs it; the largest
 * lateness is logged at exit.  A turn that blocks the loop shows here.
 */
static struct {
	struct event *ev;
	struct timeval tv;
	int64_t due_us, max_late_us;
	uint64_t ticks, late100;
} probe;

/* The probe's timer: records how late it runs, and re-arms. */
static void
probe_cb(evutil_socket_t fd, short what, void *arg)
{
	int64_t now = rq_mono_us(), late = now - probe.due_us;

	if (late > probe.max_late_us)
		probe.max_late_us = late;
	if (late > 100000)
		probe.late100++;
	probe.ticks++;
	probe.due_us = now + probe.tv.tv_sec * 1000000 + probe.tv.tv_usec;
	evtimer_add(probe.ev, &probe.tv);
}

/* Starts the loop probe when RELAYQ_LOOP_PROBE asks for it. */
static void
probe_start(struct runner *r)
{
	const char *pr = getenv("RELAYQ_LOOP_PROBE");

	if (pr != NULL && atoi(pr) > 0) {
		probe.tv.tv_sec = atoi(pr) / 1000;
		probe.tv.tv_usec = (atoi(pr) % 1000) * 1000;
		probe.ev = evtimer_new(r->base, probe_cb, NULL);
		probe.due_us = rq_mono_us() + atoi(pr) * 1000;
		evtimer_add(probe.ev, &probe.tv);
	}
}

/* Logs what the loop probe measured and stops it. */
static void
probe_stop(void)
{
	if (probe.ev == NULL)
		return;
	log_info(NULL,
	    "loop probe: %llu ticks of %ld ms, late by at most %lld "
	    "ms, %llu late by over 100 ms",
	    (unsigned long long)probe.ticks,
	    (long)(probe.tv.tv_sec * 1000 + probe.tv.tv_usec / 1000),
	    (long long)(probe.max_late_us / 1000),
	    (unsigned long long)probe.late100);
	event_free(probe.ev);
	probe.ev = NULL;
}

/* Raises the soft limit of open files to the hard one (as Postfix's
 * master does): connections are what the daemon needs many fds for. */
static void
runner_fd_limit_raise(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= rl.rlim_max ||
	    rl.rlim_max == RLIM_INFINITY)
		return;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
		log_warn(NULL, "cannot raise the open file limit to %llu: %s",
		    (unsigned long long)rl.rlim_max, strerror(errno));
}

/* Re-arms the expiry timer at the next warning or return. */
static void
expiry_arm(struct runner *r)
{
	int64_t next, now;
	struct timeval tv = { 0, 0 };

	if (r->stopping)
		return;
	next = expiry_next(r->q);
	if (next == INT64_MAX) {
		evtimer_del(r->ev_expiry);
		return;
	}
	now = rq_now();
	if (next > now)
		tv.tv_sec = (time_t)(next - now);
	evtimer_add(r->ev_expiry, &tv);
}

/* The expiry timer: warnings and returns due now, then re-arm. */
static void
expiry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct runner *r = arg;

	if (r->stopping)
		return;
	runner_result_commit(r, false);
	expiry_run(r->q, r->rc->cfg, rq_now());
	expiry_arm(r);
	runner_sched_kick(r); /* notices are new messages, due now */
	runner_idle_check(r);
}

/* Imports a batch of spool files and arranges for the next. */
static void
intake_step(struct runner *r)
{
	enum queue_intake_result x;
	const struct cfg_scope *g = cfg_scope(r->rc->cfg, NULL);
	struct timeval onesec = { 1, 0 };

	if (r->stopping || r->qi == NULL)
		return;
	x = queue_intake_run(r->qi, (size_t)cfg_int(g, CFG_INTAKE_BATCH));
	switch (x) {
	case QI_MORE:
		r->intake_paused = false;
		evtimer_add(r->ev_intake_more, &zero_tv);
		break;
	case QI_PAUSED:
		/* Map full: the queue logged it once; try again in 1 s. */
		r->intake_paused = true;
		evtimer_add(r->ev_intake_more, &onesec);
		break;
	case QI_WAIT:
		/* the spool files' removals trail: ev_intake_wake */
		r->intake_paused = true;
		break;
	case QI_IDLE:
		r->intake_paused = false;
		r->intake_idle = true;
		break;
	}
	runner_sched_kick(r);
	expiry_arm(r);
	if (x == QI_IDLE)
		runner_idle_check(r);
}

/* inotify readable, or the "more"/pause timer. */
static void
intake_cb(evutil_socket_t fd, short what, void *arg)
{
	intake_step(arg);
}

static void runner_stop(struct runner *r, const char *why);

/* The periodic rescan of incoming/ (inotify can overflow). */
static void
rescan_cb(evutil_socket_t fd, short what, void *arg)
{
	struct runner *r = arg;
	const char *why;

	if (r->qi == NULL || r->stopping)
		return;
	if (!queue_intake_dirs_same(r->qi, &why)) {
		/* removed, or renamed and made anew: what is dropped into
		 * the new one would wait unseen; a restart (systemd's
		 * Restart=on-failure) opens it */
		log_err("pickup",
		    "%.200s is not the directory opened at start (removed "
		    "or replaced): stopping, to be started again",
		    why);
		r->exit_code = RQ_EX_TEMPFAIL;
		runner_stop(r, "spool directory replaced");
		return;
	}
	queue_intake_rescan(r->qi);
	intake_step(r);
}

/*
 * Takes the flush notes (queue_flush_take) and forgets the host status
 * of what was flushed, as Postfix's postqueue -f: every destination, or
 * those the named messages' recipients still waiting go to.
 */
static void
runner_flush_notes(struct runner *r)
{
	uint64_t *ids = xcalloc(FLUSH_NOTES_MAX, sizeof(*ids));
	size_t n = 0;
	bool all = false;

	if (queue_flush_take(r->q, &all, ids, FLUSH_NOTES_MAX, &n) !=
	    QUEUE_OK) {
		free(ids);
		return;
	}
	if (all)
		runner_dest_host_clear(r, NULL);
	for (size_t i = 0; i < n && !all; i++) {
		struct queue_msg *m = NULL;

		if (queue_msg_load(r->q, ids[i], &m) != QUEUE_OK)
			continue;
		for (size_t k = 0; k < m->nrcpt; k++) {
			const char *at = strrchr(m->rcpts[k].addr, '@');
			char dom[256];
			size_t j;

			if (at == NULL ||
			    (m->rcpts[k].state != RCPT_PENDING &&
				m->rcpts[k].state != RCPT_DEFERRED))
				continue;
			for (j = 0; at[1 + j] != '\0' && j + 1 < sizeof(dom);
			     j++)
				dom[j] = (char)tolower(
				    (unsigned char)at[1 + j]);
			dom[j] = '\0';
			runner_dest_host_clear(r,
			    runner_route_dest(r, dom, m->sender,
				(m->flags & QMSG_TLS_RELAXED) != 0));
		}
		queue_msg_free(m);
	}
	if (all || n > 0)
		log_info(NULL, "flush: host status forgotten (%s)",
		    all ? "every destination" : "the messages' destinations");
	free(ids);
}

/* Another process changed the queue (hold, release, flush, delete). */
static void
wakeup_cb(evutil_socket_t fd, short what, void *arg)
{
	struct runner *r = arg;

	queue_wakeup_drain(r->q);
	if (r->stopping)
		return;
	runner_flush_notes(r);
	runner_sched_kick(r);
	expiry_arm(r);
}

/* Every connection is closed: commit what is left and leave the loop. */
static void
stop_done(void *arg)
{
	struct runner *r = arg;

	runner_result_commit(r, true);
	r->stopped = true;
	event_base_loopbreak(r->base);
}

/* The polite stop took too long: abort the sessions still busy. */
static void
stop_grace_cb(evutil_socket_t fd, short what, void *arg)
{
	struct runner *r = arg;

	log_warn(NULL, "sessions still busy after %d s: aborting them",
	    STOP_GRACE_SECS);
	smtp_client_shutdown(r->smtp, true, stop_done, r);
}

/* Begins a clean stop; see the invariants above. */
static void
runner_stop(struct runner *r, const char *why)
{
	struct timeval grace = { STOP_GRACE_SECS, 0 };

	if (r->stopping)
		return;
	r->stopping = true;
	log_info(NULL, "stopping: %s", why);
	if (r->ev_intake)
		event_del(r->ev_intake);
	if (r->ev_intake_wake)
		event_del(r->ev_intake_wake);
	event_del(r->ev_intake_more);
	event_del(r->ev_rescan);
	event_del(r->ev_sched);
	event_del(r->ev_expiry);
	/* Jobs not yet handed to the client keep their leases and are
	 * retried at once on the next start (queue_leases_recover). */
	runner_dest_jobs_drop(r);
	evtimer_add(r->ev_stop_grace, &grace);
	smtp_client_shutdown(r->smtp, false, stop_done, r);
}

/* --exit-when-idle: stop once nothing is left to do now. */
void
runner_idle_check(struct runner *r)
{
	int64_t now;

	if (!r->opts.exit_when_idle || r->stopping || !r->intake_idle ||
	    r->intake_paused)
		return;
	if (r->nmsgs > 0 || r->npres > 0 || r->active > 0 ||
	    runner_sched_busy(r) || runner_tlsrpt_busy(r->tlsrpt))
		return;
	now = rq_now();
	if (queue_due_next(r->q) <= now || expiry_next(r->q) <= now)
		return;
	runner_stop(r, "idle (--exit-when-idle)");
}

/* Says which keys of NEW that only a restart applies differ from OLD's:
 * the reload keeps the running values of those. */
static void
reload_restart_keys(const struct cfg *old, const struct cfg *new)
{
	static const struct {
		int key;
		const char *name;
	} keys[] = { { CFG_SPOOL_DIR, "spool_dir" },
		{ CFG_QUEUE_DIR, "queue_dir" }, { CFG_USER, "user" },
		{ CFG_QUEUE_MAP_SIZE, "queue_map_size" },
		{ CFG_HTTP_LISTEN, "http_listen" } };
	const struct cfg_scope *o = cfg_scope(old, NULL);
	const struct cfg_scope *n = cfg_scope(new, NULL);

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		int k = keys[i].key;
		bool same = k == CFG_QUEUE_MAP_SIZE
		    ? cfg_int(o, k) == cfg_int(n, k)
		    : strcmp(cfg_str(o, k), cfg_str(n, k)) == 0;

		if (!same)
			log_warn(NULL,
			    "%s changed: the new value takes effect at the "
			    "next start (a reload keeps the running one)",
			    keys[i].name);
	}
}

/* Reloads the config; a bad one is refused and the old one kept. */
static void
runner_reload(struct runner *r)
{
	struct cfg *n;
	struct rcfg *rc;
	char err[1024];
	const struct cfg_scope *g;

	if (cfg_load(r->cfg_path, &n, err, sizeof(err)) != CFG_OK) {
		log_err(NULL, "reload refused, keeping the running config: %s",
		    err);
		return;
	}
	/* auth_file, sender_relayhost and client certificates too; and
	 * the listener kept from the start still needs its token */
	if (runner_cfg_prepare(n, err, sizeof(err)) < 0 ||
	    runner_http_reload_check(r, n, err, sizeof(err)) < 0) {
		log_err(NULL, "reload refused, keeping the running config: %s",
		    err);
		cfg_free(n);
		return;
	}
	g = cfg_scope(n, NULL);
	if (log_open(cfg_str(g, CFG_LOG_FILE),
		(int)cfg_int(g, CFG_SYSLOG_FACILITY),
		cfg_str(g, CFG_HOSTNAME)) < 0)
		log_warn(NULL, "cannot open log_file %.200s: %s",
		    cfg_str(g, CFG_LOG_FILE), strerror(errno));
	reload_restart_keys(r->rc->cfg, n);
	rc = xcalloc(1, sizeof(*rc));
	rc->cfg = n;
	rc->refs = 1;
	queue_cfg_set(r->q, n);
	/* The old config stays alive as long as a destination (and so a
	 * request in flight) uses it; see runner_dest_reload(). */
	runner_rcfg_unref(r->rc);
	r->rc = rc;
	runner_dest_reload(r);
	runner_http_reload(r);
	evtimer_del(r->ev_rescan);
	{
		struct timeval tv = { (time_t)cfg_time(g, CFG_RESCAN_INTERVAL,
					  CFG_NORMAL, false),
			0 };

		event_add(r->ev_rescan, &tv);
	}
	log_info(NULL, "reloaded configuration %.200s", r->cfg_path);
	runner_sched_kick(r);
	expiry_arm(r);
}

/* SIGHUP reloads; SIGTERM/SIGINT stop politely, a second one without
 * waiting for busy sessions. */
static void
signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct runner *r = arg;

	if (sig == SIGHUP) {
		if (!r->stopping)
			runner_reload(r);
		return;
	}
	if (r->stopping) {
		/* A second signal: do not wait for busy sessions. */
		smtp_client_shutdown(r->smtp, true, stop_done, r);
		return;
	}
	runner_stop(r, sig == SIGINT ? "SIGINT" : "SIGTERM");
}

/*
 * Before anything is opened: as root, creates queue_dir and spool_dir
 * for the daemon's user and refuses unsafe ones (priv_root_dir); refuses
 * a log directory others can write; then becomes that user for good.
 * Exits 78 on a refusal, naming the path.  See cfg/priv.c.
 */
static void
runner_privs_drop(const struct cfg *cfg, const char *hostname)
{
	const struct cfg_scope *g = cfg_scope(cfg, NULL);
	const char *log_file = cfg_str(g, CFG_LOG_FILE);
	struct priv_id id;
	char why[1024];

	if (!priv_id_get(cfg_str(g, CFG_USER), &id, why, sizeof(why)))
		fatal(RQ_EX_CONFIG, "%s", why);
	if (geteuid() == 0 &&
	    (priv_root_dir(cfg_str(g, CFG_QUEUE_DIR), PRIV_DIR_QUEUE, &id, why,
		 sizeof(why)) != PRIV_OK ||
		priv_root_dir(cfg_str(g, CFG_SPOOL_DIR), PRIV_DIR_SPOOL, &id,
		    why, sizeof(why)) != PRIV_OK))
		fatal(RQ_EX_CONFIG, "%s", why);
	if (priv_log_prepare(log_file, &id, why, sizeof(why)) != PRIV_OK)
		fatal(RQ_EX_CONFIG, "%s", why);
	if (id.root_start && !priv_switch(&id, true))
		fatal(RQ_EX_OSERR, "cannot switch to user %.64s: %s", id.name,
		    strerror(errno));
	if (log_open(log_file, (int)cfg_int(g, CFG_SYSLOG_FACILITY), hostname) <
	    0)
		fatal(RQ_EX_CANTCREAT,
		    "cannot open log_file %.200s as uid %u: %s (it must be a "
		    "regular file, not a link)",
		    log_file, (unsigned)geteuid(), strerror(errno));
}

/*
 * As the daemon's user: gives queue_dir, spool_dir and its incoming/,
 * tmp/ and bad/ their owners and modes (creating what is missing),
 * repairing a wrong mode with one log line, exiting 78 on what it may
 * not repair (a link, another owner, a queue_dir or spool_dir others can
 * write).
 */
static void
runner_dirs_enforce(const struct cfg *cfg)
{
	const struct cfg_scope *g = cfg_scope(cfg, NULL);
	const char *spool = cfg_str(g, CFG_SPOOL_DIR);
	/* A missing incoming/ is left to queue_intake_open(), which makes it
	 * (3733) just before it watches it, as writers wait for it to
	 * appear: files then arrive in the order they are dropped. */
	static const struct {
		const char *sub;
		enum priv_dir kind;
		bool create;
	} dirs[] = {
		{ NULL, PRIV_DIR_QUEUE, true },
		{ "", PRIV_DIR_SPOOL, true },
		{ "tmp", PRIV_DIR_DROP, true },
		{ "bad", PRIV_DIR_PRIVATE, true },
		{ "incoming", PRIV_DIR_DROP, false },
	};
	char path[4096], why[1024];
	struct stat st;

	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		if (dirs[i].sub == NULL)
			snprintf(path, sizeof(path), "%s",
			    cfg_str(g, CFG_QUEUE_DIR));
		else if (dirs[i].sub[0] == '\0')
			snprintf(path, sizeof(path), "%s", spool);
		else
			snprintf(
			    path, sizeof(path), "%s/%s", spool, dirs[i].sub);
		if (!dirs[i].create && lstat(path, &st) != 0 && errno == ENOENT)
			continue;
		switch (
		    priv_dir_enforce(path, dirs[i].kind, why, sizeof(why))) {
		case PRIV_OK:
			break;
		case PRIV_FIXED:
			log_warn(NULL, "repaired a wrong mode: %s", why);
			break;
		case PRIV_REFUSED:
			fatal(RQ_EX_CONFIG, "%s", why);
		}
	}
}

/*
 * The process's set-up before the config is used: SIGPIPE ignored, the
 * random generators seeded, the host name (HOST when hostname is unset)
 * for the log lines.  Returns the host name.
 */
static const char *
runner_process_init(const struct cfg *cfg, char *host, size_t hostlen)
{
	const char *hostname = cfg_str(cfg_scope(cfg, NULL), CFG_HOSTNAME);

	signal(SIGPIPE, SIG_IGN);
	signal(SIGIO, SIG_IGN); /* a lease break (intake's file_writing()) */
	srandom((unsigned)(rq_now_us() ^ getpid()));
	srand48((long)(rq_now_us() ^ getpid()));
	if (hostname[0] == '\0') {
		if (gethostname(host, hostlen) != 0)
			snprintf(host, hostlen, "localhost");
		host[hostlen - 1] = '\0';
		hostname = host;
	}
	log_host_set(hostname); /* the host name only, for now */
	return hostname;
}

/* A runner holding CFG (two references: the runner's and the intake's,
 * kept until exit) and its event_base. */
static struct runner *
runner_new(
    struct cfg *cfg, const char *cfg_path, const struct runner_opts *opts)
{
	struct runner *r = xcalloc(1, sizeof(*r));

	r->rc = xcalloc(1, sizeof(*r->rc));
	r->rc->cfg = cfg;
	r->rc->refs = 2; /* the runner's, and the intake's (kept to exit) */
	r->cfg_path = cfg_path;
	r->opts = *opts;
	r->base = smtp_event_base_new();
	if (r->base == NULL)
		fatal(RQ_EX_OSERR, "event_base_new failed");
	return r;
}

/*
 * One daemon per queue, as Postfix's master.lock: an exclusive flock on
 * QUEUE_DIR/run.lock, held until exit, with the pid in it.  A second
 * `relayq run` on the same queue exits 75 naming the first (it would
 * otherwise take the first one's leases back and send their mail
 * again).  The descriptor is left open on purpose.
 */
static void
runner_lock(const struct cfg *cfg)
{
	const char *dir = cfg_str(cfg_scope(cfg, NULL), CFG_QUEUE_DIR);
	char path[4096], pid[32] = "";
	int fd, n;

	snprintf(path, sizeof(path), "%s/run.lock", dir);
	fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		fatal(RQ_EX_CANTCREAT, "cannot open %.200s: %s", path,
		    strerror(errno));
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		int err = errno;

		n = (int)pread(fd, pid, sizeof(pid) - 1, 0);
		pid[n > 0 ? strcspn(pid, "\n") : 0] = '\0';
		if (err == EWOULDBLOCK)
			fatal(RQ_EX_TEMPFAIL,
			    "another relayq run uses queue_dir %.200s (pid "
			    "%.20s): not started",
			    dir, pid[0] ? pid : "?");
		fatal(RQ_EX_CANTCREAT, "cannot lock %.200s: %s", path,
		    strerror(err));
	}
	n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n)
		log_warn(
		    NULL, "cannot write %.200s: %s", path, strerror(errno));
}

/* Opens the queue and the spool intake (as the daemon's user). */
static void
runner_queue_open(struct runner *r, const struct cfg *cfg)
{
	char err[1024];

	r->q = queue_open(cfg, false, err, sizeof(err));
	if (r->q == NULL)
		fatal(RQ_EX_CANTCREAT, "cannot open the queue: %s", err);
	runner_lock(cfg); /* queue_dir exists now; nothing changed yet */
	r->qi = queue_intake_open(r->q, cfg);
	if (r->qi == NULL)
		fatal(RQ_EX_CANTCREAT, "cannot open the spool %.200s",
		    cfg_str(cfg_scope(cfg, NULL), CFG_SPOOL_DIR));
}

/* Makes the resolver and the SMTP client, and sets the in-memory budget
 * (4 x max_connections_total messages, within [2,000, 20,000]). */
static void
runner_client_open(struct runner *r, const struct cfg *cfg, const char *host)
{
	const struct cfg_scope *g = cfg_scope(cfg, NULL);
	char err[1024];

	r->dns = runner_dns_new(r->base, cfg_hostport(g, CFG_DNS_SERVER),
	    strcasecmp(cfg_str(g, CFG_DNSSEC), "validate") == 0
		? cfg_str(g, CFG_DNSSEC_TRUST_ANCHOR)
		: NULL,
	    err, sizeof(err));
	if (r->dns == NULL)
		fatal(RQ_EX_CONFIG, "resolver: %s", err);
	r->sts = runner_sts_new(r->base, r->dns, r->q);
	r->tlsrpt = runner_tlsrpt_new(r);
	r->smtp = smtp_client_new(r->base, host);
	smtp_client_on_next(r->smtp, runner_dest_next, r);
	smtp_client_on_idle(r->smtp, runner_dest_idle, r);
	runner_cluster_open(r, cfg, host);

	r->max_msgs = (size_t)cfg_int(g, CFG_MAX_CONNECTIONS_TOTAL) * 4;
	if (r->max_msgs < 2000)
		r->max_msgs = 2000;
	if (r->max_msgs > 20000)
		r->max_msgs = 20000;
	r->sched_at = INT64_MAX;
}

/* Adds the loop's events: intake (inotify fd, "more" timer, rescan),
 * the control wake-up fd, expiry, the stop grace timer, signals, then
 * the scheduler's, the destinations' and the loop probe's. */
static void
runner_events_add(struct runner *r, const struct cfg *cfg)
{
	static const int sigs[3] = { SIGTERM, SIGINT, SIGHUP };
	const struct cfg_scope *g = cfg_scope(cfg, NULL);
	struct timeval tv;
	int fd;

	fd = queue_intake_fd(r->qi);
	if (fd >= 0) {
		r->ev_intake = event_new(
		    r->base, fd, EV_READ | EV_PERSIST, intake_cb, r);
		event_add(r->ev_intake, NULL);
	}
	fd = queue_intake_wake_fd(r->qi);
	if (fd >= 0) {
		r->ev_intake_wake = event_new(
		    r->base, fd, EV_READ | EV_PERSIST, intake_cb, r);
		event_add(r->ev_intake_wake, NULL);
	}
	r->ev_intake_more = evtimer_new(r->base, intake_cb, r);
	r->ev_rescan = event_new(r->base, -1, EV_PERSIST, rescan_cb, r);
	tv.tv_sec = (time_t)cfg_time(g, CFG_RESCAN_INTERVAL, CFG_NORMAL, false);
	tv.tv_usec = 0;
	event_add(r->ev_rescan, &tv);
	fd = queue_wakeup_fd(r->q);
	if (fd >= 0) {
		r->ev_wakeup = event_new(
		    r->base, fd, EV_READ | EV_PERSIST, wakeup_cb, r);
		event_add(r->ev_wakeup, NULL);
	} else {
		log_warn(NULL,
		    "no wake-up fd: hold/release/flush/delete "
		    "take effect at the next rescan");
	}
	r->ev_expiry = evtimer_new(r->base, expiry_cb, r);
	r->ev_stop_grace = evtimer_new(r->base, stop_grace_cb, r);
	for (int i = 0; i < 3; i++) {
		r->ev_sig[i] = evsignal_new(r->base, sigs[i], signal_cb, r);
		event_add(r->ev_sig[i], NULL);
	}
	runner_fd_limit_raise();
	runner_sched_init(r);
	runner_dest_init(r);
	probe_start(r);
}

/* Logs the start-up line: version, config, and who the daemon runs as. */
static void
runner_started_log(const char *cfg_path)
{
	if (geteuid() == 0) {
		log_info(NULL,
		    "daemon started -- version %s, configuration %.200s, "
		    "running as root (user is unset)",
		    RELAYQ_VERSION, cfg_path);
	} else {
		struct passwd *pw = getpwuid(geteuid());

		log_info(NULL,
		    "daemon started -- version %s, configuration %.200s, "
		    "running as %.64s (uid %ld)",
		    RELAYQ_VERSION, cfg_path, pw ? pw->pw_name : "?",
		    (long)geteuid());
	}
}

/* Runs the loop: intake, a scheduling pass and the expiry timer first,
 * until a stop (or an error) leaves it. */
static void
runner_loop(struct runner *r)
{
	evtimer_add(r->ev_intake_more, &zero_tv);
	runner_sched_kick(r);
	expiry_arm(r);
	event_base_dispatch(r->base);
	r->stopping = true; /* from here on nothing is scheduled */
}

/*
 * After the loop: drops waiting jobs, frees the resolver and the client
 * (whose last results are committed), then everything else, FIRST (the
 * intake's config) last.  Returns the exit code: 0 after a clean stop.
 */
static int
runner_shutdown(struct runner *r, struct rcfg *first)
{
	int code = r->stopped ? r->exit_code : RQ_EX_SOFTWARE;

	log_info(NULL, "daemon stopped");
	runner_dest_jobs_drop(r);
	runner_dns_free(r->dns); /* first: no resolver callback after */
	runner_sts_free(r->sts);
	smtp_client_free(r->smtp); /* may still report results: commit */
	runner_cluster_close(r); /* the leases go back (closed above) */
	r->smtp = NULL;
	runner_result_commit(r, true);
	runner_tlsrpt_free(r->tlsrpt);
	probe_stop();
	runner_http_stop(r);
	runner_dest_destroy(r);
	runner_sched_destroy(r);
	queue_intake_close(r->qi);
	/* a clean stop gives back the leases of what never went out (its
	 * results are committed above): mailq shows no '*' while no daemon
	 * runs, and the next start sends them at once all the same */
	if (r->stopped)
		queue_leases_recover(r->q);
	queue_close(r->q);
	for (int i = 0; i < 3; i++)
		event_free(r->ev_sig[i]);
	if (r->ev_intake)
		event_free(r->ev_intake);
	if (r->ev_intake_wake)
		event_free(r->ev_intake_wake);
	if (r->ev_wakeup)
		event_free(r->ev_wakeup);
	event_free(r->ev_intake_more);
	event_free(r->ev_rescan);
	event_free(r->ev_expiry);
	event_free(r->ev_stop_grace);
	if (r->ev_commit)
		event_free(r->ev_commit);
	event_base_free(r->base);
	free(r->pres);
	runner_rcfg_unref(r->rc);
	runner_rcfg_unref(first); /* the intake's reference, see runner_new */
	free(r);
	return code;
}

/* Runs the daemon; see runner.h. */
int
runner_main(
    struct cfg *cfg, const char *cfg_path, const struct runner_opts *opts)
{
	char host[256], err[1024];
	const char *hostname;
	struct runner *r;
	struct rcfg *first;

	/* The files the config names (credentials: before privileges are
	 * dropped) are refused here like the config itself. */
	if (runner_cfg_prepare(cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		cfg_free(cfg);
		return RQ_EX_CONFIG;
	}
	hostname = runner_process_init(cfg, host, sizeof(host));
	r = runner_new(cfg, cfg_path, opts);
	first = r->rc;

	/* Nothing in queue_dir, spool_dir or the log is opened before this
	 * (the user could have planted links there); nothing else needs
	 * root either (CA files are read per connection). */
	runner_privs_drop(cfg, hostname);
	runner_dirs_enforce(cfg);
	runner_queue_open(r, cfg);
	runner_client_open(r, cfg, hostname);
	runner_events_add(r, cfg);
	runner_http_start(r, cfg); /* http_listen: a bind failure is fatal */
	/* In-flight work of a previous run is due again now; flush notes
	 * left while no daemon ran have nothing to clear. */
	queue_leases_recover(r->q);
	runner_flush_notes(r);
	runner_started_log(cfg_path);
	runner_loop(r);
	return runner_shutdown(r, first);
}
