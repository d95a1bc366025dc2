"""Log lines cannot be forged (issue 10, item 7): a spool file whose name
holds a newline and the text of a delivery line does not make a line of
its own in the log; every control byte from outside is logged as '?'."""
import os
import re
import time

import rqlib
from rqlib import check, check_eq

FAKE = ("Nov 29 03:07:40 relayq relayq-smtp[1]: 0000000000000001: "
        "to=<victim@example.com>, relay=mx.example.com[192.0.2.1]:25, "
        "delay=1, dsn=2.0.0, status=sent (250 ok)")
STAMP = re.compile(r"^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d relayq "
                   r"relayq/[a-z]+\[\d+\]: ")


def test_forged_name():
    with rqlib.Env("relayhost = [127.0.0.1]:1\nretry.min = 1h\n") as env:
        inc = os.path.join(env.spool, "incoming")
        os.makedirs(inc, exist_ok=True)
        names = ["x\n" + FAKE, "y\r" + FAKE, "z\x1b[2K\x7f" + FAKE]
        for n in names:
            # empty files: each goes to bad/, and that is logged with
            # its name
            open(os.path.join(inc, n), "wb").close()
        env.run("run", "--exit-when-idle", check_rc=0, timeout=60)
        with open(env.log, "rb") as f:
            raw = f.read()
        lines = raw.decode(errors="replace").split("\n")
        check(not any(l.startswith(FAKE) for l in lines), "forged line")
        check(all("status=sent" not in l or "bad/" in l for l in lines),
              "a status=sent line")
        check_eq(lines[-1], "", "log ends with a newline")
        for line in lines[:-1]:
            check(STAMP.match(line), "a line not written by relayq: %r" %
                  line)
        for b in (b"\r", b"\x1b", b"\x7f", b"\x00", b"\t"):
            check(b not in raw, "%r in the log" % b)
        # the names are there, escaped in place: intake writes file
        # names with \xNN escapes (relayq(8), SPOOL DIRECTORY); any
        # control byte left is a '?'
        for pfxs in (("x?", "x\\x0a"), ("y?", "y\\x0d"),
                     ("z?[2K?", "z\\x1b[2K\\x7f")):
            check(any(p + FAKE in l for l in lines for p in pfxs),
                  "no escaped name %r: %r" % (pfxs, lines))


if __name__ == "__main__":
    rqlib.main(globals())
