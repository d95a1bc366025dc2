/*
 * log.c - the log: syslog-style lines ("Nov 22 03:07:40 HOST
 * relayq/SUBSYS[PID]: text") written to log_file or standard error, one
 * write(2) per line so that lines of concurrent writers never interleave.
 *
 * Public: log_open(), log_close(), log_set_level(), log_msg(), log_vmsg(),
 * log_hold(), log_release(), log_line_escape(), fatal().
 *
 * Invariant: a line written has no byte a reader could take for the end
 * of a line or a terminal control: log_vmsg() escapes the whole line
 * (log_line_escape()) before it adds the final newline, so a caller
 * logging a file name, an address, a reply or header text cannot forget
 * it, and log_hold() buffers lines already escaped.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cfg.h"

static int log_fd = 2;
/* log_hold(): lines gathered per thread, written together */
static __thread char *hold_buf;
static __thread size_t hold_n;
static __thread int hold_depth;
#define HOLD_CAP 65536
static enum log_level log_min = LOG_LVL_INFO;
static char log_host[64] = "localhost";

/* Opens the log; see cfg.h. */
int
log_open(const char *path, const char *hostname)
{
	if (hostname != NULL && hostname[0] != '\0') {
		size_t n = strcspn(hostname, ".");

		if (n >= sizeof(log_host))
			n = sizeof(log_host) - 1;
		memcpy(log_host, hostname, n);
		log_host[n] = '\0';
	}
	if (path != NULL && path[0] != '\0') {
		/* never through a link, never blocked by a FIFO: the
		 * directory may be writable by the daemon's user */
		int fd = open(path,
		    O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_NONBLOCK |
			O_NOCTTY | O_CLOEXEC,
		    0640);
		struct stat st;

		if (fd < 0)
			return -1;
		if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
		    st.st_nlink != 1) {
			close(fd);
			errno = EPERM;
			return -1;
		}
		if (log_fd > 2)
			close(log_fd);
		log_fd = fd;
	}
	return 0;
}

void
log_close(void)
{
	if (log_fd > 2)
		close(log_fd);
	log_fd = 2;
}

void
log_set_level(enum log_level lvl)
{
	log_min = lvl;
}

static void log_flush_held(void);

/* The length of the valid UTF-8 sequence at S (N bytes left), 0 if
 * there is none; its code point in *CP. */
static size_t
utf8_len(const unsigned char *s, size_t n, unsigned *cp)
{
	size_t len, i;
	unsigned c = s[0], min;

	if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
		c &= 0x1f;
		min = 0x80;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		c &= 0x0f;
		min = 0x800;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		c &= 0x07;
		min = 0x10000;
	} else {
		return 0;
	}
	if (len > n)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		c = (c << 6) | (s[i] & 0x3f);
	}
	/* overlong forms, surrogates and beyond U+10FFFF are invalid */
	if (c < min || (c >= 0xd800 && c <= 0xdfff) || c > 0x10ffff)
		return 0;
	*cp = c;
	return len;
}

size_t
log_line_escape(char *buf, size_t len)
{
	unsigned char *s = (unsigned char *)buf;
	size_t i = 0, o = 0;

	while (i < len) {
		unsigned cp = 0;
		size_t n = 1;

		if (s[i] >= 0x20 && s[i] < 0x7f) {
			s[o++] = s[i++];
			continue;
		}
		if (s[i] >= 0x80 && (n = utf8_len(s + i, len - i, &cp)) > 0 &&
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

/* Formats and writes one line; see cfg.h. */
void
log_vmsg(enum log_level lvl, const char *subsys, const char *fmt, va_list ap)
{
	char buf[2048];
	struct tm tm;
	time_t now;
	int off, n;
	static const char *const pfx[] = { "error: ", "warning: ", "", "" };

	if (lvl > log_min)
		return;
	now = time(NULL);
	localtime_r(&now, &tm);
	off = (int)strftime(buf, sizeof(buf), "%b %e %H:%M:%S", &tm);
	n = snprintf(buf + off, sizeof(buf) - (size_t)off,
	    " %s relayq/%s[%ld]: %s", log_host, subsys ? subsys : "relayq",
	    (long)getpid(), pfx[lvl]);
	if (n < 0)
		return;
	off += n;
	if ((size_t)off < sizeof(buf) - 1) {
		n = vsnprintf(buf + off, sizeof(buf) - (size_t)off, fmt, ap);
		if (n < 0)
			n = 0;
		off += n;
	}
	if ((size_t)off >= sizeof(buf) - 1)
		off = (int)sizeof(buf) - 2;
	off = (int)log_line_escape(buf, (size_t)off);
	buf[off++] = '\n';
	if (hold_depth > 0) {
		if (hold_buf == NULL)
			hold_buf = xmalloc(HOLD_CAP);
		if (hold_n + (size_t)off > HOLD_CAP)
			log_flush_held();
		memcpy(hold_buf + hold_n, buf, (size_t)off);
		hold_n += (size_t)off;
		return;
	}
	while (write(log_fd, buf, (size_t)off) < 0 && errno == EINTR)
		;
}

/* Writes the lines held so far (whole lines: one write(2) each batch). */
static void
log_flush_held(void)
{
	size_t off = 0;

	while (off < hold_n) {
		ssize_t n = write(log_fd, hold_buf + off, hold_n - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		off += (size_t)n;
	}
	hold_n = 0;
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

/* Logs a fatal error and exits with CODE. */
void
fatal(int code, const char *fmt, ...)
{
	va_list ap;
	char buf[1024];

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	log_msg(LOG_LVL_ERR, NULL, "fatal: %s", buf);
	buf[log_line_escape(buf, strlen(buf))] = '\0';
	if (log_fd != 2)
		fprintf(stderr, "relayq: fatal: %s\n", buf);
	exit(code);
}
