/*
 * fuzz_http.c - libFuzzer target for the HTTP listener's parsers of
 * untrusted text (http_parse.c): http_listen, the Authorization header
 * against a token, the Host header, the /api/queue query values; and
 * the writers that
 * put untrusted text into JSON, HTML and Prometheus labels.  Never reads
 * or writes out of bounds; a token is accepted only when the header
 * really carries it.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "http_int.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	char *s = xstrndup((const char *)data, size);
	struct evbuffer *b = evbuffer_new();
	struct http_addr a;
	const char *why;
	uint64_t id;
	size_t lim;
	int v;

	if (http_addr_parse(s, &a, &why) == 0 && (a.port == 0) != a.unix_path)
		abort();
	if (http_auth_ok(s, "tok") && strstr(s, "tok") == NULL &&
	    strncasecmp(s, "Basic ", 6) != 0)
		abort();
	/* a name with a dot or a colon in it is never "localhost" */
	if (http_host_ok(s, "h.test") && strcasestr(s, "localhost") == NULL &&
	    strcasestr(s, "h.test") == NULL && strpbrk(s, ".:") == NULL)
		abort();
	(void)http_query_class(s, &v);
	(void)http_query_state(s, &v);
	(void)http_query_limit(s, &lim);
	(void)http_query_after(s, &id);
	http_json_str(b, s);
	http_html_str(b, s);
	http_prom_label(b, s);
	evbuffer_free(b);
	free(s);
	return 0;
}
