"""MTA-STS (RFC 8461, issue 17) end to end, hermetically: the _mta-sts
TXT records in a test zone (dnsseclib: nsd behind unbound), the policies
served over HTTPS by /usr/bin/python3's http.server with a test CA
(mta_sts_port), faultsmtp MX hosts on 127.0.0.2-4 with certificates made
by openssl now.

Cases: enforce with a foreign MX (skipped; never contacted; with only the
foreign MX: deferred 4.7.5), an MX whose certificate is not trusted under
enforce (deferred 4.7.5), testing mode (delivered to the foreign MX,
logged and counted for TLS-RPT as a failed session; to an MX with an
untrusted certificate, the same), a redirect, a wrong Content-Type and an oversized policy (all
refused: no policy), SNI sent; the policy cached in LMDB and still
enforced after a restart with the policy server down, kept when the TXT
id changes while the server is down (a failed refresh), and replaced
when the id changes and the server is back (refresh).  Run with
/usr/bin/python3.
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dnsseclib  # noqa: E402
import faultlib  # noqa: E402
import rqlib  # noqa: E402
import test_tlsrpt  # noqa: E402
from rqlib import check, check_eq  # noqa: E402
from test_runner_lib import deliveries, drop, run_idle  # noqa: E402

EHLO_TLS = "ehlo PIPELINING 8BITMIME ENHANCEDSTATUSCODES STARTTLS\n"

SERVER = r'''
import http.server, json, ssl, sys
port, cert, key, table, log = sys.argv[1:6]
port = int(port)
with open(table) as f:
    policies = json.load(f)
snis = []

def sni(sock, name, ctx):
    with open(log, "a") as f:
        f.write(json.dumps({"sni": name}) + "\n")

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        host = self.headers.get("Host", "").split(":")[0]
        with open(log, "a") as f:
            f.write(json.dumps({"host": host, "path": self.path}) + "\n")
        e = policies.get(host)
        if e is None or self.path != "/.well-known/mta-sts.txt":
            self.send_response(404)
            self.end_headers()
            return
        status, ctype, body = e
        body = body.encode()
        self.send_response(status)
        if status in (301, 302):
            self.send_header("Location", "https://elsewhere.test/p.txt")
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass

ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ctx.sni_callback = sni
srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print("ready", flush=True)
srv.serve_forever()
'''


def policy(mode, mx, max_age=86400):
    return "version: STSv1\r\nmode: %s\r\n%smax_age: %d\r\n" % (
        mode, "".join("mx: %s\r\n" % m for m in mx), max_age)


class PolicyServer:
    """The HTTPS policy server on 127.0.0.1:PORT; .requests() logged."""

    def __init__(self, env, port, cert, key, table):
        self.dir = os.path.join(env.dir, "sts")
        os.makedirs(self.dir, exist_ok=True)
        script = os.path.join(self.dir, "server.py")
        with open(script, "w") as f:
            f.write(SERVER)
        tpath = os.path.join(self.dir, "table.json")
        with open(tpath, "w") as f:
            json.dump(table, f)
        self.log = os.path.join(self.dir, "requests.jsonl")
        self.proc = env.spawn(["/usr/bin/python3", script, str(port), cert,
                               key, tpath, self.log],
                              stdout=subprocess.PIPE)
        line = self.proc.stdout.readline()
        if not line.startswith(b"ready"):
            raise rqlib.Fail("policy server did not start: %r" % line)

    def requests(self):
        try:
            with open(self.log) as f:
                return [json.loads(x) for x in f if x.endswith("\n")]
        except FileNotFoundError:
            return []

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def test_mta_sts():
    if not dnsseclib.available():
        print("  skipped: no nsd/unbound/ldnsutils")
        return
    with rqlib.Env(keep=bool(os.environ.get("KEEP"))) as env:
        port = rqlib.free_port()
        https = rqlib.free_port()
        certs = os.path.join(env.dir, "certs")
        ca, good_cert, good_key = faultlib.make_cert(certs, "mx-good.test")
        cak = (ca, ca.replace(".pem", ".key"))
        _, foreign_cert, foreign_key = faultlib.make_cert(
            certs, "mx-foreign.test", ca=cak)
        _, bad_cert, bad_key = faultlib.make_cert(certs, "mx-bad.test")
        domains = ["enforce", "onlyforeign", "untrusted", "testing",
                   "testbad", "redirect", "ctype", "big"]
        _, web_cert, web_key = faultlib.make_cert(
            certs, "mta-sts.enforce.test",
            ["mta-sts.%s.test" % d for d in domains], ca=cak)
        good = faultlib.start(env, EHLO_TLS, cert=(good_cert, good_key),
                              args=["-l", "127.0.0.2:%d" % port])
        foreign = faultlib.start(env, EHLO_TLS,
                                 cert=(foreign_cert, foreign_key),
                                 args=["-l", "127.0.0.3:%d" % port])
        faultlib.start(env, EHLO_TLS, cert=(bad_cert, bad_key),
                       args=["-l", "127.0.0.4:%d" % port])
        zone = ["mx-good A 127.0.0.2", "mx-foreign A 127.0.0.3",
                "mx-bad A 127.0.0.4"]
        for d in domains:
            zone += ["mta-sts.%s A 127.0.0.1" % d,
                     '_mta-sts.%s TXT "v=STSv1; id=20261129;"' % d]
        base = zone[:]
        zone += ["enforce MX 10 mx-foreign.test.",
                 "enforce MX 20 mx-good.test.",
                 "onlyforeign MX 10 mx-foreign.test.",
                 "untrusted MX 10 mx-bad.test.",
                 "testing MX 10 mx-foreign.test.",
                 "testbad MX 10 mx-bad.test.",
                 "redirect MX 10 mx-foreign.test.",
                 "ctype MX 10 mx-foreign.test.",
                 "big MX 10 mx-foreign.test."]
        mxs = zone[len(base):]
        dns = dnsseclib.start(env, {"test.": "\n".join(zone)},
                              signed=["test."])
        only_good = policy("enforce", ["mx-good.test"])
        table = {
            "mta-sts.enforce.test": [200, "text/plain", only_good],
            "mta-sts.onlyforeign.test": [200, "text/plain; charset=utf-8",
                                         only_good],
            "mta-sts.untrusted.test": [200, "text/plain",
                                       policy("enforce", ["*.test"])],
            "mta-sts.testing.test": [200, "text/plain",
                                     policy("testing", ["mx-good.test"])],
            "mta-sts.testbad.test": [200, "text/plain",
                                     policy("testing", ["*.test"])],
            "mta-sts.redirect.test": [301, "text/plain", only_good],
            "mta-sts.ctype.test": [200, "text/html", only_good],
            "mta-sts.big.test": [200, "text/plain",
                                 only_good + "x" * 70000 + "\r\n"],
        }
        web = PolicyServer(env, https, web_cert, web_key, table)
        conf = ("dns_server = 127.0.0.1:%d\nsmtp_port = %d\n"
                "mta_sts_port = %d\ntls_ca_file = %s\nretry.min = 1h\n"
                "timeout.hoststatus = 0\ntlsrpt = yes\n" %
                (dns.port, port, https, ca))
        env.write_conf(conf)
        rcpts = ["e@%s.test" % d for d in domains]
        for r in rcpts:
            drop(env, r)
        run_idle(env, timeout=90)
        log = env.log_text()
        ds = {d["to"]: d for d in deliveries(env)}
        for r in rcpts:
            check(r in ds, "no delivery line for %s:\n%s" % (r, log))

        def at(srv):
            return [x for e, _ in srv.messages() for x in e]

        # enforce: the foreign MX (preferred) skipped, the named one used
        e = ds["e@enforce.test"]
        check_eq(e["status"], "sent", e["line"])
        check("mx-good.test[127.0.0.2]" in e["relay"], e["line"])
        check("MTA-STS: enforce.test: MX host mx-foreign.test is not in "
              "the policy" in log, log)
        check(not any("enforce.test" in x for x in at(foreign)),
              "the foreign MX got enforce.test mail")
        # only the foreign MX: deferred, never contacted for it
        o = ds["e@onlyforeign.test"]
        check_eq((o["status"], o["dsn"]), ("deferred", "4.7.5"), o["line"])
        check("matches its policy" in o["line"], o["line"])
        # an MX with an untrusted certificate under enforce
        u = ds["e@untrusted.test"]
        check_eq((u["status"], u["dsn"]), ("deferred", "4.7.5"), u["line"])
        check("not verified" in u["line"], u["line"])
        # testing: delivered to the foreign MX, logged
        t = ds["e@testing.test"]
        check_eq(t["status"], "sent", t["line"])
        check("mx-foreign.test" in t["relay"], t["line"])
        check("MTA-STS: testing.test: MX host mx-foreign.test is not in "
              "the policy (id 20261129, mode testing)" in log, log)
        # testing, an untrusted certificate: delivered, logged, and a
        # failed session for TLS-RPT (what enforce would have refused)
        tb = ds["e@testbad.test"]
        check_eq(tb["status"], "sent", tb["line"])
        check("MTA-STS testing: mx-bad.test[127.0.0.4]: " in log and
              "enforce would defer the mail" in log, log)
        recs = dict(test_tlsrpt.policy_dump(env)[0])
        day = [k for k in recs if k.startswith("rpt:") and
               k.endswith(":testbad.test")]
        check_eq(len(day), 1, "a count record: %r" % recs)
        rec = recs[day[0]]
        check(rec.startswith("rpt1 sts 0 1\n"), rec)
        check("f certificate-not-trusted mx-bad.test 127.0.0.4 1\n" in rec,
              rec)
        # testing, an MX host the policy does not name: a failed
        # session too (its validation failed: enforce would skip it)
        tr = [v for k, v in recs.items()
              if k.startswith("rpt:") and k.endswith(":testing.test")]
        check(tr and tr[0].startswith("rpt1 sts 0 1\n") and
              "f validation-failure mx-foreign.test 127.0.0.3 1\n" in tr[0],
              "testing.test: %r" % tr)
        good_rec = [v for k, v in recs.items()
                    if k.startswith("rpt:") and k.endswith(":enforce.test")]
        check(good_rec and good_rec[0].startswith("rpt1 sts 1 0\n"),
              "enforce.test: %r" % good_rec)
        # redirect, wrong content type, too big: no policy, delivered
        for d, why in (("redirect", "HTTP status 301"),
                       ("ctype", "Content-Type is not text/plain"),
                       ("big", "policy fetch from mta-sts.big.test "
                        "failed")):
            x = ds["e@%s.test" % d]
            check_eq(x["status"], "sent", x["line"])
            check(why in log, "%s: %r not logged:\n%s" % (d, why, log))
        # SNI and Host were the policy host's name
        reqs = web.requests()
        check({"sni": "mta-sts.enforce.test"} in reqs, reqs)
        check({"host": "mta-sts.enforce.test",
               "path": "/.well-known/mta-sts.txt"} in reqs, reqs)
        check(not any(r.get("host") == "elsewhere.test" for r in reqs),
              "a redirect was followed")

        # restart with the policy server down: the cached policy holds
        web.stop()
        n_before = len(at(good))
        drop(env, "again@enforce.test")
        run_idle(env, timeout=90)
        ds = {d["to"]: d for d in deliveries(env)}
        a = ds["again@enforce.test"]
        check_eq(a["status"], "sent", a["line"])
        check("mx-good.test[127.0.0.2]" in a["relay"], a["line"])
        check(len(at(good)) > n_before, "nothing more at mx-good")
        check(not any("enforce.test" in x for x in at(foreign)),
              "the foreign MX got enforce.test mail after the restart")

        # the TXT id changes while the policy server is down: the
        # refresh fails, the cached policy is kept (and enforced)
        zone2 = [z.replace("id=20261129", "id=20261130") for z in base]
        dns2 = dnsseclib.start(env, {"test.": "\n".join(zone2 + mxs)},
                               signed=["test."], name="dns2")
        env.write_conf(conf.replace("127.0.0.1:%d" % dns.port,
                                    "127.0.0.1:%d" % dns2.port))
        drop(env, "kept@enforce.test")
        run_idle(env, timeout=90)
        ds = {d["to"]: d for d in deliveries(env)}
        k = ds["kept@enforce.test"]
        check_eq(k["status"], "sent", k["line"])
        check("mx-good.test[127.0.0.2]" in k["relay"], k["line"])
        check("MTA-STS: enforce.test: policy fetch from "
              "mta-sts.enforce.test failed" in env.log_text() and
              "keeping the cached policy (id 20261129, mode enforce)" in
              env.log_text(), env.log_text())

        # the server is back with a new policy: the changed id refreshes
        table["mta-sts.enforce.test"] = [
            200, "text/plain", policy("testing", ["mx-good.test"])]
        PolicyServer(env, https, web_cert, web_key, table)
        drop(env, "fresh@enforce.test")
        run_idle(env, timeout=90)
        ds = {d["to"]: d for d in deliveries(env)}
        f = ds["fresh@enforce.test"]
        check_eq(f["status"], "sent", f["line"])
        check("mx-foreign.test[127.0.0.3]" in f["relay"], f["line"])
        check("MTA-STS: enforce.test: policy id 20261130, mode testing" in
              env.log_text(), env.log_text())


if __name__ == "__main__":
    rqlib.main(globals())
