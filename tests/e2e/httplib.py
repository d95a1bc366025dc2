"""httplib - helpers shared by the HTTP listener's end-to-end tests
(test_http*.py): requests to a running daemon over TCP or a unix socket,
the Prometheus text format parsed, mailq --json read.

Not a test itself (tests/e2e/http.cmake registers the test_http_*
scripts that are)."""
import http.client
import json
import os
import socket

import rqlib


class UnixConnection(http.client.HTTPConnection):
    """http.client over a unix socket."""

    def __init__(self, path, timeout=10):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def get(port, path, headers=None, method="GET", timeout=10, unix=None):
    """One request; returns (status, headers dict (lower-case names),
    body bytes)."""
    if unix:
        c = UnixConnection(unix, timeout=timeout)
    else:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        body = r.read()
        hdrs = {}
        for k, v in r.getheaders():
            hdrs.setdefault(k.lower(), []).append(v)
        return r.status, hdrs, body
    finally:
        c.close()


def ok(port, path, **kw):
    """GET that must answer 200; returns the body."""
    st, _, body = get(port, path, **kw)
    if st != 200:
        raise rqlib.Fail("GET %s: %d %r" % (path, st, body[:300]))
    return body


def metrics(port, **kw):
    """The samples of /metrics: {(name, ((label, value), ...)): value}."""
    return parse_metrics(ok(port, "/metrics", **kw).decode())


def parse_metrics(text):
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, value = line.rsplit(" ", 1)
        labels = ()
        if "{" in name_labels:
            name, rest = name_labels.split("{", 1)
            rest = rest.rstrip("}")
            pairs = []
            for part in split_labels(rest):
                k, v = part.split("=", 1)
                pairs.append((k, v[1:-1].replace('\\"', '"')
                              .replace("\\n", "\n").replace("\\\\", "\\")))
            labels = tuple(sorted(pairs))
        else:
            name = name_labels
        out[(name, labels)] = float(value)
    return out


def split_labels(s):
    """Splits `a="x",b="y,z"` at the commas between labels."""
    parts, cur, inq, esc = [], "", False, False
    for ch in s:
        if esc:
            cur += ch
            esc = False
            continue
        if ch == "\\":
            cur += ch
            esc = True
            continue
        if ch == '"':
            inq = not inq
        if ch == "," and not inq:
            parts.append(cur)
            cur = ""
            continue
        cur += ch
    if cur:
        parts.append(cur)
    return parts


def sample(m, name, **labels):
    """One sample of metrics M (KeyError when absent)."""
    return m[(name, tuple(sorted(labels.items())))]


def total(m, name, **labels):
    """The sum of NAME's samples whose labels include LABELS."""
    return sum(v for (n, ls), v in m.items() if n == name and
               all((k, v2) in ls for k, v2 in labels.items()))


def mailq(env):
    p = env.run("mailq", "--json", check_rc=0)
    return [json.loads(l) for l in p.stdout.decode().splitlines() if l]


def daemon_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def http_conf(port=None, extra=""):
    """Config lines for a listener on 127.0.0.1:PORT (a free one when
    None); returns (lines, port)."""
    port = port or rqlib.free_port()
    return "http_listen = 127.0.0.1:%d\n%s" % (port, extra), port
