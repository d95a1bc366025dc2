"""End-to-end interop tests of the smtp client against Postfix's smtp-sink:
plain delivery with connection reuse, and smtp-sink's fault options
(rejecting with 4xx/5xx, 421, disconnecting after chosen commands, no
ESMTP / no PIPELINING / no enhanced status codes, a delayed DATA reply).
Run with /usr/bin/python3.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rqlib  # noqa: E402
from rqlib import check, check_eq  # noqa: E402
from test_smtp_lib import SANITIZE, sink, smtpc  # noqa: E402

BASE = "tls = none\n"


def test_deliver_and_reuse():
    """Messages with several recipients reach smtp-sink over reused
    connections; each is dumped once."""
    n = 20 if SANITIZE else 60
    with rqlib.Env() as env:
        dump = os.path.join(env.dir, "dump")
        _, port = sink(env, dump_dir=dump)
        r = smtpc(env, ["127.0.0.1:%d" % port], ["a@x.test", "b@x.test",
                                                  "c@y.test"],
                  conf=BASE, args=("-n", str(n), "-p", "4", "-z", "3000"))
        check_eq(len(r.results), n)
        for x in r.results:
            check_eq([c["cls"] for c in x["rcpts"]], [2, 2, 2])
        check(sum(1 for x in r.results if x["reused"]) >= n - 8,
              "connections reused")
        rqlib.wait_for(lambda: len(os.listdir(dump)) >= n, 10,
                       what="dump files")
        check_eq(len(os.listdir(dump)), n)
        with open(os.path.join(dump, sorted(os.listdir(dump))[0]),
                  "rb") as f:
            body = f.read()
        check(b"Subject: smtpc test" in body, "dumped message")


# (smtp-sink options, conf, expected classes per message, code, phase, text)
FAULTS = [
    (["-r", "RCPT"], "", 4, 450, "RCPT TO", "450 4.3.0"),
    (["-f", "RCPT"], "", 5, 500, "RCPT TO", "500 5.3.0"),
    (["-f", "MAIL"], "", 5, 500, "MAIL FROM", "command failed"),
    (["-r", "DATA"], "", 4, 450, "DATA", "450"),
    (["-f", "."], "", 5, 500, "end of DATA", "500"),
    (["-r", "."], "", 4, 450, "end of DATA", "450"),
    (["-Q", "MAIL"], "", 4, 421, "MAIL FROM", "421"),
    (["-Q", "RCPT"], "", 4, 421, "RCPT TO", "421"),
    (["-q", "RCPT"], "", 4, 0, "RCPT TO", "lost connection"),
    (["-q", "DATA"], "", 4, 0, "DATA", "lost connection"),
    (["-q", "."], "", 4, 0, "end of DATA", "lost connection"),
    (["-q", "EHLO"], "", 4, 0, "EHLO", "lost connection"),
    (["-f", "CONNECT"], "", 4, 500, "greeting", "500"),
    # -w delays the reply to DATA (without -p smtp-sink holds the
    # pipelined MAIL and RCPT replies back with it)
    (["-p", "-w", "4"], "timeout.datainit = 1s\n", 4, 0, "DATA",
     "timeout after DATA"),
    # (-W answers pipelined commands out of order: use -p)
    (["-p", "-W", "RCPT:4"], "timeout.rcpt = 1s\n", 4, 0, "RCPT TO",
     "timeout after RCPT TO"),
    (["-e"], "", 2, 250, "end of DATA", "250"),
    (["-p"], "", 2, 250, "end of DATA", "250"),
    (["-E"], "", 2, 250, "end of DATA", "250 2.0.0"),
    (["-E", "-p", "-N", "-e"], "", 2, 250, "end of DATA", "250"),
]


def test_sink_fault_options():
    """Each of smtp-sink's fault options gives the expected class, code,
    phase and text."""
    for opts, conf, cls, code, phase, text in FAULTS:
        with rqlib.Env() as env:
            _, port = sink(env, opts)
            r = smtpc(env, ["127.0.0.1:%d" % port], conf=BASE + conf,
                      args=("-N", "success,failure", "-O"))
            rc = r.one()
            what = " ".join(opts)
            check_eq(rc["cls"], cls, what)
            check_eq(rc["code"], code, what)
            check_eq(rc["phase"], phase, what)
            check(text in rc["text"], "%s: %r" % (what, rc["text"]))


if __name__ == "__main__":
    rqlib.main(globals())
