"""The next message behind the dot: a connection about to send the final
dot of its message takes the next message of its destination and sends
its MAIL FROM, RCPT TO and DATA in the same write (RFC 2920, the
content may start a group).  What holds: it happens (and only with
PIPELINING), nothing is lost or sent twice, and when the connection
fails before the server answered the riding message's MAIL FROM, that
message goes again at once on another connection, no attempt counted;
a real Postfix smtpd with smtpd_forbid_unauth_pipelining = yes takes it.

Counts are scaled down when RELAYQ_SANITIZE=1 (ASan+UBSan build)."""
import grp
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time

import faultlib
import rqlib
from rqlib import check, check_eq
from test_runner_lib import SANITIZE, deliveries, drop, run_idle


def relay(port, extra=""):
    # retries an hour away: a deferral shows, it is not hidden by a retry
    return ("relayhost = [127.0.0.1]:%d\nretry.min = 1h\nretry.max = 2h\n"
            "timeout.hoststatus = 0\n%s" % (port, extra))


def queued(env, n, port, extra=""):
    """Queues N messages (to u0..u{N-1}@dst.test) first, every one
    deferred once by a closed port, then points the relayhost at PORT
    and flushes: delivery starts with all of them waiting, whatever the
    speed of intake.  Returns the delivery lines logged so far (the
    deferrals), to be skipped."""
    env.write_conf(relay(rqlib.free_port(), extra))
    for i in range(n):
        drop(env, "u%d@dst.test" % i)
    run_idle(env)
    before = len(deliveries(env))
    check_eq(before, n, "deferred while the relay was closed")
    env.write_conf(relay(port, extra))
    env.run("flush", check_rc=0)
    return before


def rcpts_received(srv):
    """The RCPT TO address of every message the server kept, in order."""
    out = []
    for env_lines, _ in srv.messages():
        rc = [x for x in env_lines if x.upper().startswith("RCPT")]
        out.append(rc[0].split("<", 1)[1].split(">", 1)[0])
    return out


def test_next_rides_behind_the_dot():
    """One connection, N messages: every message after the first has its
    MAIL FROM, RCPT TO and DATA in the same packet as the previous dot,
    no RSET in between, each message received once and logged sent at
    its first try."""
    n = 20 if SANITIZE else 40
    with rqlib.Env() as env:
        srv = faultlib.start(env, "")
        skip = queued(env, n, srv.port, "max_connections = 1\n")
        want = set("u%d@dst.test" % i for i in range(n))
        run_idle(env)
        got = rcpts_received(srv)
        check_eq(sorted(got), sorted(want), "recipients received")
        check_eq(len(srv.conns()), 1, "connections")
        cmds = [c.upper() for c in srv.cmds()]
        check_eq([c for c in cmds if c == "RSET"], [], "RSET commands")
        piped = srv.events("pipelined")
        # every dot but the last carried the next message
        check_eq(len(piped), n - 1, "dots that carried the next message")
        for e in piped:
            data = e["data"].upper()
            check(data.startswith("MAIL FROM:<SENDER@SRC.TEST>"), data)
            check("\r\nRCPT TO:<" in data and data.endswith("DATA\r\n"),
                  "not a whole transaction behind the dot: %r" % data)
        ds = deliveries(env)[skip:]
        check_eq(sorted(d["to"] for d in ds), sorted(want), "sent lines")
        check_eq(set(d["status"] for d in ds), {"sent"}, "statuses")
        check_eq(set(d["tries"] for d in ds), {2}, "tries")


def five_busy_sessions(n, script):
    """N messages queued, then delivered with the window at 5 from the
    start to a faultsmtp running SCRIPT: every one received once and
    logged sent, over 5 sessions that each carried mail."""
    with rqlib.Env() as env:
        srv = faultlib.start(env, script)
        skip = queued(env, n, srv.port, "max_connections = 5\n"
                      "initial_destination_concurrency = 5\n")
        run_idle(env)
        got = rcpts_received(srv)
        check_eq(sorted(got), sorted("u%d@dst.test" % i for i in range(n)),
                 "recipients received")
        ds = deliveries(env)[skip:]
        check_eq(len(ds), n, "delivery lines")
        check_eq(set(d["status"] for d in ds), {"sent"}, "statuses")
        conns = srv.conns()
        idle = [c for c in conns if not any(
            x.upper().startswith("MAIL") for x in srv.cmds(c))]
        check_eq(idle, [], "sessions that carried no mail")
        check_eq(len(conns), 5, "sessions")


def test_no_connection_wasted():
    """Many messages over max_connections = 5 (the window at 5 from the
    start) to a server that greets the first connection at once and the
    others after 0.3 s (a DNSBL lookup, say): the server sees 5 sessions,
    every one of them carrying mail.  A connection still waiting for its
    greeting keeps its message while the first one carries message after
    message behind its dots: taking it would leave that connection with
    nothing to do but QUIT, and the runner would open another in its
    place, over and over (issue 18: 400-3,300 sessions for 30,000
    messages at concurrency 20)."""
    five_busy_sessions(100 if SANITIZE else 400,
                       "on CONNECT stall 0.3\non CONNECT conn 1 stall 0\n")


def test_orphan_takes_work():
    """A server that greets the first connection at once and the others
    only after 1.5 s, and takes 20 ms a message: the first connection
    takes the messages of the others once they have waited 1 s for
    their greeting (as for a server that never greets); when those
    greet, each takes the next waiting message instead of saying QUIT
    (and the runner, its window full of them, opened no others): 5
    sessions, each carrying mail, every message delivered once."""
    five_busy_sessions(100 if SANITIZE else 200,
                       "on CONNECT stall 1.5\non CONNECT conn 1 stall 0\n"
                       "on DOT stall 0.02\n")


def test_no_pipelining_no_riding():
    """A server without PIPELINING gets one command at a time: nothing
    behind the dot, every message delivered."""
    with rqlib.Env() as env:
        srv = faultlib.start(env, "ehlo 8BITMIME\nehlo ENHANCEDSTATUSCODES\n")
        skip = queued(env, 10, srv.port, "max_connections = 1\n")
        run_idle(env)
        check_eq(len(srv.messages()), 10, "messages received")
        check_eq(srv.events("pipelined"), [], "pipelined after the dot")
        check_eq(set(d["status"] for d in deliveries(env)[skip:]), {"sent"},
                 "statuses")


def test_421_to_the_riding_mail():
    """The server answers the riding message's MAIL FROM with 421 and
    closes (as one that takes a message per connection): that message
    goes again on a new connection at once, no attempt counted; nothing
    is deferred."""
    with rqlib.Env() as env:
        srv = faultlib.start(env, "on MAIL 2 reply 421 4.7.0 one per "
                             "connection\n")
        skip = queued(env, 6, srv.port, "max_connections = 1\n")
        want = set("u%d@dst.test" % i for i in range(6))
        t0 = time.time()
        run_idle(env, timeout=60)
        took = time.time() - t0
        got = rcpts_received(srv)
        check_eq(sorted(got), sorted(want), "each received once")
        check(len(srv.conns()) >= 2, "connections: %s" % srv.conns())
        # the 421 went to a MAIL that came behind a dot
        piped = [e for e in srv.events("pipelined", conn=1)]
        check(piped, "conn 1: nothing rode behind its first dot")
        ds = deliveries(env)[skip:]
        check_eq(set(d["status"] for d in ds), {"sent"},
                 "statuses: %s" % [d["line"] for d in ds
                                   if d["status"] != "sent"])
        check_eq(set(d["tries"] for d in ds), {2}, "tries (one deferral "
                 "while the relay was closed, no more)")
        check(took < 30, "took %.1fs" % took)


def test_dot_lost_riding_goes_elsewhere():
    """The connection is lost at the first dot, with the next message
    already behind it: the first is deferred (it may have arrived), the
    riding one is delivered on a new connection at its first try."""
    with rqlib.Env() as env:
        srv = faultlib.start(env, "on DOT 1 conn 1 drop\n")
        skip = queued(env, 4, srv.port, "max_connections = 1\n")
        run_idle(env, timeout=60)
        ds = deliveries(env)[skip:]
        deferred = [d for d in ds if d["status"] == "deferred"]
        sent = [d for d in ds if d["status"] == "sent"]
        check_eq(len(deferred), 1, "deferred lines: %s" %
                 [d["line"] for d in ds])
        check("lost connection" in deferred[0]["reason"] and
              "end of data" in deferred[0]["reason"], deferred[0]["line"])
        check_eq(len(sent), 3, "sent lines")
        check_eq(set(d["tries"] for d in sent), {2}, "tries of the sent")
        check(srv.events("pipelined", conn=1),
              "conn 1: nothing rode behind the dot")
        check_eq(sorted(rcpts_received(srv)),
                 sorted(d["to"] for d in sent), "received = sent")


def test_dot_refused_riding_goes_on():
    """A 451 to the first dot defers that message only; the riding one
    goes on over the same connection."""
    with rqlib.Env() as env:
        srv = faultlib.start(env, "on DOT 1 reply 451 4.3.0 not now\n")
        skip = queued(env, 4, srv.port, "max_connections = 1\n")
        run_idle(env, timeout=60)
        ds = deliveries(env)[skip:]
        check_eq(sorted(d["status"] for d in ds),
                 ["deferred", "sent", "sent", "sent"], "statuses")
        check_eq(len(srv.conns()), 1, "connections")
        check_eq(len(srv.messages()), 3, "messages kept by the server")
        check_eq(len(srv.events("pipelined")), 3, "dots with the next "
                 "message behind them")


def test_dot_timeout_riding_goes_elsewhere():
    """The first dot is never answered (timeout.datafinal): that message
    is deferred with the timeout; the one behind it is delivered on a
    new connection at its first try."""
    with rqlib.Env() as env:
        srv = faultlib.start(env, "on DOT 1 conn 1 stall 30\n")
        skip = queued(env, 3, srv.port, "max_connections = 1\n"
                      "timeout.datafinal = 2s\n")
        run_idle(env, timeout=60)
        ds = deliveries(env)[skip:]
        deferred = [d for d in ds if d["status"] == "deferred"]
        sent = [d for d in ds if d["status"] == "sent"]
        check_eq(len(deferred), 1, "deferred: %s" % [d["line"] for d in ds])
        check("timeout after end of DATA" in deferred[0]["reason"],
              deferred[0]["line"])
        check_eq(len(sent), 2, "sent")
        check_eq(set(d["tries"] for d in sent), {2}, "tries")
        check(srv.events("pipelined", conn=1),
              "conn 1: nothing rode behind the dot")


POSTFIX_MASTER = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
anvil     unix  -       -       n       -       1       anvil
postlog   unix-dgram n  -       n       -       1       postlogd
"""

POSTFIX_MAIN = """\
compatibility_level = 3.6
queue_directory = {dir}/queue
data_directory = {dir}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = receiver.test
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_recipient_restrictions = permit_mynetworks, reject
# what it receives stays on hold: counted, never delivered
smtpd_data_restrictions = check_client_access static:HOLD
smtpd_forbid_unauth_pipelining = yes
smtpd_discard_ehlo_keywords =
in_flow_delay = 0
queue_minfree = 0
biff = no
maillog_file_prefixes = {dir}
maillog_file = {dir}/maillog
"""


def maillog(d):
    with open(os.path.join(d, "maillog"), errors="replace") as f:
        return f.read()


def test_postfix_smtpd_takes_it():
    """Postfix's smtpd, with smtpd_forbid_unauth_pipelining = yes (the
    default from 3.9: it hangs up on a client that pipelines where RFC
    2920 does not allow), takes every message, each once."""
    postfix = shutil.which("postfix") or "/usr/sbin/postfix"
    n = 20 if SANITIZE else 60
    with rqlib.Env() as env:
        # Postfix's daemons, as user postfix, must reach it: not under
        # the test's private (0700) directory
        d = tempfile.mkdtemp(prefix="relayq-test-postfix-")
        os.chmod(d, 0o755)
        for sub in ("conf", "data", "queue"):
            os.makedirs(os.path.join(d, sub))
        port = rqlib.free_port()
        with open(os.path.join(d, "conf", "main.cf"), "w") as f:
            f.write(POSTFIX_MAIN.format(dir=d))
        with open(os.path.join(d, "conf", "master.cf"), "w") as f:
            f.write(POSTFIX_MASTER.format(port=port))
        os.chown(os.path.join(d, "data"), pwd.getpwnam("postfix").pw_uid,
                 grp.getgrnam("postfix").gr_gid)
        conf = os.path.join(d, "conf")
        r = subprocess.run([postfix, "-c", conf, "start"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        check_eq(r.returncode, 0, "postfix start: %s" % r.stdout.decode())
        try:
            rqlib.wait_port(port)
            skip = queued(env, n, port, "max_connections = 2\n")
            run_idle(env, timeout=120)

            def held():
                return sum(len(files) for _, _, files in
                           os.walk(os.path.join(d, "queue", "hold")))
            rqlib.wait_for(lambda: held() >= n, 30,
                           what="%d messages on hold" % n)
            time.sleep(0.5)
            check_eq(held(), n, "messages Postfix queued")
            ds = deliveries(env)[skip:]
            check_eq(len(ds), n, "delivery lines")
            check_eq(set(d_["status"] for d_ in ds), {"sent"}, "statuses")
            # (wait_port's probe connected and left: "after CONNECT")
            log = [x for x in maillog(d).splitlines()
                   if "after CONNECT" not in x]
            for bad in ("pipelining", "synchronization", "lost connection"):
                check(not [x for x in log if bad in x],
                      "Postfix logged %r:\n%s" % (bad, "\n".join(
                          x for x in log if bad in x)[:2000]))
            # the sessions that carried mail (a connection whose message
            # another one took before it greeted only says QUIT)
            sessions = [x for x in log if "disconnect from" in x and
                        " mail=" in x]
            check(sessions, "no session with mail in:\n" + "\n".join(log))
            mails = 0
            for x in sessions:
                check(" rset=" not in x, "RSET between messages: " + x)
                mails += int(re.search(r" mail=(\d+)", x).group(1))
            check_eq(mails, n, "MAIL FROM commands Postfix took")
            # the guard is on: EHLO and NOOP in one write is refused
            with socket.create_connection(("127.0.0.1", port), 10) as c:
                c.recv(1000)
                c.sendall(b"EHLO x.test\r\nNOOP\r\n")
                time.sleep(0.5)
                c.recv(4000)
            rqlib.wait_for(lambda: "improper command pipelining" in
                           maillog(d), 10, what="Postfix's refusal of "
                           "pipelining after EHLO")
        finally:
            subprocess.run([postfix, "-c", conf, "stop"],
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    rqlib.main(globals())
