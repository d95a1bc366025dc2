"""End-to-end tests of the smtp client's SMTP AUTH, implicit TLS, client
certificates and pinned fingerprints, driven by tests/smtp/smtpc against
python3-aiosmtpd with its authenticator (and XOAUTH2/OAUTHBEARER
mechanisms of our own on its handler): right password delivers; wrong
password defers with the reason, once, no other address tried, host not
down; no TLS: the password is never sent; LOGIN-only and PLAIN-only
servers; token commands (no shell, fetched once per connection, failures
and timeouts); a server that wants a client certificate; fingerprint
match and mismatch.  Every test checks that no secret appears in
anything captured.  Run with /usr/bin/python3.
"""
import os
import re
import time

import authlib
import rqlib
from authlib import PASSWORD, TOKEN, AuthServer, assert_no_secret
from rqlib import check, check_eq
from test_smtp_lib import smtpc


def run(env, srv, conf, relay=None, rcpts=("rcpt@example.org",), args=(),
        addrs=None, host="localhost", **kw):
    """smtpc to SRV with the credentials for RELAY (default
    [127.0.0.1]:port); returns the Run."""
    relay = relay or "[127.0.0.1]:%d" % srv.port
    addrs = addrs or ["%s@127.0.0.1:%d" % (host, srv.port)]
    return smtpc(env, addrs, rcpts, conf=conf,
                 args=["-H", relay] + list(args), **kw)


def outputs(runs):
    out = []
    for r in runs:
        out += [r.stderr, repr(r.results), repr(r.summary)]
    return out


def test_plain_and_login_over_starttls():
    """The right password delivers over STARTTLS, with PLAIN (the
    default's first), LOGIN when auth_mechanisms prefers it; the server
    saw TLS before AUTH and the login."""
    with rqlib.Env() as env:
        ca, cert, _, _ = authlib.certs(env)
        srv = AuthServer(env, users={"user": PASSWORD}, cert=cert)
        af = authlib.auth_file(env, ["[127.0.0.1]:%d user:%s" %
                                     (srv.port, PASSWORD)])
        runs = []
        for mechs, want in (("", "PLAIN"), ("auth_mechanisms = login\n",
                                            "LOGIN"),
                            ("auth_mechanisms = LOGIN, plain\n", "LOGIN")):
            r = run(env, srv, "auth_file = %s\ntls = verify\n"
                    "tls_ca_file = %s\n%s" % (af, ca, mechs))
            runs.append(r)
            rc = r.one()
            check_eq(rc["cls"], 2, rc["text"])
            check_eq(r.results[0]["auth"], want, "mechanism")
            check(r.results[0]["tls"].startswith("TLS"), "TLS")
            check(r.results[0]["verified"], "verified")
        att = srv.attempts()
        check_eq([a["mech"] for a in att], ["PLAIN", "LOGIN", "LOGIN"])
        check(all(a["ok"] and a["tls"] for a in att), att)
        msgs = srv.messages()
        check_eq(len(msgs), 3)
        check(all(m["authenticated"] and m["login"] == "user" and m["tls"]
                  for m in msgs), msgs)
        assert_no_secret(env, [PASSWORD], outputs(runs))


def test_connections_never_shared_between_credentials():
    """Messages of one destination alternating between two credentials
    over cached connections: each reuses only the connection that logged
    in with its own credentials (two logins, no more), and a request
    without credentials reuses neither."""
    with rqlib.Env() as env:
        _, cert, _, _ = authlib.certs(env)
        srv = AuthServer(env, users={"one": PASSWORD, "two": "pw-" +
                                     PASSWORD[::-1]}, cert=cert)
        af = authlib.auth_file(env, [
            "[127.0.0.1]:%d one:%s" % (srv.port, PASSWORD),
            "[127.0.0.2]:%d two:pw-%s" % (srv.port, PASSWORD[::-1])])
        r = run(env, srv, "auth_file = %s\nconnection_cache_time = 30s\n"
                % af, args=["-H", "[127.0.0.2]:%d" % srv.port,
                            "-H", "[127.0.0.3]:%d" % srv.port,
                            "-n", "6", "-i", "0.2"])
        check_eq(r.summary["sent"], 6)
        check_eq([x["reused"] for x in r.results],
                 [False, False, False, True, True, True])
        check_eq([x["auth"] for x in r.results],
                 ["PLAIN", "PLAIN", "", "PLAIN", "PLAIN", ""])
        check_eq([a["login"] for a in srv.attempts()], ["one", "two"])
        check_eq([m["login"] for m in srv.messages()],
                 ["one", "two", None, "one", "two", None])
        assert_no_secret(env, [PASSWORD, "pw-" + PASSWORD[::-1]],
                         outputs([r]), users=("one", "two"))


def test_login_only_and_plain_only_servers():
    """A server offering only LOGIN gets LOGIN, one offering only PLAIN
    gets PLAIN; auth_mechanisms = plain against the LOGIN-only server
    defers, naming what the server offers."""
    with rqlib.Env() as env:
        _, cert, _, _ = authlib.certs(env)
        login_only = AuthServer(env, users={"user": PASSWORD}, cert=cert,
                                exclude=["PLAIN"])
        plain_only = AuthServer(env, users={"user": PASSWORD}, cert=cert,
                                exclude=["LOGIN"])
        af = authlib.auth_file(env, ["[127.0.0.1] user:%s" % PASSWORD])
        runs = []
        for srv, want in ((login_only, "LOGIN"), (plain_only, "PLAIN")):
            r = run(env, srv, "auth_file = %s\n" % af)
            runs.append(r)
            check_eq(r.one()["cls"], 2, r.one()["text"])
            check_eq(r.results[0]["auth"], want)
            check_eq([a["mech"] for a in srv.attempts()], [want])
        r = run(env, login_only, "auth_file = %s\nauth_mechanisms = plain\n"
                % af)
        runs.append(r)
        rc = r.one()
        check_eq(rc["cls"], 4)
        check_eq(rc["status"], "4.7.0")
        authlib.reason_has(rc["text"], r"offers AUTH LOGIN, none of PLAIN")
        # the user and the credentials file in the log, never in the
        # reason (which goes into notices, mailq and show)
        check("user" not in rc["text"] and "auth:2" not in rc["text"],
              rc["text"])
        check(re.search(r"no usable AUTH \(offered: LOGIN\) for user "
                        r"\(.*auth:2\)", r.stderr), r.stderr)
        check_eq(len(login_only.attempts()), 1, "no second AUTH")
        check_eq(r.results[0]["host_down"], False)
        assert_no_secret(env, [PASSWORD], outputs(runs))


def test_wrong_password_defers_once():
    """A wrong password: class 4 (never 5), "SASL authentication failed"
    with the server's 535 and 4.7.8, logged once, the second address of
    the relay not tried, the host not marked down, nothing delivered."""
    with rqlib.Env() as env:
        _, cert, _, _ = authlib.certs(env)
        srv = AuthServer(env, users={"user": "the-right-one"}, cert=cert)
        af = authlib.auth_file(env, ["[127.0.0.1]:%d user:%s" %
                                     (srv.port, PASSWORD)])
        addr = "localhost@127.0.0.1:%d" % srv.port
        r = run(env, srv, "auth_file = %s\n" % af, addrs=[addr, addr],
                rcpts=["a@example.org", "b@example.org"])
        for rc in r.rcpts():
            check_eq(rc["cls"], 4, rc["text"])
            check_eq(rc["status"], "4.7.8")
            check_eq(rc["code"], 535)
            check(rc["text"].startswith("SASL authentication failed; host "
                                        "localhost[127.0.0.1] said: 535 "
                                        "5.7.8"), rc["text"])
            check(rc["text"].endswith("(in reply to AUTH command)"),
                  rc["text"])
        check_eq(r.results[0]["host_down"], False)
        check_eq(len(srv.attempts()), 1, "one AUTH: no other address")
        check_eq(srv.messages(), [])
        warn = [l for l in r.stderr.splitlines()
                if "authentication failed" in l]
        check_eq(len(warn), 1, "one log line per connection: %r" % warn)
        check("PLAIN authentication failed for user (" in warn[0], warn)
        assert_no_secret(env, [PASSWORD], outputs([r]))


def test_421_to_auth_is_an_auth_failure():
    """A 421 to AUTH ("too many bad logins") is an authentication
    failure like a 535: "SASL authentication failed", logged, no other
    address tried, the host not marked down."""
    with rqlib.Env() as env:
        _, cert, _, _ = authlib.certs(env)
        srv = AuthServer(env, users={"user": "the-right-one"}, cert=cert,
                         fail_reply="421 4.7.0 too many bad logins")
        af = authlib.auth_file(env, ["[127.0.0.1]:%d user:%s" %
                                     (srv.port, PASSWORD)])
        addr = "localhost@127.0.0.1:%d" % srv.port
        r = run(env, srv, "auth_file = %s\n" % af, addrs=[addr, addr])
        rc = r.one()
        check_eq(rc["cls"], 4, rc["text"])
        check(rc["text"].startswith("SASL authentication failed; host "
                                    "localhost[127.0.0.1] said: 421 "), rc)
        check_eq(r.results[0]["host_down"], False)
        check_eq(len(srv.attempts()), 1, "one AUTH: no other address")
        check("authentication failed for user (" in r.stderr, r.stderr)


def test_no_tls_never_sends_the_password():
    """A server without STARTTLS that offers AUTH in plaintext: the
    password is not sent (4.7.4 "TLS is required to authenticate"),
    whatever tls says; auth_plaintext = yes allows it."""
    with rqlib.Env() as env:
        srv = AuthServer(env, users={"user": PASSWORD}, require_tls=False)
        af = authlib.auth_file(env, ["[127.0.0.1] user:%s" % PASSWORD])
        runs = []
        for tls in ("none", "may"):
            r = run(env, srv, "auth_file = %s\ntls = %s\n" % (af, tls))
            runs.append(r)
            rc = r.one()
            check_eq(rc["cls"], 4, tls)
            check_eq(rc["status"], "4.7.4")
            authlib.reason_has(rc["text"], "TLS is required to "
                               "authenticate", r"auth_plaintext = no")
            check_eq(r.results[0]["host_down"], False)
        check_eq(srv.attempts(), [], "no AUTH reached the server")
        check_eq(srv.messages(), [])
        r = run(env, srv, "auth_file = %s\nauth_plaintext = yes\n" % af)
        runs.append(r)
        check_eq(r.one()["cls"], 2, r.one()["text"])
        check_eq([(a["mech"], a["tls"]) for a in srv.attempts()],
                 [("PLAIN", False)])
        assert_no_secret(env, [PASSWORD], outputs(runs))


def test_server_without_auth():
    """Credentials, and a server that offers no AUTH: deferred with a
    clear reason, nothing sent; without credentials it delivers."""
    with rqlib.Env() as env:
        _, cert, _, _ = authlib.certs(env)
        srv = AuthServer(env, cert=cert, exclude=["PLAIN", "LOGIN"])
        af = authlib.auth_file(env, ["[127.0.0.1] user:%s" % PASSWORD])
        r = run(env, srv, "auth_file = %s\n" % af)
        rc = r.one()
        check_eq(rc["cls"], 4)
        authlib.reason_has(rc["text"], r"host localhost\[127.0.0.1\] offers "
                           r"no AUTH, but credentials are configured")
        check_eq(srv.messages(), [])
        r2 = run(env, srv, "", relay="[127.0.0.2]:25")
        check_eq(r2.one()["cls"], 2)
        check_eq(r2.results[0]["auth"], "")
        assert_no_secret(env, [PASSWORD], outputs([r, r2]))


def test_implicit_tls():
    """tls_wrapper = yes: TLS from the first byte (an implicit-TLS
    aiosmtpd), then AUTH; verify checks the certificate there too; a
    wrong password defers with the reason."""
    with rqlib.Env() as env:
        ca, cert, other_ca, _ = authlib.certs(env)
        srv = AuthServer(env, users={"user": PASSWORD}, cert=cert,
                         implicit=True)
        af = authlib.auth_file(env, ["[127.0.0.1]:%d user:%s" %
                                     (srv.port, PASSWORD)])
        base = "auth_file = %s\ntls_wrapper = yes\n" % af
        r = run(env, srv, base + "tls = verify\ntls_ca_file = %s\n" % ca)
        check_eq(r.one()["cls"], 2, r.one()["text"])
        check(r.results[0]["tls"].startswith("TLS"))
        check(r.results[0]["verified"])
        check_eq(r.results[0]["auth"], "PLAIN")
        check(srv.messages()[0]["tls"] and srv.messages()[0]["login"] ==
              "user", srv.messages())
        r2 = run(env, srv, base + "tls = verify\ntls_ca_file = %s\n" %
                 other_ca)
        check_eq(r2.one()["cls"], 4)
        authlib.reason_has(r2.one()["text"], "not verified")
        check_eq(len(srv.attempts()), 1, "no AUTH to an unverified server")
        af2 = authlib.auth_file(env, ["[127.0.0.1]:%d user:wrong-%s" %
                                      (srv.port, PASSWORD[::-1])], "auth2")
        r3 = run(env, srv, "auth_file = %s\ntls_wrapper = yes\n" % af2)
        check_eq(r3.one()["cls"], 4)
        authlib.reason_has(r3.one()["text"], "^SASL authentication failed")
        check_eq(len(srv.messages()), 1)
        # without the wrapper the client waits for a plaintext greeting
        r4 = run(env, srv, "auth_file = %s\ntimeout.initial = 2s\n" % af)
        check_eq(r4.one()["cls"], 4)
        assert_no_secret(env, [PASSWORD, "wrong-" + PASSWORD[::-1]],
                         outputs([r, r2, r3, r4]))


def test_token_commands():
    """XOAUTH2 and OAUTHBEARER with a token from a command run without a
    shell (its arguments arrive literally), fetched once per connection
    and reused on it; a wrong token gets the server's error and defers;
    a shell only when the entry names one."""
    with rqlib.Env() as env:
        _, cert, _, _ = authlib.certs(env)
        srv = AuthServer(env, tokens={"user@example.com": TOKEN}, cert=cert,
                         oauth=True, exclude=["PLAIN", "LOGIN"])
        cmd = authlib.token_command(env)
        af = authlib.auth_file(env, [
            "[127.0.0.1]:%d user@example.com:|%s --account 'my acct' "
            "$HOME ';' \"a \\\"q\\\"\"" % (srv.port, cmd)])
        runs = []
        for mech in ("xoauth2", "oauthbearer"):
            r = run(env, srv, "auth_file = %s\nauth_mechanisms = %s\n" %
                    (af, mech), relay="[127.0.0.1]:%d" % srv.port)
            runs.append(r)
            check_eq(r.one()["cls"], 2, r.one()["text"])
            check_eq(r.results[0]["auth"], mech.upper())
        check_eq([a["mech"] for a in srv.attempts()],
                 ["XOAUTH2", "OAUTHBEARER"])
        check(all(a["ok"] and a["tls"] for a in srv.attempts()))
        runs_ = authlib.token_runs(cmd)
        check_eq(len(runs_), 2)
        check_eq(runs_[0], ["--account", "my acct", "$HOME", ";",
                            'a "q"'])
        # the default for a token: OAUTHBEARER first
        r = run(env, srv, "auth_file = %s\n" % af)
        runs.append(r)
        check_eq(r.results[0]["auth"], "OAUTHBEARER")
        # once per connection: 3 messages over one cached connection
        n0 = len(authlib.token_runs(cmd))
        r = run(env, srv, "auth_file = %s\nconnection_cache_time = 30s\n"
                % af, args=["-n", "3", "-i", "0.2"])
        runs.append(r)
        check_eq(r.summary["sent"], 3)
        check_eq(len(authlib.token_runs(cmd)) - n0, 1, "one run")
        check_eq([x["reused"] for x in r.results], [False, True, True])
        # ... and again for each new connection
        r = run(env, srv, "auth_file = %s\nconnection_cache_time = 0\n"
                % af, args=["-n", "2"])
        runs.append(r)
        check_eq(len(authlib.token_runs(cmd)) - n0, 3, "one per connection")
        # a wrong token: the server's JSON error, acknowledged, then 535
        bad = authlib.token_command(env, token="bad-" + TOKEN, name="bad")
        af2 = authlib.auth_file(env, ["[127.0.0.1] user@example.com:|%s" %
                                      bad], "auth2")
        for mech, ack in (("xoauth2", ""), ("oauthbearer", "AQ==")):
            r = run(env, srv, "auth_file = %s\nauth_mechanisms = %s\n" %
                    (af2, mech))
            runs.append(r)
            rc = r.one()
            check_eq(rc["cls"], 4)
            authlib.reason_has(rc["text"], "^SASL authentication failed",
                               r'"status": "401"')
            check_eq(srv.acks()[-1], ack, "the client's acknowledgement")
        # a shell, when asked for
        af3 = authlib.auth_file(env, [
            "[127.0.0.1] user@example.com:|/bin/sh -c 'echo %s'" %
            TOKEN.replace("tok", "$(echo tok)")], "auth3")
        r = run(env, srv, "auth_file = %s\n" % af3)
        runs.append(r)
        check_eq(r.one()["cls"], 2, r.one()["text"])
        assert_no_secret(env, [TOKEN, "bad-" + TOKEN], outputs(runs),
                         users=("user@example.com",))


def test_token_command_failures():
    """A failing command (its status and first error line in the
    reason), one printing nothing, one that is not there, and one that
    hangs (killed at timeout.misc, whole process group): each defers
    (4.7.0) without a connection and without marking the host down."""
    with rqlib.Env() as env:
        _, cert, _, _ = authlib.certs(env)
        srv = AuthServer(env, tokens={"u": TOKEN}, cert=cert, oauth=True)
        fail = authlib.token_command(env, name="fail", exit_code=3,
                                     stderr="no refresh token for u\n"
                                     "more detail\n")
        empty = authlib.token_command(env, token="", name="empty")
        slow = authlib.token_command(env, name="slow", sleep=60)
        cases = [(fail, r"exited with status 3: no refresh token for u$"),
                 (empty, r"printed no token$"),
                 ("/nonexistent/get-token", r"No such file or directory$"),
                 (slow, r"timed out$")]
        runs = []
        for cmd, why in cases:
            af = authlib.auth_file(env, ["[127.0.0.1] u:|%s" % cmd])
            t0 = time.time()
            r = run(env, srv, "auth_file = %s\ntimeout.misc = 2s\n" % af,
                    addrs=["127.0.0.1:%d" % srv.port] * 2)
            runs.append(r)
            rc = r.one()
            check_eq(rc["cls"], 4, cmd)
            check_eq(rc["status"], "4.7.0")
            check_eq(rc["phase"], "token command")
            authlib.reason_has(rc["text"], r"^SASL authentication failed: "
                               r"cannot get a token")
            check(cmd not in rc["text"], rc["text"])
            check(re.search(r"cannot get a token for u \(.*auth:2\): the "
                            r"token command " + re.escape(cmd) + r".*" + why,
                            r.stderr, re.M), r.stderr)
            check_eq(r.results[0]["host_down"], False)
            check_eq(r.results[0]["ip"], "127.0.0.1")
            if cmd == slow:
                check(time.time() - t0 < 20, "killed at the deadline")
                with open(slow + ".pid") as f:
                    pid = int(f.read())
                rqlib.wait_for(lambda: not os.path.exists("/proc/%d" % pid)
                               or "Z" in open("/proc/%d/stat" % pid)
                               .read().split()[2], 10,
                               what="the token command killed")
        check_eq(srv.attempts(), [])
        check_eq(srv.messages(), [])
        assert_no_secret(env, [TOKEN], outputs(runs), users=("u",))


def test_client_certificate():
    """A server that requires a client certificate: without one the
    handshake fails (deferred); with tls_cert_file and tls_key_file it
    delivers and the server saw our certificate."""
    with rqlib.Env() as env:
        ca, cert, client_ca, (ccert, ckey) = authlib.certs(env)
        srv = AuthServer(env, users={"user": PASSWORD}, cert=cert,
                         client_ca=client_ca)
        af = authlib.auth_file(env, ["[127.0.0.1] user:%s" % PASSWORD])
        r = run(env, srv, "auth_file = %s\n" % af)
        rc = r.one()
        check_eq(rc["cls"], 4)
        check_eq(srv.messages(), [])
        check_eq(srv.attempts(), [])
        r2 = run(env, srv, "auth_file = %s\ntls_cert_file = %s\n"
                 "tls_key_file = %s\n" % (af, ccert, ckey))
        check_eq(r2.one()["cls"], 2, r2.one()["text"])
        m = srv.messages()
        check_eq(len(m), 1)
        check_eq(m[0]["client_cn"], "relayq-client")
        check_eq(m[0]["login"], "user")
        # the same in one file (the key after the certificate)
        both = os.path.join(env.dir, "client-both.pem")
        with open(both, "w") as f:
            f.write(open(ccert).read() + open(ckey).read())
        os.chmod(both, 0o600)
        r3 = run(env, srv, "auth_file = %s\ntls_cert_file = %s\n" %
                 (af, both))
        check_eq(r3.one()["cls"], 2, r3.one()["text"])
        assert_no_secret(env, [PASSWORD], outputs([r, r2, r3]))


def test_fingerprints():
    """tls_fingerprint: the certificate's digest, or its public key's,
    accepts the server with no CA check (verified); another digest
    defers 4.7.5 naming both digests, and no AUTH is sent."""
    with rqlib.Env() as env:
        ca, cert, _, _ = authlib.certs(env)
        srv = AuthServer(env, users={"user": PASSWORD}, cert=cert)
        af = authlib.auth_file(env, ["[127.0.0.1] user:%s" % PASSWORD])
        fc, fk = authlib.fingerprints(cert[0])
        wrong = "SHA256:" + "00" * 32
        runs = []
        for fp in (fc, fk, "SHA256:" + fk[7:].lower().replace(":", ""),
                   "%s %s" % (wrong, fc)):
            r = run(env, srv, "auth_file = %s\ntls = verify\n"
                    "tls_fingerprint = %s\n" % (af, fp),
                    host="not-the-name.example")
            runs.append(r)
            check_eq(r.one()["cls"], 2, r.one()["text"])
            check(r.results[0]["verified"], "a match counts as verified")
        r = run(env, srv, "auth_file = %s\ntls_fingerprint = %s\n" %
                (af, wrong))
        runs.append(r)
        rc = r.one()
        check_eq(rc["cls"], 4)
        check_eq(rc["status"], "4.7.5")
        authlib.reason_has(rc["text"], "fingerprint mismatch",
                           re.escape(fc), re.escape(fk))
        check_eq(r.results[0]["host_down"], False)
        check_eq(len(srv.attempts()), 4, "no AUTH after the mismatch")
        check_eq(len(srv.messages()), 4)
        assert_no_secret(env, [PASSWORD], outputs(runs))


if __name__ == "__main__":
    rqlib.main(globals())
