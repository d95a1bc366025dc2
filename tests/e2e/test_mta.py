#!/usr/bin/python3
"""test_mta - relayq as the machine's own MTA (issue 13): identity
(hostname, origin from mailname, helo_name, postmaster), aliases at
intake, the sender map, `sendmail -bs` / `-bv` / `-bi` / newaliases,
`-q` with an interval, flush forgetting host status, and the network-up
hook that `cmake --install` puts in place.

Everything runs the real binary: `relayq send` into a real spool,
`relayq run` into a real LMDB queue, delivery to Postfix's smtp-sink on
127.0.0.1 (its dumps show EHLO, MAIL FROM, RCPT TO and the message).
/etc/mailname and /etc/aliases are looked for in RELAYQ_TEST_ETC, a
directory of this test's own.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rqlib  # noqa: E402
from rqlib import Env, check, check_eq, Fail  # noqa: E402
import test_runner_lib as rl  # noqa: E402

ETC = tempfile.mkdtemp(prefix="relayq-etc-")
os.environ["RELAYQ_TEST_ETC"] = ETC


def etc_reset(mailname=None, aliases=None):
    """Puts mailname and aliases (or none) in the test's /etc."""
    for n, text in (("mailname", mailname), ("aliases", aliases)):
        p = os.path.join(ETC, n)
        if os.path.exists(p):
            os.unlink(p)
        if text is not None:
            with open(p, "w") as f:
                f.write(text)


def spool(env):
    """Makes the spool tree (the daemon makes it normally)."""
    for d in ("incoming", "tmp", "bad"):
        os.makedirs(os.path.join(env.spool, d), exist_ok=True)


def conf(env, text=""):
    """Writes the config (Env's plus TEXT) and makes the spool tree."""
    env.write_conf(text)
    spool(env)


def write(env, name, text, mode=0o644):
    p = os.path.join(env.dir, name)
    with open(p, "w") as f:
        f.write(text)
    os.chmod(p, mode)
    return p


def settings(env, *extra):
    """check-config's settings as a dict (exit 0 required)."""
    p = env.run("check-config", *extra, check_rc=0)
    out = {}
    for line in p.stdout.decode().splitlines():
        k, _, v = line.partition(" = ")
        out[k] = v
    return out


def deliver(env, port, dump, want):
    """Runs the daemon until the queue is empty; returns the sink's
    transactions (at least WANT of them)."""
    rl.run_idle(env)
    rqlib.wait_for(lambda: len(rl.dumps(dump)) >= want, 20,
                   what="%d transactions at the sink" % want)
    return rl.dumps(dump)


def header_of(msg):
    m = msg.replace(b"\r\n", b"\n")
    return m[:m.find(b"\n\n") + 1]


# ---- 1. identity ----

def test_hostname_defaults_to_fqdn_and_origin_to_it():
    etc_reset()
    with Env() as e:
        conf(e)
        with open(e.conf) as f:
            text = f.read().replace("hostname = relayq.test\n", "")
        with open(e.conf, "w") as f:
            f.write(text)
        s = settings(e)
        fqdn = subprocess.run(["hostname", "-f"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL).stdout.decode()
        fqdn = fqdn.strip() or socket.gethostname()
        check_eq(s["hostname"], fqdn, "hostname: the FQDN")
        check_eq(s["origin"], fqdn, "origin without /etc/mailname")
        check_eq(s["helo_name"], fqdn, "helo_name")
        check_eq(s["postmaster"], "postmaster@" + fqdn, "postmaster")
        check_eq(s["alias_file"], "", "no /etc/aliases: none")


def test_origin_from_mailname():
    etc_reset(mailname="mail.example.org\nsecond line ignored\n",
              aliases="postmaster: root\n")
    try:
        with Env() as e:
            s = settings(e)
            check_eq(s["hostname"], "relayq.test", "hostname as set")
            check_eq(s["origin"], "mail.example.org", "origin: mailname")
            check_eq(s["postmaster"], "postmaster@mail.example.org",
                     "postmaster@origin")
            check_eq(s["alias_file"], os.path.join(ETC, "aliases"),
                     "alias_file: /etc/aliases when it exists")
            conf(e, "origin = example.com\nalias_file =\n")
            s = settings(e)
            check_eq(s["origin"], "example.com", "origin set wins")
            check_eq(s["alias_file"], "", "alias_file = turns it off")
            for bad in ("origin = a..b\n", "helo_name = bad name\n",
                        "postmaster = not an address\n",
                        "local_fallback = <x@y.z>, a@b.c\n"):
                conf(e, bad)
                p = e.run("check-config")
                check_eq(p.returncode, 78, bad)
                check(b"relayq.conf:5:" in p.stderr, p.stderr)
            # hostname is checked as origin is (it goes into EHLO,
            # Received:, Message-ID: and the defaults)
            conf(e)
            with open(e.conf) as f:
                text = f.read()
            with open(e.conf, "w") as f:
                f.write(text.replace("hostname = relayq.test",
                                     "hostname = bad host!"))
            p = e.run("check-config")
            check_eq(p.returncode, 78, "hostname")
            check(b"hostname" in p.stderr and b"not a domain name" in
                  p.stderr, p.stderr)
    finally:
        etc_reset()
    # as Debian's Postfix reads it: blanks around it and a final dot
    etc_reset(mailname="  mail.example.net.\n")
    try:
        with Env() as e:
            check_eq(settings(e)["origin"], "mail.example.net", "origin")
    finally:
        etc_reset()


def test_unqualified_gets_origin_and_helo_name_is_said():
    etc_reset(mailname="example.org\n")
    try:
        with Env() as e:
            sp, port, dump = rl.sink(e)
            conf(e, "relayhost = [127.0.0.1]:%d\n"
                         "helo_name = out.example.org\n"
                         "[domain other.test]\n"
                         "helo_name = other-helo.example.org\n" % port)
            msg = b"Subject: cron\n\nhello\n"
            e.run("send", "-f", "cron", "someone@x.test", input=msg,
                  check_rc=0)
            e.run("send", "-f", "cron", "b@other.test", input=msg,
                  check_rc=0)
            got = deliver(e, port, dump, 2)
            check_eq(len(got), 2, "two transactions")
            helos = {}
            for name in os.listdir(dump):
                with open(os.path.join(dump, name), "rb") as f:
                    raw = f.read()
                helo = raw.split(b"X-Helo-Args: ")[1].split(b"\n")[0]
                rcpt = raw.split(b"X-Rcpt-Args: <")[1].split(b">")[0]
                helos[rcpt.decode()] = helo.decode()
            check_eq(helos, {"someone@x.test": "out.example.org",
                             "b@other.test": "other-helo.example.org"},
                     "EHLO names")
            for rcpts, frm, m in got:
                check_eq(frm, "cron@example.org", "sender @origin")
    finally:
        etc_reset()


# ---- 2. aliases ----

ALIASES = """# the machine's aliases
postmaster:    root
root:          admin@example.net,
               ops
# a comment between entries
ops:           a@x.test, B@X.test
loop1:         loop2
loop2:         loop1, loopend@x.test
pipe:          "|/usr/bin/procmail", /var/mail/pipe, :include:/etc/list
onlypipe:      |/bin/true
mixedcase:     \\mixedcase, copy@x.test
"""


def test_aliases_at_intake():
    etc_reset()
    with Env() as e:
        sp, port, dump = rl.sink(e)
        al = write(e, "aliases", ALIASES)
        conf(e, "relayhost = [127.0.0.1]:%d\nalias_file = %s\n"
                     "origin = example.org\n" % (port, al))
        p = e.run("check-config", "-q", check_rc=0)
        err = p.stderr.decode()
        for what in ("|/usr/bin/procmail", "/var/mail/pipe",
                     ":include:/etc/list", "|/bin/true"):
            check(what in err, "check-config reports %s: %s" % (what, err))
        msg = (b"From: Sender <s@x.test>\nTo: root\nCc: nobody@example.org\n"
               b"Subject: aliases\n\nbody\n")
        e.run("send", "-f", "s@x.test", "root", "loop1", "pipe",
              "onlypipe", "nobody@example.org", "MixedCase@EXAMPLE.ORG",
              "far@x.test", input=msg, check_rc=0)
        got = deliver(e, port, dump, 1)
        rcpts = sorted(r for t in got for r in t[0])
        check_eq(rcpts, sorted([
            "admin@example.net", "a@x.test", "B@X.test",   # root
            "loopend@x.test",                              # loop1
            "pipe@example.org",                            # only skipped
            "onlypipe@example.org",
            "nobody@example.org",                          # no alias
            "mixedcase@example.org", "copy@x.test",
            "far@x.test"]), "recipients after aliasing")
        hdr = header_of(got[0][2])
        check(b"\nTo: root@example.org\n" in hdr, "To: qualified: %r" % hdr)
        check(b"admin@example.net" not in hdr, "headers not aliased")
        check(b"Cc: nobody@example.org\n" in hdr, "Cc kept")


def test_local_fallback():
    etc_reset()
    with Env() as e:
        sp, port, dump = rl.sink(e)
        al = write(e, "aliases", "root: admin@example.net\n")
        conf(e, "relayhost = [127.0.0.1]:%d\nalias_file = %s\n"
                     "local_fallback = catchall@example.net\n" % (port, al))
        e.run("send", "-f", "s@x.test", "root", "www-data",
              "daemon@relayq.test", "daemon@localhost", "x@remote.test",
              input=b"Subject: fb\n\nx\n", check_rc=0)
        got = deliver(e, port, dump, 1)
        rcpts = sorted(r for t in got for r in t[0])
        check_eq(rcpts, ["admin@example.net", "catchall@example.net",
                         "x@remote.test"], "fallback for local names")


def test_notices_to_local_senders_are_aliased():
    """A bounce of cron's mail (sender root@origin) goes where mail to
    root goes: its aliases, as Postfix's bounces go through aliasing."""
    etc_reset()
    with Env() as e:
        al = write(e, "aliases", "root: admin@x.test, ops@x.test\n")
        conf(e, "relayhost = [127.0.0.1]:%d\nalias_file = %s\n"
             "retry.min = 1h\nretry.max = 1h\n"
             % (rqlib.free_port(), al))
        e.run("send", "-f", "root", "far@y.test",
              input=b"Subject: cron\n\nx\n", check_rc=0)
        rl.run_idle(e)
        e.run("bounce", qid_of(e, "far@y.test"), check_rc=0)
        notices = []
        for line in e.run("mailq", "--json",
                          check_rc=0).stdout.splitlines():
            m = json.loads(line)
            if m["sender"] == "":
                notices.append(sorted(r["address"]
                                      for r in m["recipients"]))
        check_eq(notices, [["admin@x.test", "ops@x.test"]],
                 "the bounce's recipients")
        p = e.run("show", qid_of(e, "admin@x.test"), check_rc=0)
        check(b"To: <root@relayq.test>" in p.stdout,
              "the notice's To: is the sender as written")


def test_aliases_reread_on_sighup():
    """SIGHUP rereads alias_file: mail dropped after the reload goes to
    the new alias; a broken file is refused and the old rules kept."""
    etc_reset()
    with Env() as e:
        sp, port, dump = rl.sink(e)
        al = write(e, "aliases", "root: first@x.test\n")
        conf(e, "relayhost = [127.0.0.1]:%d\nalias_file = %s\n"
             % (port, al))
        d = rl.start(e)
        try:
            def send_root(n):
                e.run("send", "-f", "s@x.test", "root",
                      input=b"Subject: %d\n\nx\n" % n, check_rc=0)
                rqlib.wait_for(lambda: len(rl.dumps(dump)) >= n, 30,
                               what="message %d delivered" % n)
                return rl.dumps(dump)[-1][0] if n == 1 else sorted(
                    r for t in rl.dumps(dump) for r in t[0])
            check_eq(send_root(1), ["first@x.test"], "before the reload")
            write(e, "aliases", "root: second@x.test\n")
            d.send_signal(signal.SIGHUP)
            rqlib.wait_for(lambda: "reloaded configuration" in e.log_text(),
                           20, what="reload")
            check_eq(send_root(2), ["first@x.test", "second@x.test"],
                     "after the reload")
            write(e, "aliases", "root: third@x.test\nbroken line\n")
            d.send_signal(signal.SIGHUP)
            rqlib.wait_for(lambda: "reload refused" in e.log_text(), 20,
                           what="reload refused")
            check_eq(send_root(3), ["first@x.test", "second@x.test",
                                    "second@x.test"], "old rules kept")
        finally:
            rl.stop(d)


def test_newaliases_and_bi():
    etc_reset()
    with Env() as e:
        good = write(e, "aliases", ALIASES)
        conf(e, "alias_file = %s\n" % good)
        link = os.path.join(e.dir, "newaliases")
        os.symlink(os.path.abspath(rqlib.BIN), link)
        for cmd in ([rqlib.BIN, "send", "-c", e.conf, "-bi"],
                    [rqlib.BIN, "send", "-c", e.conf, "-I"],
                    [link, "-c", e.conf]):
            p = subprocess.run(cmd, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=30)
            check_eq(p.returncode, 0, "%s: %s" % (cmd, p.stderr))
            check(b"|/bin/true" in p.stderr, "warned: %r" % p.stderr)
        bad = write(e, "aliases", "root: admin@example.net\nno colon here\n")
        for cmd in ([rqlib.BIN, "send", "-c", e.conf, "-bi"],
                    [link, "-c", e.conf]):
            p = subprocess.run(cmd, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=30)
            check_eq(p.returncode, 65, "syntax error: %s" % p.stderr)
            check(("%s:2:" % bad).encode() in p.stderr, p.stderr)
        os.chmod(bad, 0o666)
        p = e.run("send", "-bi")
        check_eq(p.returncode, 78, "unsafe file: %s" % p.stderr)
        os.unlink(bad)
        p = e.run("send", "-bi")
        check_eq(p.returncode, 78, "missing file: %s" % p.stderr)


def test_bv_verifies():
    etc_reset()
    with Env() as e:
        al = write(e, "aliases", ALIASES)
        conf(e, "alias_file = %s\norigin = example.org\n" % al)
        p = e.run("send", "-bv", "root", "far@x.test", "loop1")
        check_eq(p.returncode, 0, p.stderr)
        out = p.stdout.decode().splitlines()
        for want in ("root... deliverable: <admin@example.net>",
                     "root... deliverable: <a@x.test>",
                     "far@x.test... deliverable: <far@x.test>",
                     "loop1... deliverable: <loopend@x.test>"):
            check(want in out, "%r in %r" % (want, out))
        check(any("loop" in l and "note" in l for l in out), out)
        p = e.run("send", "-bv", "bad address <", "root")
        check_eq(p.returncode, 65, "bad address: %s" % p.stdout)
        check(b"bad address <... bad address" in p.stdout, p.stdout)


# ---- 3. the sender map ----

def test_sender_map():
    etc_reset()
    with Env() as e:
        sp, port, dump = rl.sink(e)
        m = write(e, "senders",
                  "# generic map\n"
                  "root            alerts@example.com\n"
                  "www-data@relayq.test  shop@example.com\n"
                  "@host.lan       @example.com\n")
        conf(e, "relayhost = [127.0.0.1]:%d\nsender_map = %s\n"
                     "alias_file =\n" % (port, m))
        msg = (b"From: root (Cron Daemon)\n"
               b"To: someone@x.test\n"
               b"Reply-To: \"Web  Shop\" <bob@host.lan>, other@x.test\n"
               b"Sender:   www-data\n"
               b"X-Other: root\n"
               b"Subject: Cron <root@vm> job\n\nbody root\n")
        e.run("send", "-f", "root", "someone@x.test", input=msg, check_rc=0)
        e.run("send", "-f", "bob@host.lan", "someone@x.test",
              input=b"From: bob@host.lan\nSubject: 2\n\nb\n", check_rc=0)
        e.run("send", "-f", "keep@x.test", "someone@x.test",
              input=b"From: keep@x.test\nSubject: 3\n\nb\n", check_rc=0)
        got = deliver(e, port, dump, 3)
        by_from = {t[1]: t[2] for t in got}
        check_eq(sorted(by_from), ["alerts@example.com", "bob@example.com",
                                   "keep@x.test"], "envelope senders")
        hdr = header_of(by_from["alerts@example.com"])
        for want in (b"From: alerts@example.com (Cron Daemon)\n",
                     b"Reply-To: \"Web  Shop\" <bob@example.com>, "
                     b"other@x.test\n",
                     b"Sender:   shop@example.com\n",
                     b"X-Other: root\n",
                     b"Subject: Cron <root@vm> job\n"):
            check(want in hdr, "%r in %r" % (want, hdr))
        check(by_from["alerts@example.com"].endswith(b"\n\r\nbody root\r\n")
              or b"body root" in by_from["alerts@example.com"], "body kept")
        check(b"From: bob@example.com\n" in header_of(by_from[
            "bob@example.com"]), "@domain keeps the user")
        check(b"From: keep@x.test\n" in header_of(by_from["keep@x.test"]),
              "no key: unchanged")
        bad = write(e, "senders", "root\n")
        p = e.run("check-config", "-q")
        check_eq(p.returncode, 78, "bad map: %s" % p.stderr)
        check(("%s:1:" % bad).encode() in p.stderr, p.stderr)


# ---- 6. sendmail -bs, -q with an interval ----

def bs_session(e):
    """Starts `relayq send -bs` on one end of a socketpair; returns
    (process, our socket)."""
    a, b = socket.socketpair()
    p = subprocess.Popen([rqlib.BIN, "send", "-c", e.conf, "-bs"],
                         stdin=b, stdout=b, stderr=subprocess.PIPE)
    b.close()
    return p, a


def test_bs_with_smtplib():
    import smtplib
    etc_reset()
    with Env() as e:
        sp, port, dump = rl.sink(e)
        conf(e, "relayhost = [127.0.0.1]:%d\norigin = example.org\n"
                     "max_message_size = 100k\n" % port)
        spool(e)
        p, sock = bs_session(e)
        s = smtplib.SMTP()
        s.sock = sock
        s.file = None
        code, _ = s.getreply()
        check_eq(code, 220, "greeting")
        code, _ = s.ehlo("client.example")
        check_eq(code, 250, "EHLO")
        for ext in ("pipelining", "size", "8bitmime", "dsn"):
            check(s.has_extn(ext), "EHLO offers " + ext)
        body = ("From: App <app@example.org>\r\nTo: a@x.test\r\n"
                "Subject: via -bs\r\n\r\n.leading dot\r\nline two\r\n")
        refused = s.sendmail("app@example.org", ["a@x.test", "root"], body,
                             rcpt_options=["NOTIFY=FAILURE"])
        check_eq(refused, {}, "accepted")
        try:
            s.sendmail("app@example.org", ["a@x.test"], "x" * 200000)
            raise Fail("a message over max_message_size was taken")
        except smtplib.SMTPDataError as ex:
            check_eq(ex.smtp_code, 552, "too large")
        except smtplib.SMTPSenderRefused as ex:
            check_eq(ex.smtp_code, 552, "too large (SIZE)")
        try:
            # Under SIZE, over it with the envelope lines: 552 too.
            s.sendmail("app@example.org", ["a@x.test"],
                       "\r\n" + "x" * (100 * 1024 - 20))
            raise Fail("a message over max_message_size was taken")
        except smtplib.SMTPDataError as ex:
            check_eq(ex.smtp_code, 552, "too large with the envelope")
        try:
            s.sendmail("app@example.org", ["bad address <"], "x")
            raise Fail("a bad recipient was taken")
        except smtplib.SMTPRecipientsRefused:
            pass
        s.rset()
        check_eq(s.noop()[0], 250, "NOOP")
        s.quit()
        check_eq(p.wait(30), 0, "exit status")
        check_eq(len(os.listdir(os.path.join(e.spool, "incoming"))), 1,
                 "one message in the spool")
        got = deliver(e, port, dump, 1)
        check_eq(sorted(got[0][0]), ["a@x.test", "root@example.org"],
                 "recipients")
        check_eq(got[0][1], "app@example.org", "sender")
        check(b"\n\n.leading dot\nline two\n" in
              got[0][2].replace(b"\r\n", b"\n"),
              "dot un-stuffed: %r" % got[0][2])


def test_bs_pipelining():
    etc_reset()
    with Env() as e:
        spool(e)
        p, sock = bs_session(e)
        f = sock.makefile("rb")
        check(f.readline().startswith(b"220 "), "greeting")
        # everything in one write: the replies come in order
        sock.sendall(b"EHLO c\r\nMAIL FROM:<s@x.test>\r\n"
                     b"RCPT TO:<a@x.test>\r\nRCPT TO:<bad <>\r\n"
                     b"RCPT TO:<b@x.test> NOTIFY=NEVER\r\n"
                     b"RCPT TO:<b@X.TEST> NOTIFY=delay\r\nDATA\r\n")
        lines = []
        while True:
            line = f.readline()
            lines.append(line)
            if line.startswith(b"354") or not line:
                break
        codes = [l[:4] for l in lines if l[3:4] == b" "]
        check_eq(codes, [b"250 ", b"250 ", b"250 ", b"501 ", b"250 ",
                         b"250 ", b"354 "], "replies: %r" % lines)
        sock.sendall(b"Subject: p\r\n\r\n..x\r\n.\r\nMAIL FROM:<>\r\n"
                     b"RCPT TO:<c@x.test>\r\nDATA\r\n")
        check(f.readline().startswith(b"250 2.0.0"), "queued")
        check(f.readline().startswith(b"250 "), "MAIL <>")
        check(f.readline().startswith(b"250 "), "RCPT")
        check(f.readline().startswith(b"354 "), "DATA")
        sock.sendall(b"Subject: q\r\n\r\nbody\r\n.\r\nQUIT\r\n")
        check(f.readline().startswith(b"250 2.0.0"), "second queued")
        check(f.readline().startswith(b"221 "), "bye")
        check_eq(p.wait(30), 0, "exit")
        files = os.listdir(os.path.join(e.spool, "incoming"))
        check_eq(len(files), 2, "two messages")
        texts = []
        for n in files:
            with open(os.path.join(e.spool, "incoming", n), "rb") as fh:
                texts.append(fh.read())
        first = [t for t in texts if b"Subject: p" in t][0]
        # named twice: the NOTIFYs merged as intake merges them
        check(b"X-Receiver: <b@x.test> NOTIFY=DELAY\r\n" in first, first)
        check(first.count(b"b@x.test") + first.count(b"b@X.TEST") == 1,
              first)
        check(b"\n.x\r\n" in first or b"\r\n.x\r\n" in first, first)
        second = [t for t in texts if b"Subject: q" in t][0]
        check(second.startswith(b"X-Sender: <>"), second[:80])


def test_bs_params_and_idle_timeout():
    """-bs: SIZE must be a number and a parameter comes once (501); at
    the idle timeout (SIGALRM) the client hears 421 before the end (75),
    as from Postfix's smtpd."""
    etc_reset()
    with Env() as e:
        spool(e)
        p, sock = bs_session(e)
        f = sock.makefile("rb")
        check(f.readline().startswith(b"220 "), "greeting")
        sock.sendall(b"EHLO c\r\nMAIL FROM:<s@x.test> SIZE=abc\r\n"
                     b"MAIL FROM:<s@x.test> RET=FULL RET=HDRS\r\n")
        lines = []
        while len([l for l in lines if l[3:4] == b" "]) < 3:
            lines.append(f.readline())
        codes = [l[:3] for l in lines if l[3:4] == b" "]
        check_eq(codes, [b"250", b"501", b"501"], "replies: %r" % lines)
        p.send_signal(signal.SIGALRM)
        check(f.readline().startswith(b"421 4.4.2 "), "421 at the timeout")
        check_eq(p.wait(30), 75, "exit status")


def test_q_interval_ignored():
    """-q with an interval is not supported: ignored, as Postfix's
    sendmail (relayq run retries on its own schedule)."""
    with Env() as e:
        spool(e)
        p = e.run("send", "-q15m")
        check_eq((p.returncode, p.stdout, p.stderr), (0, b"", b""), "-q15m")
        check_eq(os.listdir(os.path.join(e.spool, "incoming")), [],
                 "nothing read or queued")


# ---- 7. flush forgets host status; the network-up hook ----

def test_flush_forgets_host_status():
    etc_reset()
    with Env() as e:
        port = rqlib.free_port()
        conf(e, "relayhost = [127.0.0.1]:%d\n"
                     "timeout.hoststatus = 1h\nretry.min = 1h\n"
                     "retry.max = 1h\n" % port)
        d = rl.start(e)
        try:
            rl.drop(e, ["a@x.test"])
            rqlib.wait_for(lambda: any(x["status"] == "deferred"
                                       for x in rl.deliveries(e)),
                           30, what="first attempt deferred")
            # the host comes back; a new message waits for host status
            sp, _, dump = rl.sink(e, port=port)
            rl.drop(e, ["b@x.test"])
            time.sleep(1.5)
            check_eq(rl.dumps(dump), [], "host still remembered as down")
            e.run("flush", check_rc=0)
            rqlib.wait_for(lambda: len(rl.dumps(dump)) >= 2, 30,
                           what="both delivered after flush")
            check("host status forgotten" in e.log_text(), e.log_text())
        finally:
            rl.stop(d)


def qid_of(e, rcpt):
    for line in e.run("mailq", "--json", check_rc=0).stdout.splitlines():
        m = json.loads(line)
        if any(r["address"] == rcpt for r in m["recipients"]):
            return m["queue_id"]
    raise Fail("no message to " + rcpt)


def test_flush_id_forgets_its_destinations_only():
    etc_reset()
    with Env() as e:
        pa, pb = rqlib.free_port(), rqlib.free_port()
        conf(e, "timeout.hoststatus = 1h\nretry.min = 1h\nretry.max = 1h\n"
             "[domain a.test]\nrelayhost = [127.0.0.1]:%d\n"
             "[domain b.test]\nrelayhost = [127.0.0.1]:%d\n" % (pa, pb))
        d = rl.start(e)
        try:
            rl.drop(e, ["x@a.test"])
            rl.drop(e, ["y@b.test"])
            rqlib.wait_for(lambda: len([x for x in rl.deliveries(e)
                                        if x["status"] == "deferred"]) >= 2,
                           30, what="both deferred")
            _, _, da = rl.sink(e, port=pa)
            _, _, db = rl.sink(e, port=pb)
            e.run("flush", qid_of(e, "x@a.test"), check_rc=0)
            rqlib.wait_for(lambda: len(rl.dumps(da)) >= 1, 30,
                           what="a.test delivered after its flush")
            time.sleep(1.5)
            check_eq(rl.dumps(db), [], "b.test not flushed")
            # a new message to b.test still waits: its host status stays
            rl.drop(e, ["z@b.test"])
            time.sleep(1.5)
            check_eq(rl.dumps(db), [], "b.test host still down")
        finally:
            rl.stop(d)


def next_attempts(e):
    """The next_attempt of every recipient in the queue (mailq --json)."""
    out = []
    for line in e.run("mailq", "--json", check_rc=0).stdout.splitlines():
        for r in json.loads(line)["recipients"]:
            out.append(r["next_attempt"] or 0)
    return out


def test_network_hook_installed_and_flushes():
    build = rqlib.BUILD
    if not os.path.exists(os.path.join(build, "cmake_install.cmake")):
        raise Fail("no build tree at %s" % build)
    dest = tempfile.mkdtemp(prefix="relayq-install-")
    try:
        p = subprocess.run(["cmake", "--install", build, "--prefix", "/usr"],
                           env=dict(os.environ, DESTDIR=dest),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=120)
        check_eq(p.returncode, 0, p.stdout.decode()[-2000:])
        hooks = [os.path.join(dest, "etc/network/if-up.d/relayq"),
                 os.path.join(dest,
                              "etc/networkd-dispatcher/routable.d/relayq")]
        for h in hooks:
            check(os.access(h, os.X_OK), "installed, executable: " + h)
        with Env() as e:
            conf(e, "relayhost = [127.0.0.1]:%d\n"
                         "timeout.hoststatus = 1h\nretry.min = 1h\n"
                         "retry.max = 1h\n" % rqlib.free_port())
            rl.drop(e, ["a@x.test"])
            rl.run_idle(e)  # into the queue, deferred for an hour
            check(next_attempts(e)[0] > time.time() + 600,
                  "deferred for an hour: %r" % next_attempts(e))
            env = dict(os.environ, RELAYQ=os.path.abspath(rqlib.BIN),
                       RELAYQ_CONFIG=e.conf, IFACE="eth0", ADDRFAM="inet")
            for h in hooks:
                r = subprocess.run(["sh", h], env=env, timeout=60)
                check_eq(r.returncode, 0, h)
            check(next_attempts(e)[0] <= time.time() + 5,
                  "due now after the hook: %r" % next_attempts(e))
            r = subprocess.run(["sh", hooks[0]],
                               env=dict(env, IFACE="lo"), timeout=60)
            check_eq(r.returncode, 0, "lo")
    finally:
        shutil.rmtree(dest, ignore_errors=True)


if __name__ == "__main__":
    try:
        rqlib.main(globals())
    finally:
        shutil.rmtree(ETC, ignore_errors=True)
