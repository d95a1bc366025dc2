/*
 * queue_rec.c - the queue's keys and records in one place (as OpenSMTPD's
 * envelope.c): every record's layout, its version byte, its encoder, and
 * its decoder, which validates it.  Nothing here touches LMDB.
 *
 * Public (to queue/, queue_int.h): qkey_id(), qkey_rcpt(), qkey_hist(),
 * qkey_sched(), qkey_expiry(), qkey_domain(); qbuf_put(), qbuf_u8(),
 * qbuf_u32(), qbuf_u64(), qbuf_str(); qrec_msg_encode(),
 * qrec_msg_decode(), qrec_rcpt_encode(), qrec_rcpt_decode(),
 * qrec_rcpt_peek(), qrec_hist_encode(), qrec_hist_decode(),
 * qrec_body_encode(), qrec_body_decode(), qrec_thread_done().
 *
 * Keys (integers big-endian, so memcmp order is numeric order):
 *   msg, body, lease  id(8)
 *   rcpt              id(8) idx(4)
 *   hist              id(8) idx(4) attempt(4)
 *   sched             class(1) due(8) id(8)
 *   expiry            when(8) id(8) kind(1)
 *   ident             dev(8) ino(8) size(8) mtime_ns(8) name
 *                     (intake_ident_key(), queue_intake_unlink.c)
 *   counts            'M' class, 'B' class, 'R' class state, 'H',
 *                     'D' arrival minute(8) domain (enum qcount)
 *   corrupt           db name, NUL, the original key
 * Records, each starting with its version byte QREC_VERSION; a string is
 * length(4), bytes, NUL (length 0xffffffff: none):
 *   msg   version, class, ret, 0, flags(4), uid(4), nrcpt(4),
 *         arrival(8), size(8), due(8), warn_at(8), return_at(8),
 *         sender, envid
 *   rcpt  version, state, notify, flags, attempts(4), next_attempt(8),
 *         last_attempt(8), dsn_status(16, NUL-padded), addr, orcpt,
 *         reply; the first 24 bytes are its fixed head (qrec_rcpt_peek)
 *   hist  version, state, 0, 0, time(8), dsn_status(16), reply
 *   body  version, method (0 stored, 1 zlib), raw length(8), crc32 of
 *         the raw message(4), data
 *
 * Invariants: a decoder accepts a record only if its version byte is
 * QREC_VERSION, every length fits, the record ends where its last field
 * ends, its strings hold no NUL, its enums are in range, a message has
 * 1 to 1,000,000 recipients (QP_RCPT_MAX), times are not negative, and
 * a body's crc32 matches what it inflates to.  A decoded "view" points
 * its strings into the record, valid as long as the record is.
 */
#include <stdlib.h>
#include <string.h>
#include <libdeflate.h>

#include "queue_int.h"

/* ---- keys ---- */

void
qkey_id(uint8_t k[8], uint64_t id)
{
	qbe64_put(k, id);
}

void
qkey_rcpt(uint8_t k[12], uint64_t id, uint32_t idx)
{
	qbe64_put(k, id);
	qbe32_put(k + 8, idx);
}

void
qkey_hist(uint8_t k[16], uint64_t id, uint32_t idx, uint32_t attempt)
{
	qbe64_put(k, id);
	qbe32_put(k + 8, idx);
	qbe32_put(k + 12, attempt);
}

void
qkey_sched(uint8_t k[17], int cls, int64_t due, uint64_t id)
{
	k[0] = (uint8_t)cls;
	qbe64_put(k + 1, (uint64_t)due);
	qbe64_put(k + 9, id);
}

void
qkey_expiry(uint8_t k[17], int64_t when, uint64_t id, int kind)
{
	qbe64_put(k, (uint64_t)when);
	qbe64_put(k + 8, id);
	k[16] = (uint8_t)kind;
}

/* The lower-cased domain of ADDR into buf. */
static void
addr_domain(const char *addr, char *buf, size_t len)
{
	const char *at = strrchr(addr, '@');
	size_t i = 0;

	at = at ? at + 1 : "";
	for (; at[i] != '\0' && i + 1 < len; i++) {
		char c = at[i];

		buf[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
	}
	buf[i] = '\0';
}

size_t
qkey_domain(uint8_t k[QKEY_DOMAIN_MAX], int64_t arrival, const char *addr)
{
	char dom[256];
	size_t dn;

	addr_domain(addr, dom, sizeof(dom));
	dn = strlen(dom);
	k[0] = QCOUNT_DOMAIN;
	qbe64_put(k + 1, (uint64_t)(arrival / 60));
	memcpy(k + 9, dom, dn);
	return 9 + dn;
}

/* ---- writing records ---- */

void
qbuf_put(struct qbuf *b, const void *p, size_t n)
{
	if (n == 0)
		return;
	if (b->n + n > b->cap) {
		while (b->n + n > b->cap)
			b->cap = b->cap ? b->cap * 2 : 256;
		b->p = xrealloc(b->p, b->cap);
	}
	memcpy(b->p + b->n, p, n);
	b->n += n;
}

void
qbuf_u8(struct qbuf *b, uint8_t v)
{
	qbuf_put(b, &v, 1);
}

void
qbuf_u32(struct qbuf *b, uint32_t v)
{
	uint8_t k[4];

	qbe32_put(k, v);
	qbuf_put(b, k, 4);
}

void
qbuf_u64(struct qbuf *b, uint64_t v)
{
	uint8_t k[8];

	qbe64_put(k, v);
	qbuf_put(b, k, 8);
}

void
qbuf_str(struct qbuf *b, const char *s)
{
	if (s == NULL) {
		qbuf_u32(b, 0xffffffffu);
		return;
	}
	qbuf_u32(b, (uint32_t)strlen(s));
	qbuf_put(b, s, strlen(s) + 1);
}

/* A dsn status ("4.4.1"): 16 bytes, NUL-padded. */
static void
qbuf_status(struct qbuf *b, const char *s)
{
	char ds[16];

	memset(ds, 0, sizeof(ds));
	memcpy(ds, s, strnlen(s, sizeof(ds) - 1));
	qbuf_put(b, ds, sizeof(ds));
}

/* ---- reading records ---- */

/* A bounds-checked reader over a record. */
struct qrd {
	const uint8_t *p;
	size_t n, off;
	bool bad;
};

static const uint8_t *
rd_take(struct qrd *r, size_t n)
{
	const uint8_t *p;

	if (r->bad || r->n - r->off < n) {
		r->bad = true;
		return NULL;
	}
	p = r->p + r->off;
	r->off += n;
	return p;
}

static uint8_t
rd_u8(struct qrd *r)
{
	const uint8_t *p = rd_take(r, 1);

	return p ? p[0] : 0;
}

static uint32_t
rd_u32(struct qrd *r)
{
	const uint8_t *p = rd_take(r, 4);

	return p ? qbe32_get(p) : 0;
}

static uint64_t
rd_u64(struct qrd *r)
{
	const uint8_t *p = rd_take(r, 8);

	return p ? qbe64_get(p) : 0;
}

/* Reads a string written by qbuf_str (NULL allowed when nullable). */
static char *
rd_str(struct qrd *r, bool nullable)
{
	uint32_t n = rd_u32(r);
	const uint8_t *p;

	if (r->bad)
		return NULL;
	if (n == 0xffffffffu) {
		if (!nullable)
			r->bad = true;
		return NULL;
	}
	p = rd_take(r, (size_t)n + 1);
	if (p == NULL || p[n] != '\0' || memchr(p, '\0', n) != NULL) {
		r->bad = true;
		return NULL;
	}
	return (char *)p;
}

/* Reads a dsn status written by qbuf_status() into OUT (NUL-ended). */
static void
rd_status(struct qrd *r, char out[16])
{
	const uint8_t *p = rd_take(r, 16);

	if (p == NULL || p[15] != '\0') {
		r->bad = true;
		return;
	}
	memcpy(out, p, 16);
}

/* ---- msg ---- */

void
qrec_msg_encode(struct qbuf *b, const struct queue_msg *m)
{
	b->n = 0;
	qbuf_u8(b, QREC_VERSION);
	qbuf_u8(b, (uint8_t)m->cls);
	qbuf_u8(b, (uint8_t)m->ret);
	qbuf_u8(b, 0);
	qbuf_u32(b, m->flags);
	qbuf_u32(b, m->uid);
	qbuf_u32(b, (uint32_t)m->nrcpt);
	qbuf_u64(b, (uint64_t)m->arrival);
	qbuf_u64(b, m->size);
	qbuf_u64(b, (uint64_t)m->due);
	qbuf_u64(b, (uint64_t)m->warn_at);
	qbuf_u64(b, (uint64_t)m->return_at);
	qbuf_str(b, m->sender);
	qbuf_str(b, m->envid);
}

bool
qrec_msg_decode(const void *p, size_t n, struct queue_msg *m)
{
	struct qrd r = { p, n, 0, false };

	memset(m, 0, sizeof(*m));
	if (rd_u8(&r) != QREC_VERSION)
		return false;
	m->cls = (enum cfg_class)rd_u8(&r);
	m->ret = rd_u8(&r);
	(void)rd_u8(&r);
	m->flags = rd_u32(&r);
	m->uid = rd_u32(&r);
	m->nrcpt = rd_u32(&r);
	m->arrival = (int64_t)rd_u64(&r);
	m->size = rd_u64(&r);
	m->due = (int64_t)rd_u64(&r);
	m->warn_at = (int64_t)rd_u64(&r);
	m->return_at = (int64_t)rd_u64(&r);
	m->sender = rd_str(&r, false);
	m->envid = rd_str(&r, true);
	if (r.bad || r.off != n)
		return false;
	if ((unsigned)m->cls >= CFG_NCLASS || m->ret > QRET_HDRS ||
	    m->nrcpt == 0 || m->nrcpt > 1000000 || m->arrival <= 0 ||
	    m->due < 0)
		return false;
	return true;
}

/* ---- rcpt ---- */

void
qrec_rcpt_encode(struct qbuf *b, const struct queue_rcpt *rc)
{
	b->n = 0;
	qbuf_u8(b, QREC_VERSION);
	qbuf_u8(b, (uint8_t)rc->state);
	qbuf_u8(b, (uint8_t)rc->notify);
	qbuf_u8(b, (uint8_t)rc->flags);
	qbuf_u32(b, rc->attempts);
	qbuf_u64(b, (uint64_t)rc->next_attempt);
	qbuf_u64(b, (uint64_t)rc->last_attempt);
	qbuf_status(b, rc->dsn_status);
	qbuf_str(b, rc->addr);
	qbuf_str(b, rc->orcpt);
	qbuf_str(b, rc->reply);
}

bool
qrec_rcpt_decode(const void *p, size_t n, struct queue_rcpt *rc)
{
	struct qrd r = { p, n, 0, false };

	memset(rc, 0, sizeof(*rc));
	if (rd_u8(&r) != QREC_VERSION)
		return false;
	rc->state = (enum queue_rcpt_state)rd_u8(&r);
	rc->notify = rd_u8(&r);
	rc->flags = rd_u8(&r);
	rc->attempts = rd_u32(&r);
	rc->next_attempt = (int64_t)rd_u64(&r);
	rc->last_attempt = (int64_t)rd_u64(&r);
	rd_status(&r, rc->dsn_status);
	rc->addr = rd_str(&r, false);
	rc->orcpt = rd_str(&r, true);
	rc->reply = rd_str(&r, true);
	if (r.bad || r.off != n)
		return false;
	if ((unsigned)rc->state >= QUEUE_NSTATE || rc->addr[0] == '\0')
		return false;
	return true;
}

bool
qrec_rcpt_peek(const void *p, size_t n, struct queue_rcpt *rc)
{
	const uint8_t *b = p;

	memset(rc, 0, sizeof(*rc));
	/* the head, the dsn status and three string lengths at least */
	if (n < 24 + 16 + 3 * 4 || b[0] != QREC_VERSION || b[1] >= QUEUE_NSTATE)
		return false;
	rc->state = (enum queue_rcpt_state)b[1];
	rc->notify = b[2];
	rc->flags = b[QREC_RCPT_FLAGS];
	rc->attempts = qbe32_get(b + 4);
	rc->next_attempt = (int64_t)qbe64_get(b + QREC_RCPT_NEXT);
	rc->last_attempt = (int64_t)qbe64_get(b + 16);
	return true;
}

/* ---- hist ---- */

void
qrec_hist_encode(struct qbuf *b, const struct queue_attempt *a)
{
	b->n = 0;
	qbuf_u8(b, QREC_VERSION);
	qbuf_u8(b, (uint8_t)a->state);
	qbuf_u8(b, 0);
	qbuf_u8(b, 0);
	qbuf_u64(b, (uint64_t)a->time);
	qbuf_status(b, a->dsn_status);
	qbuf_str(b, a->reply);
}

bool
qrec_hist_decode(const void *p, size_t n, struct queue_attempt *a)
{
	struct qrd r = { p, n, 0, false };
	uint8_t pad1, pad2;

	memset(a, 0, sizeof(*a));
	if (rd_u8(&r) != QREC_VERSION)
		return false;
	a->state = (enum queue_rcpt_state)rd_u8(&r);
	pad1 = rd_u8(&r);
	pad2 = rd_u8(&r);
	a->time = (int64_t)rd_u64(&r);
	rd_status(&r, a->dsn_status);
	a->reply = rd_str(&r, true);
	if (r.bad || r.off != n)
		return false;
	if ((unsigned)a->state >= QUEUE_NSTATE || pad1 != 0 || pad2 != 0 ||
	    a->time < 0)
		return false;
	return true;
}

/* ---- body ---- */

/*
 * qrec_body_encode()'s compressors, per thread and per level, and
 * qrec_body_decode()'s decompressor, per thread.  Bodies are zlib streams
 * (RFC 1950) written by libdeflate, which takes 40% less CPU than zlib's
 * deflate at the same level (4 KiB messages, level 1: 18 us against 30 us
 * here), and read by libdeflate too: every delivery decodes its body.
 */
static __thread struct libdeflate_compressor *zc[13];
static __thread struct libdeflate_decompressor *zd;

void
qrec_thread_done(void)
{
	for (size_t i = 0; i < sizeof(zc) / sizeof(zc[0]); i++) {
		libdeflate_free_compressor(zc[i]);
		zc[i] = NULL;
	}
	libdeflate_free_decompressor(zd);
	zd = NULL;
}

void
qrec_body_encode(struct qbuf *b, const char *body, size_t len, int level)
{
	size_t bound, n;

	if (level < 1 || level > 12)
		level = 6;
	if (zc[level] == NULL &&
	    (zc[level] = libdeflate_alloc_compressor(level)) == NULL)
		abort();
	bound = libdeflate_zlib_compress_bound(zc[level], len);
	if (b->cap < 14 + bound) {
		/* an eighth more, in 256-byte steps: intake reuses record
		 * buffers (RECPOOL), and a buffer that fit one message fits
		 * the next of about its size, instead of being grown by a few
		 * bytes each time */
		b->cap = (14 + bound + (14 + bound) / 8 + 255) & ~(size_t)255;
		free(b->p);
		b->p = xmalloc(b->cap);
	}
	b->n = 0;
	qbuf_u8(b, QREC_VERSION);
	qbuf_u8(b, 1);
	qbuf_u64(b, len);
	qbuf_u32(b, libdeflate_crc32(0, body, len)); /* = zlib crc32() */
	n = libdeflate_zlib_compress(zc[level], body, len, b->p + 14, bound);
	if (n == 0)
		abort(); /* cannot be: the buffer is the bound */
	b->n = 14 + n;
}

/*
 * Inflates the zlib stream Z of N bytes into exactly RAW bytes at OUT;
 * false unless the header is plain deflate (no preset dictionary), the
 * deflate data is valid, gives RAW bytes, and is followed by exactly the
 * 4-byte trailer.  The trailer's adler32 is not checked: the record's
 * crc32 of the same bytes, checked by the caller, is the stronger check.
 */
static bool
body_inflate(const uint8_t *z, size_t n, char *out, size_t raw)
{
	size_t in_used = 0, out_got = 0;

	if (n < 2 + 4 || (z[0] & 0x0f) != 8 || (z[0] >> 4) > 7 ||
	    (z[1] & 0x20) != 0 || ((unsigned)z[0] << 8 | z[1]) % 31 != 0)
		return false;
	if (zd == NULL && (zd = libdeflate_alloc_decompressor()) == NULL)
		abort();
	return libdeflate_deflate_decompress_ex(zd, z + 2, n - 6, out, raw,
		   &in_used, &out_got) == LIBDEFLATE_SUCCESS &&
	    in_used == n - 6 && out_got == raw;
}

/* Inflates and checks body record REC of N bytes of message ID into a
 * malloc'd buffer (one decode, one checksum: the record's crc32);
 * QUEUE_CORRUPT (logged) when it is invalid. */
enum queue_result
qrec_body_decode(
    uint64_t id, const void *rec, size_t n, char **buf, size_t *len)
{
	const uint8_t *p = rec;
	uint64_t raw;
	char idstr[17];
	char *out;

	if (n < 14 || p[0] != QREC_VERSION || p[1] > 1)
		goto bad;
	raw = qbe64_get(p + 2);
	if (raw > ((uint64_t)1 << 34))
		goto bad;
	out = malloc((size_t)raw + 1);
	if (out == NULL)
		return QUEUE_ERR;
	if (p[1] == 0) {
		if (n - 14 != raw) {
			free(out);
			goto bad;
		}
		memcpy(out, p + 14, (size_t)raw);
	} else if (!body_inflate(p + 14, n - 14, out, (size_t)raw)) {
		free(out);
		goto bad;
	}
	if (libdeflate_crc32(0, out, (size_t)raw) != qbe32_get(p + 10)) {
		free(out);
		goto bad;
	}
	out[raw] = '\0';
	*buf = out;
	*len = (size_t)raw;
	return QUEUE_OK;
bad:
	queue_id_format(id, idstr);
	log_warn("qmgr", "%s: invalid body record", idstr);
	return QUEUE_CORRUPT;
}
