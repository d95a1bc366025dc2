"""test_intake_race - a file is queued once even when a listing finds it
again between the moment it was handed to a reader and its unlink.

A name used to leave the set of names in flight when it went to a reader,
while its file stayed in incoming/ until its commit and the unlink that
follows.  A rescan in that window handed the file to a reader again; the
second copy was filed after the first one's identity had been deleted
(the unlink done), so it was queued a second time.  With intake_batch = 1
(one commit per file, so the ring holds many files read ahead of their
commit) and rescan_interval = 1s, files renamed in at a steady pace hit
that window on every rescan: the old code queued most of them twice.

Then files renamed over names still in flight (read, not yet queued):
each new file is queued once, after the old one (or instead of it, when
it replaced the old one before that was read), and incoming/ ends empty.
"""
import json
import os
import signal
import time

import rqlib
from rqlib import check, check_eq, wait_for

SAN = os.environ.get("RELAYQ_SANITIZE") == "1"
N = 300 if SAN else 500
ROUNDS = 2
CONF = ("relayhost = [127.0.0.1]:1\nretry.min = 2h\nretry.max = 4h\n"
        "intake_batch = 1\nrescan_interval = 1s\n")


def message(tag, i):
    return ("X-Sender: <s%d@src.test>\nX-Receiver: <%s%d@dst.test>\n"
            "Subject: race %s %d\n\nbody %d\n" % (i, tag, i, tag, i, i)
            ).encode()


def queued(env):
    """{recipient address: number of messages queued for it}."""
    p = env.run("mailq", "--json", check_rc=0, timeout=120)
    n = {}
    for line in p.stdout.decode().splitlines():
        m = json.loads(line)
        for r in m["recipients"]:
            n[r["address"]] = n.get(r["address"], 0) + 1
    return n


def stop(p):
    p.send_signal(signal.SIGTERM)
    check_eq(p.wait(60), 0, "clean stop")


def started(env):
    """Starts `relayq run` and waits until intake watches incoming/."""
    p = env.start("run")
    wait_for(lambda: "daemon started" in env.log_text(), 30,
             what="daemon started")
    return p


def test_rescan_while_in_flight():
    with rqlib.Env(CONF) as env:
        tmp = os.path.join(env.spool, "tmp")
        inc = os.path.join(env.spool, "incoming")
        os.makedirs(tmp)
        os.makedirs(inc, exist_ok=True)
        p = started(env)
        for rnd in range(ROUNDS):
            tag = "r%d-" % rnd
            for i in range(N):
                with open(os.path.join(tmp, "m%06d" % i), "wb") as f:
                    f.write(message(tag, i))
            # renamed in over ~2 s: rescans find files in flight
            t0 = time.time()
            for i in range(N):
                os.rename(os.path.join(tmp, "m%06d" % i),
                          os.path.join(inc, "m%06d" % i))
                ahead = t0 + 2.0 * (i + 1) / N - time.time()
                if ahead > 0:
                    time.sleep(ahead)
            wait_for(lambda: not os.listdir(inc), 180, step=0.2,
                     what="incoming/ drained")
        # two more rescans: nothing may come back
        time.sleep(2.5)
        stop(p)
        n = queued(env)
        dups = sorted(a for a, c in n.items() if c > 1)
        check(not dups, "%d messages queued twice, e.g. %s" %
              (len(dups), dups[:5]))
        check_eq(len(n), ROUNDS * N, "every message queued")
        check_eq(os.listdir(os.path.join(env.spool, "bad")), [], "bad/")


def test_renamed_over_a_name_in_flight():
    ahead = 150 if SAN else 300
    names = 20
    with rqlib.Env(CONF) as env:
        tmp = os.path.join(env.spool, "tmp")
        inc = os.path.join(env.spool, "incoming")
        os.makedirs(tmp)
        os.makedirs(inc, exist_ok=True)
        for i in range(ahead):
            with open(os.path.join(tmp, "m%06d" % i), "wb") as f:
                f.write(message("m", i))
        for i in range(names):
            for tag in "ab":
                with open(os.path.join(tmp, "%s%02d" % (tag, i)), "wb") as f:
                    f.write(message(tag, i))
        p = started(env)
        # the old files (a) are read at once, but filed only after the
        # files ahead of them, one commit each: seconds later
        for i in range(ahead):
            os.rename(os.path.join(tmp, "m%06d" % i),
                      os.path.join(inc, "m%06d" % i))
        for i in range(names):
            os.rename(os.path.join(tmp, "a%02d" % i),
                      os.path.join(inc, "n%02d" % i))
        time.sleep(0.5)
        for i in range(names):
            os.rename(os.path.join(tmp, "b%02d" % i),
                      os.path.join(inc, "n%02d" % i))
        wait_for(lambda: not os.listdir(inc), 180, step=0.2,
                 what="incoming/ drained")
        time.sleep(2.5)
        stop(p)
        n = queued(env)
        for i in range(ahead):
            check_eq(n.get("m%d@dst.test" % i), 1, "message m%d" % i)
        for i in range(names):
            check_eq(n.get("b%d@dst.test" % i), 1, "new file b%d" % i)
            check(n.get("a%d@dst.test" % i, 0) <= 1, "old file a%d" % i)
        check_eq(len(n), ahead + names + sum(
            1 for i in range(names) if "a%d@dst.test" % i in n), "messages")
        check_eq(os.listdir(os.path.join(env.spool, "bad")), [], "bad/")
        print("  %d of %d old files were read before the new one came" %
              (len(n) - ahead - names, names))


if __name__ == "__main__":
    rqlib.main(globals())
