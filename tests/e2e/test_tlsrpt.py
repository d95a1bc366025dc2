"""TLS-RPT (RFC 8460, issue 17) end to end: DANE sessions against the
hermetic DNSSEC world (dnsseclib) are counted per domain and UTC day in
the queue's LMDB environment; the next day's start-up sends each domain
that publishes _smtp._tls a multipart/report; report-type=tlsrpt message
through relayq's own queue, checked here after unzipping its JSON.

A day cannot be waited for: after the first run the test copies the
day's count records under yesterday's date with lmdb-utils (mdb_dump,
mdb_load), as if the day had passed, then starts relayq again.
Run with /usr/bin/python3.
"""
import base64
import datetime
import email
import gzip
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dnsseclib  # noqa: E402
import faultlib  # noqa: E402
import rqlib  # noqa: E402
import test_dkim  # noqa: E402
from rqlib import check, check_eq  # noqa: E402
from test_runner_lib import deliveries, drop, run_idle  # noqa: E402

EHLO_TLS = "ehlo PIPELINING 8BITMIME ENHANCEDSTATUSCODES STARTTLS\n"
EHLO_PLAIN = "ehlo PIPELINING 8BITMIME ENHANCEDSTATUSCODES\n"


def policy_dump(env):
    """The policy db as [(key, value)] (mdb_dump -p, unescaped)."""
    out = subprocess.run(["mdb_dump", "-p", "-s", "policy", env.queue],
                         check=True, stdout=subprocess.PIPE).stdout
    lines = out.decode("latin-1").split("\n")
    body = lines[lines.index("HEADER=END") + 1:]
    pairs = []
    for k, v in zip(body[0::2], body[1::2]):
        if k == "DATA=END":
            break
        pairs.append((unesc(k[1:]), unesc(v[1:])))
    return pairs, lines[:lines.index("HEADER=END") + 1]


def unesc(s):
    """Undoes mdb_dump -p's escapes (\\\\ and \\xx hex)."""
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and s[i + 1] == "\\":
            out.append("\\")
            i += 2
        elif s[i] == "\\":
            out.append(chr(int(s[i + 1:i + 3], 16)))
            i += 3
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def esc(s):
    return "".join("\\\\" if c == "\\" else
                   c if 32 <= ord(c) < 127 else "\\%02x" % ord(c)
                   for c in s)


def test_tlsrpt():
    if not dnsseclib.available():
        print("  skipped: no nsd/unbound/ldnsutils")
        return
    with rqlib.Env() as env:
        port = rqlib.free_port()
        certs = os.path.join(env.dir, "certs")
        ca, ok_cert, ok_key = faultlib.make_cert(certs, "mx-ok.test")
        _, w_cert, w_key = faultlib.make_cert(
            certs, "mx-wrong.test", ca=(ca, ca.replace(".pem", ".key")))
        faultlib.start(env, EHLO_TLS, cert=(ok_cert, ok_key),
                       args=["-l", "127.0.0.2:%d" % port])
        faultlib.start(env, EHLO_TLS, cert=(w_cert, w_key),
                       args=["-l", "127.0.0.3:%d" % port])
        rpt = faultlib.start(env, EHLO_PLAIN,
                             args=["-l", "127.0.0.4:%d" % port])
        t = "_%d._tcp." % port
        rua = '"v=TLSRPTv1; rua=https://x.test/r,mailto:rpt@reports.test"'
        zone = "\n".join([
            "match MX 10 mx-ok.test.",
            "wrong MX 10 mx-wrong.test.",
            "wrong MX 20 mx-ok.test.",
            "quiet MX 10 mx-ok.test.",
            "mx-ok A 127.0.0.2",
            "mx-wrong A 127.0.0.3",
            t + "mx-ok TLSA 3 1 1 " + dnsseclib.tlsa_spki(ok_cert),
            t + "mx-wrong TLSA 3 1 1 " + "00" * 32,
            "_smtp._tls.match TXT " + rua,
            "_smtp._tls.wrong TXT " + rua,
            "reports MX 10 mx-rpt.test.",
            "mx-rpt A 127.0.0.4",
        ])
        dns = dnsseclib.start(env, {"test.": zone}, signed=["test."])
        # reports are DKIM-signed like mail (RFC 8460 5.3): a key for the
        # hostname's domain, their From:
        key, pub = test_dkim.keygen(env, "rpt", "ed25519")
        dz = test_dkim.Zone(env)
        dz.publish("rpt", "relayq.test", "ed25519", pub)
        env.write_conf("dns_server = 127.0.0.1:%d\nsmtp_port = %d\n"
                       "tls = dane\nretry.min = 1h\ntimeout.hoststatus = 0\n"
                       "tlsrpt = yes\ntlsrpt_organization = Relayq Test\n"
                       "tlsrpt_contact = mailto:tls@relayq.test\n"
                       "dkim_key_file = %s\ndkim_selector = rpt\n"
                       "dkim_domain = relayq.test\n"
                       # the rua's MX offers no STARTTLS: its mail is
                       # held by this, its reports are not (RFC 8460 3)
                       "[domain reports.test]\ntls = verify\n" %
                       (dns.port, port, key))
        drop(env, "m@match.test")
        drop(env, "w@wrong.test")
        drop(env, "q@quiet.test")
        drop(env, "x@reports.test")
        run_idle(env, timeout=90)
        ds = {d["to"]: d for d in deliveries(env)}
        for r in ("m@match.test", "w@wrong.test", "q@quiet.test"):
            check_eq(ds[r]["status"], "sent", ds[r]["line"])
        x = ds["x@reports.test"]
        check_eq((x["status"], x["dsn"]), ("deferred", "4.7.4"), x["line"])

        # the day's counts, in LMDB
        now = datetime.datetime.now(datetime.timezone.utc)
        today = now.strftime("%Y%m%d")
        yday = (now - datetime.timedelta(days=1)).strftime("%Y%m%d")
        pairs, header = policy_dump(env)
        recs = dict(pairs)
        w = recs.get("rpt:%s:wrong.test" % today)
        check(w is not None, "no count record: %r" % recs)
        check(w.startswith("rpt1 tlsa 1 1\n"), w)
        check("f validation-failure mx-wrong.test 127.0.0.3 1\n" in w, w)
        check(recs.get("rpt:%s:match.test" % today, "").startswith(
            "rpt1 tlsa 1 0\n"), recs)

        # a day passes: the records move to yesterday
        dump = [h for h in header if not h.startswith("db_pagesize=")]
        for k, v in pairs:
            if k.startswith("rpt:%s:" % today):
                dump += [" " + esc(k.replace(today, yday)), " " + esc(v)]
        dump += ["DATA=END", ""]
        subprocess.run(["mdb_load", "-s", "policy", env.queue],
                       input="\n".join(dump).encode("latin-1"),
                       check=True)
        run_idle(env, timeout=90)
        log = env.log_text()
        check("TLS-RPT: report for wrong.test on %s to <rpt@reports.test> "
              "queued (1 ok, 1 failed sessions)" % yday in log, log)
        msgs = rpt.messages()
        check_eq(len(msgs), 2, "reports at the rua (match, wrong)")
        reports = {}
        for envl, raw in msgs:
            check("RCPT TO:<rpt@reports.test>" in " ".join(envl), envl)
            check("MAIL FROM:<>" in " ".join(envl), envl)
            body = raw[:-5] if raw.endswith(b"\r\n.\r\n") else raw
            unstuffed = body.replace(b"\r\n..", b"\r\n.")
            check(test_dkim.verifies(dz, test_dkim.crlf(unstuffed)),
                  "report DKIM-signed and verified: %r" % unstuffed[:300])
            m = email.message_from_bytes(unstuffed)
            check_eq(m.get_content_type(), "multipart/report", "type")
            check_eq(m.get_param("report-type"), "tlsrpt", "report-type")
            parts = [p for p in m.walk()
                     if p.get_content_type() == "application/tlsrpt+gzip"]
            check_eq(len(parts), 1, "one gzip'd JSON part")
            fname = parts[0].get_filename()
            # the submitter is a domain (RFC 8460 5.3): the hostname
            check(fname.startswith("relayq.test!%s!" % m["TLS-Report-Domain"])
                  and fname.endswith(".json.gz"), fname)
            check_eq(m["TLS-Report-Submitter"], "relayq.test", "submitter")
            text = gzip.decompress(base64.b64decode(parts[0].get_payload()))
            try:
                js = json.loads(text)
            except ValueError:
                raise rqlib.Fail("not JSON: %r" % text)
            dom = m["TLS-Report-Domain"]
            reports[dom] = js
        check_eq(sorted(reports), ["match.test", "wrong.test"], "domains")
        wr = reports["wrong.test"]
        check_eq(wr["organization-name"], "Relayq Test", "org")
        check_eq(wr["contact-info"], "mailto:tls@relayq.test", "contact")
        start = "%s-%s-%sT00:00:00Z" % (yday[:4], yday[4:6], yday[6:])
        check_eq(wr["date-range"]["start-datetime"], start, "start")
        pol = wr["policies"][0]
        check_eq(pol["policy"]["policy-type"], "tlsa", "policy-type")
        check_eq(pol["policy"]["policy-domain"], "wrong.test", "domain")
        check("3 1 1 " + dnsseclib.tlsa_spki(ok_cert) in
              pol["policy"]["policy-string"], pol)
        check_eq(pol["summary"], {"total-successful-session-count": 1,
                                  "total-failure-session-count": 1},
                 "summary")
        check_eq(pol["failure-details"],
                 [{"result-type": "validation-failure",
                   "receiving-mx-hostname": "mx-wrong.test",
                   "receiving-ip": "127.0.0.3",
                   "failed-session-count": 1}], "failure-details")
        mr = reports["match.test"]["policies"][0]
        check_eq(mr["summary"]["total-failure-session-count"], 0, "match")
        # sent records are gone; quiet.test (no TLSRPT record) dropped;
        # today's stay for tomorrow
        keys = [k for k, _ in policy_dump(env)[0]]
        check(not any(k.startswith("rpt:%s:" % yday) for k in keys), keys)
        check("rpt:%s:wrong.test" % today in keys, keys)


if __name__ == "__main__":
    rqlib.main(globals())
