#!/usr/bin/python3
"""test_send - `relayq send` / `sendmail`: submission into the spool.

Runs the real binary: options, envelope headers, dot handling, header
edits, exit codes 64/65/75, atomicity (a killed submission never shows up
in incoming/), file modes, and real clients (bsd-mailx, git send-email,
a Python program) using it as their sendmail.  When the daemon can take
the spool in (`relayq run` and `mailq` exist), the round trip goes on
through `relayq run` into the queue, checked with `mailq --json`.
"""
import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rqlib  # noqa: E402
from rqlib import Env, check, check_eq, Fail  # noqa: E402


def spool_env(extra=""):
    """An Env with the spool tree made (the daemon makes it normally)."""
    e = Env(extra)
    for d in ("incoming", "tmp", "bad"):
        os.makedirs(os.path.join(e.spool, d))
    return e


def incoming(e):
    return sorted(os.listdir(os.path.join(e.spool, "incoming")))


def tmpfiles(e):
    return sorted(os.listdir(os.path.join(e.spool, "tmp")))


def only_file(e):
    """The bytes of the one file in incoming/ (fails unless exactly one)."""
    names = incoming(e)
    check_eq(len(names), 1, "files in incoming/")
    with open(os.path.join(e.spool, "incoming", names[0]), "rb") as f:
        return f.read()


def send(e, args, msg, rc=0, **kw):
    p = e.run("send", *args, input=msg, **kw)
    if p.returncode != rc:
        raise Fail("send %r exited %d, want %d; stderr: %s" %
                   (args, p.returncode, rc, p.stderr.decode()))
    if rc == 0:
        check_eq(p.stdout, b"", "send prints nothing on success")
    return p


def split_envelope(data):
    """Splits leading X-Sender/X-Receiver lines from the rest."""
    lines = data.split(b"\n")
    env = []
    while lines and (lines[0].startswith(b"X-Sender: ") or
                     lines[0].startswith(b"X-Receiver: ")):
        env.append(lines.pop(0).rstrip(b"\r").decode())
    return env, b"\n".join(lines)


def test_round_trip_byte_for_byte():
    body = (b"From: Alice <alice@example.org>\n"
            b"To: bob@example.net\n"
            b"Subject: round trip\n"
            b"X-Folded: one\n\ttwo\n"
            b"\n"
            b"line 1\n"
            b"..dot-stuffed looking line stays\n"
            b" . not alone\n"
            b"\xc3\xa9 8-bit \x00 and a NUL\n"
            b"no newline at the end")
    with spool_env() as e:
        send(e, ["-f", "alice@example.org", "bob@example.net",
                 "Carol <carol@example.com>"], body)
        env, rest = split_envelope(only_file(e))
        check_eq(env, ["X-Sender: <alice@example.org>",
                       "X-Receiver: <bob@example.net>",
                       "X-Receiver: <carol@example.com>"], "envelope")
        check_eq(rest, body, "message bytes")
        check_eq(tmpfiles(e), [], "tmp/ after success")
        name = incoming(e)[0]
        parts = name.split(".")
        check_eq(len(parts), 3, "name is time.pid.random")
        check(abs(int(parts[0]) - time.time()) < 120, "time in name")


def test_crlf_input_keeps_crlf():
    body = b"Subject: crlf\r\n\r\nbody\r\n"
    with spool_env() as e:
        send(e, ["-f", "<>", "x@example.com"], body)
        data = only_file(e)
        check_eq(data, b"X-Sender: <>\r\nX-Receiver: <x@example.com>\r\n"
                 b"Subject: crlf\r\nFrom: MAILER-DAEMON@relayq.test\r\n"
                 b"\r\nbody\r\n", "crlf file")


def test_default_sender_and_from_added():
    import pwd
    login = pwd.getpwuid(os.getuid()).pw_name
    with spool_env() as e:
        send(e, ["-F", "Joe Q. User", "root"], b"Subject: s\n\nhi\n")
        env, rest = split_envelope(only_file(e))
        check_eq(env, ["X-Sender: <%s@relayq.test>" % login,
                       "X-Receiver: <root@relayq.test>"], "envelope")
        check_eq(rest, b'Subject: s\nFrom: "Joe Q. User" <%s@relayq.test>'
                 b"\n\nhi\n" % login.encode(), "From: added, -F quoted")
    gecos = pwd.getpwuid(os.getuid()).pw_gecos.split(",")[0]
    if gecos:
        with spool_env() as e:
            # neither -F nor NAME: the password file's full name
            send(e, ["a@b.example"], b"Subject: s\n\nhi\n",
                 env={"NAME": ""})
            _, rest = split_envelope(only_file(e))
            check(rest.startswith(b"Subject: s\nFrom: ") and
                  gecos.encode() in rest.split(b"\n")[1] and
                  b"<%s@relayq.test>" % login.encode() in rest, rest)
    with spool_env() as e:
        # NAME is used without -F; an existing From: is never touched.
        send(e, ["a@b.example"], b"From: x@y.example\n\nhi\n",
             env={"NAME": "Someone"})
        check(b"From: x@y.example\n\nhi\n" in only_file(e), "From kept")
        check(b"Someone" not in only_file(e), "no second From")
    with spool_env() as e:
        send(e, ["a@b.example"], b"no header here\n",
             env={"NAME": "Some One"})
        env, rest = split_envelope(only_file(e))
        check(rest.startswith(b"From: Some One <"), rest)
        check(rest.endswith(b">\n\nno header here\n"),
              "blank line added before a body with no header: %r" % rest)
    for null in ("<>", ""):
        with spool_env() as e:
            # The null sender: From: MAILER-DAEMON@origin, as Postfix.
            send(e, ["-f", null, "a@b.example"], b"Subject: n\n\nhi\n")
            env, rest = split_envelope(only_file(e))
            check_eq(env[0], "X-Sender: <>", "null sender")
            check_eq(rest, b"Subject: n\nFrom: MAILER-DAEMON@relayq.test"
                     b"\n\nhi\n", "From: added for <>")


def test_extract_t_bcc_groups_resent():
    msg = (b"From mbox-line Sat Jan  1 00:00:00 2000\n"
           b"From: me@example.org\n"
           b"To: \"Doe, John\" <jd@example.com>, team: a@example.com,\n"
           b"  (comment) b@example.com;, jd@EXAMPLE.com\n"
           b"Cc: undisclosed-recipients:;\n"
           b"Bcc: hidden@example.net\n"
           b"X-Receiver: <injected@evil.example>\n"
           b"Subject: t\n\nbody\n")
    with spool_env() as e:
        send(e, ["-t", "-i", "extra@example.org"], msg)
        env, rest = split_envelope(only_file(e))
        rcpts = sorted(l for l in env if l.startswith("X-Receiver"))
        check_eq(rcpts, sorted("X-Receiver: <%s>" % a for a in [
            "extra@example.org", "jd@example.com", "a@example.com",
            "b@example.com", "hidden@example.net"]), "-t recipients")
        check(b"Bcc" not in rest and b"hidden" not in rest, "Bcc removed")
        # Not at the top: kept, and not read as envelope (intake reads
        # leading ones only).
        check(b"X-Receiver: <injected@evil.example>\n" in rest, rest)
        check(b"mbox-line" not in rest, "mbox From line dropped")
        check(rest.startswith(b"From: me@example.org\nTo: \"Doe, John\""),
              rest)
    with spool_env() as e:
        # Leading X-Sender/X-Receiver of the input would join the
        # envelope: removed.  "Bcc :" (RFC 5322 4.5) is a field too.
        send(e, ["-t"], b"X-Receiver: <lead@evil.example>\n"
             b"X-Sender: <s@evil.example>\nTo: to@example.com\n"
             b"Bcc : hid@example.net\nSubject: s\n\nx\n")
        env, rest = split_envelope(only_file(e))
        check_eq(sorted(l for l in env if l.startswith("X-Receiver")),
                 ["X-Receiver: <hid@example.net>",
                  "X-Receiver: <to@example.com>"], "recipients")
        check(b"evil" not in rest and b"hid" not in rest, rest)
        check(rest.startswith(b"To: to@example.com\nSubject: s\n"), rest)
    with spool_env() as e:
        # Resent-From: alone does not switch to Resent- recipients.
        send(e, ["-t"], b"To: old@example.com\nResent-From: r@example.org"
             b"\n\nx\n")
        env, _ = split_envelope(only_file(e))
        check_eq([l for l in env if l.startswith("X-Receiver")],
                 ["X-Receiver: <old@example.com>"], "no Resent-To")
    with spool_env() as e:
        # With Resent- fields, only the Resent- recipients count.
        send(e, ["-t"], b"To: old@example.com\nResent-From: r@example.org\n"
             b"Resent-To: new@example.com\n\nx\n")
        env, _ = split_envelope(only_file(e))
        check_eq([l for l in env if l.startswith("X-Receiver")],
                 ["X-Receiver: <new@example.com>"], "Resent-To")
    with spool_env() as e:
        p = send(e, ["-t"], b"Subject: nobody\n\nx\n", rc=64)
        check(b"no recipient" in p.stderr, p.stderr)
        check_eq(incoming(e) + tmpfiles(e), [], "nothing left")
        send(e, ["-t"], b"To: a@example.com, <broken\n\nx\n", rc=65)
        check_eq(incoming(e) + tmpfiles(e), [], "nothing left")


def test_dot_handling():
    msg = b"From: f@example.org\n\nbefore\n.\nafter\n"
    with spool_env() as e:
        send(e, ["a@example.com"], msg)
        _, rest = split_envelope(only_file(e))
        check_eq(rest, b"From: f@example.org\n\nbefore\n",
                 "lone dot ends input")
    for opt in (["-i"], ["-oi"], ["-oi", "-oem"], ["-ti"]):
        with spool_env() as e:
            args = opt + (["a@example.com"] if opt != ["-ti"] else [])
            m = msg if opt != ["-ti"] else b"To: a@example.com\n" + msg
            send(e, args, m)
            _, rest = split_envelope(only_file(e))
            check_eq(rest, m, "%s keeps the dot" % opt)
    with spool_env() as e:
        send(e, ["a@example.com"], b"From: f@x\r\n\r\nx\r\n.\r\ny\r\n")
        _, rest = split_envelope(only_file(e))
        check_eq(rest, b"From: f@x\r\n\r\nx\r\n", "CRLF dot line")
    with spool_env() as e:
        # A "." that is not alone on its line, or ends the input.
        send(e, ["a@example.com"], b"From: f@x\n\n.x\nx.\n. \n.")
        _, rest = split_envelope(only_file(e))
        check_eq(rest, b"From: f@x\n\n.x\nx.\n. \n", "dot at EOF")
    with spool_env() as e:
        # A line longer than the reader's 64 KiB pieces: a "." at offset
        # 65536 of it is not a line of its own.  (A header line that
        # long must have white space to be folded at on intake.)
        long = b"a" * 65536 + b".\n"
        hlong = b"a " * 32768 + b".\n"
        send(e, ["a@example.com"], b"From: f@x\nX-Long: " + hlong +
             b"\n" + long + b"end\n")
        _, rest = split_envelope(only_file(e))
        check_eq(rest, b"From: f@x\nX-Long: " + hlong + b"\n" + long +
                 b"end\n", "long lines")


def test_dsn_options():
    with spool_env() as e:
        send(e, ["-N", "failure,delay", "-R", "full", "-V", "abc+=1",
                 "-f", "s@example.org", "r@example.com"], b"\nx\n")
        env, _ = split_envelope(only_file(e))
        check_eq(env, ["X-Sender: <s@example.org> RET=FULL ENVID=abc+2B+3D1",
                       "X-Receiver: <r@example.com> NOTIFY=FAILURE,DELAY"],
                 "DSN parameters")
    with spool_env() as e:
        send(e, ["-Nnever", "-Rhdrs", "r@example.com"], b"\nx\n")
        env, _ = split_envelope(only_file(e))
        check(env[0].endswith("> RET=HDRS"), env)
        check_eq(env[1], "X-Receiver: <r@example.com> NOTIFY=NEVER", "never")
        for bad in (["-N", "sometimes"], ["-N", "never,success"],
                    ["-R", "body"], ["-V", "x" * 101], ["-V", "\xe9"]):
            send(e, bad + ["r@example.com"], b"\nx\n", rc=64)


def test_ignored_sendmail_options():
    """What mutt, cron, PHP, git and mailx pass must be accepted."""
    sets = [
        ["-oem", "-oi", "-B", "8BITMIME", "-f", "a@example.org", "--",
         "r@example.com"],          # mutt
        ["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "r@example.com"],  # cron
        ["-t", "-i"],               # PHP mail(), bsd-mailx
        ["-i", "r@example.com"],    # git send-email
        ["-odi", "-odb", "-oQ/var/spool/x", "-v", "-bm", "-o", "i",
         "-U", "-L", "tag", "-X", "/dev/null", "-h", "3", "r@example.com"],
        ["-r", "a@example.org", "-n", "-m", "r@example.com"],
    ]
    for args in sets:
        with spool_env() as e:
            send(e, args, b"To: r@example.com\n\nx\n")
            env, _ = split_envelope(only_file(e))
            check("X-Receiver: <r@example.com>" in env, (args, env))
    with spool_env() as e:
        # As Postfix's sendmail (getopt "+"): options end at the first
        # recipient.
        send(e, ["-Fx", "r@example.com", "-F", "y"], b"\nx\n")
        env, _ = split_envelope(only_file(e))
        check_eq(env[1:], ["X-Receiver: <r@example.com>",
                           "X-Receiver: <-F@relayq.test>",
                           "X-Receiver: <y@relayq.test>"],
                 "options after RCPT are recipients")
        # -bi, -I: check alias_file (none here); -q30m: ignored, as
        # Postfix's sendmail
        for noop in (["-bi"], ["-I"], ["-q30m"]):
            p = e.run("send", *noop, env={"RELAYQ_TEST_ETC": "/nonexistent"})
            check_eq((p.returncode, p.stdout, p.stderr), (0, b"", b""),
                     "%s does nothing" % noop)
        p = e.run("send", "--help")
        check(p.returncode == 0 and b"usage: relayq send" in p.stdout,
              "--help")


def test_exit_64_usage():
    with spool_env() as e:
        p = send(e, [], b"Subject: x\n\nx\n", rc=64)
        check(b"no recipients" in p.stderr, p.stderr)
        send(e, ["-Z", "r@example.com"], b"x\n", rc=64)
        send(e, ["--bogus", "r@example.com"], b"x\n", rc=64)
        send(e, ["-f"], b"x\n", rc=64)
        send(e, ["-bx"], b"x\n", rc=64)
        # -t only in delivery mode, as Postfix's sendmail
        for mode in ("-bs", "-bv", "-bi"):
            p = send(e, ["-t", mode, "r@example.com"], b"x\n", rc=64)
            check(b"-t can be used only in delivery mode" in p.stderr,
                  p.stderr)
        check_eq(incoming(e) + tmpfiles(e), [], "nothing left")
    with spool_env() as e:
        # a leading quoted mbox line (">From ") goes too
        send(e, ["r@example.com"], b">From x Mon Nov 30 00:00:00 2026\n"
             b"Subject: q\n\nb\n")
        _, rest = split_envelope(only_file(e))
        check(rest.startswith(b"Subject: q\n"), rest)


def test_exit_65_bad_address_and_size():
    with spool_env("max_message_size = 4k\n") as e:
        for bad in ["a@b@c.example", "<unterminated@example.com",
                    "x@example.com\r\nRCPT TO:<y@example.com>",
                    "x\n@example.com", "a@.example.com", "a@example..com",
                    "", "<>", "a b@example.com", "\"open@example.com",
                    "x" * 250 + "@example.com"]:
            p = send(e, [bad], b"Subject: x\n\nx\n", rc=65)
            check(b"bad recipient" in p.stderr, p.stderr)
        send(e, ["-f", "x@y\nz", "r@example.com"], b"\nx\n", rc=65)
        p = send(e, ["r@example.com"], b"Subject: a\x00b\n\nx\n", rc=65)
        check(b"NUL" in p.stderr, p.stderr)
        send(e, ["-f", "a@b@c", "r@example.com"], b"\nx\n", rc=65)
        # Quoted local parts and domain literals are fine.
        send(e, ['"john doe"@example.com', "u@[192.0.2.1]"], b"\nx\n")
        env, _ = split_envelope(only_file(e))
        check_eq(env[1:], ['X-Receiver: <"john doe"@example.com>',
                           "X-Receiver: <u@[192.0.2.1]>"], "quoted")
        os.unlink(os.path.join(e.spool, "incoming", incoming(e)[0]))
        # Over max_message_size (the whole spool file counts): 65, nothing
        # left behind.  Exactly at the limit is accepted.
        p = send(e, ["r@example.com"], b"\n" + b"x" * 5000, rc=65)
        check(b"too large" in p.stderr, p.stderr)
        check_eq(incoming(e) + tmpfiles(e), [], "nothing left")
        hdr = (b"X-Sender: <>\nX-Receiver: <r@example.com>\n"
               b"From: MAILER-DAEMON@relayq.test\n")
        send(e, ["-f", "<>", "r@example.com"],
             b"\n" + b"x" * (4096 - len(hdr) - 1))
        check_eq(len(only_file(e)), 4096, "exactly max_message_size")


def test_exit_75_spool_problems():
    with Env() as e:
        # No spool tree at all.
        p = send(e, ["r@example.com"], b"\nx\n", rc=75)
        check(b"incoming" in p.stderr, p.stderr)
    with spool_env() as e:
        # tmp/ missing: nothing may appear in incoming/.
        os.rmdir(os.path.join(e.spool, "tmp"))
        send(e, ["r@example.com"], b"\nx\n", rc=75)
        check_eq(incoming(e), [], "incoming/ empty")
    with spool_env() as e:
        # "Disk full": a file size limit makes write() fail part way
        # (EFBIG stands in for ENOSPC); the partial file is removed.
        def small():
            resource.setrlimit(resource.RLIMIT_FSIZE, (100000, 100000))
        p = subprocess.run([rqlib.BIN, "send", "-c", e.conf, "r@x.example"],
                           input=b"\n" + b"y" * 300000, preexec_fn=small,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        check_eq(p.returncode, 75, "exit on a full spool")
        check_eq(incoming(e) + tmpfiles(e), [], "nothing left")
    if os.getuid() == 0:
        with spool_env() as e:
            # Not writable for this user (root-owned 0755 dirs).
            os.chmod(e.dir, 0o755)
            os.chmod(e.conf, 0o644)
            p = subprocess.run(
                [rqlib.BIN, "send", "-c", e.conf, "r@x.example"],
                input=b"\nx\n", preexec_fn=as_nobody,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            check_eq(p.returncode, 75, "unwritable spool: %s" % p.stderr)
            check(b"Permission denied" in p.stderr, p.stderr)
            check_eq(incoming(e), [], "incoming/ empty")


def as_nobody():
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


def test_file_modes():
    """Spool files are readable by the daemon alone: the submitter's
    with the drop group tmp/ hands down (setgid), 0640; root's too."""
    if os.getuid() != 0:
        print("skip: needs root to switch users")
        return
    with spool_env() as e:
        os.chmod(e.dir, 0o755)
        os.chmod(e.spool, 0o755)
        os.chmod(e.conf, 0o644)
        for d in ("incoming", "tmp"):
            os.chown(os.path.join(e.spool, d), 1, 1)   # daemon user
            os.chmod(os.path.join(e.spool, d), 0o3733)
        # Another user: the daemon's group reads it (dirs not listable).
        p = subprocess.run([rqlib.BIN, "send", "-c", e.conf, "r@x.example"],
                           input=b"\nx\n", preexec_fn=as_nobody,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        check_eq(p.returncode, 0, p.stderr)
        names = incoming(e)
        st = os.stat(os.path.join(e.spool, "incoming", names[0]))
        check_eq((st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)),
                 (65534, 1, 0o640), "non-owner's file")
        check(b"X-Sender: <nobody@relayq.test>" in only_file(e), "sender")
        os.unlink(os.path.join(e.spool, "incoming", names[0]))
        # root: root's file, in the daemon's group, 0640.
        send(e, ["r@x.example"], b"\nx\n")
        st = os.stat(os.path.join(e.spool, "incoming", incoming(e)[0]))
        check_eq((st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)),
                 (0, 1, 0o640), "root's file")
        os.unlink(os.path.join(e.spool, "incoming", incoming(e)[0]))
        # No drop group (1733), or listable (1777): refused, nothing left.
        for mode in (0o1733, 0o1777):
            for d in ("incoming", "tmp"):
                os.chmod(os.path.join(e.spool, d), mode)
            p = subprocess.run(
                [rqlib.BIN, "send", "-c", e.conf, "r@x.example"],
                input=b"\nx\n", preexec_fn=as_nobody,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            check_eq(p.returncode, 75, "mode %o: %s" % (mode, p.stderr))
            check(b"spool directory" in p.stderr, p.stderr)
            check_eq(incoming(e) + tmpfiles(e), [], "nothing left")


def test_killed_submission_never_visible():
    with spool_env() as e:
        for sig in (signal.SIGTERM, signal.SIGKILL, signal.SIGINT):
            p = subprocess.Popen([rqlib.BIN, "send", "-c", e.conf,
                                  "r@example.com"], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
            p.stdin.write(b"Subject: partial\n\n" + b"z" * 99 + b"\n" +
                          b"zzz\n" * 50000)
            p.stdin.flush()
            # The file is being written in tmp/, never in incoming/.
            rqlib.wait_for(lambda: tmpfiles(e), what="file in tmp/")
            rqlib.wait_for(lambda: os.path.getsize(os.path.join(
                e.spool, "tmp", tmpfiles(e)[0])) > 0, what="bytes written")
            check_eq(incoming(e), [], "incoming/ while writing")
            p.send_signal(sig)
            p.wait(10)
            p.stdin.close()
            p.stdout.close()
            p.stderr.close()
            check_eq(incoming(e), [], "incoming/ after %s" % sig.name)
            if sig == signal.SIGKILL:
                check_eq(len(tmpfiles(e)), 1, "SIGKILL leaves tmp/ file")
                for n in tmpfiles(e):
                    os.unlink(os.path.join(e.spool, "tmp", n))
            else:
                check_eq(p.returncode, 75, "exit after %s" % sig.name)
                check_eq(tmpfiles(e), [], "tmp/ cleaned after " + sig.name)


def sendmail_link(e):
    """A link named sendmail to relayq, as /usr/sbin/sendmail would be."""
    link = os.path.join(e.dir, "sendmail")
    os.symlink(os.path.abspath(rqlib.BIN), link)
    return link


def test_client_bsd_mailx():
    mail = shutil.which("mail") or shutil.which("bsd-mailx")
    if not mail:
        print("skip: bsd-mailx is not installed")
        return
    with spool_env() as e:
        rc = os.path.join(e.dir, "mailrc")
        with open(rc, "w") as f:
            f.write("set sendmail=%s\n" % sendmail_link(e))
        env = dict(os.environ, MAILRC=rc, RELAYQ_CONFIG=e.conf, HOME=e.dir)
        p = subprocess.run([mail, "-s", "hello from mailx",
                            "-r", "Mailer <mx@example.org>",
                            "-b", "blind@example.net",
                            "to1@example.com", "to2@example.com"],
                           input=b"line one\n.\nline after dot\n", env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=30)
        check_eq(p.returncode, 0, "mail: %s" % p.stderr)
        env_hdrs, rest = split_envelope(only_file(e))
        check_eq(env_hdrs[0], "X-Sender: <mx@example.org>", "sender")
        check_eq(sorted(env_hdrs[1:]), [
            "X-Receiver: <blind@example.net>",
            "X-Receiver: <to1@example.com>",
            "X-Receiver: <to2@example.com>"], "recipients (-t)")
        check(b"Subject: hello from mailx\n" in rest, rest)
        check(b"blind" not in rest, "Bcc removed")
        # mailx passes -i: a "." line in the text is kept.
        check(rest.endswith(b"\n\nline one\n.\nline after dot\n"), rest)


def test_client_git_send_email():
    git = shutil.which("git")
    ok = git and os.path.exists(os.path.join(subprocess.run(
        [git, "--exec-path"], stdout=subprocess.PIPE).stdout.decode().strip(),
        "git-send-email"))
    if not ok:
        print("skip: git send-email is not installed (Debian: git-email)")
        return
    with spool_env() as e:
        repo = os.path.join(e.dir, "repo")
        genv = dict(os.environ, HOME=e.dir, RELAYQ_CONFIG=e.conf,
                    GIT_CONFIG_NOSYSTEM="1")

        def g(*a):
            return subprocess.run([git, "-C", repo] + list(a), env=genv,
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, timeout=60)
        subprocess.run([git, "init", "-q", repo], env=genv, check=True)
        g("config", "user.email", "dev@example.org")
        g("config", "user.name", "Dev Eloper")
        with open(os.path.join(repo, "f.txt"), "w") as f:
            f.write("line\n.\nafter a dot line\n")
        g("add", "f.txt")
        g("commit", "-q", "-m", "add f")
        p = g("send-email", "--confirm=never", "--quiet",
              "--to=list@example.com", "--cc=cc@example.net",
              "--sendmail-cmd=" + sendmail_link(e), "-1")
        check_eq(p.returncode, 0, "git send-email: %s" % p.stderr)
        env_hdrs, rest = split_envelope(only_file(e))
        check_eq(env_hdrs[0], "X-Sender: <root@relayq.test>"
                 if os.getuid() == 0 else env_hdrs[0], "sender")
        check_eq(sorted(env_hdrs[1:]), [
            "X-Receiver: <cc@example.net>", "X-Receiver: <dev@example.org>",
            "X-Receiver: <list@example.com>"], "recipients")
        check(b"Subject: [PATCH] add f\n" in rest, rest)
        check(b"\n+.\n+after a dot line\n" in rest, "patch intact")


PY_CLIENT = r'''
import subprocess, sys
from email.message import EmailMessage
m = EmailMessage()
m["From"] = "App <app@example.org>"
m["To"] = "user@example.com"
m["Bcc"] = "audit@example.com"
m["Subject"] = "from python"
m.set_content("hello\n.\nstill here\n")
# What PHP's mail() and many apps do: sendmail -t -i, message on stdin.
p = subprocess.run([sys.argv[1], "-t", "-i", "-f", "app@example.org"],
                   input=m.as_bytes())
sys.exit(p.returncode)
'''


def test_client_python_subprocess():
    with spool_env() as e:
        script = os.path.join(e.dir, "client.py")
        with open(script, "w") as f:
            f.write(PY_CLIENT)
        p = subprocess.run(["/usr/bin/python3", script, sendmail_link(e)],
                           env=dict(os.environ, RELAYQ_CONFIG=e.conf),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        check_eq(p.returncode, 0, p.stderr)
        env_hdrs, rest = split_envelope(only_file(e))
        check_eq(env_hdrs, ["X-Sender: <app@example.org>",
                            "X-Receiver: <user@example.com>",
                            "X-Receiver: <audit@example.com>"], "envelope")
        check(b"audit" not in rest, "Bcc removed")
        check(rest.endswith(b"hello\n.\nstill here\n"), rest)


def daemon_ready():
    """True when `relayq run` and `mailq --json` exist in this build."""
    p = subprocess.run([rqlib.BIN, "--help"], stdout=subprocess.PIPE)
    out = p.stdout.decode()
    return ("\n  run " in out and "\n  mailq " in out)


def daemon_smtp_round_trip(envid, want_envid):
    """Sends one message with DSN options through relayq run to
    faultsmtp; checks what arrives; returns the MAIL FROM line."""
    import faultlib
    if "\n  run " not in subprocess.run(
            [rqlib.BIN, "--help"], stdout=subprocess.PIPE).stdout.decode():
        print("skip: relayq run is not in this build yet")
        return
    if not os.path.exists(faultlib.BIN):
        print("skip: faultsmtp is not built")
        return
    with spool_env() as e:
        srv = faultlib.start(e, "ehlo PIPELINING SIZE 10000000 DSN "
                             "8BITMIME ENHANCEDSTATUSCODES\n")
        e.write_conf("relayhost = [127.0.0.1]:%d\ntls = none\n" % srv.port)
        body = b"line 1\n..two dots\n.\nlast\n"
        send(e, ["-i", "-f", "s@example.org", "-N", "failure,delay",
                 "-R", "hdrs", "-V", envid, "r1@example.com",
                 "Second <r2@example.com>"],
             b"From: S <s@example.org>\nTo: r1@example.com\n"
             b"Bcc: r2@example.com\nSubject: via daemon\n"
             b"Priority: urgent\n\n" + body)
        e.run("run", "--exit-when-idle", check_rc=0, timeout=90)
        check_eq(incoming(e), [], "incoming/ after run")
        msgs = srv.wait_messages(1)
        check_eq(len(msgs), 1, "one transaction")
        env_lines, raw = msgs[0]
        mail = [l for l in env_lines if l.upper().startswith("MAIL FROM")]
        rcpt = sorted(l for l in env_lines
                      if l.upper().startswith("RCPT TO"))
        check(mail and mail[0].startswith("MAIL FROM:<s@example.org>"),
              env_lines)
        check("RET=HDRS" in mail[0].split() and
              "ENVID=" + want_envid in mail[0].split(),
              "DSN parameters of MAIL FROM: %r" % mail)
        check_eq(len(rcpt), 2, "RCPT TO lines")
        for r, a in zip(rcpt, ["r1@example.com", "r2@example.com"]):
            check(r.startswith("RCPT TO:<%s>" % a), rcpt)
            check("NOTIFY=FAILURE,DELAY" in r, "NOTIFY of %r" % r)
        check(b"X-Sender" not in raw and b"X-Receiver" not in raw,
              "envelope headers removed")
        check(b"Bcc" not in raw, "Bcc removed")
        check(b"Subject: via daemon\r\n" in raw, raw)
        # on the wire: CRLF, dot-stuffed
        check(raw.endswith(b"\r\n\r\nline 1\r\n...two dots\r\n..\r\n"
                           b"last\r\n.\r\n"), raw[-80:])
        log = e.log_text()
        check("from=<s@example.org>" in log and "nrcpt=2" in log and
              "priority=urgent" in log, log[-2000:])
        srv.stop()


def test_through_daemon_to_smtp():
    """send -> relayq run -> SMTP: envelope, DSN parameters and body."""
    daemon_smtp_round_trip("env-1", "env-1")


def test_through_daemon_envid_xtext():
    """An ENVID that needs xtext: encoded once in the spool file, so it
    must be decoded on intake and encoded once on the wire."""
    daemon_smtp_round_trip("env+1 x", "env+2B1+20x")


def test_sendmail_bp_q():
    """sendmail -bp is mailq, sendmail -q is flush (as Postfix's)."""
    if not daemon_ready():
        print("skip: relayq mailq is not in this build yet")
        return
    with spool_env("relayhost = [127.0.0.1]:%d\nretry.min = 1h\n" %
                   rqlib.free_port()) as e:
        link = sendmail_link(e)
        send(e, ["-f", "s@example.org", "r@example.com"], b"Subject: q\n\nx\n")
        e.run("run", "--exit-when-idle", check_rc=0, timeout=60)
        env = dict(os.environ, RELAYQ_CONFIG=e.conf)
        p = subprocess.run([link, "-bp"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=env)
        check_eq(p.returncode, 0, p.stderr)
        check(b"r@example.com" in p.stdout and b"s@example.org" in p.stdout,
              p.stdout)
        mq = e.run("mailq", check_rc=0)
        check_eq(p.stdout, mq.stdout, "-bp output is mailq's")
        # an alternatives(8)-style name is sendmail too
        alt = os.path.join(e.dir, "sendmail.relayq")
        os.symlink(os.path.abspath(rqlib.BIN), alt)
        p = subprocess.run([alt, "-bp"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=env)
        check_eq((p.returncode, p.stdout), (0, mq.stdout), "sendmail.relayq")

        def next_attempt():
            q = e.run("mailq", "--json", check_rc=0).stdout.decode()
            return json.loads(q.splitlines()[0])["recipients"][0][
                "next_attempt"]
        check(next_attempt() > time.time() + 1800, "deferred for 1h")
        p = subprocess.run([link, "-q"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=env)
        check_eq(p.returncode, 0, p.stderr)
        check_eq(p.stdout + p.stderr, b"", "-q is silent (cron)")
        check(next_attempt() <= time.time() + 1, "due now after -q")


def test_through_daemon_into_queue():
    if not daemon_ready():
        print("skip: relayq run / mailq are not in this build yet")
        return
    # No relayhost is reachable: a 127.0.0.1 port nobody listens on, so
    # the message stays queued (deferred) and mailq can show it.
    port = rqlib.free_port()
    with spool_env("relayhost = [127.0.0.1]:%d\nretry.min = 1h\n" % port) \
            as e:
        send(e, ["-f", "s@example.org", "-N", "failure", "-R", "hdrs",
                 "-V", "env-1", "r1@example.com", "r2@example.com"],
             b"Subject: via daemon\nPriority: urgent\n\nbody\n")
        e.start("run")
        rqlib.wait_for(lambda: not incoming(e), 30, what="intake")

        def listed():
            p = e.run("mailq", "--json", check_rc=0)
            return [json.loads(l) for l in p.stdout.decode().splitlines()
                    if l.strip()]
        msgs = rqlib.wait_for(listed, 30, what="mailq lists the message")
        check_eq(len(msgs), 1, "one message queued")
        m = msgs[0]
        check_eq(m["sender"], "s@example.org", "sender")
        check_eq(m["priority"], "urgent", "priority")
        check_eq(sorted(r["address"] for r in m["recipients"]),
                 ["r1@example.com", "r2@example.com"], "recipients")
        p = e.run("show", m["queue_id"], check_rc=0)
        out = p.stdout.decode()
        check("envid: env-1" in out, "ENVID stored: %s" % out)
        check(out.count("notify: FAILURE") == 2, "NOTIFY stored: %s" % out)
        contents = out.split("MESSAGE CONTENTS", 1)[-1]
        check("Subject: via daemon" in contents, "message shown: %s" % out)
        check("X-Sender" not in contents and "X-Receiver" not in contents,
              "envelope headers removed: %s" % out)


if __name__ == "__main__":
    rqlib.main(globals())
