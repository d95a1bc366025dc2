"""The daemon's HTTP listener (http_listen): check-config's refusals,
start-up on a bad address, /metrics against the queue (mailq --json, the
delivery log, faultsmtp's replies), the status page, /api/summary against
`relayq summary --json`, /api/queue against `mailq --json`, the token
(Bearer and Basic, reread on SIGHUP), counters kept across SIGHUP and
gauges recomputed after a restart, a unix socket, and hostile clients:
slowloris, 10,000 idle connections, a 1 MB request line, oversized
headers, while mail keeps flowing.

Prometheus and Chromium themselves are test_http_prometheus.py and
test_http_chromium.py."""
import json
import os
import re
import resource
import signal
import socket
import stat
import subprocess
import time

import faultlib
import httplib
import rqlib
from httplib import get, metrics, ok, sample, total
from rqlib import check, check_eq
from test_runner_lib import deliveries, drop, dumps, sink, start, stop

# Every metric the issue names (relayq(8) lists them with their meaning).
METRICS = [
    "relayq_queue_messages", "relayq_queue_recipients", "relayq_queue_bytes",
    "relayq_queue_oldest_age_seconds", "relayq_deliveries_total",
    "relayq_delivery_delay_seconds_bucket",
    "relayq_delivery_delay_seconds_sum",
    "relayq_delivery_delay_seconds_count",
    "relayq_smtp_phase_timeouts_total", "relayq_dsn_total",
    "relayq_intake_messages_total", "relayq_intake_rejected_total",
    "relayq_connections", "relayq_destinations_down",
    "relayq_queue_map_used_bytes", "relayq_queue_map_size_bytes",
    "relayq_queuewarn_seconds", "relayq_queuereturn_seconds",
    "relayq_build_info", "process_resident_memory_bytes",
    "process_cpu_seconds_total", "process_open_fds", "process_max_fds",
    "process_start_time_seconds", "process_virtual_memory_bytes",
]


def relay(port):
    return "relayhost = [127.0.0.1]:%d\n" % port


def token_file(env, token, mode=0o600):
    path = os.path.join(env.dir, "http-token")
    with open(path, "w") as f:
        f.write(token + "\n")
    os.chmod(path, mode)
    return path


def test_check_config():
    """Loopback and socket paths go without a token; anything else is
    refused without one (FILE:LINE, 78), and with one it passes; the
    token file follows auth_file's rules; bad addresses are refused."""
    with rqlib.Env() as env:
        tok = token_file(env, "t0k-en")
        for listen in ("127.0.0.1:9650", "[::1]:9650", "localhost:9650",
                       "127.9.9.9:80", "/run/relayq-test/http.sock"):
            env.write_conf("http_listen = %s\n" % listen)
            p = env.run("check-config", "-q")
            check_eq(p.returncode, 0, "%s: %s" % (listen, p.stderr))
        for listen in ("0.0.0.0:9650", ":9650", "*:9650", "[::]:9650",
                       "10.0.0.1:9650", "[2001:db8::1]:9650"):
            env.write_conf("http_listen = %s\n" % listen)
            p = env.run("check-config", "-q")
            check_eq(p.returncode, 78, "%s without a token" % listen)
            err = p.stderr.decode()
            check("relayq.conf:5: http_listen %s is not a loopback" %
                  listen in err, err)
            env.write_conf("http_listen = %s\nhttp_token = %s\n" %
                           (listen, tok))
            p = env.run("check-config", "-q")
            check_eq(p.returncode, 0, "%s with a token: %s" %
                     (listen, p.stderr))
        for listen, why in (("example.org:9650", "must be an IPv4"),
                            ("127.0.0.1:0", "bad port"),
                            ("127.0.0.1", "expected host:port"),
                            ("[::1]9650", "expected [IPv6]:port")):
            env.write_conf("http_listen = %s\n" % listen)
            p = env.run("check-config", "-q")
            check_eq(p.returncode, 78, listen)
            check(why in p.stderr.decode(), p.stderr.decode())
        # the token file: auth_file's rules
        for mode in (0o640, 0o604, 0o620):
            os.chmod(tok, mode)
            env.write_conf("http_listen = 127.0.0.1:9650\n"
                           "http_token = %s\n" % tok)
            p = env.run("check-config", "-q")
            check_eq(p.returncode, 78, "token mode %o" % mode)
            check("lets group or others read or write it" in
                  p.stderr.decode(), p.stderr.decode())
        os.chmod(tok, 0o600)
        with open(tok, "w") as f:
            f.write("two words\n")
        p = env.run("check-config", "-q")
        check_eq(p.returncode, 78, "bad token")
        check("relayq.conf:6: http_token" in p.stderr.decode() and
              "two" not in p.stderr.decode(), p.stderr.decode())
        env.write_conf("http_listen = 127.0.0.1:9650\nhttp_token = %s\n" %
                       os.path.join(env.dir, "none"))
        check_eq(env.run("check-config", "-q").returncode, 78, "no file")
        # run refuses what check-config refuses, before binding anything
        env.write_conf("http_listen = 0.0.0.0:%d\n" % rqlib.free_port())
        p = env.run("run", "--exit-when-idle", timeout=30)
        check_eq(p.returncode, 78, "run with a public address")


def test_bind_failure_stops_startup():
    """An address that cannot be bound stops `relayq run` at start-up
    with a message naming it (71), nothing queued is touched."""
    with rqlib.Env() as env:
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        env.write_conf("http_listen = 127.0.0.1:%d\n" % port)
        drop(env, "x@dst.test")
        p = env.run("run", timeout=30)
        busy.close()
        check_eq(p.returncode, 71, "exit code: %s" % p.stderr)
        check("http_listen 127.0.0.1:%d: cannot listen: Address already "
              "in use" % port in env.log_text() + p.stderr.decode(),
              env.log_text()[-500:])
        check("daemon started" not in env.log_text(), "it started")
        # a socket path in a directory that does not exist
        env.write_conf("http_listen = %s/no/such/dir/http.sock\n" % env.dir)
        p = env.run("run", timeout=30)
        check_eq(p.returncode, 71, "socket path")
        check("cannot listen" in env.log_text() + p.stderr.decode(), "msg")


def scenario(env, port):
    """Starts faultsmtp (bad@: 550, later@: 451) as the relayhost and a
    silent server for [domain slow.test] (a MAIL timeout), drops mail of
    every class, a held message and a file for bad/; waits until all is
    done.  Returns the daemon."""
    srv = faultlib.start(env, """
        rcpt bad@dst.test reply 550 5.1.1 no such user
        rcpt later@dst.test reply 451 4.2.0 mailbox busy
    """)
    slow = faultlib.start(env, "on MAIL stall 60\n")
    env.write_conf(relay(srv.port) + httplib.http_conf(port)[0] +
                   "retry.min = 1h\ntimeout.mail = 2s\n"
                   "[domain slow.test]\n" + relay(slow.port) +
                   "[domain down.test]\n" + relay(rqlib.free_port()))
    for i, pr in enumerate(("urgent", "normal", "non-urgent", None)):
        drop(env, "ok%d@dst.test" % i, priority=pr)
    drop(env, ["good@dst.test", "bad@dst.test", "later@dst.test"],
         priority="urgent")
    drop(env, "x@slow.test", priority="non-urgent")
    drop(env, "y@down.test", priority="normal")
    os.makedirs(os.path.join(env.spool, "incoming"), exist_ok=True)
    with open(os.path.join(env.spool, "incoming", "empty"), "w"):
        pass
    p = start(env)
    # 4 + 3 + 1 + 1 results, the bounce notice delivered too
    rqlib.wait_for(lambda: len(deliveries(env)) >= 10, 60,
                   what="every first attempt and the notice")
    committed(port, len(deliveries(env)))
    return p, srv


def committed(port, n, **kw):
    """Waits until /metrics counts N results (a result is logged just
    before the transaction that commits it and its tally); returns the
    metrics."""
    return rqlib.wait_for(lambda: (lambda m: m if total(
        m, "relayq_deliveries_total") == n else None)(metrics(port, **kw)),
        20, what="%d results committed" % n)


def test_metrics_and_apis():
    """/metrics has every metric and agrees with mailq --json, the log
    and the server; promtool accepts it; / has the class table and the
    charts; /api/summary is summary --json plus the daemon's part;
    /api/queue is mailq --json, paged; errors are 404, 400, 405."""
    port = rqlib.free_port()
    with rqlib.Env() as env:
        p, srv = scenario(env, port)
        st, hdr, body = get(port, "/metrics")
        check_eq(st, 200, "metrics status")
        check_eq(hdr["content-type"],
                 ["text/plain; version=0.0.4; charset=utf-8"], "type")
        chk = subprocess.run(["promtool", "check", "metrics"], input=body,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        check_eq(chk.returncode, 0, "promtool: %s" % chk.stdout.decode())
        m = httplib.parse_metrics(body.decode())
        names = {n for n, _ in m}
        missing = [n for n in METRICS if n not in names]
        check_eq(missing, [], "metrics missing")
        # relayq(8) names every family
        with open(os.path.join(rqlib.SRC, "doc", "relayq.8")) as f:
            man = f.read().replace("\\-", "-")
        fams = [l.split()[2] for l in body.decode().splitlines()
                if l.startswith("# TYPE ")]
        check_eq([f for f in fams if f not in man], [],
                 "metrics missing from relayq(8)")
        # the results, as the log and the server saw them
        ds = deliveries(env)
        for status in ("sent", "deferred", "bounced"):
            check_eq(total(m, "relayq_deliveries_total", status=status),
                     sum(1 for d in ds if d["status"] == status), status)
        check_eq(total(m, "relayq_deliveries_total", status="sent"),
                 len(srv.messages()), "sent vs the server's count")
        check_eq(sample(m, "relayq_deliveries_total", **{
            "class": "urgent", "status": "bounced"}), 1, "urgent bounced")
        check_eq(sample(m, "relayq_dsn_total", type="failure"), 1, "DSN")
        check_eq(sample(m, "relayq_smtp_phase_timeouts_total",
                        phase="mail"), 1, "MAIL timeout")
        check_eq(sample(m, "relayq_intake_messages_total"), 7, "intake")
        check_eq(sample(m, "relayq_intake_rejected_total", reason="empty"),
                 1, "the empty file")
        check_eq(total(m, "relayq_delivery_delay_seconds_count"), 7,
                 "final results (6 sent, 1 bounced)")
        check_eq(sample(m, "relayq_delivery_delay_seconds_bucket",
                        **{"class": "dsn", "le": "+Inf"}), 1, "notice")
        check_eq(sample(m, "relayq_build_info", version="0.1.0"), 1, "info")
        check(sample(m, "process_open_fds") > 5, "open fds")
        check(abs(sample(m, "process_start_time_seconds") - time.time())
              < 120, "start time")
        # the queue's gauges against mailq --json
        q = httplib.mailq(env)
        for cls in ("urgent", "normal", "non-urgent", "dsn"):
            mine = [x for x in q if x["priority"] == cls]
            check_eq(total(m, "relayq_queue_messages", **{"class": cls}),
                     len(mine), "messages of %s" % cls)
            check_eq(total(m, "relayq_queue_bytes", **{"class": cls}),
                     sum(x["message_size"] for x in mine), "bytes " + cls)
            for s in ("pending", "deferred"):
                check_eq(sample(m, "relayq_queue_recipients",
                                **{"class": cls, "state": s}),
                         sum(1 for x in mine for r in x["recipients"]
                             if r["state"] == s), "%s %s" % (cls, s))
        check_eq(sample(m, "relayq_queue_messages",
                        **{"class": "urgent", "state": "deferred"}), 1,
                 "later@ waits")
        check(sample(m, "relayq_queue_oldest_age_seconds",
                     **{"class": "urgent"}) >= 0, "oldest age")
        check_eq(sample(m, "relayq_queuewarn_seconds",
                        **{"class": "urgent"}), 3600, "queuewarn")
        downs = [x for x in json.loads(ok(port, "/api/summary"))["daemon"][
            "destinations"] if x["status"] and
            x["status"].startswith("down until")]
        check_eq([x["domain"] for x in downs], ["down.test"], "downs")
        check_eq(sample(m, "relayq_destinations_down"), len(downs), "down")
        check(sample(m, "relayq_queue_map_used_bytes") <
              sample(m, "relayq_queue_map_size_bytes"), "map")

        # /api/summary == summary --json but for time, ages, daemon
        s1 = json.loads(ok(port, "/api/summary"))
        s2 = json.loads(env.run("summary", "--json", check_rc=0).stdout)
        check(s1["daemon"] is not None and s2["daemon"] is None, "daemon")
        for s in (s1, s2):
            for k in ("time", "daemon"):
                del s[k]
            for c in s["classes"]:
                c.pop("oldest_age")
        check_eq(s1, s2, "/api/summary vs summary --json")
        cls = {c["class"]: c for c in s2["classes"]}
        check_eq(cls["urgent"]["messages"]["deferred"], 1, "summary urgent")
        check_eq(cls["urgent"]["warn_due"] - cls["urgent"]["oldest_arrival"],
                 3600, "warn due")
        check_eq(sorted(d["domain"] for d in s2["domains"]),
                 ["down.test", "dst.test", "slow.test"], "domains")
        d = json.loads(ok(port, "/api/summary"))["daemon"]
        check(any(f["recipient"] == "bad@dst.test" and
                  f["status"] == "bounced" and "550 5.1.1" in f["reason"]
                  for f in d["failures"]), d["failures"])
        dests = {x["domain"]: x for x in d["destinations"]}
        check(dests["slow.test"]["status"].startswith("up") and
              "timeout after MAIL" in dests["slow.test"]["last_error"],
              dests)
        check(dests["down.test"]["status"].startswith("down until") and
              "Connection refused" in dests["down.test"]["status"] and
              "Connection refused" in dests["down.test"]["last_error"],
              dests)
        check_eq(len(d["history"]["sent"]), 360, "an hour of steps")
        check_eq(sum(d["history"]["sent"]), 6, "sent in the history")

        # /api/queue == mailq --json, paged
        lines = env.run("mailq", "--json", check_rc=0).stdout.decode()
        want = [json.loads(x) for x in lines.splitlines()]
        a = json.loads(ok(port, "/api/queue"))
        check_eq(a["messages"], want, "/api/queue vs mailq --json")
        check_eq(a["next"], None, "one page")
        got, after, pages = [], "", 0
        for _ in range(10):
            pg = json.loads(ok(port, "/api/queue?limit=1" + after))
            got += pg["messages"]
            pages += 1
            if pg["next"] is None:
                break
            after = "&after=" + pg["next"]
        check_eq(got, want, "paged one by one")
        # the last page says so: no empty page after it
        check_eq(pages, len(want), "pages of one")
        full = json.loads(ok(port, "/api/queue?limit=%d" % len(want)))
        check_eq(full["next"], None, "an exact last page")
        check_eq(json.loads(ok(port, "/api/queue?after=FFFFFFFFFFFFFFFF")),
                 {"messages": [], "next": None}, "after the last ID")
        flt = json.loads(ok(port, "/api/queue?class=urgent&state=deferred"
                            "&domain=dst.test"))["messages"]
        check_eq([x["queue_id"] for x in flt],
                 [x["queue_id"] for x in want if x["priority"] == "urgent"],
                 "filtered")
        # the page
        page = ok(port, "/").decode()
        for frag in ('<table id="classes">', 'data-class="non-urgent"',
                     'id="chart-queue"', 'id="chart-rate"', "<svg",
                     '<table id="destinations">', "slow.test",
                     '<table id="failures">', "bad@dst.test",
                     'http-equiv="refresh"', 'name="viewport"'):
            check(frag in page, "page lacks %s" % frag)
        for bad in ("<script", "http://", "https://", "@import"):
            check(bad not in page, "page has %s" % bad)
        # errors
        check_eq(get(port, "/nope")[0], 404, "unknown path")
        check_eq(get(port, "/api/queue?class=bulk")[0], 400, "bad class")
        check_eq(get(port, "/api/queue?limit=0")[0], 400, "bad limit")
        check_eq(get(port, "/api/summary?top=x")[0], 400, "bad top")
        check(get(port, "/metrics", method="POST")[0] in (405, 501), "POST")
        st, _, body = get(port, "/metrics", method="HEAD")
        check_eq((st, body), (200, b""), "HEAD")
        stop(p)


def test_token_and_reload():
    """With http_token every endpoint wants it (Bearer, or Basic with
    it as the password); SIGHUP rereads it; counters survive the
    reload."""
    port = rqlib.free_port()
    with rqlib.Env() as env:
        _, sport, dd = sink(env)
        tok = token_file(env, "first-T0ken")
        env.write_conf(relay(sport) + httplib.http_conf(port)[0] +
                       "http_token = %s\n" % tok)
        p = start(env)
        for i in range(3):
            drop(env, "a%d@dst.test" % i)
        rqlib.wait_for(lambda: len(dumps(dd)) == 3, 30, what="3 sent")
        rqlib.wait_for(lambda: len(deliveries(env)) == 3, 30, what="3 logged")
        for path in ("/metrics", "/", "/api/summary", "/api/queue"):
            st, hdr, _ = get(port, path)
            check_eq(st, 401, path)
            check(any(v.startswith("Basic") for v in
                      hdr.get("www-authenticate", [])), hdr)
            check_eq(get(port, path, headers={
                "Authorization": "Bearer wrong"})[0], 401, path)
        bearer = {"Authorization": "Bearer first-T0ken"}
        m = committed(port, 3, headers=bearer)
        check_eq(total(m, "relayq_deliveries_total", status="sent"), 3, "3")
        basic = {"Authorization": "Basic " + __import__("base64").b64encode(
            b"prometheus:first-T0ken").decode()}
        check_eq(get(port, "/", headers=basic)[0], 200, "Basic")
        # a new token on SIGHUP; the counters stay
        with open(tok, "w") as f:
            f.write("second-T0ken\n")
        p.send_signal(signal.SIGHUP)
        rqlib.wait_for(lambda: "reloaded configuration" in env.log_text(),
                       10, what="reload")
        check_eq(get(port, "/metrics", headers=bearer)[0], 401, "old token")
        m = metrics(port, headers={"Authorization": "Bearer second-T0ken"})
        check_eq(total(m, "relayq_deliveries_total", status="sent"), 3,
                 "counters after SIGHUP")
        check_eq(sample(m, "relayq_intake_messages_total"), 3, "intake")
        # a token file made unsafe: the reload is refused, the old kept
        os.chmod(tok, 0o644)
        p.send_signal(signal.SIGHUP)
        rqlib.wait_for(lambda: "reload refused" in env.log_text(), 10,
                       what="refusal")
        check_eq(get(port, "/metrics", headers={
            "Authorization": "Bearer second-T0ken"})[0], 200, "kept")
        stop(p)


def test_restart_keeps_counters_recomputes_gauges():
    """After a restart the gauges come from the queue again (held and
    deferred messages, the oldest age) and the counters the queue keeps
    (results, the delay histogram, notices, intake) go on from where
    they were, with what a command committed meanwhile;
    process_start_time_seconds tells the restart."""
    port = rqlib.free_port()
    closed = rqlib.free_port()
    counters = ("relayq_deliveries_total", "relayq_dsn_total",
                "relayq_intake_messages_total",
                "relayq_delivery_delay_seconds_bucket",
                "relayq_delivery_delay_seconds_count",
                "relayq_delivery_delay_seconds_sum")
    with rqlib.Env() as env:
        _, sport, dd = sink(env)
        env.write_conf(relay(closed) + httplib.http_conf(port)[0] +
                       "retry.min = 1h\n[domain ok.test]\n" + relay(sport))
        for i in range(4):
            drop(env, "d%d@dst.test" % i, priority="urgent")
        drop(env, "s@ok.test", priority="urgent")
        p = start(env)
        rqlib.wait_for(lambda: len(deliveries(env)) >= 5, 30, what="5")
        committed(port, 5)
        # a bounce by hand: its notice (a tally of the command's txn)
        q = httplib.mailq(env)
        ids = {x["recipients"][0]["address"]: x["queue_id"] for x in q}
        env.run("bounce", ids["d3@dst.test"], check_rc=0)
        env.run("hold", ids["d0@dst.test"], check_rc=0)
        # the return (status=expired) and the notice's attempt
        # (deferred) make 7 results
        committed(port, 7)
        m1 = rqlib.wait_for(lambda: (lambda m: m if sample(
            m, "relayq_queue_messages", **{"class": "urgent",
                                           "state": "held"}) == 1 else None)(
            metrics(port)), 10, what="held counted")
        check_eq(sample(m1, "relayq_dsn_total", type="failure"), 1, "dsn")
        check_eq(sample(m1, "relayq_deliveries_total", **{
            "class": "urgent", "status": "sent"}), 1, "sent")
        check_eq(sample(m1, "relayq_deliveries_total", **{
            "class": "urgent", "status": "expired"}), 1, "returned")
        check_eq(sample(m1, "relayq_delivery_delay_seconds_count",
                        **{"class": "urgent"}), 1, "histogram")
        stop(p)
        time.sleep(1.1)
        p = start(env)
        m2 = metrics(port)
        for st in ("pending", "deferred", "held", "in_flight"):
            check_eq(sample(m2, "relayq_queue_messages",
                            **{"class": "urgent", "state": st}),
                     sample(m1, "relayq_queue_messages",
                            **{"class": "urgent", "state": st}), st)
        check_eq(sample(m2, "relayq_queue_messages",
                        **{"class": "urgent", "state": "deferred"}), 2, "2")
        check(sample(m2, "relayq_queue_oldest_age_seconds",
                     **{"class": "urgent"}) >=
              sample(m1, "relayq_queue_oldest_age_seconds",
                     **{"class": "urgent"}) + 1, "oldest age grew")
        for name in counters:
            c1 = {k: v for k, v in m1.items() if k[0] == name}
            c2 = {k: v for k, v in m2.items() if k[0] == name}
            check(len(c1) > 0, name)
            check_eq(c2, c1, name + " after the restart")
        check_eq(total(m2, "relayq_deliveries_total"), 7, "7 results")
        check_eq(sample(m2, "relayq_intake_messages_total"), 5, "intake")
        check(sample(m2, "process_start_time_seconds") >
              sample(m1, "process_start_time_seconds"), "new start time")
        # and on from there
        drop(env, "t@ok.test", priority="normal")
        m3 = committed(port, 8)
        check_eq(sample(m3, "relayq_intake_messages_total"), 6, "intake+1")
        check_eq(sample(m3, "relayq_delivery_delay_seconds_count",
                        **{"class": "normal"}), 1, "normal histogram")
        stop(p)


def test_final_results_outside_the_runner():
    """relayq_deliveries_total counts every line of the delivery log:
    a mail loop bounced at intake (status=bounced) and a message
    returned by `relayq bounce` (status=expired) too, by class."""
    port = rqlib.free_port()
    closed = rqlib.free_port()
    with rqlib.Env() as env:
        env.write_conf(relay(closed) + httplib.http_conf(port)[0] +
                       "retry.min = 1h\nhopcount_limit = 3\n")
        # null senders: no notice adds results of its own
        drop(env, "loop@dst.test", sender="", priority="normal",
             headers=["Received: by a.test", "Received: by b.test",
                      "Received: by c.test"])
        drop(env, "late@dst.test", sender="", priority="non-urgent")
        p = start(env)
        committed(port, 2)  # the loop's bounce, the first deferral
        q = httplib.mailq(env)
        check_eq(len(q), 1, "the deferred message is left")
        env.run("bounce", q[0]["queue_id"], check_rc=0)
        m = committed(port, 3)
        check_eq(sample(m, "relayq_deliveries_total", **{
            "class": "normal", "status": "bounced"}), 1, "the loop")
        check_eq(sample(m, "relayq_deliveries_total", **{
            "class": "non-urgent", "status": "deferred"}), 1, "deferred")
        check_eq(sample(m, "relayq_deliveries_total", **{
            "class": "non-urgent", "status": "expired"}), 1, "returned")
        lines = [l for l in env.log_text().splitlines()
                 if re.search(r": to=<[^>]*>, .* status=\w+[ ,]", l)]
        check_eq(total(m, "relayq_deliveries_total"), len(lines),
                 "a result per delivery log line")
        stop(p)


def test_host_header():
    """A loopback listener without http_token answers only requests
    whose Host names it (a literal address, localhost, the hostname
    relayq.test):
    a page DNS rebinding pointed at 127.0.0.1 gets 403 and nothing of
    the queue.  With a token, any name (the token is the check)."""
    port = rqlib.free_port()
    with rqlib.Env() as env:
        env.write_conf(relay(rqlib.free_port()) + httplib.http_conf(port)[0]
                       + "retry.min = 1h\n")
        drop(env, "secret-rcpt@dst.test")
        p = start(env)
        rqlib.wait_for(lambda: len(httplib.mailq(env)) == 1, 20, what="q")
        for host in ("127.0.0.1:%d" % port, "localhost:%d" % port,
                     "relayq.test:%d" % port, "[::1]:%d" % port):
            st, _, body = get(port, "/api/queue", headers={"Host": host})
            check_eq(st, 200, host)
            check(b"secret-rcpt" in body, host)
        for host in ("evil.example:%d" % port, "evil.example",
                     "relayq.test.evil.example:%d" % port):
            for path in ("/api/queue", "/", "/metrics"):
                st, _, body = get(port, path, headers={"Host": host})
                check_eq(st, 403, "%s %s" % (host, path))
                check(b"secret-rcpt" not in body and
                      b"Host names neither" in body, body[:200])
        # with a token: the token decides, whatever the name
        tok = token_file(env, "t0k-en")
        env.write_conf(relay(rqlib.free_port()) + httplib.http_conf(port)[0]
                       + "retry.min = 1h\n"
                       "http_token = %s\n" % tok)
        p.send_signal(signal.SIGHUP)
        rqlib.wait_for(lambda: get(port, "/metrics")[0] == 401, 20,
                       what="the token in force")
        st, _, _ = get(port, "/api/queue", headers={
            "Host": "evil.example", "Authorization": "Bearer t0k-en"})
        check_eq(st, 200, "a token's request under any name")
        stop(p)


def test_unix_socket():
    """http_listen as a socket path: made 0660 by the daemon, a stale
    one replaced, removed at the end."""
    with rqlib.Env() as env:
        path = os.path.join(env.dir, "http.sock")
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(path)
        stale.close()  # a socket file nobody listens on
        env.write_conf("http_listen = %s\n" % path)
        p = start(env)
        check_eq(stat.S_IMODE(os.stat(path).st_mode), 0o660, "mode")
        m = metrics(None, unix=path)
        check(("relayq_build_info", (("version", "0.1.0"),)) in m, "info")
        # a second daemon on the same path is refused
        with rqlib.Env() as env2:
            env2.write_conf("http_listen = %s\n" % path)
            p2 = env2.run("run", timeout=30)
            check_eq(p2.returncode, 71, "second daemon")
            check("another process listens there" in env2.log_text() +
                  p2.stderr.decode(), env2.log_text())
        stop(p)
        check(not os.path.exists(path), "socket left behind")


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(max(soft, n), hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


def timed_metrics(port, limit=3.0):
    t0 = time.time()
    m = metrics(port, timeout=limit + 2)
    took = time.time() - t0
    check(took < limit, "/metrics took %.2fs" % took)
    return m


def metrics_during_flood(port):
    """/metrics answered while a flood of connections churns through the
    daemon's slots (the kernel's backlog, not the daemon, may drop our
    SYN now and then: a few tries, each with a short timeout)."""
    def once():
        try:
            return metrics(port, timeout=3)
        except OSError:
            return None
    return rqlib.wait_for(once, 60, step=0.1, what="/metrics in the flood")


def test_hostile_clients():
    """Slowloris, 10,000 idle connections, a 1 MB request line and
    oversized headers: the daemon keeps at most a bounded number of
    sockets (2 x HTTP_CONN_MAX = 128), answers /metrics quickly all the
    while, and delivers the mail dropped meanwhile."""
    port = rqlib.free_port()
    with rqlib.Env() as env:
        _, sport, dd = sink(env)
        env.write_conf(relay(sport) + httplib.http_conf(port)[0])
        p = env.start("run", env=dict(os.environ, RELAYQ_LOOP_PROBE="50"))
        rqlib.wait_for(lambda: "daemon started" in env.log_text(), 20,
                       what="start")
        base = httplib.daemon_fds(p.pid)
        bound = base + 2 * 64 + 8
        # slowloris: a byte a second never makes a request
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"GET /metrics HTTP/1.1\r\n")
        t0 = time.time()
        closed = False
        while time.time() - t0 < 25:
            try:
                slow.sendall(b"X")
            except OSError:
                closed = True
                break
            slow.settimeout(1)
            try:
                if slow.recv(100) == b"":
                    closed = True
                    break
            except socket.timeout:
                pass
        check(closed, "slowloris connection still open")
        took = time.time() - t0
        check(9 <= took < 20, "slowloris ended after %.1fs (10s)" % took)
        slow.close()
        # 10,000 idle connections (the kernel's backlog holds what the
        # daemon does not take)
        n = raise_nofile(10500) - 300
        n = min(n, 10000)
        check(n >= 5000, "cannot open enough sockets here: %d" % n)
        idle = []
        for i in range(n):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", port))
            except (BlockingIOError, OSError):
                pass
            idle.append(s)
        drop(env, "during@dst.test")
        most = 0
        t0 = time.time()
        for _ in range(5):
            metrics_during_flood(port)
            most = max(most, httplib.daemon_fds(p.pid))
            time.sleep(0.3)
        # the flood keeps coming for a while (the clients' kernels resend
        # their SYNs): the daemon's sockets stay bounded all along
        while time.time() - t0 < 8:
            most = max(most, httplib.daemon_fds(p.pid))
            time.sleep(0.05)
        check(most <= bound, "daemon holds %d fds (base %d)" % (most, base))
        rqlib.wait_for(lambda: len(dumps(dd)) == 1, 60,
                       what="mail delivered during the flood")
        for s in idle:
            s.close()
        # a 1 MB request line, headers over 8 KiB: refused, not read on
        big = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            big.sendall(b"GET /" + b"a" * (1 << 20) + b" HTTP/1.1\r\n\r\n")
        except OSError:
            pass  # the daemon stopped reading and closed: fine
        try:
            reply = big.recv(100)
        except OSError:
            reply = b""
        check(reply == b"" or reply.startswith(b"HTTP/1.1 4"),
              "1 MB line: %r" % reply)
        big.close()
        st, _, _ = get(port, "/metrics", headers={
            "X-Junk": "j" * 9000})
        check(st in (400, 413, 431), "big headers: %d" % st)
        timed_metrics(port)
        rqlib.wait_for(lambda: httplib.daemon_fds(p.pid) <= base + 2, 30,
                       what="sockets released")
        drop(env, "after@dst.test")
        rqlib.wait_for(lambda: len(dumps(dd)) == 2, 20, what="after")
        stop(p)
        # the loop was never held up long (RELAYQ_LOOP_PROBE's line)
        late = re.search(r"loop probe: \d+ ticks of 50 ms, late by at most "
                         r"(\d+) ms", env.log_text())
        check(late, "no loop probe line")
        print("  event loop late by at most %s ms" % late.group(1))
        check(int(late.group(1)) < 1000, "loop stalled %s ms" %
              late.group(1))


if __name__ == "__main__":
    rqlib.main(globals())
