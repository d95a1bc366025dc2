#!/usr/bin/python3
"""test_cluster - several relayq nodes as one MTA (issue 16): limits and
host status shared through a real redis-server on 127.0.0.1, three
`relayq run` nodes with their own directories, and a sink that counts
concurrent sessions exactly and messages per second (clusterlib.py).

Run with /usr/bin/python3; RELAYQ_BIN points at the binary."""
import os
import re
import signal
import subprocess
import time
import types

import clusterlib as cl
import rqlib

NODES = ("n1", "n2", "n3")


def nodes_for(redis, sink, extra="", names=NODES):
    """One Env per node (the caller closes them)."""
    return [rqlib.Env(cl.node_conf(n, sink.port, redis, extra))
            for n in names]


def close_all(envs):
    for e in envs:
        e.close()


def run_nodes(envs, per_node, timeout, during=None):
    """Drops PER_NODE messages into each node, runs them all at once
    with --exit-when-idle, calls DURING() while they run, and checks
    they all exit 0."""
    for i, e in enumerate(envs):
        cl.drop_many(e, per_node, "n%d" % (i + 1))
    procs = [cl.start_node(e) for e in envs]
    if during:
        during()
    for i, p in enumerate(procs):
        cl.wait_exit(p, timeout, "node %d" % (i + 1), envs[i])


def test_connections_shared():
    """max_connections = 4, 3 x 1,000 messages: the sink never sees more
    than 4 sessions at once, and sees 4; the same run without Redis
    sees 12 (so the sink can tell).  `relayq cluster` lists the three
    live nodes, their queue counts and the leases in use."""
    with rqlib.Env() as base:
        redis = cl.Redis(base)
        sink = cl.Sink(delay=0.004)
        envs = nodes_for(redis, sink, "max_connections = 4\n")
        views = []

        def look():
            def three():
                p = envs[0].run("cluster")
                views.append(p.stdout.decode())
                return (p.returncode == 0 and
                        "3 live nodes" in views[-1] and
                        re.search(r"/4 +n\d=", views[-1]))
            rqlib.wait_for(three, 60, 0.2, "relayq cluster: 3 live nodes")
        try:
            run_nodes(envs, 1000, 180, look)
            cur, peak, _ = sink.stats()
            rqlib.check_eq(sink.count(), 3000, "messages at the sink")
            rqlib.check_eq(peak, 4, "peak sessions with the cluster")
            view = views[-1]
            for n in NODES:
                rqlib.check(re.search(r"(?m)^%s +\d+\.\ds +\d+" % n, view),
                            "node %s with its counts in:\n%s" % (n, view))
            rqlib.check(re.search(r"\[127\.0\.0\.1\]:%d +\d/4 " % sink.port,
                                  view), "the destination in:\n" + view)
            for e in envs:
                rqlib.check("limits shared" in e.log_text(),
                            "a node joined the cluster")
        finally:
            sink.stop()
            close_all(envs)
        # the same without Redis: each node alone, 3 x 4
        sink = cl.Sink(delay=0.004)
        envs = nodes_for(None, sink, "max_connections = 4\n")
        try:
            run_nodes(envs, 1000, 180)
            _, peak, _ = sink.stats()
            rqlib.check_eq(sink.count(), 3000, "messages, standalone")
            rqlib.check_eq(peak, 12, "peak sessions of three lone nodes")
        finally:
            sink.stop()
            close_all(envs)


def windows(times, width=1.0):
    """For each time t, how many of TIMES (sorted) fall in [t, t+width)."""
    out, j = [], 0
    for i, t in enumerate(times):
        while j < len(times) and times[j] < t + width:
            j += 1
        out.append((t, j - i))
    return out


def gcra_early(times, rate, burst):
    """How long before its time the earliest message of TIMES (sorted)
    came, as the GCRA at RATE a second with BURST (virtual scheduling:
    T = 1/rate, tau = (burst - 1) T) sees them; 0 when all conform."""
    T = 1.0 / rate
    tau = (burst - 1) * T
    tat, worst = None, 0.0
    for t in times:
        if tat is None:
            tat = t
        worst = max(worst, (tat - tau) - t)
        tat = max(tat, t) + T
    return worst


def test_rate_shared():
    """max_message_rate = 30/s over three nodes: the first second holds
    at most the burst (30) and what the rate adds in it (30), every
    later second at most 31, and everything is delivered."""
    with rqlib.Env() as base:
        redis = cl.Redis(base)
        sink = cl.Sink()
        envs = nodes_for(redis, sink, "max_message_rate = 30/s\n")
        try:
            # 90 each: no node is done before the others have started
            # (a pause refills the bucket, and a burst may follow it)
            run_nodes(envs, 90, 120)
            rqlib.check_eq(sink.count(), 270, "messages at the sink")
            t = sorted(sink.mails)
            w = windows(t)
            first = w[0][1]
            later = [n for (s, n) in w if s >= t[0] + 1.0]
            rqlib.check(first <= 60, "first second: %d > 30 + 30" % first)
            rqlib.check(later and max(later) <= 31,
                        "a later second held %d (> 31)" % max(later))
            # the limit was the cluster's: 270 at 30/s take 8 s at least
            rqlib.check(t[-1] - t[0] >= 7.5,
                        "270 messages in %.1fs" % (t[-1] - t[0]))
        finally:
            sink.stop()
            close_all(envs)


def test_rate_cost():
    """A 200/s limit shared by three nodes costs tens of Redis calls a
    second, not hundreds (batched reservations), and keeps to the
    limit: the arrivals conform to the GCRA (200/s, burst 200) up to
    50 ms of delivery jitter.  A per-second count would not do here: a
    node slowed down (ASan, load) lets the bucket refill, and a refilled
    bucket may rightly send a burst."""
    with rqlib.Env() as base:
        redis = cl.Redis(base)
        sink = cl.Sink()
        envs = nodes_for(redis, sink, "max_message_rate = 200/s\n")
        try:
            run_nodes(envs, 600, 120)
            rqlib.check_eq(sink.count(), 1800, "messages at the sink")
            t = sorted(sink.mails)
            span = t[-1] - t[0]
            early = gcra_early(t, 200.0, 200)
            rqlib.check(early <= 0.05, "a message %.3fs before the "
                        "GCRA (200/s, burst 200) allowed it" % early)
            calls = 0
            for e in envs:
                m = re.search(r"left the cluster: (\d+) Redis calls",
                              e.log_text())
                rqlib.check(m, "the node counted its calls")
                calls += int(m.group(1))
            print("  200/s over three nodes: %d Redis calls in %.1fs "
                  "(%.0f a second, %.3f per message)" % (
                      calls, span, calls / span, calls / 1800.0))
            rqlib.check(span >= 7.5, "1800 in %.1fs: over the rate" % span)
            rqlib.check(calls / span < 100,
                        "%d calls in %.1fs: %.0f a second" % (
                            calls, span, calls / span))
        finally:
            sink.stop()
            close_all(envs)


def test_host_down_shared():
    """One node finds the destination down (421 greeting): the other two
    defer "delivery temporarily suspended" without connecting."""
    with rqlib.Env() as base:
        redis = cl.Redis(base)
        sink = cl.Sink(mode="421")
        envs = nodes_for(redis, sink)
        try:
            cl.drop_many(envs[0], 1, "first")
            cl.wait_exit(cl.start_node(envs[0]), 60, "node 1")
            rqlib.check("status=deferred" in envs[0].log_text(),
                        "node 1 deferred")
            _, _, accepted = sink.stats()
            rqlib.check(accepted >= 1, "node 1 connected")
            rqlib.check(redis.cli("EXISTS", "relayq:down:/[127.0.0.1]:%d"
                                  % sink.port) == "1", "the down key is set")
            for i in (1, 2):
                cl.drop_many(envs[i], 3, "later%d" % i)
            procs = [cl.start_node(envs[i]) for i in (1, 2)]
            for i, p in zip((1, 2), procs):
                cl.wait_exit(p, 60, "node %d" % (i + 1))
                text = envs[i].log_text()
                rqlib.check_eq(len(re.findall(
                    r"status=deferred \(delivery temporarily suspended: "
                    r"host 127\.0\.0\.1\[127\.0\.0\.1\] said: 421", text)),
                    3, "node %d: deferred as suspended" % (i + 1))
            rqlib.check_eq(sink.stats()[2], accepted,
                           "connections after node 1's")
        finally:
            sink.stop()
            close_all(envs)


def lines_of(env, pattern):
    return cl.log_count(env, pattern)


def wait_live(envs, n):
    """Waits until every node's heartbeat has counted N live nodes: the
    shares of cluster_fallback share are computed from that count, so
    an outage before it is counted would leave a node a bigger share."""
    rqlib.wait_for(lambda: all(
        re.search(r"%d live nodes in the cluster" % n, e.log_text())
        for e in envs), 30, 0.05, "every node counting %d live nodes" % n)


def test_redis_killed_and_back():
    """SIGKILL Redis mid-run: mail keeps flowing under `share` with the
    peak within the limit; Redis restarted empty: the nodes share the
    limits again (leases in Redis); each switch logged once."""
    with rqlib.Env() as base:
        redis = cl.Redis(base)
        sink = cl.Sink(delay=0.02)
        envs = nodes_for(redis, sink, "max_connections = 4\n"
                         "cluster_lease_time = 3s\n")

        def chaos():
            rqlib.wait_for(lambda: sink.count() >= 150, 60, 0.05,
                           "150 messages before the kill")
            # Every node must have counted the three live before the
            # kill: its fallback share is the limit over the nodes its
            # last tick saw, and a node that saw itself alone takes the
            # whole limit (a fast drain reaches 150 messages within
            # 1.5 s of the start).
            wait_live(envs, 3)
            rqlib.check(sink.count() < 1400, "mail still flowing at the kill")
            redis.kill(signal.SIGKILL)
            rqlib.wait_for(lambda: all(
                lines_of(e, r"unreachable .*cluster_fallback share") == 1
                for e in envs), 5, 0.05, "every node in fallback")
            before = sink.count()
            rqlib.wait_for(lambda: sink.count() >= before + 60, 30, 0.05,
                           "mail flowing while Redis is away")
            redis.start()   # empty
            rqlib.wait_for(lambda: all(
                lines_of(e, r"Redis at .* reachable") == 2 for e in envs),
                10, 0.05, "every node back in the cluster")
            key = "relayq:lease:/[127.0.0.1]:%d" % sink.port
            rqlib.wait_for(lambda: redis.cli("ZCARD", key) not in ("", "0"),
                           10, 0.05, "leases in the new Redis")
            rqlib.wait_for(lambda: redis.cli("ZCARD", "relayq:nodes") == "3",
                           10, 0.05, "three nodes in the new Redis")
            # the new Redis knew no script: EVALSHA got NOSCRIPT, the
            # nodes loaded them (SCRIPT LOAD) and ran them again
            stats = redis.cli("INFO", "commandstats")
            rqlib.check(re.search(r"cmdstat_script(\|load)?:calls=[1-9]",
                                  stats),
                        "scripts loaded after NOSCRIPT:\n" + stats)
            rqlib.check("cmdstat_evalsha:calls=" in stats,
                        "scripts run by digest:\n" + stats)
        try:
            run_nodes(envs, 500, 240, chaos)
            rqlib.check_eq(sink.count(), 1500, "messages at the sink")
            _, peak, _ = sink.stats()
            rqlib.check(peak <= 4, "peak %d over the limit 4" % peak)
            for e in envs:
                rqlib.check_eq(lines_of(e, r"unreachable"), 1,
                               "fallback logged once")
                rqlib.check_eq(lines_of(e, r"Redis at .* reachable"), 2,
                               "joined, and back once")
        finally:
            sink.stop()
            close_all(envs)


def test_redis_hung():
    """SIGSTOP Redis: every node falls back within a second (its calls'
    deadlines) and delivers; SIGCONT: back to shared limits."""
    with rqlib.Env() as base:
        redis = cl.Redis(base)
        sink = cl.Sink(delay=0.01)
        envs = nodes_for(redis, sink, "max_connections = 4\n")
        for i, e in enumerate(envs):
            cl.drop_many(e, 200, "n%d" % (i + 1))
        procs = [cl.start_node(e, idle=False) for e in envs]
        try:
            rqlib.wait_for(lambda: all("limits shared" in e.log_text()
                                       for e in envs), 20, 0.05, "joined")
            rqlib.wait_for(lambda: sink.count() >= 50, 60, 0.05, "mail")
            wait_live(envs, 3)
            redis.kill(signal.SIGSTOP)
            t0 = time.monotonic()
            rqlib.wait_for(lambda: all("unreachable" in e.log_text()
                                       for e in envs), 10, 0.02, "fallback")
            took = time.monotonic() - t0
            # 1 s, and the time this script takes to notice
            rqlib.check(took <= 1.3, "fallback after %.2fs" % took)
            redis.kill(signal.SIGCONT)
            rqlib.wait_for(lambda: all(
                lines_of(e, r"Redis at .* reachable") == 2 for e in envs),
                10, 0.05, "back")
            rqlib.wait_for(lambda: sink.count() >= 600, 120, 0.1, "all")
            rqlib.check(sink.stats()[1] <= 4, "peak within the limit")
            for e in envs:
                rqlib.check_eq(lines_of(e, r"unreachable"), 1,
                               "fallback logged once")
        finally:
            redis.kill(signal.SIGCONT)
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                p.wait(30)
            sink.stop()
            close_all(envs)


def test_node_killed():
    """SIGKILL a node holding every lease: its slots come back within
    cluster_lease_time (not before its leases expire), its in-flight
    mail is delivered after it restarts; nothing is lost."""
    lease = 3.0
    with rqlib.Env() as base:
        redis = cl.Redis(base)
        sink = cl.Sink(delay=1.0)
        envs = nodes_for(redis, sink, "max_connections = 4\n"
                         "cluster_lease_time = 3s\n", names=("n1", "n2"))
        try:
            cl.drop_many(envs[0], 12, "a")
            cl.drop_many(envs[1], 12, "b")
            a = cl.start_node(envs[0], idle=False)
            rqlib.wait_for(lambda: sink.stats()[0] == 4, 30, 0.02,
                           "node 1 holding 4 sessions")
            a.send_signal(signal.SIGKILL)
            a.wait(10)
            t_kill = time.time()
            # the leases' expiry, on Redis' clock (this machine's unix
            # time, in ms): exact, whatever the tick's phase or the load
            out = redis.cli("ZRANGE", "relayq:lease:/[127.0.0.1]:%d"
                            % sink.port, "0", "-1", "WITHSCORES").split()
            expiry = sorted(int(x) / 1000.0 for x in out[1::2])
            rqlib.check_eq(len(expiry), 4, "node 1's leases in Redis")
            rqlib.check(expiry[-1] <= t_kill + lease + 0.01,
                        "a lease expires %.2fs after the kill (lease %.0fs)"
                        % (expiry[-1] - t_kill, lease))
            rqlib.wait_for(lambda: sink.stats()[0] == 0, 10, 0.02,
                           "node 1's sessions gone")
            before = sink.stats()[2]
            b = cl.start_node(envs[1], idle=False)
            rqlib.wait_for(lambda: sink.stats()[2] > before, 30, 0.01,
                           "node 2 connecting")
            t2 = time.time()
            # node 2 noticed a connection after it was made: t2 may be
            # late (load), never early
            rqlib.check(t2 >= expiry[0],
                        "node 2 connected %.2fs before a lease expired"
                        % (expiry[0] - t2))
            rqlib.check(t2 <= expiry[0] + 1.0,
                        "node 2 connected %.2fs after a lease expired"
                        % (t2 - expiry[0]))
            rqlib.wait_for(lambda: sink.stats()[0] == 4, 30, 0.02,
                           "node 2 using all 4")
            a = cl.start_node(envs[0], idle=False)
            rqlib.wait_for(lambda: len(set(sink.subjects)) == 24, 120, 0.1,
                           "every message delivered")
            rqlib.check(sink.stats()[1] <= 4, "peak within the limit")
            for p in (a, b):
                p.send_signal(signal.SIGTERM)
                p.wait(30)
        finally:
            sink.stop()
            close_all(envs)


def test_fallback_hold():
    """cluster_fallback = hold, Redis not there when the node starts: it
    opens no connection (logged once) and delivers everything once Redis
    answers (a new connection is tried every second).  `relayq cluster`
    exits 75 while Redis is away, 78 without cluster_redis."""
    with rqlib.Env() as base:
        port = rqlib.free_port()
        sink = cl.Sink()
        env = rqlib.Env(cl.node_conf("n1", sink.port,
                                     types.SimpleNamespace(port=port),
                                     "cluster_fallback = hold\n"))
        try:
            cl.drop_many(env, 5, "hold")
            p = cl.start_node(env)
            rqlib.wait_for(lambda: "cluster_fallback hold" in
                           env.log_text(), 30, 0.05, "the fallback logged")
            time.sleep(2.0)     # without hold, all five would be sent
            rqlib.check_eq(sink.stats()[2], 0, "connections under hold")
            rqlib.check_eq(env.run("cluster").returncode, 75,
                           "relayq cluster without Redis")
            cl.Redis(base, port=port)
            cl.wait_exit(p, 60, "node")
            rqlib.check_eq(sink.count(), 5, "delivered once Redis answered")
            rqlib.check_eq(lines_of(env, r"unreachable"), 1,
                           "fallback logged once")
            rqlib.check_eq(lines_of(env, r"Redis at .* reachable"), 1,
                           "joined once")
            with rqlib.Env(cl.node_conf("n0", sink.port)) as alone:
                rqlib.check_eq(alone.run("cluster").returncode, 78,
                               "relayq cluster without cluster_redis")
        finally:
            sink.stop()
            env.close()


def test_fallback_local():
    """cluster_fallback = local, Redis killed mid-run: each node goes on
    with its own full limits (two nodes, max_connections = 2: up to 4
    sessions at the sink where the cluster allowed 2), logged once, and
    delivers everything."""
    with rqlib.Env() as base:
        redis = cl.Redis(base)
        sink = cl.Sink(delay=0.05)
        envs = nodes_for(redis, sink, "max_connections = 2\n"
                         "cluster_lease_time = 3s\n"
                         "cluster_fallback = local\n", names=("n1", "n2"))

        def chaos():
            rqlib.wait_for(lambda: sink.count() >= 40, 60, 0.05,
                           "40 messages before the kill")
            wait_live(envs, 2)
            rqlib.check(sink.stats()[1] <= 2,
                        "peak %d over the shared limit 2" % sink.stats()[1])
            redis.kill(signal.SIGKILL)
            rqlib.wait_for(lambda: all(
                lines_of(e, r"unreachable .*cluster_fallback local") == 1
                for e in envs), 5, 0.05, "every node in fallback")
            # past the settling time (cluster_lease_time), then the peak
            # anew: each node at its own limit
            time.sleep(3.5)
            with sink.lock:
                sink.peak = sink.cur
            rqlib.wait_for(lambda: sink.stats()[1] >= 3, 20, 0.02,
                           "more sessions than the shared limit (local)")
        try:
            run_nodes(envs, 300, 240, chaos)
            rqlib.check_eq(sink.count(), 600, "messages at the sink")
            rqlib.check(sink.stats()[1] <= 4,
                        "peak %d over the nodes' own limits" % sink.stats()[1])
            for e in envs:
                rqlib.check_eq(lines_of(e, r"unreachable"), 1,
                               "fallback logged once")
        finally:
            sink.stop()
            close_all(envs)


def test_password_and_checks():
    """cluster_password: a file with the secret rules (0600, owned by
    root or the daemon's user); AUTH with it; a wrong one keeps the node
    in fallback, logged once.  cluster_redis takes no host name."""
    with rqlib.Env() as base:
        redis = cl.Redis(base, password="s3cret pass")
        sink = cl.Sink()
        pw = os.path.join(base.dir, "redis.pw")
        with open(pw, "w") as f:
            f.write("s3cret pass\n")
        os.chmod(pw, 0o644)
        env = rqlib.Env(cl.node_conf("n1", sink.port, redis,
                                     "cluster_password = %s\n" % pw))
        try:
            p = env.run("check-config")
            rqlib.check(p.returncode == 78 and b"cluster_password" in
                        p.stderr and b"chmod 600" in p.stderr,
                        "a readable password file is refused: %r" %
                        p.stderr)
            os.chmod(pw, 0o600)
            cl.drop_many(env, 5, "pw")
            cl.wait_exit(cl.start_node(env), 60, "node")
            rqlib.check("limits shared" in env.log_text(), "AUTH worked")
            rqlib.check_eq(sink.count(), 5, "delivered")
            rqlib.check(b"s3cret" not in subprocess.run(
                [rqlib.BIN, "check-config", "-c", env.conf],
                stdout=subprocess.PIPE).stdout, "no secret printed")
            with open(pw, "w") as f:
                f.write("wrong\n")
            cl.drop_many(env, 2, "wrong")
            cl.wait_exit(cl.start_node(env), 60, "node, wrong password")
            text = env.log_text().split("daemon started")[-1]
            rqlib.check_eq(len(re.findall(r"unreachable \(AUTH", text)), 1,
                           "AUTH refusal logged once")
            rqlib.check_eq(sink.count(), 7, "delivered under the fallback")
            env.write_conf("cluster_redis = localhost:%d\n" % redis.port)
            p = env.run("check-config")
            rqlib.check(p.returncode == 78 and b"not a host name" in
                        p.stderr, "host name refused: %r" % p.stderr)
        finally:
            sink.stop()
            env.close()


def test_metrics():
    """/metrics exports the cluster's side: shared 1 and the node
    counted while Redis answers, a token used per message under a rate,
    the calls it sent; shared 0 and a fallback once Redis is gone.
    relayq(8) names every relayq_cluster_* family."""
    import httplib
    with rqlib.Env() as base:
        redis = cl.Redis(base)
        sink = cl.Sink()
        port = rqlib.free_port()
        env = rqlib.Env(cl.node_conf(
            "n1", sink.port, redis, "max_message_rate = 1000/s\n"
            "http_listen = 127.0.0.1:%d\n" % port))
        cl.drop_many(env, 20, "m")
        p = cl.start_node(env, idle=False)
        try:
            rqlib.wait_for(lambda: sink.count() >= 20, 60, 0.05, "mail")
            rqlib.wait_port(port)

            def val(name):
                return httplib.metrics(port).get((name, ()))
            rqlib.wait_for(lambda: val("relayq_cluster_nodes") == 1, 10,
                           0.1, "the node counted")
            rqlib.check_eq(val("relayq_cluster_shared"), 1.0, "shared")
            rqlib.check_eq(val("relayq_cluster_tokens_used_total"), 20.0,
                           "a token a message")
            rqlib.check(val("relayq_cluster_redis_calls_total") > 0,
                        "calls counted")
            rqlib.check_eq(val("relayq_cluster_fallbacks_total"), 0.0,
                           "no fallback yet")
            body = httplib.ok(port, "/metrics").decode()
            fams = [l.split()[2] for l in body.splitlines()
                    if l.startswith("# TYPE relayq_cluster_")]
            rqlib.check(len(fams) == 8, "cluster families: %r" % fams)
            with open(os.path.join(rqlib.SRC, "doc", "relayq.8")) as f:
                man = f.read().replace("\\-", "-")
            rqlib.check_eq([f for f in fams if f not in man], [],
                           "relayq(8) names them")
            redis.kill(signal.SIGKILL)
            rqlib.wait_for(lambda: val("relayq_cluster_shared") == 0, 10,
                           0.1, "shared 0 without Redis")
            rqlib.check_eq(val("relayq_cluster_fallbacks_total"), 1.0,
                           "one fallback")
        finally:
            p.send_signal(signal.SIGTERM)
            p.wait(30)
            sink.stop()
            env.close()


if __name__ == "__main__":
    rqlib.main(globals())
