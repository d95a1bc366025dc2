/*
 * fault_out.c - faultsmtp's event log: one JSON object per line,
 * {"t": UNIX-TIME, "conn": K, "event": NAME, "data": TEXT}, flushed per
 * line so a test can read it while the server runs.  K is the
 * connection number (1-based, accept order).  Events:
 *   connect  DATA = the peer, "127.0.0.1:PORT" or "[::1]:PORT"
 *   cmd      a command line as received, without CRLF (at most 1000
 *            bytes); the final dot of a message is "."
 *   pipelined  after a "." cmd: DATA = the bytes that had come with the
 *            dot, before its reply was sent (at most 1000): the client
 *            pipelined its next commands behind the message
 *   reply    bytes as sent (at most 1000; a partial reply is two events,
 *            a trickled one is logged when it starts)
 *   data     "start": the first data bytes of a message arrived
 *   tls      "handshake started", "handshake ok PROTOCOL CIPHER",
 *            "tls error: ...", "discarded N plaintext bytes ..."
 *   close    why: "client closed", "drop", "quit", "421", "idle timeout",
 *            "badtls", "shutdown", "error: ..."
 *
 * Public: fault_event(), fault_json_escape().
 *
 * Invariant: every byte of DATA is representable: printable ASCII as is,
 * everything else as \u00XX, so json.loads() gives a str whose
 * .encode("latin-1") is the original bytes.
 */
#include <string.h>

#include "cfg.h"
#include "faultsmtp.h"

/* Writes bytes as the inside of a JSON string (see the invariant above). */
void
fault_json_escape(FILE *f, const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c >= 0x20 && c < 0x7f)
			fputc(c, f);
		else
			fprintf(f, "\\u%04x", c);
	}
}

/* Appends one event line and flushes it. */
void
fault_event(struct fault_server *srv, unsigned conn, const char *event,
    const char *data, size_t len)
{
	int64_t us = rq_now_us();

	if (srv->events == NULL)
		return;
	fprintf(srv->events,
	    "{\"t\": %lld.%06lld, \"conn\": %u, \"event\": \"%s\", \"data\": "
	    "\"",
	    (long long)(us / 1000000), (long long)(us % 1000000), conn, event);
	if (data != NULL)
		fault_json_escape(srv->events, data, len);
	fputs("\"}\n", srv->events);
	fflush(srv->events);
}
