/*
 * cfg_dump.c - check-config's output: every effective setting, globally,
 * per priority class and per [domain] section, one `key = value` line each,
 * intervals in seconds, byte-sorted so that scripts can diff it; with
 * them the credentials (no secret) and the effective route of each
 * destination (cfg_route.c).
 *
 * Public: cfg_dump().
 */
#include <stdlib.h>
#include <string.h>

#include "cfg_int.h"

struct lines {
	char **v;
	size_t n, a;
};

static void __attribute__((format(printf, 2, 3)))
add(struct lines *l, const char *fmt, ...)
{
	va_list ap;
	char buf[1024];

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (l->n == l->a) {
		l->a = l->a ? l->a * 2 : 256;
		l->v = xrealloc(l->v, l->a * sizeof(*l->v));
	}
	l->v[l->n++] = xstrdup(buf);
}

/* Formats value V of key D for output. */
static void
fmt_val(const struct cfg_def *d, const struct cfg_val *v, char *buf, size_t len)
{

	switch (d->type) {
	case CT_STR:
	case CT_PATH:
	case CT_HOSTPORT:
		snprintf(buf, len, "%s", v->s ? v->s : "");
		break;
	case CT_INT:
	case CT_SIZE:
	case CT_TIME:
		snprintf(buf, len, "%lld", (long long)v->i);
		break;
	case CT_BOOL:
		snprintf(buf, len, "%s", v->i ? "yes" : "no");
		break;
	case CT_TLS:
		snprintf(buf, len, "%s", cfg_tls_name((enum cfg_tls)v->i));
		break;
	case CT_FACILITY:
		snprintf(buf, len, "%s", log_facility_name((int)v->i));
		break;
	case CT_RATE: {
		uint32_t n = (uint32_t)(v->i >> 32), per = (uint32_t)v->i;

		if (n == 0)
			buf[0] = '\0';
		else
			snprintf(buf, len, "%u/%us", n, per);
		break;
	}
	case CT_WEIGHTS:
		snprintf(buf, len, "urgent=%u normal=%u non-urgent=%u",
		    (unsigned)(v->i & 0xffff),
		    (unsigned)((v->i >> 16) & 0xffff),
		    (unsigned)((v->i >> 32) & 0xffff));
		break;
	}
}

/* Adds the lines of scope SC, each name prefixed with PFX. */
static void
dump_scope(struct lines *l, const struct cfg_scope *sc, const char *pfx)
{
	char val[600];

	for (int k = 0; k < CFG_NKEYS; k++) {
		const struct cfg_def *d = &cfg_defs[k];

		if (sc->name != NULL && !(d->flags & CF_DOMAIN))
			continue;
		if (!(d->flags & CF_CLASS)) {
			fmt_val(
			    d, &sc->eff[k][CFG_NORMAL][0], val, sizeof(val));
			add(l, "%s%s = %s", pfx, d->name, val);
			continue;
		}
		for (int c = 0; c < CFG_NCLASS; c++) {
			for (int f = 0; f < ((d->flags & CF_FIRST) ? 2 : 1);
			     f++) {
				fmt_val(d, &sc->eff[k][c][f], val, sizeof(val));
				add(l, "%s%s%s.%s = %s", pfx, d->name,
				    f ? ".first" : "", cfg_class_name(c), val);
			}
		}
	}
}

/* Adds one finished LINE (cfg_route_dump's callback). */
static void
add_line(void *arg, const char *line)
{
	add(arg, "%s", line);
}

static int
line_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Writes every effective setting, sorted; see cfg.h. */
void
cfg_dump(const struct cfg *cfg, FILE *fp)
{
	struct lines l = { NULL, 0, 0 };
	char pfx[300];

	dump_scope(&l, &cfg->global, "");
	for (size_t i = 0; i < cfg->ndomains; i++) {
		snprintf(
		    pfx, sizeof(pfx), "domain[%s].", cfg->domains[i]->name);
		dump_scope(&l, cfg->domains[i], pfx);
	}
	cfg_route_dump(cfg, add_line, &l);
	cfg_dkim_dump(cfg, add_line, &l);
	qsort(l.v, l.n, sizeof(*l.v), line_cmp);
	for (size_t i = 0; i < l.n; i++) {
		fprintf(fp, "%s\n", l.v[i]);
		free(l.v[i]);
	}
	free(l.v);
}
