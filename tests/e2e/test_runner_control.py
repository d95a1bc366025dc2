"""The runner under control while it runs: hold, release, flush and
delete made by other processes take effect within about a second, and
`run --exit-when-idle` exits once nothing is due."""
import json
import os
import pwd
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
            uid = [l.split()[1] for l in f if l.startswith("Uid:")][0]
        check_eq(uid, str(pwd.getpwnam("nobody").pw_uid), "uid")
        check("running as nobody" in env.log_text(), "start-up line")
        drop(env, "u@dst.test")
        rqlib.wait_for(lambda: deliveries(env), 20, what="a delivery line")
        st = os.stat(env.queue)
        check_eq(st.st_uid, pwd.getpwnam("nobody").pw_uid, "queue owner")
        check_eq(st.st_mode & 0o777, 0o700, "queue mode")
        stop(p)


if __name__ == "__main__":
    rqlib.main(globals())
