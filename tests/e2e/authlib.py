"""authlib - helpers for the SMTP AUTH / smarthost end-to-end tests
(test_smtp_auth.py, test_runner_auth.py, test_exim_auth.py): an
authenticating aiosmtpd (STARTTLS or implicit TLS, PLAIN/LOGIN and
XOAUTH2/OAUTHBEARER, client certificates), auth files, token commands,
fingerprints, and the check that no secret ever shows up in anything a
test captured.  Not a test itself.  Run with /usr/bin/python3.
"""
import base64
import json
import os
import re
import subprocess

import faultlib
import rqlib

PASSWORD = "Pw-7b1f9c-S3cr3t"
TOKEN = "ya29.tok-4d7e0a9c-S3cr3t"

SERVER = r'''
import asyncio, base64, json, signal, ssl, sys, threading
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

cfg = json.load(open(sys.argv[1]))
out, attempts = cfg["out"], cfg["attempts"]

def note(path, d):
    with open(path, "a") as f:
        f.write(json.dumps(d) + "\n")

def tls_of(server, session):
    if session.ssl is not None:
        return True
    t = server.transport
    return t is not None and t.get_extra_info("ssl_object") is not None

def authenticator(server, session, envelope, mechanism, data):
    login = data.login.decode(errors="replace")
    ok = cfg["users"].get(login) == data.password.decode(errors="replace")
    note(attempts, {"mech": mechanism, "login": login, "ok": ok,
                    "tls": tls_of(server, session)})
    if ok:
        return AuthResult(success=True, auth_data=data)
    if cfg.get("fail_reply"):
        return AuthResult(success=False, handled=False,
                          message=cfg["fail_reply"])
    return AuthResult(success=False, handled=False)

class Handler:
    async def handle_DATA(self, server, session, envelope):
        peer = server.transport.get_extra_info("peercert") \
            if server.transport else None
        cn = None
        if peer:
            for rdn in peer.get("subject", ()):
                for k, v in rdn:
                    if k == "commonName":
                        cn = v
        note(out, {"tls": tls_of(server, session),
                   "login": session.login_data.decode()
                   if isinstance(session.login_data, bytes)
                   else session.login_data,
                   "authenticated": session.authenticated,
                   "client_cn": cn, "from": envelope.mail_from,
                   "rcpts": envelope.rcpt_tos})
        return "250 2.0.0 Ok: queued by aiosmtpd-auth"

    async def oauth(self, server, args, mech):
        if len(args) < 2:
            return AuthResult(success=False, handled=False,
                              message="501 5.5.2 no IR")
        raw = base64.b64decode(args[1])
        user = tok = None
        if mech == "XOAUTH2":
            for part in raw.split(b"\x01"):
                if part.startswith(b"user="):
                    user = part[5:].decode()
                if part.startswith(b"auth=Bearer "):
                    tok = part[12:].decode()
        else:
            gs2, _, rest = raw.partition(b"\x01")
            for f in gs2.split(b","):
                if f.startswith(b"a="):
                    user = f[2:].decode().replace("=2C", ",").replace(
                        "=3D", "=")
            for part in rest.split(b"\x01"):
                if part.startswith(b"auth=Bearer "):
                    tok = part[12:].decode()
        ok = user is not None and cfg["tokens"].get(user) == tok
        note(attempts, {"mech": mech, "login": user, "ok": ok,
                        "tls": server.transport.get_extra_info(
                            "ssl_object") is not None})
        if ok:
            return AuthResult(success=True, auth_data=user)
        err = json.dumps({"status": "401", "schemes": "Bearer",
                          "scope": "https://mail.example/"}).encode()
        ack = await server.challenge_auth(err)
        note(attempts, {"ack": base64.b64encode(ack).decode()
                        if isinstance(ack, bytes) else None})
        return AuthResult(success=False, handled=False,
                          message="535 5.7.8 Username and Password not "
                                  "accepted")

    async def auth_XOAUTH2(self, server, args):
        return await self.oauth(server, args, "XOAUTH2")

    async def auth_OAUTHBEARER(self, server, args):
        return await self.oauth(server, args, "OAUTHBEARER")

def context():
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cfg["cert"], cfg["key"])
    if cfg.get("client_ca"):
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cfg["client_ca"])
    return ctx

kw = dict(authenticator=authenticator,
          auth_require_tls=cfg.get("require_tls", True),
          auth_exclude_mechanism=cfg.get("exclude", []))
if cfg.get("cert") and cfg.get("implicit"):
    kw["ssl_context"] = context()
    kw["auth_require_tls"] = False  # aiosmtpd sees no STARTTLS
elif cfg.get("cert"):
    kw["tls_context"] = context()
handler = Handler()
if not cfg.get("oauth"):
    del Handler.auth_XOAUTH2
    del Handler.auth_OAUTHBEARER
c = Controller(handler, hostname="127.0.0.1", port=cfg["port"], **kw)
c.start()
print("ready", flush=True)
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: done.set())
done.wait()
c.stop()
'''


class AuthServer:
    """An authenticating aiosmtpd on 127.0.0.1: .port, .messages(),
    .attempts().  USERS {login: password}, TOKENS {user: token}; CERT
    (cert, key) for STARTTLS, or implicit TLS with implicit=True;
    exclude: mechanisms not offered; client_ca: require a client
    certificate signed by it; require_tls: AUTH offered only over
    (STARTTLS) TLS; fail_reply: the reply to a failed AUTH (else 535)."""

    def __init__(self, env, users=None, tokens=None, cert=None,
                 implicit=False, exclude=(), client_ca=None,
                 require_tls=True, oauth=False, fail_reply=None):
        srv = os.path.join(env.dir, "srv")   # secrets live here
        os.makedirs(srv, exist_ok=True)
        script = os.path.join(srv, "aio_auth.py")
        with open(script, "w") as f:
            f.write(SERVER)
        self.port = rqlib.free_port()
        self.out = os.path.join(srv, "msgs-%d.jsonl" % self.port)
        self.att = os.path.join(srv, "auth-%d.jsonl" % self.port)
        conf = os.path.join(srv, "aio-%d.json" % self.port)
        with open(conf, "w") as f:
            json.dump({"port": self.port, "out": self.out,
                       "attempts": self.att,
                       "users": users or {}, "tokens": tokens or {},
                       "cert": cert[0] if cert else None,
                       "key": cert[1] if cert else None,
                       "implicit": implicit, "exclude": list(exclude),
                       "client_ca": client_ca, "require_tls": require_tls,
                       "oauth": oauth, "fail_reply": fail_reply}, f)
        self.proc = env.spawn(["/usr/bin/python3", script, conf],
                              stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
        line = self.proc.stdout.readline()
        if not line.startswith(b"ready"):
            raise rqlib.Fail("aiosmtpd did not start: %s" %
                             self.proc.stderr.read()[-2000:])
        rqlib.wait_port(self.port)

    def _read(self, path):
        try:
            with open(path) as f:
                return [json.loads(l) for l in f]
        except FileNotFoundError:
            return []

    def messages(self):
        return self._read(self.out)

    def attempts(self):
        return [a for a in self._read(self.att) if "mech" in a]

    def acks(self):
        return [a["ack"] for a in self._read(self.att) if "ack" in a]


def _openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def client_cert(d, cn="relayq-client"):
    """A CA and a client certificate (extendedKeyUsage clientAuth) for
    CN signed by it: (ca, cert, key); the key mode 0600."""
    os.makedirs(d, exist_ok=True)
    ca, cakey = os.path.join(d, "client-ca.pem"), os.path.join(d, "ca.key")
    key, csr = os.path.join(d, "client.key"), os.path.join(d, "client.csr")
    cert, ext = os.path.join(d, "client.pem"), os.path.join(d, "client.ext")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
             cakey, "-out", ca, "-days", "2", "-subj", "/CN=client test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:FALSE\n"
                "keyUsage=digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=clientAuth\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out",
             csr, "-subj", "/CN=%s" % cn)
    _openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", cakey,
             "-CAcreateserial", "-out", cert, "-days", "2", "-extfile", ext)
    os.chmod(key, 0o600)
    return ca, cert, key


def certs(env):
    """A CA and a server certificate for localhost/127.0.0.1, and a
    client CA with a client certificate signed by it: (ca, (cert, key),
    client_ca, (client_cert, client_key))."""
    d = os.path.join(env.dir, "tls")
    ca, cert, key = faultlib.make_cert(d, "localhost",
                                       ["localhost", "127.0.0.1"])
    client_ca, ccert, ckey = client_cert(os.path.join(env.dir, "tls-client"))
    return ca, (cert, key), client_ca, (ccert, ckey)


def fingerprints(cert):
    """(certificate digest, public key digest), as SHA256:XX:XX:..."""
    out = subprocess.run(["openssl", "x509", "-in", cert, "-noout",
                          "-fingerprint", "-sha256"], check=True,
                         stdout=subprocess.PIPE).stdout.decode()
    c = "SHA256:" + out.strip().split("=", 1)[1]
    pub = subprocess.run(["openssl", "x509", "-in", cert, "-noout",
                          "-pubkey"], check=True,
                         stdout=subprocess.PIPE).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"],
                         input=pub, check=True,
                         stdout=subprocess.PIPE).stdout
    dg = subprocess.run(["openssl", "dgst", "-sha256", "-hex"], input=der,
                        check=True, stdout=subprocess.PIPE).stdout.decode()
    k = dg.strip().split("= ", 1)[1].upper()
    return c, "SHA256:" + ":".join(k[i:i + 2] for i in range(0, 64, 2))


def auth_file(env, lines, name="auth", mode=0o600):
    """Writes an auth_file (mode 0600 unless told); returns its path."""
    path = os.path.join(env.dir, name)
    with open(path, "w") as f:
        f.write("# relayq credentials (test)\n")
        for l in lines:
            f.write(l + "\n")
    os.chmod(path, mode)
    return path


def token_command(env, token=TOKEN, name="get-token", exit_code=0,
                  stderr="", sleep=0):
    """Writes an executable that records its arguments (one JSON line a
    run in NAME.runs), prints TOKEN, writes STDERR and exits EXIT_CODE,
    after SLEEP seconds (its pid in NAME.pid).  Returns its path."""
    path = os.path.join(env.dir, "srv", name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("#!/usr/bin/python3\nimport json, os, sys, time\n"
                "open(%r, 'w').write(str(os.getpid()))\n"
                "open(%r, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
                "time.sleep(%r)\n"
                "sys.stderr.write(%r)\n"
                "print(%r)\nprint('second line is ignored')\n"
                "sys.exit(%d)\n" % (path + ".pid", path + ".runs", sleep,
                                    stderr, token, exit_code))
    os.chmod(path, 0o755)
    return path


def token_runs(path):
    try:
        with open(path + ".runs") as f:
            return [json.loads(l) for l in f]
    except FileNotFoundError:
        return []


def secret_forms(secret, users=("user",)):
    """The secret and the encodings it could leak in: itself, base64 of
    it, and of the PLAIN and XOAUTH2 responses carrying it."""
    forms = [secret.encode()]
    forms.append(base64.b64encode(secret.encode()).rstrip(b"="))
    for u in users:
        for raw in ("\0%s\0%s" % (u, secret),
                    "user=%s\x01auth=Bearer %s\x01\x01" % (u, secret)):
            forms.append(base64.b64encode(raw.encode()).rstrip(b"=")[:-4])
    # a distinctive part, in case of truncation
    forms.append(secret[-10:].encode())
    return forms


def assert_no_secret(env, secrets, texts=(), skip=("srv",), users=("user",)):
    """Fails if any secret (or an encoding of it) appears in TEXTS (str or
    bytes) or in any file under env.dir, except the auth files (named
    auth*), files under SKIP (server side) and the LMDB environment's
    compressed bodies (checked through `relayq show` by callers)."""
    forms = []
    for s in secrets:
        forms += secret_forms(s, users)
    blobs = []
    for t in texts:
        blobs.append(("captured output", t.encode() if isinstance(t, str)
                      else t))
    for root, dirs, files in os.walk(env.dir):
        rel = os.path.relpath(root, env.dir)
        if rel.split(os.sep)[0] in skip:
            continue
        for n in files:
            if n.startswith("auth") and rel == ".":
                continue
            p = os.path.join(root, n)
            try:
                with open(p, "rb") as f:
                    blobs.append((p, f.read()))
            except OSError:
                pass
    for where, b in blobs:
        for f in forms:
            if f and f in b:
                i = b.find(f)
                raise rqlib.Fail("secret %r found in %s: ...%r..." %
                                 (f, where, b[max(0, i - 80):i + 80]))
    return len(blobs)


def ps_text():
    """Every process's command line (what `ps` shows)."""
    return subprocess.run(["ps", "-eo", "args"], stdout=subprocess.PIPE
                          ).stdout.decode(errors="replace")


def reason_has(text, *parts):
    for p in parts:
        if not re.search(p, text):
            raise rqlib.Fail("%r not in reason %r" % (p, text))
