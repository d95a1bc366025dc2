"""test_expiry_lib - parsing and checking relayq's delivery status
notifications (RFC 3464) with Python's email package, shared by the
expiry tests.  Not a test itself (expiry.cmake does not register it).

parse_dsn(raw_bytes) returns a Dsn with the top-level message, the three
parts, the per-message fields and a list of per-recipient field dicts, and
checks the structure every notice must have; it raises rqlib.Fail.
"""
import email
import email.policy
import email.utils
import re

import rqlib
from rqlib import check, check_eq

SUBJECTS = {
    "failed": "Undelivered Mail Returned to Sender",
    "delayed": "Delayed Mail (still being retried)",
    "delivered": "Successful Mail Delivery Report",
    "relayed": "Successful Mail Delivery Report",
}

STATUS_RE = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")


class Dsn:
    pass


def _date_ok(v):
    return v is not None and email.utils.parsedate_to_datetime(v) is not None


def _fields(msg):
    """A block of the delivery-status part as a {lowercase name: value}
    dict (values unfolded)."""
    out = {}
    for k, v in msg.items():
        k = k.lower()
        check(k not in out, "field %s twice in a block" % k)
        out[k] = " ".join(str(v).split())
    return out


def parse_dsn(raw, hostname=None):
    """Parses RAW (bytes) as a relayq notice and checks its structure."""
    check(b"\n" not in raw.replace(b"\r\n", b""), "bare LF in the notice")
    check(b"\r" not in raw.replace(b"\r\n", b""), "bare CR in the notice")
    m = email.message_from_bytes(raw, policy=email.policy.compat32)
    d = Dsn()
    d.raw = raw
    d.msg = m
    check_eq(m.get_content_type(), "multipart/report", "Content-Type")
    check_eq(m.get_param("report-type"), "delivery-status", "report-type")
    check(m.get_boundary(), "no boundary")
    check_eq(m["MIME-Version"], "1.0", "MIME-Version")
    check_eq(m["Auto-Submitted"], "auto-replied", "Auto-Submitted")
    name, addr = email.utils.parseaddr(m["From"])
    check_eq(name, "Mail Delivery System", "From display name")
    check(addr.startswith("MAILER-DAEMON@"), "From: %r" % m["From"])
    if hostname:
        check_eq(addr, "MAILER-DAEMON@" + hostname, "From")
    check(_date_ok(m["Date"]), "Date: %r" % m["Date"])
    check(re.match(r"^<[^<>@\s]+@[^<>@\s]+>$", m["Message-ID"] or ""),
          "Message-ID: %r" % m["Message-ID"])
    check(m["To"], "no To:")
    d.to = email.utils.parseaddr(m["To"])[1]
    d.subject = m["Subject"]
    parts = m.get_payload()
    check(isinstance(parts, list) and len(parts) == 3,
          "want 3 parts, got %r" % (parts if not isinstance(parts, list)
                                     else len(parts)))
    d.text_part, d.status_part, d.orig_part = parts
    check_eq(d.text_part.get_content_type(), "text/plain", "part 1 type")
    d.text = d.text_part.get_payload(decode=True).decode("ascii")
    check_eq(d.status_part.get_content_type(), "message/delivery-status",
             "part 2 type")
    blocks = d.status_part.get_payload()
    check(isinstance(blocks, list) and len(blocks) >= 2,
          "delivery-status needs a per-message and a per-recipient block")
    d.per_msg = _fields(blocks[0])
    d.rcpts = [_fields(b) for b in blocks[1:]]
    check(d.per_msg.get("reporting-mta", "").startswith("dns; "),
          "Reporting-MTA: %r" % d.per_msg.get("reporting-mta"))
    if hostname:
        check_eq(d.per_msg["reporting-mta"], "dns; " + hostname,
                 "Reporting-MTA")
    if "arrival-date" in d.per_msg:
        check(_date_ok(d.per_msg["arrival-date"]), "Arrival-Date")
    d.queue_id = d.per_msg.get("x-relayq-queue-id")
    actions = set()
    for r in d.rcpts:
        check(r.get("final-recipient", "").startswith("rfc822; "),
              "Final-Recipient: %r" % r.get("final-recipient"))
        r["addr"] = r["final-recipient"][len("rfc822; "):]
        check(r.get("action") in ("failed", "delayed", "delivered",
                                  "relayed", "expanded"),
              "Action: %r" % r.get("action"))
        actions.add(r["action"])
        check(STATUS_RE.match(r.get("status", "")),
              "Status: %r" % r.get("status"))
        check_eq(r["status"][0], {"failed": "5", "delayed": "4",
                                  "delivered": "2", "relayed": "2",
                                  "expanded": "2"}[r["action"]]
                 if r["action"] != "failed" else r["status"][0],
                 "Status class of %s" % r["action"])
        if r["action"] == "failed":
            check(r["status"][0] in "45", "failed with %s" % r["status"])
        for k in ("last-attempt-date", "will-retry-until"):
            if k in r:
                check(_date_ok(r[k]), "%s: %r" % (k, r[k]))
        if r["action"] == "delayed":
            pass
        else:
            check("will-retry-until" not in r,
                  "Will-Retry-Until in a %s notice" % r["action"])
        if "diagnostic-code" in r:
            check(re.match(r"^(smtp|X-relayq); \S", r["diagnostic-code"]),
                  "Diagnostic-Code: %r" % r["diagnostic-code"])
        if "remote-mta" in r:
            check(r["remote-mta"].startswith("dns; "), "Remote-MTA")
        check(r["addr"] in d.text, "recipient %s not in the text" % r["addr"])
    check(len(actions) == 1, "mixed actions %r" % actions)
    d.action = actions.pop()
    check_eq(d.subject, SUBJECTS[d.action], "Subject")
    ot = d.orig_part.get_content_type()
    check(ot in ("text/rfc822-headers", "message/rfc822"),
          "part 3 type %s" % ot)
    d.full = ot == "message/rfc822"
    if d.full:
        d.orig = d.orig_part.get_payload()[0]
        d.orig_raw = d.orig.as_bytes()
    else:
        d.orig_raw = d.orig_part.get_payload(decode=True)
        d.orig = email.message_from_bytes(d.orig_raw,
                                          policy=email.policy.compat32)
    return d


def rcpt(d, addr):
    """The per-recipient fields of ADDR in notice D."""
    for r in d.rcpts:
        if r["addr"] == addr:
            return r
    raise rqlib.Fail("%s not in the notice (%r)" %
                     (addr, [r["addr"] for r in d.rcpts]))
