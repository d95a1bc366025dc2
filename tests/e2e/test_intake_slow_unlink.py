"""test_intake_slow_unlink - a spool on a disk that removes files slowly
(issue 18): intake queues a burst at the rate it reads and commits, and
the files' removals trail behind (up to UNLINK_TRAIL names), without
the event loop waiting for them; a crash while they trail loses and
duplicates nothing.

The daemon runs with tests/lib/slow_unlink.c preloaded: every unlinkat()
sleeps 20 ms, so the eight unlinker threads remove at most 400 files a
second.  N files are in incoming/ before `relayq run` starts, with
intake_batch = 100.  Checked:

- all N are queued while at least half of them are still in incoming/
  (an intake that waits for the removals, as before this change, had at
  most a few batches left: 4 x 100 here);
- while the removals trail, the daemon answers: `relayq flush` (which
  the daemon acts on through its event loop) is logged at once;
- SIGKILL then, with the files still there.  A restart (removals still
  slow) finds every leftover already queued ("already queued as ...: to
  be removed") and hands it to the unlinkers: the loop still answers a
  flush at once while they work, and a SIGTERM then stops the daemon in
  seconds without waiting for them ("queued but not yet removed");
- a restart at full speed with --exit-when-idle removes what is left:
  mailq lists each message exactly once, nothing went to bad/;
- a second burst with the shim, left to finish: `relayq run
  --exit-when-idle` exits 0 only once incoming/ is empty.
"""
import json
import os
import signal
import time

import rqlib
from rqlib import check, check_eq, wait_for

SAN = os.environ.get("RELAYQ_SANITIZE") == "1"
N = 1500 if SAN else 3000
CONF = ("relayhost = [127.0.0.1]:1\nretry.min = 2h\nretry.max = 4h\n"
        "intake_batch = 100\nrescan_interval = 1h\n")
SHIM = os.path.join(rqlib.BUILD, "tests", "lib", "rq_slow_unlink.so")


def slow_env(us):
    e = dict(os.environ, LD_PRELOAD=SHIM, RQ_SLOW_UNLINK_US=str(us))
    # the shim comes before the sanitizer runtime in the library list
    e["ASAN_OPTIONS"] = (os.environ.get("ASAN_OPTIONS", "") +
                         ":verify_asan_link_order=0").lstrip(":")
    return e


def message(i):
    return ("From: s%d@src.test\nTo: r%d@dst.test\nSubject: slow %d\n\n"
            "body %d\n" % (i, i, i, i)).encode()


def drop(env, start, n):
    tmp = os.path.join(env.spool, "tmp")
    inc = os.path.join(env.spool, "incoming")
    os.makedirs(tmp, exist_ok=True)
    os.makedirs(inc, exist_ok=True)
    for i in range(start, start + n):
        with open(os.path.join(tmp, "m%06d" % i), "wb") as f:
            f.write(message(i))
    for i in range(start, start + n):
        os.rename(os.path.join(tmp, "m%06d" % i),
                  os.path.join(inc, "m%06d" % i))


def queued(env):
    p = env.run("mailq", "--json", check_rc=0, timeout=120)
    return [json.loads(l) for l in p.stdout.decode().splitlines() if l]


def summary_total(env):
    p = env.run("summary")
    if p.returncode != 0:
        return 0    # the daemon has not made its queue yet
    out = p.stdout.decode()
    for line in out.split("By priority")[-1].splitlines():
        if line.startswith("TOTAL"):
            return int(line.split()[1])
    return 0


def flush_seen(env, n):
    """Runs `relayq flush`; returns the seconds until the daemon logged
    its Nth flush (it acts on it in its event loop)."""
    t0 = time.time()
    env.run("flush", check_rc=0)
    wait_for(lambda: env.log_text().count("host status forgotten") >= n,
             10, step=0.02, what="flush %d seen by the daemon" % n)
    return time.time() - t0


def test_burst_outruns_removals():
    check(os.path.exists(SHIM), "shim built: %s" % SHIM)
    with rqlib.Env(CONF) as env:
        inc = os.path.join(env.spool, "incoming")
        drop(env, 0, N)
        p = env.start("run", env=slow_env(20000))
        wait_for(lambda: summary_total(env) >= N, 120, step=0.05,
                 what="all queued")
        left = len(os.listdir(inc))
        check(left >= N // 2,
              "queued while the removals trail: %d of %d files left "
              "in incoming/ when all were queued" % (left, N))
        dt1 = flush_seen(env, 1)
        left1 = len(os.listdir(inc))
        check(left1 > 0, "files still trailing after the flush")
        p.send_signal(signal.SIGKILL)
        p.wait()
        # restart, removals slower still: the leftovers go to the
        # unlinkers, the loop answers, a stop does not wait for them
        p = env.start("run", env=slow_env(40000))
        wait_for(lambda: env.log_text().count("already queued as") >=
                 left1 // 2, 60, step=0.05, what="leftovers found")
        dt2 = flush_seen(env, 2)
        left2 = len(os.listdir(inc))
        check(left2 > 0, "leftovers still being removed after the flush")
        t0 = time.time()
        p.send_signal(signal.SIGTERM)
        check_eq(p.wait(30), 0, "clean stop")
        dt3 = time.time() - t0
        check(dt3 < 5, "the stop took %.1f s: it waited for the removals"
              % dt3)
        check("queued but not yet removed" in env.log_text(),
              "the stop says what it left")
        left3 = len(os.listdir(inc))
        print("  all %d queued with %d files left; flush seen in %.2f s; "
              "killed with %d left; after the restart flush in %.2f s, "
              "SIGTERM in %.2f s with %d left" %
              (N, left, dt1, left1, dt2, dt3, left3))
        # full speed: every leftover removed, each message queued once
        p = env.start("run", "--exit-when-idle")
        check_eq(p.wait(120), 0, "run --exit-when-idle")
        check_eq(os.listdir(inc), [], "incoming/ empty")
        check_eq(os.listdir(os.path.join(env.spool, "bad")), [], "bad/")
        seen = set()
        for m in queued(env):
            a = m["recipients"][0]["address"]
            i = int(a[1:a.index("@")])
            check(i not in seen, "message %d queued twice" % i)
            seen.add(i)
        check_eq(len(seen), N, "every message queued once")
        # a second burst, left to finish with the slow removals:
        # --exit-when-idle waits for them
        drop(env, N, 400)
        p = env.start("run", "--exit-when-idle", env=slow_env(20000))
        check_eq(p.wait(120), 0, "run --exit-when-idle")
        check_eq(os.listdir(inc), [], "incoming/ empty at exit")
        check_eq(len(queued(env)), N + 400, "second burst queued once")


if __name__ == "__main__":
    rqlib.main(globals())
