"""rqlib - shared helpers for relayq's end-to-end tests.

Every test script runs the real relayq binary (RELAYQ_BIN, set by ctest)
against a real LMDB in a temporary directory and real servers bound to
127.0.0.1.  Run scripts with /usr/bin/python3 (Debian's python3-* packages
such as aiosmtpd import only there).

A script defines functions named test_*, and ends with
    if __name__ == "__main__":
        rqlib.main(globals())
which runs them in file order and prints "N passed, N failed".
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

BIN = os.environ.get("RELAYQ_BIN") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build", "tools", "relayq")
SRC = os.environ.get("RELAYQ_SRC") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("RELAYQ_BUILD") or os.path.join(SRC, "build")
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"


class Fail(Exception):
    pass


def check(cond, what="check failed"):
    if not cond:
        raise Fail(what)


def check_eq(got, want, what=""):
    if got != want:
        raise Fail("%s: got %r, want %r" % (what, got, want))


def free_port():
    """A free TCP port on 127.0.0.1 (bound then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for(pred, timeout=10.0, step=0.02, what="condition"):
    """Polls pred() until it is true; raises Fail after timeout seconds."""
    end = time.time() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.time() > end:
            raise Fail("timed out waiting for %s" % what)
        time.sleep(step)


def wait_port(port, host="127.0.0.1", timeout=10.0):
    def up():
        try:
            socket.create_connection((host, port), 0.2).close()
            return True
        except OSError:
            return False
    wait_for(up, timeout, what="port %d" % port)


class Env:
    """A temporary relayq installation: config, spool tree and queue dir.

    Env(extra="key = value\\n...") writes relayq.conf with spool_dir,
    queue_dir and log_file inside the temporary directory, plus extra.
    """

    def __init__(self, extra="", keep=False):
        self.dir = tempfile.mkdtemp(prefix="relayq-test-")
        self.spool = os.path.join(self.dir, "spool")
        self.queue = os.path.join(self.dir, "queue")
        self.log = os.path.join(self.dir, "relayq.log")
        self.conf = os.path.join(self.dir, "relayq.conf")
        self.keep = keep
        self.procs = []
        self.write_conf(extra)

    def write_conf(self, extra=""):
        with open(self.conf, "w") as f:
            f.write("spool_dir = %s\nqueue_dir = %s\nlog_file = %s\n"
                    "hostname = relayq.test\n" %
                    (self.spool, self.queue, self.log))
            f.write(extra)

    def run(self, *args, input=None, check_rc=None, timeout=60, env=None):
        """Runs relayq -c CONF ARGS; returns CompletedProcess (bytes)."""
        e = dict(os.environ)
        if env:
            e.update(env)
        cmd = [BIN, args[0], "-c", self.conf] + list(args[1:])
        if isinstance(input, str):
            input = input.encode()
        p = subprocess.run(cmd, input=input, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout, env=e)
        if check_rc is not None and p.returncode != check_rc:
            raise Fail("%s exited %d, want %d; stderr: %s" %
                       (" ".join(cmd), p.returncode, check_rc,
                        p.stderr.decode(errors="replace")[-2000:]))
        return p

    def start(self, *args, **kw):
        """Starts relayq -c CONF ARGS in the background (e.g. "run")."""
        cmd = [BIN, args[0], "-c", self.conf] + list(args[1:])
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, **kw)
        self.procs.append(p)
        return p

    def spawn(self, cmd, **kw):
        """Starts any helper process; stopped by close()."""
        p = subprocess.Popen(cmd, **kw)
        self.procs.append(p)
        return p

    def log_text(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            for s in (p.stdout, p.stderr):
                if s:
                    s.close()
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def unescape(s):
    """Reverses the daemon's escaping of names in logs and .reason files
    (\\xNN for bytes outside printable ASCII, \\\\ for a backslash)."""
    out = bytearray()
    b = s.encode()
    i = 0
    while i < len(b):
        if b[i:i + 2] == b"\\\\":
            out += b"\\"
            i += 2
        elif b[i:i + 2] == b"\\x" and i + 4 <= len(b):
            out.append(int(b[i + 2:i + 4], 16))
            i += 4
        else:
            out.append(b[i])
            i += 1
    return bytes(out)


def bad_files(env):
    """The files in spool bad/, by original name (bytes): a dict of
    {name: [(path of the bad file, reason text), ...]}.  The daemon picks the
    names in bad/; each NAME.reason says why on its first line, then
    `name: ORIGINAL` (escaped) and `uid: N`."""
    bad = os.path.join(env.spool, "bad")
    out = {}
    try:
        names = os.listdir(bad)
    except FileNotFoundError:
        return out
    for n in names:
        if not n.endswith(".reason"):
            continue
        try:
            with open(os.path.join(bad, n), errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        orig = None
        for line in text.splitlines():
            if line.startswith("name: "):
                orig = unescape(line[6:])
        path = os.path.join(bad, n[:-len(".reason")])
        if orig is not None and os.path.lexists(path):
            out.setdefault(orig, []).append((path, text))
    return out


def smtp_sink(env, port=None, opts=(), dump_dir=None, backlog=256):
    """Starts Postfix's smtp-sink on 127.0.0.1; returns (proc, port).

    With dump_dir, each message is written there (smtp-sink -d)."""
    port = port or free_port()
    cmd = [SMTP_SINK] + list(opts)
    if os.geteuid() == 0 and "-u" not in opts:
        cmd += ["-u", "nobody"]     # smtp-sink refuses to run as root
    if dump_dir:
        os.makedirs(dump_dir, exist_ok=True)
        os.chmod(dump_dir, 0o777)
        cmd += ["-d", os.path.join(dump_dir, "%M%S.")]
    cmd += ["127.0.0.1:%d" % port, str(backlog)]
    p = env.spawn(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_port(port)
    return p, port


def main(ns):
    """Runs every test_* function of module namespace ns, in order."""
    names = [n for n in ns if n.startswith("test_") and callable(ns[n])]
    only = sys.argv[1:]
    passed = failed = 0
    for n in names:
        if only and n not in only:
            continue
        t0 = time.time()
        try:
            ns[n]()
            passed += 1
            print("ok   %s (%.1fs)" % (n, time.time() - t0), flush=True)
        except Exception:
            failed += 1
            print("FAIL %s (%.1fs)" % (n, time.time() - t0), flush=True)
            traceback.print_exc()
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed or passed == 0 else 0)
