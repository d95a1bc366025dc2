"""Crash test: SIGKILL `relayq run` at random moments (at least 20 times)
while N messages are taken in and drained to smtp-sink, restarting it
each time; then every message was delivered at least once, and the
duplicates are no more than the messages in flight at the kills (those
the sink had received but whose result was not yet committed: still in
the queue right after the kill).

N = 20,000 (4,000 when RELAYQ_SANITIZE=1: the ASan build is slower).
Each message has its own recipient, which names it."""
import json
import os
import random
import re
import signal
import time

import rqlib
from rqlib import check, check_eq
from test_runner_lib import SANITIZE, drop, run_idle, sink

N = 4000 if SANITIZE else 20000
KILLS = 22


class Received:
    """Incremental reader of the sink's dump file (smtp-sink -D)."""

    def __init__(self, d):
        self.path = os.path.join(d, "all")
        self.off = 0
        self.count = {}

    def update(self):
        """Called only while no relayq runs (the sink is then done with
        every transaction it will ever see of that run)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.off)
                data = f.read()
        except FileNotFoundError:
            return self.count
        for m in re.finditer(rb"X-Rcpt-Args: <(r\d+)@", data):
            t = m.group(1).decode()
            self.count[t] = self.count.get(t, 0) + 1
        self.off += len(data)
        return self.count


def queued(env):
    """Tokens of the recipients still in the queue (not delivered)."""
    p = env.run("mailq", "--json", check_rc=0, timeout=120)
    out = set()
    for line in p.stdout.decode().splitlines():
        m = json.loads(line)
        for r in m["recipients"]:
            if r["state"] in ("pending", "deferred"):
                out.add(r["address"].split("@")[0])
    return out


def test_sigkill_while_draining():
    rnd = random.Random(os.getpid())
    with rqlib.Env() as env:
        sp, port, dd = sink(env, one_file=True)
        env.write_conf("relayhost = [127.0.0.1]:%d\nretry.min = 1s\n"
                       "retry.max = 2s\ntimeout.hoststatus = 0\n"
                       "max_connections = 2\n" % port)
        for i in range(N):
            drop(env, "r%05d@dst.test" % i, body="message %d\n%s\n" %
                 (i, "y" * 200))
        recv = Received(dd)
        inflight_total = 0
        kills = 0
        before = {}
        t0 = time.time()
        drain_kills = 0  # kills that hit a run that was delivering
        total = N
        while drain_kills < KILLS and time.time() - t0 < 150:
            n0 = sum(recv.count.values())
            p = env.start("run")
            time.sleep(rnd.uniform(0.03, 0.3))
            if p.poll() is not None:
                raise rqlib.Fail("relayq run died by itself (%d): %s" % (
                    p.returncode, p.stderr.read().decode()[-2000:]))
            p.send_signal(signal.SIGKILL)
            p.wait()
            kills += 1
            time.sleep(0.1)  # the sink finishes writing
            got = recv.update()
            if sum(got.values()) > n0:
                drain_kills += 1
            q = queued(env)
            # received since the last kill, result not committed
            inflight = sum(1 for t, c in got.items()
                           if t in q and c > before.get(t, 0))
            inflight_total += inflight
            before = dict(got)
            if not q and len(got) >= total:
                if drain_kills >= KILLS:
                    break
                # a fast machine drained it all: more mail to kill under
                for i in range(total, total + N // 10):
                    drop(env, "r%05d@dst.test" % i, body="message %d\n" % i)
                total += N // 10
        print("  %d kills (%d while delivering) in %.1fs; %d received; "
              "%d in flight at kills" % (kills, drain_kills,
                                         time.time() - t0,
                                         len(recv.update()), inflight_total))
        check(kills >= 20, "only %d kills" % kills)
        run_idle(env, timeout=240)
        sp.terminate()
        sp.wait()
        got = recv.update()
        missing = ["r%05d" % i for i in range(total)
                   if "r%05d" % i not in got]
        check(not missing, "%d never delivered, e.g. %s" %
              (len(missing), missing[:5]))
        dups = sum(c - 1 for c in got.values())
        print("  duplicates: %d (bound %d)" % (dups, inflight_total))
        check(dups <= inflight_total, "%d duplicates > %d in flight at "
              "the kills" % (dups, inflight_total))
        check_eq(queued(env), set(), "left in the queue")
        check("in-flight" in env.log_text() or inflight_total == 0,
              "leases never recovered")


if __name__ == "__main__":
    rqlib.main(globals())
