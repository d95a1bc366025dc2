"""Logging where mail admins look (issue 13, items 4 and 5): the daemon
logs through syslog to a real rsyslogd (the Debian package, started on a
private configuration and socket, named to relayq by the test aid
RELAYQ_SYSLOG_SOCKET) with facility mail and one identity per component
(relayq/pickup, relayq/qmgr, relayq/smtp, relayq/bounce), each line with
its own severity and one header only; pflogsumm over the file rsyslog
writes counts what the queue holds: messages received, bytes received,
senders, sending domains, delivered, deferred (and deferrals) and bounced.
syslog_facility moves the lines; log_file = - writes them to standard
error, as does a missing syslog socket."""
import json
import os
import re
import shutil
import subprocess

import faultlib
import rqlib
from rqlib import check, check_eq, wait_for

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
PFLOGSUMM = shutil.which("pflogsumm") or "/usr/sbin/pflogsumm"
# the traditional header, then one of our identities: nothing else
LINE = re.compile(r"^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ "
                  r"relayq/(pickup|qmgr|smtp|bounce|relayq)\[\d+\]: (.*)$")
STAMP = re.compile(r"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d ")

# (sender, recipients, body lines): later@ is deferred at every attempt,
# bad@ refused (550), ok*@ accepted
MSGS = [
    ("alice@a.test", ["ok1@x.test", "later@x.test", "bad@x.test"], 3),
    ("alice@a.test", ["ok2@x.test", "later@x.test"], 40),
    ("bob@b.test", ["ok3@x.test", "later@x.test", "bad@x.test"], 200),
    ("carol@a.test", ["later@x.test", "ok4@x.test"], 7),
]
FAULT = """
rcpt later@x.test reply 451 4.3.0 try again later
rcpt bad@x.test reply 550 5.1.1 no such user
"""


def start_rsyslogd(env):
    """Starts rsyslogd on a private socket in env.dir: facility mail to
    mail.log in the traditional file format (Debian's mail.log), every
    line to all.log as "FACILITY SEVERITY TAG MSG".  Returns the socket
    path, mail.log and all.log."""
    d = os.path.join(env.dir, "rsyslog")
    os.makedirs(d)
    sock = os.path.join(d, "log.sock")
    conf = os.path.join(d, "rsyslog.conf")
    with open(conf, "w") as f:
        f.write("""
global(workDirectory="%(d)s")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="%(sock)s" RateLimit.Interval="0")
template(name="meta" type="list") {
  property(name="syslogfacility-text") constant(value=" ")
  property(name="syslogseverity-text") constant(value=" ")
  property(name="syslogtag") property(name="msg") constant(value="\\n")
}
mail.* action(type="omfile" file="%(d)s/mail.log"
              template="RSYSLOG_TraditionalFileFormat")
*.* action(type="omfile" file="%(d)s/all.log" template="meta")
""" % {"d": d, "sock": sock})
    p = subprocess.run([RSYSLOGD, "-N1", "-f", conf],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    check_eq(p.returncode, 0, "rsyslog.conf valid: %r" % p.stdout)
    env.spawn([RSYSLOGD, "-n", "-f", conf, "-i", os.path.join(d, "pid")],
              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: os.path.exists(sock), 20, what="rsyslogd's socket")
    return sock, os.path.join(d, "mail.log"), os.path.join(d, "all.log")


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def write_conf(env, relay, extra="", queue=None):
    """The config with log_file unset (syslog, its default)."""
    with open(env.conf, "w") as f:
        f.write("spool_dir = %s\nqueue_dir = %s\nhostname = relayq.test\n"
                "relayhost = [127.0.0.1]:%d\nretry.min = 1h\n"
                "retry.max = 1h\n%s" %
                (env.spool, queue or env.queue, relay, extra))


def broken_queue(env):
    """A queue_dir whose data.mdb is not an LMDB file: run exits 73 with
    a fatal error once the log is open."""
    bad = os.path.join(env.dir, "badq")
    if not os.path.isdir(bad):
        os.mkdir(bad, 0o700)
        with open(os.path.join(bad, "data.mdb"), "wb") as f:
            f.write(b"not an LMDB file" * 1000)
    return bad


def run_idle(env, sock, nstopped, mail_log):
    """Runs the daemon until idle; waits for its last line in mail.log."""
    p = env.run("run", "--exit-when-idle", timeout=120,
                env={"RELAYQ_SYSLOG_SOCKET": sock})
    check_eq(p.returncode, 0, "run: %r" % p.stderr[-2000:])
    # nothing went to standard error: syslog took every line
    check_eq(p.stderr, b"", "run's standard error")
    wait_for(lambda: read(mail_log).count("daemon stopped") >= nstopped,
             30, what="rsyslogd to write the run's lines")


def mailq_json(env):
    out = env.run("mailq", "--json", check_rc=0).stdout.decode()
    return [json.loads(l) for l in out.splitlines() if l]


def pflogsumm(path):
    """pflogsumm's Grand Totals over PATH, as {label: number}."""
    p = subprocess.run([PFLOGSUMM, "--syslog-name=relayq", path],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    check_eq(p.returncode, 0, "pflogsumm: %r" % p.stderr)
    out = p.stdout.decode()
    totals = {}
    # " %6d%s  label": the number, a unit (k, m) or a blank
    for m in re.finditer(r"^ +(\d+) {3}([a-z][a-z/ ]+?)(?:  \((\d+)  "
                         r"deferrals\))?(?: \(\d+%\))?$", out, re.M):
        totals.setdefault(m.group(2), int(m.group(1)))
        if m.group(3):
            totals["deferrals"] = int(m.group(3))
    return totals, out


def test_syslog_and_pflogsumm():
    with rqlib.Env() as env:
        sock, mail_log, all_log = start_rsyslogd(env)
        write_conf(env, 1)  # port 1: nothing listens, every try defers
        run_idle(env, sock, 1, mail_log)  # makes the spool
        for sender, rcpts, n in MSGS:
            body = "".join("line %d of a message\n" % i for i in range(n))
            env.run("send", "-f", sender, *rcpts, check_rc=0,
                    input="Subject: t\n\n" + body)
        # a file that cannot be queued: a warning of relayq/pickup
        open(os.path.join(env.spool, "incoming", "empty"), "w").close()
        run_idle(env, sock, 2, mail_log)
        first = {m["queue_id"]: m for m in mailq_json(env)}
        check_eq(len(first), len(MSGS), "all queued and deferred")

        srv = faultlib.start(env, FAULT)
        write_conf(env, srv.port)
        env.run("flush", check_rc=0, env={"RELAYQ_SYSLOG_SOCKET": sock})
        run_idle(env, sock, 3, mail_log)
        msgs = mailq_json(env)
        rcpts = [r for m in msgs for r in m["recipients"]]
        state = [r["state"] for r in rcpts]
        check_eq(sorted(m["queue_id"] for m in msgs), sorted(first),
                 "later@ keeps each message queued")
        dsns = [e for e, _ in srv.messages()
                if e[0].startswith("MAIL FROM:<>")]
        accepted = sum(1 for e, _ in srv.messages() for l in e
                       if l.startswith("RCPT TO:"))
        check_eq(len(dsns), 2, "a bounce to each sender of a bad@ message")
        check_eq(accepted, state.count("delivered") + len(dsns),
                 "recipients accepted at the server")

        # every line: one traditional header, one of our identities
        text = read(mail_log)
        lines = text.splitlines()
        for line in lines:
            m = LINE.match(line)
            check(m, "not a relayq line: %r" % line)
            check(not STAMP.search(m.group(2)), "stamped twice: %r" % line)

        totals, report = pflogsumm(mail_log)
        want = {
            "received": len(MSGS),
            "bytes received": sum(m["message_size"] for m in msgs),
            "senders": len({s for s, _, _ in MSGS}),
            "sending hosts/domains": len({s.split("@")[1]
                                          for s, _, _ in MSGS}),
            "delivered": accepted,
            # each message had a deferral (the first run)
            "deferred": len(MSGS),
            "deferrals": sum(r["attempts"] - (r["state"] != "deferred")
                             for r in rcpts),
            "bounced": state.count("bounced"),
        }
        for k, v in want.items():
            check_eq(totals.get(k), v, "pflogsumm %s (report:\n%s)" %
                     (k, report))
        check(re.search(r"try again later", report), "deferral reason")
        check(re.search(r"no such user", report), "bounce reason")
        check(re.search(r"alice@a\.test", report), "senders by count")

        # facility mail, identities and severities, as Postfix's
        meta = read(all_log)
        for ident, sev, what in [
                ("pickup", "info", r"uid=0 from=<alice@a\.test>"),
                ("qmgr", "info", r"from=<bob@b\.test>, size=\d+, nrcpt=3"),
                ("qmgr", "info", r"from=<>, size=\d+, nrcpt=1"),
                ("smtp", "info", r"to=<ok1@x\.test>, .*status=sent"),
                ("smtp", "info", r"to=<later@x\.test>, .*status=deferred"),
                ("smtp", "info", r"to=<bad@x\.test>, .*status=bounced"),
                ("bounce", "info", r"sender non-delivery notification"),
                ("pickup", "warning", r"warning: empty: moved to bad/"),
                ("relayq", "info", r"daemon started")]:
            check(re.search(r"^mail %s relayq/%s\[\d+\]: [0-9A-F]{0,16}:? ?"
                            r".*%s" % (sev, ident, what), meta, re.M),
                  "no 'mail %s relayq/%s ... %s' line in:\n%s" %
                  (sev, ident, what, meta))
        check(not re.search(r"^(?!mail )\S+ \S+ relayq/", meta, re.M),
              "only facility mail")

        # syslog_facility moves the lines: `delete` logs where run does
        write_conf(env, srv.port, "syslog_facility = local5\n")
        qid = sorted(first)[0]
        env.run("delete", qid, check_rc=0,
                env={"RELAYQ_SYSLOG_SOCKET": sock})
        wait_for(lambda: re.search(r"^local5 info relayq/qmgr\[\d+\]: %s: "
                                   r"removed$" % qid, read(all_log), re.M),
                 20, what="the removed line, facility local5")
        check("%s: removed" % qid not in read(mail_log), "not in mail.log")

        # a fatal error: severity crit, and on standard error too
        write_conf(env, srv.port, "syslog_facility = local5\n",
                   queue=broken_queue(env))
        p = env.run("run", env={"RELAYQ_SYSLOG_SOCKET": sock})
        check_eq(p.returncode, 73, "run on a broken queue")
        check(b"relayq: fatal: cannot open the queue" in p.stderr, p.stderr)
        crit = re.compile(r"^local5 crit relayq/relayq\[\d+\]: fatal: "
                          r"cannot open the queue", re.M)
        wait_for(lambda: crit.search(read(all_log)), 20,
                 what="the fatal line, severity crit")
        # under systemd standard error is the journal ($JOURNAL_STREAM):
        # no second copy there
        with open(os.path.join(env.dir, "stderr"), "w+b") as f:
            st = os.fstat(f.fileno())
            e = dict(os.environ, RELAYQ_SYSLOG_SOCKET=sock,
                     JOURNAL_STREAM="%d:%d" % (st.st_dev, st.st_ino))
            p = subprocess.run([rqlib.BIN, "run", "-c", env.conf], env=e,
                               stdout=subprocess.DEVNULL, stderr=f,
                               timeout=60)
            f.seek(0)
            check_eq((p.returncode, f.read()), (73, b""),
                     "nothing more on the journal's stream")
        wait_for(lambda: len(crit.findall(read(all_log))) == 2, 20,
                 what="the second fatal line")


def test_stderr_and_fallback():
    """log_file = - and a syslog that is not there: standard error."""
    with rqlib.Env() as env:
        for dest, extra_env in [("log_file = -\n", {}),
                                ("", {"RELAYQ_SYSLOG_SOCKET":
                                      os.path.join(env.dir, "none")})]:
            write_conf(env, 1, dest)
            p = env.run("run", "--exit-when-idle", timeout=60,
                        env=extra_env)
            check_eq(p.returncode, 0, "run exit")
            err = p.stderr.decode(errors="replace")
            check(re.search(r"^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d relayq "
                            r"relayq/relayq\[\d+\]: daemon stopped$", err,
                            re.M), "stamped lines on stderr: %r" % err)
            check(not os.path.exists(os.path.join(env.dir, "-")),
                  "no file named -")
            # a fatal error is written there once
            write_conf(env, 1, dest, queue=broken_queue(env))
            p = env.run("run", env=extra_env)
            check_eq(p.returncode, 73, "run on a broken queue")
            err = p.stderr.decode(errors="replace")
            check_eq(len(re.findall(r"^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d "
                                    r"relayq relayq/relayq\[\d+\]: fatal: "
                                    r"cannot open the queue", err, re.M)),
                     1, "the fatal line: %r" % err)
            check_eq(err.count("fatal:"), 1, "once: %r" % err)


if __name__ == "__main__":
    rqlib.main(globals())
