"""End-to-end tests of the smtp client (smtp/) against faultsmtp, the
fault-injecting server (tests/faultsmtp): every phase timeout, reply
classes at every phase, per-recipient results, the recipient-limit split,
dot-stuffing and bare line ends byte for byte, reuse with RSET and the
max_deliveries_per_connection cap, IPv6, malformed replies, STARTTLS
injection.  The client is driven by tests/smtp/smtpc (one JSON line per
message).  Run with /usr/bin/python3.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faultlib  # noqa: E402
import rqlib  # noqa: E402
from rqlib import Fail, check, check_eq  # noqa: E402
from test_smtp_lib import encode, smtpc  # noqa: E402

EHLO = "ehlo PIPELINING SIZE 1000000 DSN 8BITMIME ENHANCEDSTATUSCODES\n"
BASE = "tls = none\n"
# Timing tolerance: a deadline must never fire early; late by at most
# SLACK seconds on this loaded machine.
SLACK = 2.5


def fault(env, script, **kw):
    return faultlib.start(env, script, **kw)


def addr(srv):
    return "127.0.0.1:%d" % srv.port


# ---- phase timeouts ----

# (timeout key, script, expected text, extra conf, smtpc args, tls)
TIMEOUTS = [
    ("timeout.initial", "on CONNECT stall 8",
     "timeout while receiving the initial greeting", "", (), False),
    ("timeout.helo", "on EHLO stall 8", "timeout after EHLO", "", (), False),
    ("timeout.starttls", "on STARTTLS stall 8", "timeout after STARTTLS",
     "tls = encrypt\n", (), True),
    ("timeout.starttls", "on STARTTLS tlsstall 8",
     "timeout during the TLS handshake", "tls = encrypt\n", (), True),
    ("timeout.mail", "on MAIL stall 8", "timeout after MAIL FROM", "", (),
     False),
    ("timeout.rcpt", "on RCPT stall 8", "timeout after RCPT TO", "", (),
     False),
    ("timeout.rcpt", "on RCPT trickle 0.3", "timeout after RCPT TO", "", (),
     False),
    ("timeout.rcpt", "on RCPT partial 250 2.1 stall 8",
     "timeout after RCPT TO", "", (), False),
    ("timeout.datainit", "on DATA stall 8", "timeout after DATA", "", (),
     False),
    ("timeout.datafinal", "on DOT stall 8", "timeout after end of DATA", "",
     (), False),
    ("timeout.datablock", "ehlo PIPELINING\non BLOCK stall 20",
     "timeout while sending message content", "",
     ("-z", str(32 * 1024 * 1024)), False),
]


def test_phase_timeouts():
    """Each phase's timeout fires at its value (2s), not earlier, and the
    result names the phase; the other phases keep the 5m default."""
    for key, script, text, conf, args, tls in TIMEOUTS:
        with rqlib.Env() as env:
            pre = "" if script.startswith("ehlo") else EHLO
            srv = fault(env, pre + (
                "ehlo STARTTLS\n" if tls else "") + script, tls=tls)
            r = smtpc(env, [addr(srv)], conf=(conf or BASE) + "%s = 2s\n" % key,
                      args=args)
            res = r.results[0]
            rc = r.one()
            check_eq(rc["cls"], 4, key)
            check(text in rc["text"], "%s: %r" % (key, rc["text"]))
            check(res["elapsed"] >= 2.0, "%s fired early: %.3f" %
                  (key, res["elapsed"]))
            check(res["elapsed"] < 2.0 + SLACK, "%s fired late: %.3f" %
                  (key, res["elapsed"]))


def test_connect_timeout_and_first():
    """timeout.connect on a port whose SYNs are dropped; a message's first
    attempt uses timeout.connect.first (iconnect) instead."""
    with rqlib.Env() as env:
        bh = faultlib.blackhole(env)
        a = "127.0.0.1:%d" % bh.port
        conf = BASE + "timeout.connect = 3s\ntimeout.iconnect = 1s\n"
        r = smtpc(env, [a], conf=conf)
        rc = r.one()
        check_eq(rc["cls"], 4)
        check_eq(rc["phase"], "connect")
        check(r.results[0]["host_down"], "host_down")
        e = r.results[0]["elapsed"]
        check(3.0 <= e < 3.0 + SLACK, "connect timeout %.3f" % e)
        r = smtpc(env, [a], conf=conf, args=("-1",))
        e = r.results[0]["elapsed"]
        check(1.0 <= e < 1.0 + SLACK, "iconnect timeout %.3f" % e)


def test_first_attempt_phase_timeout():
    """timeout.rcpt.first applies on a first attempt, timeout.rcpt else."""
    with rqlib.Env() as env:
        srv = fault(env, EHLO + "on RCPT stall 8")
        conf = BASE + "timeout.rcpt = 3s\ntimeout.rcpt.first = 1s\n"
        r = smtpc(env, [addr(srv)], conf=conf, args=("-1",))
        e = r.results[0]["elapsed"]
        check(1.0 <= e < 1.0 + SLACK, "rcpt.first %.3f" % e)
        r = smtpc(env, [addr(srv)], conf=conf)
        e = r.results[0]["elapsed"]
        check(3.0 <= e < 3.0 + SLACK, "rcpt %.3f" % e)


def test_quit_timeout():
    """A server that never answers QUIT is closed after timeout.quit."""
    with rqlib.Env() as env:
        srv = fault(env, EHLO + "on QUIT stall 10")
        r = smtpc(env, [addr(srv)], conf=BASE + "timeout.quit = 2s\n"
                  "connection_cache_time = 0s\n")
        check_eq(r.one()["cls"], 2)
        srv.wait_closed(1)
        q = [e for e in srv.events("cmd", 1) if e["data"] == "QUIT"][0]
        c = srv.closed(1)
        gap = c["t"] - q["t"]
        check(2.0 - 0.05 <= gap < 2.0 + SLACK, "quit timeout %.3f" % gap)


def test_rset_timeout_on_reuse():
    """A cached connection whose RSET times out (timeout.rset) does not
    count against the message: it goes out on a fresh connection."""
    with rqlib.Env() as env:
        srv = fault(env, EHLO + "on RSET conn 1 stall 10")
        r = smtpc(env, [addr(srv)], conf=BASE + "timeout.rset = 2s\n",
                  args=("-n", "2"))
        check_eq([x["rcpts"][0]["cls"] for x in r.results], [2, 2])
        check_eq(r.results[1]["reused"], False, "reused after the retry")
        e = r.results[1]["elapsed"]
        check(2.0 <= e < 2.0 + SLACK, "rset timeout %.3f" % e)
        check_eq(len(srv.conns()), 2, "connections")
        check_eq(len(srv.messages()), 2, "messages")


# ---- reply classes at every phase ----

# (script, conf, cls, code, phase, text piece, host_down)
REPLIES = [
    ("greeting 421 4.3.2 go away", "", 4, 421, "greeting", "go away", True),
    ("greeting 554 5.7.1 no", "", 4, 554, "greeting", "554 5.7.1 no",
     True),
    ("on EHLO reply 451 4.3.0 later", "", 4, 451, "EHLO", "later", True),
    ("on EHLO reply 550 5.5.1 no\non HELO reply 550 5.5.1 nohelo", "", 4,
     550, "HELO", "nohelo", True),
    ("on MAIL reply 451 4.3.0 mail later", "", 4, 451, "MAIL FROM",
     "mail later", False),
    ("on MAIL reply 553 5.1.8 bad sender", "", 5, 553, "MAIL FROM",
     "bad sender", False),
    ("on RCPT reply 452 4.2.2 full", "", 4, 452, "RCPT TO", "full", False),
    ("on RCPT reply 550 5.1.1 unknown", "", 5, 550, "RCPT TO", "unknown",
     False),
    ("on RCPT reply 421 4.3.2 closing", "", 4, 421, "RCPT TO", "closing",
     False),
    ("on DATA reply 451 4.3.0 data later", "", 4, 451, "DATA",
     "data later", False),
    ("on DATA reply 554 5.3.0 no data", "", 5, 554, "DATA", "no data",
     False),
    ("on DOT reply 452 4.3.1 disk full", "", 4, 452, "end of DATA",
     "disk full", False),
    ("on DOT reply 554 5.7.1 spam", "", 5, 554, "end of DATA", "spam",
     False),
    ("on DOT reply 250 2.0.0 queued as XYZ", "", 2, 250, "end of DATA",
     "250 2.0.0 queued as XYZ", False),
    ("ehlo STARTTLS\non STARTTLS reply 454 4.7.0 no tls", "tls = encrypt\n",
     4, 454, "STARTTLS", "no tls", False),
    ("on MAIL garbage", "", 4, 0, "MAIL FROM", "malformed reply", False),
    ("on RCPT endless", "", 4, 0, "RCPT TO", "overlong reply", False),
    ("on EHLO raw 250-a\\r\\n251 b\\r\\n", "", 4, 0, "EHLO",
     "malformed reply", True),
    # a long line is a reply like any other (its text cut): a 550 bounces
    ("on RCPT reply 550 5.1.1 " + "x" * 3000, "", 5, 550, "RCPT TO",
     "550 5.1.1 xxx", False),
    ("on DOT reply 250 2.0.0 " + "y" * 3000, "", 2, 250, "end of DATA",
     "250 2.0.0 yyy", False),
    ("on MAIL drop", "", 4, 0, "MAIL FROM",
     "lost connection with 127.0.0.1[127.0.0.1] while sending MAIL FROM",
     False),
    ("on DOT drop", "", 4, 0, "end of DATA", "lost connection", False),
]


def test_reply_classes():
    """Every class of reply at every phase gives that class (a 5xx before
    MAIL is temporary, as Postfix's smtp_skip_5xx_greeting), the code, the
    phase and the server's text."""
    for script, conf, cls, code, phase, text, down in REPLIES:
        with rqlib.Env() as env:
            srv = fault(env, EHLO + script, tls="STARTTLS" in script)
            r = smtpc(env, [addr(srv)], conf=conf or BASE)
            rc = r.one()
            what = script[:40]
            check_eq(rc["cls"], cls, what)
            check_eq(rc["code"], code, what)
            check_eq(rc["phase"], phase, what)
            check(text in rc["text"], "%s: %r" % (what, rc["text"]))
            check_eq(r.results[0]["host_down"], down, what + " host_down")
            check("\r" not in rc["text"] and "\n" not in rc["text"])
            check(len(rc["text"]) < 600)
            srv.stop()


def test_ehlo_rejected_helo_fallback():
    """EHLO 502 -> HELO, then plain SMTP: no ESMTP parameters."""
    with rqlib.Env() as env:
        srv = fault(env, EHLO + "ehlo-reject\n")
        r = smtpc(env, [addr(srv)], conf=BASE, args=("-N", "success"))
        check_eq(r.one()["cls"], 2)
        cmds = srv.cmds(1)
        check(cmds[0].startswith("EHLO") and cmds[1].startswith("HELO"),
              repr(cmds))
        check_eq(cmds[2], "MAIL FROM:<sender@example.org>")


def test_quoted_angle_brackets():
    """A quoted local part with '<' or '>' (RFC 5321 qtextSMTP) goes out
    as given, and the other recipients of the transaction with it."""
    with rqlib.Env() as env:
        srv = fault(env, EHLO)
        r = smtpc(env, [addr(srv)], conf=BASE,
                  rcpts=('"a>b"@example.org', "plain@example.org",
                         '"c<d \\" e"@example.org'),
                  args=("-f", '"s>t"@example.org', "-V", "a<b>+c"))
        check_eq([x["cls"] for x in r.results[0]["rcpts"]], [2, 2, 2])
        cmds = srv.cmds(1)
        check(cmds[1].startswith('MAIL FROM:<"s>t"@example.org> '),
              repr(cmds))
        # An ENVID goes out xtext-encoded: '<' and '>' are xchars.
        check(cmds[1].endswith(" ENVID=a<b>+2Bc"), repr(cmds))
        for a in ('"a>b"@example.org', "plain@example.org",
                  '"c<d \\" e"@example.org'):
            check("RCPT TO:<%s>" % a in cmds, repr(cmds))


def test_next_address():
    """Connection refused, then a 421 greeting, then a good server: the
    message goes to the third address; connections are tried in order."""
    with rqlib.Env() as env:
        dead = rqlib.free_port()
        bad = fault(env, EHLO + "greeting 421 4.3.2 busy")
        good = fault(env, EHLO)
        r = smtpc(env, ["one@127.0.0.1:%d" % dead, "two@" + addr(bad),
                        "three@" + addr(good)], conf=BASE)
        check_eq(r.one()["cls"], 2)
        check_eq(r.results[0]["host"], "three")
        check_eq(r.results[0]["port"], good.port)
        check_eq(len(good.messages()), 1)
        # all fail: the last failure is the result, host_down set
        r = smtpc(env, ["127.0.0.1:%d" % dead, addr(bad)], conf=BASE)
        rc = r.one()
        check_eq(rc["cls"], 4)
        check("busy" in rc["text"], rc["text"])
        check(r.results[0]["host_down"])
        r = smtpc(env, ["127.0.0.1:%d" % dead], conf=BASE)
        check("Connection refused" in r.one()["text"], r.one()["text"])


def test_next_address_mid_session():
    """A 421, a timeout or a lost connection before the message content
    went out moves the recipients without a result to the next address;
    results already given stay.  After the content it is a deferral (the
    message may have arrived)."""
    for script in ("on RCPT 2 reply 421 4.3.2 bye", "on RCPT 2 stall 8",
                   "on DATA drop"):
        with rqlib.Env() as env:
            first = fault(env, EHLO + script + "\n"
                          "rcpt bad@x.test reply 550 5.1.1 unknown\n")
            second = fault(env, EHLO)
            r = smtpc(env, [addr(first), addr(second)],
                      ["bad@x.test", "a@x.test", "b@x.test"],
                      conf=BASE + "timeout.rcpt = 1s\n")
            check_eq([x["cls"] for x in r.rcpts()], [5, 2, 2], script)
            check_eq(r.results[0]["port"], second.port, script)
            envl = second.messages()[0][0]
            check_eq(envl[1:], ["RCPT TO:<a@x.test>", "RCPT TO:<b@x.test>"],
                     script)
            check_eq(len(first.messages()), 0, script)
    with rqlib.Env() as env:
        first = fault(env, EHLO + "on DOT drop")
        second = fault(env, EHLO)
        r = smtpc(env, [addr(first), addr(second)], conf=BASE)
        rc = r.one()
        check_eq(rc["cls"], 4)
        check("lost connection" in rc["text"], rc["text"])
        check_eq(second.conns(), [])


# ---- recipients and transactions ----

def test_mixed_recipients():
    """Per-recipient results: accepted, refused permanently and
    temporarily; only the accepted one gets the message."""
    with rqlib.Env() as env:
        srv = fault(env, EHLO +
                    "rcpt bad@x.test reply 550 5.1.1 no such user\n"
                    "rcpt tmp@x.test reply 451 4.2.0 try later\n")
        r = smtpc(env, [addr(srv)], ["ok@x.test", "bad@x.test",
                                      "tmp@x.test", "ok2@x.test"], conf=BASE)
        got = [(x["cls"], x["code"], x["status"]) for x in r.rcpts()]
        check_eq(got, [(2, 250, "2.0.0"), (5, 550, "5.1.1"),
                       (4, 451, "4.2.0"), (2, 250, "2.0.0")])
        msgs = srv.messages()
        check_eq(len(msgs), 1)
        check_eq([l for l in msgs[0][0] if l.startswith("RCPT")],
                 ["RCPT TO:<ok@x.test>", "RCPT TO:<ok2@x.test>"])


def test_no_accepted_recipient_rset():
    """No recipient accepted: RSET and no DATA (lock-step); with
    PIPELINING the DATA already sent is refused, then RSET."""
    for ehlo, data_seen in (("ehlo 8BITMIME\n", False), (EHLO, True)):
        with rqlib.Env() as env:
            srv = fault(env, ehlo + "on RCPT reply 550 5.1.1 nobody")
            r = smtpc(env, [addr(srv)], ["a@x.test", "b@x.test"], conf=BASE)
            check_eq([x["cls"] for x in r.rcpts()], [5, 5])
            cmds = srv.cmds(1)
            check_eq("DATA" in cmds, data_seen, repr(cmds))
            check("RSET" in cmds, repr(cmds))
            check_eq(len(srv.messages()), 0)


def test_recipient_limit_split():
    """max_recipients_per_transaction = 2: five recipients go in three
    transactions over one connection, each recipient exactly once."""
    for ehlo in (EHLO, "ehlo ENHANCEDSTATUSCODES\n"):
        with rqlib.Env() as env:
            srv = fault(env, ehlo)
            rcpts = ["r%d@x.test" % i for i in range(5)]
            r = smtpc(env, [addr(srv)], rcpts, conf=BASE +
                      "max_recipients_per_transaction = 2\n")
            check_eq([x["cls"] for x in r.rcpts()], [2] * 5)
            check_eq(r.results[0]["transactions"], 3)
            msgs = srv.messages()
            check_eq([len([l for l in m[0] if l.startswith("RCPT")])
                      for m in msgs], [2, 2, 1])
            check_eq(len(srv.conns()), 1)


def test_size_limit():
    """A message over the server's SIZE gets a permanent 5.3.4 result
    without MAIL FROM; SIZE= is sent when SIZE is offered."""
    with rqlib.Env() as env:
        srv = fault(env, "ehlo PIPELINING SIZE 1000 ENHANCEDSTATUSCODES")
        r = smtpc(env, [addr(srv)], conf=BASE, args=("-z", "5000"))
        rc = r.one()
        check_eq((rc["cls"], rc["status"]), (5, "5.3.4"))
        check(not any(c.startswith("MAIL") for c in srv.cmds()))
        r = smtpc(env, [addr(srv)], conf=BASE, args=("-z", "500"))
        check_eq(r.one()["cls"], 2)
        mail = [c for c in srv.cmds() if c.startswith("MAIL")]
        check(mail and " SIZE=" in mail[0], repr(mail))


def test_esmtp_parameters():
    """DSN parameters and BODY=8BITMIME go out only when offered."""
    msg8 = "Subject: caf\u00e9\r\n\r\nna\u00efve\r\n".encode("utf-8")
    args = ("-N", "success,delay", "-O", "-V", "id+1=x", "-R", "hdrs")
    with rqlib.Env() as env:
        srv = fault(env, EHLO)
        r = smtpc(env, [addr(srv)], ["u@x.test"], conf=BASE, args=args,
                  msg=msg8)
        check_eq(r.one()["cls"], 2)
        envl = srv.messages()[0][0]
        check_eq(envl[0], "MAIL FROM:<sender@example.org> SIZE=%d "
                 "BODY=8BITMIME RET=HDRS ENVID=id+2B1+3Dx" % len(msg8))
        check_eq(envl[1], "RCPT TO:<u@x.test> NOTIFY=SUCCESS,DELAY "
                 "ORCPT=rfc822;u@x.test")
        check_eq(srv.messages()[0][1], encode(msg8))
    with rqlib.Env() as env:
        srv = fault(env, "ehlo PIPELINING")
        r = smtpc(env, [addr(srv)], ["u@x.test"], conf=BASE, args=args,
                  msg=msg8)
        check_eq(r.one()["cls"], 2)
        envl = srv.messages()[0][0]
        check_eq(envl, ["MAIL FROM:<sender@example.org>",
                        "RCPT TO:<u@x.test>"])


def test_smtputf8():
    """A UTF-8 address goes out with SMTPUTF8 when offered; else the
    message fails permanently (5.6.7) without MAIL FROM, as Postfix."""
    u = "j\u00fcrgen@x.test"
    with rqlib.Env() as env:
        srv = fault(env, EHLO + "ehlo SMTPUTF8\n")
        r = smtpc(env, [addr(srv)], [u], conf=BASE)
        check_eq(r.one()["cls"], 2)
        mail = [c for c in srv.cmds() if c.startswith("MAIL")]
        check(mail and mail[0].endswith(" SMTPUTF8"), repr(mail))
        srv2 = fault(env, EHLO)
        r = smtpc(env, [addr(srv2)], [u, "ascii@x.test"], conf=BASE)
        check_eq([(x["cls"], x["status"]) for x in r.rcpts()],
                 [(5, "5.6.7")] * 2)
        check(not any(c.startswith("MAIL") for c in srv2.cmds()))
        r = smtpc(env, [addr(srv2)], ["ascii@x.test"], conf=BASE)
        check_eq(r.one()["cls"], 2)


# ---- the message on the wire ----

TRICKY = [
    b"Subject: dots\r\n\r\n.\r\n..\r\n.x\r\nend\r\n",
    b"Subject: bare lf\n\nline1\nline2\n.\nQUIT\n",
    b"Subject: bare cr\r\rline1\r.\rline2",
    b"Subject: smuggle\r\n\r\nhello\n.\r\nMAIL FROM:<evil@x>\r\n"
    b"RCPT TO:<victim@x>\r\nDATA\r\n\r\n.\r\n",
    b"Subject: mixed\r\n\r\na\r\r\nb\n\rc\r\n.\r.\n.",
    b"Subject: no final newline\r\n\r\nlast line",
    b"",
    b"x" * 70000 + b"\n." + b"y" * 3 + b"\r\n" * 3 + b".",
]


def test_dot_stuffing_and_line_ends():
    """What the server receives is the message with every line end as
    CRLF and dot-stuffed, byte for byte; no body line ends DATA early."""
    with rqlib.Env() as env:
        srv = fault(env, EHLO)
        for i, m in enumerate(TRICKY):
            r = smtpc(env, [addr(srv)], conf=BASE, msg=m)
            check_eq(r.one()["cls"], 2, "message %d" % i)
            raw = srv.wait_messages(i + 1)[i][1]
            check_eq(raw, encode(m), "message %d on the wire" % i)
        # nothing after the smuggling attempt was taken as a command
        check(not any("evil" in c for c in srv.cmds()))


# ---- connection reuse ----

def test_reuse_and_delivery_cap():
    """Messages to one destination share a connection, RSET before each
    further one; max_deliveries_per_connection = 2 closes it with QUIT
    after two."""
    with rqlib.Env() as env:
        srv = fault(env, EHLO)
        r = smtpc(env, [addr(srv)], conf=BASE +
                  "max_deliveries_per_connection = 2\n", args=("-n", "5"))
        check_eq([x["rcpts"][0]["cls"] for x in r.results], [2] * 5)
        check_eq([x["reused"] for x in r.results],
                 [False, True, False, True, False])
        check_eq(len(srv.conns()), 3)
        for c in (1, 2):
            cmds = [x.split()[0] for x in srv.cmds(c)]
            check_eq(cmds, ["EHLO", "MAIL", "RCPT", "DATA", ".", "RSET",
                            "MAIL", "RCPT", "DATA", ".", "QUIT"])
        check_eq(len(srv.messages()), 5)
    with rqlib.Env() as env:
        srv = fault(env, EHLO)
        r = smtpc(env, [addr(srv)], conf=BASE, args=("-n", "6"))
        check_eq(len(srv.conns()), 1, "0 = no limit")
        check_eq(r.results[5]["reused"], True)


def test_cache_time():
    """An idle cached connection is closed with QUIT after
    connection_cache_time; the next message opens a new one."""
    with rqlib.Env() as env:
        srv = fault(env, EHLO)
        r = smtpc(env, [addr(srv)], conf=BASE + "connection_cache_time = 1s\n",
                  args=("-n", "2", "-i", "2.5"))
        check_eq([x["reused"] for x in r.results], [False, False])
        check_eq(len(srv.conns()), 2)
        cmds = srv.cmds(1)
        check_eq(cmds[-1], "QUIT")
        q = [e for e in srv.events("cmd", 1) if e["data"] == "QUIT"][0]
        d = [e for e in srv.events("cmd", 1) if e["data"] == "."][0]
        check(1.0 <= q["t"] - d["t"] < 1.0 + SLACK, "idle %.3f" %
              (q["t"] - d["t"]))


def test_reuse_failure_retried():
    """A cached connection the server dropped (or answers RSET with 421)
    does not count against the next message."""
    for script in ("on RSET conn 1 drop", "on RSET conn 1 reply 421 4.3.2 bye",
                   "idle 1"):
        with rqlib.Env() as env:
            srv = fault(env, EHLO + script)
            r = smtpc(env, [addr(srv)], conf=BASE +
                      "connection_cache_time = 10s\n",
                      args=("-n", "2", "-i", "1.5"))
            check_eq([x["rcpts"][0]["cls"] for x in r.results], [2, 2],
                     script)
            check_eq(len(srv.messages()), 2, script)


# ---- misc ----

def test_ipv6():
    """The client speaks to [::1]."""
    with rqlib.Env() as env:
        srv = fault(env, EHLO, ipv6=True)
        r = smtpc(env, ["localhost@[::1]:%d" % srv.port6], conf=BASE,
                  args=("-n", "2"))
        check_eq([x["rcpts"][0]["cls"] for x in r.results], [2, 2])
        check_eq(r.results[0]["ip"], "::1")
        check_eq(r.results[1]["reused"], True)
        check_eq(len(srv.messages()), 2)


def test_starttls_injection():
    """Plaintext bytes after the 220 to STARTTLS are refused."""
    with rqlib.Env() as env:
        srv = fault(env, EHLO + "ehlo STARTTLS\n"
                    "on STARTTLS inject 250 2.0.0 injected\\r\\n", tls=True)
        r = smtpc(env, [addr(srv)], conf="tls = may\n")
        rc = r.one()
        check_eq(rc["cls"], 4)
        check("injection" in rc["text"], rc["text"])
        check_eq(len(srv.messages()), 0)


def test_tls_may_falls_back_to_plaintext():
    """tls = may: a failed handshake (here: it times out) is retried in
    plaintext on a new connection (as Postfix); tls = encrypt defers."""
    with rqlib.Env() as env:
        srv = fault(env, EHLO + "ehlo STARTTLS\non STARTTLS conn 1 tlsstall 10",
                    tls=True)
        conf = "tls = may\ntimeout.starttls = 1s\n"
        r = smtpc(env, [addr(srv)], conf=conf)
        check_eq(r.one()["cls"], 2)
        check_eq(r.results[0]["tls"], "")
        check_eq(len(srv.conns()), 2)
        check("STARTTLS" not in srv.cmds(2))
        check("TLS handshake failed; trying again without TLS" in
              r.stderr, r.stderr)
        srv2 = fault(env, EHLO + "ehlo STARTTLS\non STARTTLS tlsstall 10",
                     tls=True)
        r = smtpc(env, [addr(srv2)], conf="tls = encrypt\n"
                  "timeout.starttls = 1s\n")
        rc = r.one()
        check_eq(rc["cls"], 4)
        check("TLS handshake" in rc["text"], rc["text"])
        check_eq(r.results[0]["host_down"], False)
        r = smtpc(env, [addr(srv)], conf=conf)
        check(r.results[0]["tls"].startswith("TLS"), "TLS on conn 3")
        check_eq(r.one()["cls"], 2)


def test_many_concurrent():
    """A thousand concurrent sessions on one loop (fewer under ASan)."""
    n = 200 if os.environ.get("RELAYQ_SANITIZE") == "1" else 1000
    with rqlib.Env() as env:
        srv = fault(env, EHLO, events=False, dump=False)
        r = smtpc(env, [addr(srv)], conf=BASE,
                  args=("-n", str(2 * n), "-p", str(n), "-q"))
        check_eq(r.summary["sent"], 2 * n)
        check_eq(r.summary["deferred"], 0)


def test_abort():
    """smtp_client_shutdown(abort) ends sessions stuck in a phase with
    class 4 results at once."""
    with rqlib.Env() as env:
        srv = fault(env, EHLO + "on DATA stall 30")
        r = smtpc(env, [addr(srv)], conf=BASE, args=("-n", "3", "-p", "3",
                                                     "-A", "1"))
        check_eq(len(r.results), 3)
        for x in r.results:
            check_eq(x["rcpts"][0]["cls"], 4)
            check("aborted" in x["rcpts"][0]["text"], x["rcpts"][0]["text"])
        check(r.wall < 10, "abort took %.1fs" % r.wall)


if __name__ == "__main__":
    rqlib.main(globals())
