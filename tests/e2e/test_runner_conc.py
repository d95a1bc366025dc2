#!/usr/bin/python3
"""test_runner_conc - per-destination concurrency that finds the
receiver's limit (issue 18 item 5), end to end: the real relayq binary
against a listener of our own with a small listen backlog that accepts
slowly, as OpenSMTPD's listen(5) does under a burst.

Opening max_connections at once overflows such a listener's accept
queue: the kernel answers the surplus with SYN cookies and drops their
final ACKs, so the client holds connections the server never saw, each
with a message, until timeout.initial.  The runner must start a
destination at initial_destination_concurrency, grow it on success, and
a message waiting on a connection that has not greeted must be taken by
a session that becomes free.
"""
import os
import select
import socket
import threading
import time

import rqlib
import test_runner_lib as lib


class SlowListener:
    """An SMTP receiver on 127.0.0.1 with listen(BACKLOG) that accepts
    one connection every INTERVAL seconds, then speaks minimal SMTP
    (no PIPELINING) in a thread per connection; counts the messages."""

    def __init__(self, backlog=5, interval=0.05):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(backlog)
        self.port = self.sock.getsockname()[1]
        self.interval = interval
        self.lock = threading.Lock()
        self.rcpts = []
        self.accepted = 0
        self.stopping = False
        self.conns = []
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def _accept_loop(self):
        while not self.stopping:
            time.sleep(self.interval)
            r, _, _ = select.select([self.sock], [], [], 0)
            if not r:
                continue
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            with self.lock:
                self.accepted += 1
                self.conns.append(c)
            threading.Thread(target=self._session, args=(c,),
                             daemon=True).start()

    def _session(self, c):
        f = c.makefile("rb")
        try:
            c.sendall(b"220 slow.test ESMTP\r\n")
            rcpts = []
            while True:
                line = f.readline()
                if not line:
                    return
                cmd = line.strip().upper()
                if cmd.startswith(b"EHLO") or cmd.startswith(b"HELO"):
                    c.sendall(b"250 slow.test\r\n")
                elif cmd.startswith(b"MAIL"):
                    rcpts = []
                    c.sendall(b"250 2.1.0 Ok\r\n")
                elif cmd.startswith(b"RCPT"):
                    addr = line.split(b":", 1)[1].strip().split(b" ")[0]
                    rcpts.append(addr.strip(b"<>").decode())
                    c.sendall(b"250 2.1.5 Ok\r\n")
                elif cmd == b"DATA":
                    c.sendall(b"354 go ahead\r\n")
                    while True:
                        d = f.readline()
                        if not d or d in (b".\r\n", b".\n"):
                            break
                    with self.lock:
                        self.rcpts += rcpts
                    c.sendall(b"250 2.0.0 Ok: queued\r\n")
                elif cmd == b"QUIT":
                    c.sendall(b"221 2.0.0 Bye\r\n")
                    return
                else:  # RSET, NOOP
                    c.sendall(b"250 2.0.0 Ok\r\n")
        except OSError:
            return
        finally:
            f.close()
            c.close()

    def received(self):
        with self.lock:
            return list(self.rcpts)

    def close(self):
        self.stopping = True
        self.thread.join(5)
        self.sock.close()
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def slow_accept(extra):
    """200 messages to a listener with backlog 5 accepting every 50 ms
    all arrive within seconds, without a single greeting timeout; the
    greeting timeout is 30 s here, so one message bound to a connection
    the server never saw would show as a delay of 30 s (and a deferral).
    EXTRA: more config."""
    n = 200
    srv = SlowListener(backlog=5, interval=0.05)
    try:
        with rqlib.Env() as env:
            env.write_conf(
                "relayhost = [127.0.0.1]:%d\n"
                "timeout.initial = 30s\n"
                "max_connections = 20\n%s" % (srv.port, extra))
            want = set()
            for i in range(n):
                rcpt = "user%03d@dest.test" % i
                want.add(rcpt)
                lib.drop(env, rcpt)
            t0 = time.time()
            p = env.start("run", "--exit-when-idle")
            rqlib.wait_for(lambda: len(srv.received()) >= n
                           or p.poll() is not None, 60,
                           what="all messages at the listener")
            took = time.time() - t0
            rqlib.wait_for(lambda: p.poll() is not None, 60,
                           what="relayq run to exit")
            log = env.log_text()
            got = srv.received()
            missing = sorted(want - set(got))
            rqlib.check(not missing, "%d of %d messages not at the "
                        "listener after %.1f s: %s; log: %s" % (
                            len(missing), n, took, " ".join(missing[:20]),
                            "\n".join(ln for ln in log.splitlines()
                                      if "timeout" in ln)[:1500]))
            rqlib.check_eq(len(got), n, "messages at the listener")
            sent = [d for d in lib.deliveries(env) if d["status"] == "sent"]
            rqlib.check_eq(len(sent), n, "status=sent lines")
            rqlib.check("timeout" not in log,
                        "a timeout in the log: %s" % "\n".join(
                            ln for ln in log.splitlines()
                            if "timeout" in ln)[:2000])
            # well before timeout.initial: no message waited on a
            # connection the server never accepted (a few seconds here;
            # generous for a loaded machine and sanitizers)
            rqlib.check(took < 20, "took %.1f s for %d messages" % (took, n))
            rqlib.check_eq(p.returncode, 0, "relayq run exit status")
    finally:
        srv.close()


def test_slow_accept_small_backlog():
    """The defaults: the window starts at 5 and grows as the receiver
    keeps up, so its accept queue never overflows."""
    slow_accept("")


def test_slow_accept_burst():
    """The window at max_connections from the start (a burst of 20
    connects into a backlog of 5): the messages bound to connections the
    server never saw are taken by sessions that become free, so none
    waits for its greeting timeout."""
    slow_accept("initial_destination_concurrency = 20\n")


if __name__ == "__main__":
    rqlib.main(globals())
