"""The runner (`relayq run`): delivery to real servers on 127.0.0.1,
retries with backoff, bounces, per-recipient results, connection limits,
priorities, hoststatus, SIGHUP, and the delivery log read by pflogsumm.

Counts are scaled down when RELAYQ_SANITIZE=1 (ASan+UBSan build)."""
import os
import re
import signal
import subprocess
import time

import faultlib
import rqlib
from rqlib import Fail, check, check_eq
from test_runner_lib import (SANITIZE, deliveries, drop, dumps, body_of,
                             run_idle, sink, start, stop)


def relay(port, extra=""):
    return "relayhost = [127.0.0.1]:%d\n%s" % (port, extra)


def test_mixed_classes_exactly_once():
    """N messages of every class to smtp-sink: each received once, with
    its body intact and its recipient and sender as queued."""
    n = 400 if SANITIZE else 2000
    with rqlib.Env() as env:
        _, port, dd = sink(env)
        env.write_conf(relay(port))
        classes = ["urgent", "normal", "non-urgent", None]
        want = {}
        for i in range(n):
            rcpt = "r%05d@dst.test" % i
            body = "message %d\n%s\n.leading dot line\nend\n" % (
                i, "x" * (i % 300))
            _, b = drop(env, rcpt, body=body, priority=classes[i % 4])
            want[rcpt] = b.replace(b"\r\n", b"\n")
        t0 = time.time()
        run_idle(env, timeout=110)
        took = time.time() - t0
        got = {}
        for rcpts, frm, msg in dumps(dd):
            check_eq(frm, "sender@src.test", "MAIL FROM")
            check_eq(len(rcpts), 1, "recipients per transaction")
            got.setdefault(rcpts[0], []).append(msg)
        missing = set(want) - set(got)
        check(not missing, "%d never received, e.g. %s" %
              (len(missing), sorted(missing)[:3]))
        dups = [r for r, v in got.items() if len(v) > 1]
        check(not dups, "received more than once: %s" % dups[:5])
        for rcpt, msgs in got.items():
            b = body_of(msgs[0])
            if b.endswith(b"\n\n"):
                b = b[:-1]  # smtp-sink's dump adds a line end
            check(b == want[rcpt],
                  "body of %s differs: %r" % (rcpt, body_of(msgs[0])[:200]))
        sent = [d for d in deliveries(env) if d["status"] == "sent"]
        check_eq(len(sent), n, "status=sent lines")
        print("  %d messages in %.1fs" % (n, took))


def test_retry_backoff():
    """4xx, 4xx, 4xx then success: the attempts are spaced by the
    exponential backoff from retry.min (1s) to retry.max (4s)."""
    with rqlib.Env() as env:
        srv = faultlib.start(env, """
            on MAIL conn 1 reply 451 4.3.0 try again later
            on MAIL conn 2 reply 451 4.3.0 try again later
            on MAIL conn 3 reply 451 4.3.0 try again later
        """)
        env.write_conf(relay(srv.port, "retry.min = 1s\nretry.max = 4s\n"
                             "connection_cache_time = 0\n"))
        drop(env, "user@dst.test")
        p = start(env)
        srv.wait_messages(1, timeout=40)
        rqlib.wait_for(lambda: any(d["status"] == "sent"
                                   for d in deliveries(env)), 10,
                       what="the sent line")
        stop(p)
        mails = [e["t"] for e in srv.events("cmd")
                 if e["data"].upper().startswith("MAIL")]
        check_eq(len(mails), 4, "MAIL commands")
        gaps = [b - a for a, b in zip(mails, mails[1:])]
        # attempt n waits retry.min * 2^(n-1) +-10%, within [min, max]
        low = [1.0, 1.8, 3.6]
        for g, lo in zip(gaps, low):
            check(g >= lo - 0.05, "retry after %.2fs, want >= %.2fs (%s)" %
                  (g, lo, gaps))
            check(g <= 4 + 2.5, "retry after %.2fs, want <= retry.max "
                  "plus slack (%s)" % (g, gaps))
        ds = deliveries(env)
        check_eq([d["status"] for d in ds],
                 ["deferred", "deferred", "deferred", "sent"], "statuses")
        check_eq([d["tries"] for d in ds], [1, 2, 3, 4], "tries")
        check_eq(ds[0]["dsn"], "4.3.0", "dsn of the deferral")
        check("451 4.3.0 try again later" in ds[0]["reason"], ds[0]["line"])


def test_bounce_and_mixed_recipients():
    """One transaction with 250, 550 and 451 recipients: delivered,
    bounced (with a bounce notice to the sender) and deferred."""
    with rqlib.Env() as env:
        srv = faultlib.start(env, """
            rcpt bad@dst.test reply 550 5.1.1 no such user
            rcpt later@dst.test reply 451 4.2.0 mailbox busy
        """)
        env.write_conf(relay(srv.port))
        drop(env, ["good@dst.test", "bad@dst.test", "later@dst.test"])
        p = start(env)
        rqlib.wait_for(lambda: len(deliveries(env)) >= 3, 20,
                       what="three delivery lines")
        ds = {d["to"]: d for d in deliveries(env)}
        check_eq(ds["good@dst.test"]["status"], "sent", "good")
        check_eq(ds["bad@dst.test"]["status"], "bounced", "bad")
        check_eq(ds["bad@dst.test"]["dsn"], "5.1.1", "bad dsn")
        check("550 5.1.1 no such user" in ds["bad@dst.test"]["reason"],
              ds["bad@dst.test"]["line"])
        check_eq(ds["later@dst.test"]["status"], "deferred", "later")
        check_eq(ds["later@dst.test"]["dsn"], "4.2.0", "later dsn")
        # one MAIL FROM with all three RCPT TO in the first transaction
        c1 = srv.cmds(conn=srv.conns()[0])
        c1 = c1[:c1.index(".")]
        check_eq(sum(1 for c in c1 if c.upper().startswith("MAIL")), 1,
                 "MAIL commands in %s" % c1)
        check_eq(sum(1 for c in c1 if c.upper().startswith("RCPT")), 3,
                 "RCPT commands in %s" % c1)
        # the bounce notice for bad@ goes back to the sender from <>
        def notice():
            for env_lines, raw in srv.messages():
                if any("MAIL FROM:<>" in x.upper().replace(" ", "")
                       or "MAIL FROM:<>" in x for x in env_lines):
                    return raw
            return None
        raw = rqlib.wait_for(notice, 20, what="the bounce notice")
        check(b"multipart/report" in raw, "not a DSN: %r" % raw[:300])
        check(b"bad@dst.test" in raw, "DSN does not name bad@")
        check(b"Final-Recipient: rfc822;good@dst.test" not in raw and
              b"Final-Recipient: rfc822; good@dst.test" not in raw,
              "DSN names the delivered recipient")
        stop(p)


def test_max_connections():
    """Slow sessions: never more than max_connections at once."""
    n = 40 if SANITIZE else 80
    with rqlib.Env() as env:
        srv = faultlib.start(env, "on DOT stall 0.2\n")
        env.write_conf(relay(srv.port, "max_connections = 3\n"))
        for i in range(n):
            drop(env, "u%d@dst.test" % i)
        run_idle(env)
        check_eq(len(srv.messages()), n, "messages received")
        mc = srv.max_concurrent()
        check(mc <= 3, "%d concurrent sessions, limit 3" % mc)
        check(mc >= 2, "only %d session at a time: the limit was not "
              "used" % mc)


def test_max_connections_total():
    """max_connections_total caps connections over all destinations."""
    with rqlib.Env() as env:
        srv = faultlib.start(env, "on DOT stall 0.2\n")
        env.write_conf(relay(srv.port, "max_connections_total = 2\n"
                             "[domain a.test]\nrelayhost = [127.0.0.1]:%d\n"
                             "[domain b.test]\nrelayhost = [127.0.0.1]:%d\n"
                             % (srv.port, srv.port)))
        for i in range(10):
            drop(env, ["u%d@a.test" % i])
            drop(env, ["u%d@b.test" % i])
            drop(env, ["u%d@c.test" % i])
        run_idle(env)
        check_eq(len(srv.messages()), 30, "messages received")
        mc = srv.max_concurrent()
        check(mc <= 2, "%d concurrent sessions, global limit 2" % mc)


def test_priority_under_one_connection():
    """With one connection, urgent goes first but non-urgent is not
    starved (priority_weights urgent=8 normal=4 non-urgent=1)."""
    with rqlib.Env() as env:
        srv = faultlib.start(env, "")
        env.write_conf(relay(srv.port, "max_connections = 1\n"))
        for i in range(40):
            drop(env, "nu%d@dst.test" % i, priority="non-urgent")
        for i in range(40):
            drop(env, "u%d@dst.test" % i, priority="urgent")
        run_idle(env)
        order = []
        for env_lines, raw in srv.messages():
            rc = [x for x in env_lines if x.upper().startswith("RCPT")]
            order.append("u" if "<u" in rc[0] else "n")
        check_eq(len(order), 80, "messages")
        first = order[:20]
        check(first.count("u") >= 15,
              "urgent not first: %s" % "".join(order))
        check(first.count("n") >= 1,
              "non-urgent starved: %s" % "".join(order))
        check_eq(srv.max_concurrent(), 1, "concurrent sessions")


def test_hoststatus_skip():
    """A host that answers 421 at the greeting is marked down: the next
    message is deferred without a connection attempt."""
    with rqlib.Env() as env:
        srv = faultlib.start(env, "on CONNECT reply 421 4.3.2 not now\n")
        env.write_conf(relay(srv.port, "timeout.hoststatus = 10m\n"))
        drop(env, "a@dst.test")
        p = start(env)
        rqlib.wait_for(lambda: len(deliveries(env)) >= 1, 20,
                       what="first deferral")
        n_conn = len(srv.conns())
        check_eq(n_conn, 1, "connections after the first message")
        drop(env, "b@dst.test")
        rqlib.wait_for(lambda: len(deliveries(env)) >= 2, 20,
                       what="second deferral")
        ds = deliveries(env)
        check_eq(ds[1]["status"], "deferred", "second message")
        check("temporarily suspended" in ds[1]["reason"], ds[1]["line"])
        check_eq(ds[1]["relay"], "none", "relay of a skipped attempt")
        time.sleep(0.5)
        check_eq(len(srv.conns()), 1, "connections: host not skipped")
        stop(p)


def test_deferred_status_is_4xx():
    """A 554 greeting defers (the host may come back) with a 4.X.Y
    status, as Postfix's smtp: never dsn=5.7.1 with status=deferred."""
    with rqlib.Env() as env:
        srv = faultlib.start(env, "on CONNECT reply 554 5.7.1 go away\n")
        env.write_conf(relay(srv.port))
        drop(env, "a@dst.test")
        p = start(env)
        rqlib.wait_for(lambda: len(deliveries(env)) >= 1, 20,
                       what="deferral")
        d = deliveries(env)[0]
        check_eq(d["status"], "deferred", d["line"])
        check(", dsn=4.7.1, " in d["line"], d["line"])
        check("554 5.7.1 go away" in d["reason"], d["line"])
        stop(p)


def test_address_no_smtp_line_can_carry():
    """An address intake takes but no MAIL/RCPT line can carry (a '<' in
    a domain literal) is returned at once (5.1.3; 5.1.7 for the sender),
    alone: the other recipients of the message are delivered, and no
    retry waits for what none could mend."""
    with rqlib.Env() as env:
        _, port, dd = sink(env)
        env.write_conf(relay(port, "retry.min = 1h\n"))
        for name, text in (("m1", "From: a@b.test\nTo: d5@[<x>], "
                                  "ok@c.test\nSubject: one\n\nb\n"),
                           ("m2", "From: x@[<y>]\nTo: ok2@c.test\n"
                                  "Subject: two\n\nb\n")):
            tmp = os.path.join(env.spool, "tmp", name)
            os.makedirs(os.path.dirname(tmp), exist_ok=True)
            os.makedirs(os.path.join(env.spool, "incoming"), exist_ok=True)
            with open(tmp, "w") as f:
                f.write(text)
            os.rename(tmp, os.path.join(env.spool, "incoming", name))
        run_idle(env)
        log = env.log_text()
        check(re.search(r"to=<d5@\[<x>\]>, relay=none, .*dsn=5\.1\.3, "
                        r"status=bounced", log), log)
        ds = {d["to"]: d for d in deliveries(env)}
        check_eq(ds["ok@c.test"]["status"], "sent", ds["ok@c.test"]["line"])
        check_eq((ds["ok2@c.test"]["status"], ds["ok2@c.test"]["dsn"]),
                 ("bounced", "5.1.7"), ds["ok2@c.test"]["line"])
        check("internal error" not in env.log_text(), "no internal error")


def test_one_daemon_per_queue():
    """A second `relayq run` on the same queue exits 75 and names the
    first (it would take the first one's leases back); once the first
    stops, a new one starts."""
    with rqlib.Env() as env:
        env.write_conf(relay(rqlib.free_port(), "retry.min = 1h\n"))
        p = start(env)
        q = env.run("run", "--exit-when-idle", timeout=30)
        check_eq(q.returncode, 75, q.stderr)
        check(b"another relayq run uses queue_dir" in q.stderr and
              (b"pid %d" % p.pid) in q.stderr, q.stderr)
        check(p.poll() is None, "the first one runs on")
        stop(p)
        q = env.run("run", "--exit-when-idle", timeout=30)
        check_eq(q.returncode, 0, q.stderr)


def test_sighup_reload():
    """SIGHUP loads a new config (mail goes to the new relayhost); a bad
    config is refused, logged, and the old one kept."""
    with rqlib.Env() as env:
        _, port1, d1 = sink(env)
        _, port2, d2 = sink(env)
        env.write_conf(relay(port1))
        p = start(env)
        drop(env, "one@dst.test")
        rqlib.wait_for(lambda: len(dumps(d1)) == 1, 20, what="first to 1")
        env.write_conf(relay(port2, "queue_map_size = 2g\n"))
        p.send_signal(signal.SIGHUP)
        rqlib.wait_for(lambda: "reloaded configuration" in env.log_text(),
                       10, what="reload line")
        # a key only a restart applies: said, not silently kept
        check("queue_map_size changed: the new value takes effect at the "
              "next start" in env.log_text(), "restart-only key")
        check("spool_dir changed" not in env.log_text(), "spool_dir")
        drop(env, "two@dst.test")
        rqlib.wait_for(lambda: len(dumps(d2)) == 1, 20, what="second to 2")
        with open(env.conf, "a") as f:
            f.write("no_such_key = 1\n")
        p.send_signal(signal.SIGHUP)
        rqlib.wait_for(lambda: "reload refused" in env.log_text(), 10,
                       what="refusal line")
        check(re.search(r"reload refused.*relayq\.conf:\d+:",
                        env.log_text()), "no FILE:LINE in the refusal")
        drop(env, "three@dst.test")
        rqlib.wait_for(lambda: len(dumps(d2)) == 2, 20, what="third to 2")
        check_eq(len(dumps(d1)), 1, "messages at the old relay")
        check(p.poll() is None, "daemon died on a bad config")
        stop(p)


def test_pflogsumm_reads_the_log():
    """pflogsumm --syslog-name=relayq counts delivered, deferred and
    bounced recipients from relayq's log."""
    if not os.path.exists("/usr/sbin/pflogsumm"):
        print("  skipped: no pflogsumm")
        return
    with rqlib.Env() as env:
        srv = faultlib.start(env, """
            rcpt bad1@dst.test reply 550 5.1.1 no such user
            rcpt bad2@dst.test reply 550 5.1.1 no such user
            rcpt later@dst.test reply 451 4.2.0 mailbox busy
        """)
        env.write_conf(relay(srv.port) + "timeout.queuereturn = 1d\n")
        drop(env, ["ok1@dst.test", "bad1@dst.test"],
             sender="s@src.test")
        drop(env, ["ok2@dst.test", "ok3@dst.test", "bad2@dst.test",
                   "later@dst.test"], sender="s@src.test")
        p = start(env)
        rqlib.wait_for(lambda: len([d for d in deliveries(env)
                                    if d["to"].endswith("dst.test")]) >= 6,
                       20, what="six delivery lines")
        stop(p)
        ds = [d for d in deliveries(env) if d["to"].endswith("dst.test")]
        sent = sum(1 for d in ds if d["status"] == "sent")
        out = subprocess.run(["/usr/sbin/pflogsumm", "--syslog-name=relayq",
                              env.log], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, timeout=60)
        text = out.stdout.decode(errors="replace")

        def count(label):
            m = re.search(r"^\s*(\d+)\s+%s\b" % label, text, re.M)
            if not m:
                raise Fail("no %r in pflogsumm output:\n%s" %
                           (label, text[:3000]))
            return int(m.group(1))
        # every sent line counts, DSNs delivered to the sender included
        all_sent = sum(1 for d in deliveries(env) if d["status"] == "sent")
        check(sent == 3, "sent to dst.test: %d" % sent)
        check_eq(count("delivered"), all_sent, "pflogsumm delivered")
        check_eq(count("deferred"), 1, "pflogsumm deferred")
        check_eq(count("bounced"), 2, "pflogsumm bounced")


def test_sigterm_while_busy():
    """SIGTERM with sessions in progress: exit 0, QUIT sent where the
    session could end politely, nothing lost (a restart finishes)."""
    with rqlib.Env() as env:
        srv = faultlib.start(env, "on DOT stall 0.5\n")
        env.write_conf(relay(srv.port, "max_connections = 4\n"))
        for i in range(20):
            drop(env, "u%d@dst.test" % i)
        p = start(env)
        srv.wait_messages(2, timeout=20)
        stop(p)
        check("stopping: SIGTERM" in env.log_text(), "no stop line")
        quits = [c for c in srv.cmds() if c.upper().startswith("QUIT")]
        check(len(quits) >= 1, "no QUIT after SIGTERM")
        # stopped cleanly: nothing shows as in delivery ('*')
        mq = env.run("mailq", check_rc=0).stdout.decode()
        check(not re.search(r"^[0-9A-F]{16}\*", mq, re.M), mq)
        run_idle(env)
        got = set()
        for env_lines, raw in srv.messages():
            for x in env_lines:
                m = re.search(r"<(u\d+)@", x)
                if m and x.upper().startswith("RCPT"):
                    got.add(m.group(1))
        check_eq(len(got), 20, "distinct messages delivered")


def test_max_message_rate():
    """max_message_rate = 4/s: a burst of 4, then about 4 a second; over
    the rate mail waits, it does not fail."""
    with rqlib.Env() as env:
        srv = faultlib.start(env, "")
        env.write_conf(relay(srv.port, "max_message_rate = 4/s\n"))
        for i in range(16):
            drop(env, "u%d@dst.test" % i)
        run_idle(env)
        check_eq(len(srv.messages()), 16, "messages received")
        check(all(d["status"] == "sent" for d in deliveries(env)),
              "not all sent")
        t = sorted(e["t"] for e in srv.events("cmd")
                   if e["data"].upper().startswith("MAIL"))
        span = t[-1] - t[0]
        # 4 at once, 12 more at 4/s: at least 3 s
        check(span >= 2.7, "16 messages in %.2fs at 4/s" % span)
        # token bucket: at most burst + rate * w (+1 for rounding) in w s
        for i in range(len(t)):
            n = sum(1 for x in t[i:] if x - t[i] < 2.0)
            check(n <= 4 + 8 + 1, "%d messages within two seconds" % n)


def test_tls_logged():
    """STARTTLS: the Postfix-style `TLS connection established` line,
    with protocol and cipher."""
    with rqlib.Env() as env:
        srv = faultlib.start(env, "ehlo PIPELINING STARTTLS 8BITMIME\n",
                             tls=True)
        env.write_conf(relay(srv.port, "tls = may\n"))
        drop(env, "u@dst.test")
        run_idle(env)
        check_eq(len(srv.messages()), 1, "messages")
        m = re.search(r"relayq/smtp\[\d+\]: (Untrusted|Verified) TLS "
                      r"connection established to [^ ]+\[127\.0\.0\.1\]:"
                      r"%d: (TLSv1\.[23]) with cipher (\S+) \((\d+)/"
                      r"(\d+) bits\)" % srv.port, env.log_text())
        check(m, "no TLS line in:\n%s" % env.log_text()[-2000:])
        check_eq(deliveries(env)[0]["status"], "sent", "status")


if __name__ == "__main__":
    rqlib.main(globals())
