"""dnsseclib - a hermetic DNSSEC world for relayq's tests: zones signed
with ldns-signzone at run time, served by nsd on a loopback port, behind
a validating unbound on another loopback port that trusts the test
zone's key (a trust anchor file) and nothing else.

    import dnsseclib
    dns = dnsseclib.start(env, {"test.": TEXT, "insecure.": TEXT},
                          signed=["test."], tamper=["_25._tcp.mx.test."])
    ... dns_server = 127.0.0.1:dns.port ...

A zone TEXT is the master file body (no $ORIGIN, no SOA/NS: added here).
Zones in SIGNED are signed (KSK and ZSK, ECDSA P-256, NSEC); the others
are served unsigned and, having no trust anchor above them, are insecure.
TAMPER names owners whose RRSIG signatures are corrupted after signing,
so unbound finds that RRset bogus (SERVFAIL).  unbound is told
`local-zone: "test." nodefault` (test. is one of its built-in empty
zones) and `do-not-query-localhost: no`.  tlsa_311(cert) gives the
"3 1 1" data of a PEM certificate (SHA-256 of its public key).
"""
import base64
import hashlib
import os
import socket
import subprocess
import time

import rqlib

NSD = "/usr/sbin/nsd"
UNBOUND = "/usr/sbin/unbound"
KEYGEN = "/usr/bin/ldns-keygen"
SIGNZONE = "/usr/bin/ldns-signzone"


def available():
    """Whether nsd, unbound and the ldns tools are installed."""
    return all(os.path.exists(p) for p in (NSD, UNBOUND, KEYGEN, SIGNZONE))


def tlsa_spki(cert, digest="sha256"):
    """The hex digest of the SubjectPublicKeyInfo of PEM file CERT."""
    pub = subprocess.run(["openssl", "x509", "-in", cert, "-noout",
                          "-pubkey"], check=True,
                         stdout=subprocess.PIPE).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"],
                         input=pub, check=True,
                         stdout=subprocess.PIPE).stdout
    return hashlib.new(digest, der).hexdigest()


def tlsa_cert(cert, digest="sha256"):
    """The hex digest of the whole (DER) certificate in PEM file CERT."""
    der = subprocess.run(["openssl", "x509", "-in", cert, "-outform",
                          "DER"], check=True,
                         stdout=subprocess.PIPE).stdout
    return hashlib.new(digest, der).hexdigest()


def _sign(d, zone, path):
    """Signs zone file PATH of ZONE in directory D; returns the signed
    file's path and the KSK's DS record text."""
    keys = []
    for ksk in (False, True):
        args = [KEYGEN, "-a", "ECDSAP256SHA256"] + (["-k"] if ksk else [])
        out = subprocess.run(args + [zone], cwd=d, check=True,
                             stdout=subprocess.PIPE).stdout.decode().strip()
        keys.append(out)
    subprocess.run([SIGNZONE, "-o", zone, path] + keys, cwd=d, check=True)
    with open(os.path.join(d, keys[1] + ".ds")) as f:
        ds = f.read()
    return path + ".signed", ds


def _tamper(path, owners):
    """Corrupts the RRSIG signatures of OWNERS in signed zone PATH."""
    with open(path) as f:
        lines = f.read().splitlines()
    out, hit = [], 0
    for line in lines:
        f = line.split()
        if len(f) > 4 and f[0] in owners and f[3] == "RRSIG" and \
                f[4] != "NSEC":
            sig = base64.b64decode("".join(f[12:]))
            sig = bytes([sig[0] ^ 0xff]) + sig[1:]
            line = " ".join(f[:12] + [base64.b64encode(sig).decode()])
            hit += 1
        out.append(line)
    if hit == 0:
        raise rqlib.Fail("tamper: no RRSIG of %s in %s" % (owners, path))
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def _wait_udp(port, name, timeout=20.0):
    """Waits until a DNS server on 127.0.0.1:PORT answers a query for
    NAME (SOA) at all."""
    qname = b"".join(bytes([len(l)]) + l.encode()
                     for l in name.rstrip(".").split(".")) + b"\0"
    q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + qname + \
        b"\x00\x06\x00\x01"
    end = time.time() + timeout
    while time.time() < end:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(0.5)
        try:
            s.sendto(q, ("127.0.0.1", port))
            if s.recv(4096)[:2] == b"\x12\x34":
                return
        except OSError:
            time.sleep(0.1)
        finally:
            s.close()
    raise rqlib.Fail("no DNS answer on 127.0.0.1:%d" % port)


class World:
    """nsd and unbound, running: .port is unbound's (dns_server)."""

    def __init__(self, env, zones, signed, tamper, name="dns"):
        self.dir = os.path.join(env.dir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.nsd_port = rqlib.free_port()
        self.port = rqlib.free_port()
        anchors = []
        files = {}
        for zone, text in zones.items():
            name = zone.rstrip(".") or "root"
            path = os.path.join(self.dir, name + ".zone")
            with open(path, "w") as f:
                f.write("$ORIGIN %s\n$TTL 300\n"
                        "@ SOA ns.%s hostmaster.%s 1 3600 600 86400 300\n"
                        "@ NS ns.%s\nns A 127.0.0.1\n%s\n" %
                        (zone, zone, zone, zone, text))
            if zone in signed:
                path, ds = _sign(self.dir, zone, path)
                anchors.append(ds)
                owners = [o for o in tamper if o.endswith("." + zone)]
                if owners:
                    _tamper(path, owners)
            files[zone] = path
        with open(os.path.join(self.dir, "anchors"), "w") as f:
            f.write("".join(anchors))
        conf = os.path.join(self.dir, "nsd.conf")
        with open(conf, "w") as f:
            f.write('server:\n  ip-address: 127.0.0.1\n  port: %d\n'
                    '  username: ""\n  chroot: ""\n  database: ""\n'
                    '  zonesdir: "%s"\n  pidfile: "%s/nsd.pid"\n'
                    '  logfile: "%s/nsd.log"\n  xfrdfile: "%s/xfrd.state"\n'
                    '  zonelistfile: "%s/zone.list"\n  xfrdir: "%s"\n'
                    '  server-count: 1\n  verbosity: 1\n'
                    'remote-control:\n  control-enable: no\n' %
                    ((self.nsd_port,) + (self.dir,) * 6))
            for zone, path in files.items():
                f.write('zone:\n  name: "%s"\n  zonefile: "%s"\n' %
                        (zone, path))
        self.nsd = env.spawn([NSD, "-d", "-c", conf],
                             stdout=subprocess.DEVNULL,
                             stderr=open(os.path.join(self.dir, "nsd.err"),
                                         "w"))
        _wait_udp(self.nsd_port, list(zones)[0])
        uconf = os.path.join(self.dir, "unbound.conf")
        with open(uconf, "w") as f:
            f.write('server:\n  interface: 127.0.0.1\n  port: %d\n'
                    '  do-ip6: no\n  do-daemonize: no\n  username: ""\n'
                    '  chroot: ""\n  directory: "%s"\n  pidfile: ""\n'
                    '  use-syslog: no\n  logfile: "%s/unbound.log"\n'
                    '  verbosity: 1\n  val-log-level: 2\n'
                    '  num-threads: 1\n  do-not-query-localhost: no\n'
                    '  access-control: 127.0.0.0/8 allow\n'
                    '  module-config: "validator iterator"\n'
                    '  trust-anchor-file: "%s/anchors"\n'
                    '  trust-anchor-signaling: no\n'
                    '  root-key-sentinel: no\n'
                    '  harden-dnssec-stripped: yes\n'
                    '  local-zone: "test." nodefault\n'
                    'remote-control:\n  control-enable: no\n' %
                    (self.port, self.dir, self.dir, self.dir))
            for zone in zones:
                f.write('stub-zone:\n  name: "%s"\n'
                        '  stub-addr: 127.0.0.1@%d\n' % (zone,
                                                         self.nsd_port))
        self.unbound = env.spawn([UNBOUND, "-d", "-c", uconf],
                                 stdout=subprocess.DEVNULL,
                                 stderr=open(os.path.join(self.dir,
                                                          "unbound.err"),
                                             "w"))
        _wait_udp(self.port, list(zones)[0])


def start(env, zones, signed=(), tamper=(), name="dns"):
    """Starts the DNSSEC world (see the top) in env.dir/NAME (another
    NAME for a second world with other data); returns a World."""
    if not available():
        raise rqlib.Fail("nsd, unbound or ldnsutils missing "
                         "(tools/install-deps.sh --test)")
    return World(env, zones, list(signed), list(tamper), name)


def dig(port, name, rtype):
    """Asks unbound on PORT with drill (ldnsutils): returns its output."""
    return subprocess.run(["drill", "-p", str(port), "-D", name, rtype,
                           "@127.0.0.1"], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT).stdout.decode()


