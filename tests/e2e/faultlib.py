"""faultlib - drive faultsmtp, relayq's scriptable fault-injecting SMTP
server (tests/faultsmtp), from end-to-end tests.

    import faultlib
    with rqlib.Env() as env:
        srv = faultlib.start(env, '''
            ehlo PIPELINING SIZE 1000000 DSN 8BITMIME ENHANCEDSTATUSCODES
            on RCPT 2 reply 451 4.3.0 try again later
            rcpt bad@x.test reply 550 5.1.1 no such user
            on DOT conn 1 stall 30
        ''')
        ... point the client at 127.0.0.1:srv.port ...
        msgs = srv.messages()      # [(env_lines, raw_bytes), ...]
        evs = srv.events()         # parsed event log
        srv.stop()                 # or env.close() stops it

The script language is documented atop tests/faultsmtp/fault_script.c.
make_cert() builds a test CA and a server certificate with the openssl
command line tool (also handy for aiosmtpd TLS tests).
"""
import json
import os
import re
import select
import socket
import subprocess
import time

import rqlib

BIN = os.path.join(rqlib.BUILD, "tests", "faultsmtp", "faultsmtp")

_seq = [0]


def write_script(env, text):
    """Writes script TEXT into env.dir (leading blanks on a line are
    ignored by faultsmtp, so indented triple-quoted text is fine); returns
    its path."""
    _seq[0] += 1
    path = os.path.join(env.dir, "fault-%d.script" % _seq[0])
    with open(path, "w") as f:
        f.write(text if text.endswith("\n") else text + "\n")
    return path


def _openssl(*args, cwd=None):
    p = subprocess.run(["openssl"] + list(args), cwd=cwd,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if p.returncode != 0:
        raise rqlib.Fail("openssl %s failed: %s" %
                         (args[0], p.stderr.decode(errors="replace")))


def make_cert(dir, cn, sans=None, ca=None):
    """Creates a test CA (unless ca=(ca_cert, ca_key) is given) and a
    server key and certificate for CN signed by it, with subjectAltName
    SANS (default [CN]; entries that look like IP addresses become IP:
    entries).  Returns (ca_cert, cert, key) paths inside DIR."""
    os.makedirs(dir, exist_ok=True)
    tag = re.sub(r"[^A-Za-z0-9.-]", "_", cn)
    if ca is None:
        ca_cert = os.path.join(dir, "ca-%s.pem" % tag)
        ca_key = os.path.join(dir, "ca-%s.key" % tag)
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes",
                 "-keyout", ca_key, "-out", ca_cert, "-days", "2",
                 "-subj", "/CN=relayq test CA %s" % tag,
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    else:
        ca_cert, ca_key = ca
    key = os.path.join(dir, "%s.key" % tag)
    csr = os.path.join(dir, "%s.csr" % tag)
    cert = os.path.join(dir, "%s.pem" % tag)
    ext = os.path.join(dir, "%s.ext" % tag)
    alt = []
    for s in (sans or [cn]):
        if re.match(r"^[0-9.]+$", s) or ":" in s:
            alt.append("IP:" + s)
        else:
            alt.append("DNS:" + s)
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:FALSE\n"
                "keyUsage=digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\n"
                "subjectAltName=%s\n" % ",".join(alt))
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
             "-out", csr, "-subj", "/CN=%s" % cn)
    _openssl("x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key,
             "-CAcreateserial", "-out", cert, "-days", "2",
             "-extfile", ext)
    return ca_cert, cert, key


class FaultServer:
    """A running faultsmtp: .port (127.0.0.1), .port6 ([::1], if ipv6),
    .dump_dir, .event_log, .ca (with tls), .proc."""

    def __init__(self, env, proc, ports, dump_dir, event_log, ca, stderr):
        self.env = env
        self.proc = proc
        self.port = ports[0]
        self.port6 = ports[1] if len(ports) > 1 else None
        self.dump_dir = dump_dir
        self.event_log = event_log
        self.ca = ca
        self.stderr_path = stderr

    def events(self, event=None, conn=None):
        """The event log as a list of dicts {t, conn, event, data}; data
        is a str whose .encode("latin-1") gives the raw bytes.  Optional
        filters by event name and connection number."""
        out = []
        try:
            with open(self.event_log) as f:
                for line in f:
                    if not line.endswith("\n"):
                        break  # a line being written
                    e = json.loads(line)
                    if event is not None and e["event"] != event:
                        continue
                    if conn is not None and e["conn"] != conn:
                        continue
                    out.append(e)
        except FileNotFoundError:
            pass
        return out

    def cmds(self, conn=None):
        """The command lines received (the final dot shows as ".")."""
        return [e["data"] for e in self.events("cmd", conn)]

    def conns(self):
        """Numbers of the connections accepted so far."""
        return [e["conn"] for e in self.events("connect")]

    def closed(self, conn):
        """The close event of connection CONN, or None while open."""
        ev = self.events("close", conn)
        return ev[0] if ev else None

    def wait_closed(self, conn, timeout=30):
        return rqlib.wait_for(lambda: self.closed(conn), timeout,
                              what="faultsmtp connection %d to close" % conn)

    def max_concurrent(self):
        """The largest number of connections the client held at the same
        time.  A connection counts from its connect until its QUIT (or
        its close, without one): after QUIT the client closes as soon as
        the 221 comes, while the server logs its own close only once
        its output is flushed (10 ms on), so a new connection the
        client opens at once may be logged before it."""
        open_ = set()
        best = 0
        for e in self.events():
            if e["event"] == "connect":
                open_.add(e["conn"])
                best = max(best, len(open_))
            elif e["event"] == "close" or (
                    e["event"] == "cmd" and
                    e["data"].strip().upper() == "QUIT"):
                open_.discard(e["conn"])
        return best

    def messages(self):
        """Accepted messages in (connection, sequence) order, each as
        (env_lines, raw_bytes): the MAIL FROM and RCPT TO lines as
        received, and the DATA bytes as received (dot-stuffed, with the
        final CRLF.CRLF)."""
        if not self.dump_dir or not os.path.isdir(self.dump_dir):
            return []
        keys = []
        for n in os.listdir(self.dump_dir):
            m = re.match(r"^(\d+)-(\d+)\.eml$", n)
            if m:
                keys.append((int(m.group(1)), int(m.group(2))))
        out = []
        for c, s in sorted(keys):
            base = os.path.join(self.dump_dir, "%d-%d" % (c, s))
            with open(base + ".eml", "rb") as f:
                raw = f.read()
            with open(base + ".env") as f:
                env_lines = f.read().splitlines()
            out.append((env_lines, raw))
        return out

    def wait_messages(self, n, timeout=30):
        """Waits until at least N messages were accepted; returns them."""
        rqlib.wait_for(lambda: len(self.messages()) >= n, timeout,
                       what="%d messages at faultsmtp" % n)
        return self.messages()

    def stderr(self):
        try:
            with open(self.stderr_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stop(self):
        """Stops the server (SIGTERM); returns its exit status, raising
        Fail if it did not exit cleanly (a crash or a sanitizer report)."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            rc = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise rqlib.Fail("faultsmtp did not stop on SIGTERM")
        if self.proc.stdout:
            self.proc.stdout.close()
        if rc != 0:
            raise rqlib.Fail("faultsmtp exited %d: %s" %
                             (rc, self.stderr()[-3000:]))
        return rc


class _Blackhole:
    """A 127.0.0.1 port whose listen queue is full and never accepted from,
    so a new connect() hangs (its SYNs are dropped): the way to test a
    connect timeout on loopback.  Looks like a process to rqlib.Env, so
    env.close() closes it."""

    stdout = stderr = None

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.port = self.listener.getsockname()[1]
        self.fillers = []
        # listen(0) queues one connection; fill it (and check it is full)
        for _ in range(8):
            s = socket.socket()
            s.settimeout(0.3)
            try:
                s.connect(("127.0.0.1", self.port))
                self.fillers.append(s)
            except OSError:
                s.close()
                return
        raise rqlib.Fail("blackhole: the listen queue never filled")

    def poll(self):
        return None if self.listener else 0

    def close(self):
        for s in self.fillers:
            s.close()
        self.fillers = []
        if self.listener:
            self.listener.close()
            self.listener = None

    def send_signal(self, sig):
        self.close()

    def wait(self, timeout=None):
        self.close()
        return 0

    kill = close


def blackhole(env):
    """A loopback port where connect() hangs; .port, .close()."""
    b = _Blackhole()
    env.procs.append(b)
    return b


def start(env, script, dump=True, tls=False, ipv6=False, events=True,
          cert=None, args=()):
    """Starts faultsmtp on 127.0.0.1 (and [::1] with ipv6) on free ports.

    SCRIPT is script text, or the path of a script file.  dump: keep
    messages (FaultServer.messages()).  tls: offer STARTTLS with a
    certificate for "localhost" from make_cert() (server.ca is the CA
    file); or pass cert=(cert_path, key_path) for your own.  The server
    is stopped by env.close() if not before."""
    if "\n" in script or not os.path.exists(script):
        script = write_script(env, script)
    _seq[0] += 1
    tag = "fault%d" % _seq[0]
    cmd = [BIN, "-l", "127.0.0.1:0"]
    if ipv6:
        cmd += ["-l", "[::1]:0"]
    cmd += ["-s", script]
    dump_dir = event_log = ca = None
    if dump:
        dump_dir = os.path.join(env.dir, tag + "-dump")
        cmd += ["-d", dump_dir]
    if events:
        event_log = os.path.join(env.dir, tag + "-events.jsonl")
        cmd += ["-e", event_log]
    if tls and cert is None:
        ca, c, k = make_cert(os.path.join(env.dir, tag + "-tls"),
                             "localhost", ["localhost", "127.0.0.1", "::1"])
        cert = (c, k)
    if cert:
        cmd += ["--cert", cert[0], "--key", cert[1]]
    cmd += list(args)
    errpath = os.path.join(env.dir, tag + ".stderr")
    with open(errpath, "wb") as err:
        p = env.spawn(cmd, stdout=subprocess.PIPE, stderr=err)
    # "ready P1 [P2]" once listening
    line = b""
    end = time.time() + 20
    while not line.endswith(b"\n"):
        left = end - time.time()
        if left <= 0 or p.poll() is not None:
            raise rqlib.Fail("faultsmtp did not start: %r %s" %
                             (line, open(errpath, errors="replace").read()))
        r, _, _ = select.select([p.stdout], [], [], left)
        if r:
            b = os.read(p.stdout.fileno(), 1)
            if not b:
                continue
            line += b
    words = line.split()
    if not words or words[0] != b"ready":
        raise rqlib.Fail("faultsmtp said %r" % line)
    ports = [int(w) for w in words[1:]]
    return FaultServer(env, p, ports, dump_dir, event_log, ca, errpath)
