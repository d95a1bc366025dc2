"""A message with 100,000 recipients (issue 10, item 4): while its
results are being committed the event loop stays responsive (a small
urgent message to another destination is delivered, SIGTERM is obeyed
within seconds, not minutes), and each recipient is tried once."""
import os
import re
import signal
import time

import rqlib
from rqlib import check, check_eq
from test_runner_lib import SANITIZE, deliveries, dumps, sink

N = 100000
# generous: it takes well under a second here; a loop frozen by
# quadratic result commits took about a minute
BOUND = 15.0 if not SANITIZE else 30.0


def conf(env, big, probe):
    text = ("relayhost = [127.0.0.1]:%d\ntls = none\n"
            "[domain probe.test]\nrelayhost = [127.0.0.1]:%d\n" %
            (big, probe))
    # max_recipients (added by another change, default 10,000): raise it
    # when this build knows the key
    env.write_conf("max_recipients = 200000\n" + text)
    p = env.run("check-config")
    if p.returncode != 0:
        check(b"unknown key" in p.stderr, p.stderr.decode())
        env.write_conf(text)


def big_file(env):
    os.makedirs(os.path.join(env.spool, "tmp"), exist_ok=True)
    tmp = os.path.join(env.spool, "tmp", "big")
    with open(tmp, "w") as f:
        f.write("X-Sender: <s@src.test>\n")
        f.write("".join("X-Receiver: <r%06d@big.test>\n" % i
                        for i in range(N)))
        f.write("Subject: many\n\nbody\n")
    return tmp


def drop_probe(env):
    tmp = os.path.join(env.spool, "tmp", "probe")
    with open(tmp, "w") as f:
        f.write("X-Sender: <s@src.test>\nX-Receiver: <p@probe.test>\n"
                "Priority: urgent\nSubject: probe\n\nprobe\n")
    os.rename(tmp, os.path.join(env.spool, "incoming", "probe"))


def test_loop_stays_responsive():
    with rqlib.Env() as env:
        _, big, _ = sink(env, dump=False)
        _, probe, pd = sink(env)
        conf(env, big, probe)
        tmp = big_file(env)
        p = env.start("run")
        rqlib.wait_for(lambda: "daemon started" in env.log_text(), 20,
                       what="start")
        os.rename(tmp, os.path.join(env.spool, "incoming", "big"))
        rqlib.wait_for(lambda: re.search(r"to=<r\d+@big\.test>.*status=sent",
                                         env.log_text()),
                       120, step=0.01, what="the first delivery")
        t0 = time.time()
        drop_probe(env)
        rqlib.wait_for(lambda: dumps(pd), 60, step=0.01, what="the probe")
        lat = time.time() - t0
        t1 = time.time()
        p.send_signal(signal.SIGTERM)
        rc = p.wait(120)
        took = time.time() - t1
        check_eq(rc, 0, "exit status after SIGTERM")
        print("probe %.2f s, SIGTERM %.2f s" % (lat, took))
        check(lat < BOUND, "probe delivered after %.1f s" % lat)
        check(took < BOUND, "SIGTERM obeyed after %.1f s" % took)
        got = [d for d in deliveries(env) if d["to"].endswith("@big.test")]
        check(len(got) > 0, "no delivery")
        check_eq([d["line"] for d in got if d["tries"] != 1][:3], [],
                 "tried more than once")


if __name__ == "__main__":
    rqlib.main(globals())
