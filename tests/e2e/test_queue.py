"""test_queue - the queue end to end with the real `relayq run`: spool
intake of all three priority classes into mailq --json, every bad-input
case into bad/ with NAME.reason, the inspection and control commands
(mailq text and filters, summary, show, hold/release/delete/flush, exit
codes, permissions), and a restart that resumes the queue.

Delivery goes to 127.0.0.1:1 where nothing listens, so messages stay
queued as deferred with a long retry.
"""
import json
import os
import re
import stat
import subprocess
import time

import rqlib
from rqlib import check, check_eq, wait_for

CONF = ("relayhost = [127.0.0.1]:1\nretry.min = 1h\nretry.max = 2h\n"
        "max_message_size = 4k\ntimeout.queuewarn = 1h\n")


def drop(env, name, data):
    """Writes a spool file the way `send` does: tmp/, then rename."""
    if isinstance(data, str):
        data = data.encode()
    tmp = os.path.join(env.spool, "tmp", name)
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, os.path.join(env.spool, "incoming", name))


def incoming(env):
    return [n for n in os.listdir(os.path.join(env.spool, "incoming"))
            if not n.startswith(".")]


def mailq_json(env, *args):
    p = env.run("mailq", "--json", *args, check_rc=0)
    return [json.loads(l) for l in p.stdout.decode().splitlines() if l]


def start(env):
    p = env.start("run")
    # tmp/ (where drop() writes) is made after incoming/: wait for both
    wait_for(lambda: all(os.path.isdir(os.path.join(env.spool, d))
                         for d in ("incoming", "tmp", "bad")),
             10, what="spool tree")
    return p


def stop(env, p):
    p.send_signal(15)
    check_eq(p.wait(20), 0, "run exit status after SIGTERM")


def queued(env, n):
    wait_for(lambda: len(mailq_json(env)) >= n and not incoming(env), 20,
             what="%d messages queued" % n)
    return mailq_json(env)


def test_classes_json():
    with rqlib.Env(CONF) as env:
        p = start(env)
        drop(env, "u", "X-Sender: <s1@a.test>\nX-Receiver: <r1@b.test>\n"
             "Priority: urgent\nSubject: u\n\nbody u\n")
        drop(env, "n", "From: Joe <joe@a.test>\nTo: Ann <ann@c.test>, "
             "bob@d.test\nBcc: hidden@e.test\nPriority: normal\n\nbody n\n")
        drop(env, "l", "From: nu@a.test\nTo: low@f.test\n"
             "Priority: Non-Urgent\n\nbody l\n")
        drop(env, "x", "From: x@a.test\nTo: other@g.test\n"
             "Priority: bulk\n\nbody x\n")
        drop(env, ".ignored", "To: never@h.test\n\nx\n")
        # 8-bit addresses: UTF-8 kept, other bytes escaped: valid JSON
        drop(env, "e", b"X-Sender: <j\xe9@a.test>\nX-Receiver: "
             b"<m\xc3\xbcller@b.test>\nPriority: urgent\n\n8bit\n")
        t0 = time.time()
        msgs = queued(env, 5)
        check_eq(len(msgs), 5, "messages")
        by = {m["sender"]: m for m in msgs}
        check_eq(by["s1@a.test"]["priority"], "urgent", "urgent class")
        check_eq(by["joe@a.test"]["priority"], "normal", "normal class")
        check_eq(by["nu@a.test"]["priority"], "non-urgent", "non-urgent")
        check_eq(by["x@a.test"]["priority"], "normal", "unknown -> normal")
        check_eq(by["j\xe9@a.test"]["recipients"][0]["address"],
                 "m\xfcller@b.test", "8-bit addresses in JSON")
        check_eq([r["address"] for r in by["joe@a.test"]["recipients"]],
                 ["ann@c.test", "bob@d.test", "hidden@e.test"], "-t rcpts")
        for m in msgs:
            check(re.fullmatch(r"[0-9A-F]{16}", m["queue_id"]), "queue_id")
            check(abs(m["arrival_time"] - t0) < 30, "arrival_time")
            check_eq(m["held"], False, "held")
            check_eq(m["warned"], False, "warned")
            for r in m["recipients"]:
                check(r["state"] in ("pending", "deferred"), r["state"])
                check(isinstance(r["attempts"], int), "attempts")
                check(r["next_attempt"] is None or
                      isinstance(r["next_attempt"], int), "next_attempt")
            body = env.run("show", "--body", m["queue_id"],
                           check_rc=0).stdout
            check_eq(m["message_size"], len(body), "message_size")
            check(body.startswith(b"Received: by relayq.test"), "Received")
            rcv = re.match(rb"Received: by relayq\.test \(relayq, from userid "
                           rb"(\d+)\)\r\n\tid ([0-9A-F]{16}); "
                           rb"([A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} "
                           rb"\d\d:\d\d:\d\d [+-]\d{4})\r\n", body)
            check(rcv is not None, "Received line's form: %r" % body[:120])
            check_eq(rcv.group(2).decode(), m["queue_id"], "Received id")
            mid = re.search(rb"\r\nMessage-ID: <(\d{14})\.([0-9A-F]{16})"
                            rb"@relayq\.test>\r\n", body)
            if mid is not None:
                check_eq(mid.group(2).decode(), m["queue_id"],
                         "Message-ID id")
            check(b"\r\nDate: " in body and b"\r\nMessage-ID: <" in body,
                  "Date and Message-ID added")
            check(b"X-Sender" not in body and b"X-Receiver" not in body
                  and b"Bcc:" not in body, "envelope headers removed")
            check(b"\n" not in body.replace(b"\r\n", b""), "CRLF only")
        check(os.path.exists(os.path.join(env.spool, "incoming",
                                          ".ignored")), ".file ignored")
        check_eq(len(mailq_json(env, "--priority", "urgent")), 2, "filter")
        check_eq(len(mailq_json(env, "--domain", "c.test")), 1, "domain")
        # a filter given twice, or an empty domain: 64, not last-wins
        env.run("mailq", "--priority", "normal", "--priority", "urgent",
                check_rc=64)
        env.run("mailq", "--domain", "", check_rc=64)
        check_eq(len(mailq_json(env, "--older-than", "1h")), 0, "older")
        check_eq(len(mailq_json(env, "--older-than", "0s")), 5, "older 0")
        log = env.log_text()
        check(re.search(r"[0-9A-F]{16}: from=<s1@a\.test>, size=\d+, "
                        r"nrcpt=1, priority=urgent", log), "intake log")
        stop(env, p)
        # restart: the queue is still there
        p = start(env)
        time.sleep(0.5)
        check_eq(len(mailq_json(env)), 5, "after restart")
        stop(env, p)


def test_class_ids():
    """Queue ids come from a range per class: sorted by id, each class's
    messages form one block (so a class delivered ahead of the others
    frees whole pages of the trees), and within a class ids grow with
    arrival, across a restart too."""
    classes = ("urgent", "normal", "non-urgent")
    with rqlib.Env(CONF) as env:
        os.makedirs(os.path.join(env.spool, "incoming"), exist_ok=True)
        os.makedirs(os.path.join(env.spool, "tmp"), exist_ok=True)
        for i in range(30):
            drop(env, "m%02d" % i, "From: s%d@a.test\nTo: r%d@b.test\n"
                 "Priority: %s\n\nbody %d\n" % (i, i, classes[i % 3], i))
        p = start(env)
        msgs = queued(env, 30)
        check_eq(len(msgs), 30, "messages")
        order = [m["priority"] for m in
                 sorted(msgs, key=lambda m: int(m["queue_id"], 16))]
        runs = [c for j, c in enumerate(order) if j == 0 or order[j - 1] != c]
        check_eq(sorted(runs), sorted(classes),
                 "one block of ids per class: %s" % order)
        last = {c: max(int(m["queue_id"], 16) for m in msgs
                       if m["priority"] == c) for c in classes}
        stop(env, p)
        p = start(env)
        for i, c in enumerate(classes):
            drop(env, "late%d" % i, "From: late%d@a.test\nTo: r@b.test\n"
                 "Priority: %s\n\nlate\n" % (i, c))
        msgs = queued(env, 33)
        for m in msgs:
            if m["sender"].startswith("late"):
                check(int(m["queue_id"], 16) > last[m["priority"]],
                      "a later %s message has a larger id" % m["priority"])
        stop(env, p)


BAD = [
    ("norcpt", b"From: a@b.test\nSubject: x\n\nbody\n", "no recipients"),
    ("badaddr", b"From: a@b.test\nTo: <broken@\n\nbody\n", "address"),
    # a bare CR is a line end: the address is cut at it
    ("craddr", b"X-Receiver: <a\rb@c.test>\n\nbody\n", "address"),
    ("nuladdr", b"X-Receiver: <a\0b@c.test>\n\nbody\n", "NUL"),
    ("toobig", b"To: a@b.test\n\n" + b"x" * 5000 + b"\n", "too large"),
    ("junk", bytes(range(1, 256)) * 4, "not a message"),
    ("junk2", b"To: a@b.test\nX: \0\x01\x02\n\nbody\n", "NUL"),
    ("empty", b"", "empty"),
]


def test_bad_input():
    with rqlib.Env(CONF) as env:
        p = start(env)
        inc = os.path.join(env.spool, "incoming")
        for name, data, _ in BAD:
            drop(env, name, data)
        os.mkdir(os.path.join(inc, "adir"))
        os.symlink("/etc/passwd", os.path.join(inc, "alink"))
        os.mkfifo(os.path.join(inc, "afifo"))
        names = [b[0] for b in BAD] + ["adir", "alink", "afifo"]
        reasons = {b[0]: b[2] for b in BAD}
        reasons.update({"adir": "directory", "alink": "symlink",
                        "afifo": "fifo"})
        if os.geteuid() == 0:
            os.mknod(os.path.join(inc, "adev"), stat.S_IFCHR | 0o600,
                     os.makedev(1, 3))
            names.append("adev")
            reasons["adev"] = "device"
        drop(env, "good", "To: ok@b.test\n\nfine\n")
        bad = os.path.join(env.spool, "bad")
        # bad/ names are the daemon's; each .reason names the original
        wait_for(lambda: all(n.encode() in rqlib.bad_files(env)
                             for n in names), 30, what="bad/ files")
        wait_for(lambda: not incoming(env), 10, what="incoming/ empty")
        found = {k.decode(): v[0] for k, v in rqlib.bad_files(env).items()}
        for name, data, _ in BAD:
            with open(found[name][0], "rb") as f:
                check_eq(f.read(), data, "%s kept untouched" % name)
        check(os.path.islink(found["alink"][0]), "symlink moved")
        check(os.path.isdir(found["adir"][0]), "dir moved")
        for n in names:
            check(not os.path.basename(found[n][0]).startswith(n),
                  "%s: bad/ name chosen by the daemon" % n)
            why = found[n][1]
            check(reasons[n] in why, "%s: reason %r lacks %r" %
                  (n, why, reasons[n]))
        check_eq(stat.S_IMODE(os.stat(bad).st_mode), 0o700, "bad/ mode")
        log = env.log_text()
        for n in names:
            check(re.search(r"warning: %s: moved to bad/" % n, log),
                  "log line for %s" % n)
        msgs = queued(env, 1)
        check_eq(len(msgs), 1, "only the good message queued")
        stop(env, p)


def test_commands():
    with rqlib.Env(CONF) as env:
        p = start(env)
        for i in range(3):
            drop(env, "m%d" % i, "From: s%d@a.test\nTo: r%d@b.test, "
                 "q%d@c.test\n\nbody %d\n" % (i, i, i, i))
        msgs = queued(env, 3)
        # ids[i] is m<i>'s: files dropped while the daemon lists incoming/
        # at start may be taken in another order
        ids = [m["queue_id"] for i in range(3) for m in msgs
               if m["sender"] == "s%d@a.test" % i]
        check_eq(len(ids), 3, "one message per sender")
        # the first attempt fails (nothing on port 1): deferred, 1h retry
        wait_for(lambda: all(r["attempts"] >= 1 for m in mailq_json(env)
                             for r in m["recipients"]), 20, what="attempts")
        # text listing
        out = env.run("mailq", check_rc=0).stdout.decode()
        for i in ids:
            check(i in out, "mailq lists %s" % i)
        check(re.search(r"-- \d+ Kbytes in 3 Requests\.", out), out)
        # postqueue -p's layout: a (reason) line, recipients indented
        check(re.search(r"^ +\(.+\)$", out, re.M), "reason line: " + out)
        check(re.search(r"^ {47}r0@b\.test$", out, re.M),
              "recipient indented: " + out)
        # hold: ! in mailq, held in JSON, --state held
        c = env.run("hold", ids[0], check_rc=0)
        check(b"1 message placed on hold" in c.stderr, c.stderr)
        # held already: nothing moves, and the count says so (postsuper)
        c = env.run("hold", ids[0], check_rc=0)
        check(b"0 messages placed on hold" in c.stderr, c.stderr)
        c = env.run("release", ids[1], check_rc=0)
        check(b"0 messages released" in c.stderr, c.stderr)
        out = env.run("mailq", check_rc=0).stdout.decode()
        check(ids[0] + "!" in out, "held marker")
        m0 = [m for m in mailq_json(env) if m["queue_id"] == ids[0]][0]
        check_eq(m0["held"], True, "held in JSON")
        check(all(r["next_attempt"] is None for r in m0["recipients"]),
              "no next attempt while held")
        check_eq([m["queue_id"] for m in mailq_json(env, "--state", "held")],
                 [ids[0]], "--state held")
        # flush is seen by the daemon within a second: attempts go to 2
        env.run("flush", ids[1], check_rc=0)
        wait_for(lambda: all(r["attempts"] >= 2 for m in mailq_json(env)
                             if m["queue_id"] == ids[1]
                             for r in m["recipients"]), 5,
                 what="flushed message retried")
        # the held message is not retried by a flush of all
        env.run("flush", check_rc=0)
        time.sleep(1.5)
        m0 = [m for m in mailq_json(env) if m["queue_id"] == ids[0]][0]
        check(all(r["attempts"] == 1 for r in m0["recipients"]),
              "held message not retried")
        c = env.run("release", ids[0] + "!", check_rc=0)
        check(b"1 message released" in c.stderr, c.stderr)
        m0 = [m for m in mailq_json(env) if m["queue_id"] == ids[0]][0]
        check_eq(m0["held"], False, "released")
        # show
        # mailq's marks after an ID are taken by show too; an ID not in
        # the queue is 67 in every queue command
        check_eq(env.run("show", ids[2] + "*", check_rc=0).stdout,
                 env.run("show", ids[2], check_rc=0).stdout, "ID*")
        for cmd in ("show", "hold", "release", "delete", "bounce"):
            env.run(cmd, "0123456789ABCDEF", check_rc=67)
        out = env.run("show", ids[2], check_rc=0).stdout
        check(b"sender: <s2@a.test>" in out, "show sender")
        check(b"recipient: <r2@b.test>" in out, "show rcpt")
        check(b"*** MESSAGE CONTENTS " + ids[2].encode() in out, "show body")
        check(out.endswith(b"\r\nbody 2\r\n"), "show body bytes")
        # summary
        out = env.run("summary", check_rc=0).stdout.decode()
        check(re.search(r"TOTAL\s+6\s+6", out), "summary by domain: " + out)
        check(re.search(r"normal\s+3\s+\d+\s+0\s+6\s+0\s+0", out),
              "summary by priority: " + out)
        check(re.search(r"b\.test\s+3", out), "summary domain row")
        # errors and exit codes
        check_eq(env.run("show", "0000000000000001").returncode, 67,
                 "show unknown id")
        check_eq(env.run("hold", "nothex").returncode, 64, "bad id")
        r = env.run("delete", ids[2], "00000000000000AB")
        check_eq(r.returncode, 67, "delete with one unknown id")
        check(b"00000000000000AB: no such message" in r.stderr, r.stderr)
        check_eq(len(mailq_json(env)), 2, "one deleted")
        check(re.search(ids[2] + r": removed", env.log_text()), "removed")
        check_eq(env.run("delete").returncode, 64, "delete without ids")
        for cmd in ("mailq", "summary", "show", "hold", "release", "delete",
                    "flush"):
            r = env.run(cmd, "--help", check_rc=0)
            check(b"usage: relayq " + cmd.encode() in r.stdout, cmd)
        # permission: another user gets 77
        if os.geteuid() == 0:
            os.chmod(env.dir, 0o755)
            os.chmod(env.conf, 0o644)
            r = subprocess.run([rqlib.BIN, "mailq", "-c", env.conf],
                               stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE,
                               preexec_fn=lambda: (os.setgid(65534),
                                                   os.setuid(65534)))
            check_eq(r.returncode, 77, "mailq as nobody")
            check(b"permission denied" in r.stderr, r.stderr)
        env.run("delete", "--all", check_rc=0)
        check_eq(mailq_json(env), [], "delete --all")
        out = env.run("mailq", check_rc=0).stdout.decode()
        check_eq(out, "Mail queue is empty\n", "empty queue")
        out = env.run("summary", check_rc=0).stdout.decode()
        check(re.search(r"TOTAL\s+0\s+0\s+0\s+0\s+0\s+0\n", out), out)
        stop(env, p)


def test_stale_tmp_files_removed():
    """A file a killed writer left in tmp/ over 36 hours ago is removed on
    the daemon's rescan; a fresh one (a writer still at work) is kept."""
    with rqlib.Env(CONF) as env:
        tmp = os.path.join(env.spool, "tmp")
        os.makedirs(tmp, mode=0o1733)
        old, new = os.path.join(tmp, "old.1"), os.path.join(tmp, "new.1")
        for f in (old, new):
            with open(f, "w") as fp:
                fp.write("Subject: x\n\nhalf-writ")
        t = time.time() - 37 * 3600
        os.utime(old, (t, t))
        p = start(env)
        wait_for(lambda: not os.path.exists(old), 10, what="stale removed")
        check(os.path.exists(new), "a fresh tmp/ file is kept")
        check("removed stale" in env.log_text(), "log line")
        stop(env, p)


if __name__ == "__main__":
    rqlib.main(globals())
