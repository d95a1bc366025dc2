/*
 * smtp_stats.c - what the client tells the daemon's metrics: its
 * connections (all, and those idle in the cache) and how many phase
 * deadlines passed, by phase.
 *
 * Public: smtp_client_stats_get().  Costs one look at each destination
 * bucket (SMTP_DEST_BUCKETS) and each destination with a connection.
 */
#include <string.h>

#include "smtp_int.h"

/* Fills ST from CLIENT; see smtp.h. */
void
smtp_client_stats_get(struct smtp_client *client, struct smtp_client_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->conns = client->nconn;
	for (size_t b = 0; b < SMTP_DEST_BUCKETS; b++)
		for (const struct smtp_dest *d = client->buckets[b]; d != NULL;
		     d = d->next)
			st->idle += d->nidle;
	memcpy(st->timeouts, client->timeouts, sizeof(st->timeouts));
}
