"""Tests of faultsmtp itself (tests/faultsmtp), the fault-injecting SMTP
server the smtp and runner tests rely on: every directive and action,
its timing, the dumps byte for byte, the event log, STARTTLS, IPv6, and
its robustness against hostile input."""
import os
import random
import smtplib
import socket
import ssl
import subprocess
import time

import faultlib
import rqlib
from rqlib import check, check_eq, Fail

SANITIZE = os.environ.get("RELAYQ_SANITIZE") == "1"


class Raw:
    """A raw SMTP client socket that reads whole (multi-line) replies."""

    def __init__(self, port, host="127.0.0.1", timeout=10):
        self.s = socket.create_connection((host, port), timeout)
        self.buf = b""

    def line(self):
        while b"\n" not in self.buf:
            d = self.s.recv(65536)
            if not d:
                raise EOFError("server closed; have %r" % self.buf)
            self.buf += d
        i = self.buf.index(b"\n") + 1
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def reply(self):
        """Returns (code, [lines]) of one reply."""
        lines = []
        while True:
            l = self.line()
            lines.append(l)
            if l[3:4] != b"-":
                return int(l[:3]), lines

    def cmd(self, text):
        self.send(text + b"\r\n")
        return self.reply()

    def send(self, data):
        self.s.sendall(data)

    def eof(self, timeout=5):
        """True if the server closes (after any buffered bytes)."""
        self.s.settimeout(timeout)
        try:
            while True:
                d = self.s.recv(65536)
                if not d:
                    return True
                self.buf += d
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def close(self):
        self.s.close()


def session(srv, ehlo=True):
    c = Raw(srv.port)
    code, _ = c.reply()
    check_eq(code, 220, "greeting")
    if ehlo:
        check_eq(c.cmd(b"EHLO client.test")[0], 250, "EHLO")
    return c


def test_defaults_and_state():
    with rqlib.Env() as env:
        srv = faultlib.start(env, "# defaults only\n")
        c = Raw(srv.port)
        code, lines = c.reply()
        check_eq(lines, [b"220 faultsmtp ESMTP\r\n"], "greeting")
        check_eq(c.cmd(b"MAIL FROM:<a@x.test>")[0], 503, "MAIL before EHLO")
        code, lines = c.cmd(b"EHLO client.test")
        check_eq(lines, [b"250-faultsmtp\r\n", b"250-PIPELINING\r\n",
                         b"250-8BITMIME\r\n",
                         b"250 ENHANCEDSTATUSCODES\r\n"], "EHLO")
        check_eq(c.cmd(b"RCPT TO:<b@x.test>")[0], 503, "RCPT before MAIL")
        check_eq(c.cmd(b"DATA")[0], 503, "DATA before MAIL")
        check_eq(c.cmd(b"MAIL FROM:<a@x.test> BODY=8BITMIME"),
                 (250, [b"250 2.1.0 Ok\r\n"]), "MAIL")
        check_eq(c.cmd(b"MAIL FROM:<a@x.test>")[0], 503, "nested MAIL")
        check_eq(c.cmd(b"DATA")[0], 554, "DATA without recipients")
        check_eq(c.cmd(b"RCPT TO:<b@x.test> NOTIFY=NEVER")[0], 555,
                 "NOTIFY without DSN offered")
        check_eq(c.cmd(b"RCPT TO:<b@x.test>")[0], 250, "RCPT")
        check_eq(c.cmd(b"RCPT TO:b@x.test junk")[0], 555, "bad param")
        check_eq(c.cmd(b"RCPT TO:<b@x.test")[0], 501, "syntax")
        check_eq(c.cmd(b"RSET")[0], 250, "RSET")
        check_eq(c.cmd(b"RCPT TO:<b@x.test>")[0], 503, "RSET ended txn")
        check_eq(c.cmd(b"NOOP")[0], 250, "NOOP")
        check_eq(c.cmd(b"VRFY x")[0], 252, "VRFY")
        check_eq(c.cmd(b"BDAT 10 LAST")[0], 502, "unknown verb")
        check_eq(c.cmd(b"STARTTLS")[0], 502, "STARTTLS not offered")
        check_eq(c.cmd(b"QUIT")[0], 221, "QUIT")
        check(c.eof(), "server closes after QUIT")
        c.close()
        # HELO: no ESMTP parameters, no enhanced codes needed
        c = session(srv, ehlo=False)
        check_eq(c.cmd(b"HELO client.test"), (250, [b"250 faultsmtp\r\n"]),
                 "HELO")
        check_eq(c.cmd(b"MAIL FROM:<a@x.test> BODY=8BITMIME")[0], 555,
                 "params after HELO")
        c.close()
        srv.stop()


def test_replies_per_command():
    script = """
        greeting 220 custom.test ready\\nsecond greeting line
        on EHLO 1 reply 250 custom-ehlo\\nPIPELINING\\nX-FAULT
        on MAIL 1 reply 451 4.3.0 mail later
        on RCPT 2 reply 452 4.5.3 too many
        on DATA 1 reply 453 4.3.1 data later
        on DATA 2 reply 354 go on
        on DOT 1 reply 552 5.3.4 too big\\nreally
        on RSET reply 250 2.0.0 custom reset
        on NOOP 2 reply 421 4.3.2 going down
        on HELO reply 250 custom-helo
    """
    with rqlib.Env() as env:
        srv = faultlib.start(env, script)
        c = Raw(srv.port)
        check_eq(c.reply(), (220, [b"220-custom.test ready\r\n",
                                   b"220 second greeting line\r\n"]),
                 "multi-line greeting")
        check_eq(c.cmd(b"EHLO a"), (250, [b"250-custom-ehlo\r\n",
                                          b"250-PIPELINING\r\n",
                                          b"250 X-FAULT\r\n"]), "EHLO")
        check_eq(c.cmd(b"MAIL FROM:<a@x.test>"),
                 (451, [b"451 4.3.0 mail later\r\n"]), "MAIL 1")
        check_eq(c.cmd(b"MAIL FROM:<a@x.test>")[0], 250, "MAIL 2 normal")
        check_eq(c.cmd(b"RCPT TO:<b@x.test>")[0], 250, "RCPT 1")
        check_eq(c.cmd(b"RCPT TO:<c@x.test>")[0], 452, "RCPT 2")
        check_eq(c.cmd(b"RCPT TO:<d@x.test>")[0], 250, "RCPT 3")
        check_eq(c.cmd(b"DATA")[0], 453, "DATA 1")
        check_eq(c.cmd(b"DATA"), (354, [b"354 go on\r\n"]), "DATA 2")
        check_eq(c.cmd(b"hello\r\n."), (552, [b"552-5.3.4 too big\r\n",
                                              b"552 really\r\n"]), "DOT")
        check_eq(c.cmd(b"RSET"), (250, [b"250 2.0.0 custom reset\r\n"]),
                 "RSET")
        check_eq(c.cmd(b"HELO b"), (250, [b"250 custom-helo\r\n"]), "HELO")
        check_eq(c.cmd(b"NOOP")[0], 250, "NOOP 1")
        check_eq(c.cmd(b"NOOP")[0], 421, "NOOP 2")
        check(c.eof(), "421 closes the connection")
        c.close()
        check_eq(srv.messages(), [], "a 552 at the dot keeps nothing")
        # each reply class at CONNECT
        srv.stop()
        for code in (421, 554):
            srv = faultlib.start(env, "on CONNECT reply %d 4.0.0 no" % code)
            c = Raw(srv.port)
            check_eq(c.reply()[0], code, "greeting %d" % code)
            if code == 554:
                check_eq(c.cmd(b"EHLO a")[0], 503, "after a 554 greeting")
                check_eq(c.cmd(b"QUIT")[0], 221, "QUIT after 554")
            check(c.eof(), "closed after %d" % code)
            c.close()
            srv.stop()


def test_nth_and_conn():
    script = """
        on MAIL conn 2 reply 421 4.4.2 conn two
        on RCPT 2 conn 3 reply 550 5.0.0 specific
        on RCPT 2 reply 451 4.0.0 generic
    """
    with rqlib.Env() as env:
        srv = faultlib.start(env, script)
        for conn in (1, 2, 3):
            c = session(srv)
            code, _ = c.cmd(b"MAIL FROM:<a@x.test>")
            if conn == 2:
                check_eq(code, 421, "conn 2 MAIL")
                check(c.eof(), "closed after 421")
                c.close()
                continue
            check_eq(code, 250, "MAIL conn %d" % conn)
            check_eq(c.cmd(b"RCPT TO:<a@x.test>")[0], 250, "RCPT 1")
            check_eq(c.cmd(b"RCPT TO:<b@x.test>")[0],
                     550 if conn == 3 else 451, "RCPT 2 conn %d" % conn)
            check_eq(c.cmd(b"RCPT TO:<c@x.test>")[0], 250, "RCPT 3")
            c.close()
        srv.stop()
        check_eq(srv.conns(), [1, 2, 3], "connection numbers")


def test_rcpt_addresses():
    script = """
        ehlo PIPELINING DSN ENHANCEDSTATUSCODES
        rcpt bad@x.test reply 550 5.1.1 no such user
        rcpt <Later@X.test> reply 451 4.2.0 greylisted
        on RCPT 3 stall 0.3
    """
    with rqlib.Env() as env:
        srv = faultlib.start(env, script)
        s = smtplib.SMTP("127.0.0.1", srv.port, timeout=10)
        s.ehlo("client.test")
        check_eq(s.mail("a@x.test"), (250, b"2.1.0 Ok"), "MAIL")
        check_eq(s.rcpt("good@x.test"), (250, b"2.1.5 Ok"), "good")
        check_eq(s.rcpt("BAD@x.test"), (550, b"5.1.1 no such user"), "bad")
        t0 = time.time()
        check_eq(s.rcpt("later@x.test", ["NOTIFY=FAILURE"]),
                 (451, b"4.2.0 greylisted"), "stalled rcpt keeps its answer")
        check(time.time() - t0 >= 0.3, "RCPT 3 stalled")
        check_eq(s.rcpt("also@x.test", ["ORCPT=rfc822;also@x.test"])[0],
                 250, "ORCPT")
        check_eq(s.data(b"Subject: t\r\n\r\nbody\r\n")[0], 250, "DATA")
        s.quit()
        msgs = srv.wait_messages(1)
        check_eq(msgs[0][0], ["mail FROM:<a@x.test>",
                              "rcpt TO:<good@x.test>",
                              "rcpt TO:<also@x.test> "
                              "ORCPT=rfc822;also@x.test"],
                 "env: only accepted recipients")
        srv.stop()


def test_stall_timing():
    script = """
        on CONNECT conn 1 stall 1.0
        on MAIL stall 1.5
        on DOT stall 1.0
    """
    with rqlib.Env() as env:
        srv = faultlib.start(env, script)
        t0 = time.time()
        c = Raw(srv.port)
        check_eq(c.reply()[0], 220, "greeting")
        dt = time.time() - t0
        check(1.0 <= dt < 4.0, "greeting stalled 1s, took %.2f" % dt)
        c.cmd(b"EHLO a")
        # pipelined: nothing is answered while MAIL stalls
        t0 = time.time()
        c.send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n")
        check_eq(c.reply()[0], 250, "MAIL")
        dt = time.time() - t0
        check(1.5 <= dt < 4.5, "MAIL stalled 1.5s, took %.2f" % dt)
        check_eq(c.reply()[0], 250, "RCPT")
        check_eq(c.reply()[0], 354, "DATA")
        t0 = time.time()
        check_eq(c.cmd(b"x\r\n.")[0], 250, "dot")
        dt = time.time() - t0
        check(1.0 <= dt < 4.0, "dot stalled 1s, took %.2f" % dt)
        c.close()
        srv.wait_closed(1)
        cmd = [e for e in srv.events("cmd") if e["data"].startswith("MAIL")]
        rep = [e for e in srv.events("reply") if e["data"].startswith("250 2.1.0")]
        check(rep[0]["t"] - cmd[0]["t"] >= 1.5, "event log shows the stall")
        # the message was written before the (stalled) reply
        check_eq(len(srv.messages()), 1, "dumped")
        srv.stop()


def test_client_gives_up_during_stall():
    """A client that closes during a stall is seen at once, so close minus
    last cmd measures the client's timeout."""
    with rqlib.Env() as env:
        srv = faultlib.start(env, "on RCPT stall 30\n")
        c = session(srv)
        c.cmd(b"MAIL FROM:<a@x.test>")
        c.send(b"RCPT TO:<b@x.test>\r\n")
        time.sleep(0.7)
        c.close()
        ev = srv.wait_closed(1, timeout=5)
        last = srv.events("cmd", 1)[-1]
        check_eq(last["data"], "RCPT TO:<b@x.test>", "last command")
        gave_up = ev["t"] - last["t"]
        check(0.6 <= gave_up < 3.0, "gave up after %.2f s" % gave_up)
        check_eq(ev["data"], "client closed", "close reason")
        srv.stop()


def test_partial_and_trickle():
    script = """
        on MAIL partial 250 2.1 stall 1.0
        on RCPT 1 partial 45 stall 0.5
        on RCPT 2 trickle 0.05
    """
    with rqlib.Env() as env:
        srv = faultlib.start(env, script)
        c = session(srv)
        t0 = time.time()
        c.send(b"MAIL FROM:<a@x.test>\r\n")
        c.s.settimeout(5)
        first = c.s.recv(100)
        check_eq(first, b"250 2.1", "partial text first")
        check(time.time() - t0 < 0.8, "partial text at once")
        check_eq(c.line(), b".0 Ok\r\n", "then the rest")
        check(time.time() - t0 >= 1.0, "after the stall")
        # TEXT not a prefix of the normal reply: a line of its own first
        c.send(b"RCPT TO:<b@x.test>\r\n")
        check_eq(c.line(), b"45\r\n", "partial junk line")
        check_eq(c.reply()[0], 250, "normal reply after")
        t0 = time.time()
        c.send(b"RCPT TO:<c@x.test>\r\n")
        got = []
        while not b"".join(got).endswith(b"\n"):
            got.append(c.s.recv(100))
        dt = time.time() - t0
        check_eq(b"".join(got), b"250 2.1.5 Ok\r\n", "trickled reply")
        check(dt >= 13 * 0.05, "trickle took %.2f" % dt)
        check(len(got) >= 5, "arrived in pieces (%d)" % len(got))
        c.close()
        srv.stop()


def test_drop_garbage_endless():
    script = """
        on RCPT 2 drop
        on MAIL 1 conn 2 garbage
        on MAIL conn 3 endless
        on BLOCK conn 4 drop
    """
    with rqlib.Env() as env:
        srv = faultlib.start(env, script)
        c = session(srv)
        c.send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\n"
               b"RCPT TO:<c@x.test>\r\nDATA\r\n")
        check_eq(c.reply()[0], 250, "MAIL before the drop")
        check_eq(c.reply()[0], 250, "RCPT 1 before the drop")
        check(c.eof(), "dropped")
        check_eq(c.buf, b"", "nothing after the drop")
        c.close()
        check_eq(srv.wait_closed(1)["data"], "drop", "close reason")

        c = session(srv)
        c.send(b"MAIL FROM:<a@x.test>\r\n")
        junk = c.line()
        check(junk[:3] != b"250" and not junk[:3].isdigit(), "garbage line")
        check_eq(c.cmd(b"MAIL FROM:<a@x.test>")[0], 250,
                 "session goes on after garbage")
        c.close()

        c = session(srv)
        c.send(b"MAIL FROM:<a@x.test>\r\n")
        n = 0
        c.s.settimeout(5)
        while n < 2000000:
            d = c.s.recv(65536)
            check(d and b"\n" not in d, "endless line has no newline")
            n += len(d)
        c.close()
        check_eq(srv.wait_closed(3)["data"], "client closed", "endless end")

        c = session(srv)
        c.cmd(b"MAIL FROM:<a@x.test>")
        c.cmd(b"RCPT TO:<b@x.test>")
        check_eq(c.cmd(b"DATA")[0], 354, "DATA")
        try:
            c.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
        except OSError:
            pass
        check(c.eof(), "dropped mid-DATA")
        c.close()
        srv.wait_closed(4)
        check_eq(srv.messages(), [], "no message kept")
        srv.stop()


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for l in f:
            if l.startswith("VmRSS:"):
                return int(l.split()[1])
    return 0


def test_bounded_memory():
    """Endless replies to a client that does not read, overlong lines and
    a flood of pipelined commands: the server's memory stays bounded."""
    with rqlib.Env() as env:
        srv = faultlib.start(env, "on MAIL endless\non NOOP stall 5\n")
        base = rss_kb(srv.proc.pid)
        c1 = session(srv)
        c1.send(b"MAIL FROM:<a@x.test>\r\n")  # never read
        c2 = session(srv)
        c2.send(b"x" * 5000 + b"\r\n")
        check_eq(c2.reply()[0], 500, "line over 4096 bytes")
        check_eq(c2.cmd(b"NOOP" + b" " * 4000)[0], 250,
                 "a 4004-byte line is fine")
        chunk = b"y" * 65536
        for _ in range(160):  # 10 MB without a newline
            c2.send(chunk)
        c2.send(b"\r\n")
        check_eq(c2.reply()[0], 500, "10 MB line")
        check_eq(c2.cmd(b"RSET")[0], 250, "still serving")
        c3 = session(srv)
        c3.send(b"NOOP\r\n")  # stalls 5 s; then a flood while busy
        c3.s.settimeout(0.2)
        sent = 0
        try:
            while sent < 64 << 20:
                sent += c3.s.send(b"NOOP\r\n" * 10000)
        except (socket.timeout, BlockingIOError):
            pass
        time.sleep(1.5)
        grown = rss_kb(srv.proc.pid) - base
        limit = 60000 if SANITIZE else 20000
        check(grown < limit, "RSS grew by %d kB" % grown)
        for c in (c1, c2, c3):
            c.close()
        srv.stop()


def send_raw_message(c, data):
    c.cmd(b"MAIL FROM:<a@x.test>")
    c.cmd(b"RCPT TO:<b@x.test>")
    check_eq(c.cmd(b"DATA")[0], 354, "DATA")
    c.send(data)
    return c.reply()


def test_dump_bytes():
    bodies = [
        b"Subject: stuffing\r\n\r\n..leading dot\r\n.\r\n",
        b"bare\nLF\rCR\r\n\n.\n.\r.x\r\n\r\n.\r\n",
        b"8bit \xe9\xff\x00 nul\r\n.\r\n",
        b".\r\n",
        (b"big " + bytes(range(256)) + b"\r\n") * 20000 + b"\r\n.\r\n",
    ]
    with rqlib.Env() as env:
        srv = faultlib.start(env, "ehlo SIZE 100000000\n")
        c = session(srv)
        for b in bodies:
            check_eq(send_raw_message(c, b)[0], 250, "accepted")
        # the terminator split across writes, after a dotted line
        c.cmd(b"MAIL FROM:<a@x.test>")
        c.cmd(b"RCPT TO:<b@x.test>")
        c.cmd(b"DATA")
        for piece in (b"a\r", b"\n.", b".b\r\n", b"\r", b"\n", b".", b"\r",
                      b"\n"):
            c.send(piece)
            time.sleep(0.02)
        check_eq(c.reply()[0], 250, "split terminator")
        bodies.append(b"a\r\n..b\r\n\r\n.\r\n")
        # everything in one write (not waiting for 354): all is answered
        c.send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n"
               b"one write\r\n.\r\nNOOP\r\n")
        check_eq([c.reply()[0] for _ in range(5)], [250, 250, 354, 250, 250],
                 "replies to a single write")
        bodies.append(b"one write\r\n.\r\n")
        c.close()
        msgs = srv.wait_messages(len(bodies))
        check_eq(len(msgs), len(bodies), "message count")
        for (envl, raw), want in zip(msgs, bodies):
            check(raw == want, "dump differs: %r... vs %r..." %
                  (raw[:60], want[:60]))
            check_eq(envl, ["MAIL FROM:<a@x.test>", "RCPT TO:<b@x.test>"],
                     "env")
        names = sorted(os.listdir(srv.dump_dir))
        check_eq(names[:2], ["1-1.eml", "1-1.env"], "file names")
        check(not [n for n in names if n.startswith(".")], "no temp files")
        srv.stop()


def test_size_limit():
    with rqlib.Env() as env:
        srv = faultlib.start(env, "ehlo SIZE 1000 ENHANCEDSTATUSCODES\n")
        c = session(srv)
        check_eq(c.cmd(b"MAIL FROM:<a@x.test> SIZE=1001"),
                 (552, [b"552 5.3.4 Message size exceeds fixed limit\r\n"]),
                 "declared size")
        check_eq(send_raw_message(c, b"x" * 2000 + b"\r\n.\r\n")[0], 552,
                 "actual size")
        check_eq(send_raw_message(c, b"x" * 900 + b"\r\n.\r\n")[0], 250,
                 "small message")
        c.close()
        check_eq(len(srv.wait_messages(1)), 1, "only the small one kept")
        srv.stop()


def test_block_actions():
    """BLOCK rules act while message data arrives: stall stops reading
    (a client writing a big message blocks), trickle reads slowly."""
    big = b"z" * 78 + b"\r\n"
    big = big * ((16 << 20) // len(big)) + b".\r\n"  # 16 MB
    with rqlib.Env() as env:
        srv = faultlib.start(env, "on BLOCK 1 stall 2\non BLOCK 2 trickle 0.01\n"
                             "on BLOCK 3 reply 451 4.3.0 abort mid-data\n")
        c = session(srv)
        c.cmd(b"MAIL FROM:<a@x.test>")
        c.cmd(b"RCPT TO:<b@x.test>")
        c.cmd(b"DATA")
        t0 = time.time()
        c.send(big)
        dt = time.time() - t0
        check(dt >= 1.5, "the write blocked during the stall (%.2f)" % dt)
        check_eq(c.reply()[0], 250, "big message")
        data = b"q" * 20000 + b"\r\n.\r\n"
        check_eq(send_raw_message(c, data)[0], 250, "trickled")
        ev = srv.events(conn=1)
        start = [e["t"] for e in ev if e["event"] == "data"][1]
        dot = [e["t"] for e in ev if e["event"] == "cmd" and
               e["data"] == "."][1]
        check(dot - start >= 0.15, "trickle read slowly (%.2f)" % (dot - start))
        c.cmd(b"MAIL FROM:<a@x.test>")
        c.cmd(b"RCPT TO:<b@x.test>")
        c.cmd(b"DATA")
        c.send(b"some data\r\n")
        check_eq(c.reply()[0], 451, "reply mid-data")
        check(c.eof(), "closed after a mid-data reply")
        c.close()
        msgs = srv.messages()
        check_eq(len(msgs), 2, "two kept")
        check(msgs[0][1] == big, "big message byte for byte")
        srv.stop()


def test_event_log():
    with rqlib.Env() as env:
        srv = faultlib.start(env, "on CONNECT stall 1\n")
        n = 20
        conns = [socket.create_connection(("127.0.0.1", srv.port), 10)
                 for _ in range(n)]
        rqlib.wait_for(lambda: len(srv.conns()) == n, 10, what="connects")
        for s in conns:
            s.close()
        rqlib.wait_for(lambda: len(srv.events("close")) == n, 10,
                       what="closes")
        check_eq(srv.max_concurrent(), n, "concurrent connections")
        c = session(srv)
        c.cmd(b"NOOP \x01\"\\\xff\xe9" + b"w" * 2000)
        c.close()
        ev = srv.events("cmd", n + 1)
        got = ev[-1]["data"].encode("latin-1")
        check_eq(len(got), 1000, "cmd data bounded to 1000 bytes")
        check(got.startswith(b"NOOP \x01\"\\\xff\xe9www"), "escaped: %r" %
              got[:20])
        for e in srv.events():
            check(set(e) == {"t", "conn", "event", "data"}, "fields %r" % e)
            check(abs(e["t"] - time.time()) < 120, "unix time")
        srv.stop()


def tls_ctx(srv):
    ctx = ssl.create_default_context(cafile=srv.ca)
    return ctx


def test_starttls():
    script = """
        ehlo PIPELINING STARTTLS 8BITMIME ENHANCEDSTATUSCODES
        on STARTTLS conn 2 inject 250 injected\\r\\n
        on STARTTLS conn 3 badtls
        on STARTTLS conn 4 reply 454 4.7.0 not now
    """
    with rqlib.Env() as env:
        srv = faultlib.start(env, script, tls=True)
        s = smtplib.SMTP("127.0.0.1", srv.port, timeout=10)
        s.ehlo("client.test")
        check(s.has_extn("starttls"), "STARTTLS offered")
        check_eq(s.starttls(context=tls_ctx(srv))[0], 220, "STARTTLS")
        s.ehlo("client.test")
        check(not s.has_extn("starttls"), "not offered again under TLS")
        check_eq(s.sendmail("a@x.test", ["b@x.test"],
                            b"Subject: tls\r\n\r\nsecret\r\n"), {}, "send")
        s.quit()
        msgs = srv.wait_messages(1)
        check_eq(msgs[0][1], b"Subject: tls\r\n\r\nsecret\r\n.\r\n", "dump")
        tls = [e["data"] for e in srv.events("tls", 1)]
        check([t for t in tls if t.startswith("handshake ok TLSv1.")],
              "handshake logged: %r" % tls)
        cmds = srv.cmds(1)
        check_eq(cmds[:3], ["ehlo client.test", "STARTTLS",
                            "ehlo client.test"], "EHLO again after TLS")

        # inject: the 220 and the injected bytes arrive in one segment
        c = session(srv)
        c.send(b"STARTTLS\r\n")
        time.sleep(0.3)
        got = c.s.recv(1000)
        check_eq(got, b"220 2.0.0 Ready to start TLS\r\n250 injected\r\n",
                 "inject")
        c.close()

        # badtls: the handshake fails
        c = session(srv)
        check_eq(c.cmd(b"STARTTLS")[0], 220, "badtls 220")
        ctx = tls_ctx(srv)
        try:
            ctx.wrap_socket(c.s, server_hostname="localhost")
            raise Fail("handshake should fail")
        except (ssl.SSLError, OSError):
            pass
        c.close()

        c = session(srv)
        check_eq(c.cmd(b"STARTTLS")[0], 454, "454 to STARTTLS")
        check_eq(c.cmd(b"MAIL FROM:<a@x.test>")[0], 250, "plain goes on")
        c.close()

        # a wrong name fails verification; the server is for "localhost"
        s = smtplib.SMTP("127.0.0.1", srv.port, timeout=10)
        s._host = "wrong.test"
        s.ehlo("client.test")
        try:
            s.starttls(context=tls_ctx(srv))
            raise Fail("verify should fail for wrong.test")
        except ssl.SSLCertVerificationError:
            pass
        s.close()
        srv.stop()
    with rqlib.Env() as env:
        srv = faultlib.start(env, "ehlo STARTTLS\n")  # offered, no cert
        c = session(srv)
        check_eq(c.cmd(b"STARTTLS")[0], 454, "no certificate: 454")
        c.close()
        srv.stop()


def test_make_cert():
    with rqlib.Env() as env:
        d = os.path.join(env.dir, "certs")
        ca, cert, key = faultlib.make_cert(d, "mx.example.test")
        out = subprocess.run(["openssl", "verify", "-CAfile", ca, cert],
                             stdout=subprocess.PIPE).stdout
        check(b": OK" in out, "chain verifies: %r" % out)
        text = subprocess.run(["openssl", "x509", "-noout", "-text", "-in",
                               cert], stdout=subprocess.PIPE).stdout
        check(b"DNS:mx.example.test" in text, "SAN")
        other_ca, _, _ = faultlib.make_cert(os.path.join(env.dir, "o"),
                                            "other.test")
        out = subprocess.run(["openssl", "verify", "-CAfile", other_ca,
                              cert], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT).stdout
        check(b": OK" not in out, "unknown CA fails")


def test_ehlo_reject_and_ipv6():
    with rqlib.Env() as env:
        srv = faultlib.start(env, "ehlo-reject\n", ipv6=True)
        check(srv.port6, "port on ::1")
        s = smtplib.SMTP("::1", srv.port6, timeout=10)
        check_eq(s.sendmail("a@x.test", ["b@x.test"], b"six\r\n"), {},
                 "send over IPv6")
        s.quit()
        srv.wait_messages(1)
        cmds = srv.cmds(1)
        check_eq(cmds[0][:4].upper(), "EHLO", "EHLO tried")
        check_eq(cmds[1][:4].upper(), "HELO", "then HELO")
        check(srv.events("connect", 1)[0]["data"].startswith("[::1]:"),
              "IPv6 peer")
        srv.stop()


def test_tlsstall_idle_blackhole():
    script = """
        ehlo STARTTLS
        idle 1.0
        on STARTTLS 1 conn 1 tlsstall 1.5
        on NOOP 1 stall 2
    """
    with rqlib.Env() as env:
        srv = faultlib.start(env, script, tls=True)
        c = session(srv)
        check_eq(c.cmd(b"STARTTLS")[0], 220, "STARTTLS")
        t0 = time.time()
        c.s.settimeout(10)
        ts = tls_ctx(srv).wrap_socket(c.s, server_hostname="localhost")
        dt = time.time() - t0
        check(1.5 <= dt < 4.5, "handshake held back %.2f s" % dt)
        ts.sendall(b"EHLO a\r\n")
        got = ts.recv(1000)
        check_eq(got, b"250 faultsmtp\r\n", "EHLO in TLS (no STARTTLS)")
        ts.close()
        # idle: 421 after 1 s of silence, but a stall of ours is not silence
        c = session(srv)
        t0 = time.time()
        check_eq(c.cmd(b"NOOP")[0], 250, "stalled NOOP")
        check(time.time() - t0 >= 2, "stall not cut by idle")
        check_eq(c.reply()[0], 421, "idle timeout")
        dt = time.time() - t0
        check(3.0 <= dt < 6.0, "idle 1 s after the reply (%.2f)" % dt)
        check(c.eof(), "closed after idle 421")
        c.close()
        check_eq(srv.wait_closed(2)["data"], "idle timeout", "reason")
        c = session(srv)
        c.cmd(b"QUIT")
        c.close()
        check_eq(srv.wait_closed(3)["data"], "quit", "reason after QUIT")
        srv.stop()
        # a port where connect() hangs
        b = faultlib.blackhole(env)
        s = socket.socket()
        s.settimeout(0.5)
        t0 = time.time()
        try:
            s.connect(("127.0.0.1", b.port))
            raise Fail("connect should hang")
        except socket.timeout:
            pass
        check(time.time() - t0 >= 0.45, "connect hung")
        s.close()


def test_fixed_ports_ready():
    with rqlib.Env() as env:
        path = faultlib.write_script(env, "")
        p1, p2 = rqlib.free_port(), rqlib.free_port()
        p = env.spawn([faultlib.BIN, "-l", "127.0.0.1:%d" % p1,
                       "-l", "127.0.0.1:%d" % p2, "-s", path],
                      stdout=subprocess.PIPE)
        check_eq(p.stdout.readline(), b"ready\n", "ready without ports")
        for port in (p1, p2):
            c = Raw(port)
            check_eq(c.reply()[0], 220, "port %d" % port)
            c.close()
        p.send_signal(2)  # SIGINT
        check_eq(p.wait(10), 0, "clean exit on SIGINT")


def test_script_errors():
    with rqlib.Env() as env:
        for bad in ("on FOO reply 250", "on MAIL 0 drop", "on MAIL stall x",
                    "on RCPT inject x", "bogus", "rcpt x@y drop",
                    "on DATA partial 25", "on MAIL tlsstall 1", "idle 0"):
            path = faultlib.write_script(env, "# ok\n" + bad + "\n")
            p = subprocess.run([faultlib.BIN, "-l", "127.0.0.1:0", "-s", path],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               timeout=10)
            check_eq(p.returncode, 78, "exit for %r" % bad)
            check(b"line 2" in p.stderr, "line number for %r: %r" %
                  (bad, p.stderr))
        p = subprocess.run([faultlib.BIN, "-s", "/nonexistent"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        check_eq(p.returncode, 64, "usage")


def test_hostile_input():
    """Random bytes in every phase on many connections: the server stays
    up, keeps answering, and exits cleanly (no sanitizer report)."""
    rnd = random.Random(4)
    n = 40 if SANITIZE else 120  # scaled down under ASan
    with rqlib.Env() as env:
        srv = faultlib.start(env, "ehlo PIPELINING SIZE 100000 DSN STARTTLS\n",
                             tls=True)
        pre = [b"", b"EHLO a\r\n", b"EHLO a\r\nMAIL FROM:<a>\r\n"
               b"RCPT TO:<b>\r\nDATA\r\n", b"EHLO a\r\nSTARTTLS\r\n"]
        for i in range(n):
            try:
                s = socket.create_connection(("127.0.0.1", srv.port), 5)
                junk = bytes(rnd.getrandbits(8)
                             for _ in range(rnd.randint(1, 3000)))
                if rnd.random() < 0.5:
                    junk = junk.replace(b"\x00", b"\r\n")
                s.sendall(rnd.choice(pre) + junk)
                if i % 3 == 0:
                    s.shutdown(socket.SHUT_WR)
                    s.settimeout(0.5)
                    try:
                        while s.recv(65536):
                            pass
                    except OSError:
                        pass
                s.close()
            except OSError:
                pass
        c = session(srv)
        check_eq(c.cmd(b"NOOP")[0], 250, "still answering")
        c.close()
        srv.stop()


if __name__ == "__main__":
    rqlib.main(globals())
