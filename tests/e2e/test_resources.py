"""Resources (issue 10, item 9): running out of file descriptors is the
daemon's problem, not the message's; and a queue_map_size too small for
max_message_size is refused at load."""
import os
import re
import resource
import subprocess

import rqlib
from rqlib import check, check_eq
from test_runner_lib import deliveries, drop, sink

NDEST = 120
NOFILE = 80


def low_nofile():
    # soft and hard: the daemon raises the soft limit to the hard one
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


def test_emfile_is_no_attempt():
    """Many destinations at once with 80 fds in all: connections beyond
    the fd reserve are put back, never charged to the message; every
    recipient is delivered at its first attempt."""
    with rqlib.Env() as env:
        _, port, dd = sink(env, one_file=True)
        conf = "connection_cache_time = 0\ntimeout.hoststatus = 1h\n"
        for i in range(NDEST):
            conf += "[domain d%d.test]\nrelayhost = [127.0.0.1]:%d\n" % (
                i, port)
        env.write_conf(conf)
        for i in range(NDEST):
            drop(env, "u%d@d%d.test" % (i, i))
        p = env.start("run", preexec_fn=low_nofile)
        rqlib.wait_for(lambda: len(deliveries(env)) >= NDEST or
                       p.poll() is not None, 120, step=0.2,
                       what="%d delivery lines" % NDEST)
        p.send_signal(15)
        check_eq(p.wait(30), 0, "exit status after SIGTERM")
        got = deliveries(env)
        log = env.log_text()
        bad = [d["line"] for d in got if d["status"] != "sent" or
               d["tries"] != 1]
        check_eq(bad[:3], [], "deliveries not sent at the first attempt")
        check(re.search(r"recipients? put back, no attempt counted: "
                        r"local resource shortage", log),
              "the fd shortage did not happen: the test proves nothing")
        check_eq(sorted(d["to"] for d in got),
                 sorted("u%d@d%d.test" % (i, i) for i in range(NDEST)),
                 "recipients delivered")
        q = env.run("mailq", "--json", check_rc=0).stdout.decode()
        check_eq(q.strip(), "", "queue after all")


def test_nofile_raised():
    """run raises its soft limit of open files to the hard one."""
    with rqlib.Env() as env:
        def limits():
            resource.setrlimit(resource.RLIMIT_NOFILE, (64, 4096))
        p = env.start("run", preexec_fn=limits)
        rqlib.wait_for(lambda: "daemon started" in env.log_text(), 20,
                       what="start")

        def soft():
            with open("/proc/%d/limits" % p.pid) as f:
                for line in f:
                    if line.startswith("Max open files"):
                        return int(line.split()[3])
        rqlib.wait_for(lambda: soft() == 4096, 10,
                       what="soft limit 4096 (is %s)" % soft())
        p.send_signal(15)
        check_eq(p.wait(30), 0, "exit status after SIGTERM")


def test_map_too_small():
    """A 64m map cannot take a 40 MB message: check-config and run
    refuse it with the line and the smallest map that would do."""
    with rqlib.Env("queue_map_size = 64m\nmax_message_size = 40m\n") as env:
        for cmd in (("check-config",), ("run", "--exit-when-idle")):
            p = env.run(*cmd)
            err = p.stderr.decode()
            check_eq(p.returncode, 78, "%s exit status" % cmd[0])
            check(re.search(r"relayq\.conf:5: queue_map_size \(67108864 "
                            r"bytes\) is too small for max_message_size "
                            r"\(41943040 bytes\).* at least 201m", err),
                  "%s: no clear error: %r" % (cmd[0], err))
        check(not os.path.exists(os.path.join(env.queue, "data.mdb")),
              "run created the queue")
        env.write_conf("queue_map_size = 201m\nmax_message_size = 40m\n")
        env.run("check-config", check_rc=0)
        # the default map of 16g is fine with the default 50m
        env.write_conf("")
        env.run("check-config", check_rc=0)


if __name__ == "__main__":
    rqlib.main(globals())
