/*
 * priv.h - privileges: the user the daemon runs as, what root does before
 * it becomes that user, and the owners and modes of the directories the
 * daemon owns.  See priv.c for the invariants and doc/relayq.8 (SECURITY)
 * for the model as users see it.
 */
#ifndef RELAYQ_PRIV_H
#define RELAYQ_PRIV_H

#include <sys/stat.h>
#include <sys/types.h>

#include <stdbool.h>
#include <stddef.h>

/* The identity the daemon runs as. */
struct priv_id {
	uid_t uid;
	gid_t gid;
	char name[64]; /* for initgroups(); empty: no supplementary groups */
	bool root_start; /* started as root with `user` set: switch */
};

enum priv_result {
	PRIV_OK, /* as it should be (perhaps just created) */
	PRIV_FIXED, /* a mode or group was wrong and is repaired; why says */
	PRIV_REFUSED, /* wrong, and not the daemon's to repair; why says */
};

/* The directories the daemon owns, each with the mode it keeps. */
enum priv_dir {
	PRIV_DIR_QUEUE, /* queue_dir: 0700 */
	PRIV_DIR_SPOOL, /* spool_dir: 0755, traversable by submitters */
	PRIV_DIR_DROP, /* incoming/, tmp/: 3733, group = the daemon's */
	PRIV_DIR_PRIVATE, /* bad/: 0700 */
};

/* The mode of a drop directory: anyone may create, nobody else lists,
 * files inherit the daemon's group (setgid), and only their owner (or
 * the daemon) may remove or rename them (sticky). */
#define PRIV_DROP_MODE 03733

/*
 * Fills *id with the identity of `user` USER when this process is root
 * and USER is set, else with this process's own; false, with a message
 * in why, when USER does not exist.
 */
bool priv_id_get(const char *user, struct priv_id *id, char *why, size_t len);

/*
 * Whether a directory with status ST can be changed by anyone but root
 * and ID: owned by another uid, writable by others, or writable by a
 * group other than ID's.
 */
bool priv_dir_foreign(const struct stat *st, uid_t uid, gid_t gid);

/*
 * Whether only root can change the directories that lead to PATH: each
 * ancestor, as written and with links resolved, is root's and writable
 * by root alone (or sticky), and each link on the way is root's.  False,
 * with a message in why, if not.  (OpenSSH's StrictModes walk.)
 */
bool priv_path_trusted(const char *path, char *why, size_t len);

/*
 * Root only, before the switch: makes sure directory PATH of KIND exists
 * for ID without acting through anything another user controls (every
 * ancestor must be root's alone; PATH itself is opened with O_NOFOLLOW
 * and handled by descriptor).  A missing PATH is created and, like an
 * empty root-owned one, given to ID.  PRIV_REFUSED when an ancestor or
 * PATH is writable by others, or PATH belongs to another user.
 */
enum priv_result priv_root_dir(const char *path, enum priv_dir kind,
    const struct priv_id *id, char *why, size_t len);

/*
 * Checks the directory of log file PATH (empty: none): PRIV_REFUSED when
 * someone but root and ID can write it.  Run by root, also creates a
 * missing log file for ID (O_EXCL, then fchown) where ID could not.
 * Never opens an existing log file.
 */
enum priv_result priv_log_prepare(
    const char *path, const struct priv_id *id, char *why, size_t len);

/* Becomes ID for good (groups, gid, uid); false, with errno, if not.
 * LEASE: from root to another user, CAP_LEASE is kept (and nothing
 * else), for intake's check of files still open for writing. */
bool priv_switch(const struct priv_id *id, bool lease);

/*
 * As the daemon (after the switch): creates directory PATH of KIND when
 * missing and gives it its mode; refuses a link, a wrong owner, or a
 * queue_dir or spool_dir others can write; repairs any other wrong mode
 * or group (PRIV_FIXED, what changed in why).
 */
enum priv_result
priv_dir_enforce(const char *path, enum priv_dir kind, char *why, size_t len);

#endif
