"""The status page (/) as a browser renders it: Debian's headless
Chromium loads it from a running daemon, the test checks the rendered DOM
(the per-class table with a row per class, both charts with a series
drawn, the destinations and the failures), and saves screenshots of a
desktop and a phone-sized window under the build folder
(RELAYQ_BUILD/http-status*.png); and the README's screenshot of the
page (doc/status-page.png, taken the same way of a daemon with a few
minutes of mixed traffic) is there."""
import os
import re
import shutil
import subprocess
import tempfile

import httplib
import rqlib
from rqlib import check, check_eq
from test_runner_lib import deliveries, drop, dumps, sink, start, stop

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def chromium(url, *args):
    """Runs headless Chromium on URL with ARGS; returns its stdout."""
    prof = tempfile.mkdtemp(prefix="relayq-chromium-")
    try:
        p = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run",
             "--user-data-dir=" + prof] + list(args) + [url],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
        if p.returncode != 0:
            raise rqlib.Fail("chromium exited %d: %s" %
                             (p.returncode, p.stderr.decode()[-1500:]))
        return p.stdout.decode()
    finally:
        shutil.rmtree(prof, ignore_errors=True)


def test_status_page_in_chromium():
    port = rqlib.free_port()
    closed = rqlib.free_port()
    with rqlib.Env() as env:
        _, sport, dd = sink(env)
        env.write_conf("relayhost = [127.0.0.1]:%d\n" % sport +
                       httplib.http_conf(port)[0] +
                       "retry.min = 1h\n[domain down.test]\n"
                       "relayhost = [127.0.0.1]:%d\n" % closed)
        p = start(env)
        for i, pr in enumerate(("urgent", "normal", "non-urgent") * 3):
            drop(env, "r%d@dst.test" % i, priority=pr)
        drop(env, "late@down.test", priority="urgent")
        rqlib.wait_for(lambda: len(dumps(dd)) == 9, 60, what="9 sent")
        rqlib.wait_for(lambda: any(d["to"] == "late@down.test"
                                   for d in deliveries(env)), 30,
                       what="the deferral")
        url = "http://127.0.0.1:%d/" % port
        dom = chromium(url, "--dump-dom")
        # the class table: a row per class, the urgent one waiting
        table = re.search(r'<table id="classes">(.*?)</table>', dom, re.S)
        check(table, "no class table in the DOM:\n" + dom[:2000])
        rows = re.findall(r'<tr data-class="([a-z-]+)">(.*?)</tr>',
                          table.group(1), re.S)
        check_eq([r[0] for r in rows],
                 ["urgent", "normal", "non-urgent", "dsn"], "class rows")
        cells = re.findall(r"<td[^>]*>(.*?)</td>", rows[0][1], re.S)
        check_eq(cells[0], "1", "urgent waiting: %r" % cells)
        check(re.search(r"\d+s", cells[4]), "urgent oldest: %r" % cells)
        check(cells[5].startswith("in "), "warning due: %r" % cells)
        # the charts: inline SVG with a series drawn
        for chart in ("chart-queue", "chart-rate"):
            fig = re.search(r'<figure class="chart" id="%s">(.*?)</figure>'
                            % chart, dom, re.S)
            check(fig, "no %s" % chart)
            check("<svg" in fig.group(1), "%s has no svg" % chart)
            check(re.search(r'<(polyline|circle) data-series="[a-z-]+"',
                            fig.group(1)), "%s has no series" % chart)
        check(re.search(r'id="chart-queue".*data-series="urgent"', dom,
                        re.S), "no urgent series")
        check(re.search(r'id="chart-rate".*data-series="sent"', dom, re.S),
              "no sent series")
        dests = re.search(r'<table id="destinations">(.*?)</table>', dom,
                          re.S).group(1)
        check("down.test" in dests and "down until" in dests, dests)
        fails = re.search(r'<table id="failures">(.*?)</table>', dom,
                          re.S).group(1)
        check("late@down.test" in fails and "Connection refused" in fails,
              fails)
        # screenshots under the build folder: a desktop, a phone
        for name, size in (("http-status.png", "1100,1400"),
                           ("http-status-phone.png", "390,1600")):
            path = os.path.join(rqlib.BUILD, name)
            if os.path.exists(path):
                os.unlink(path)
            chromium(url, "--screenshot=" + path, "--window-size=" + size,
                     "--hide-scrollbars")
            check(os.path.getsize(path) > 10000, "screenshot %s" % path)
            with open(path, "rb") as f:
                head = f.read(24)
            check_eq(head[:8], b"\x89PNG\r\n\x1a\n", "a PNG")
            width = int.from_bytes(head[16:20], "big")
            check_eq(width, int(size.split(",")[0]), "width of " + name)
        stop(p)


def test_readme_shows_the_page():
    """The README shows a screenshot of the status page: the PNG it
    names is committed under doc/, a real PNG a page wide, and small."""
    with open(os.path.join(rqlib.SRC, "README.md")) as f:
        readme = f.read()
    m = re.search(r"!\[[^\]]*status page[^\]]*\]\((doc/[^)]+\.png)\)",
                  readme, re.S)
    check(m, "README has no screenshot of the status page")
    path = os.path.join(rqlib.SRC, m.group(1))
    check(os.path.exists(path), "%s is missing" % m.group(1))
    with open(path, "rb") as f:
        head = f.read(24)
    check_eq(head[:8], b"\x89PNG\r\n\x1a\n", "a PNG")
    check(int.from_bytes(head[16:20], "big") >= 600, "a page wide")
    check(os.path.getsize(path) < 200 * 1024, "small: %d bytes" %
          os.path.getsize(path))


if __name__ == "__main__":
    rqlib.main(globals())
