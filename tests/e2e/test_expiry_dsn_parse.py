"""Parses every golden notice (tests/e2e/golden/dsn/*.eml, written by the
DSN builder with a fixed clock and boundary and compared byte for byte by
the expiry_dsn unit test) with Python's email package, and checks the
content type, report-type and every field relayq promises."""
import glob
import os

import rqlib
from rqlib import check, check_eq
from test_expiry_lib import parse_dsn, rcpt

GOLDEN = os.path.join(rqlib.SRC, "tests", "e2e", "golden", "dsn")


def load(name):
    with open(os.path.join(GOLDEN, name + ".eml"), "rb") as f:
        return parse_dsn(f.read(), hostname="relayq.test")


def test_every_golden_parses():
    files = sorted(glob.glob(os.path.join(GOLDEN, "*.eml")))
    check(len(files) >= 7, "golden files missing: %r" % files)
    for f in files:
        with open(f, "rb") as fp:
            try:
                parse_dsn(fp.read(), hostname="relayq.test")
            except rqlib.Fail as e:
                raise rqlib.Fail("%s: %s" % (os.path.basename(f), e))


def test_failed_5xx():
    d = load("failed-5xx")
    check_eq(d.to, "alice@example.org", "To")
    check_eq(d.action, "failed", "action")
    check_eq(d.per_msg["original-envelope-id"], "Q4+report", "ENVID")
    check_eq(d.per_msg["x-relayq-queue-id"], "00000000000004D2", "queue id")
    check_eq(d.per_msg["arrival-date"], "Wed, 18 Nov 2026 07:06:40 +0000",
             "Arrival-Date")
    r = rcpt(d, "bob@example.net")
    check_eq(r["original-recipient"], "rfc822;bob+work@example.net", "ORCPT")
    check_eq(r["status"], "5.1.1", "Status")
    check_eq(r["remote-mta"], "dns; mx.example.net", "Remote-MTA")
    check(r["diagnostic-code"].startswith("smtp; 550 5.1.1 <bob@example.net>"
                                          ": Recipient address rejected"),
          r["diagnostic-code"])
    check_eq(r["last-attempt-date"], "Wed, 18 Nov 2026 11:06:39 +0000",
             "Last-Attempt-Date")
    check(not d.full, "RET=HDRS gives text/rfc822-headers")
    check_eq(d.orig["Subject"], "Quarterly report", "original Subject")
    check(b"the numbers are in" not in d.raw, "body returned with HDRS")
    check("could not\nbe delivered" in d.text.replace("\r\n", "\n"),
          "human text")


def test_delayed():
    d = load("delayed")
    check_eq(d.action, "delayed", "action")
    check_eq(len(d.rcpts), 2, "recipients")
    for a in ("bob@example.net", "carol@example.net"):
        r = rcpt(d, a)
        check_eq(r["will-retry-until"], "Mon, 23 Nov 2026 07:06:40 +0000",
                 "Will-Retry-Until")
    check("original-envelope-id" not in d.per_msg, "no ENVID given")
    check("THIS IS A WARNING ONLY" in d.text, "warning text")
    check("for 4 hours" in d.text and "until it is 5 days old" in d.text,
          d.text)
    check(not d.full, "delay notices carry headers only")


def test_expired_full():
    d = load("expired-full")
    check_eq(d.action, "failed", "action")
    check_eq([r["status"] for r in d.rcpts], ["4.4.7", "4.4.7"], "statuses")
    check(d.full, "RET=FULL gives message/rfc822")
    check_eq(d.orig["Subject"], "Quarterly report", "original Subject")
    check_eq(d.orig.get_payload(), "Hello Bob,\r\nthe numbers are in.\r\n"
             if "\r\n" in d.orig.get_payload() else
             "Hello Bob,\nthe numbers are in.\n", "original body")
    check("diagnostic-code" not in rcpt(d, "carol@example.net"),
          "no Diagnostic-Code without a reply")


def test_success():
    for name, action in (("delivered", "delivered"), ("relayed", "relayed")):
        d = load(name)
        check_eq(d.action, action, name)
        check_eq(rcpt(d, "bob@example.net")["status"], "2.0.0", "Status")
        check("successfully delivered" in d.text, "text")


def test_hostile():
    d = load("hostile")
    # Injected CR/LF never starts a header or field of its own.
    for k in d.msg.keys():
        check(k.lower() not in ("bcc", "injected", "x-evil"), "header %s" % k)
    check("x-evil" not in d.per_msg, "ENVID injection")
    r = d.rcpts[0]
    check_eq(set(r.keys()) - {"addr"},
             {"original-recipient", "final-recipient", "action", "status",
              "remote-mta", "diagnostic-code", "last-attempt-date"},
             "fields")
    check_eq(r["status"], "5.0.0", "malformed status replaced")
    check(len(r["diagnostic-code"]) < 520, "Diagnostic-Code bounded")
    for line in d.raw.split(b"\r\n"):
        check(len(line) <= 998, "line over 998 bytes")
    check_eq(d.msg["Content-Transfer-Encoding"], "8bit", "8-bit original")


def test_size_cap():
    d = load("size-cap")
    check(d.full, "RET=FULL")
    body = d.orig_part.as_bytes()
    check(len(d.raw) < 4096, "size-capped notice is %d bytes" % len(d.raw))
    check(b"line 00000" in d.raw and b"line 00100" not in d.raw, "cut")


if __name__ == "__main__":
    rqlib.main(globals())
