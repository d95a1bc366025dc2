"""DANE (RFC 7672, issue 17) end to end, hermetically: a test. zone
signed at run time (ldns-signzone), served by nsd, behind a validating
unbound on loopback (dnsseclib) that relayq uses as its dns_server;
faultsmtp MX hosts on 127.0.0.2-9 with certificates made by openssl now.

Cases: a matching DANE-EE 3 1 1 record (delivered, "Verified ... DANE-EE
3 1 1"), a DANE-TA 2 1 1 record of the issuing CA (name checked: the MX
name or the next-hop domain delivered, another name refused), a wrong digest (deferred 4.7.5; with
a second MX, delivered there), STARTTLS stripped by the path (deferred
4.7.4, never plaintext), only usage 1 records (unusable: TLS without
authentication, as Postfix), TLSA records in an unsigned zone (ignored:
tls = dane acts as may), a bogus TLSA RRset (the host is skipped, never
contacted, 4.7.5), secure NODATA (no TLSA: may with dane, deferred with
dane-only), an MX host that is a CNAME (RFC 7672 2.2.2: the target's
TLSA records first, a wrong one at the alias ignored; the alias's when
the target has none; DANE-TA with the target's name in the
certificate); and check-config's refusal of dane with a remote resolver.
All again with dnssec = validate (libunbound in-process, forwarding to
nsd directly).
Run with /usr/bin/python3.
"""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dnsseclib  # noqa: E402
import faultlib  # noqa: E402
import rqlib  # noqa: E402
from rqlib import check, check_eq  # noqa: E402
from test_runner_lib import deliveries, drop, run_idle  # noqa: E402

EHLO_TLS = "ehlo PIPELINING 8BITMIME ENHANCEDSTATUSCODES STARTTLS\n"
EHLO_PLAIN = "ehlo PIPELINING 8BITMIME ENHANCEDSTATUSCODES\n"


def mx_server(env, ip, port, cert, tls=True):
    """faultsmtp on IP:PORT with CERT=(cert, key); STARTTLS offered
    unless TLS is false (a path that strips it)."""
    return faultlib.start(env, EHLO_TLS if tls else EHLO_PLAIN,
                          cert=cert, args=["-l", "%s:%d" % (ip, port)])


def chain(cert, ca):
    """Writes CERT followed by CA into CERT.chain; returns its path."""
    out = cert + ".chain"
    with open(out, "w") as f:
        for p in (cert, ca):
            with open(p) as g:
                f.write(g.read())
    return out


def by_rcpt(env):
    """The last delivery line of each recipient."""
    return {d["to"]: d for d in deliveries(env)}


def test_dane():
    """tls = dane with the AD bit of a validating unbound on loopback."""
    dane_world(lambda dns: "dns_server = 127.0.0.1:%d\n" % dns.port)


def test_dane_validate():
    """dnssec = validate: libunbound validates in-process, forwarding to
    the authoritative nsd itself (nothing between validates)."""
    dane_world(lambda dns: "dns_server = 127.0.0.1:%d\ndnssec = validate\n"
               "dnssec_trust_anchor = %s/anchors\n" % (dns.nsd_port,
                                                      dns.dir))


def dane_world(dns_conf):
    """The DANE cases (see the top) with the resolver settings
    DNS_CONF(world) gives."""
    if not dnsseclib.available():
        print("  skipped: no nsd/unbound/ldnsutils")
        return
    with rqlib.Env() as env:
        port = rqlib.free_port()
        certs = os.path.join(env.dir, "certs")
        ca, ok_cert, ok_key = faultlib.make_cert(certs, "mx-ok.test")
        _, wrong_cert, wrong_key = faultlib.make_cert(
            certs, "mx-wrong.test", ca=(ca, ca.replace(".pem", ".key")))
        ca2, ta_cert, ta_key = faultlib.make_cert(certs, "mx-ta.test")
        _, tabad_cert, tabad_key = faultlib.make_cert(
            certs, "elsewhere.example",
            ca=(ca2, ca2.replace(".pem", ".key")))
        _, tanh_cert, tanh_key = faultlib.make_cert(
            certs, "tanexthop.test", ca=(ca2, ca2.replace(".pem", ".key")))
        _, real3_cert, real3_key = faultlib.make_cert(
            certs, "mx-real3.test", ca=(ca2, ca2.replace(".pem", ".key")))
        # DANE-TA servers send the trust anchor in their chain (RFC 7671)
        ta_cert, tabad_cert = chain(ta_cert, ca2), chain(tabad_cert, ca2)
        tanh_cert, real3_cert = chain(tanh_cert, ca2), chain(real3_cert, ca2)
        ok = mx_server(env, "127.0.0.2", port, (ok_cert, ok_key))
        wrong = mx_server(env, "127.0.0.3", port, (wrong_cert, wrong_key))
        plain = mx_server(env, "127.0.0.4", port, (ok_cert, ok_key),
                          tls=False)
        u1 = mx_server(env, "127.0.0.5", port, (ok_cert, ok_key))
        nodata = mx_server(env, "127.0.0.6", port, (ok_cert, ok_key))
        bogus = mx_server(env, "127.0.0.7", port, (ok_cert, ok_key))
        ta = mx_server(env, "127.0.0.8", port, (ta_cert, ta_key))
        tabad = mx_server(env, "127.0.0.9", port, (tabad_cert, tabad_key))
        tanh = mx_server(env, "127.0.0.10", port, (tanh_cert, tanh_key))
        real = mx_server(env, "127.0.0.11", port, (ok_cert, ok_key))
        real2 = mx_server(env, "127.0.0.12", port, (ok_cert, ok_key))
        real3 = mx_server(env, "127.0.0.13", port, (real3_cert, real3_key))
        spki_ok = dnsseclib.tlsa_spki(ok_cert)
        spki_ca2 = dnsseclib.tlsa_spki(ca2)
        t = "_%d._tcp." % port
        zone = "\n".join([
            "match MX 10 mx-ok.test.",
            "mx-ok A 127.0.0.2",
            t + "mx-ok TLSA 3 1 1 " + spki_ok,
            # a wrong digest alone, and before a good MX
            "wrongonly MX 10 mx-wrong.test.",
            "nexthop MX 10 mx-wrong.test.",
            "nexthop MX 20 mx-ok.test.",
            "mx-wrong A 127.0.0.3",
            t + "mx-wrong TLSA 3 1 1 " + "00" * 32,
            # the path strips STARTTLS
            "stripped MX 10 mx-plain.test.",
            "mx-plain A 127.0.0.4",
            t + "mx-plain TLSA 3 1 1 " + spki_ok,
            # usage 1 (PKIX-EE) only: unusable for SMTP
            "usage1 MX 10 mx-u1.test.",
            "mx-u1 A 127.0.0.5",
            t + "mx-u1 TLSA 1 1 1 " + spki_ok,
            # secure, no TLSA (NODATA)
            "nodata MX 10 mx-nodata.test.",
            "nodataonly MX 10 mx-nodata.test.",
            "mx-nodata A 127.0.0.6",
            # a TLSA RRset whose signature is broken: bogus
            "bogus MX 10 mx-bogus.test.",
            "mx-bogus A 127.0.0.7",
            t + "mx-bogus TLSA 3 1 1 " + spki_ok,
            # DANE-TA: the CA's key; the name is checked
            "ta MX 10 mx-ta.test.",
            "mx-ta A 127.0.0.8",
            t + "mx-ta TLSA 2 1 1 " + spki_ca2,
            "tabad MX 10 mx-tabad.test.",
            "mx-tabad A 127.0.0.9",
            t + "mx-tabad TLSA 2 1 1 " + spki_ca2,
            # DANE-TA: a certificate for the next-hop domain will do too
            "tanexthop MX 10 mx-tanh.test.",
            "mx-tanh A 127.0.0.10",
            t + "mx-tanh TLSA 2 1 1 " + spki_ca2,
            # the MX host a CNAME: the target's records first (a wrong
            # one at the alias must not count), ...
            "cname MX 10 mx-alias.test.",
            "mx-alias CNAME mx-real.test.",
            "mx-real A 127.0.0.11",
            t + "mx-real TLSA 3 1 1 " + spki_ok,
            t + "mx-alias TLSA 3 1 1 " + "00" * 32,
            # ... the alias's when the target has none, ...
            "cnamefb MX 10 mx-alias2.test.",
            "mx-alias2 CNAME mx-real2.test.",
            "mx-real2 A 127.0.0.12",
            t + "mx-alias2 TLSA 3 1 1 " + spki_ok,
            # ... and DANE-TA names the target (the TLSA base domain)
            "cnameta MX 10 mx-alias3.test.",
            "mx-alias3 CNAME mx-real3.test.",
            "mx-real3 A 127.0.0.13",
            t + "mx-real3 TLSA 2 1 1 " + spki_ca2,
        ])
        insecure = "\n".join([
            "plain MX 10 mx.insecure.",
            "mx A 127.0.0.3",
            t + "mx TLSA 3 1 1 " + "00" * 32,
        ])
        dns = dnsseclib.start(env, {"test.": zone, "insecure.": insecure},
                              signed=["test."],
                              tamper=[t + "mx-bogus.test."])
        env.write_conf(dns_conf(dns) + "smtp_port = %d\n"
                       "tls = dane\nretry.min = 1h\ntimeout.hoststatus = 0\n"
                       "[domain nodataonly.test]\ntls = dane-only\n" % port)
        rcpts = ["m@match.test", "w@wrongonly.test", "n@nexthop.test",
                 "s@stripped.test", "u@usage1.test", "d@nodata.test",
                 "o@nodataonly.test", "b@bogus.test", "p@plain.insecure",
                 "a@ta.test", "x@tabad.test", "h@tanexthop.test",
                 "c@cname.test", "f@cnamefb.test", "t@cnameta.test"]
        for r in rcpts:
            drop(env, r)
        run_idle(env, timeout=90)
        log = env.log_text()
        ds = by_rcpt(env)
        for r in rcpts:
            check(r in ds, "no delivery line for %s:\n%s" % (r, log))

        # match: DANE-EE verified, logged
        check_eq(ds["m@match.test"]["status"], "sent", "match")
        check("Verified TLS connection established to "
              "mx-ok.test[127.0.0.2]:%d" % port in log and
              "DANE-EE 3 1 1" in log, "no DANE-EE log line:\n" + log)
        # wrong digest: deferred 4.7.5, never plaintext
        w = ds["w@wrongonly.test"]
        check_eq((w["status"], w["dsn"]), ("deferred", "4.7.5"), w["line"])
        check("no TLSA record of mx-wrong.test matched" in w["line"],
              w["line"])
        # wrong digest on the first MX: the next MX takes it
        n = ds["n@nexthop.test"]
        check_eq(n["status"], "sent", n["line"])
        check("mx-ok.test[127.0.0.2]" in n["relay"], n["line"])
        check(not any("n@nexthop.test" in "".join(e)
                      for e, _ in wrong.messages()),
              "the non-matching MX got the message")
        # STARTTLS stripped: 4.7.4, no MAIL FROM in plaintext
        s = ds["s@stripped.test"]
        check_eq((s["status"], s["dsn"]), ("deferred", "4.7.4"), s["line"])
        check(not any(c.upper().startswith("MAIL") for c in plain.cmds()),
              "MAIL FROM went out in plaintext: %s" % plain.cmds())
        # only usage 1: TLS, not authenticated ("Untrusted"), delivered
        u = ds["u@usage1.test"]
        check_eq(u["status"], "sent", u["line"])
        check("Untrusted TLS connection established to "
              "mx-u1.test[127.0.0.5]" in log, "usage 1 not as encrypt")
        check(any(e["event"] == "tls" and "handshake ok" in e["data"]
                  for e in u1.events()), "no TLS with the usage-1 host")
        # secure NODATA: may (delivered); dane-only: deferred, no contact
        check_eq(ds["d@nodata.test"]["status"], "sent", "nodata")
        o = ds["o@nodataonly.test"]
        check_eq((o["status"], o["dsn"]), ("deferred", "4.7.5"), o["line"])
        check("no TLSA record" in o["line"], o["line"])
        # bogus TLSA: host skipped, never contacted
        b = ds["b@bogus.test"]
        check_eq((b["status"], b["dsn"]), ("deferred", "4.7.5"), b["line"])
        check("TLSA lookup failed" in b["line"], b["line"])
        check_eq(bogus.conns(), [], "the bogus-TLSA host was contacted")
        # TLSA in an unsigned zone: ignored (the digest there is wrong)
        p = ds["p@plain.insecure"]
        check_eq(p["status"], "sent", p["line"])
        # DANE-TA: the CA's key matches, the MX name is checked
        a = ds["a@ta.test"]
        check_eq(a["status"], "sent", a["line"])
        check("DANE-TA 2 1 1" in log, "no DANE-TA log line")
        x = ds["x@tabad.test"]
        check_eq((x["status"], x["dsn"]), ("deferred", "4.7.5"), x["line"])
        check("hostname mismatch" in x["line"], x["line"])
        h = ds["h@tanexthop.test"]
        check_eq(h["status"], "sent", h["line"])
        check_eq(len(tanh.messages()), 1, "at the next-hop-named MX")
        # CNAME'd MX hosts (RFC 7672 2.2.2)
        for rc, srv, host in (("c@cname.test", real, "mx-alias.test"),
                              ("f@cnamefb.test", real2, "mx-alias2.test"),
                              ("t@cnameta.test", real3, "mx-alias3.test")):
            check_eq(ds[rc]["status"], "sent", ds[rc]["line"])
            check_eq(len(srv.messages()), 1, "%s at its server" % rc)
            check(re.search(r"Verified TLS connection established to "
                            r"%s\[127\.0\.0\.1[123]\]:%d.*DANE-(EE 3|TA 2) "
                            % (re.escape(host), port), log),
                  "%s not DANE-verified:\n%s" % (rc, log))


def test_check_config_remote_resolver():
    with rqlib.Env() as env:
        env.write_conf("dns_server = 192.0.2.1\ntls = dane\n")
        r = env.run("check-config", check_rc=78)
        check("dnssec_trust_remote" in r.stderr.decode(errors="replace"),
              r.stderr)
        env.write_conf("dns_server = 192.0.2.1\n[domain x.test]\n"
                       "tls = dane-only\n")
        env.run("check-config", check_rc=78)
        env.write_conf("dns_server = 192.0.2.1\ntls = dane\n"
                       "dnssec_trust_remote = yes\n")
        env.run("check-config", check_rc=0)
        env.write_conf("dns_server = 127.0.0.1:5353\ntls = dane-only\n")
        env.run("check-config", check_rc=0)
        # relayq validates: a remote server is no trust problem
        env.write_conf("dns_server = 192.0.2.1\ntls = dane\n"
                       "dnssec = validate\n")
        env.run("check-config", check_rc=0)
        env.write_conf("dnssec = maybe\n")
        env.run("check-config", check_rc=78)


if __name__ == "__main__":
    rqlib.main(globals())
