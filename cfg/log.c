/*
 * log.c - the log: one line per event, with one identity per component
 * as Postfix's ("relayq/SUBSYS[PID]: text"), sent to syslog (the default:
 * log_file empty), or with syslog's traditional header ("Nov 22 03:07:40
 * HOST relayq/SUBSYS[PID]: text") to log_file or standard error.
 *
 * Public: log_open(), log_host_set(), log_close(), log_set_level(),
 * log_msg(), log_vmsg(), log_hold(), log_release(), log_line_escape(),
 * log_facility_parse(), log_facility_name(), fatal().
 *
 * Syslog is written as syslog(3) does, one RFC 3164 datagram per line
 * ("<PRI>Nov 22 03:07:40 relayq/smtp[PID]: text") to /dev/log, but by
 * this file, so the identity can differ per line without openlog()'s
 * process-wide state, and tests can name another socket
 * ($RELAYQ_SYSLOG_SOCKET).  journald (and rsyslog's imuxsock) take the
 * identity, PID and severity from the datagram and add their own header:
 * nothing here is ever stamped twice.  A line syslog does not take (no
 * socket, even after one reconnect) goes to standard error, stamped, so
 * nothing is dropped where no syslog daemon runs (a chroot, a container).
 *
 * Invariants: a line written has no byte a reader could take for the end
 * of a line or a terminal control: log_vmsg() escapes the whole line
 * (log_line_escape()) before it is kept or written, so a caller logging a
 * file name, an address, a reply or header text cannot forget it, and
 * log_hold() buffers lines already escaped.  One line is one write(2) or
 * one datagram, under log_lock, so lines of threads (intake readers, the
 * loop) never interleave, and the destination never changes under a
 * writer.  The process ID in the identity is read once per process
 * (log_pid(); pthread_atfork() forgets it in a child), not once a line.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "cfg.h"

/* The longest line, header included; longer text is cut. */
#define LINE_MAX_BYTES 2048
/* The traditional header's time stamp, "Nov 22 03:07:40": 15 bytes. */
#define STAMP_LEN 15
#define HOLD_CAP 65536
#define SYSLOG_PATH "/dev/log"

enum log_dest { LOG_DEST_STDERR, LOG_DEST_FILE, LOG_DEST_SYSLOG };

/* Everything below up to log_min is guarded by log_lock. */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static enum log_dest log_dest = LOG_DEST_STDERR;
static int log_fd = 2; /* the file; 2 otherwise */
static int log_facility = LOG_MAIL;
static int sys_fd = -1; /* the syslog socket, once connected */
static int sys_type; /* its SOCK_DGRAM or SOCK_STREAM */
static bool sys_took_last; /* syslog took the last line sent to it */
static char sys_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
static char log_host[64] = "localhost";
static char conv[2 * HOLD_CAP]; /* traditional lines to write */
static enum log_level log_min = LOG_LVL_INFO;

/* getpid(), cached: 0 until read; a forked child starts again at 0. */
static pid_t log_pid_cached;
static pthread_once_t log_pid_once = PTHREAD_ONCE_INIT;

/*
 * log_hold(): lines gathered per thread, written together.  A line is
 * kept (here, and as emit_lines() takes it) as its syslog severity (one
 * digit), a space, the time stamp (STAMP_LEN bytes), " relayq/SUBSYS[PID]:
 * text" and '\n': each destination makes its own header from it.
 */
static __thread char *hold_buf;
static __thread size_t hold_n;
static __thread int hold_depth;

static const struct {
	const char *name;
	int code;
} facilities[] = {
	{ "mail", LOG_MAIL },
	{ "daemon", LOG_DAEMON },
	{ "user", LOG_USER },
	{ "local0", LOG_LOCAL0 },
	{ "local1", LOG_LOCAL1 },
	{ "local2", LOG_LOCAL2 },
	{ "local3", LOG_LOCAL3 },
	{ "local4", LOG_LOCAL4 },
	{ "local5", LOG_LOCAL5 },
	{ "local6", LOG_LOCAL6 },
	{ "local7", LOG_LOCAL7 },
};

int
log_facility_parse(const char *name, size_t len)
{
	for (size_t i = 0; i < sizeof(facilities) / sizeof(facilities[0]); i++)
		if (strlen(facilities[i].name) == len &&
		    strncasecmp(name, facilities[i].name, len) == 0)
			return facilities[i].code;
	return -1;
}

const char *
log_facility_name(int facility)
{
	for (size_t i = 0; i < sizeof(facilities) / sizeof(facilities[0]); i++)
		if (facilities[i].code == facility)
			return facilities[i].name;
	return "";
}

/* Copies the first label of HOSTNAME into log_host; log_lock held. */
static void
host_copy(const char *hostname)
{
	size_t n;

	if (hostname == NULL || hostname[0] == '\0')
		return;
	n = strcspn(hostname, ".");
	if (n >= sizeof(log_host))
		n = sizeof(log_host) - 1;
	memcpy(log_host, hostname, n);
	log_host[n] = '\0';
}

void
log_host_set(const char *hostname)
{
	pthread_mutex_lock(&log_lock);
	host_copy(hostname);
	pthread_mutex_unlock(&log_lock);
}

/* Closes the syslog socket; log_lock held. */
static void
sys_close(void)
{
	if (sys_fd >= 0)
		close(sys_fd);
	sys_fd = -1;
}

/* Opens the log; see cfg.h. */
int
log_open(const char *dest, int facility, const char *hostname)
{
	int fd = -1;

	if (dest != NULL && dest[0] != '\0' && strcmp(dest, "-") != 0) {
		/* never through a link, never blocked by a FIFO: the
		 * directory may be writable by the daemon's user */
		struct stat st;

		fd = open(dest,
		    O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_NONBLOCK |
			O_NOCTTY | O_CLOEXEC,
		    0640);
		if (fd < 0)
			return -1;
		if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
		    st.st_nlink != 1) {
			close(fd);
			errno = EPERM;
			return -1;
		}
	}
	pthread_mutex_lock(&log_lock);
	host_copy(hostname);
	if (log_fd > 2)
		close(log_fd);
	log_fd = 2;
	sys_close();
	if (fd >= 0) {
		log_dest = LOG_DEST_FILE;
		log_fd = fd;
	} else if (dest != NULL && strcmp(dest, "-") == 0) {
		log_dest = LOG_DEST_STDERR;
	} else {
		/* a test aid, never taken by a set-id process */
		const char *p = secure_getenv("RELAYQ_SYSLOG_SOCKET");

		log_dest = LOG_DEST_SYSLOG;
		log_facility = facility;
		snprintf(sys_path, sizeof(sys_path), "%s",
		    p != NULL && p[0] != '\0' ? p : SYSLOG_PATH);
	}
	pthread_mutex_unlock(&log_lock);
	return 0;
}

void
log_close(void)
{
	pthread_mutex_lock(&log_lock);
	if (log_fd > 2)
		close(log_fd);
	log_fd = 2;
	sys_close();
	log_dest = LOG_DEST_STDERR;
	pthread_mutex_unlock(&log_lock);
}

void
log_set_level(enum log_level lvl)
{
	log_min = lvl;
}

/* Connects the syslog socket, a datagram one or else a stream one (as
 * syslog(3) does); log_lock held.  Returns false if neither connects. */
static bool
sys_connect(void)
{
	static const int types[] = { SOCK_DGRAM, SOCK_STREAM };
	struct sockaddr_un sa;

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, sys_path, sizeof(sa.sun_path));
	for (size_t i = 0; i < 2; i++) {
		int fd = socket(AF_UNIX, types[i] | SOCK_CLOEXEC, 0);

		if (fd < 0)
			return false;
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			sys_fd = fd;
			sys_type = types[i];
			return true;
		}
		close(fd);
		if (errno != EPROTOTYPE)
			return false;
	}
	return false;
}

/* Sends LEN bytes of MSG (one datagram, or NUL-ended on a stream) to
 * syslog, reconnecting once; log_lock held.  False if not sent. */
static bool
sys_send(char *msg, size_t len)
{
	for (int attempt = 0; attempt < 2; attempt++) {
		size_t off = 0, total = len;
		ssize_t n = 0;

		if (sys_fd < 0 && !sys_connect())
			return false;
		if (sys_type == SOCK_STREAM)
			msg[total++] = '\0'; /* the caller left room */
		while (off < total) {
			n = send(sys_fd, msg + off, total - off, MSG_NOSIGNAL);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 || sys_type == SOCK_DGRAM)
				break;
			off += (size_t)n;
		}
		if (n >= 0)
			return true;
		/* syslogd restarted, or went away: once more, afresh */
		sys_close();
	}
	return false;
}

/* Writes N bytes at P to FD, whole (retrying short writes and EINTR). */
static void
fd_write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		p += w;
		n -= (size_t)w;
	}
}

/* Appends LINE (a kept line, LEN bytes with its '\n') to conv as a
 * traditional one at *CN; log_lock held. */
static void
conv_add(const char *line, size_t len, size_t *cn)
{
	size_t hl = strlen(log_host);

	/* "Nov 22 03:07:40" " HOST" " relayq/...\n" */
	memcpy(conv + *cn, line + 2, STAMP_LEN);
	*cn += STAMP_LEN;
	conv[(*cn)++] = ' ';
	memcpy(conv + *cn, log_host, hl);
	*cn += hl;
	memcpy(conv + *cn, line + 2 + STAMP_LEN, len - 2 - STAMP_LEN);
	*cn += len - 2 - STAMP_LEN;
}

/*
 * Writes the kept lines LINES[0..N) to the destination, in order:
 * traditional lines to the file or standard error in writes of whole
 * lines, or one datagram each to syslog (standard error for those it
 * does not take).  Takes log_lock.
 */
static void
emit_lines(const char *lines, size_t n)
{
	size_t cn = 0;
	int fd;

	pthread_mutex_lock(&log_lock);
	fd = log_dest == LOG_DEST_FILE ? log_fd : 2;
	for (size_t off = 0; off < n;) {
		const char *line = lines + off;
		const char *nl = memchr(line, '\n', n - off);
		size_t len = nl != NULL ? (size_t)(nl - line) + 1 : n - off;

		off += len;
		if (len < 2 + STAMP_LEN + 1)
			continue; /* not a kept line: cannot happen */
		if (log_dest == LOG_DEST_SYSLOG) {
			char dg[LINE_MAX_BYTES + 16];
			int pl = snprintf(dg, sizeof(dg), "<%d>",
			    log_facility | (line[0] - '0'));

			/* "<PRI>Nov 22 03:07:40 relayq/...", no newline */
			memcpy(dg + pl, line + 2, len - 3);
			sys_took_last = sys_send(dg, (size_t)pl + len - 3);
			if (sys_took_last)
				continue;
		}
		if (cn + len + sizeof(log_host) + 1 > sizeof(conv)) {
			fd_write_all(fd, conv, cn);
			cn = 0;
		}
		conv_add(line, len, &cn);
		if (log_dest == LOG_DEST_SYSLOG) {
			/* the fallback: this line, now */
			fd_write_all(2, conv, cn);
			cn = 0;
		}
	}
	if (cn > 0)
		fd_write_all(fd, conv, cn);
	pthread_mutex_unlock(&log_lock);
}

/* Writes the lines held so far. */
static void
log_flush_held(void)
{
	if (hold_n > 0)
		emit_lines(hold_buf, hold_n);
	hold_n = 0;
}

size_t
log_line_escape(char *buf, size_t len)
{
	const uint64_t ones = 0x0101010101010101ULL, high = ones * 0x80;
	unsigned char *s = (unsigned char *)buf;
	size_t i = 0, o;

	/* the printable ASCII the lines are nearly all made of stays where
	 * it is, eight bytes a step: a word is passed while none of its
	 * bytes is below 0x20 or at or above 0x7f (a byte the tests below
	 * wrongly suspect only sends the rest through the loop) */
	while (i + 8 <= len) {
		uint64_t w;

		memcpy(&w, s + i, 8);
		if ((((w - ones * 0x20) & ~w) | w | (w + ones)) & high)
			break;
		i += 8;
	}
	o = i;
	while (i < len) {
		unsigned cp = 0;
		size_t n = 1;

		if (s[i] >= 0x20 && s[i] < 0x7f) {
			s[o++] = s[i++];
			continue;
		}
		if (s[i] >= 0x80 &&
		    (n = rq_utf8_len(s + i, len - i, &cp)) > 0 &&
		    !(cp >= 0x80 && cp <= 0x9f) && cp != 0x2028 &&
		    cp != 0x2029) {
			memmove(s + o, s + i, n);
			o += n;
			i += n;
			continue;
		}
		/* a control, DEL, a C1 control or a line or paragraph
		 * separator (one '?' each), or a byte of no valid UTF-8
		 * sequence */
		s[o++] = '?';
		i += n > 0 ? n : 1;
	}
	return o;
}

/* Forgets the cached process ID in a forked child (an atfork handler). */
static void
log_pid_forget(void)
{
	__atomic_store_n(&log_pid_cached, 0, __ATOMIC_RELAXED);
}

/* Registers log_pid_forget() as a child handler of fork(), once. */
static void
log_pid_atfork(void)
{
	pthread_atfork(NULL, NULL, log_pid_forget);
}

/* The process ID for the identity: one getpid() per process, not per
 * line (drain logs two lines a message). */
static pid_t
log_pid(void)
{
	pid_t pid = __atomic_load_n(&log_pid_cached, __ATOMIC_RELAXED);

	if (pid == 0) {
		pthread_once(&log_pid_once, log_pid_atfork);
		pid = getpid();
		__atomic_store_n(&log_pid_cached, pid, __ATOMIC_RELAXED);
	}
	return pid;
}

/* Writes " relayq/SUBSYS[PID]: PFX" at BUF + OFF (SUBSYS cut at 64
 * bytes; BUF has LINE_MAX_BYTES, OFF is at most 2 + STAMP_LEN): the new
 * offset.  What snprintf(" relayq/%.64s[%ld]: %s") wrote, without
 * its format parse at every line. */
static size_t
log_ident(char *buf, size_t off, const char *subsys, const char *pfx)
{
	char digits[24];
	size_t n = strnlen(subsys, 64), d = sizeof(digits);
	long pid = (long)log_pid();

	memcpy(buf + off, " relayq/", 8);
	off += 8;
	memcpy(buf + off, subsys, n);
	off += n;
	buf[off++] = '[';
	do {
		digits[--d] = (char)('0' + pid % 10);
		pid /= 10;
	} while (pid > 0 && d > 0);
	memcpy(buf + off, digits + d, sizeof(digits) - d);
	off += sizeof(digits) - d;
	buf[off++] = ']';
	buf[off++] = ':';
	buf[off++] = ' ';
	n = strlen(pfx);
	memcpy(buf + off, pfx, n);
	return off + n;
}

/* Formats and writes one line; see cfg.h. */
void
log_vmsg(enum log_level lvl, const char *subsys, const char *fmt, va_list ap)
{
	/* the kept form: severity digit, stamp, identity, text, newline */
	static const int sev[] = { LOG_CRIT, LOG_ERR, LOG_WARNING, LOG_INFO,
		LOG_DEBUG };
	static const char *const pfx[] = {
		"fatal: ", "error: ", "warning: ", "", ""
	};
	char buf[LINE_MAX_BYTES];
	struct tm tm;
	time_t now;
	size_t off, body;
	int n;

	/* the stamp is made once a second a thread (localtime_r() takes
	 * the time zone's lock): a busy loop logs thousands of lines a
	 * second */
	static __thread time_t stamp_at = -1;
	static __thread char stamp[STAMP_LEN + 1];

	if (lvl > log_min || (unsigned)lvl > LOG_LVL_DEBUG)
		return;
	now = time(NULL);
	if (now != stamp_at) {
		localtime_r(&now, &tm);
		if (strftime(stamp, sizeof(stamp), "%b %e %H:%M:%S", &tm) !=
		    STAMP_LEN)
			return; /* cannot happen in the C locale */
		stamp_at = now;
	}
	buf[0] = (char)('0' + sev[lvl]);
	buf[1] = ' ';
	memcpy(buf + 2, stamp, STAMP_LEN);
	off = 2 + STAMP_LEN;
	body = off;
	off = log_ident(buf, off, subsys ? subsys : "relayq", pfx[lvl]);
	if (off < sizeof(buf) - 1 && strcmp(fmt, "%s") == 0) {
		/* a line made by the caller (the delivery lines): copied */
		const char *t = va_arg(ap, const char *);
		size_t tn;

		if (t == NULL)
			t = "(null)"; /* as printf */
		tn = strnlen(t, sizeof(buf) - 1 - off);

		memcpy(buf + off, t, tn);
		off += tn;
	} else if (off < sizeof(buf) - 1) {
		n = vsnprintf(buf + off, sizeof(buf) - off, fmt, ap);
		if (n < 0)
			n = 0;
		off += (size_t)n;
	}
	if (off >= sizeof(buf) - 1)
		off = sizeof(buf) - 2;
	off = body + log_line_escape(buf + body, off - body);
	buf[off++] = '\n';
	if (hold_depth > 0) {
		if (hold_buf == NULL)
			hold_buf = xmalloc(HOLD_CAP);
		if (hold_n + off > HOLD_CAP)
			log_flush_held();
		memcpy(hold_buf + hold_n, buf, off);
		hold_n += off;
		return;
	}
	emit_lines(buf, off);
}

void
log_hold(void)
{
	hold_depth++;
}

void
log_release(void)
{
	if (hold_depth > 0 && --hold_depth == 0) {
		log_flush_held();
		free(hold_buf);
		hold_buf = NULL;
	}
}

void
log_msg(enum log_level lvl, const char *subsys, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(lvl, subsys, fmt, ap);
	va_end(ap);
}

/*
 * True if standard error is the journal's stream (systemd names it in
 * $JOURNAL_STREAM, "DEV:INODE"), where a copy of a line syslog already
 * took would show twice.
 */
static bool
stderr_is_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	return js != NULL && sscanf(js, "%llu:%llu", &dev, &ino) == 2 &&
	    fstat(2, &st) == 0 && (unsigned long long)st.st_dev == dev &&
	    (unsigned long long)st.st_ino == ino;
}

/* Logs a fatal error and exits with CODE; see cfg.h. */
void
fatal(int code, const char *fmt, ...)
{
	va_list ap;
	char buf[1024];
	bool elsewhere;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	/* lines held before it come first, and none is lost by exit() */
	log_flush_held();
	hold_depth = 0;
	log_msg(LOG_LVL_CRIT, NULL, "%s", buf);
	pthread_mutex_lock(&log_lock);
	elsewhere = log_dest == LOG_DEST_FILE ||
	    (log_dest == LOG_DEST_SYSLOG && sys_took_last &&
		!stderr_is_journal());
	pthread_mutex_unlock(&log_lock);
	buf[log_line_escape(buf, strlen(buf))] = '\0';
	/* for whoever started the command (a config error, say); not
	 * twice to standard error (syslog's fallback), nor twice into the
	 * journal under systemd */
	if (elsewhere)
		fprintf(stderr, "relayq: fatal: %s\n", buf);
	exit(code);
}
