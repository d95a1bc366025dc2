"""test_smtp_lib - helpers for the smtp client's end-to-end tests
(test_smtp_*.py): run the smtpc driver (tests/smtp/smtpc.c) and parse its
JSON lines; start smtp-sink.  Not a test itself.
"""
import json
import os
import subprocess

import rqlib

SMTPC = os.path.join(rqlib.BUILD, "tests", "smtp", "smtpc")
SANITIZE = os.environ.get("RELAYQ_SANITIZE") == "1"


class Run:
    """One smtpc run: .results (one dict per message, in completion
    order), .summary, .rc, .stderr, .wall (seconds)."""

    def __init__(self, proc, out, err, wall):
        self.rc = proc.returncode
        self.stderr = err.decode(errors="replace")
        self.results = []
        self.summary = None
        for line in out.decode(errors="replace").splitlines():
            d = json.loads(line)
            if "summary" in d:
                self.summary = d["summary"]
            else:
                self.results.append(d)
        self.results.sort(key=lambda r: r["msg"])
        self.wall = wall

    def rcpts(self, i=0):
        return self.results[i]["rcpts"]

    def one(self):
        """The only recipient of the only message."""
        rqlib.check_eq(len(self.results), 1, "messages")
        rqlib.check_eq(len(self.results[0]["rcpts"]), 1, "recipients")
        return self.results[0]["rcpts"][0]


def smtpc(env, addrs, rcpts=("rcpt@example.org",), conf="", args=(),
          timeout=120, msg=None, check_rc=True):
    """Runs smtpc against ADDRS ("IP:PORT", "[::1]:PORT", "NAME@IP:PORT")
    for RCPTS with the config ENV's base + CONF; MSG (bytes) is the
    message.  Returns a Run."""
    import time
    env.write_conf(conf)
    cmd = [SMTPC, "-c", env.conf]
    for a in addrs:
        cmd += ["-a", a]
    for r in rcpts:
        cmd += ["-r", r]
    if msg is not None:
        path = os.path.join(env.dir, "smtpc-msg.eml")
        with open(path, "wb") as f:
            f.write(msg)
        cmd += ["-m", path]
    cmd += list(args)
    t0 = time.time()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    run = Run(p, p.stdout, p.stderr, time.time() - t0)
    if check_rc and run.rc != 0:
        raise rqlib.Fail("smtpc exited %d: %s" % (run.rc, run.stderr[-3000:]))
    return run


def sink(env, opts=(), dump_dir=None):
    """Starts smtp-sink on a free 127.0.0.1 port (as nobody when root);
    returns (proc, port)."""
    port = rqlib.free_port()
    cmd = [rqlib.SMTP_SINK]
    if os.getuid() == 0:
        cmd += ["-u", "nobody"]
    cmd += list(opts)
    if dump_dir:
        os.makedirs(dump_dir, exist_ok=True)
        os.chmod(env.dir, 0o711)  # smtp-sink runs as nobody
        os.chmod(dump_dir, 0o777)
        cmd += ["-d", os.path.join(dump_dir, "%M%S.")]
    cmd += ["127.0.0.1:%d" % port, "256"]
    p = env.spawn(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    rqlib.wait_port(port)
    return p, port


def encode(msg):
    """What the client must put on the wire for MSG after DATA: CRLF line
    ends, dot-stuffing, the final dot."""
    out = bytearray()
    i, bol = 0, True
    while i < len(msg):
        c = msg[i:i + 1]
        if c in (b"\r", b"\n"):
            out += b"\r\n"
            i += 2 if msg[i:i + 2] == b"\r\n" else 1
            bol = True
            continue
        if bol and c == b".":
            out += b"."
        out += c
        bol = False
        i += 1
    if not bol:
        out += b"\r\n"
    return bytes(out) + b".\r\n"
