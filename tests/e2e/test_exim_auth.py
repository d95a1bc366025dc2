"""A real MTA as the authenticating smarthost: exim4 (unpacked from its
Debian packages, never installed: tests/e2e/eximlib.py) on 127.0.0.1
with plaintext authenticators, STARTTLS on one port and TLS on connect
on another.  The daemon (`relayq run`) delivers with the right password
on both ports (PLAIN, and LOGIN where auth_mechanisms prefers it), and
defers with exim's 535 for a wrong one, on both ports; exim's own log
shows each reception with its authenticator and each failure; no secret
in anything relayq wrote or printed.  Run with /usr/bin/python3, as root.
"""
import os

import authlib
import rqlib
from authlib import PASSWORD, assert_no_secret
from eximlib import Exim
from rqlib import check, check_eq
from test_runner_lib import deliveries, drop, run_idle

WRONG = "Wrong-5c0d3e-S3cr3t"


def test_exim_starttls_and_tls_on_connect():
    if os.geteuid() != 0:
        raise rqlib.Fail("the exim test needs root (exim runs a daemon "
                         "only for root)")
    with rqlib.Env() as env:
        _, cert, _, _ = authlib.certs(env)
        ex = Exim(env, "relayq", PASSWORD, cert)
        af = authlib.auth_file(env, [
            "[127.0.0.1]:%d relayq:%s" % (ex.starttls, PASSWORD),
            "[127.0.0.1]:%d relayq:%s" % (ex.tls, PASSWORD),
            "wrong@src.test relayq:%s" % WRONG])
        env.write_conf(
            "auth_file = %s\nretry.min = 1h\nretry.max = 2h\n"
            "[domain s.test]\nrelayhost = [127.0.0.1]:%d\n"
            "[domain l.test]\nrelayhost = [127.0.0.1]:%d\n"
            "auth_mechanisms = login\n"
            "[domain w.test]\nrelayhost = [127.0.0.1]:%d\n"
            "tls_wrapper = yes\n" % (af, ex.starttls, ex.starttls, ex.tls))
        drop(env, "a@s.test", sender="good@src.test")
        drop(env, "b@w.test", sender="good@src.test")
        drop(env, "c@l.test", sender="good@src.test")
        drop(env, "d@s.test", sender="wrong@src.test")
        drop(env, "e@w.test", sender="wrong@src.test")
        p = run_idle(env, timeout=90)
        ds = {d["to"]: d for d in deliveries(env)}
        for r, port in (("a@s.test", ex.starttls), ("b@w.test", ex.tls),
                        ("c@l.test", ex.starttls)):
            check_eq(ds[r]["status"], "sent", ds[r]["line"])
            check_eq(ds[r]["relay"], "127.0.0.1[127.0.0.1]:%d" % port)
            check("OK id=" in ds[r]["reason"], ds[r]["line"])
        for r in ("d@s.test", "e@w.test"):
            check_eq(ds[r]["status"], "deferred", ds[r]["line"])
            check(ds[r]["reason"].startswith(
                "SASL authentication failed; host 127.0.0.1[127.0.0.1] "
                "said: 535"), ds[r]["line"])
            check_eq(ds[r]["dsn"][:2], "4.", ds[r]["line"])
        got = ex.received()
        check_eq(sorted(x["auth"] for x in got),
                 ["login_server:relayq", "plain_server:relayq",
                  "plain_server:relayq"])
        check(all(x["sender"] == "good@src.test" and x["tls"]
                  and x["tls"].startswith("TLS") for x in got), got)
        check_eq(len(ex.auth_failures()), 2, ex.mainlog())
        warns = [l for l in env.log_text().splitlines()
                 if "authentication failed for relayq (" in l]
        check_eq(len(warns), 2, "one warning per connection")
        assert_no_secret(env, [PASSWORD, WRONG], [p.stdout, p.stderr],
                         users=("relayq",))


if __name__ == "__main__":
    rqlib.main(globals())
