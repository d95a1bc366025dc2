"""test_parse_harden - hardened message parsing, end to end (issue 10,
items 4, 5 and 8), with the real `relayq run` and `relayq send` and a
real SMTP server (python3-aiosmtpd) on 127.0.0.1:

- a mail loop (a sink that drops every message it is given back into
  incoming/) stops by itself: hopcount_limit Received: lines and the
  message is bounced with 5.4.6 at intake; the sender gets the notice,
  and the looping notice itself (from <>) ends with no notice at all;
- a bare CR is a line end for the receiver and for relayq alike: a
  CR-hidden Bcc: never reaches the receiver, no bare CR is sent;
- a header-only message (no empty line) is delivered; a leading mbox
  From line is left out;
- header lines over 998 bytes are folded (or refused when they cannot
  be: bad/ with a reason, `relayq send` exits 65);
- a 600-byte local part gets a reason that says so;
- every To:/Cc:/Bcc: field counts (not only the first 64), duplicates
  get one RCPT, and max_recipients sends bigger messages to bad/ (and
  makes `relayq send` exit 65).

Run with /usr/bin/python3 (aiosmtpd).
"""
import json
import os
import re
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rqlib  # noqa: E402
from rqlib import check, check_eq, wait_for  # noqa: E402
from aiosmtpd.controller import Controller  # noqa: E402


class Sink:
    """aiosmtpd on 127.0.0.1 keeping every message (mail_from, rcpts,
    raw bytes); with FEED, each is dropped back into FEED/incoming/ as a
    spool file (X-Sender/X-Receiver): a forwarding loop."""

    def __init__(self, feed=None):
        self.msgs = []
        self.last = time.time()
        self.lock = threading.Lock()
        self.feed = feed
        self.n = 0
        self.port = rqlib.free_port()
        self.ctl = Controller(self, hostname="127.0.0.1", port=self.port)
        self.ctl.start()

    async def handle_DATA(self, server, session, envelope):
        data = envelope.original_content
        sender = envelope.mail_from.strip("<>")     # "<>": the null one
        with self.lock:
            self.msgs.append((sender, list(envelope.rcpt_tos), data))
            self.last = time.time()
            self.n += 1
            n = self.n
        if self.feed:
            hdr = "X-Sender: <%s>\r\n" % sender
            for r in envelope.rcpt_tos:
                hdr += "X-Receiver: <%s>\r\n" % r
            tmp = os.path.join(self.feed, "tmp", "loop%d" % n)
            with open(tmp, "wb") as f:
                f.write(hdr.encode() + data)
            os.rename(tmp, os.path.join(self.feed, "incoming", "loop%d" % n))
        return "250 2.0.0 Ok: kept"

    def messages(self):
        with self.lock:
            return list(self.msgs)

    def stop(self):
        self.ctl.stop()


def conf(sink, extra=""):
    return ("relayhost = [127.0.0.1]:%d\ntls = none\nretry.min = 1h\n"
            "retry.max = 2h\n%s" % (sink.port, extra))


def drop(env, name, data):
    if isinstance(data, str):
        data = data.encode()
    tmp = os.path.join(env.spool, "tmp", name)
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, os.path.join(env.spool, "incoming", name))


def start(env):
    p = env.start("run")
    wait_for(lambda: all(os.path.isdir(os.path.join(env.spool, d))
                         for d in ("incoming", "tmp", "bad")),
             20, what="spool tree")
    return p


def mailq(env):
    p = env.run("mailq", "--json", check_rc=0)
    return [json.loads(l) for l in p.stdout.decode().splitlines() if l]


def incoming(env):
    return [n for n in os.listdir(os.path.join(env.spool, "incoming"))
            if not n.startswith(".")]


def bad_text(env):
    """Everything in bad/ (the first 64 KiB of each file): reasons are
    looked for in it, whatever the names bad/ files get."""
    d = os.path.join(env.spool, "bad")
    out = b""
    for n in sorted(os.listdir(d)):
        p = os.path.join(d, n)
        if os.path.isfile(p):
            with open(p, "rb") as f:
                out += f.read(65536) + b"\n"
    return out.decode(errors="replace")


def header_of(raw):
    return raw.split(b"\r\n\r\n", 1)[0]


def loop_run(extra, limit):
    """Runs the loop harness with hopcount_limit LIMIT (EXTRA sets it, or
    nothing for the default); checks that it stops by itself."""
    with rqlib.Env() as env:
        sink = Sink(feed=env.spool)
        try:
            env.write_conf(conf(sink, extra))
            p = start(env)
            drop(env, "first", "X-Sender: <s@a.test>\nX-Receiver: "
                 "<r@b.test>\nSubject: loop test\n\nround and round\n")

            def bounced():
                return [m for m in sink.messages() if m[0] == "" and
                        m[1] == ["s@a.test"] and
                        b"Status: 5.4.6" in m[2]]

            def settled():
                return (bounced() and time.time() - sink.last > 4 and
                        not incoming(env) and not mailq(env))
            t0 = time.time()
            wait_for(settled, 150, 0.5, what="the loop to stop by itself")
            took = time.time() - t0
            msgs = sink.messages()
            orig = [m for m in msgs if m[0] == "s@a.test"]
            check_eq(len(orig), limit,
                     "deliveries of the looping message (hopcount_limit)")
            for i, m in enumerate(orig):
                check_eq(header_of(m[2]).count(b"\r\nReceived: ") +
                         header_of(m[2]).startswith(b"Received: "), i + 1,
                         "Received: lines at hop %d" % (i + 1))
            b = bounced()
            check(b, "the sender got a notice")
            notice = b[0][2]
            check(b"Action: failed" in notice, "Action: failed")
            check(b"Final-Recipient: rfc822; r@b.test" in notice, notice)
            check(b"mail forwarding loop" in notice, "the reason")
            # the notice loops too (it is fed back); from <> it ends
            # with no notice at all
            nulls = [m for m in msgs if m[0] == ""]
            check_eq(len(nulls), limit + 1, "deliveries of the notice")
            check_eq(len(msgs), 2 * limit + 1, "every delivery")
            log = env.log_text()
            check(re.search(r"to=<r@b\.test>, relay=none, delay=0, "
                            r"delays=0/0/0/0, dsn=5\.4\.6, status=bounced "
                            r"\(mail forwarding loop detected", log),
                  "bounced at intake, in the log")
            check("no non-delivery notification to the null sender" in log,
                  "none to <>")
            print("loop of %d hops stopped in %.1fs" % (2 * limit + 1, took))
            p.send_signal(15)
            check_eq(p.wait(20), 0, "run exit status")
        finally:
            sink.stop()


def test_loop_stops_by_itself_default():
    loop_run("", 50)


def test_loop_hopcount_limit_key():
    loop_run("hopcount_limit = 5\n", 5)


def test_bare_cr_is_a_line_end():
    with rqlib.Env() as env:
        sink = Sink()
        try:
            env.write_conf(conf(sink))
            p = start(env)
            drop(env, "cr", b"X-Sender: <s@a.test>\nX-Receiver: "
                 b"<r@b.test>\nSubject: hi\rBcc: hidden@x.test\n"
                 b"To: r@b.test\n\nbody\rline\r\n.\rend\n")
            # relayq send -t: the same rule (the Bcc: line is a field
            # there too: a recipient, and removed)
            sp = env.run("send", "-t", "-f", "s@a.test", input=b"To: "
                         b"t@b.test\nSubject: two\rBcc: hid@x.test\n\nb\n")
            check_eq(sp.returncode, 0, sp.stderr)
            wait_for(lambda: len(sink.messages()) >= 2, 30,
                     what="two messages delivered")
            time.sleep(0.5)
            msgs = sink.messages()
            for m in msgs:
                raw = m[2]
                check(not re.search(rb"\r(?!\n)", raw),
                      "no bare CR reaches the receiver: %r" % raw)
                check(b"Bcc" not in raw and b"hid" not in raw,
                      "the CR-hidden Bcc: is gone: %r" % raw)
            one = [m for m in msgs if m[1] == ["r@b.test"]]
            check_eq(len(one), 1, "dropped file delivered")
            check(b"\r\nSubject: hi\r\nTo: r@b.test\r\n" in one[0][2],
                  one[0][2])
            check(one[0][2].endswith(b"\r\n\r\nbody\r\nline\r\n.\r\nend\r\n"),
                  one[0][2])
            two = [m for m in msgs if "t@b.test" in m[1]]
            check_eq(len(two), 1, "send -t delivered")
            check_eq(sorted(two[0][1]), ["hid@x.test", "t@b.test"],
                     "send -t: the Bcc: after the CR is a recipient")
            p.send_signal(15)
            check_eq(p.wait(20), 0, "run exit status")
        finally:
            sink.stop()


def test_header_only_and_mbox_from():
    with rqlib.Env() as env:
        sink = Sink()
        try:
            env.write_conf(conf(sink))
            p = start(env)
            drop(env, "honly", "X-Sender: <s@a.test>\nX-Receiver: "
                 "<r1@b.test>\nSubject: header only")
            drop(env, "mbox", "X-Sender: <s@a.test>\nX-Receiver: "
                 "<r2@b.test>\nFrom s@a.test Sat Jan  1 00:00:00 2000\n"
                 "Subject: mbox\n\nbody\n")
            drop(env, "mbox2", "From s@a.test Sat Jan  1 00:00:00 2000\n"
                 "From: s@a.test\nTo: r3@b.test\nSubject: no envelope\n\n"
                 "body\n")
            wait_for(lambda: len(sink.messages()) >= 3, 30,
                     what="three messages delivered")
            by = {m[1][0]: m[2] for m in sink.messages()}
            check(b"\r\nSubject: header only\r\n" in
                  header_of(by["r1@b.test"]) + b"\r\n", by["r1@b.test"])
            check(by["r1@b.test"].endswith(b"\r\n\r\n"), "empty body")
            for r, subj in (("r2@b.test", b"mbox"),
                            ("r3@b.test", b"no envelope")):
                h = header_of(by[r])
                check(b"\r\nSubject: " + subj + b"\r\n" in h + b"\r\n",
                      "the header is a header: %r" % by[r])
                check(b"From s@a.test Sat" not in by[r],
                      "mbox From line left out: %r" % by[r])
            check_eq(os.listdir(os.path.join(env.spool, "bad")), [],
                     "nothing in bad/")
            p.send_signal(15)
            check_eq(p.wait(20), 0, "run exit status")
        finally:
            sink.stop()


def test_long_header_lines():
    with rqlib.Env() as env:
        sink = Sink()
        try:
            env.write_conf(conf(sink))
            p = start(env)
            to = ", ".join("Person %d <p%d@c.test>" % (i, i)
                           for i in range(300))
            drop(env, "fold", "X-Sender: <s@a.test>\nX-Receiver: "
                 "<r@b.test>\nTo: %s\nSubject: %s\n\nbody\n" %
                 (to, " ".join(["word"] * 400)))
            drop(env, "nofold", "X-Sender: <s@a.test>\nX-Receiver: "
                 "<r@b.test>\nSubject: %s\n\nbody\n" % ("x" * 100000))
            def folded():
                return [m[2] for m in sink.messages()
                        if m[1] == ["r@b.test"] and b"Person 0" in m[2]]
            raw = wait_for(folded, 30, what="delivery")[0]
            h = header_of(raw)
            check(max(len(l) for l in h.split(b"\r\n")) <= 998,
                  "header lines of at most 998 bytes")
            unfolded = re.sub(rb"\r\n(?=[ \t])", b"", h)
            check(("\r\nTo: %s\r\n" % to).encode() in unfolded,
                  "unfolding gives the To: back")
            wait_for(lambda: "header line too long" in bad_text(env), 20,
                     what="bad/ reason")
            check("100009 bytes in the Subject: field" in bad_text(env),
                  bad_text(env)[-500:])
            # relayq send: refused the same way (65), nothing spooled
            sp = env.run("send", "-f", "s@a.test", "r@b.test",
                         input=b"Subject: " + b"y" * 5000 + b"\n\nb\n")
            check_eq(sp.returncode, 65, "send exit")
            check(b"header line too long" in sp.stderr, sp.stderr)
            check_eq(incoming(env), [], "nothing left by send")
            sp = env.run("send", "-f", "s@a.test", "r@b.test",
                         input=("Subject: %s\n\nb\n" %
                                " ".join(["w"] * 3000)).encode())
            check_eq(sp.returncode, 0, sp.stderr)
            p.send_signal(15)
            check_eq(p.wait(20), 0, "run exit status")
        finally:
            sink.stop()


def test_long_local_part_reason():
    with rqlib.Env() as env:
        sink = Sink()
        try:
            env.write_conf(conf(sink))
            p = start(env)
            local = "l" * 600
            drop(env, "long1", "X-Sender: <s@a.test>\nX-Receiver: "
                 "<%s@b.test>\n\nx\n" % local)
            drop(env, "long2", "From: s@a.test\nTo: %s@b.test\n\nx\n" %
                 local)
            wait_for(lambda: bad_text(env).count(
                "address too long: a local part of 600 bytes") >= 2, 20,
                what="both in bad/ with the reason")
            sp = env.run("send", "-f", "s@a.test", local + "@b.test",
                         input=b"Subject: x\n\nb\n")
            check_eq(sp.returncode, 65, "send exit")
            check(b"address too long" in sp.stderr and
                  b"local part of 600" in sp.stderr, sp.stderr)
            p.send_signal(15)
            check_eq(p.wait(20), 0, "run exit status")
        finally:
            sink.stop()


def test_many_fields_and_duplicates():
    with rqlib.Env() as env:
        sink = Sink()
        try:
            env.write_conf(conf(sink))
            p = start(env)
            lines = "".join("To: r%d@b.test\n" % i for i in range(70))
            dups = "Cc: r0@B.TEST, <r1@b.Test>\nBcc: r2@b.test\n"
            drop(env, "seventy", "From: s@a.test\n" + lines + dups +
                 "Subject: seventy\n\nx\n")
            # envelope duplicates too; the local part's case counts
            drop(env, "env", "X-Sender: <s@a.test>\nX-Receiver: <u@b.test>\n"
                 "X-Receiver: <u@B.test>\nX-Receiver: <U@b.test>\n"
                 "Subject: env\n\nx\n")
            wait_for(lambda: sum(len(m[1]) for m in sink.messages()) >= 72,
                     30, what="deliveries")
            time.sleep(1)
            rcpts = [r for m in sink.messages() for r in m[1]]
            want = ["r%d@b.test" % i for i in range(70)] + ["U@b.test",
                                                            "u@b.test"]
            check_eq(sorted(rcpts), sorted(want), "one RCPT each")
            check(re.search(r"nrcpt=70, ", env.log_text()), "nrcpt=70")
            p.send_signal(15)
            check_eq(p.wait(20), 0, "run exit status")
        finally:
            sink.stop()


def test_max_recipients():
    with rqlib.Env() as env:
        sink = Sink()
        try:
            env.write_conf(conf(sink, "max_recipients = 5\n"))
            p = start(env)
            six = "".join("X-Receiver: <r%d@b.test>\n" % i for i in range(6))
            five = "".join("X-Receiver: <q%d@b.test>\n" % i
                           for i in range(5)) + "X-Receiver: <q0@B.TEST>\n"
            drop(env, "six", "X-Sender: <s@a.test>\n" + six + "\nx\n")
            drop(env, "five", "X-Sender: <s@a.test>\n" + five + "\nx\n")
            wait_for(lambda: "too many recipients: more than 5 "
                     "(max_recipients)" in bad_text(env), 20, what="bad/")
            wait_for(lambda: len(sink.messages()) >= 1, 20, what="five")
            check_eq(sorted(sink.messages()[0][1]),
                     ["q%d@b.test" % i for i in range(5)], "five sent")
            sp = env.run("send", "-f", "s@a.test",
                         *["r%d@b.test" % i for i in range(6)],
                         input=b"Subject: x\n\nb\n")
            check_eq(sp.returncode, 65, "send exit")
            check(b"too many recipients" in sp.stderr, sp.stderr)
            sp = env.run("send", "-t", "-f", "s@a.test", input=(
                "To: %s\n\nb\n" % ", ".join("t%d@b.test" % i
                                             for i in range(6))).encode())
            check_eq(sp.returncode, 65, "send -t exit")
            check_eq(incoming(env), [], "nothing left by send")
            p.send_signal(15)
            check_eq(p.wait(20), 0, "run exit status")
        finally:
            sink.stop()
    # the default is 10000; the most is what the queue record holds
    with rqlib.Env("max_recipients = 1000000\n") as env:
        env.run("check-config", check_rc=0)
        env.write_conf("max_recipients = 1000001\n")
        cp = env.run("check-config")
        check_eq(cp.returncode, 78, "over the record's limit")
        check(b"max_recipients" in cp.stderr, cp.stderr)
    with rqlib.Env("relayhost = [127.0.0.1]:1\nretry.min = 1h\n") as env:
        p = start(env)
        many = "".join("X-Receiver: <r%d@b.test>\n" % i for i in range(10001))
        drop(env, "big", "X-Sender: <s@a.test>\n" + many + "\nx\n")
        wait_for(lambda: "more than 10000 (max_recipients)" in bad_text(env),
                 30, what="bad/")
        check_eq(mailq(env), [], "nothing queued")
        sp = env.run("send", "-f", "s@a.test",
                     *["r%d@b.test" % i for i in range(10001)],
                     input=b"Subject: x\n\nb\n")
        check_eq(sp.returncode, 65, "send exit")
        p.send_signal(15)
        check_eq(p.wait(20), 0, "run exit status")


if __name__ == "__main__":
    rqlib.main(globals())
