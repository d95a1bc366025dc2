"""test_queue_crash - exactly-once intake under SIGKILL: 20,000 messages
are renamed into incoming/ at a steady pace over ~4 s while `relayq run`
is killed with SIGKILL at random moments (at least 24 times, and at least
10 times with files waiting) and restarted; at the end
every message is in the queue exactly once (its unique recipient appears
once in mailq --json) and `show` gives back exactly its bytes (the
original minus X-Sender/X-Receiver, CRLF, after the Received: line).

Under ASan+UBSan (RELAYQ_SANITIZE=1) the count is 4,000: the sanitised
binary is several times slower, and the kill points matter, not the
count.  Delivery goes to 127.0.0.1:1 (nothing listens) with a long retry.
"""
import os
import random
import signal
import threading
import time

import rqlib
from rqlib import check, check_eq, wait_for

N = 4000 if os.environ.get("RELAYQ_SANITIZE") == "1" else 20000
KILLS = 24  # at least; more while files are still being renamed in
CONF = ("relayhost = [127.0.0.1]:1\nretry.min = 2h\nretry.max = 4h\n"
        "intake_batch = 250\nrescan_interval = 1s\n")


def message(i):
    return ("X-Sender: <s%d@src.test>\nX-Receiver: <r%d@dst%d.test>\n"
            "From: Sender %d <s%d@src.test>\nTo: r%d@dst%d.test\n"
            "Date: Sun, 22 Nov 2026 03:00:00 +0000\n"
            "Message-ID: <m%d@src.test>\nSubject: crash test %d\n\n"
            "line one of %d\nline two\n\n.dot line\n%s\n" %
            (i, i, i % 7, i, i, i, i % 7, i, i, i, "x" * (i % 300))).encode()


def expected(i):
    lines = message(i).split(b"\n")[2:]   # X-Sender, X-Receiver removed
    return b"\r\n".join(lines[:-1]) + b"\r\n"


def mailq(env):
    import json
    p = env.run("mailq", "--json", check_rc=0, timeout=120)
    return [json.loads(l) for l in p.stdout.decode().splitlines() if l]


def test_crash_intake():
    rnd = random.Random(int(os.environ.get("RELAYQ_SEED", "3")))
    with rqlib.Env(CONF) as env:
        os.makedirs(os.path.join(env.spool, "tmp"))
        os.makedirs(os.path.join(env.spool, "incoming"), exist_ok=True)
        tmp = os.path.join(env.spool, "tmp")
        inc = os.path.join(env.spool, "incoming")
        for i in range(N):
            with open(os.path.join(tmp, "m%06d" % i), "wb") as f:
                f.write(message(i))
        # a thread renames the files in at a steady pace over ~4 s while
        # the daemon is started and SIGKILLed at random moments
        def renamer():
            t0 = time.time()
            for i in range(N):
                os.rename(os.path.join(tmp, "m%06d" % i),
                          os.path.join(inc, "m%06d" % i))
                ahead = t0 + 4.0 * (i + 1) / N - time.time()
                if ahead > 0:
                    time.sleep(ahead)
        th = threading.Thread(target=renamer)
        th.start()
        kills = 0
        mid = 0     # kills while files were waiting in incoming/
        while th.is_alive() or kills < KILLS:
            p = env.start("run")
            time.sleep(rnd.uniform(0.02, 0.25))
            busy = len(os.listdir(inc)) > 0
            p.send_signal(signal.SIGKILL)
            p.wait()
            kills += 1
            mid += busy
        th.join()
        check(kills >= 20, "killed %d times" % kills)
        check(mid >= 10, "only %d kills landed during intake" % mid)
        # a last run takes in whatever is left
        p = env.start("run")
        wait_for(lambda: not os.listdir(inc), 120, step=0.2,
                 what="incoming/ drained")
        time.sleep(0.5)
        p.send_signal(signal.SIGTERM)
        check_eq(p.wait(30), 0, "clean stop")
        check_eq(os.listdir(os.path.join(env.spool, "bad")), [], "bad/")
        msgs = mailq(env)
        seen = {}
        for m in msgs:
            check_eq(len(m["recipients"]), 1, "one recipient")
            a = m["recipients"][0]["address"]
            i = int(a[1:a.index("@")])
            check(i not in seen, "message %d queued twice" % i)
            seen[i] = m["queue_id"]
        check_eq(len(seen), N, "every message queued once")
        # show gives back the exact bytes of every message
        ids = sorted(seen.items())
        for k in range(0, N, 500):
            part = ids[k:k + 500]
            out = env.run("show", "--body", *[q for _, q in part],
                          check_rc=0, timeout=120).stdout
            pos = 0
            for i, q in part:
                want = expected(i)
                # each body starts with the 2-line Received: header
                rcv = out.index(b"\r\n\tid %s; " % q.encode(), pos)
                start = out.index(b"\r\n", rcv + 2) + 2
                check(out[pos:pos + 9] == b"Received:", "Received first")
                got = out[start:start + len(want)]
                if got != want:
                    raise rqlib.Fail("message %d (%s): bytes differ:\n%r\n%r"
                                     % (i, q, got, want))
                pos = start + len(want)
            check_eq(pos, len(out), "show output fully accounted for")
        # a kill between a commit and its log lines may lose lines, never
        # add them
        log = env.log_text()
        check(log.count(": from=<") <= N, "intake log lines")
        print("  %d kills (%d during intake); %d files found committed but not unlinked; "
              "%d intake log lines" % (kills, mid, log.count("already queued as"),
                                       log.count(": from=<")))


if __name__ == "__main__":
    rqlib.main(globals())
