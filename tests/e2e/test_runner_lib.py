"""test_runner_lib - helpers shared by the runner's end-to-end tests
(test_runner*.py): spool drops, smtp-sink with dumps on any loopback
address, delivery-log parsing, daemon start/stop.

Not a test itself (tests/e2e/runner.cmake registers the test_runner_*
scripts that are)."""
import os
import re
import signal
import subprocess
import time

import rqlib

SANITIZE = os.environ.get("RELAYQ_SANITIZE") == "1"

_seq = [0]


def drop(env, rcpts, sender="sender@src.test", subject=None, body=None,
         priority=None, headers=()):
    """Writes a message into spool/tmp and renames it into incoming/;
    returns (name, body bytes after the header section)."""
    _seq[0] += 1
    n = _seq[0]
    for d in ("incoming", "tmp"):
        os.makedirs(os.path.join(env.spool, d), exist_ok=True)
    if isinstance(rcpts, str):
        rcpts = [rcpts]
    subject = subject or "msg %d" % n
    body = body if body is not None else "body of message %d\n" % n
    lines = ["X-Sender: <%s>" % sender]
    lines += ["X-Receiver: <%s>" % r for r in rcpts]
    lines += ["From: %s" % (sender or "MAILER-DAEMON"),
              "To: %s" % ", ".join(rcpts), "Subject: %s" % subject]
    if priority:
        lines.append("Priority: %s" % priority)
    lines += list(headers)
    text = "\n".join(lines) + "\n\n" + body
    name = "m%06d" % n
    tmp = os.path.join(env.spool, "tmp", name)
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, os.path.join(env.spool, "incoming", name))
    return name, body.replace("\n", "\r\n").encode()


def sink(env, addr="127.0.0.1", port=None, dump=True, opts=(),
         one_file=False):
    """Starts Postfix's smtp-sink on ADDR:PORT (any 127/8 address);
    returns (proc, port, dump_dir or None).  With one_file, every
    transaction is appended to dump_dir/all (-D: much cheaper than a file
    per message) instead."""
    port = port or rqlib.free_port()
    cmd = [rqlib.SMTP_SINK] + list(opts)
    if os.geteuid() == 0:
        cmd += ["-u", "nobody"]  # smtp-sink refuses to run as root
    dump_dir = None
    if dump:
        _seq[0] += 1
        dump_dir = os.path.join(env.dir, "sink%d" % _seq[0])
        os.makedirs(dump_dir, exist_ok=True)
        os.chmod(dump_dir, 0o777)
        os.chmod(env.dir, 0o711)  # smtp-sink runs as nobody
        if one_file:
            cmd += ["-D", os.path.join(dump_dir, "all")]
        else:
            cmd += ["-d", os.path.join(dump_dir, "%M%S.")]
    cmd += ["%s:%d" % (addr, port), "1000"]
    p = env.spawn(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rqlib.wait_port(port, host=addr)
    return p, port, dump_dir


def dumps(dump_dir):
    """The transactions smtp-sink dumped: [(rcpts, mail_from, message)],
    message being the bytes after smtp-sink's own X- and Received
    lines.  A file smtp-sink is still writing (no recipient line yet: every
    transaction has one) is left for the next look."""
    out = []
    if not dump_dir or not os.path.isdir(dump_dir):
        return out
    for n in sorted(os.listdir(dump_dir)):
        with open(os.path.join(dump_dir, n), "rb") as f:
            raw = f.read()
        rcpts, frm = [], None
        pos = 0
        while True:
            end = raw.find(b"\n", pos)
            if end < 0:
                break
            line = raw[pos:end].rstrip(b"\r")
            if line.startswith(b"X-Rcpt-Args: "):
                rcpts.append(line[13:].split(b" ")[0].strip(b"<>").decode())
            elif line.startswith(b"X-Mail-Args: "):
                frm = line[13:].split(b" ")[0].strip(b"<>").decode()
            elif not line.startswith(b"X-"):
                break
            pos = end + 1
        if rcpts:
            out.append((rcpts, frm, raw[pos:]))
    return out


def body_of(msg):
    """The body (after the first empty line) of message bytes."""
    m = msg.replace(b"\r\n", b"\n")
    i = m.find(b"\n\n")
    return m[i + 2:] if i >= 0 else b""


LINE = re.compile(r"relayq/smtp\[\d+\]: ([0-9A-F]+): to=<([^>]*)>, "
                  r"relay=([^,]+), delay=([^,]+), delays=([^,]+), "
                  r"dsn=([^,]+), status=(\w+) \((.*)\), tries=(\d+)$")


def deliveries(env):
    """Parsed delivery lines: [dict(qid, to, relay, delay, delays, dsn,
    status, reason, tries, line)] in log order."""
    out = []
    for line in env.log_text().splitlines():
        m = LINE.search(line)
        if m:
            out.append(dict(qid=m.group(1), to=m.group(2), relay=m.group(3),
                            delay=m.group(4), delays=m.group(5),
                            dsn=m.group(6), status=m.group(7),
                            reason=m.group(8), tries=int(m.group(9)),
                            line=line))
    return out


def log_times(env, pattern):
    """Times (seconds since the epoch, from the syslog stamp, 1 s
    resolution) of the log lines matching regex PATTERN."""
    out = []
    year = time.localtime().tm_year
    for line in env.log_text().splitlines():
        if re.search(pattern, line):
            t = time.strptime("%d %s" % (year, line[:15]),
                              "%Y %b %d %H:%M:%S")
            out.append(time.mktime(t))
    return out


def run_idle(env, timeout=120, check=True):
    """Runs `relayq run --exit-when-idle`; returns the CompletedProcess."""
    return env.run("run", "--exit-when-idle",
                   check_rc=0 if check else None, timeout=timeout)


def start(env):
    """Starts `relayq run`; returns the process once it logged its
    start-up line."""
    before = env.log_text().count("daemon started")
    p = env.start("run")
    rqlib.wait_for(lambda: env.log_text().count("daemon started") > before
                   or p.poll() is not None, 20, what="daemon start")
    if p.poll() is not None:
        raise rqlib.Fail("relayq run exited %d: %s" %
                         (p.returncode, p.stderr.read().decode()[-2000:]))
    return p


def stop(p, timeout=30):
    """SIGTERM; waits; checks the exit status is 0."""
    p.send_signal(signal.SIGTERM)
    rc = p.wait(timeout)
    if rc != 0:
        raise rqlib.Fail("relayq run exited %d after SIGTERM: %s" %
                         (rc, p.stderr.read().decode()[-2000:]))


def relayq(env, *args, check_rc=0):
    return env.run(*args, check_rc=check_rc)
