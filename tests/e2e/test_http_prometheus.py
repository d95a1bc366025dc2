"""relayq read by the real consumer: Debian's Prometheus server scrapes a
running daemon every second (a config written here, listening on
127.0.0.1, storage in the test's directory, the bearer token from a file
as Prometheus sends it), and its own HTTP API is asked for
relayq_queue_messages and relayq_deliveries_total, compared with `relayq
mailq --json` and smtp-sink's count; Prometheus loads the example alert
rules (doc/relayq-alerts.yml); `promtool check metrics` accepts what the
daemon serves, `promtool check rules` the rules, and `promtool test
rules` shows each alert firing (tests/e2e/relayq-alerts.test.yml)."""
import json
import os
import shutil
import subprocess
import urllib.parse
import urllib.request

import httplib
import rqlib
from rqlib import check, check_eq
from test_runner_lib import deliveries, drop, dumps, sink, start, stop

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
RULES = os.path.join(rqlib.SRC, "doc", "relayq-alerts.yml")
RULE_TESTS = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                          "relayq-alerts.test.yml")


def prom_start(env, target, token_file):
    """Starts Prometheus scraping TARGET every second; returns its
    port."""
    port = rqlib.free_port()
    conf = os.path.join(env.dir, "prometheus.yml")
    with open(conf, "w") as f:
        f.write("""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - %s
scrape_configs:
  - job_name: relayq
    scrape_interval: 1s
    scrape_timeout: 1s
    authorization:
      credentials_file: %s
    static_configs:
      - targets: ['%s']
""" % (RULES, token_file, target))
    log = open(os.path.join(env.dir, "prometheus.log"), "w")
    env.spawn([PROMETHEUS, "--config.file=" + conf,
               "--storage.tsdb.path=" + os.path.join(env.dir, "tsdb"),
               "--web.listen-address=127.0.0.1:%d" % port,
               "--log.level=warn"], stdout=log, stderr=log)
    rqlib.wait_port(port, timeout=60)
    return port


def prom_api(port, path, **params):
    url = "http://127.0.0.1:%d/api/v1/%s" % (port, path)
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=10) as r:
        d = json.loads(r.read())
    if d.get("status") != "success":
        raise rqlib.Fail("prometheus %s: %s" % (path, d))
    return d["data"]


def prom_query(port, q):
    """{label tuple: value} of instant query Q."""
    out = {}
    for r in prom_api(port, "query", query=q)["result"]:
        out[tuple(sorted(r["metric"].items()))] = float(r["value"][1])
    return out


def test_prometheus_scrapes_relayq():
    """Prometheus' view of the queue and the deliveries is mailq's and
    the sink's."""
    hport = rqlib.free_port()
    closed = rqlib.free_port()
    with rqlib.Env() as env:
        _, sport, dd = sink(env)
        tok = os.path.join(env.dir, "token")
        with open(tok, "w") as f:
            f.write("pr0m-token\n")
        os.chmod(tok, 0o600)
        env.write_conf("relayhost = [127.0.0.1]:%d\n" % sport +
                       httplib.http_conf(hport)[0] +
                       "http_token = %s\nretry.min = 1h\n"
                       "[domain down.test]\n"
                       "relayhost = [127.0.0.1]:%d\n" % (tok, closed))
        p = start(env)
        pport = prom_start(env, "127.0.0.1:%d" % hport, tok)
        classes = ("urgent", "normal", "non-urgent")
        for i in range(21):
            drop(env, "r%d@dst.test" % i, priority=classes[i % 3])
        for i in range(4):
            drop(env, "d%d@down.test" % i, priority=classes[i % 3])
        rqlib.wait_for(lambda: len(dumps(dd)) == 21, 60, what="21 sent")
        rqlib.wait_for(lambda: sum(1 for d in deliveries(env)
                                   if d["status"] == "deferred") == 4, 30,
                       what="4 deferred")
        q = rqlib.wait_for(lambda: (lambda q: q if len(q) == 4 else None)(
            httplib.mailq(env)), 30, what="the 4 deferred alone queued")
        env.run("hold", q[0]["queue_id"], check_rc=0)
        q = httplib.mailq(env)
        check_eq(len(q), 4, "queued")
        want = {c: sum(1 for x in q if x["priority"] == c)
                for c in classes + ("dsn",)}
        want_held = sum(1 for x in q if x["held"])

        def settled():
            by_class = prom_query(pport, "sum by (class) "
                                  "(relayq_queue_messages)")
            got = {dict(k)["class"]: v for k, v in by_class.items()}
            held = prom_query(pport, 'sum(relayq_queue_messages'
                              '{state="held"})')
            sent = prom_query(pport, 'sum(relayq_deliveries_total'
                              '{status="sent"})')
            deferred = prom_query(pport, 'sum(relayq_deliveries_total'
                                  '{status="deferred"})')
            now = (got, list(held.values()), list(sent.values()),
                   list(deferred.values()))
            settled.last = now
            return now == ({c: float(n) for c, n in want.items()},
                           [float(want_held)], [float(len(dumps(dd)))],
                           [4.0])
        settled.last = None
        try:
            rqlib.wait_for(settled, 60, step=0.5, what="Prometheus' view")
        except rqlib.Fail:
            raise rqlib.Fail("Prometheus says %r; mailq %r held %d, "
                             "sink %d" % (settled.last, want, want_held,
                                          len(dumps(dd))))
        up = prom_query(pport, 'up{job="relayq"}')
        check_eq(list(up.values()), [1.0], "up")
        # per class and status, as the delivery log says
        per = prom_query(pport, "relayq_deliveries_total")
        for c in classes:
            key = lambda st: tuple(sorted({
                "__name__": "relayq_deliveries_total", "class": c,
                "status": st, "instance": "127.0.0.1:%d" % hport,
                "job": "relayq"}.items()))
            check_eq(per[key("sent")], 7.0, "sent " + c)
        # the example rules are loaded and evaluate without error
        groups = prom_api(pport, "rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        check_eq(sorted(r["name"] for r in rules),
                 ["RelayqDeferralsRising", "RelayqDown",
                  "RelayqQueueMapFilling", "RelayqUrgentMailDelayed"],
                 "rules loaded")
        rqlib.wait_for(lambda: all(r.get("health") == "ok" for r in
                                   prom_api(pport, "rules")["groups"][0]
                                   ["rules"]), 20, what="rules healthy")
        stop(p)


def test_promtool():
    """promtool accepts the metrics and the rules, and the rules' unit
    tests pass (each alert quiet when healthy, firing when not)."""
    hport = rqlib.free_port()
    with rqlib.Env() as env:
        _, sport, dd = sink(env)
        env.write_conf("relayhost = [127.0.0.1]:%d\n" % sport +
                       httplib.http_conf(hport)[0])
        p = start(env)
        drop(env, "x@dst.test", priority="urgent")
        rqlib.wait_for(lambda: len(dumps(dd)) == 1, 30, what="sent")
        body = httplib.ok(hport, "/metrics")
        r = subprocess.run([PROMTOOL, "check", "metrics"], input=body,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        check_eq(r.returncode, 0, "check metrics: %s" % r.stdout.decode())
        check_eq(r.stdout.decode().strip(), "", "lint findings")
        stop(p)
    r = subprocess.run([PROMTOOL, "check", "rules", RULES],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    check_eq(r.returncode, 0, "check rules: %s" % r.stdout.decode())
    check("SUCCESS: 4 rules found" in r.stdout.decode(), r.stdout.decode())
    r = subprocess.run([PROMTOOL, "test", "rules", RULE_TESTS],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    check_eq(r.returncode, 0, "test rules: %s" % r.stdout.decode())


if __name__ == "__main__":
    rqlib.main(globals())
