"""test_queue_mapfull - a full LMDB map pauses intake with one clear log
line, files stay in incoming/, and intake resumes by itself when space
returns: first after `relayq delete --all` frees pages, then after the
map is made bigger and the daemon reloaded (SIGHUP).  No file is lost
or queued twice: every message's unique recipient is logged once.
"""
import os
import random
import re
import signal
import time

import rqlib
from rqlib import check, check_eq, wait_for

N = 300


def conf(mapsize):
    # a 1m map takes messages of up to about 126k (relayq.conf(5))
    return ("relayhost = [127.0.0.1]:1\nretry.min = 2h\nretry.max = 4h\n"
            "queue_map_size = %s\nmax_message_size = 64k\n" % mapsize)


def test_map_full_pause_resume():
    rnd = random.Random(7)
    with rqlib.Env(conf("1m")) as env:
        p = env.start("run")
        inc = os.path.join(env.spool, "incoming")
        wait_for(lambda: os.path.isdir(inc), 10, what="spool")
        for i in range(N):
            # ~8 KiB of letters zlib cannot shrink much: 300 > 1 MiB
            text = "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz0123456789")
                           for _ in range(8000))
            tmp = os.path.join(env.spool, "tmp", "f%04d" % i)
            with open(tmp, "w") as f:
                f.write("To: u%d@b.test\nSubject: %d\n\n%s\n" % (i, i, text))
            os.rename(tmp, os.path.join(inc, "f%04d" % i))
        wait_for(lambda: "intake paused" in env.log_text(), 30,
                 what="pause log line")
        time.sleep(1.5)
        log = env.log_text()
        check_eq(log.count("intake paused"), 1, "one pause log line")
        check(re.search(r"queue full \(queue_map_size 1048576 bytes\)", log),
              "clear log line")
        left = len(os.listdir(inc))
        check(left > 0, "files stay in incoming/")
        check_eq(os.listdir(os.path.join(env.spool, "bad")), [], "bad/")
        # space returns: delete what is queued; intake goes on by itself
        env.run("delete", "--all", check_rc=0)
        wait_for(lambda: len(os.listdir(inc)) < left, 20, step=0.2,
                 what="intake resumed after delete")
        check("intake resumed" in env.log_text(), "resume log line")
        # a bigger map (SIGHUP reload) lets the rest in
        env.write_conf(conf("64m"))
        p.send_signal(signal.SIGHUP)
        wait_for(lambda: not os.listdir(inc), 30, step=0.2,
                 what="everything taken in after the map grew")
        p.send_signal(signal.SIGTERM)
        check_eq(p.wait(20), 0, "clean stop")
        log = env.log_text()
        got = re.findall(r"([0-9A-F]{16}): from=<", log)
        check_eq(len(got), N, "every file queued once")
        check_eq(len(set(got)), N, "distinct queue ids")
        check_eq(os.listdir(os.path.join(env.spool, "bad")), [], "bad/")


if __name__ == "__main__":
    rqlib.main(globals())
