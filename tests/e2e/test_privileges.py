"""Privileges (issue 10, items 1 and 6): root never acts through a path
the daemon's user or a local user controls, and the spool keeps one
user's mail from another.

Root-owned 0600 canary files (known bytes) sit behind links the daemon's
user could plant (queue_dir/wakeup, lock.mdb, data.mdb, the log file,
spool subdirectories); after `run` (started as root with `user = nobody`),
`mailq`, `show`, `flush` and `check-config` each keeps its owner, mode
and bytes.  A queue_dir, spool_dir or log directory others can write
makes `run` exit 78.  A file submitted by one user cannot be read or
listed by another while it waits, the daemon still takes it, and wrong
modes are repaired (once, with a log line) or refused.

Every test needs root (to switch users) and is skipped otherwise.
"""
import os
import pwd
import re
import stat
import subprocess

import rqlib
from rqlib import Env, check, check_eq

NOBODY = pwd.getpwnam("nobody")
SUBMITTER = 64011   # uids without a passwd entry: setpriv needs none
OTHER = 64012
CANARY = b"root's own file: must not change\n"


def root_only():
    if os.geteuid() != 0:
        print("  skipped: not root")
        return False
    return True


def priv_env(extra=""):
    """An Env whose daemon starts as root and runs as nobody."""
    e = Env()
    e.write_conf("user = nobody\nrelayhost = [127.0.0.1]:%d\n"
                 "retry.min = 1h\n%s" % (rqlib.free_port(), extra))
    os.chmod(e.dir, 0o755)
    os.chmod(e.conf, 0o644)
    return e


def as_user(uid, cmd, **kw):
    """Runs CMD as uid (group uid, no supplementary groups)."""
    return subprocess.run(["setpriv", "--reuid=%d" % uid,
                           "--regid=%d" % uid, "--clear-groups"] + cmd,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=60, **kw)


def run_idle(e, rc=None):
    """`relayq run --exit-when-idle`; its CompletedProcess."""
    return e.run("run", "--exit-when-idle", check_rc=rc, timeout=60)


def canary(path, data=CANARY):
    with open(path, "wb") as f:
        f.write(data)
    os.chown(path, 0, 0)
    os.chmod(path, 0o600)
    return path, data


def canary_dir(path):
    """A root-owned 0700 directory holding a canary file."""
    os.mkdir(path, 0o700)
    canary(os.path.join(path, "file"))
    return path


def check_canary(path, data=CANARY, mode=0o600):
    st = os.lstat(path)
    check_eq((st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)),
             (0, 0, mode), "owner, group, mode of %s" % path)
    if stat.S_ISREG(st.st_mode):
        with open(path, "rb") as f:
            got = f.read()
        check(got == data, "bytes of %s changed: %d bytes, %r..." %
              (path, len(got), got[:32]))


def check_canary_dir(path):
    check_canary(path, mode=0o700)
    check_canary(os.path.join(path, "file"))


def plant(link, target):
    """A link the daemon's user (nobody) planted, as that user could."""
    if os.path.isdir(link) and not os.path.islink(link):
        os.rmdir(link)
    elif os.path.lexists(link):
        os.unlink(link)
    os.symlink(target, link)
    os.lchown(link, NOBODY.pw_uid, NOBODY.pw_gid)


def send_as_root(e, rcpt="r@x.example"):
    e.run("send", rcpt, input=b"Subject: t\n\nbody\n", check_rc=0)


def mailq_ids(e):
    out = e.run("mailq", check_rc=0).stdout.decode()
    return re.findall(r"^([0-9A-F]{16})", out, re.M)


LINK_CASES = ["wakeup", "lock.mdb", "data.mdb", "log", "spool/tmp",
              "spool/incoming", "spool/bad"]


def planted_link(case):
    """One link the daemon's user planted, then `run` as root."""
    with priv_env() as e:
        logdir = os.path.join(e.dir, "log")
        os.mkdir(logdir, 0o755)
        os.chown(logdir, NOBODY.pw_uid, NOBODY.pw_gid)
        e.log = os.path.join(logdir, "relayq.log")
        e.write_conf("user = nobody\nrelayhost = [127.0.0.1]:%d\n"
                     "retry.min = 1h\n" % rqlib.free_port())
        run_idle(e, rc=0)       # a queue and spool of nobody's
        target = os.path.join(e.dir, "canary")
        data = b"" if case == "data.mdb" else CANARY  # LMDB fills an
        if case.startswith("spool/"):                 # empty data.mdb
            canary_dir(target)
            plant(os.path.join(e.dir, case), target)
        elif case == "log":
            canary(target)
            plant(e.log, target)
        else:
            canary(target, data)
            plant(os.path.join(e.queue, case), target)
        p = run_idle(e)
        err = p.stderr.decode(errors="replace")
        if case.startswith("spool/"):
            check_canary_dir(target)
            check_eq(p.returncode, 78, "%s: exit; %s" % (case, err))
            check(os.path.join(e.dir, case) in err and
                  "symbolic link" in err, "%s: message %s" % (case, err))
        elif case == "wakeup":
            check_canary(target)
            # the queue's owner replaces it and runs as usual
            check_eq(p.returncode, 0, "wakeup: exit; " + err)
            st = os.lstat(os.path.join(e.queue, "wakeup"))
            check(stat.S_ISREG(st.st_mode) and
                  st.st_uid == NOBODY.pw_uid, "wakeup replaced")
        else:
            check_canary(target, data)
            check(p.returncode != 0, "%s: exit 0" % case)
            what = "relayq.log" if case == "log" else case
            check(what in err, "%s: message %s" % (case, err))


def test_run_never_follows_planted_links():
    """Each link the daemon's user could plant, one at a time: `run`
    started as root leaves the root-owned file behind it alone."""
    if not root_only():
        return
    for case in LINK_CASES:
        planted_link(case)


def test_commands_as_root_switch_to_the_queue_owner():
    """mailq, show and flush run as root become the owner of queue_dir
    first: a lock.mdb link planted by that user does not make root write
    through it; check-config opens nothing in queue_dir or spool_dir;
    other users get "permission denied" (77)."""
    if not root_only():
        return
    with priv_env() as e:
        run_idle(e, rc=0)
        send_as_root(e)
        run_idle(e, rc=0)           # one deferred message
        ids = mailq_ids(e)
        check_eq(len(ids), 1, "queued messages")
        e.run("show", ids[0], check_rc=0)
        e.run("flush", check_rc=0)
        for f in ("data.mdb", "lock.mdb", "wakeup"):
            st = os.stat(os.path.join(e.queue, f))
            check_eq(st.st_uid, NOBODY.pw_uid, f + " still nobody's")
        # the queue's owner plants links
        target, _ = canary(os.path.join(e.dir, "canary"))
        plant(os.path.join(e.queue, "lock.mdb"), target)
        wtarget, _ = canary(os.path.join(e.dir, "canary-wakeup"))
        plant(os.path.join(e.queue, "wakeup"), wtarget)
        for args in (["mailq"], ["show", ids[0]], ["flush"],
                     ["flush", ids[0]], ["summary"], ["hold", ids[0]]):
            p = e.run(*args)
            check_canary(target)
            check_canary(wtarget)
            check(p.returncode != 0, "%s with a planted lock.mdb" % args)
            check(b"lock.mdb" in p.stderr, p.stderr)
        # check-config: every link in place, nothing opened or created
        ltarget, _ = canary(os.path.join(e.dir, "canary-log"))
        plant(e.log, ltarget)
        before = sorted(os.listdir(e.queue)) + sorted(os.listdir(e.spool))
        e.run("check-config", check_rc=0)
        check_canary(target)
        check_canary(ltarget)
        check_eq(sorted(os.listdir(e.queue)) + sorted(os.listdir(e.spool)),
                 before, "queue and spool after check-config")
        # another user
        p = as_user(OTHER, [rqlib.BIN, "mailq", "-c", e.conf])
        check_eq(p.returncode, 77, "mailq as another user")
        check(b"permission denied" in p.stderr, p.stderr)
    with priv_env() as e:
        # check-config creates no queue or spool
        e.run("check-config", check_rc=0)
        check(not os.path.exists(e.queue) and not os.path.exists(e.spool),
              "check-config created nothing")


def test_dirs_others_can_write_are_refused():
    """queue_dir, spool_dir, the log's directory or a directory above
    them writable by others than root and the daemon's user: `run` exits
    78 naming the path, and leaves what is inside alone."""
    if not root_only():
        return
    for what, mode, gid in (("queue", 0o777, 0), ("queue", 0o770, OTHER),
                            ("spool", 0o777, 0), ("spool", 0o1777, 0),
                            ("log", 0o777, 0), ("log", 0o1777, 0),
                            ("parent", 0o777, 0)):
        with priv_env() as e:
            logdir = os.path.join(e.dir, "log")
            parent = os.path.join(e.dir, "above")
            os.mkdir(parent, 0o755)
            e.queue = os.path.join(parent, "queue")
            e.log = os.path.join(logdir, "relayq.log")
            e.write_conf("user = nobody\nrelayhost = [127.0.0.1]:%d\n" %
                         rqlib.free_port())
            os.mkdir(logdir, 0o755)
            path = {"queue": e.queue, "spool": e.spool, "log": logdir,
                    "parent": parent}[what]
            if not os.path.isdir(path):
                os.mkdir(path)
            os.chown(path, NOBODY.pw_uid if what in ("queue", "spool")
                     else 0, gid)
            os.chmod(path, mode)
            target, _ = canary(os.path.join(e.dir, "canary"))
            if what == "queue":
                plant(os.path.join(path, "lock.mdb"), target)
            p = run_idle(e)
            err = p.stderr.decode(errors="replace")
            check_eq(p.returncode, 78, "%s %o: exit; %s" % (what, mode, err))
            check(path in err, "%s %o: message %s" % (what, mode, err))
            check_canary(target)


def test_private_spool():
    """A file one user submits is not readable or listable by another
    while it waits (0640, the daemon's group through the setgid drop
    directory), and the daemon, running as its user, still takes it."""
    if not root_only():
        return
    with priv_env() as e:
        run_idle(e, rc=0)
        p = as_user(SUBMITTER, [rqlib.BIN, "send", "-c", e.conf, "-f",
                                "alice@relayq.test", "r@x.example"],
                    input=b"Subject: secret\n\nfor r only\n")
        check_eq(p.returncode, 0, p.stderr)
        inc = os.path.join(e.spool, "incoming")
        names = os.listdir(inc)
        check_eq(len(names), 1, "files waiting")
        path = os.path.join(inc, names[0])
        p = as_user(OTHER, ["cat", path])
        check(p.returncode != 0 and b"for r only" not in p.stdout,
              "another user read it: %r" % p.stdout)
        p = as_user(OTHER, ["ls", inc])
        check(p.returncode != 0 and names[0].encode() not in p.stdout,
              "another user listed incoming/: %r" % p.stdout)
        st = os.stat(path)
        check_eq((st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)),
                 (SUBMITTER, NOBODY.pw_gid, 0o640), "the waiting file")
        for d, mode in (("incoming", 0o3733), ("tmp", 0o3733),
                        ("bad", 0o700), ("", 0o755)):
            st = os.stat(os.path.join(e.spool, d))
            check_eq((st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)),
                     (NOBODY.pw_uid, NOBODY.pw_gid, mode), "spool/" + d)
        st = os.stat(e.queue)
        check_eq(stat.S_IMODE(st.st_mode), 0o700, "queue_dir mode")
        # root's submission: root's file, the daemon's group, 0640
        send_as_root(e)
        root_files = [n for n in os.listdir(inc) if n != names[0]]
        st = os.stat(os.path.join(inc, root_files[0]))
        check_eq((st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)),
                 (0, NOBODY.pw_gid, 0o640), "root's file")
        run_idle(e, rc=0)
        check_eq(os.listdir(inc), [], "incoming/ taken")
        out = e.run("mailq", check_rc=0).stdout.decode()
        # postqueue -p's sender field: the address, no brackets
        check(re.search(r" alice@relayq\.test normal$", out, re.M), out)
        check_eq(len(mailq_ids(e)), 2, "queued")
        check_eq(os.listdir(os.path.join(e.spool, "bad")), [], "bad/")


def test_wrong_modes_repaired_or_refused():
    """A pre-created 1777 incoming/ and tmp/, a 0755 bad/ and queue_dir:
    `relayq send` refuses the spool (75); `run` repairs each (one log
    line each, none at the next start).  A subdirectory of another
    owner is refused (78)."""
    if not root_only():
        return
    with priv_env() as e:
        for d, mode in (("", 0o755), ("incoming", 0o1777),
                        ("tmp", 0o1777), ("bad", 0o755)):
            path = os.path.join(e.spool, d)
            os.makedirs(path, exist_ok=True)
            os.chown(path, NOBODY.pw_uid, NOBODY.pw_gid)
            os.chmod(path, mode)
        os.mkdir(e.queue)
        os.chown(e.queue, NOBODY.pw_uid, NOBODY.pw_gid)
        os.chmod(e.queue, 0o755)
        p = as_user(SUBMITTER, [rqlib.BIN, "send", "-c", e.conf, "-f",
                                "alice@relayq.test", "r@x.example"],
                    input=b"Subject: s\n\nx\n")
        check_eq(p.returncode, 75, "send into a 1777 spool: %s" % p.stderr)
        check(os.path.join(e.spool, "incoming").encode() in p.stderr,
              p.stderr)
        check_eq(os.listdir(os.path.join(e.spool, "incoming")), [],
                 "nothing submitted")
        run_idle(e, rc=0)
        for d, mode in (("incoming", 0o3733), ("tmp", 0o3733),
                        ("bad", 0o700)):
            st = os.stat(os.path.join(e.spool, d))
            check_eq((st.st_gid, stat.S_IMODE(st.st_mode)),
                     (NOBODY.pw_gid, mode), "spool/" + d)
        check_eq(stat.S_IMODE(os.stat(e.queue).st_mode), 0o700, "queue")
        log = e.log_text()
        for d in ("incoming", "tmp", "bad"):
            check_eq(len(re.findall(r"repaired.*%s had mode" %
                                    re.escape(os.path.join(e.spool, d)),
                                    log)), 1, "one line for " + d)
        check_eq(len(re.findall(r"repaired.*%s had mode" %
                                re.escape(e.queue), log)), 1, "queue line")
        run_idle(e, rc=0)
        check_eq(e.log_text().count("repaired"), 4, "no new lines")
        p = as_user(SUBMITTER, [rqlib.BIN, "send", "-c", e.conf, "-f",
                                "alice@relayq.test", "r@x.example"],
                    input=b"Subject: s\n\nx\n")
        check_eq(p.returncode, 0, p.stderr)
        # bad/ of another user: not the daemon's to repair
        bad = os.path.join(e.spool, "bad")
        os.chown(bad, OTHER, OTHER)
        p = run_idle(e)
        check_eq(p.returncode, 78, p.stderr)
        check(bad.encode() in p.stderr, p.stderr)


if __name__ == "__main__":
    rqlib.main(globals())
