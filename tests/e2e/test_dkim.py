"""DKIM signing at intake (issue 17): rsa-sha256 and ed25519-sha256 keys
made at run time (openssl genpkey), their public halves published as TXT
records of a test zone, and every signature checked by an independent
verifier (Debian's python3-dkim, `import dkim`, its DNS lookups answered
from that zone) on the bytes a real MTA (Postfix's smtp-sink) received.
Also: a domain without a key stays unsigned (logged once), bad keys are
refused with 78 and FILE:LINE, and a retry sends the very same bytes."""
import base64
import os
import re
import signal
import subprocess

import dkim

import faultlib
import rqlib
from rqlib import Fail, check, check_eq
from test_runner_lib import deliveries, drop, dumps, run_idle, sink, start, stop


def keygen(env, name, alg):
    """A private key file (mode 0600) of ALG ("rsa" or "ed25519") and the
    p= of its DNS record (RFC 6376 3.6.1; RFC 8463: the raw public key)."""
    path = os.path.join(env.dir, name + ".pem")
    args = ["openssl", "genpkey", "-out", path]
    if alg == "rsa":
        args += ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]
    else:
        args += ["-algorithm", "ED25519"]
    subprocess.run(args, check=True, capture_output=True)
    os.chmod(path, 0o600)
    der = subprocess.run(["openssl", "pkey", "-in", path, "-pubout",
                          "-outform", "DER"], check=True,
                         capture_output=True).stdout
    if alg == "ed25519":
        der = der[-32:]  # SubjectPublicKeyInfo ends with the 32 key bytes
    return path, base64.b64encode(der).decode()


class Zone:
    """A test zone file of DKIM key records; .dnsfunc answers
    python3-dkim's TXT lookups from it (and counts them)."""

    def __init__(self, env):
        self.path = os.path.join(env.dir, "test.zone")
        self.lookups = []
        with open(self.path, "w") as f:
            f.write("$ORIGIN test.\n$TTL 300\n")

    def publish(self, selector, domain, alg, p):
        with open(self.path, "a") as f:
            f.write('%s._domainkey.%s. IN TXT "v=DKIM1; k=%s; p=%s"\n' %
                    (selector, domain, alg, p))

    def dnsfunc(self, name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        self.lookups.append(name)
        with open(self.path) as f:
            for line in f:
                m = re.match(r'^(\S+)\s+IN\s+TXT\s+"(.*)"$', line.strip())
                if m and m.group(1).lower() == name.lower():
                    return m.group(2).encode()
        return None


def sigs_of(msg):
    """The DKIM-Signature fields of MSG as tag dicts, in order."""
    head = msg.split(b"\r\n\r\n", 1)[0].replace(b"\r\n\t", b"\t")
    head = head.replace(b"\r\n ", b" ")
    out = []
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"dkim-signature:"):
            v = re.sub(rb"\s+", b"", line.split(b":", 1)[1])
            out.append(dict(t.split(b"=", 1) for t in v.split(b";") if t))
    return out


def verify_all(zone, msg):
    """Checks every DKIM-Signature of MSG with python3-dkim; returns the
    tag dicts.  Fails when one does not verify."""
    sigs = sigs_of(msg)
    for i, s in enumerate(sigs):
        ok = dkim.DKIM(msg).verify(idx=i, dnsfunc=zone.dnsfunc)
        check(ok, "signature %d (d=%s s=%s a=%s) does not verify:\n%r" % (
            i, s[b"d"], s[b"s"], s[b"a"], msg[:1500]))
    return sigs


def verifies(zone, msg):
    """Whether python3-dkim accepts MSG's first signature."""
    try:
        return dkim.DKIM(msg).verify(dnsfunc=zone.dnsfunc)
    except dkim.ValidationError:
        return False


def crlf(msg):
    """smtp-sink's dump as the bytes on the wire (CRLF line ends)."""
    return re.sub(rb"\r?\n", b"\r\n", msg)


def received_by(dump_dir, n):
    """Waits for N messages at smtp-sink; returns {rcpt: bytes}."""
    rqlib.wait_for(lambda: len(dumps(dump_dir)) >= n, 30,
                   what="%d messages at smtp-sink" % n)
    return {r[0]: crlf(m) for r, _, m in dumps(dump_dir)}


def test_rsa_and_ed25519_verified_after_delivery():
    """rsa-sha256 (dkim_key_file, for its domain and a subdomain) and
    ed25519-sha256 (dkim_key_table), and both on one message (a table
    naming two keys for one domain): each signature verifies on the
    bytes smtp-sink received, relaxed/relaxed, From oversigned; a
    changed body or Subject no longer verifies."""
    with rqlib.Env() as env:
        zone = Zone(env)
        rsa, rsa_p = keygen(env, "rsa", "rsa")
        ed, ed_p = keygen(env, "ed", "ed25519")
        zone.publish("r2026", "rsa.test", "rsa", rsa_p)
        zone.publish("e2026", "ed.test", "ed25519", ed_p)
        zone.publish("r1", "both.test", "rsa", rsa_p)
        zone.publish("e1", "both.test", "ed25519", ed_p)
        table = os.path.join(env.dir, "dkim.table")
        with open(table, "w") as f:
            f.write("# sender-domain selector key [signing-domain]\n"
                    "ed.test e2026 %s\n"
                    "both.test r1 %s\n"
                    "both.test e1 %s\n" % (ed, rsa, ed))
        _, port, dd = sink(env)
        env.write_conf("relayhost = [127.0.0.1]:%d\n"
                       "dkim_key_file = %s\ndkim_selector = r2026\n"
                       "dkim_domain = rsa.test\ndkim_key_table = %s\n" %
                       (port, rsa, table))
        cc = env.run("check-config", check_rc=0).stdout.decode()
        check("dkim.default = d=rsa.test s=r2026 a=rsa-sha256 bits=2048"
              in cc, cc)
        check("dkim[ed.test] = d=ed.test s=e2026 a=ed25519-sha256" in cc,
              cc)
        mime = ["MIME-Version: 1.0",
                "Content-Type: text/plain; charset=utf-8",
                "Content-Transfer-Encoding: 8bit"]
        drop(env, "a@dst.test", sender="Alice@RSA.test", headers=mime,
             body="caf\u00e9\n.dot line\n\n\ntrailing blank lines\n\n\n")
        drop(env, "b@dst.test", sender="bob@mail.rsa.test")
        drop(env, "c@dst.test", sender="carol@ed.test", headers=mime,
             subject="a  long   subject " + "x" * 120)
        drop(env, "d@dst.test", sender="dave@both.test")
        run_idle(env)
        got = received_by(dd, 4)
        want = {"a@dst.test": [(b"rsa.test", b"r2026", b"rsa-sha256")],
                "b@dst.test": [(b"rsa.test", b"r2026", b"rsa-sha256")],
                "c@dst.test": [(b"ed.test", b"e2026", b"ed25519-sha256")],
                "d@dst.test": [(b"both.test", b"r1", b"rsa-sha256"),
                               (b"both.test", b"e1", b"ed25519-sha256")]}
        for rcpt, msg in sorted(got.items()):
            sigs = verify_all(zone, msg)
            check_eq([(s[b"d"], s[b"s"], s[b"a"]) for s in sigs],
                     want[rcpt], "signatures of the message to " + rcpt)
            for s in sigs:
                check_eq(s[b"c"], b"relaxed/relaxed", "c=")
                h = s[b"h"].lower().split(b":")
                check_eq(h.count(b"from"), 2, "From oversigned in h=")
                for name in (b"to", b"subject", b"date", b"message-id"):
                    check(name in h, "%s not in h=%s" % (name, s[b"h"]))
                if b"MIME-Version" in msg:
                    for name in (b"mime-version", b"content-type",
                                 b"content-transfer-encoding"):
                        check(name in h, "%s not in h=%s" % (name, s[b"h"]))
            # the verifier is not a rubber stamp: a change breaks it
            bad = msg.replace(b"\r\nSubject: ", b"\r\nSubject: Re: ", 1)
            check(not verifies(zone, bad),
                  "a changed Subject still verifies")
            bad = msg[:-4] + b"!" + msg[-4:]
            check(not verifies(zone, bad),
                  "a changed body still verifies")
        check(any(x.startswith("e1._domainkey.both.test") for x in
                  zone.lookups), "the verifier looked up %s" % zone.lookups)
        log = env.log_text()
        check(re.search(r"relayq/dkim\[\d+\]: [0-9A-F]+: DKIM-Signature "
                        r"added \(d=ed\.test, s=e2026, a=ed25519-sha256\)",
                        log), log[-2000:])


def test_domain_without_key_unsigned_logged_once():
    """Mail from a domain with no key is delivered unsigned, and said
    so once per domain, not once per message."""
    with rqlib.Env() as env:
        rsa, _ = keygen(env, "rsa", "rsa")
        _, port, dd = sink(env)
        env.write_conf("relayhost = [127.0.0.1]:%d\n"
                       "dkim_key_file = %s\ndkim_selector = s\n"
                       "dkim_domain = signed.test\n" % (port, rsa))
        for i in range(3):
            drop(env, "u%d@dst.test" % i, sender="x%d@other.test" % i)
        drop(env, "s@dst.test", sender="y@signed.test")
        # not a subdomain of signed.test, only a name ending like one
        drop(env, "n@dst.test", sender="z@notsigned.test")
        run_idle(env)
        got = received_by(dd, 5)
        for r in ("u0@dst.test", "u1@dst.test", "u2@dst.test",
                  "n@dst.test"):
            check(b"DKIM-Signature" not in got[r], "%s signed" % r)
        check_eq(len(sigs_of(got["s@dst.test"])), 1, "signatures")
        log = env.log_text()
        check_eq(len(re.findall(r"no DKIM key for sender domain other\.test",
                                log)), 1, "lines about other.test")
        check_eq(len(re.findall(r"no DKIM key for sender domain "
                                r"notsigned\.test", log)), 1,
                 "lines about notsigned.test")


def refused(env, want_re):
    """check-config and run both exit 78 with an error matching WANT_RE."""
    for cmd in (("check-config",), ("run", "--exit-when-idle")):
        p = env.run(*cmd)
        err = p.stderr.decode(errors="replace") + p.stdout.decode(
            errors="replace")
        check_eq(p.returncode, 78, "%s exit (%s)" % (cmd[0], err.strip()))
        check(re.search(want_re, err), "%s: %r does not match %r" %
              (cmd[0], err.strip(), want_re))


def test_bad_keys_refused():
    """A key group or others can read, a missing selector or domain, a
    file that is no key, an RSA key under 1024 bits, a bad table line:
    refused at load with exit 78 and FILE:LINE."""
    with rqlib.Env() as env:
        rsa, _ = keygen(env, "rsa", "rsa")
        os.chmod(rsa, 0o640)
        env.write_conf("dkim_selector = s\ndkim_domain = d.test\n"
                       "dkim_key_file = %s\n" % rsa)
        refused(env, r"relayq\.conf:7: dkim_key_file .*rsa\.pem: mode 0640 "
                     r"lets group or others read")
        os.chmod(rsa, 0o604)
        refused(env, r"relayq\.conf:7: dkim_key_file .*: mode 0604")
        os.chmod(rsa, 0o600)
        env.run("check-config", check_rc=0)
        if os.geteuid() == 0:
            os.chown(rsa, 65534, -1)  # nobody: neither root nor the daemon
            refused(env, r"relayq\.conf:7: dkim_key_file .*: owned by uid "
                         r"65534")
            os.chown(rsa, 0, -1)
        env.write_conf("dkim_key_file = %s\ndkim_domain = d.test\n" % rsa)
        refused(env, r"relayq\.conf:5: dkim_key_file is set but "
                     r"dkim_selector is not")
        env.write_conf("dkim_selector = s\n")
        refused(env, r"relayq\.conf:5: dkim_selector is set but "
                     r"dkim_key_file is not")
        junk = os.path.join(env.dir, "junk.pem")
        with open(junk, "w") as f:
            f.write("-----BEGIN PRIVATE KEY-----\nAAAA\n"
                    "-----END PRIVATE KEY-----\n")
        os.chmod(junk, 0o600)
        env.write_conf("dkim_key_file = %s\ndkim_selector = s\n"
                       "dkim_domain = d.test\n" % junk)
        refused(env, r"relayq\.conf:5: dkim_key_file .*junk\.pem: not a PEM "
                     r"private key")
        small = os.path.join(env.dir, "small.pem")
        subprocess.run(["openssl", "genpkey", "-algorithm", "RSA",
                        "-pkeyopt", "rsa_keygen_bits:512", "-out", small],
                       check=True, capture_output=True)
        os.chmod(small, 0o600)
        env.write_conf("dkim_key_file = %s\ndkim_selector = s\n"
                       "dkim_domain = d.test\n" % small)
        refused(env, r"relayq\.conf:5: .*an RSA key of 512 bits")
        # in the table: the table's own file and line
        table = os.path.join(env.dir, "dkim.table")
        os.chmod(rsa, 0o644)
        with open(table, "w") as f:
            f.write("# comment\n\nok.test s1 %s\n" % rsa)
        env.write_conf("dkim_key_table = %s\n" % table)
        refused(env, r"dkim\.table:3: key file .*rsa\.pem: mode 0644")
        os.chmod(rsa, 0o600)
        env.run("check-config", check_rc=0)
        with open(table, "w") as f:
            f.write("ok.test s1 %s\nbad_line_without_key s2\n" % rsa)
        refused(env, r"dkim\.table:2: expected SENDER-DOMAIN SELECTOR "
                     r"KEY-FILE")
        with open(table, "w") as f:
            f.write("ok.test s1 relative.pem\n")
        refused(env, r"dkim\.table:1: key file \"relative\.pem\" is not an "
                     r"absolute path")
        os.chmod(table, 0o666)
        refused(env, r"relayq\.conf:5: dkim_key_table .*: writable by group "
                     r"or others")


def test_retry_sends_the_same_signature():
    """The first attempt times out after the server took the data (so the
    message is deferred, and the server kept a copy); the retry sends
    byte-identical data: the signature was made once, at intake."""
    with rqlib.Env() as env:
        zone = Zone(env)
        ed, ed_p = keygen(env, "ed", "ed25519")
        zone.publish("sel", "retry.test", "ed25519", ed_p)
        srv = faultlib.start(env, "on DOT conn 1 stall 60\n")
        env.write_conf("relayhost = [127.0.0.1]:%d\nretry.min = 1s\n"
                       "retry.max = 2s\ntimeout.datafinal = 2s\n"
                       "connection_cache_time = 0\n"
                       "dkim_key_file = %s\ndkim_selector = sel\n"
                       "dkim_domain = retry.test\n" % (srv.port, ed))
        drop(env, "r@dst.test", sender="s@retry.test")
        p = start(env)
        msgs = srv.wait_messages(2, timeout=60)
        rqlib.wait_for(lambda: any(d["status"] == "sent"
                                   for d in deliveries(env)), 20,
                       what="the sent line")
        stop(p)
        ds = deliveries(env)
        check_eq([d["status"] for d in ds], ["deferred", "sent"], "statuses")
        first, second = msgs[0][1], msgs[1][1]
        check(first == second, "the retry sent other bytes:\n%r\n%r" %
              (first[:600], second[:600]))
        data = first[:-5] if first.endswith(b"\r\n.\r\n") else first
        data = data.replace(b"\r\n..", b"\r\n.")
        sigs = verify_all(zone, data)
        check_eq(len(sigs), 1, "signatures")


def test_sighup_new_key_and_refused_key():
    """SIGHUP with a new selector and key: later mail carries it (the
    keys follow the config); a reload naming a key others can read is
    refused with FILE:LINE and the running key stays in use."""
    with rqlib.Env() as env:
        zone = Zone(env)
        k1, p1 = keygen(env, "k1", "rsa")
        k2, p2 = keygen(env, "k2", "ed25519")
        zone.publish("one", "hup.test", "rsa", p1)
        zone.publish("two", "hup.test", "ed25519", p2)
        _, port, dd = sink(env)
        conf = ("relayhost = [127.0.0.1]:%d\ndkim_domain = hup.test\n"
                "dkim_selector = %s\ndkim_key_file = %s\n")
        env.write_conf(conf % (port, "one", k1))
        p = start(env)
        drop(env, "a@dst.test", sender="x@hup.test")
        got = received_by(dd, 1)
        os.chmod(k2, 0o644)
        env.write_conf(conf % (port, "two", k2))
        p.send_signal(signal.SIGHUP)
        rqlib.wait_for(lambda: "reload refused" in env.log_text(), 10,
                       what="the refused reload")
        check(re.search(r"reload refused.*relayq\.conf:8: dkim_key_file "
                        r".*k2\.pem: mode 0644", env.log_text()),
              env.log_text()[-1500:])
        drop(env, "b@dst.test", sender="x@hup.test")
        got = received_by(dd, 2)
        os.chmod(k2, 0o600)
        p.send_signal(signal.SIGHUP)
        rqlib.wait_for(lambda: "reloaded configuration" in env.log_text(),
                       10, what="the reload")
        drop(env, "c@dst.test", sender="x@hup.test")
        got = received_by(dd, 3)
        stop(p)
        want = {"a@dst.test": b"one", "b@dst.test": b"one",
                "c@dst.test": b"two"}
        for rcpt, sel in want.items():
            sigs = verify_all(zone, got[rcpt])
            check_eq([s[b"s"] for s in sigs], [sel], "selector for " + rcpt)


def test_signed_after_sender_rewriting():
    """sender_map rewrites From: @host.lan to @rw.test at intake; the
    signature is made after that, for rw.test (whose key it finds by
    the rewritten domain), and verifies on the rewritten bytes."""
    with rqlib.Env() as env:
        zone = Zone(env)
        ed, ed_p = keygen(env, "ed", "ed25519")
        zone.publish("rw", "rw.test", "ed25519", ed_p)
        smap = os.path.join(env.dir, "senders")
        with open(smap, "w") as f:
            f.write("@host.lan @rw.test\n")
        _, port, dd = sink(env)
        env.write_conf("relayhost = [127.0.0.1]:%d\nsender_map = %s\n"
                       "dkim_key_file = %s\ndkim_selector = rw\n"
                       "dkim_domain = rw.test\n" % (port, smap, ed))
        drop(env, "a@dst.test", sender="app@host.lan")
        run_idle(env)
        msg = received_by(dd, 1)["a@dst.test"]
        check(b"\r\nFrom: app@rw.test\r\n" in msg, msg[:800])
        sigs = verify_all(zone, msg)
        check_eq([(s[b"d"], s[b"s"]) for s in sigs], [(b"rw.test", b"rw")],
                 "signatures")


if __name__ == "__main__":
    rqlib.main(globals())
