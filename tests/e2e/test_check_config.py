"""End-to-end tests of `relayq check-config`, --version and --help: the
real binary on config files, compared with golden output, and every error
case with its FILE:LINE: message and exit code 78."""
import glob
import os
import random
import subprocess

import rqlib
from rqlib import check, check_eq

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      "golden", "check-config")


def relayq(*args, env=None, input=None):
    e = dict(os.environ)
    e.pop("RELAYQ_CONFIG", None)
    if env:
        e.update(env)
    return subprocess.run([rqlib.BIN] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=e, input=input,
                          timeout=30)


def test_golden():
    confs = sorted(glob.glob(os.path.join(GOLDEN, "*.conf")))
    check(len(confs) >= 2, "golden configs present")
    # origin and alias_file default from /etc/mailname and /etc/aliases:
    # the goldens are made without them (RELAYQ_TEST_ETC=/nonexistent)
    for conf in confs:
        p = relayq("check-config", "-c", conf,
                   env={"RELAYQ_TEST_ETC": "/nonexistent"})
        check_eq(p.returncode, 0, conf + " exit code")
        with open(conf[:-5] + ".out", "rb") as f:
            want = f.read()
        if p.stdout != want:
            import difflib
            diff = "".join(difflib.unified_diff(
                want.decode().splitlines(True),
                p.stdout.decode().splitlines(True), "golden", "got"))
            raise rqlib.Fail("%s differs from golden:\n%s" % (conf, diff))


def test_sorted_key_value():
    p = relayq("check-config", "-c", os.path.join(GOLDEN, "full.conf"))
    lines = p.stdout.decode().splitlines()
    check_eq(lines, sorted(lines), "output is sorted")
    for line in lines:
        check(" = " in line, "key = value: %r" % line)
    keys = [l.split(" = ")[0] for l in lines]
    check_eq(len(keys), len(set(keys)), "no key twice")
    # Every class of every per-class key, and domains, are there.
    for k in ("timeout.queuewarn.urgent", "timeout.queuewarn.dsn",
              "timeout.queuereturn.non-urgent", "timeout.rcpt.first.normal",
              "domain[slow.example.com].timeout.rcpt.urgent",
              "domain[.example.org].tls"):
        check(k in keys, "%s printed" % k)


def test_env_and_global_option():
    conf = os.path.join(GOLDEN, "defaults.conf")
    want = relayq("check-config", "-c", conf).stdout
    check_eq(relayq("check-config", env={"RELAYQ_CONFIG": conf}).stdout,
             want, "RELAYQ_CONFIG")
    check_eq(relayq("-c", conf, "check-config").stdout, want, "global -c")


ERRORS = [
    ("bogus_key = 1\n", "C:1: unknown key \"bogus_key\""),
    # '#' after a value is part of it (as in main.cf)
    ("user = relayq  # runs as\n",
     "C:1: bad value for user: \"relayq  # runs as\": not a user name"),
    ("hostname = bad host!\n",
     "C:1: bad value for hostname: \"bad host!\": not a domain name"),
    ("# c\nmax_connections = lots\n",
     "C:2: bad value for max_connections: \"lots\": not a number"),
    ("retry.min = 5m\nretry.min = 6m\n",
     "C:2: duplicate key \"retry.min\" (first set on line 1)"),
    ("[dommain x.test]\n",
     "C:1: bad section: [dommain x.test] (expected [domain NAME])"),
    ("timeout.rcpt = 999999999999999999999\n",
     "C:1: bad value for timeout.rcpt: \"999999999999999999999\": "
     "interval overflows"),
    ("timeout.rcpt = -1m\n",
     "C:1: bad value for timeout.rcpt: \"-1m\": negative interval"),
    ("timeout.queuewarn = 3y\n",
     "C:1: bad value for timeout.queuewarn: \"3y\": unknown unit "
     "(use s, m, h, d or w)"),
    ("timeout.queuereturn = 5d!\n",
     "C:1: bad value for timeout.queuereturn: \"5d!\": trailing garbage"),
    ("\n\n\n[domain a.test]\nqueue_dir = /x\n",
     "C:5: queue_dir cannot be set in a [domain] section"),
    ("syslog_facility = kern\n",
     "C:1: bad value for syslog_facility: \"kern\": expected mail, "
     "daemon, user or local0 to local7"),
    ("log_file = relative.log\n",
     "C:1: bad value for log_file: \"relative.log\": not an absolute "
     "path"),
]


def test_errors():
    d = rqlib.Env()
    try:
        for text, want in ERRORS:
            path = os.path.join(d.dir, "c.conf")
            with open(path, "w") as f:
                f.write(text)
            p = relayq("check-config", "-c", path)
            check_eq(p.returncode, 78, "exit code for %r" % text)
            check_eq(p.stderr.decode().strip(), want.replace("C", path, 1),
                     "message for %r" % text)
            check_eq(p.stdout, b"", "nothing on stdout")
        p = relayq("check-config", "-c", "/nonexistent/relayq.conf")
        check_eq(p.returncode, 78, "missing file exit code")
        check_eq(p.stderr.decode().strip(),
                 "/nonexistent/relayq.conf: No such file or directory",
                 "missing file message")
        p = relayq("check-config", "-c", d.dir)
        check_eq(p.returncode, 78, "directory as config")
        # a FIFO as the config or as a file it names: refused, no hang
        fifo = os.path.join(d.dir, "fifo")
        os.mkfifo(fifo)
        p = relayq("check-config", "-c", fifo)
        check_eq(p.returncode, 78, "FIFO as config")
        path = os.path.join(d.dir, "f.conf")
        with open(path, "w") as f:
            f.write("http_listen = 127.0.0.1:9650\nhttp_token = %s\n"
                    % fifo)
        p = relayq("check-config", "-c", path)
        check_eq(p.returncode, 78, "FIFO as http_token")
        check(b"not a regular file" in p.stderr, p.stderr)
    finally:
        d.close()


def test_iconnect_default_never_longer_than_connect():
    """timeout.iconnect's default (10s) never exceeds a shorter
    timeout.connect: with connect = 3s a first attempt waits 3s too, as
    sendmail, where iconnect falls back to connect."""
    d = rqlib.Env()
    try:
        for connect, first in (("3s", "3"), ("60s", "10")):
            path = os.path.join(d.dir, "c.conf")
            with open(path, "w") as f:
                f.write("timeout.connect = %s\n" % connect)
            p = relayq("check-config", "-c", path)
            check_eq(p.returncode, 0, p.stderr)
            out = p.stdout.decode()
            check("timeout.connect.first.normal = %s\n" % first in out,
                  "first attempt with connect = %s" % connect)
    finally:
        d.close()


def test_random_bytes_never_crash():
    d = rqlib.Env()
    rnd = random.Random(1234)
    try:
        path = os.path.join(d.dir, "junk.conf")
        for i in range(200):
            n = rnd.randint(0, 400)
            if i % 2:
                data = bytes(rnd.randint(0, 255) for _ in range(n))
            else:
                alpha = b"timeout.rcpt= \n[]#domain.x0123456789smhdw-\x00"
                data = bytes(rnd.choice(alpha) for _ in range(n))
            with open(path, "wb") as f:
                f.write(data)
            p = relayq("check-config", "-q", "-c", path)
            check(p.returncode in (0, 78),
                  "exit %d on %r" % (p.returncode, data))
            if p.returncode == 78:
                check(p.stderr.startswith(path.encode() + b":"),
                      "error names the file: %r" % p.stderr)
    finally:
        d.close()


def test_version_and_help():
    p = relayq("--version")
    check_eq(p.returncode, 0, "--version exit")
    check(p.stdout.startswith(b"relayq "), "--version output")
    p = relayq("--help")
    check_eq(p.returncode, 0, "--help exit")
    check(b"check-config" in p.stdout, "--help lists check-config")
    # Every command listed in --help answers its own --help with 0.
    cmds = []
    text = p.stdout.decode()
    check("commands:\n" in text, "--help has a commands section")
    for line in text.split("commands:\n", 1)[1].splitlines():
        if not line.strip():
            break
        cmds.append(line.split()[0])
    check(len(cmds) >= 1, "commands listed")
    for c in cmds:
        q = relayq(c, "--help")
        check_eq(q.returncode, 0, "%s --help exit" % c)
        check(b"usage:" in q.stdout, "%s --help prints usage" % c)
    check_eq(relayq().returncode, 64, "no command")
    check_eq(relayq("no-such-command").returncode, 64, "unknown command")
    check_eq(relayq("check-config", "--bogus").returncode, 64,
             "unknown option")


def test_man_page_names_every_key():
    """doc/relayq.conf.5 and the example config name every key."""
    p = relayq("check-config", "-c", os.path.join(GOLDEN, "defaults.conf"))
    keys = set()
    for line in p.stdout.decode().splitlines():
        k = line.split(" = ")[0]
        for sfx in (".urgent", ".normal", ".non-urgent", ".dsn"):
            if k.endswith(sfx):
                k = k[:-len(sfx)]
        if k.endswith(".first"):
            k = k[:-len(".first")]
        keys.add(k)
    check(len(keys) > 30, "keys found")
    for doc in ("relayq.conf.5", "relayq.conf.example"):
        with open(os.path.join(rqlib.SRC, "doc", doc)) as f:
            text = f.read().replace("\\-", "-")
        missing = sorted(k for k in keys if k not in text)
        check_eq(missing, [], "keys missing from doc/" + doc)


def test_example_config_is_valid():
    p = relayq("check-config", "-q", "-c",
               os.path.join(rqlib.SRC, "doc", "relayq.conf.example"))
    check_eq(p.returncode, 0, "example config: %s" % p.stderr)


if __name__ == "__main__":
    rqlib.main(globals())
