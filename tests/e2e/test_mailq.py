"""mailq in Postfix's layout (issue 13, item 8): the text output is
postqueue -p's, field for field (rendered here from --json as Postfix's
showq_compat does it and compared byte for byte), with the priority class
as an extra last field; --json carries postqueue -j's names beside
relayq's; and a script written for Postfix's mailq (select by sender with
awk '$7 == ...', strip the marks with tr, delete with the IDs it prints)
works with `relayq delete -`, which reads IDs from standard input as
postsuper -d - does."""
import json
import os
import re
import subprocess
import time

import faultlib
import rqlib
from rqlib import check, check_eq

CONF = "relayhost = [127.0.0.1]:1\nretry.min = 1h\nretry.max = 1h\n"
# Postfix's own example (postsuper(1)), with relayq delete for postsuper
SCRIPT = """mailq | tail -n +2 | awk 'BEGIN { RS = "" }
    # $7=sender, $8=recipient1, $9=recipient2
    { if ($7 == "%s") print $1 }
' | tr -d '*!' | relayq delete -
"""


def mailq_json(env):
    out = env.run("mailq", "--json", check_rc=0).stdout.decode()
    return [json.loads(l) for l in out.splitlines() if l]


def postqueue_p(msgs):
    """What postqueue -p prints for MSGS (mailq --json objects), with
    relayq's priority class after the sender."""
    out = ""
    for i, m in enumerate(msgs):
        out += "\n" if i else ("%-17s %8s %-19s %s\n" % (
            "----Queue ID-----", "--Size--", "---Arrival Time----",
            "--Sender/Recipient------"))
        mark = {"active": "*", "hold": "!"}.get(m["queue_name"], "")
        when = time.asctime(time.localtime(m["arrival_time"]))
        out += "%-17s %8d %19.19s %s %s\n" % (
            m["queue_id"] + mark, m["message_size"], when,
            m["sender"] or "MAILER-DAEMON", m["priority"])
        shown = ""
        todo = [r for r in m["recipients"]
                if r["state"] in ("pending", "deferred")]
        # those with a reason first
        for r in ([r for r in todo if r["reason"] is not None] +
                  [r for r in todo if r["reason"] is None]):
            why = r["reason"] or ""
            if why != shown:
                shown = why
                text = why or "reason unavailable"
                out += "%*s(%s)\n" % (max(76 - len(text), 0), "", text)
            out += "%-17s %8s %-19s %s\n" % ("", "", "", r["address"])
    if not msgs:
        return "Mail queue is empty\n"
    total = sum(m["message_size"] for m in msgs)
    return out + "\n-- %d Kbytes in %d Request%s.\n" % (
        total // 1024, len(msgs), "" if len(msgs) == 1 else "s")


def make_queue(env, senders):
    """Queues one message per (sender, rcpts, body size) and lets each
    first attempt fail (nothing listens on port 1)."""
    env.run("run", "--exit-when-idle", check_rc=0)  # the spool
    for sender, rcpts, n in senders:
        env.run("send", "-f", sender, *rcpts, check_rc=0,
                input="Subject: t\n\n" + "x" * 70 + "\n" * n)
    env.run("run", "--exit-when-idle", check_rc=0, timeout=120)
    return mailq_json(env)


def test_layout_and_json():
    with rqlib.Env(CONF) as env:
        msgs = make_queue(env, [
            ("alice@a.test", ["r1@x.test", "r2@y.test"], 10),
            ("bob@b.test", ["r3@x.test"], 3000),
            ("", ["r4@x.test"], 1)])
        check_eq(len(msgs), 3, "queued")
        env.run("hold", msgs[1]["queue_id"], check_rc=0)
        msgs = mailq_json(env)
        out = env.run("mailq", check_rc=0).stdout.decode()
        check_eq(out, postqueue_p(msgs), "postqueue -p layout")
        # awk's fields, as Postfix scripts read them
        for m in msgs:
            line = [l for l in out.splitlines()
                    if l.startswith(m["queue_id"])][0]
            f = line.split()
            check_eq(f[1], str(m["message_size"]), "$2 size")
            check_eq(f[6], m["sender"] or "MAILER-DAEMON", "$7 sender")
            check_eq(f[7], m["priority"], "$8 the class, last")
            check_eq(len(f), 8, "no other field")
        check(msgs[1]["queue_id"] + "!" in out, "held: !")
        check_eq([m["queue_name"] for m in msgs],
                 ["deferred", "hold", "deferred"], "queue_name")
        for m in msgs:
            check_eq(m["forced_expire"], False, "forced_expire")
            check(isinstance(m["arrival_time"], int), "arrival_time")
            check(m["message_size"] > 0, "message_size")
            for r in m["recipients"]:
                check_eq(r["delay_reason"], r["reason"], "delay_reason")
                check(r["reason"].startswith("connect to 127.0.0.1"),
                      r["reason"])
                check_eq(r["state"], "deferred", "relayq's state kept")
        # an empty queue
        env.run("delete", "--all", check_rc=0)
        check_eq(env.run("mailq", check_rc=0).stdout,
                 b"Mail queue is empty\n", "empty")


def test_in_delivery_star():
    """A message out for delivery (its recipient leased) is marked * and
    in queue_name active, as in Postfix's active queue."""
    with rqlib.Env() as env:
        srv = faultlib.start(env, "on MAIL stall 60\n")
        env.write_conf("relayhost = [127.0.0.1]:%d\n" % srv.port)
        env.run("run", "--exit-when-idle", check_rc=0)  # the spool
        env.run("send", "-f", "s@a.test", "r@x.test", check_rc=0,
                input="Subject: t\n\nbody\n")
        p = env.start("run")
        rqlib.wait_for(lambda: b"*" in env.run("mailq").stdout, 30,
                       what="the message in delivery")
        m = mailq_json(env)[0]
        check_eq(m["queue_name"], "active", "queue_name")
        out = env.run("mailq", check_rc=0).stdout.decode()
        check_eq(out, postqueue_p([m]), "postqueue -p layout")
        check(re.search(r"^%s\* " % m["queue_id"], out, re.M), out)
        p.kill()
        p.wait()


def test_postfix_script_deletes_by_sender():
    with rqlib.Env(CONF) as env:
        msgs = make_queue(env, [
            ("alice@a.test", ["r1@x.test"], 1),
            ("bob@b.test", ["r2@x.test", "r3@y.test"], 1),
            ("alice@a.test", ["r4@x.test", "r5@x.test", "r6@x.test"], 1),
            ("carol@a.test", ["alice@a.test"], 1)])
        alice = sorted(m["queue_id"] for m in msgs
                       if m["sender"] == "alice@a.test")
        check_eq(len(alice), 2, "alice's messages")
        env.run("hold", alice[0], check_rc=0)  # listed with its !
        bindir = os.path.join(env.dir, "bin")
        os.mkdir(bindir)
        for name in ("mailq", "relayq"):
            os.symlink(os.path.abspath(rqlib.BIN),
                       os.path.join(bindir, name))
        e = dict(os.environ, RELAYQ_CONFIG=env.conf,
                 PATH=bindir + ":" + os.environ["PATH"])
        p = subprocess.run(["sh", "-c", SCRIPT % "alice@a.test"], env=e,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=60)
        check_eq(p.returncode, 0, "script: %r" % p.stderr)
        check(b"2 messages deleted" in p.stderr, p.stderr)
        left = mailq_json(env)
        check_eq(sorted(m["sender"] for m in left),
                 ["bob@b.test", "carol@a.test"], "alice's gone, only")
        for qid in alice:
            check(re.search(qid + r": removed", env.log_text()),
                  "removed logged")


def test_delete_stdin():
    with rqlib.Env(CONF) as env:
        msgs = make_queue(env, [("s%d@a.test" % i, ["r@x.test"], 1)
                                for i in range(4)])
        ids = [m["queue_id"] for m in msgs]
        # a bad word anywhere: nothing is deleted
        p = env.run("delete", "-", input="%s\nnot-an-id\n" % ids[0])
        check_eq(p.returncode, 64, "bad ID on stdin")
        check(b'"not-an-id" is not a queue ID' in p.stderr, p.stderr)
        check_eq(len(mailq_json(env)), 4, "nothing deleted")
        # blanks or newlines between IDs, marks, an ID twice, - beside
        # IDs on the command line
        p = env.run("delete", ids[0], "-", input="%s*  %s!\n\n%s\n" %
                    (ids[1], ids[2], ids[1]))
        check_eq(p.returncode, 0, "delete -: %r" % p.stderr)
        check(b"3 messages deleted" in p.stderr, p.stderr)
        check_eq([m["queue_id"] for m in mailq_json(env)], [ids[3]],
                 "one left")
        # nothing on stdin: nothing to do
        p = env.run("delete", "-", input="")
        check_eq(p.returncode, 0, "empty stdin")
        check(b"0 messages deleted" in p.stderr, p.stderr)
        # hold - as well
        env.run("hold", "-", input=ids[3] + "\n", check_rc=0)
        check_eq(mailq_json(env)[0]["held"], True, "hold -")


if __name__ == "__main__":
    rqlib.main(globals())
