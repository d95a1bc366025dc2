/*
 * priv.c - privileges: who the daemon runs as, what root does before it
 * becomes that user, and the owners and modes of the directories the
 * daemon owns.
 *
 * Public: priv_id_get(), priv_dir_foreign(), priv_path_trusted(),
 * priv_root_dir(), priv_log_prepare(), priv_switch(), priv_dir_enforce().
 *
 * Invariants.  Root never acts through a path another user can change.
 * Before it creates or hands over queue_dir or spool_dir, it checks that
 * every directory on the way is root's alone, as configured and with
 * links resolved (as OpenSSH's StrictModes does; a sticky directory such
 * as /tmp counts, since nobody else can rename root's entries there).
 * It opens the directory itself with O_NOFOLLOW and works on the
 * descriptor (fstat, fchownat(AT_EMPTY_PATH)).  Root opens nothing
 * inside queue_dir or spool_dir and never opens an existing log file: it
 * only creates a missing one, O_EXCL|O_NOFOLLOW, in a directory the
 * daemon cannot write.  The rest is done after the switch, as the
 * daemon's user, on what that user owns (priv_dir_enforce).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include "cfg.h"
#include "priv.h"

bool
priv_id_get(const char *user, struct priv_id *id, char *why, size_t len)
{
	struct passwd *pw;

	memset(id, 0, sizeof(*id));
	id->uid = geteuid();
	id->gid = getegid();
	if (user[0] == '\0' || id->uid != 0) {
		pw = getpwuid(id->uid);
		if (pw != NULL)
			snprintf(id->name, sizeof(id->name), "%s", pw->pw_name);
		return true;
	}
	pw = getpwnam(user);
	if (pw == NULL) {
		snprintf(why, len, "user %.64s: no such user", user);
		return false;
	}
	id->uid = pw->pw_uid;
	id->gid = pw->pw_gid;
	snprintf(id->name, sizeof(id->name), "%s", pw->pw_name);
	id->root_start = pw->pw_uid != 0;
	return true;
}

bool
priv_dir_foreign(const struct stat *st, uid_t uid, gid_t gid)
{
	if (st->st_uid != 0 && st->st_uid != uid)
		return true;
	if (st->st_mode & S_IWOTH)
		return true;
	return (st->st_mode & S_IWGRP) && st->st_gid != gid;
}

/* Whether only root can change the entries of directory ST. */
static bool
dir_root_only(const struct stat *st)
{
	return st->st_uid == 0 &&
	    ((st->st_mode & 022) == 0 || (st->st_mode & S_ISVTX));
}

/*
 * Checks that only root can change the directories on the way to PATH
 * (its ancestors; PATH too when INCLUSIVE) and that a link on the way is
 * root's; stops at the first one missing (root creates the rest).
 */
static bool
chain_check(const char *path, bool inclusive, char *why, size_t len)
{
	char pre[PATH_MAX];
	size_t n = strlen(path);
	struct stat st;

	if (path[0] != '/' || n >= sizeof(pre)) {
		snprintf(why, len, "%.200s: not an absolute path", path);
		return false;
	}
	for (size_t i = 0; i <= n; i++) {
		if (i < n && path[i] != '/')
			continue;
		if (i == n && !inclusive)
			break;
		if (i > 0 && path[i - 1] == '/')
			continue; /* "//" or a trailing "/" */
		memcpy(pre, path, i ? i : 1);
		pre[i ? i : 1] = '\0';
		if (lstat(pre, &st) != 0) {
			if (errno == ENOENT)
				return true;
			snprintf(why, len, "%.200s: %s", pre, strerror(errno));
			return false;
		}
		if (S_ISLNK(st.st_mode)) {
			if (st.st_uid != 0) {
				snprintf(why, len,
				    "%.200s is a symbolic link of uid %u, "
				    "not root's: root will not follow it",
				    pre, (unsigned)st.st_uid);
				return false;
			}
			if (stat(pre, &st) != 0) {
				snprintf(why, len, "%.200s: %s", pre,
				    strerror(errno));
				return false;
			}
		}
		if (!S_ISDIR(st.st_mode)) {
			snprintf(why, len, "%.200s: not a directory", pre);
			return false;
		}
		if (!dir_root_only(&st)) {
			snprintf(why, len,
			    "%.200s (owner uid %u, mode %04o) can be changed "
			    "by others than root: root will not act below it",
			    pre, (unsigned)st.st_uid,
			    (unsigned)(st.st_mode & 07777));
			return false;
		}
	}
	return true;
}

/* Checks the ancestors of PATH, as written and with links resolved (a
 * root-owned link may lead anywhere: the place it leads to is checked). */
bool
priv_path_trusted(const char *path, char *why, size_t len)
{
	char up[PATH_MAX], real[PATH_MAX];
	char *slash;
	size_t n;

	snprintf(up, sizeof(up), "%s", path);
	for (n = strlen(up); n > 1 && up[n - 1] == '/'; n--)
		up[n - 1] = '\0'; /* "/a/b/" is "/a/b" */
	if (!chain_check(up, false, why, len))
		return false;
	for (;;) {
		slash = strrchr(up, '/');
		if (slash == NULL || slash == up)
			return true; /* "/" itself was checked above */
		*slash = '\0';
		if (realpath(up, real) != NULL)
			return chain_check(real, true, why, len);
		if (errno != ENOENT) {
			snprintf(why, len, "%.200s: %s", up, strerror(errno));
			return false;
		}
	}
}

/* Says why opening directory PATH (with O_NOFOLLOW) failed. */
static void
open_why(const char *path, int err, char *why, size_t len)
{
	struct stat st;

	/* O_DIRECTORY|O_NOFOLLOW says ENOTDIR for a link to a directory */
	if (err == ELOOP ||
	    (err == ENOTDIR && lstat(path, &st) == 0 && S_ISLNK(st.st_mode)))
		snprintf(why, len,
		    "%.200s is a symbolic link, not a directory: refusing "
		    "to follow it",
		    path);
	else
		snprintf(why, len, "%.200s: %s", path, strerror(err));
}

/* The mode directory KIND is created with. */
static mode_t
kind_mode(enum priv_dir kind)
{
	switch (kind) {
	case PRIV_DIR_SPOOL:
		return 0755;
	case PRIV_DIR_DROP:
		return PRIV_DROP_MODE;
	case PRIV_DIR_QUEUE:
	case PRIV_DIR_PRIVATE:
		break;
	}
	return 0700;
}

/* Creates the missing parents of PATH, mode 0755. */
static int
mkdir_parents(const char *path)
{
	char p[PATH_MAX];

	snprintf(p, sizeof(p), "%s", path);
	for (char *s = p + 1; *s != '\0'; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, 0755) != 0 && errno != EEXIST)
			return -1;
		*s = '/';
	}
	return 0;
}

/* Whether the directory open (O_PATH) at FD, root's, has no entries. */
static bool
dir_empty(int fd)
{
	int rfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d;
	struct dirent *e;
	bool empty = true;

	if (rfd < 0 || (d = fdopendir(rfd)) == NULL) {
		if (rfd >= 0)
			close(rfd);
		return false;
	}
	while (empty && (e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			empty = false;
	closedir(d);
	return empty;
}

/* Sets the mode of the directory open (O_PATH) at FD, root's. */
static int
dir_chmod(int fd, mode_t mode)
{
	int rfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc;

	if (rfd < 0)
		return -1;
	rc = fchmod(rfd, mode);
	close(rfd);
	return rc;
}

enum priv_result
priv_root_dir(const char *path, enum priv_dir kind, const struct priv_id *id,
    char *why, size_t len)
{
	const int oflags = O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
	struct stat st;
	bool made = false;
	int fd;

	if (!priv_path_trusted(path, why, len))
		return PRIV_REFUSED;
	fd = open(path, oflags);
	if (fd < 0 && errno == ENOENT) {
		if (mkdir_parents(path) != 0 ||
		    (!(made = mkdir(path, 0700) == 0) && errno != EEXIST)) {
			snprintf(why, len, "cannot create %.200s: %s", path,
			    strerror(errno));
			return PRIV_REFUSED;
		}
		fd = open(path, oflags);
	}
	if (fd < 0) {
		open_why(path, errno, why, len);
		return PRIV_REFUSED;
	}
	if (fstat(fd, &st) != 0) {
		open_why(path, errno, why, len);
		close(fd);
		return PRIV_REFUSED;
	}
	if (priv_dir_foreign(&st, id->uid, id->gid)) {
		snprintf(why, len,
		    "%.200s (owner uid %u, group %u, mode %04o) can be "
		    "changed by others than root and %.64s: refusing to use it",
		    path, (unsigned)st.st_uid, (unsigned)st.st_gid,
		    (unsigned)(st.st_mode & 07777), id->name);
		close(fd);
		return PRIV_REFUSED;
	}
	if (st.st_uid == 0 && id->uid != 0) {
		if (!made && !dir_empty(fd)) {
			close(fd);
			if (kind == PRIV_DIR_SPOOL)
				return PRIV_OK; /* root's, with the user's
						   subdirectories in it */
			snprintf(why, len,
			    "%.200s is root's and not empty: give it, with "
			    "its files, to %.64s (chown -R)",
			    path, id->name);
			return PRIV_REFUSED;
		}
		if (dir_chmod(fd, kind_mode(kind)) != 0 ||
		    fchownat(fd, "", id->uid, id->gid, AT_EMPTY_PATH) != 0) {
			snprintf(why, len,
			    "%.200s: cannot give it to %.64s: %s", path,
			    id->name, strerror(errno));
			close(fd);
			return PRIV_REFUSED;
		}
	} else if (made && dir_chmod(fd, kind_mode(kind)) != 0) {
		snprintf(why, len, "%.200s: %s", path, strerror(errno));
		close(fd);
		return PRIV_REFUSED;
	}
	close(fd);
	return PRIV_OK;
}

enum priv_result
priv_log_prepare(
    const char *path, const struct priv_id *id, char *why, size_t len)
{
	char dir[PATH_MAX];
	char *slash;
	struct stat st;
	int fd;

	if (path[0] == '\0')
		return PRIV_OK;
	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (slash == NULL)
		return PRIV_OK; /* cfg accepts absolute paths only */
	slash[slash == dir ? 1 : 0] = '\0';
	if (geteuid() == 0 && !priv_path_trusted(dir, why, len))
		return PRIV_REFUSED;
	if (lstat(dir, &st) == 0 && S_ISLNK(st.st_mode) && st.st_uid != 0) {
		snprintf(why, len,
		    "the directory of log_file %.200s is a symbolic link of "
		    "uid %u: refusing to follow it",
		    path, (unsigned)st.st_uid);
		return PRIV_REFUSED;
	}
	if (stat(dir, &st) != 0) {
		snprintf(why, len, "log_file %.200s: %.200s: %s", path, dir,
		    strerror(errno));
		return PRIV_REFUSED;
	}
	if (priv_dir_foreign(&st, id->uid, id->gid)) {
		snprintf(why, len,
		    "the directory of log_file %.200s (owner uid %u, group "
		    "%u, mode %04o) can be changed by others than root and "
		    "%.64s: refusing to use it",
		    path, (unsigned)st.st_uid, (unsigned)st.st_gid,
		    (unsigned)(st.st_mode & 07777), id->name);
		return PRIV_REFUSED;
	}
	/* A directory the daemon cannot write (root's, such as /var/log):
	 * root creates the file for it, as a new file or not at all. */
	if (geteuid() == 0 && id->uid != 0 && st.st_uid == 0 &&
	    !((st.st_mode & S_IWGRP) && st.st_gid == id->gid)) {
		fd = open(path,
		    O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0640);
		if (fd >= 0) {
			if (fchown(fd, id->uid, id->gid) != 0) {
				snprintf(why, len,
				    "log_file %.200s: cannot give it to "
				    "%.64s: %s",
				    path, id->name, strerror(errno));
				close(fd);
				(void)unlink(path);
				return PRIV_REFUSED;
			}
			close(fd);
		}
	}
	return PRIV_OK;
}

/*
 * After setuid() with PR_SET_KEEPCAPS: CAP_LEASE alone, in the permitted
 * and effective sets (intake asks for a read lease to tell a spool file
 * still open for writing; any other power is gone).
 */
static void
lease_cap_keep(void)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3];

	memset(d, 0, sizeof(d));
	d[CAP_LEASE / 32].permitted = 1u << (CAP_LEASE % 32);
	d[CAP_LEASE / 32].effective = 1u << (CAP_LEASE % 32);
	(void)syscall(SYS_capset, &h, d);
}

bool
priv_switch(const struct priv_id *id, bool lease)
{
	int rc = id->name[0] != '\0' ? initgroups(id->name, id->gid)
				     : setgroups(1, &id->gid);
	bool keep = lease && rc == 0 && id->uid != 0 && geteuid() == 0 &&
	    prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) == 0;

	if (rc != 0 || setgid(id->gid) != 0 || setuid(id->uid) != 0)
		return false;
	if (keep) {
		lease_cap_keep();
		(void)prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
	}
	/* never able to become root again */
	if (id->uid != 0 && (setuid(0) == 0 || geteuid() == 0)) {
		errno = EPERM;
		return false;
	}
	return true;
}

enum priv_result
priv_dir_enforce(const char *path, enum priv_dir kind, char *why, size_t len)
{
	const int oflags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
	uid_t me = geteuid();
	gid_t grp = getegid();
	mode_t have, want = kind_mode(kind);
	struct stat st;
	bool made = false, regroup;
	int fd;

	fd = open(path, oflags);
	if (fd < 0 && errno == ENOENT) {
		if (((kind == PRIV_DIR_QUEUE || kind == PRIV_DIR_SPOOL) &&
			mkdir_parents(path) != 0) ||
		    (!(made = mkdir(path, 0700) == 0) && errno != EEXIST)) {
			snprintf(why, len, "cannot create %.200s: %s", path,
			    strerror(errno));
			return PRIV_REFUSED;
		}
		fd = open(path, oflags);
	}
	if (fd < 0 || fstat(fd, &st) != 0) {
		open_why(path, errno, why, len);
		if (fd >= 0)
			close(fd);
		return PRIV_REFUSED;
	}
	if (st.st_uid != me && !(kind == PRIV_DIR_SPOOL && st.st_uid == 0)) {
		snprintf(why, len,
		    "%.200s is owned by uid %u, not by the daemon's user "
		    "(uid %u): refusing to use it",
		    path, (unsigned)st.st_uid, (unsigned)me);
		close(fd);
		return PRIV_REFUSED;
	}
	if ((kind == PRIV_DIR_QUEUE || kind == PRIV_DIR_SPOOL) &&
	    priv_dir_foreign(&st, me, grp)) {
		snprintf(why, len,
		    "%.200s (mode %04o, group %u) can be changed by others "
		    "than the daemon's user: refusing to use it",
		    path, (unsigned)(st.st_mode & 07777), (unsigned)st.st_gid);
		close(fd);
		return PRIV_REFUSED;
	}
	have = st.st_mode & 07777;
	if (kind == PRIV_DIR_SPOOL && !made) {
		/* any mode the checks above let through, searchable by all
		 * so that submitters reach tmp/ and incoming/; root's is
		 * not ours to change */
		want = st.st_uid == me ? have | 0111 : have;
	}
	regroup = kind == PRIV_DIR_DROP && st.st_gid != grp;
	if (regroup && fchown(fd, (uid_t)-1, grp) != 0) {
		snprintf(why, len, "%.200s: cannot set group %u: %s", path,
		    (unsigned)grp, strerror(errno));
		close(fd);
		return PRIV_REFUSED;
	}
	if ((have != want || regroup) && fchmod(fd, want) != 0) {
		snprintf(why, len, "%.200s: cannot set mode %04o: %s", path,
		    (unsigned)want, strerror(errno));
		close(fd);
		return PRIV_REFUSED;
	}
	close(fd);
	if (made || (have == want && !regroup))
		return PRIV_OK;
	snprintf(why, len, "%.200s had mode %04o, group %u; now %04o, group %u",
	    path, (unsigned)have, (unsigned)st.st_gid, (unsigned)want,
	    (unsigned)(regroup ? grp : st.st_gid));
	return PRIV_FIXED;
}
