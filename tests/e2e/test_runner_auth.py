"""The daemon (`relayq run`) through smarthosts: SMTP AUTH on 587-style
(STARTTLS) and 465-style (implicit TLS) relays, wrong passwords deferred
(never bounced) without marking the host down, per-sender routes and
credentials with relayq.conf(5)'s precedence, fallback relays (after an
unreachable relayhost, a 421 greeting, unreachable MX hosts; not after a
refusal of the mail or an AUTH failure), start-up refusals of unsafe or
broken credential files and certificates (exit 78, FILE:LINE), SIGHUP
rereading auth_file, check-config's routes, and no secret in any log,
output, queue listing, notice or `ps`.  Run with /usr/bin/python3.
"""
import json
import os
import signal
import subprocess
import time

import authlib
import faultlib
import rqlib
from authlib import PASSWORD, AuthServer, assert_no_secret
from rqlib import check, check_eq
from test_runner_lib import (deliveries, drop, dumps, run_idle, sink, start,
                             stop)
from test_runner_dns import DNSMASQ, dnsmasq

PW_B = "Pw-b-2e8d61-S3cr3t"
PW_C = "Pw-c-93aa07-S3cr3t"
SECRETS = [PASSWORD, PW_B, PW_C]


def by_rcpt(env):
    """The last delivery line of each recipient."""
    return {d["to"]: d for d in deliveries(env)}


def queue_texts(env):
    """mailq and `show` of every queued message: what a user sees."""
    out = [env.run("mailq").stdout, env.run("mailq", "--json").stdout]
    for line in out[1].decode().splitlines():
        qid = json.loads(line)["queue_id"]
        out.append(env.run("show", qid, check_rc=0).stdout)
    return out


def closed_port():
    """A port nothing listens on (bound, then released)."""
    return rqlib.free_port()


def test_relay_587_and_465():
    """A STARTTLS relay and an implicit-TLS relay ([domain] tls_wrapper),
    both with SMTP AUTH from auth_file: delivered, logged as sent with
    the relay, the servers saw TLS and the login."""
    with rqlib.Env() as env:
        ca, cert, _, _ = authlib.certs(env)
        s587 = AuthServer(env, users={"relay-user": PASSWORD}, cert=cert)
        s465 = AuthServer(env, users={"relay-user": PASSWORD}, cert=cert,
                          implicit=True)
        af = authlib.auth_file(env, [
            "[127.0.0.1]:%d relay-user:%s" % (s587.port, PASSWORD),
            "[127.0.0.1]:%d relay-user:%s" % (s465.port, PASSWORD)])
        env.write_conf("relayhost = [127.0.0.1]:%d\nauth_file = %s\n"
                       "tls = verify\ntls_ca_file = %s\n"
                       "[domain wrap.test]\nrelayhost = [127.0.0.1]:%d\n"
                       "tls_wrapper = yes\n" % (s587.port, af, ca,
                                                s465.port))
        drop(env, "a@dst.test")
        drop(env, "b@wrap.test")
        p = run_idle(env, timeout=60)
        ds = by_rcpt(env)
        check_eq(ds["a@dst.test"]["status"], "sent", ds["a@dst.test"]["line"])
        check_eq(ds["b@wrap.test"]["status"], "sent",
                 ds["b@wrap.test"]["line"])
        check_eq(ds["a@dst.test"]["relay"], "127.0.0.1[127.0.0.1]:%d" %
                 s587.port)
        check_eq(ds["b@wrap.test"]["relay"], "127.0.0.1[127.0.0.1]:%d" %
                 s465.port)
        for srv, rcpt in ((s587, "a@dst.test"), (s465, "b@wrap.test")):
            m = srv.messages()
            check_eq(len(m), 1)
            check_eq(m[0]["rcpts"], [rcpt])
            check(m[0]["tls"] and m[0]["login"] == "relay-user", m)
        check_eq(env.log_text().count("Verified TLS connection established"),
                 2)
        assert_no_secret(env, SECRETS, [p.stdout, p.stderr],
                         users=("relay-user",))


def test_wrong_password_defers():
    """A wrong password defers (4.7.8, "SASL authentication failed"),
    never bounces, logs one warning per connection, does not suspend the
    host (the next message tries again; another sender's good
    credentials deliver), and the delay notice, mailq and show carry no
    secret; neither does `ps`."""
    with rqlib.Env() as env:
        _, cert, _, _ = authlib.certs(env)
        srv = AuthServer(env, users={"bad": "not-what-we-send",
                                     "good": PW_B}, cert=cert)
        af = authlib.auth_file(env, [
            "[127.0.0.1]:%d bad:%s" % (srv.port, PASSWORD),
            "good@src.test good:%s" % PW_B])
        env.write_conf("relayhost = [127.0.0.1]:%d\nauth_file = %s\n"
                       "retry.min = 1h\nretry.max = 2h\n"
                       "timeout.queuewarn = 1s\n" % (srv.port, af))
        p = start(env)
        try:
            drop(env, "one@dst.test", sender="user@src.test")
            rqlib.wait_for(lambda: "one@dst.test" in by_rcpt(env), 20,
                           what="the first attempt")
            drop(env, "two@dst.test", sender="user@src.test")
            drop(env, "three@dst.test", sender="good@src.test")
            rqlib.wait_for(lambda: {"two@dst.test", "three@dst.test"} <=
                           set(by_rcpt(env)), 20, what="more attempts")
            ps = authlib.ps_text()
            rqlib.wait_for(lambda: env.log_text().count(
                "sender delay notification") >= 2, 20,
                what="the delay notices")
            texts = queue_texts(env)
            check(len(texts) >= 6, "the notices are in the queue")
        finally:
            stop(p)
        ds = by_rcpt(env)
        for r in ("one@dst.test", "two@dst.test"):
            d = ds[r]
            check_eq(d["status"], "deferred", d["line"])
            check_eq(d["dsn"], "4.7.8", d["line"])
            check(d["reason"].startswith("SASL authentication failed; host "
                                         "127.0.0.1[127.0.0.1] said: 535"),
                  d["line"])
        check_eq(ds["three@dst.test"]["status"], "sent")
        check("suspended" not in env.log_text(), "the host was suspended")
        check(not any(d["status"] == "bounced" for d in deliveries(env)),
              "bounced")
        att = srv.attempts()
        bad = [a for a in att if a["login"] == "bad"]
        check(len(bad) >= 2, att)
        warns = [l for l in env.log_text().splitlines()
                 if "SASL PLAIN authentication failed" in l]
        check_eq(len(warns), len(bad), "one warning per connection")
        check_eq([m["login"] for m in srv.messages()], ["good"])
        assert_no_secret(env, SECRETS, texts + [ps, p.stdout.read(),
                                                p.stderr.read()],
                         users=("bad", "good"))


def test_sender_routes_and_precedence():
    """sender_relayhost and sender credentials: each sender's mail goes
    to its relay with its account; a [domain] relayhost beats the sender
    route; <> has its own route; other senders use the global relayhost
    (without AUTH when no credentials fit)."""
    with rqlib.Env() as env:
        _, cert, _, _ = authlib.certs(env)
        sa = AuthServer(env, users={"appA": PASSWORD}, cert=cert)
        sb = AuthServer(env, users={"appB": PW_B}, cert=cert)
        sc = AuthServer(env, users={"appC": PW_C}, cert=cert)
        _, sd_port, sd_dump = sink(env)
        routes = os.path.join(env.dir, "senders")
        with open(routes, "w") as f:
            f.write("AppA@Apps.test [127.0.0.1]:%d\n"
                    "@b.test [127.0.0.1]:%d\n"
                    "<> [127.0.0.1]:%d\n" % (sa.port, sb.port, sb.port))
        af = authlib.auth_file(env, [
            "appa@apps.test appA:%s" % PASSWORD,
            "[127.0.0.1]:%d appB:%s" % (sb.port, PW_B),
            "@c.test appC:%s" % PW_C])
        env.write_conf("relayhost = [127.0.0.1]:%d\nauth_file = %s\n"
                       "sender_relayhost = %s\n"
                       "[domain special.test]\n"
                       "relayhost = [127.0.0.1]:%d\n" %
                       (sc.port, af, routes, sd_port))
        cc = env.run("check-config", check_rc=0).stdout.decode()
        drop(env, "r1@dst.test", sender="appa@apps.test")
        drop(env, "r2@dst.test", sender="y@b.test")
        drop(env, "r3@dst.test", sender="")
        drop(env, "r4@dst.test", sender="z@c.test")
        drop(env, "r5@dst.test", sender="x@other.test")
        drop(env, "r6@special.test", sender="y@b.test")
        p = run_idle(env, timeout=60)
        ds = by_rcpt(env)
        for r in ("r%d" % i for i in range(1, 7)):
            rcpt = r + ("@special.test" if r == "r6" else "@dst.test")
            check_eq(ds[rcpt]["status"], "sent", ds[rcpt]["line"])
        got = {}
        for srv, name in ((sa, "A"), (sb, "B"), (sc, "C")):
            for m in srv.messages():
                got[m["rcpts"][0]] = (name, m["login"])
        check_eq(got, {"r1@dst.test": ("A", "appA"),
                       "r2@dst.test": ("B", "appB"),
                       "r3@dst.test": ("B", "appB"),
                       "r4@dst.test": ("C", "appC"),
                       "r5@dst.test": ("C", None)})
        check_eq([r for r, _, _ in dumps(sd_dump)], [["r6@special.test"]])
        check_eq(ds["r6@special.test"]["relay"], "127.0.0.1[127.0.0.1]:%d" %
                 sd_port)
        # check-config shows each route and credential, never a secret
        lines = cc.splitlines()
        for want in (
                "route.default = [127.0.0.1]:%d via=relayhost tls=may "
                "wrapper=no auth=none" % sc.port,
                "route.domain[special.test] = [127.0.0.1]:%d via=domain "
                "tls=may wrapper=no auth=none" % sd_port,
                "route.sender[appa@apps.test] = [127.0.0.1]:%d via=sender "
                "tls=encrypt wrapper=no auth=appA (%s:2) "
                "mechanisms=plain,login" % (sa.port, af),
                "route.sender[@b.test] = [127.0.0.1]:%d via=sender "
                "tls=encrypt wrapper=no auth=appB (%s:3) "
                "mechanisms=plain,login" % (sb.port, af),
                "route.sender[<>] = [127.0.0.1]:%d via=sender tls=encrypt "
                "wrapper=no auth=appB (%s:3) mechanisms=plain,login" %
                (sb.port, af),
                "route.sender[@c.test] = [127.0.0.1]:%d via=relayhost "
                "tls=encrypt wrapper=no auth=appC (%s:4) "
                "mechanisms=plain,login" % (sc.port, af),
                "auth[@c.test] = appC:******** (%s:4)" % af):
            check(want in lines, "check-config lacks %r:\n%s" % (want, cc))
        assert_no_secret(env, SECRETS, [p.stdout, p.stderr, cc],
                         users=("appA", "appB", "appC"))


def test_fallback_relays():
    """fallback_relay: an unreachable relayhost and a 421 greeting go to
    the fallback relays in order (with the fallback's own credentials),
    the log names the relay that took the mail, and later mail skips the
    relay found down; a 5xx to MAIL and an AUTH failure do not fall back;
    unreachable MX hosts (dnsmasq) fall back too."""
    with rqlib.Env() as env:
        _, cert, _, _ = authlib.certs(env)
        _, fport, fdump = sink(env)
        fauth = AuthServer(env, users={"fb": PW_B}, cert=cert)
        g421 = faultlib.start(env, "on CONNECT reply 421 4.3.2 busy\n")
        h550 = faultlib.start(env, "on MAIL reply 550 5.7.1 go away\n")
        bad = AuthServer(env, users={"x": "y"}, cert=cert)
        dead1, dead2 = closed_port(), closed_port()
        dnsport, mxport = rqlib.free_port(), closed_port()
        dnsmasq(env, dnsport, ["--mx-host=mx.test,mxdead.test,10",
                               "--host-record=mxdead.test,127.0.0.4"])
        # g@g.test's sender has an account of its own (for its provider):
        # the fallback relay still gets only its own credentials
        af = authlib.auth_file(env, [
            "[127.0.0.1]:%d fb:%s" % (fauth.port, PW_B),
            "[127.0.0.1]:%d x:%s" % (bad.port, PASSWORD),
            "g-sender@src.test own:%s" % PASSWORD])
        env.write_conf(
            "relayhost = [127.0.0.1]:%d\nauth_file = %s\n"
            "fallback_relay = [127.0.0.1]:%d, [127.0.0.1]:%d\n"
            "dns_server = 127.0.0.1:%d\nretry.min = 1h\nretry.max = 2h\n"
            "[domain g.test]\nrelayhost = [127.0.0.1]:%d\n"
            "fallback_relay = [127.0.0.1]:%d\n"
            "[domain h.test]\nrelayhost = [127.0.0.1]:%d\n"
            "[domain i.test]\nrelayhost = [127.0.0.1]:%d\n"
            "[domain mx.test]\nrelayhost =\nsmtp_port = %d\n" %
            (dead1, af, dead2, fport, dnsport, g421.port, fauth.port,
             h550.port, bad.port, mxport))
        p = start(env)
        try:
            for r in ("a@dst.test", "h@h.test", "i@i.test", "m@mx.test"):
                drop(env, r)
            drop(env, "g@g.test", sender="g-sender@src.test")
            rqlib.wait_for(lambda: len(by_rcpt(env)) >= 5, 60,
                           what="five results")
            drop(env, "g2@g.test", sender="g-sender@src.test")
            drop(env, "a2@dst.test")
            rqlib.wait_for(lambda: len(by_rcpt(env)) >= 7, 60,
                           what="seven results")
        finally:
            stop(p)
        ds = by_rcpt(env)
        fb = "127.0.0.1[127.0.0.1]:%d" % fport
        for r in ("a@dst.test", "a2@dst.test", "m@mx.test"):
            check_eq(ds[r]["status"], "sent", ds[r]["line"])
            check_eq(ds[r]["relay"], fb, ds[r]["line"])
        for r in ("g@g.test", "g2@g.test"):
            check_eq(ds[r]["status"], "sent", ds[r]["line"])
            check_eq(ds[r]["relay"], "127.0.0.1[127.0.0.1]:%d" % fauth.port)
        check_eq(sorted((m["rcpts"][0], m["login"])
                        for m in fauth.messages()),
                 [("g2@g.test", "fb"), ("g@g.test", "fb")])
        check_eq(sorted(r[0] for r, _, _ in dumps(fdump)
                        if r[0] != "sender@src.test"),
                 ["a2@dst.test", "a@dst.test", "m@mx.test"])
        # the 421 relay was tried once: then marked down and skipped
        check_eq(len(g421.conns()), 1, "connections to the 421 relay")
        check_eq(ds["h@h.test"]["status"], "bounced", ds["h@h.test"]["line"])
        check_eq(ds["h@h.test"]["relay"], "127.0.0.1[127.0.0.1]:%d" %
                 h550.port)
        check_eq(ds["i@i.test"]["status"], "deferred")
        check(ds["i@i.test"]["reason"].startswith("SASL authentication "
                                                  "failed"), ds["i@i.test"])
        check_eq(len(bad.attempts()), 1)
        # one log line per recipient: the intermediate failures are not
        # results, but each move is logged
        for r in ds:
            check_eq(len([d for d in deliveries(env) if d["to"] == r]), 1,
                     r)
        moves = [l for l in env.log_text().splitlines()
                 if "trying fallback relay" in l]
        check(any("connect to 127.0.0.1[127.0.0.1]:%d: Connection refused;"
                  " trying fallback relay [127.0.0.1]:%d" % (dead1, dead2)
                  in l for l in moves), moves)
        check(any("said: 421 4.3.2 busy" in l and "trying fallback relay "
                  "[127.0.0.1]:%d" % fauth.port in l for l in moves), moves)
        check(all(a["login"] == "fb" for a in fauth.attempts()),
              "the fallback got only its own account: %r" % fauth.attempts())
        assert_no_secret(env, SECRETS, [p.stdout.read(), p.stderr.read()],
                         users=("fb", "x"))


def test_refused_at_start():
    """relayq run and check-config refuse (78, FILE:LINE, no secret) an
    auth_file readable by group or others, one owned by another user,
    one with a syntax error, a world-readable key, and a certificate
    whose key does not match."""
    with rqlib.Env() as env:
        _, cert, _, (ccert, ckey) = authlib.certs(env)
        af = authlib.auth_file(env, ["[h.example]:587 u:%s" % PASSWORD,
                                     "[i.example] v:%s" % PW_B])
        base = "relayhost = [h.example]:587\n"
        cases = []
        for mode in (0o640, 0o604, 0o620):
            cases.append(("auth_file = %s\n" % af, lambda m=mode:
                          os.chmod(af, m),
                          "relayq.conf:6: auth_file %s: mode 0%o lets group "
                          "or others read or write it" % (af, mode)))
        if os.geteuid() == 0:
            cases.append(("auth_file = %s\n" % af,
                          lambda: (os.chmod(af, 0o600),
                                   os.chown(af, 65534, 65534)),
                          "auth_file %s: owned by uid 65534" % af))
        broken = authlib.auth_file(env, [
            "[h.example]:587 u:%s" % PASSWORD, "[bad host] u:%s" % PW_B],
            "authbroken")
        cases.append(("auth_file = %s\n" % broken, lambda: None,
                      "%s:3: bad DESTINATION \"[bad\"" % broken))
        broken2 = authlib.auth_file(env, ["[h.example] %s" % PASSWORD],
                                    "authbroken2")
        cases.append(("auth_file = %s\n" % broken2, lambda: None,
                      "%s:2: expected user:password or user:|command "
                      "after \"[h.example]\"" % broken2))
        cases.append(("tls_cert_file = %s\ntls_key_file = %s\n" %
                      (ccert, ckey), lambda: os.chmod(ckey, 0o644),
                      "relayq.conf:7: tls_key_file %s: mode 0644 lets "
                      "others read it" % ckey))
        cases.append(("tls_cert_file = %s\ntls_key_file = %s\n" %
                      (ccert, cert[1]), lambda: (os.chmod(ckey, 0o600),
                                                 os.chmod(cert[1], 0o600)),
                      "relayq.conf:6: tls_cert_file %s: the key in %s does "
                      "not match the certificate" % (ccert, cert[1])))
        outs = []
        for extra, prep, want in cases:
            prep()
            env.write_conf(base + extra)
            for cmd in (("run", "--exit-when-idle"), ("check-config",)):
                r = env.run(*cmd)
                outs += [r.stdout, r.stderr]
                check_eq(r.returncode, 78, "%s: %s" % (cmd, r.stderr))
                check(want in r.stderr.decode(), "%s: %r not in %r" %
                      (cmd, want, r.stderr.decode()))
            check("daemon started" not in env.log_text(), "it started")
        # fixed: it starts
        os.chmod(af, 0o600)
        if os.geteuid() == 0:
            os.chown(af, 0, 0)
        env.write_conf(base + "auth_file = %s\ntls_cert_file = %s\n"
                       "tls_key_file = %s\n" % (af, ccert, ckey))
        r = env.run("check-config", check_rc=0)
        outs.append(r.stdout)
        check("auth[[h.example]:587] = u:******** (%s:2)" % af in
              r.stdout.decode(), r.stdout)
        run_idle(env, timeout=30)
        assert_no_secret(env, SECRETS, outs, users=("u", "v"))


def test_sighup_rereads_credentials():
    """SIGHUP rereads auth_file: a wrong password fixed in the file
    delivers after the reload (and a flush); a broken file on SIGHUP is
    refused, logged, and the running credentials kept."""
    with rqlib.Env() as env:
        _, cert, _, _ = authlib.certs(env)
        srv = AuthServer(env, users={"u": PASSWORD}, cert=cert)
        af = authlib.auth_file(env, ["[127.0.0.1]:%d u:wrong-%s" %
                                     (srv.port, PW_C)])
        env.write_conf("relayhost = [127.0.0.1]:%d\nauth_file = %s\n"
                       "retry.min = 1h\nretry.max = 2h\n" % (srv.port, af))
        p = start(env)
        try:
            drop(env, "a@dst.test")
            rqlib.wait_for(lambda: "a@dst.test" in by_rcpt(env), 20,
                           what="the first attempt")
            check_eq(by_rcpt(env)["a@dst.test"]["status"], "deferred")
            authlib.auth_file(env, ["[127.0.0.1]:%d u:%s" %
                                    (srv.port, PASSWORD)])
            n = env.log_text().count("reloaded configuration")
            p.send_signal(signal.SIGHUP)
            rqlib.wait_for(lambda: env.log_text().count(
                "reloaded configuration") > n, 10, what="the reload")
            env.run("flush", check_rc=0)
            rqlib.wait_for(lambda: by_rcpt(env)["a@dst.test"]["status"] ==
                           "sent", 20, what="delivery after the reload")
            # a broken file is refused, the running one kept
            os.chmod(af, 0o644)
            p.send_signal(signal.SIGHUP)
            rqlib.wait_for(lambda: "reload refused" in env.log_text(), 10,
                           what="the refusal")
            check("mode 0644 lets group or others" in env.log_text())
            drop(env, "b@dst.test")
            rqlib.wait_for(lambda: "b@dst.test" in by_rcpt(env), 20,
                           what="the next delivery")
            check_eq(by_rcpt(env)["b@dst.test"]["status"], "sent")
            ps = authlib.ps_text()
        finally:
            stop(p)
        assert_no_secret(env, [PASSWORD, "wrong-" + PW_C],
                         [ps, p.stdout.read(), p.stderr.read()],
                         users=("u",))


if __name__ == "__main__":
    rqlib.main(globals())
