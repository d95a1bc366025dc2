"""clusterlib - helpers of the cluster's end-to-end tests (test_cluster.py):
a real redis-server on 127.0.0.1 and a free port, a counting SMTP sink,
and relayq nodes, each with its own directory.

The sink counts concurrent sessions exactly: a session counts from its
accept to its close, and before it accepts a new connection it handles
everything the open ones have sent (their QUIT, their EOF): a node
gives a lease back only after its connection closed, so the close is
on the sink's sockets before the next node's SYN.  It records the time
of every MAIL FROM (messages per second) and the subject of every
message it took.  The time is the kernel's, of the segment's arrival
(SO_TIMESTAMPNS), not the moment this thread got to it: a sink thread
stalled on a loaded machine does not bunch the messages it reads late
(the sink offers no PIPELINING, so a read holds one command).

Not a test itself (tests/e2e/cluster.cmake registers test_cluster.py).
"""
import heapq
import os
import re
import selectors
import signal
import socket
import struct
import subprocess
import threading
import time

import rqlib

REDIS_SERVER = "/usr/bin/redis-server"
REDIS_CLI = "/usr/bin/redis-cli"
SO_TIMESTAMPNS = 35     # Linux; Python's socket module does not name it


class Redis:
    """A throwaway redis-server: start(), kill(sig), cli(...)."""

    def __init__(self, env, port=None, password=None):
        self.env = env
        self.port = port or rqlib.free_port()
        self.password = password
        self.dir = os.path.join(env.dir, "redis")
        os.makedirs(self.dir, exist_ok=True)
        self.proc = None
        self.start()

    def start(self):
        """Starts it (empty: no dump, no AOF) and waits for PING."""
        cmd = [REDIS_SERVER, "--port", str(self.port), "--bind",
               "127.0.0.1", "--save", "", "--appendonly", "no", "--dir",
               self.dir, "--loglevel", "warning"]
        if self.password:
            cmd += ["--requirepass", self.password]
        self.proc = self.env.spawn(cmd, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        rqlib.wait_for(lambda: self.cli("PING") == "PONG", 10,
                       what="redis-server")

    def kill(self, sig=signal.SIGKILL):
        self.proc.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            self.proc.wait(10)

    def cli(self, *args):
        """redis-cli ARGS; its output, stripped ("" when it fails)."""
        cmd = [REDIS_CLI, "-p", str(self.port)]
        if self.password:
            cmd += ["--no-auth-warning", "-a", self.password]
        try:
            p = subprocess.run(cmd + list(args), stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, timeout=5)
        except subprocess.TimeoutExpired:
            return ""
        return p.stdout.decode(errors="replace").strip()


class Sink:
    """An SMTP sink on 127.0.0.1 (a thread): counts sessions exactly.

    mode "ok" takes every message (its reply to the final dot after
    delay seconds); mode "421" greets with 421 and closes."""

    def __init__(self, delay=0.0, mode="ok"):
        self.delay = delay
        self.mode = mode
        self.lock = threading.Lock()
        self.cur = self.peak = self.accepted = 0
        self.mails = []         # arrival of each MAIL FROM (unix time)
        self.subjects = []      # Subject: of each message taken
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(256)
        self.lsock.setblocking(False)
        self.port = self.lsock.getsockname()[1]
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.lsock, selectors.EVENT_READ, None)
        self.conns = {}
        self.timers = []
        self.seq = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    # -- the loop --

    def _loop(self):
        while not self.stopping:
            timeout = 0.05
            if self.timers:
                timeout = max(0.0, min(timeout,
                                       self.timers[0][0] - time.monotonic()))
            for key, _ in self.sel.select(timeout):
                if key.data is None:
                    self._accept()
                elif key.fileobj in self.conns:
                    self._read(key.fileobj)
            now = time.monotonic()
            while self.timers and self.timers[0][0] <= now:
                _, _, s, text = heapq.heappop(self.timers)
                if s in self.conns:
                    self._send(s, text)
        for s in list(self.conns):
            self._close(s)
        self.lsock.close()

    def _accept(self):
        # What the open sessions sent first (their QUIT, their EOF):
        # a session that ended before this connect is not counted with
        # it.
        live = list(self.conns)
        if live:
            ready = selectors.DefaultSelector()
            for s in live:
                ready.register(s, selectors.EVENT_READ)
            for key, _ in ready.select(0):
                if key.fileobj in self.conns:
                    self._read(key.fileobj)
            ready.close()
        while True:
            try:
                s, _ = self.lsock.accept()
            except BlockingIOError:
                return
            s.setblocking(False)
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            with self.lock:
                self.cur += 1
                self.accepted += 1
                self.peak = max(self.peak, self.cur)
            if self.mode == "421":
                self.conns[s] = None
                self._send(s, "421 4.3.2 sink: service not available\r\n")
                self._close(s)
                continue
            self.conns[s] = {"buf": b"", "data": None}
            self.sel.register(s, selectors.EVENT_READ, "c")
            self._send(s, "220 sink ESMTP\r\n")

    def _send(self, s, text):
        try:
            s.sendall(text.encode())
        except OSError:
            self._close(s)

    def _close(self, s):
        if s not in self.conns:
            return
        if self.conns[s] is not None:
            try:
                self.sel.unregister(s)
            except (KeyError, ValueError):
                pass
        del self.conns[s]
        s.close()
        with self.lock:
            self.cur -= 1

    def _read(self, s):
        try:
            b, anc, _, _ = s.recvmsg(65536, socket.CMSG_SPACE(16))
        except BlockingIOError:
            return
        except OSError:
            b, anc = b"", []
        if not b:
            self._close(s)
            return
        st = self.conns[s]
        st["ts"] = time.time()
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = struct.unpack("qq", data[:16])
                st["ts"] = sec + nsec / 1e9
        st["buf"] += b
        while s in self.conns:
            i = st["buf"].find(b"\n")
            if i < 0:
                break
            line = st["buf"][:i + 1]
            st["buf"] = st["buf"][i + 1:]
            self._line(s, st, line)

    def _line(self, s, st, line):
        if st["data"] is not None:
            if line in (b".\r\n", b".\n"):
                m = re.search(rb"(?mi)^Subject: *(.*?)\r?$", st["data"])
                with self.lock:
                    self.subjects.append(
                        m.group(1).decode(errors="replace") if m else "")
                st["data"] = None
                self.seq += 1
                heapq.heappush(self.timers, (time.monotonic() + self.delay,
                                             self.seq, s,
                                             "250 2.0.0 Ok: queued\r\n"))
            else:
                st["data"] += line
            return
        cmd = line[:4].upper()
        if cmd == b"EHLO":
            self._send(s, "250-sink\r\n250 8BITMIME\r\n")
        elif cmd == b"HELO":
            self._send(s, "250 sink\r\n")
        elif cmd == b"MAIL":
            with self.lock:
                self.mails.append(st["ts"])
            self._send(s, "250 2.1.0 Ok\r\n")
        elif cmd == b"RCPT":
            self._send(s, "250 2.1.5 Ok\r\n")
        elif cmd == b"DATA":
            st["data"] = b""
            self._send(s, "354 End data with <CR><LF>.<CR><LF>\r\n")
        elif cmd in (b"RSET", b"NOOP"):
            self._send(s, "250 2.0.0 Ok\r\n")
        elif cmd == b"QUIT":
            self._send(s, "221 2.0.0 Bye\r\n")
            self._close(s)
        else:
            self._send(s, "502 5.5.2 Error: command not recognized\r\n")

    # -- for the test --

    def count(self):
        with self.lock:
            return len(self.subjects)

    def stats(self):
        with self.lock:
            return self.cur, self.peak, self.accepted

    def stop(self):
        self.stopping = True
        self.thread.join(10)


def drop_many(env, n, tag, domain="dst.test"):
    """Writes N messages into env's spool (Subject TAG-i, one recipient
    each) before the node runs."""
    for d in ("incoming", "tmp"):
        os.makedirs(os.path.join(env.spool, d), exist_ok=True)
    for i in range(n):
        name = "%s-%05d" % (tag, i)
        tmp = os.path.join(env.spool, "tmp", name)
        with open(tmp, "w") as f:
            f.write("X-Sender: <s@src.test>\nX-Receiver: <r%d@%s>\n"
                    "From: s@src.test\nTo: r%d@%s\nSubject: %s\n\n"
                    "body of %s\n" % (i, domain, i, domain, name, name))
        os.rename(tmp, os.path.join(env.spool, "incoming", name))


def node_conf(name, sink_port, redis=None, extra=""):
    """The config lines of node NAME: relayhost = the sink, the cluster
    (unless REDIS is None), then EXTRA."""
    text = ("relayhost = [127.0.0.1]:%d\ntls = none\nretry.min = 1s\n"
            "retry.max = 2s\n" % sink_port)
    if redis is not None:
        text += ("cluster_redis = 127.0.0.1:%d\ncluster_node = %s\n"
                 % (redis.port, name))
    return text + extra


def start_node(env, idle=True):
    """Starts `relayq run` (--exit-when-idle when IDLE)."""
    args = ["run", "--exit-when-idle"] if idle else ["run"]
    return env.start(*args)


def wait_exit(p, timeout, what, env=None):
    """Waits for node process P; checks it exited 0.  On a timeout the
    tail of ENV's log and its queue are shown (what kept it busy)."""
    try:
        rc = p.wait(timeout)
    except subprocess.TimeoutExpired:
        if env is not None:
            q = env.run("mailq", timeout=30)
            v = env.run("cluster", timeout=30)
            print("  %s log tail:\n%s\n  %s mailq:\n%s\n  cluster:\n%s" % (
                what, env.log_text()[-6000:], what,
                q.stdout.decode(errors="replace")[-3000:],
                v.stdout.decode(errors="replace")[-3000:]))
        raise rqlib.Fail("%s did not finish within %ds" % (what, timeout))
    if rc != 0:
        raise rqlib.Fail("%s exited %d: %s" % (
            what, rc, p.stderr.read().decode(errors="replace")[-2000:]))


def log_count(env, pattern):
    return len(re.findall(pattern, env.log_text()))
