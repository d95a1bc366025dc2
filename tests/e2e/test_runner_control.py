"""The runner under control while it runs: hold, release, flush and
delete made by other processes take effect within about a second,
`run --exit-when-idle` exits once nothing is due, and `show` prints each
recipient's attempt history while the runner retries."""
import json
import os
import pwd
import re
import time

import rqlib
from rqlib import check, check_eq
from test_runner_lib import deliveries, drop, dumps, run_idle, sink, start, stop


def qid(env, rcpt):
    for d in deliveries(env):
        if d["to"] == rcpt:
            return d["qid"]
    raise rqlib.Fail("no delivery line for %s" % rcpt)


def mailq(env):
    p = env.run("mailq", "--json", check_rc=0)
    return [json.loads(l) for l in p.stdout.decode().splitlines() if l]


def test_hold_release_flush_delete():
    port = rqlib.free_port()
    with rqlib.Env() as env:
        # Nothing listens yet: every first attempt is deferred for 1h.
        env.write_conf("relayhost = [127.0.0.1]:%d\nretry.min = 1h\n"
                       "timeout.hoststatus = 0\n" % port)
        for r in ("a", "b", "c"):
            drop(env, "%s@dst.test" % r)
        p = start(env)
        rqlib.wait_for(lambda: len(deliveries(env)) >= 3, 20,
                       what="three deferrals")
        check(all(d["status"] == "deferred" for d in deliveries(env)),
              "not all deferred")
        a, b, c = (qid(env, "%s@dst.test" % r) for r in "abc")
        _, _, dd = sink(env, port=port)

        env.run("hold", b, check_rc=0)
        env.run("delete", c, check_rc=0)
        t0 = time.time()
        env.run("flush", check_rc=0)
        rqlib.wait_for(lambda: len(dumps(dd)) >= 1, 10, what="flushed a")
        took = time.time() - t0
        check(took < 3.0, "flush took %.1fs" % took)
        time.sleep(1.5)
        got = [r[0] for r, _, _ in dumps(dd)]
        check_eq(got, ["a@dst.test"], "delivered after flush")

        q = {m["queue_id"]: m for m in mailq(env)}
        check(b in q and q[b]["held"], "b not held: %s" % q)
        check(c not in q, "c not deleted")
        check(a not in q, "a still queued")

        env.run("release", b, check_rc=0)
        t0 = time.time()
        env.run("flush", check_rc=0)
        rqlib.wait_for(lambda: len(dumps(dd)) >= 2, 10, what="released b")
        check(time.time() - t0 < 3.0, "release+flush too slow")
        got = sorted(r[0] for r, _, _ in dumps(dd))
        check_eq(got, ["a@dst.test", "b@dst.test"], "delivered")
        # the sink has the message a moment before the result commits
        rqlib.wait_for(lambda: mailq(env) == [], 10, what="queue empty")
        check_eq(mailq(env), [], "queue after all")
        stop(p)
        check("c@dst.test" not in [r[0] for r, _, _ in dumps(dd)],
              "deleted message delivered")


def test_exit_when_idle_with_deferred():
    """--exit-when-idle exits 0 while a recipient waits for its retry,
    and leaves it queued."""
    port = rqlib.free_port()
    with rqlib.Env() as env:
        env.write_conf("relayhost = [127.0.0.1]:%d\nretry.min = 1h\n" %
                       port)
        drop(env, "x@dst.test")
        t0 = time.time()
        run_idle(env, timeout=30)
        check(time.time() - t0 < 20, "took too long to go idle")
        q = mailq(env)
        check_eq(len(q), 1, "queued messages")
        r = q[0]["recipients"][0]
        check_eq(r["state"], "deferred", "state")
        check(r["next_attempt"] >= time.time() + 3000, "next attempt %r" %
              r["next_attempt"])
        check_eq(r["attempts"], 1, "attempts")


def test_user_switch():
    """Started as root with `user = nobody`: the daemon runs as nobody and
    the queue it created is that user's, mode 0700."""
    if os.geteuid() != 0:
        print("  skipped: not root")
        return
    with rqlib.Env() as env:
        os.chmod(env.dir, 0o755)
        env.write_conf("relayhost = [127.0.0.1]:%d\nretry.min = 1h\n"
                       "user = nobody\n" % rqlib.free_port())
        p = start(env)
        with open("/proc/%d/status" % p.pid) as f:
            status = f.read().splitlines()
        uid = [l.split()[1] for l in status if l.startswith("Uid:")][0]
        check_eq(uid, str(pwd.getpwnam("nobody").pw_uid), "uid")
        # one capability is kept: CAP_LEASE (intake's writer check)
        caps = dict(l.split(":\t") for l in status if l.startswith("Cap"))
        for k in ("CapPrm", "CapEff"):
            check_eq(caps[k], "%016x" % (1 << 28), k)
        check("running as nobody" in env.log_text(), "start-up line")
        drop(env, "u@dst.test")
        rqlib.wait_for(lambda: deliveries(env), 20, what="a delivery line")
        st = os.stat(env.queue)
        check_eq(st.st_uid, pwd.getpwnam("nobody").pw_uid, "queue owner")
        check_eq(st.st_mode & 0o777, 0o700, "queue mode")
        stop(p)


HIST = re.compile(r"^      (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}) "
                  r"(\w+)(?: (\d\.\d{1,3}\.\d{1,3}))?(?: \((.*)\))?$")


def show_recipients(out):
    """`relayq show --envelope` output: {addr: {"lines": [...], "history":
    [(date, state, dsn, reply)]}}."""
    rcpts, cur, in_hist = {}, None, False
    for line in out.splitlines():
        m = re.match(r"^recipient: <(.*)>$", line)
        if m:
            cur = rcpts.setdefault(m.group(1), {"lines": [], "history": []})
            in_hist = False
        elif cur is None:
            continue
        elif line == "    history:":
            in_hist = True
        elif in_hist and line.startswith("      "):
            h = HIST.match(line)
            check(h, "bad history line %r" % line)
            cur["history"].append(h.groups())
        else:
            in_hist = False
            cur["lines"].append(line)
    return rcpts


def test_show_history():
    """A recipient deferred again and again (nothing listens on the
    relayhost's port): `show` lists every attempt under it, oldest first,
    with state, status and reply, and keeps its other lines as they
    were."""
    port = rqlib.free_port()
    with rqlib.Env() as env:
        env.write_conf("relayhost = [127.0.0.1]:%d\nretry.min = 1s\n"
                       "retry.max = 1s\ntimeout.hoststatus = 0\n" % port)
        drop(env, "h@dst.test")
        p = start(env)
        rqlib.wait_for(lambda: sum(1 for d in deliveries(env)
                                   if d["to"] == "h@dst.test") >= 3, 30,
                       what="three deferrals")
        stop(p)
        ds = [d for d in deliveries(env) if d["to"] == "h@dst.test"]
        check(all(d["status"] == "deferred" for d in ds), "not deferred")
        qid = ds[0]["qid"]
        out = env.run("show", "--envelope", qid, check_rc=0).stdout.decode()
        r = show_recipients(out).get("h@dst.test")
        check(r is not None, "no recipient in:\n%s" % out)
        hist = r["history"]
        check(len(hist) >= 2, "history lines: %d in:\n%s" % (len(hist), out))
        # one line per attempt the daemon logged, in the same order
        check_eq(len(hist), len(ds), "history lines vs delivery lines")
        for (date, state, dsn, reply), d in zip(hist, ds):
            check_eq(state, "deferred", "state in history")
            check_eq(dsn, d["dsn"], "status in history")
            check(reply and "127.0.0.1" in reply and
                  "Connection refused" in reply and str(port) in reply,
                  "reply in history: %r" % reply)
            check(reply in d["reason"], "history %r, log %r" %
                  (reply, d["reason"]))
        check_eq([h[0] for h in hist], sorted(h[0] for h in hist),
                 "history oldest first")
        # the lines show printed before are still there, unchanged
        check("    attempts: %d" % len(ds) in r["lines"], r["lines"])
        check("    state: deferred" in r["lines"], r["lines"])
        check("    reason: %s" % hist[-1][3] in r["lines"], r["lines"])
        check_eq(r["lines"][0:2], ["    state: deferred",
                                   "    attempts: %d" % len(ds)],
                 "first recipient lines")
        # the full `show` has the history too, before the message
        full = env.run("show", qid, check_rc=0).stdout
        i = full.find(b"    history:\n")
        check(0 < i < full.find(b"*** MESSAGE CONTENTS"), "history placed")


if __name__ == "__main__":
    rqlib.main(globals())
