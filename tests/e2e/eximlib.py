"""eximlib - a real MTA, exim4, as an authenticating server on 127.0.0.1
for the smarthost tests.  Not a test itself.

exim4 conflicts with the postfix package the tests need (smtp-sink), so
it is never installed: its Debian packages are fetched once with
`apt-get download` and unpacked with `dpkg -x` under the build directory
(RELAYQ_BUILD/exim/root), where later runs find them.  Its runtime
libraries come from tools/install-deps.sh --test (libidn12 is the one a
Debian system lacks); the binary looks up its compiled-in user
Debian-exim, which this machine does not have, so it runs under
nss_wrapper (libnss-wrapper) with a passwd file of our own that maps
Debian-exim to nobody.  The config is private: plaintext authenticators
(PLAIN and LOGIN) with one fixed user, AUTH offered only over TLS,
STARTTLS on one port and TLS on connect on another, every message kept
in the spool (queue_only) and logged with its authenticator in the
mainlog.  Needs root (exim only runs a daemon for root).
"""
import fcntl
import glob
import os
import re
import subprocess

import rqlib

PACKAGES = ["exim4-daemon-light", "exim4-base", "exim4-config"]
NSS_WRAPPER = "/usr/lib/x86_64-linux-gnu/libnss_wrapper.so"

CONFIG = r'''
exim_user = Debian-exim
exim_group = Debian-exim
keep_environment = LD_PRELOAD : NSS_WRAPPER_PASSWD : NSS_WRAPPER_GROUP
primary_hostname = exim.test
spool_directory = @DIR@/spool
log_file_path = @DIR@/log/%slog
pid_file_path = @DIR@/exim.pid
daemon_smtp_ports = @STARTTLS@ : @TLS@
tls_on_connect_ports = @TLS@
local_interfaces = 127.0.0.1
host_lookup =
tls_advertise_hosts = *
tls_certificate = @CERT@
tls_privatekey = @KEY@
auth_advertise_hosts = ${if eq{$tls_in_cipher}{}{}{*}}
acl_smtp_rcpt = acl_check_rcpt
queue_only = true
log_selector = +smtp_connection +tls_cipher

begin acl
acl_check_rcpt:
  accept authenticated = *
  deny message = 5.7.1 authentication required

begin authenticators
plain_server:
  driver = plaintext
  public_name = PLAIN
  server_prompts = :
  server_condition = ${if and {{eq{$auth2}{@USER@}}{eq{$auth3}{@PASSWORD@}}}}
  server_set_id = $auth2
login_server:
  driver = plaintext
  public_name = LOGIN
  server_prompts = "Username:: : Password::"
  server_condition = ${if and {{eq{$auth1}{@USER@}}{eq{$auth2}{@PASSWORD@}}}}
  server_set_id = $auth1
'''


def exim_root():
    """The unpacked exim4 tree (fetched and unpacked on first use, under
    a lock, cached in the build directory)."""
    top = os.path.join(rqlib.BUILD, "exim")
    root = os.path.join(top, "root")
    binary = os.path.join(root, "usr", "sbin", "exim4")
    os.makedirs(top, exist_ok=True)
    with open(os.path.join(top, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(binary):
            for old in glob.glob(os.path.join(top, "*.deb")):
                os.unlink(old)
            p = subprocess.run(["apt-get", "download"] + PACKAGES, cwd=top,
                               stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
            if p.returncode != 0:
                raise rqlib.Fail("apt-get download %s failed: %s" %
                                 (" ".join(PACKAGES),
                                  p.stdout.decode()[-1500:]))
            for deb in glob.glob(os.path.join(top, "*.deb")):
                subprocess.run(["dpkg", "-x", deb, root], check=True)
        if not os.path.exists(binary):
            raise rqlib.Fail("no %s after unpacking" % binary)
    return root


class Exim:
    """exim4 -bdf on 127.0.0.1: .starttls and .tls (TLS on connect)
    ports; USER/PASSWORD is the one account; CERT (cert, key) its TLS
    certificate.  .received() gives the mainlog's "<=" lines as dicts
    {id, sender, auth, tls}; .auth_failures() the failed AUTH lines."""

    def __init__(self, env, user, password, cert):
        binary = os.path.join(exim_root(), "usr", "sbin", "exim4")
        self.dir = os.path.join(env.dir, "srv", "exim")
        for d in ("spool", "log"):
            os.makedirs(os.path.join(self.dir, d), exist_ok=True)
        # the reception process runs as Debian-exim (nobody)
        for d in (env.dir, os.path.join(env.dir, "srv")):
            os.chmod(d, 0o711)
        for d in (self.dir, os.path.join(self.dir, "spool"),
                  os.path.join(self.dir, "log")):
            os.chown(d, 65534, 65534)
        key = os.path.join(self.dir, "key.pem")
        with open(cert[1]) as f, open(key, "w") as g:
            g.write(f.read())
        os.chown(key, 65534, 65534)
        os.chmod(key, 0o600)
        os.chmod(os.path.dirname(cert[0]), 0o755)
        os.chmod(cert[0], 0o644)
        with open(os.path.join(self.dir, "passwd"), "w") as f:
            f.write("root:x:0:0:root:/root:/bin/sh\n"
                    "Debian-exim:x:65534:65534:exim:/nonexistent:/bin/false\n"
                    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
        with open(os.path.join(self.dir, "group"), "w") as f:
            f.write("root:x:0:\nDebian-exim:x:65534:\nnogroup:x:65534:\n")
        self.starttls, self.tls = rqlib.free_port(), rqlib.free_port()
        conf = os.path.join(self.dir, "exim.conf")
        text = CONFIG
        for k, v in (("@DIR@", self.dir), ("@STARTTLS@", self.starttls),
                     ("@TLS@", self.tls), ("@CERT@", cert[0]),
                     ("@KEY@", key), ("@USER@", user),
                     ("@PASSWORD@", password)):
            text = text.replace(k, str(v))
        with open(conf, "w") as f:
            f.write(text)
        e = dict(os.environ, LD_PRELOAD=NSS_WRAPPER,
                 NSS_WRAPPER_PASSWD=os.path.join(self.dir, "passwd"),
                 NSS_WRAPPER_GROUP=os.path.join(self.dir, "group"))
        self.proc = env.spawn([binary, "-C", conf, "-bdf"], env=e,
                              stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
        rqlib.wait_port(self.starttls)
        rqlib.wait_port(self.tls)

    def mainlog(self):
        try:
            with open(os.path.join(self.dir, "log", "mainlog")) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def received(self):
        out = []
        for line in self.mainlog().splitlines():
            m = re.search(r" (\S+) <= (\S+) ", line)
            if m:
                x = re.search(r" X=(\S+)", line)
                a = re.search(r" A=(\S+)", line)
                out.append({"id": m.group(1), "sender": m.group(2),
                            "tls": x.group(1) if x else None,
                            "auth": a.group(1) if a else None})
        return out

    def auth_failures(self):
        return [l for l in self.mainlog().splitlines()
                if "authenticator failed" in l]
