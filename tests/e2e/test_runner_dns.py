"""MX routing through a real DNS server: dnsmasq on a loopback port
(dns_server), SMTP servers on 127.0.0.2-5 sharing one port (smtp_port):
preference order, next MX on connection failure and on a 421 greeting,
no MX to A, null MX (5.1.10) and NXDOMAIN (5.1.2)."""
import os
import subprocess

import faultlib
import rqlib
from rqlib import check, check_eq
from test_runner_lib import deliveries, drop, dumps, run_idle, sink

DNSMASQ = "/usr/sbin/dnsmasq"


def dnsmasq(env, port, records):
    cmd = [DNSMASQ, "--no-daemon", "--port=%d" % port,
           "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv",
           "--no-hosts", "--conf-file=/dev/null", "--pid-file",
           "--local=/test/", "--log-facility=%s" %
           os.path.join(env.dir, "dnsmasq.log")] + records
    p = env.spawn(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rqlib.wait_port(port)  # dnsmasq serves TCP too
    return p


def test_mx_routing():
    if not os.path.exists(DNSMASQ):
        print("  skipped: no dnsmasq")
        return
    with rqlib.Env() as env:
        smtp = rqlib.free_port()
        dnsport = rqlib.free_port()
        _, _, d2 = sink(env, addr="127.0.0.2", port=smtp)
        _, _, d3 = sink(env, addr="127.0.0.3", port=smtp)
        bad = faultlib.start(env, "on CONNECT reply 421 4.3.2 busy\n",
                             args=["-l", "127.0.0.5:%d" % smtp])
        dnsmasq(env, dnsport, [
            "--mx-host=pref.test,mxa.test,10",
            "--mx-host=pref.test,mxb.test,20",
            "--mx-host=fb.test,mxdead.test,10",
            "--mx-host=fb.test,mxb.test,20",
            "--mx-host=greet.test,mx421.test,10",
            "--mx-host=greet.test,mxb.test,20",
            "--mx-host=src.test,mxb.test,10",
            "--host-record=mxa.test,127.0.0.2",
            "--host-record=mxb.test,127.0.0.3",
            "--host-record=mxdead.test,127.0.0.4",
            "--host-record=mx421.test,127.0.0.5",
            "--host-record=nomx.test,127.0.0.3",
            "--dns-rr=null.test,15,000000",
        ])
        env.write_conf("dns_server = 127.0.0.1:%d\nsmtp_port = %d\n"
                       "retry.min = 1h\ntimeout.hoststatus = 0\n" %
                       (dnsport, smtp))
        for i in range(6):
            drop(env, "p%d@pref.test" % i)
        drop(env, "f@fb.test")
        drop(env, "g@greet.test")
        drop(env, "n@nomx.test")
        drop(env, "z@null.test")
        drop(env, "x@nx.test")
        run_idle(env, timeout=60)

        at2 = sorted(r[0] for r, _, _ in dumps(d2))
        at3 = sorted(r[0] for r, _, _ in dumps(d3))
        check_eq(at2, ["p%d@pref.test" % i for i in range(6)],
                 "at the preferred MX")
        for r in ("f@fb.test", "g@greet.test", "n@nomx.test"):
            check(r in at3, "%s not at 127.0.0.3: %s" % (r, at3))
        check(not any(r.endswith("@pref.test") for r in at3),
              "pref.test mail at the less preferred MX")
        check(len(bad.conns()) >= 1, "the 421 MX was not tried first")
        ds = {d["to"]: d for d in deliveries(env)}
        check_eq(ds["g@greet.test"]["status"], "sent", "greet")
        check("mxb.test[127.0.0.3]" in ds["g@greet.test"]["relay"],
              ds["g@greet.test"]["line"])
        check_eq(ds["f@fb.test"]["status"], "sent", "fallback")
        check_eq(ds["z@null.test"]["status"], "bounced", "null MX")
        check_eq(ds["z@null.test"]["dsn"], "5.1.10", "null MX dsn")
        check_eq(ds["x@nx.test"]["status"], "bounced", "NXDOMAIN")
        check_eq(ds["x@nx.test"]["dsn"], "5.1.2", "NXDOMAIN dsn")
        check_eq(ds["x@nx.test"]["relay"], "none", "NXDOMAIN relay")


def test_dns_down_defers():
    """A resolver that does not answer: deferred (4.4.3), not bounced."""
    with rqlib.Env() as env:
        env.write_conf("dns_server = 127.0.0.1:%d\nretry.min = 1h\n" %
                       rqlib.free_port())
        drop(env, "u@somewhere.test")
        run_idle(env, timeout=60)
        ds = deliveries(env)
        check_eq(len(ds), 1, "delivery lines")
        check_eq(ds[0]["status"], "deferred", "status")
        check_eq(ds[0]["dsn"], "4.4.3", "dsn")


if __name__ == "__main__":
    rqlib.main(globals())
