/*
 * queue_env.c - the LMDB environment of the queue: opening it (queue_dir,
 * the named dbs, the schema), closing it, following a reload of the map
 * size, the room left in the map, and keeping the map's pages out of the
 * process's resident set.
 *
 * Public: queue_open(), queue_close(), queue_cfg_set(); (to queue/,
 * queue_int.h) queue_dbnames, queue_dir_create(), queue_room_get(),
 * queue_rss_trim().
 *
 * Invariants: queue_open() is called by the owner of queue_dir only (the
 * daemon after its switch, the commands after theirs), and refuses a
 * data.mdb or lock.mdb that is a link or another user's.  The map only
 * grows.  queue_room_get() keeps a reserve (a tenth of the map, at least 64
 * pages when the map allows) for deletes, delivery results and notices.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "queue_int.h"

#define RSS_FILE_MAX (16u << 20) /* file pages kept resident, at most */

const char *const queue_dbnames[QDB_N] = { "msg", "rcpt", "hist", "body",
	"sched", "expiry", "lease", "ident", "counts", "meta", "corrupt",
	"policy" };

/* Creates DIR's missing parents (0755) and DIR with MODE exactly (the
 * umask does not interfere): mkdir -p, for the queue and the spool. */
int
queue_dir_create(const char *dir, mode_t mode)
{
	char *p = xstrdup(dir);

	for (char *s = p + 1; *s != '\0'; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		(void)mkdir(p, 0755); /* a failure shows in the last mkdir */
		*s = '/';
	}
	free(p);
	if (mkdir(dir, mode) == 0)
		return chmod(dir, mode);
	return errno == EEXIST ? 0 : -1;
}

/*
 * Refuses data.mdb or lock.mdb when it is not a regular file of this
 * process's user with one link: LMDB opens them without O_NOFOLLOW, so a
 * link planted there would have it write through the link.  The caller
 * runs as the owner of queue_dir, which nobody else can write (checked
 * at start), so nothing changes between this check and LMDB's open.
 */
static bool
env_files_check(const char *dir, char *err, size_t errlen)
{
	static const char *const names[] = { "data.mdb", "lock.mdb" };
	char path[4096];
	struct stat st;

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		if (lstat(path, &st) != 0) {
			if (errno == ENOENT)
				continue;
			snprintf(err, errlen, "queue_dir %s: %s: %s", dir,
			    names[i], strerror(errno));
			return false;
		}
		if (!S_ISREG(st.st_mode) || st.st_nlink != 1) {
			snprintf(err, errlen,
			    "queue_dir %s: %s is not a regular file with one "
			    "link (a planted link?): refusing to open it",
			    dir, names[i]);
			return false;
		}
		if (st.st_uid != geteuid()) {
			snprintf(err, errlen,
			    "queue_dir %s: %s belongs to uid %u, not to uid "
			    "%u: refusing to open it",
			    dir, names[i], (unsigned)st.st_uid,
			    (unsigned)geteuid());
			return false;
		}
	}
	return true;
}

struct queue *
queue_open(const struct cfg *cfg, bool readonly, char *err, size_t errlen)
{
	const struct cfg_scope *sc = cfg_scope(cfg, NULL);
	const char *dir = cfg_str(sc, CFG_QUEUE_DIR);
	struct queue *q;
	MDB_txn *txn;
	int rc, dead;

	if (!readonly && queue_dir_create(dir, 0700) < 0) {
		snprintf(err, errlen, "queue_dir %s: %s", dir, strerror(errno));
		return NULL;
	}
	if (readonly && access(dir, F_OK) < 0) {
		snprintf(err, errlen, "queue_dir %s: %s", dir, strerror(errno));
		return NULL;
	}
	if (!env_files_check(dir, err, errlen))
		return NULL;
	q = xcalloc(1, sizeof(*q));
	q->cfg = cfg;
	q->readonly = readonly;
	q->dir = xstrdup(dir);
	q->wake_fd = -1;
	q->statm_fd = -2; /* not opened yet */
	if ((rc = mdb_env_create(&q->env)) != 0 ||
	    (rc = mdb_env_set_maxdbs(q->env, QDB_N + 2)) != 0 ||
	    (rc = mdb_env_set_mapsize(
		 q->env, (size_t)cfg_int(sc, CFG_QUEUE_MAP_SIZE))) != 0 ||
	    (rc = mdb_env_open(q->env, dir,
		 MDB_NOTLS | MDB_NORDAHEAD | (readonly ? MDB_RDONLY : 0),
		 0600)) != 0) {
		snprintf(
		    err, errlen, "queue_dir %s: %s", dir, mdb_strerror(rc));
		goto fail;
	}
	mdb_reader_check(q->env, &dead);
	rc = mdb_txn_begin(q->env, NULL, readonly ? MDB_RDONLY : 0, &txn);
	if (rc != 0) {
		snprintf(
		    err, errlen, "queue_dir %s: %s", dir, mdb_strerror(rc));
		goto fail;
	}
	for (int i = 0; i < QDB_N; i++) {
		rc = mdb_dbi_open(txn, queue_dbnames[i],
		    readonly ? 0 : MDB_CREATE, &q->dbi[i]);
		if (rc == MDB_NOTFOUND && readonly && i == QDB_HIST) {
			/* a queue made before `hist`: the daemon creates it
			 * when it next opens the queue; no history till then */
			q->nohist = true;
			continue;
		}
		if (rc == MDB_NOTFOUND && readonly && i == QDB_POLICY) {
			q->nopolicy = true; /* likewise: made by the daemon */
			continue;
		}
		if (rc != 0) {
			mdb_txn_abort(txn);
			snprintf(err, errlen, "queue_dir %s: db %s: %s", dir,
			    queue_dbnames[i],
			    rc == MDB_NOTFOUND ? "queue not initialised (run "
						 "relayq run once)"
					       : mdb_strerror(rc));
			goto fail;
		}
	}
	if (!readonly) {
		MDB_val k = { 6, (void *)"schema" }, v;
		uint8_t b[8];

		if (mdb_get(txn, q->dbi[QDB_META], &k, &v) == MDB_NOTFOUND) {
			qbe64_put(b, QUEUE_SCHEMA);
			v.mv_size = 8;
			v.mv_data = b;
			mdb_put(txn, q->dbi[QDB_META], &k, &v, 0);
		}
	}
	if ((rc = mdb_txn_commit(txn)) != 0) {
		snprintf(
		    err, errlen, "queue_dir %s: %s", dir, mdb_strerror(rc));
		goto fail;
	}
	return q;
fail:
	if (q->env != NULL)
		mdb_env_close(q->env);
	free(q->dir);
	free(q);
	return NULL;
}

void
queue_close(struct queue *q)
{
	if (q == NULL)
		return;
	if (q->wtxn != NULL)
		queue_txn_abort(q->wtxn);
	if (q->rtxn != NULL)
		mdb_txn_abort(q->rtxn);
	if (q->wake_fd >= 0)
		close(q->wake_fd);
	if (q->statm_fd >= 0)
		close(q->statm_fd);
	mdb_env_close(q->env);
	free(q->dir);
	free(q);
}

void
queue_cfg_set(struct queue *q, const struct cfg *cfg)
{
	size_t want = (size_t)cfg_int(cfg_scope(cfg, NULL), CFG_QUEUE_MAP_SIZE);
	MDB_envinfo info;

	q->cfg = cfg;
	/* grow the map when the new config asks for more (never shrink) */
	if (q->wtxn == NULL && q->rtxn != NULL) {
		mdb_txn_abort(q->rtxn);
		q->rtxn = NULL;
	}
	if (q->wtxn == NULL && mdb_env_info(q->env, &info) == 0 &&
	    want > info.me_mapsize)
		mdb_env_set_mapsize(q->env, want);
}

/* ---- room left in the map ---- */

/* cfg_parse.c (map_room_worst) mirrors this to refuse a queue_map_size
 * too small for max_message_size: keep the two in step. */

size_t
queue_room_get(struct queue *q)
{
	MDB_envinfo info;
	MDB_stat st;
	size_t maxpg, used, freepg = 0, reserve;

	if (mdb_env_info(q->env, &info) != 0 || mdb_env_stat(q->env, &st) != 0)
		return 0;
	maxpg = info.me_mapsize / st.ms_psize;
	used = info.me_last_pgno + 1;
	if (used > maxpg / 2) {
		/* count the free pages: only when it may matter */
		MDB_txn *txn = queue_rtxn_begin(q);
		MDB_cursor *c;
		MDB_val k, v;

		if (txn != NULL && mdb_cursor_open(txn, 0, &c) == 0) {
			int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);

			for (; rc == 0;
			     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT))
				if (v.mv_size >= sizeof(size_t))
					freepg += *(const size_t *)v.mv_data;
			mdb_cursor_close(c);
		}
		queue_rtxn_done(q);
	}
	/* kept back for deletes, delivery results and DSNs */
	reserve = maxpg / 10;
	if (reserve < 64)
		reserve = maxpg / 4 < 64 ? maxpg / 4 : 64;
	if (used - (freepg < used ? freepg : used) + reserve >= maxpg)
		return 0;
	return (maxpg - reserve - (used - (freepg < used ? freepg : used))) *
	    st.ms_psize;
}

/* ---- the map out of RSS ---- */

/* Finds the mapping of queue_dir/data.mdb in /proc/self/maps. */
static void
map_locate(struct queue *q)
{
	char want[4200], line[4600], real[4096];
	FILE *fp;

	q->map_base = NULL;
	q->map_len = 0;
	if (realpath(q->dir, real) == NULL)
		return;
	snprintf(want, sizeof(want), "%s/data.mdb", real);
	if ((fp = fopen("/proc/self/maps", "re")) == NULL)
		return;
	while (fgets(line, sizeof(line), fp) != NULL) {
		unsigned long lo, hi;
		char *path = strchr(line, '/');
		size_t n;

		if (path == NULL || sscanf(line, "%lx-%lx", &lo, &hi) != 2)
			continue;
		n = strlen(path);
		if (n > 0 && path[n - 1] == '\n')
			path[--n] = '\0';
		if (strcmp(path, want) == 0 && hi - lo > q->map_len) {
			q->map_base = (void *)lo;
			q->map_len = hi - lo;
		}
	}
	fclose(fp);
}

/* The process's resident file-backed pages in bytes (statm's third
 * field: RssFile + RssShmem), or SIZE_MAX when it cannot be read. */
static size_t
rss_file_bytes(struct queue *q)
{
	char buf[128];
	unsigned long size, res, shared;
	ssize_t n;

	if (q->statm_fd == -2)
		q->statm_fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
	if (q->statm_fd < 0)
		return SIZE_MAX;
	n = pread(q->statm_fd, buf, sizeof(buf) - 1, 0);
	if (n <= 0)
		return SIZE_MAX;
	buf[n] = '\0';
	if (sscanf(buf, "%lu %lu %lu", &size, &res, &shared) != 3)
		return SIZE_MAX;
	return (size_t)shared * (size_t)sysconf(_SC_PAGESIZE);
}

/*
 * Drops the map's pages from this process's resident set (they stay in
 * the page cache and fault back in on use) when its file-backed pages
 * pass RSS_FILE_MAX, looked at every 25 ms at most: the map is
 * file-backed and shared, so touching a big queue would otherwise make
 * RSS grow with the queue.  Dropping them only then (not at every look)
 * keeps the hot pages (the trees' upper levels) mapped between trims:
 * each trim costs a page fault per page touched again.
 */
void
queue_rss_trim(struct queue *q)
{
	int64_t now = rq_now_us();
	MDB_envinfo info;
	MDB_stat st;
	size_t len;

	if (now - q->last_trim < 25000)
		return;
	q->last_trim = now;
	if (rss_file_bytes(q) < RSS_FILE_MAX)
		return;
	if (mdb_env_info(q->env, &info) != 0 || mdb_env_stat(q->env, &st) != 0)
		return;
	if (q->map_base == NULL || q->map_size != info.me_mapsize) {
		/* LMDB does not tell where it mapped the file (me_mapaddr is
		 * only set with MDB_FIXEDMAP): look it up, again after a
		 * resize */
		map_locate(q);
		q->map_size = info.me_mapsize;
	}
	len = ((size_t)info.me_last_pgno + 1) * st.ms_psize;
	if (q->map_base != NULL && len <= q->map_len)
		(void)madvise(q->map_base, len, MADV_DONTNEED);
}
