#!/usr/bin/python3
"""test_expiry_e2e - delay warnings, returns and bounces end to end.

The real `relayq run` delivers to two faultsmtp servers on 127.0.0.1:
"dest" (domain dest.test) answers as each test scripts it (451 to every
RCPT by default), and "home" (every other domain, i.e. the senders'
sender.test) accepts everything and keeps it: the notices relayq sends
arrive there and are parsed with Python's email package
(test_expiry_lib.parse_dsn).  Intervals are seconds in the config, and
each notice's time is checked against its class's queuewarn/queuereturn:
never earlier, and not much later (generous: the machine is loaded).
"""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faultlib  # noqa: E402
import rqlib  # noqa: E402
import test_runner_lib as rl  # noqa: E402
from rqlib import Env, check, check_eq, Fail  # noqa: E402
from test_expiry_lib import parse_dsn, rcpt  # noqa: E402

SANITIZE = os.environ.get("RELAYQ_SANITIZE") == "1"
SLACK = 8 if SANITIZE else 5  # seconds a notice may come late

DEFER = "on RCPT reply 451 4.3.0 try again later\n"
HOST = "relayq.test"

# Per class: (queuewarn, queuereturn) in seconds.
CLASSES = {"urgent": (2, 6), "normal": (4, 9), "non-urgent": (6, 12)}


def conf(dest_port, home_port, extra="", domains=""):
    lines = ["tls = none", "retry.min = 1s", "retry.max = 1s",
             "timeout.hoststatus = 0", "relayhost = [127.0.0.1]:%d" % home_port]
    for cls, (w, r) in CLASSES.items():
        lines.append("timeout.queuewarn.%s = %ds" % (cls, w))
        lines.append("timeout.queuereturn.%s = %ds" % (cls, r))
    lines.append("timeout.queuewarn.dsn = 0")
    lines.append("timeout.queuereturn.dsn = 4s")
    text = "\n".join(lines) + "\n" + extra
    text += "\n[domain dest.test]\nrelayhost = [127.0.0.1]:%d\n" % dest_port
    return text + domains


class Setup:
    """An Env, the two servers and the daemon (started by .start())."""

    def __init__(self, dest_script=DEFER, extra="", home_script="",
                 domains=""):
        self.env = Env()
        try:
            self.dest = faultlib.start(self.env, dest_script)
            self.home = faultlib.start(self.env, home_script or
                                       "hostname home\n")
            self.env.write_conf(conf(self.dest.port, self.home.port, extra,
                                     domains))
        except Exception:
            self.env.close()
            raise
        self.daemon = None

    def start(self):
        self.daemon = rl.start(self.env)
        return self

    def close(self):
        try:
            if self.daemon is not None and self.daemon.poll() is None:
                rl.stop(self.daemon)
        finally:
            self.env.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def notices(self):
        """Every message the home server received, as (rcpts, Dsn or
        None, raw) with the SMTP dot-stuffing undone."""
        out = []
        for env_lines, raw in self.home.messages():
            rcpts = [re.sub(r"^RCPT TO:<([^>]*)>.*$", r"\1", l, flags=re.I)
                     for l in env_lines if l.upper().startswith("RCPT")]
            frm = [l for l in env_lines if l.upper().startswith("MAIL")]
            raw = unstuff(raw)
            d = None
            if b"report-type=delivery-status" in raw:
                check(frm and "FROM:<>" in frm[0].upper().replace(" ", ""),
                      "notice not from <>: %r" % frm)
                d = parse_dsn(raw, hostname=HOST)
            out.append((rcpts, d, raw))
        return out

    def dsns(self):
        return [d for _, d, _ in self.notices() if d is not None]

    def wait_dsns(self, n, timeout=40):
        return rqlib.wait_for(lambda: (lambda l: l if len(l) >= n else None)
                              (self.dsns()), timeout,
                              what="%d notices at the home server" % n)


def unstuff(raw):
    if raw.endswith(b"\r\n.\r\n"):
        raw = raw[:-3]
    return re.sub(rb"(?m)^\.\.", b".", raw)


_seq = [0]


def drop(env, rcpts, sender="alice@sender.test", priority=None,
         headers=(), body=None, ret=None, envid=None):
    """Drops a message with an X-Sender/X-Receiver envelope.  RCPTS:
    addresses, or (address, "NOTIFY=... ORCPT=...") pairs."""
    _seq[0] += 1
    n = _seq[0]
    for d in ("incoming", "tmp"):
        os.makedirs(os.path.join(env.spool, d), exist_ok=True)
    xs = "X-Sender: <%s>" % sender
    if ret:
        xs += " RET=%s" % ret
    if envid:
        xs += " ENVID=%s" % envid
    lines = [xs]
    addrs = []
    for r in rcpts:
        if isinstance(r, tuple):
            lines.append("X-Receiver: <%s> %s" % r)
            addrs.append(r[0])
        else:
            lines.append("X-Receiver: <%s>" % r)
            addrs.append(r)
    lines += ["From: Alice <%s>" % (sender or "nobody@sender.test"),
              "To: %s" % ", ".join(addrs),
              "Subject: expiry test %d" % n,
              "Message-ID: <expiry-%d-%d@sender.test>" % (os.getpid(), n)]
    if priority:
        lines.append("Priority: %s" % priority)
    lines += list(headers)
    body = body if body is not None else "body of message %d\n" % n
    text = "\n".join(lines) + "\n\n" + body
    name = "x%06d" % n
    tmp = os.path.join(env.spool, "tmp", name)
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, os.path.join(env.spool, "incoming", name))
    return "expiry test %d" % n


def epoch(datestr):
    import email.utils
    return email.utils.parsedate_to_datetime(datestr).timestamp()


def notice_age(d):
    """Seconds between the original's arrival and the notice's Date."""
    return epoch(d.msg["Date"]) - epoch(d.per_msg["arrival-date"])


def queue_ids(env):
    """Queue ids of messages that entered the queue, in log order."""
    return re.findall(r"\]: ([0-9A-F]{16}): from=<", env.log_text())


def test_per_class_warn_and_return():
    """Each class: one delay notice at its queuewarn, then the bounce at
    its queuereturn (4.4.7, last reply as Diagnostic-Code), then the
    message leaves the queue."""
    with Setup() as s:
        s.start()
        subjects = {}
        for cls in CLASSES:
            subjects[drop(s.env, ["bob-%s@dest.test" % cls], priority=cls)] = cls
        dsns = s.wait_dsns(6, timeout=60)
        time.sleep(2)  # nothing more may come
        dsns = s.dsns()
        check_eq(len(dsns), 6, "notices (2 per class)")
        seen = {}
        for d in dsns:
            cls = subjects[d.orig["Subject"]]
            check(d.to == "alice@sender.test", "To: %s" % d.to)
            r = rcpt(d, "bob-%s@dest.test" % cls)
            age = notice_age(d)
            warn, ret = CLASSES[cls]
            if d.action == "delayed":
                check(age >= warn and age <= warn + SLACK,
                      "%s warning after %ds, want %d" % (cls, age, warn))
                check_eq(epoch(r["will-retry-until"]) -
                         epoch(d.per_msg["arrival-date"]), ret,
                         "Will-Retry-Until - arrival")
                check(r["status"].startswith("4."), r["status"])
            else:
                check_eq(d.action, "failed", "action")
                check(age >= ret and age <= ret + SLACK,
                      "%s return after %ds, want %d" % (cls, age, ret))
                check_eq(r["status"], "4.4.7", "Status")
                check(not d.full or d.orig["Subject"], "original")
            check_eq(r["diagnostic-code"],
                     "smtp; 451 4.3.0 try again later", "Diagnostic-Code")
            if "remote-mta" in r:  # when the runner records the host
                check_eq(r["remote-mta"], "dns; 127.0.0.1", "Remote-MTA")
            check("last-attempt-date" in r, "Last-Attempt-Date")
            check_eq(d.orig["Message-ID"][:8], "<expiry-", "original headers")
            seen[(cls, d.action)] = seen.get((cls, d.action), 0) + 1
        for cls in CLASSES:
            check_eq(seen.get((cls, "delayed")), 1, "%s warnings" % cls)
            check_eq(seen.get((cls, "failed")), 1, "%s returns" % cls)
        log = s.env.log_text()
        check_eq(log.count("sender delay notification"), 3, "log: delay")
        check_eq(log.count("sender non-delivery notification"), 3,
                 "log: non-delivery")
        check_eq(log.count("status=expired, returned to sender"), 3, "log")
        # the delivery log's layout: delays= before dsn=, tries= last
        lines = [l for l in log.splitlines() if "status=expired" in l]
        for l in lines:
            check(re.search(r": to=<[^>]*>, relay=none, delay=\d+, "
                            r"delays=\d+/0/0/0, dsn=4\.\d\.\d+, "
                            r"status=expired, returned to sender \(.*\), "
                            r"tries=\d+$", l), l)


def test_5xx_bounce_at_once_mixed_recipients():
    """A 5xx is returned at once with the reply's status; in a mixed
    message only the refused recipient is named; ENVID and ORCPT are
    echoed; RET=HDRS returns the header only."""
    script = ("rcpt bad@dest.test reply 550 5.1.1 <bad@dest.test>: no such "
              "user\n")
    with Setup(dest_script=script) as s:
        s.start()
        t0 = time.time()
        drop(s.env, [("good@dest.test", "NOTIFY=FAILURE"),
                     ("bad@dest.test",
                      "NOTIFY=FAILURE,DELAY ORCPT=rfc822;Bad+2Bx@dest.test")],
             ret="HDRS", envid="env+2Bid-1")
        (d,) = s.wait_dsns(1, timeout=30)
        check(time.time() - t0 < 4 + SLACK, "bounce took %.1fs" %
              (time.time() - t0))
        check_eq(d.action, "failed", "action")
        check_eq([r["addr"] for r in d.rcpts], ["bad@dest.test"],
                 "only the failed recipient")
        r = d.rcpts[0]
        check_eq(r["status"], "5.1.1", "Status")
        check_eq(r["diagnostic-code"],
                 "smtp; 550 5.1.1 <bad@dest.test>: no such user",
                 "Diagnostic-Code")
        check_eq(r["original-recipient"], "rfc822;Bad+x@dest.test", "ORCPT")
        check_eq(d.per_msg["original-envelope-id"], "env+id-1", "ENVID")
        check(not d.full, "RET=HDRS: text/rfc822-headers")
        check(b"body of message" not in d.raw, "body in a RET=HDRS bounce")
        check(d.orig["Subject"].startswith("expiry test"), "orig headers")
        check("good@dest.test" not in d.text, "delivered one not named")
        # good@ was delivered; the message is gone; nothing else comes
        rqlib.wait_for(lambda: "removed" in s.env.log_text(), 10,
                       what="original removed")
        time.sleep(3)
        check_eq(len(s.dsns()), 1, "notices")


def test_ret_full_and_size_cap():
    """A bounce returns the whole message (RET=FULL, and by default),
    cut at a line boundary to bounce_size_limit."""
    script = "rcpt bad@dest.test reply 554 5.7.1 go away\n"
    body = "".join("line %05d %s\n" % (i, "y" * 60) for i in range(200))
    with Setup(dest_script=script, extra="bounce_size_limit = 2k\n") as s:
        s.start()
        drop(s.env, ["bad@dest.test"], ret="FULL", body=body)
        drop(s.env, ["bad@dest.test"], body="short body\n")
        dsns = s.wait_dsns(2, timeout=30)
        big = [d for d in dsns if b"line 00000" in d.raw]
        small = [d for d in dsns if b"short body" in d.raw]
        check(len(big) == 1 and len(small) == 1, "both returned in full")
        d = big[0]
        check(d.full, "RET=FULL: message/rfc822")
        check_eq(d.rcpts[0]["status"], "5.7.1", "Status")
        inc = d.orig_part.get_payload()[0].as_bytes()
        raw = d.raw
        start = raw.index(b"Content-Type: message/rfc822\r\n\r\n") + 32
        end = raw.index(b"\r\n--", start)
        check(end - start <= 2048, "included %d bytes > 2k" % (end - start))
        check(end - start > 2048 - 200, "included only %d bytes" %
              (end - start))
        check(raw[start:end].endswith(b"y" * 60) or
              raw[start:end].endswith(b"y" * 60 + b"\r\n"),
              "not cut at a line boundary")
        check(b"line 00199" not in raw, "not capped")
        check(inc, "original parses")
        check(small[0].full, "no RET: whole message, as Postfix")


def test_null_sender_and_notify_never():
    """No notice ever to the null sender; NOTIFY=NEVER gets none; NOTIFY
    without DELAY gets the bounce but no warning; the rest get both."""
    with Setup() as s:
        s.start()
        drop(s.env, ["x@dest.test"], sender="", priority="urgent")
        drop(s.env, [("never@dest.test", "NOTIFY=NEVER"),
                     ("fail@dest.test", "NOTIFY=FAILURE"),
                     ("both@dest.test", "NOTIFY=DELAY,FAILURE"),
                     "dflt@dest.test"], priority="urgent")
        dsns = s.wait_dsns(2, timeout=40)
        rqlib.wait_for(lambda: s.env.log_text().count("removed") >= 4, 30,
                       what="originals and notices removed")
        time.sleep(2)
        dsns = s.dsns()
        check_eq(len(dsns), 2, "notices")
        warn = [d for d in dsns if d.action == "delayed"]
        ret = [d for d in dsns if d.action == "failed"]
        check(len(warn) == 1 and len(ret) == 1, "one warning, one return")
        check_eq(sorted(r["addr"] for r in warn[0].rcpts),
                 ["both@dest.test", "dflt@dest.test"], "warned")
        check_eq(sorted(r["addr"] for r in ret[0].rcpts),
                 ["both@dest.test", "dflt@dest.test", "fail@dest.test"],
                 "returned")
        for d in dsns:
            check_eq(d.to, "alice@sender.test", "To")
        check("no non-delivery notification to the null sender" in
              s.env.log_text(), "null sender return logged")


def test_precedence_bulk_no_warning():
    """Precedence: bulk, junk or list: no delay warning, but the return."""
    with Setup() as s:
        s.start()
        for p in ("bulk", "junk", "list"):
            drop(s.env, ["p-%s@dest.test" % p], priority="urgent",
                 headers=["Precedence: %s" % p])
        dsns = s.wait_dsns(3, timeout=40)
        time.sleep(1)
        dsns = s.dsns()
        check_eq(sorted(d.action for d in dsns), ["failed"] * 3, "actions")
        check_eq(s.env.log_text().count("Precedence: bulk, junk or list"), 3,
                 "logged")


def test_success_notice():
    """NOTIFY=SUCCESS to a next hop without DSN: a notice saying Action:
    relayed (RFC 3461 5.2.3), for that recipient alone."""
    with Setup(dest_script="hostname dest\n") as s:
        s.start()
        drop(s.env, [("ok@dest.test", "NOTIFY=SUCCESS"), "quiet@dest.test"])
        (d,) = s.wait_dsns(1, timeout=30)
        check_eq(d.action, "relayed", "Action")
        check_eq([r["addr"] for r in d.rcpts], ["ok@dest.test"], "named")
        check(d.rcpts[0]["status"].startswith("2."), "Status")
        time.sleep(2)
        check_eq(len(s.dsns()), 1, "notices")


def test_relayed_notice():
    """NOTIFY=SUCCESS to a next hop that offers DSN: NOTIFY goes on with
    the message and relayq sends no notice of its own (the next hop's to
    send, as Postfix's smtp does)."""
    with Setup(dest_script="hostname dest\n"
               "ehlo PIPELINING DSN ENHANCEDSTATUSCODES\n") as s:
        s.start()
        drop(s.env, [("ok@dest.test", "NOTIFY=SUCCESS")])
        rqlib.wait_for(lambda: "removed" in s.env.log_text(), 30,
                       what="message removed")
        time.sleep(2)
        rcpts = [e["data"] for e in s.dest.events()
                 if e["event"] == "cmd" and e["data"].startswith("RCPT")]
        check(any("NOTIFY=SUCCESS" in c for c in rcpts),
              "NOTIFY passed on: %r" % rcpts)
        check_eq(len(s.dsns()), 0, "notices")


def relayq_has(cmd):
    p = rqlib.subprocess.run([rqlib.BIN, "--help"],
                             stdout=rqlib.subprocess.PIPE)
    return re.search(rb"^  %s " % cmd.encode(), p.stdout, re.M) is not None


def test_relayq_bounce():
    """`relayq bounce ID` returns a deferred message at once and removes
    it; an unknown ID exits 67, as in the other queue commands."""
    with Setup() as s:
        s.start()
        drop(s.env, ["slow@dest.test", "slow2@dest.test"],
             priority="non-urgent")
        ids = rqlib.wait_for(lambda: queue_ids(s.env), 10, what="queued")
        rqlib.wait_for(lambda: "status=deferred" in s.env.log_text(), 10,
                       what="first attempt")
        t0 = time.time()
        p = s.env.run("bounce", ids[0], check_rc=0)
        check(ids[0].encode() in p.stdout, "bounce says what it did")
        (d,) = s.wait_dsns(1, timeout=20)
        check(time.time() - t0 < SLACK, "notice after %.1fs" %
              (time.time() - t0))
        check_eq(d.action, "failed", "action")
        check_eq(sorted(r["addr"] for r in d.rcpts),
                 ["slow2@dest.test", "slow@dest.test"], "recipients")
        check_eq(d.rcpts[0]["diagnostic-code"],
                 "smtp; 451 4.3.0 try again later", "last reply kept")
        check(re.search(r"%s: removed" % ids[0], s.env.log_text()),
              "original removed")
        s.env.run("bounce", ids[0], check_rc=67)
        s.env.run("bounce", "nothex", check_rc=64)
        # nothing more: no warning for the returned message
        time.sleep(7)
        check_eq(len(s.dsns()), 1, "notices")


def test_hold_prevents_expiry():
    """A held message neither warns nor expires while held."""
    if not relayq_has("hold"):
        print("  (relayq hold not available yet: skipped)")
        return
    with Setup() as s:
        s.start()
        drop(s.env, ["held@dest.test"], priority="urgent")
        ids = rqlib.wait_for(lambda: queue_ids(s.env), 10, what="queued")
        s.env.run("hold", ids[0], check_rc=0)
        time.sleep(CLASSES["urgent"][1] + 3)
        check_eq(len(s.dsns()), 0, "notices while held")
        s.env.run("release", ids[0], check_rc=0)
        # Overdue at release: returned at once, without a warning first.
        (d,) = s.wait_dsns(1, timeout=20)
        check_eq(d.action, "failed", "action after release")
        check_eq(d.rcpts[0]["status"], "4.4.7", "Status")
        time.sleep(2)
        check_eq(len(s.dsns()), 1, "notices after release")


def test_undeliverable_notice_expires_silently():
    """A notice that cannot be delivered is dropped at queuereturn.dsn,
    logged, never bounced; notify_postmaster sends postmaster one copy."""
    dead = rqlib.free_port()
    domains = "[domain nowhere.test]\nrelayhost = [127.0.0.1]:%d\n" % dead
    script = "rcpt bad@dest.test reply 550 5.1.1 no such user\n"
    with Setup(dest_script=script, domains=domains,
               extra="notify_postmaster = yes\n") as s:
        s.start()
        drop(s.env, ["bad@dest.test"], sender="carol@nowhere.test")
        rqlib.wait_for(lambda: "undeliverable notice" in s.env.log_text(),
                       30, what="the notice dropped")
        log = s.env.log_text()
        check(re.search(r"undeliverable notice to <carol@nowhere.test> "
                        r"dropped", log), "logged")
        (d,) = s.wait_dsns(1, timeout=20)
        check_eq(d.to, "postmaster@relayq.test", "copy to postmaster")
        check_eq(d.action, "failed", "action")
        check_eq(d.rcpts[0]["addr"], "carol@nowhere.test", "names the sender")
        check(d.full and d.orig.get_content_type() == "multipart/report",
              "the undeliverable notice is attached")
        time.sleep(2)
        check_eq(len(s.dsns()), 1, "notices")
        check_eq(s.env.log_text().count("undeliverable notice"), 1,
                 "dropped once")


def test_crash_neither_lost_nor_twice():
    """SIGKILL the daemon around the warning and the return times and
    start it again: every message still gets exactly one warning and
    one return (a notice sent again after a crash during its own
    delivery has the same Message-ID: that is SMTP's at-least-once, not
    a second notice)."""
    warn, ret = CLASSES["urgent"]
    with Setup() as s:
        s.start()
        t0 = time.time()
        subjects = [drop(s.env, ["crash%d@dest.test" % i],
                         priority="urgent") for i in range(4)]
        for at in (warn - 0.3, warn + 0.2, ret - 0.2, ret + 0.3):
            time.sleep(max(0, t0 + at - time.time()))
            s.daemon.kill()
            s.daemon.wait()
            s.start()
        rqlib.wait_for(lambda: len({d.msg["Message-ID"]
                                    for d in s.dsns()}) >= 8, 60,
                       what="8 distinct notices")
        time.sleep(3)
        got = {}
        for d in s.dsns():
            got.setdefault((d.orig["Subject"], d.action), set()).add(
                d.msg["Message-ID"])
        for subj in subjects:
            for action in ("delayed", "failed"):
                check_eq(len(got.get((subj, action), ())), 1,
                         "%s notices for %s" % (action, subj))
        check_eq(len(got), 8, "notice kinds")


if __name__ == "__main__":
    rqlib.main(globals())
