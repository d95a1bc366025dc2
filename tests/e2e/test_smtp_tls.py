"""End-to-end tests of the smtp client's STARTTLS against a third-party
server, python3-aiosmtpd, with a test CA and certificates made by openssl
at test time: the four tls levels (none, may, encrypt, verify), verify
failing on a wrong name and on an unknown CA, verify and encrypt refusing
a server without STARTTLS.  Run with /usr/bin/python3.
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faultlib  # noqa: E402
import rqlib  # noqa: E402
from rqlib import check, check_eq  # noqa: E402
from test_smtp_lib import smtpc  # noqa: E402

SERVER = r'''
import asyncio, json, signal, ssl, sys, threading
from aiosmtpd.controller import Controller

port, out, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]

class Handler:
    async def handle_DATA(self, server, session, envelope):
        with open(out, "a") as f:
            f.write(json.dumps({"tls": session.ssl is not None,
                                "rcpts": envelope.rcpt_tos,
                                "size": len(envelope.original_content)})
                    + "\n")
        return "250 2.0.0 Ok: queued by aiosmtpd"

kw = {}
if cert != "-":
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    kw["tls_context"] = ctx
c = Controller(Handler(), hostname="127.0.0.1", port=port, **kw)
c.start()
print("ready", flush=True)
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: done.set())
done.wait()
c.stop()
'''


class Aio:
    """A running aiosmtpd on 127.0.0.1 (with STARTTLS unless cert is
    None); .port, .messages()."""

    def __init__(self, env, cert=None):
        script = os.path.join(env.dir, "aio_server.py")
        with open(script, "w") as f:
            f.write(SERVER)
        self.port = rqlib.free_port()
        self.out = os.path.join(env.dir, "aio-%d.jsonl" % self.port)
        args = [cert[0], cert[1]] if cert else ["-", "-"]
        self.proc = env.spawn(["/usr/bin/python3", script, str(self.port),
                               self.out] + args, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
        line = self.proc.stdout.readline()
        if not line.startswith(b"ready"):
            raise rqlib.Fail("aiosmtpd did not start: %s" %
                             self.proc.stderr.read()[-2000:])
        rqlib.wait_port(self.port)

    def messages(self):
        try:
            with open(self.out) as f:
                return [json.loads(l) for l in f]
        except FileNotFoundError:
            return []


def certs(env):
    d = os.path.join(env.dir, "tls")
    ca, cert, key = faultlib.make_cert(d, "localhost",
                                       ["localhost", "127.0.0.1"])
    other_ca, _, _ = faultlib.make_cert(os.path.join(env.dir, "tls2"),
                                        "other.test")
    return ca, (cert, key), other_ca


def test_tls_levels():
    """none: plaintext although offered; may and encrypt: TLS, not
    verified (unknown CA); verify with the right CA: TLS, verified, by
    name and by IP address."""
    with rqlib.Env() as env:
        ca, cert, _ = certs(env)
        srv = Aio(env, cert)
        a = "localhost@127.0.0.1:%d" % srv.port
        cases = [("none", "", "", False), ("may", "", "TLS", False),
                 ("encrypt", "", "TLS", False),
                 ("verify", ca, "TLS", True),
                 ("may", ca, "TLS", True)]
        for i, (level, cafile, tls, verified) in enumerate(cases):
            conf = "tls = %s\n" % level
            if cafile:
                conf += "tls_ca_file = %s\n" % cafile
            r = smtpc(env, [a], ["u%d@x.test" % i], conf=conf)
            rc = r.one()
            check_eq(rc["cls"], 2, level)
            check("aiosmtpd" in rc["text"], rc["text"])
            res = r.results[0]
            check(res["tls"].startswith(tls), "%s: tls %r" %
                  (level, res["tls"]))
            if tls:
                check(res["cipher"] != "", "cipher")
            check_eq(res["verified"], verified, level + " verified")
            m = srv.messages()
            check_eq(len(m), i + 1)
            check_eq(m[-1]["tls"], tls != "", level + " server side")
            check_eq(m[-1]["rcpts"], ["u%d@x.test" % i])
        # verify by IP address (the certificate has IP:127.0.0.1)
        r = smtpc(env, ["127.0.0.1:%d" % srv.port],
                  conf="tls = verify\ntls_ca_file = %s\n" % ca)
        check_eq(r.one()["cls"], 2)
        check(r.results[0]["verified"])


def test_verify_failures():
    """verify defers on a wrong host name and on an unknown CA, and sends
    nothing; may and encrypt go on with the same certificate."""
    with rqlib.Env() as env:
        ca, cert, other_ca = certs(env)
        srv = Aio(env, cert)
        wrong = "mx.wrong.test@127.0.0.1:%d" % srv.port
        right = "localhost@127.0.0.1:%d" % srv.port
        for a, cafile, why in ((wrong, ca, "hostname mismatch"),
                               (right, other_ca, "local issuer"),
                               (right, "", "local issuer")):
            conf = "tls = verify\n"
            if cafile:
                conf += "tls_ca_file = %s\n" % cafile
            r = smtpc(env, [a], conf=conf)
            rc = r.one()
            check_eq(rc["cls"], 4, a)
            check("not verified" in rc["text"] and why in rc["text"],
                  rc["text"])
            check_eq(r.results[0]["host_down"], False)
        check_eq(srv.messages(), [])
        r = smtpc(env, [wrong], conf="tls = encrypt\ntls_ca_file = %s\n" %
                  other_ca)
        check_eq(r.one()["cls"], 2)
        check_eq(r.results[0]["verified"], False)


def test_tls_not_offered():
    """A server without STARTTLS: may delivers in plaintext; encrypt and
    verify defer without sending."""
    with rqlib.Env() as env:
        srv = Aio(env, None)
        a = "localhost@127.0.0.1:%d" % srv.port
        r = smtpc(env, [a], conf="tls = may\n")
        check_eq(r.one()["cls"], 2)
        check_eq(r.results[0]["tls"], "")
        for level in ("encrypt", "verify"):
            r = smtpc(env, [a], conf="tls = %s\n" % level)
            rc = r.one()
            check_eq(rc["cls"], 4, level)
            check("TLS is required" in rc["text"], rc["text"])
        check_eq(len(srv.messages()), 1)


if __name__ == "__main__":
    rqlib.main(globals())
