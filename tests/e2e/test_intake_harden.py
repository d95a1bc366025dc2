"""test_intake_harden - spool intake against a hostile or careless local
user (issue 10, items 2, 3, 6, 7 and 9), with the real `relayq run`:

- bad/ names are the daemon's: a FIFO planted as `y.reason` blocks
  nothing, `m.reason` and `m` both survive with their reasons, two files
  with the same 255-byte name both land in bad/;
- entries that can be neither read nor moved are logged once, not at
  every rescan;
- a name with a newline cannot forge a log line;
- a file that keeps a second hard link goes to bad/, a link-then-unlink
  writer's file is queued;
- a file written straight into incoming/ is queued once, complete (a
  writer appending a line a second, one appending every millisecond);
- the pickup line (`relayq/pickup ... uid=N from=<...>`) before the qmgr
  line, counted by pflogsumm as received;
- min_free_space: intake pauses on a full file system (a small tmpfs)
  and resumes by itself (root only);
- an fsync(2) error on incoming/ keeps the identities (root only: an
  ext4 on a loop device whose backing store runs out).

Delivery goes to 127.0.0.1:1 where nothing listens: messages stay queued.
As root the tests that need another user run the daemon as `nobody`.
"""
import json
import os
import re
import shutil
import subprocess
import time

import rqlib
from rqlib import check, check_eq, wait_for

CONF = ("relayhost = [127.0.0.1]:1\nretry.min = 1h\nretry.max = 2h\n"
        "rescan_interval = 1s\n")
NOBODY = 65534


def drop(env, name, data):
    """Writes a spool file the normal way: tmp/, then rename."""
    if isinstance(data, str):
        data = data.encode()
    tmp = os.path.join(env.spool, "tmp", ".t%d" % os.getpid())
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, os.path.join(env.spool, "incoming", name))


def incoming(env):
    return [n for n in os.listdir(os.path.join(env.spool, "incoming"))
            if not n.startswith(".")]


def mailq(env):
    p = env.run("mailq", "--json", check_rc=0)
    return [json.loads(l) for l in p.stdout.decode().splitlines() if l]


def start(env, as_nobody=False):
    """Starts `relayq run`; AS_NOBODY (root only): as user nobody, with
    the test directory handed to it."""
    kw = {}
    if as_nobody:
        os.chown(env.dir, NOBODY, NOBODY)

        def drop_privs():
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
        kw["preexec_fn"] = drop_privs
    p = env.start("run", **kw)
    wait_for(lambda: all(os.path.isdir(os.path.join(env.spool, d))
                         for d in ("incoming", "tmp", "bad")), 10,
             what="spool tree")
    return p


def stop(p, timeout=20):
    p.send_signal(15)
    check_eq(p.wait(timeout), 0, "run exit status after SIGTERM")


def bodies(env, msgs):
    return [env.run("show", "--body", m["queue_id"], check_rc=0).stdout
            for m in msgs]


def log_lines(env):
    return env.log_text().splitlines()


LOG_LINE = re.compile(r"^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ "
                      r"relayq(/[a-z]+)?\[\d+\]: ")


def test_fifo_reason_blocks_nothing():
    """A FIFO named y.reason, then an empty file y: intake and SIGTERM
    still work (a normal message is queued within 5 s)."""
    with rqlib.Env(CONF) as env:
        p = start(env)
        inc = os.path.join(env.spool, "incoming")
        os.mkfifo(os.path.join(inc, "y.reason"))
        time.sleep(0.5)
        open(os.path.join(inc, "y"), "wb").close()
        time.sleep(1.5)
        drop(env, "good", "From: a@x.test\nTo: b@y.test\n\nhello\n")
        wait_for(lambda: len(mailq(env)) == 1, 5,
                 what="a message queued within 5 s")
        wait_for(lambda: {b"y", b"y.reason"} <= set(rqlib.bad_files(env)),
                 15, what="y and y.reason in bad/")
        stop(p)
        bad = rqlib.bad_files(env)
        fifo, why = bad[b"y.reason"][0]
        check(os.path.basename(fifo) != "y.reason", "daemon's name")
        check("fifo" in why, "fifo reason: %r" % why)
        check("empty" in bad[b"y"][0][1], "empty reason")
        check_eq(incoming(env), [], "incoming/ empty")


def test_bad_name_clashes():
    """bad files `m.reason` and `m` both survive with their reasons; two
    files with the same 255-byte name (and a third one) all land in
    bad/ with their reasons."""
    with rqlib.Env(CONF) as env:
        p = start(env)
        bad = os.path.join(env.spool, "bad")

        def taken():
            return not incoming(env)
        drop(env, "m.reason", "From: a@x.test\n\nno recipient 1\n")
        wait_for(taken, 10, what="m.reason taken")
        drop(env, "m", "From: a@x.test\n\nno recipient 2\n")
        wait_for(taken, 10, what="m taken")
        check_eq(len(os.listdir(bad)), 4, "files in bad/ (2 and reasons)")
        long1 = "L" * 255
        long2 = "M" * 253 + "\xe9"      # 255 bytes in UTF-8
        check_eq(len(long2.encode()), 255, "255-byte name")
        drop(env, long1, "From: a@x.test\n\nlong one\n")
        wait_for(taken, 10, what="first long name taken")
        drop(env, long1, "From: a@x.test\n\nlong two\n")
        drop(env, long2, "From: a@x.test\n\nlong three\n")
        wait_for(taken, 10, what="long names taken")
        # five bad files, five reasons, nothing else
        check_eq(len(os.listdir(bad)), 10, "files in bad/")
        found = rqlib.bad_files(env)

        def content(path):
            with open(path, "rb") as f:
                return f.read()
        check_eq(content(found[b"m.reason"][0][0]),
                 b"From: a@x.test\n\nno recipient 1\n", "m.reason kept")
        check_eq(content(found[b"m"][0][0]),
                 b"From: a@x.test\n\nno recipient 2\n", "m kept")
        for name in (b"m.reason", b"m"):
            check("no recipient" in found[name][0][1].lower(),
                  "reason of %r: %r" % (name, found[name][0][1]))
        check_eq(sorted(content(x[0]) for x in found[long1.encode()]),
                 [b"From: a@x.test\n\nlong one\n",
                  b"From: a@x.test\n\nlong two\n"], "both long ones kept")
        check_eq(content(found[long2.encode()][0][0]),
                 b"From: a@x.test\n\nlong three\n", "the third kept")
        stop(p)


def test_unreadable_entries_logged_once():
    """1,000 entries the daemon can neither read nor move: a bounded log
    over several rescans (rescan_interval 1s), intake goes on.  As root
    the daemon runs as nobody and half of them are root's 0600 files
    (moved to bad/ as unreadable); the others are directories it may not
    move (mode 0555)."""
    root = os.geteuid() == 0
    with rqlib.Env(CONF) as env:
        p = start(env, as_nobody=root)
        inc = os.path.join(env.spool, "incoming")
        names = []
        for i in range(1000):
            n = "u%04d" % i
            path = os.path.join(inc, n)
            if root and i % 2 == 0:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
                os.write(fd, b"From: a@x.test\nTo: b@y.test\n\nsecret\n")
                os.close(fd)
            else:
                os.mkdir(path, 0o555)
            names.append(n)
        def mentions():
            return [l for l in log_lines(env) if re.search(r"\bu\d{4}\b", l)]

        def named():
            return {n for l in mentions() for n in re.findall(
                r"\bu\d{4}\b", l)}
        # each is logged (moved or stuck) once it has been met
        wait_for(lambda: len(named()) == 1000, 60, what="1,000 logged")
        first = len(mentions())
        drop(env, "good", "From: a@x.test\nTo: b@y.test\n\nhello\n")
        wait_for(lambda: len(mailq(env)) == 1, 10, what="good message")
        # three more rescans at least (rescan_interval = 1s), each listing
        # all 1,000 again
        time.sleep(4)
        lines = mentions()
        per = {}
        for l in lines:
            for n in set(re.findall(r"\bu\d{4}\b", l)):
                per[n] = per.get(n, 0) + 1
        worst = max(per.values()) if per else 0
        check(len(lines) <= 1000 + 5,
              "%d log lines about 1,000 entries" % len(lines))
        check(worst <= 1, "an entry logged %d times" % worst)
        check_eq(len(lines), first, "no new lines on later rescans")
        if root:
            bad = rqlib.bad_files(env)
            moved = [n for n in names[::2] if n.encode() in bad]
            check_eq(len(moved), 500, "unreadable files moved to bad/")
            check("cannot open" in bad[b"u0000"][0][1], "reason")
        stop(p)


def test_newline_name_cannot_forge_log():
    """A spool file whose name holds a newline and a fake delivery line
    leaves no fake line in the log; the name is kept (escaped) in the
    reason."""
    fake = ("Nov 29 03:07:40 h relayq[1]: 0123456789ABCDEF: to=<v@x.test>, "
            "relay=x[192.0.2.1]:25, delay=1, dsn=2.0.0, "
            "status=sent (250 ok), tries=1")
    name = "evil\n" + fake + "\r\x1b[2J"
    with rqlib.Env(CONF) as env:
        p = start(env)
        drop(env, name, "From: a@x.test\n\nno recipient\n")
        wait_for(lambda: not incoming(env) and "evil" in env.log_text(),
                 10, what="the file taken")
        stop(p)
        text = env.log_text()
        for l in text.splitlines():
            check(not l.startswith(fake[:40]), "a fake line: %r" % l)
            check(LOG_LINE.match(l), "not a log line: %r" % l)
        check("\x1b" not in text and "\r" not in text, "control bytes")
        check("evil\\x0aNov 29" in text, "escaped name in the log")
        check(name.encode() in rqlib.bad_files(env), "name in the reason")


def test_hard_links():
    """A file that keeps a second hard link goes to bad/ (as Postfix's
    pickup refuses one: the other name may be anyone's file); one linked
    in and then unlinked from tmp/ (a maildir-style writer) is queued."""
    with rqlib.Env(CONF) as env:
        p = start(env)
        tmp = os.path.join(env.spool, "tmp")
        inc = os.path.join(env.spool, "incoming")
        with open(os.path.join(tmp, "kept"), "wb") as f:
            f.write(b"From: a@x.test\nTo: b@y.test\n\nlinked\n")
        os.link(os.path.join(tmp, "kept"), os.path.join(inc, "two"))
        with open(os.path.join(tmp, "once"), "wb") as f:
            f.write(b"From: c@x.test\nTo: b@y.test\n\nonce\n")
        os.link(os.path.join(tmp, "once"), os.path.join(inc, "one"))
        os.unlink(os.path.join(tmp, "once"))
        wait_for(lambda: not incoming(env), 20, what="both taken")
        msgs = mailq(env)
        check_eq([m["sender"] for m in msgs], ["c@x.test"], "queued")
        bad = rqlib.bad_files(env)
        check(b"two" in bad and "hard links" in bad[b"two"][0][1],
              "the linked file in bad/: %r" % bad)
        stop(p)


def writer_test(interval, lines=None, seconds=None):
    """Writes a message straight into incoming/ (no tmp/, no rename), the
    file open throughout, one line every INTERVAL seconds (LINES of them,
    or for SECONDS); checks that exactly one message is queued, with
    every line in order."""
    with rqlib.Env(CONF) as env:
        p = start(env)
        # the daemon is past its start-up listing (which takes what it
        # finds as it is) once a first message is in
        drop(env, "probe", "From: p@x.test\nTo: r@y.test\n\nprobe\n")
        wait_for(lambda: len(mailq(env)) == 1, 10, what="probe queued")
        path = os.path.join(env.spool, "incoming", "direct")
        want = []
        t_end = time.time() + (seconds or 0)
        with open(path, "wb") as f:
            f.write(b"From: w@x.test\nTo: r@y.test\nSubject: direct\n\n")
            f.flush()
            while (len(want) < lines if lines is not None
                   else time.time() < t_end):
                line = b"line %06d of the message" % len(want)
                want.append(line)
                f.write(line + b"\n")
                f.flush()
                time.sleep(interval)
        wait_for(lambda: len(mailq(env)) >= 2 and not incoming(env), 20,
                 what="the message queued")
        time.sleep(3)           # rescans and settling: nothing more comes
        msgs = [m for m in mailq(env) if m["sender"] == "w@x.test"]
        check_eq(len(msgs), 1, "messages queued")
        body = bodies(env, msgs)[0]
        got = [l for l in body.split(b"\r\n") if l.startswith(b"line ")]
        check_eq(len(got), len(want), "lines in the stored message")
        check(got == want, "lines in order, complete")
        check_eq(rqlib.bad_files(env), {}, "bad/")
        stop(p)


def test_writer_one_line_a_second():
    writer_test(1.0, lines=10)


def test_writer_every_millisecond():
    writer_test(0.001, seconds=5)


def test_writer_pauses():
    """A writer that holds its file open in incoming/ and pauses longer
    than the settle time and several rescans: the file is not taken (and
    an empty one not moved to bad/) until it is closed: the kernel
    refuses a read lease while a file is open for writing."""
    with rqlib.Env(CONF) as env:
        p = start(env)
        drop(env, "probe", "From: p@x.test\nTo: r@y.test\n\nprobe\n")
        wait_for(lambda: len(mailq(env)) == 1, 10, what="probe queued")
        inc = os.path.join(env.spool, "incoming")
        fa = open(os.path.join(inc, "paused"), "wb")
        fb = open(os.path.join(inc, "empty"), "wb")
        fa.write(b"From: w@x.test\nTo: r@y.test\nSubject: paused\n\n")
        fa.flush()
        time.sleep(8)   # settle (5 s) and rescans (1 s) pass
        check_eq(len(mailq(env)), 1, "nothing taken while open")
        check_eq(rqlib.bad_files(env), {}, "bad/ while open")
        fa.write(b"the rest of it\n")
        fa.close()
        fb.write(b"From: e@x.test\nTo: r@y.test\n\nlate\n")
        fb.close()
        wait_for(lambda: len(mailq(env)) == 3 and not incoming(env), 20,
                 what="both taken once closed")
        msgs = [m for m in mailq(env) if m["sender"] == "w@x.test"]
        check(b"the rest of it" in bodies(env, msgs)[0], "whole message")
        check_eq(rqlib.bad_files(env), {}, "bad/")
        stop(p)


def test_incoming_replaced():
    """incoming/ renamed away and made anew while the daemon runs: the
    daemon does not go on watching the old one unseen; it stops with 75
    (systemd starts it again) and says why."""
    with rqlib.Env(CONF) as env:
        p = start(env)
        drop(env, "one", "From: p@x.test\nTo: r@y.test\n\none\n")
        wait_for(lambda: len(mailq(env)) == 1, 10, what="one queued")
        inc = os.path.join(env.spool, "incoming")
        os.rename(inc, inc + ".old")
        os.mkdir(inc, 0o1733)
        check_eq(p.wait(20), 75, "exit status")
        check("is not the directory opened at start" in env.log_text(),
              "logged")
        # started again, it takes what is in the new one
        drop(env, "two", "From: p@x.test\nTo: r@y.test\n\ntwo\n")
        p = start(env)
        wait_for(lambda: len(mailq(env)) == 2, 10, what="two queued")
        stop(p)


def test_orphan_reason_swept():
    """An empty NAME.reason with no NAME in bad/ (a daemon killed between
    the two steps of a move) is removed at start; the rest stay."""
    with rqlib.Env(CONF) as env:
        bad = os.path.join(env.spool, "bad")
        os.makedirs(bad, 0o700)
        for name, data in (("00000000000000A1.reason", b""),
                           ("00000000000000A2.reason", b"why\n"),
                           ("00000000000000A3.reason", b""),
                           ("00000000000000A3", b"the entry\n")):
            with open(os.path.join(bad, name), "wb") as f:
                f.write(data)
        p = start(env)
        # the sweep is at start; "daemon started" comes once the signals
        # are handled (a SIGTERM before would kill it outright)
        wait_for(lambda: "daemon started" in env.log_text(), 10,
                 what="started")
        check("removed bad/00000000000000A1.reason" in env.log_text(),
              "sweep logged")
        check_eq(sorted(os.listdir(bad)),
                 ["00000000000000A2.reason", "00000000000000A3",
                  "00000000000000A3.reason"], "bad/ after the sweep")
        stop(p)


def test_pickup_line():
    """A relayq/pickup line with the spool file's owner, then the qmgr
    line; pflogsumm counts the message as received."""
    with rqlib.Env(CONF) as env:
        p = start(env)
        drop(env, "m1", "X-Sender: <s@a.test>\nX-Receiver: <r@b.test>\n"
             "Priority: urgent\n\nbody\n")
        wait_for(lambda: len(mailq(env)) == 1, 10, what="queued")
        qid = mailq(env)[0]["queue_id"]
        stop(p)
        lines = log_lines(env)
        pick = [i for i, l in enumerate(lines) if re.search(
            r"relayq/pickup\[\d+\]: %s: uid=%d from=<s@a\.test>$" %
            (qid, os.getuid()), l)]
        qmgr = [i for i, l in enumerate(lines) if re.search(
            r"relayq/qmgr\[\d+\]: %s: from=<s@a\.test>, size=\d+, "
            r"nrcpt=1, priority=urgent$" % qid, l)]
        check_eq(len(pick), 1, "pickup lines")
        check_eq(len(qmgr), 1, "qmgr lines")
        check(pick[0] < qmgr[0], "pickup before qmgr")
        if os.path.exists("/usr/sbin/pflogsumm"):
            out = subprocess.run(["/usr/sbin/pflogsumm",
                                  "--syslog-name=relayq", env.log],
                                 stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, timeout=60)
            m = re.search(r"^\s*(\d+)\s+received\b",
                          out.stdout.decode(errors="replace"), re.M)
            check(m is not None, "pflogsumm prints received")
            check_eq(int(m.group(1)), 1, "pflogsumm received")
        # a UTF-8 sender: both lines name it the same way
        p = start(env)
        drop(env, "m2", "X-Sender: <j\u00f6rg@a.test>\n"
             "X-Receiver: <r@b.test>\n\nbody\n")
        wait_for(lambda: len(mailq(env)) == 2, 10, what="queued")
        stop(p)
        text = env.log_text()
        check("uid=%d from=<j\u00f6rg@a.test>" % os.getuid() in text and
              ": from=<j\u00f6rg@a.test>, size=" in text, "UTF-8 sender")


def stop_all(env):
    """Stops what ENV started (before its file systems are unmounted)."""
    for p in env.procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def mount_tmpfs(path, size):
    os.makedirs(path)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size,
                    "tmpfs", path], check=True)


def umount(path):
    """Unmounts PATH; retries a while, as the inotify watch of a daemon
    that just ended is let go a little later."""
    for _ in range(100):
        if subprocess.run(["umount", path],
                          stderr=subprocess.DEVNULL).returncode == 0:
            return
        if not os.path.ismount(path):
            return
        time.sleep(0.1)
    subprocess.run(["umount", "-l", path], stderr=subprocess.DEVNULL)


def min_free_test(which, size, filler_mb, minfree):
    """Intake pauses while the file system of WHICH ("spool" or "queue",
    a tmpfs of SIZE) has less than MINFREE free (a FILLER_MB MiB file is
    written there), with one line, and resumes by itself with one line
    once the filler is gone."""
    if os.geteuid() != 0:
        print("  skipped: not root")
        return
    with rqlib.Env(CONF) as env:
        fs = os.path.join(env.dir, "fs")
        mount_tmpfs(fs, size)
        try:
            if which == "spool":
                env.spool = os.path.join(fs, "spool")
            else:
                env.queue = os.path.join(fs, "queue")
            env.write_conf(CONF + "min_free_space = %s\n"
                           "queue_map_size = 16m\nmax_message_size = 1m\n" % minfree)
            p = start(env)
            drop(env, "m1", "From: a@x.test\nTo: b@y.test\n\none\n")
            wait_for(lambda: len(mailq(env)) == 1, 10, what="first queued")
            filler = os.path.join(fs, "filler")
            with open(filler, "wb") as f:
                f.write(b"\0" * (filler_mb << 20))
            # the next rescan (1 s) sees it
            wait_for(lambda: "intake paused" in env.log_text(), 10,
                     what="the pause line")
            drop(env, "m2", "From: a@x.test\nTo: b@y.test\n\ntwo\n")
            time.sleep(3)
            check_eq(incoming(env), ["m2"], "m2 waits in incoming/")
            check_eq(len(mailq(env)), 1, "still one queued")
            os.unlink(filler)
            wait_for(lambda: len(mailq(env)) == 2, 10, what="resumed")
            text = env.log_text()
            check_eq(text.count("intake paused"), 1, "pause lines")
            check_eq(text.count("intake resumed"), 1, "resume lines")
            check(re.search(r"file system of %s, less than "
                            r"min_free_space" % re.escape(
                                env.queue if which == "queue" else
                                os.path.join(env.spool, "incoming")), text),
                  "the pause line names the file system")
            stop(p)
        finally:
            stop_all(env)
            umount(fs)


def test_min_free_space_spool():
    min_free_test("spool", "16m", 12, "6m")


def test_min_free_space_queue():
    min_free_test("queue", "32m", 26, "8m")


def ident_count(env):
    """Entries in the queue's ident db (mdb_stat, read-only)."""
    p = subprocess.run(["mdb_stat", "-s", "ident", env.queue],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=30)
    m = re.search(r"Entries: (\d+)", p.stdout.decode())
    check(m is not None, "mdb_stat: %r" % p.stderr)
    return int(m.group(1))


def test_fsync_error_keeps_identities():
    """An fsync(2) error on incoming/ (a real one: ext4 on a loop device
    whose backing tmpfs is full, so the journal commit fails) keeps the
    identities of the files unlinked before it, with a log line.  Root
    only."""
    if os.geteuid() != 0 or not shutil.which("losetup") or \
            not shutil.which("mkfs.ext4") or not shutil.which("mdb_stat"):
        print("  skipped: needs root, losetup, mkfs.ext4, mdb_stat")
        return
    with rqlib.Env(CONF) as env:
        back = os.path.join(env.dir, "back")
        fs = os.path.join(env.dir, "fs")
        mount_tmpfs(back, "24m")
        loop = None
        try:
            img = os.path.join(back, "disk.img")
            with open(img, "wb") as f:
                f.truncate(256 << 20)    # > min_free_space free
            # the journal is not written by mkfs: its blocks take tmpfs
            # pages only when a commit first writes them
            subprocess.run(["mkfs.ext4", "-q", "-F", "-E",
                            "lazy_itable_init=1,lazy_journal_init=1", img],
                           check=True)
            loop = subprocess.run(["losetup", "-f", "--show", img],
                                  stdout=subprocess.PIPE, check=True
                                  ).stdout.decode().strip()
            os.makedirs(fs)
            subprocess.run(["mount", "-o", "commit=600,errors=continue",
                            loop, fs], check=True)
            env.spool = os.path.join(fs, "spool")
            env.write_conf(CONF)
            p = start(env)
            drop(env, "m0", "From: a@x.test\nTo: b@y.test\n\nzero\n")
            wait_for(lambda: len(mailq(env)) == 1 and not incoming(env),
                     10, what="first queued")
            wait_for(lambda: ident_count(env) == 0, 10,
                     what="its identity deleted")
            subprocess.run(["sync", "-f", fs], check=True)
            try:
                with open(os.path.join(back, "fill"), "wb") as f:
                    while True:
                        f.write(b"\0" * (1 << 20))
            except OSError:
                pass
            for i in range(1, 4):
                drop(env, "m%d" % i, "From: a@x.test\nTo: b@y.test\n\n"
                     "message %d\n" % i)
            wait_for(lambda: len(mailq(env)) == 4, 10, what="3 queued")
            time.sleep(2)           # idle: identities would go now
            check_eq(ident_count(env), 3, "identities kept")
            check("fsync %s/incoming: Input/output error" % env.spool
                  in env.log_text(), "the fsync line")
            stop(p)
        finally:
            stop_all(env)
            if os.path.ismount(fs):
                umount(fs)
            if loop:
                subprocess.run(["losetup", "-d", loop],
                               stderr=subprocess.DEVNULL)
            umount(back)


if __name__ == "__main__":
    rqlib.main(globals())
