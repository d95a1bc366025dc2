/*
 * expiry_dsn.c - builds RFC 3464 delivery status notifications: a
 * multipart/report; report-type=delivery-status message with a
 * human-readable part in the style of Postfix's notices, a
 * message/delivery-status part, and the original as text/rfc822-headers
 * or message/rfc822 (RET=FULL), capped at bounce_size_limit.
 *
 * Public: expiry_dsn_build(), expiry_msg_header_len(),
 * expiry_msg_header_get(), expiry_msg_is_bulk().
 *
 * Invariants: pure (no clock, no queue; randomness only when the caller
 * gives no boundary); every line ends in CRLF; remote text (replies,
 * ORCPT, ENVID, addresses) is bounded, stripped of CR/LF and of other
 * control and non-ASCII bytes before it goes into a header or the
 * delivery-status part; the original is cut only at a line boundary, and
 * the boundary never occurs in it.
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "expiry.h"
#include "mail.h"

#define DIAG_MAX 500 /* bytes of remote text per field */
#define ADDR_MAX 300 /* bytes of an address */
#define WRAP 76 /* columns of the human-readable text and folded fields */

/*
 * Copies untrusted text into BUF (BUFLEN > 0; BUF may be S): at most
 * BUFLEN-1 bytes, xtext "+XX" decoded when XTEXT (hex digits of either
 * case), controls made spaces, non-ASCII '?', runs of blanks squeezed,
 * surrounding blanks trimmed.
 */
static void
text_clean(char *buf, size_t buflen, const char *s, bool xtext)
{
	size_t o = 0, n = s != NULL ? strlen(s) : 0;
	bool blank = true; /* trims leading blanks */
	char *dec = NULL;

	if (xtext && n > 0)
		s = dec = mail_xtext_decode(s, n, MAIL_XTEXT_ANYCASE, &n);
	for (size_t i = 0; i < n && o + 1 < buflen; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch < 0x20 || ch == 0x7f)
			ch = ' ';
		else if (ch >= 0x80)
			ch = '?';
		if (ch == ' ') {
			if (blank)
				continue;
			blank = true;
		} else {
			blank = false;
		}
		buf[o++] = (char)ch;
	}
	while (o > 0 && buf[o - 1] == ' ')
		o--;
	buf[o] = '\0';
	free(dec);
}

/* Formats T as an RFC 5322 date in UTC into BUF (at least 40 bytes). */
static void
date_format(char *buf, size_t len, int64_t t)
{
	static const char *const days[] = { "Sun", "Mon", "Tue", "Wed", "Thu",
		"Fri", "Sat" };
	static const char *const mons[] = { "Jan", "Feb", "Mar", "Apr", "May",
		"Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	time_t tt = (time_t)t;
	struct tm tm;

	if (gmtime_r(&tt, &tm) == NULL)
		memset(&tm, 0, sizeof(tm));
	snprintf(buf, len, "%s, %d %s %04d %02d:%02d:%02d +0000",
	    days[tm.tm_wday % 7], tm.tm_mday, mons[tm.tm_mon % 12],
	    tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* Formats a duration in words ("4 hours", "1 day 2 hours", "30 seconds"). */
static void
duration_format(char *buf, size_t len, int64_t secs)
{
	static const struct {
		int64_t n;
		const char *name;
	} units[] = { { 86400, "day" }, { 3600, "hour" }, { 60, "minute" },
		{ 1, "second" } };
	size_t o = 0;
	int shown = 0;

	if (secs < 0)
		secs = 0;
	buf[0] = '\0';
	for (size_t i = 0; i < 4 && shown < 2; i++) {
		int64_t v = secs / units[i].n;

		if (v == 0 && !(i == 3 && shown == 0))
			continue;
		secs -= v * units[i].n;
		if (o < len)
			o += (size_t)snprintf(buf + o, len - o,
			    "%s%" PRId64 " %s%s", shown ? " " : "", v,
			    units[i].name, v == 1 ? "" : "s");
		shown++;
		if (shown == 1 && secs == 0)
			break;
	}
}

/*
 * Appends header or DSN field NAME: VALUE, folded at blanks so lines stay
 * within WRAP columns where the value allows.
 */
static void
field_add(struct rq_buf *b, const char *name, const char *value)
{
	size_t col = strlen(name) + 2;
	const char *p = value;

	rq_buf_str(b, name);
	rq_buf_str(b, ": ");
	while (*p != '\0') {
		size_t w = strcspn(p, " ");

		rq_buf_add(b, p, w);
		col += w;
		p += w;
		if (*p == ' ') {
			size_t nw = strcspn(p + 1, " ");

			if (col + 1 + nw > WRAP && nw > 0) {
				rq_buf_str(
				    b, "\r\n\t"); /* replaces the blank */
				col = 8;
			} else {
				rq_buf_str(b, " ");
				col++;
			}
			p++;
		}
	}
	rq_buf_str(b, "\r\n");
}

/* Appends TEXT as a paragraph wrapped at WRAP, continuation lines
 * indented by 4 blanks, as Postfix writes a recipient's reason. */
static void
para_add(struct rq_buf *b, const char *text)
{
	size_t col = 0;
	const char *p = text;
	bool first = true;

	while (*p != '\0') {
		size_t w = strcspn(p, " ");

		if (!first && col + 1 + w > WRAP) {
			rq_buf_str(b, "\r\n    ");
			col = 4;
		} else if (!first) {
			rq_buf_str(b, " ");
			col++;
		}
		rq_buf_add(b, p, w);
		col += w;
		first = false;
		p += w;
		while (*p == ' ')
			p++;
	}
	rq_buf_str(b, "\r\n");
}

/* Returns the RFC 3464 name of an action. */
static const char *
action_name(enum expiry_action a)
{
	switch (a) {
	case EXPIRY_ACT_FAILED:
		return "failed";
	case EXPIRY_ACT_DELAYED:
		return "delayed";
	case EXPIRY_ACT_DELIVERED:
		return "delivered";
	case EXPIRY_ACT_RELAYED:
		return "relayed";
	case EXPIRY_ACT_EXPANDED:
		return "expanded";
	}
	abort();
}

/* True when S is an enhanced status code "C.SSS.DDD" (RFC 3463). */
static bool
status_valid(const char *s)
{
	size_t n;

	if (s == NULL || (s[0] != '2' && s[0] != '4' && s[0] != '5') ||
	    s[1] != '.')
		return false;
	s += 2;
	for (int i = 0; i < 2; i++) {
		n = strspn(s, "0123456789");
		if (n < 1 || n > 3)
			return false;
		s += n;
		if (i == 0 && *s++ != '.')
			return false;
	}
	return *s == '\0';
}

/* The status of an action whose own status is missing or malformed. */
static const char *
status_default(enum expiry_action a)
{
	switch (a) {
	case EXPIRY_ACT_DELAYED:
		return "4.0.0";
	case EXPIRY_ACT_FAILED:
		return "5.0.0";
	default:
		return "2.0.0";
	}
}

/* Returns the length of the line starting at P (with its line end) and
 * sets *eol to the length of the line end (0, 1 or 2). */
static size_t
line_len(const char *p, size_t left, size_t *eol)
{
	size_t i;

	for (i = 0; i < left; i++) {
		if (p[i] == '\n') {
			*eol = 1;
			return i + 1;
		}
		if (p[i] == '\r') {
			*eol = (i + 1 < left && p[i + 1] == '\n') ? 2 : 1;
			return i + *eol;
		}
	}
	*eol = 0;
	return left;
}

/* Returns the length of the header section; see expiry.h. */
size_t
expiry_msg_header_len(const char *msg, size_t len)
{
	size_t off = 0;

	while (off < len) {
		size_t eol, n = line_len(msg + off, len - off, &eol);

		off += n;
		if (n == eol && eol > 0)
			return off; /* the empty line */
	}
	return len;
}

/* Finds a header's value; see expiry.h. */
bool
expiry_msg_header_get(
    const char *msg, size_t len, const char *name, char *buf, size_t buflen)
{
	size_t hlen = expiry_msg_header_len(msg, len), nlen = strlen(name);
	size_t off = 0;

	if (buflen == 0)
		return false;
	while (off < hlen) {
		size_t eol, n = line_len(msg + off, hlen - off, &eol);
		size_t o = 0, vstart;
		bool blank = true;

		if (n - eol <= nlen || msg[off + nlen] != ':' ||
		    strncasecmp(msg + off, name, nlen) != 0) {
			off += n;
			continue;
		}
		/* The value: this line after the colon, then every
		 * continuation line, unfolded. */
		vstart = off + nlen + 1;
		off += n;
		while (off < hlen && (msg[off] == ' ' || msg[off] == '\t')) {
			off += line_len(msg + off, hlen - off, &eol);
		}
		for (size_t i = vstart; i < off && o + 1 < buflen; i++) {
			unsigned char ch = (unsigned char)msg[i];

			if (ch < 0x20 || ch == 0x7f)
				ch = ' ';
			if (ch == ' ' && blank)
				continue;
			blank = ch == ' ';
			buf[o++] = (char)ch;
		}
		while (o > 0 && buf[o - 1] == ' ')
			o--;
		buf[o] = '\0';
		return true;
	}
	return false;
}

/* True for Precedence: bulk, junk or list; see expiry.h. */
bool
expiry_msg_is_bulk(const char *msg, size_t len)
{
	static const char *const bulk[] = { "bulk", "junk", "list" };
	char v[64];
	size_t n;

	if (!expiry_msg_header_get(msg, len, "Precedence", v, sizeof(v)))
		return false;
	n = strcspn(v, " ;(");
	for (size_t i = 0; i < 3; i++) {
		if (n == strlen(bulk[i]) && strncasecmp(v, bulk[i], n) == 0)
			return true;
	}
	return false;
}

/*
 * Appends at most LIMIT bytes of the original's first LEN bytes, whole
 * lines only, each ending in CRLF; returns true when something was left
 * out.  HEADERS_ONLY stops at (and leaves out) the empty line.
 */
static bool
orig_add(struct rq_buf *b, const char *msg, size_t len, size_t limit,
    bool headers_only)
{
	size_t off = 0, out = 0;

	while (off < len) {
		size_t eol, n = line_len(msg + off, len - off, &eol);
		size_t body = n - eol;

		if (headers_only && body == 0)
			return false;
		if (out + body + 2 > limit)
			return true;
		rq_buf_add(b, msg + off, body);
		rq_buf_str(b, "\r\n");
		out += body + 2;
		off += n;
	}
	return false;
}

/* True when the original has a byte with the high bit set. */
static bool
has_8bit(const char *msg, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if ((unsigned char)msg[i] >= 0x80)
			return true;
	}
	return false;
}

/* True when LINE appears at the start of a line of MSG. */
static bool
line_occurs(const char *msg, size_t len, const char *line)
{
	size_t n = strlen(line);

	for (size_t off = 0; off + n <= len;) {
		if (memcmp(msg + off, line, n) == 0)
			return true;
		{
			const char *nl = memchr(msg + off, '\n', len - off);

			if (nl == NULL)
				break;
			off = (size_t)(nl - msg) + 1;
		}
	}
	return false;
}

/* Per-event wording, as Postfix's bounce templates. */
struct dsn_words {
	const char *subject;
	const char *orig_desc; /* Content-Description of the original */
};

static const struct dsn_words words[] = {
	[EXPIRY_EV_DELAYED] = { "Delayed Mail (still being retried)",
	    "Delayed Message" },
	[EXPIRY_EV_FAILED] = { "Undelivered Mail Returned to Sender",
	    "Undelivered Message" },
	[EXPIRY_EV_DELIVERED] = { "Successful Mail Delivery Report",
	    "Delivered Message" },
	[EXPIRY_EV_RELAYED] = { "Successful Mail Delivery Report",
	    "Delivered Message" },
};

/* Appends the human-readable part's text. */
static void
text_add(struct rq_buf *b, const struct expiry_dsn *d, const char *host)
{
	char dur[64], until[64];

	rq_buf_printf(b, "This is the mail system at host %s.\r\n\r\n", host);
	switch (d->event) {
	case EXPIRY_EV_DELAYED:
		duration_format(dur, sizeof(dur), d->now - d->arrival);
		duration_format(
		    until, sizeof(until), d->rcpts[0].retry_until - d->arrival);
		rq_buf_str(b,
		    "####################################################"
		    "################\r\n"
		    "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND "
		    "YOUR MESSAGE. #\r\n"
		    "####################################################"
		    "################\r\n\r\n");
		rq_buf_printf(b,
		    "Your message could not be delivered for %s.\r\n"
		    "It will be retried until it is %s old.\r\n",
		    dur, until);
		break;
	case EXPIRY_EV_FAILED:
		rq_buf_str(b,
		    "I'm sorry to have to inform you that your message "
		    "could not\r\n"
		    "be delivered to one or more recipients. It's attached "
		    "below.\r\n");
		break;
	case EXPIRY_EV_DELIVERED:
	case EXPIRY_EV_RELAYED:
		rq_buf_str(b,
		    "Your message was successfully delivered to the "
		    "destination(s)\r\n"
		    "listed below. If the message was delivered to mailbox "
		    "you will\r\n"
		    "receive no further notifications. Otherwise you may "
		    "still receive\r\n"
		    "notifications of mail delivery errors from other "
		    "systems.\r\n");
		break;
	}
	if (d->event == EXPIRY_EV_DELAYED || d->event == EXPIRY_EV_FAILED)
		rq_buf_str(b,
		    "\r\nFor further assistance, please send mail to "
		    "postmaster.\r\n\r\n"
		    "If you do so, please include this problem report. You "
		    "can\r\n"
		    "delete your own text from the attached returned "
		    "message.\r\n");
	rq_buf_str(b, "\r\n                   The mail system\r\n");
	for (size_t i = 0; i < d->nrcpts; i++) {
		const struct expiry_dsn_rcpt *r = &d->rcpts[i];
		char addr[ADDR_MAX], why[DIAG_MAX], mta[256];
		struct rq_buf line = { 0 };

		text_clean(addr, sizeof(addr), r->addr, false);
		text_clean(
		    why, sizeof(why), r->reason ? r->reason : r->diag, false);
		text_clean(mta, sizeof(mta), r->remote_mta, false);
		rq_buf_str(b, "\r\n");
		rq_buf_printf(&line, "<%s>: ", addr);
		if (r->action == EXPIRY_ACT_DELIVERED ||
		    r->action == EXPIRY_ACT_RELAYED) {
			if (mta[0] != '\0')
				rq_buf_printf(&line, "delivery via %s: ", mta);
			rq_buf_str(&line, why[0] != '\0' ? why : "delivered");
		} else if (why[0] != '\0') {
			rq_buf_str(&line, why);
		} else if (r->action == EXPIRY_ACT_DELAYED) {
			rq_buf_str(&line, "delivery temporarily suspended");
		} else {
			rq_buf_str(&line, "undeliverable");
		}
		para_add(b, line.p);
		free(line.p);
	}
}

/* Appends the message/delivery-status part's body. */
static void
status_add(struct rq_buf *b, const struct expiry_dsn *d, const char *host)
{
	char buf[DIAG_MAX + 32], tmp[DIAG_MAX], date[64];

	if (d->envid != NULL && d->envid[0] != '\0') {
		text_clean(tmp, 101, d->envid, true);
		field_add(b, "Original-Envelope-Id", tmp);
	}
	snprintf(buf, sizeof(buf), "dns; %s", host);
	field_add(b, "Reporting-MTA", buf);
	if (d->queue_id != NULL) {
		text_clean(tmp, 64, d->queue_id, false);
		field_add(b, "X-relayq-Queue-ID", tmp);
	}
	text_clean(tmp, ADDR_MAX, d->sender, false);
	snprintf(buf, sizeof(buf), "rfc822; %s", tmp);
	field_add(b, "X-relayq-Sender", buf);
	if (d->arrival > 0) {
		date_format(date, sizeof(date), d->arrival);
		field_add(b, "Arrival-Date", date);
	}
	for (size_t i = 0; i < d->nrcpts; i++) {
		const struct expiry_dsn_rcpt *r = &d->rcpts[i];

		rq_buf_str(b, "\r\n");
		if (r->orcpt != NULL && r->orcpt[0] != '\0') {
			const char *semi = strchr(r->orcpt, ';');

			text_clean(
			    tmp, ADDR_MAX, semi ? semi + 1 : r->orcpt, true);
			if (semi != NULL && semi - r->orcpt < 32) {
				char type[32];

				memcpy(
				    type, r->orcpt, (size_t)(semi - r->orcpt));
				type[semi - r->orcpt] = '\0';
				text_clean(type, sizeof(type), type, false);
				snprintf(buf, sizeof(buf), "%s;%s",
				    type[0] ? type : "rfc822", tmp);
			} else {
				snprintf(buf, sizeof(buf), "rfc822;%s", tmp);
			}
			field_add(b, "Original-Recipient", buf);
		}
		text_clean(tmp, ADDR_MAX, r->addr, false);
		snprintf(buf, sizeof(buf), "rfc822; %s", tmp);
		field_add(b, "Final-Recipient", buf);
		field_add(b, "Action", action_name(r->action));
		field_add(b, "Status",
		    status_valid(r->status) ? r->status
					    : status_default(r->action));
		if (r->remote_mta != NULL && r->remote_mta[0] != '\0') {
			text_clean(tmp, 256, r->remote_mta, false);
			/* "mx.example.org[192.0.2.1]:25" -> the name */
			tmp[strcspn(tmp, "[ ")] = '\0';
			if (tmp[0] != '\0') {
				snprintf(buf, sizeof(buf), "dns; %s", tmp);
				field_add(b, "Remote-MTA", buf);
			}
		}
		if (r->diag != NULL && r->diag[0] != '\0') {
			text_clean(tmp, sizeof(tmp), r->diag, false);
			if (tmp[0] != '\0') {
				/* An SMTP reply, or relayq's own words
				 * ("connect to ...: Connection refused"). */
				bool smtp = isdigit((unsigned char)tmp[0]) &&
				    isdigit((unsigned char)tmp[1]) &&
				    isdigit((unsigned char)tmp[2]) &&
				    (tmp[3] == ' ' || tmp[3] == '\0');

				snprintf(buf, sizeof(buf), "%s; %s",
				    smtp ? "smtp" : "X-relayq", tmp);
				field_add(b, "Diagnostic-Code", buf);
			}
		}
		if (r->last_attempt > 0) {
			date_format(date, sizeof(date), r->last_attempt);
			field_add(b, "Last-Attempt-Date", date);
		}
		if (r->action == EXPIRY_ACT_DELAYED && r->retry_until > 0) {
			date_format(date, sizeof(date), r->retry_until);
			field_add(b, "Will-Retry-Until", date);
		}
	}
}

/* Fills TOKEN (17 bytes) with 16 hex digits: random, or a hash of the
 * caller's boundary so that output stays deterministic. */
static void
token_make(char *token, const char *boundary)
{
	uint64_t h = 1469598103934665603ULL;

	if (boundary != NULL) {
		for (const char *p = boundary; *p; p++)
			h = (h ^ (unsigned char)*p) * 1099511628211ULL;
	} else if (getrandom(&h, sizeof(h), 0) != sizeof(h)) {
		h ^= (uint64_t)rq_now_us();
	}
	snprintf(token, 17, "%016" PRIx64, h);
}

/* Builds a notice; see expiry.h. */
char *
expiry_dsn_build(const struct expiry_dsn *d, size_t *lenp)
{
	struct rq_buf b = { 0 };
	char host[256], origin[256], sender[ADDR_MAX], date[64], qid[64];
	char token[17];
	char bnd[128], stamp[32];
	const struct dsn_words *w = &words[d->event];
	size_t hlen = expiry_msg_header_len(d->msg, d->msglen);
	size_t inc = d->ret_full ? d->msglen : hlen;
	bool eight = has_8bit(d->msg, inc);
	struct tm tm;
	time_t tt = (time_t)d->now;

	text_clean(host, sizeof(host), d->hostname, false);
	text_clean(origin, sizeof(origin),
	    d->origin != NULL ? d->origin : d->hostname, false);
	text_clean(sender, sizeof(sender), d->sender, false);
	text_clean(qid, sizeof(qid), d->queue_id ? d->queue_id : "", false);
	for (char *p = qid; *p; p++) {
		if (!isalnum((unsigned char)*p))
			*p = '_';
	}
	token_make(token, d->boundary);
	if (d->boundary != NULL) {
		snprintf(bnd, sizeof(bnd), "%s", d->boundary);
	} else {
		/* Random; made again in the unlikely case that the original
		 * holds a line that starts with it. */
		for (;;) {
			char line[140];

			snprintf(bnd, sizeof(bnd), "%" PRId64 "/%s/%s", d->now,
			    qid[0] ? qid : "x", token);
			snprintf(line, sizeof(line), "--%s", bnd);
			if (!line_occurs(d->msg, inc, line))
				break;
			token_make(token, NULL);
		}
	}
	if (gmtime_r(&tt, &tm) == NULL)
		memset(&tm, 0, sizeof(tm));
	strftime(stamp, sizeof(stamp), "%Y%m%d%H%M%S", &tm);
	date_format(date, sizeof(date), d->now);

	/* The header. */
	rq_buf_printf(
	    &b, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", origin);
	rq_buf_printf(&b, "To: <%s>\r\n", sender);
	rq_buf_printf(&b, "Subject: %s\r\n", w->subject);
	rq_buf_printf(&b, "Date: %s\r\n", date);
	rq_buf_printf(&b, "Message-ID: <%s.%s.%.8s@%s>\r\n", stamp,
	    qid[0] ? qid : "x", token, host);
	rq_buf_str(&b, "Auto-Submitted: auto-replied\r\n");
	rq_buf_str(&b, "MIME-Version: 1.0\r\n");
	rq_buf_printf(&b,
	    "Content-Type: multipart/report; report-type=delivery-status;\r\n"
	    "\tboundary=\"%s\"\r\n",
	    bnd);
	if (eight)
		rq_buf_str(&b, "Content-Transfer-Encoding: 8bit\r\n");
	rq_buf_str(&b, "\r\nThis is a MIME-encapsulated message.\r\n\r\n");

	/* 1: the human-readable notification. */
	rq_buf_printf(&b,
	    "--%s\r\nContent-Description: Notification\r\n"
	    "Content-Type: text/plain; charset=us-ascii\r\n\r\n",
	    bnd);
	text_add(&b, d, host);

	/* 2: the delivery status. */
	rq_buf_printf(&b,
	    "\r\n--%s\r\nContent-Description: Delivery report\r\n"
	    "Content-Type: message/delivery-status\r\n\r\n",
	    bnd);
	status_add(&b, d, host);

	/* 3: the original, or its header. */
	rq_buf_printf(&b, "\r\n--%s\r\n", bnd);
	if (d->ret_full) {
		rq_buf_printf(&b,
		    "Content-Description: %s\r\n"
		    "Content-Type: message/rfc822\r\n",
		    w->orig_desc);
	} else {
		rq_buf_printf(&b,
		    "Content-Description: %s (Headers)\r\n"
		    "Content-Type: text/rfc822-headers\r\n",
		    w->orig_desc);
	}
	if (eight)
		rq_buf_str(&b, "Content-Transfer-Encoding: 8bit\r\n");
	rq_buf_str(&b, "\r\n");
	orig_add(&b, d->msg, inc, d->size_limit, !d->ret_full);
	rq_buf_printf(&b, "\r\n--%s--\r\n", bnd);
	*lenp = b.len;
	return b.p;
}
