"""``pycircuit web``: the real web process against real servers; its HTTP
surface (token, Host check, CSRF, /metrics) over sockets, and the page in a
real headless Chromium (Debian's, driven by Playwright)."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
from urllib.parse import urlsplit

import pytest

import pycircuit
from circuit_helpers import daemon
from conftest import child_env, start_server, stop_process, wait_until

if os.environ.get("CI") != "true":  # in CI the web extra is installed: a missing one fails
    pytest.importorskip("aiohttp")
    pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
XSS = "<img src=x onerror=window.__pwned=1>"


class WebView:
    def __init__(self, *extra: str, env: dict | None = None):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pycircuit.cli", "web", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env or child_env(),
        )
        self.url = self.proc.stdout.readline().strip()
        if not self.url:
            stop_process(self.proc)
            raise AssertionError("web view did not start: " + self.proc.stderr.read())
        parts = urlsplit(self.url)
        self.scheme, self.host, self.port = parts.scheme, parts.hostname, parts.port
        self.token = parts.query.removeprefix("token=")
        self.base = f"{parts.scheme}://{parts.netloc}"

    def request(
        self,
        method: str,
        path: str,
        headers: dict | None = None,
        body: bytes | None = None,
        context: ssl.SSLContext | None = None,
    ) -> http.client.HTTPResponse:
        if self.scheme == "https":
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=30, context=context)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        hdrs = {"Host": f"127.0.0.1:{self.port}"} | (headers or {})
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        resp.body = resp.read()
        conn.close()
        return resp

    def get(self, path: str, **headers: str) -> http.client.HTTPResponse:
        return self.request("GET", path, {k.replace("_", "-"): v for k, v in headers.items()})

    def authed(self, path: str) -> http.client.HTTPResponse:
        return self.get(path, Authorization=f"Bearer {self.token}")

    def state(self) -> dict:
        r = self.authed("/api/state")
        assert r.status == 200, r.body
        return json.loads(r.body)

    def stop(self) -> None:
        stop_process(self.proc)


@pytest.fixture(scope="module")
def two():
    """Two joined servers and a web view dialled into the first."""
    p1, url1 = start_server()
    procs = [p1]
    view = None
    try:
        p2, url2 = start_server("-j", url1)
        procs.append(p2)
        c = pycircuit.connect(url1)
        wait_until(lambda: len(c.hosts()) == 2, 20, what="two servers joined")
        view = WebView("-d", url1)
        yield c, view
    finally:
        if view is not None:
            view.stop()
        for p in reversed(procs):
            stop_process(p)


def _spawn(c, host, anchor):
    _, addr = c.spawn(host, anchor, daemon)
    return addr


# -- the HTTP surface -----------------------------------------------------------------
def test_url_is_the_only_stdout_line_and_carries_a_token(two):
    _, view = two
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/\?token=[A-Za-z0-9_-]{40,}", view.url)


def test_stops_cleanly_and_scrubs_its_subscriptions(two):
    c, _ = two
    k = c.kernel(c.server_id)

    def mine() -> set:
        return {p[0] for p, kind in k.tree([]) if kind == "@join"}

    before = mine()
    view = WebView("-d", c.url)
    new = wait_until(lambda: mine() - before, 20, what="the view's @join subscription")
    assert len(new) == 1 and next(iter(new)).startswith("pycircuit-web-")
    view.stop()
    assert view.proc.returncode == 0
    assert view.proc.stdout.read() == ""  # the URL was the only line
    wait_until(lambda: not (mine() - before), 20, what="the subscription scrubbed")


def test_token_is_enforced(two):
    _, view = two
    for path in ("/", "/events", "/api/state", "/metrics", "/static/app.js"):
        assert view.get(path).status == 401, path
        assert view.get(path + "?token=wrong").status == 403, path
        assert view.get(path, Authorization="Bearer wrong").status == 403, path
    # The token in the URL becomes an HttpOnly, SameSite=Strict cookie, and leaves the address bar.
    r = view.get(f"/?token={view.token}")
    assert r.status == 303 and r.getheader("Location") == "/"
    cookie = r.getheader("Set-Cookie")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie, cookie
    pair = cookie.split(";")[0]
    r = view.get("/", Cookie=pair)
    assert r.status == 200 and b"pycircuit" in r.body
    assert "script-src 'self'" in r.getheader("Content-Security-Policy")
    assert view.get("/", Cookie=pair.split("=")[0] + "=nope").status == 403


def test_host_header_is_checked(two):
    _, view = two
    bearer = {"Authorization": f"Bearer {view.token}"}
    for host in (f"evil.example:{view.port}", f"127.0.0.1.nip.io:{view.port}", "127.0.0.1:1", ""):
        assert view.request("GET", "/metrics", {**bearer, "Host": host}).status == 403, host
    for host in (f"localhost:{view.port}", f"127.0.0.1:{view.port}"):
        assert view.request("GET", "/metrics", {**bearer, "Host": host}).status == 200, host


def test_metrics_parse_and_are_labelled_by_host(two):
    c, view = two
    host = c.hosts()[1]
    addr = _spawn(c, host, "metrics")
    try:
        r = view.authed("/metrics")
        assert r.status == 200
        fams = {f.name: f for f in text_string_to_metric_families(r.body.decode())}
        for name in (
            "pycircuit_workers",
            "pycircuit_spawns",
            "pycircuit_calls_served",
            "pycircuit_leases_owned",
            "pycircuit_leases_held",
            "pycircuit_connections",
            "pycircuit_members",
            "pycircuit_server_cpu_seconds",
            "pycircuit_server_rss_bytes",
            "pycircuit_host_cpu_percent",
            "pycircuit_host_memory_total_bytes",
        ):
            assert name in fams, name
        ids = {h.id for h in c.hosts()}
        values = {
            name: {
                s.labels["host"]: s.value
                for s in fams[name].samples
                if not s.name.endswith("_created")
            }
            for name in fams
        }
        assert set(values["pycircuit_members"]) == ids
        assert all(v == 2 for v in values["pycircuit_members"].values())
        assert values["pycircuit_workers"][host.id] >= 1
        assert values["pycircuit_spawns"][host.id] >= 1
        assert all(v > 0 for v in values["pycircuit_calls_served"].values())
        assert all(v > 0 for v in values["pycircuit_server_rss_bytes"].values())
        # The query token works too (for scrapers that cannot set headers), with no redirect.
        assert view.get(f"/metrics?token={view.token}").status == 200
    finally:
        c.kill(addr)


def test_kernel_metrics_count_spawns_and_calls(two):
    c, _ = two
    host = next(h for h in c.hosts() if h.id == c.server_id)  # the web view's dial-in server
    k = c.kernel(host)
    before = k.metrics()
    addr = _spawn(c, host, "count")
    try:
        after = k.metrics()
        assert after["spawns"] == before["spawns"] + 1
        assert after["runtime"]["calls_served"] > before["runtime"]["calls_served"]
        mine = [w for w in after["workers"] if w["id"] == addr.id]
        assert (
            mine
            and mine[0]["pid"] == addr.pid
            and mine[0]["rss"] > 0
            and mine[0]["anchors"] == [["count"]]
        )
        assert "tree" not in after
        view = k.metrics(True)  # what one poll of the page reads from a host
        assert {hid for hid, _ in view["hosts"]} == {h.id for h in c.hosts()}
        assert (["count", addr.id], "worker") in [(list(p), kind) for p, kind in view["tree"]]
        subs = [p for p, kind in view["tree"] if kind == "@join"]
        assert (
            subs and view["elements"]["/".join(subs[0])]["Pending"] >= 0
        )  # the web view's own subscription
    finally:
        c.kill(addr)


def test_kill_is_post_only_with_csrf(two):
    c, view = two
    host = c.hosts()[0]
    addr = _spawn(c, host, "victims")
    page = view.authed("/").body.decode()
    csrf = re.search(r'name="csrf" content="([0-9a-f]+)"', page).group(1)
    wait_until(
        lambda: any(w["id"] == addr.id for w in view.state()["workers"][host.id]),
        20,
        what="worker seen",
    )
    auth = {"Authorization": f"Bearer {view.token}", "Content-Type": "application/json"}
    body = json.dumps({"id": addr.id}).encode()
    assert view.request("GET", "/api/kill", auth).status == 405
    assert view.request("POST", "/api/kill", auth, body).status == 403
    assert view.request("POST", "/api/kill", {**auth, "X-CSRF-Token": "0" * 32}, body).status == 403
    evil = {**auth, "X-CSRF-Token": csrf, "Origin": "http://evil.example"}
    assert view.request("POST", "/api/kill", evil, body).status == 403
    assert addr.id in {w["id"] for w in c.kernel(host).workers()}
    r = view.request("POST", "/api/kill", {**auth, "X-CSRF-Token": csrf}, body)
    assert r.status == 200, r.body
    wait_until(
        lambda: addr.id not in {w["id"] for w in c.kernel(host).workers()},
        20,
        what="worker killed",
    )
    assert (
        view.request(
            "POST",
            "/api/kill",
            {**auth, "X-CSRF-Token": csrf},
            json.dumps({"id": "not-a-worker"}).encode(),
        ).status
        == 400
    )


def test_tools_refuse_unknown_targets(two):
    _, view = two
    assert view.authed("/api/stack?id=Q0123456789abcdef").status == 404
    assert view.authed("/api/stack?id=../../etc").status == 400
    assert view.authed("/api/profile?id=Q0123456789abcdef&seconds=99999").status == 400


def test_non_loopback_needs_a_key_or_insecure(two):
    server = two[0].url
    r = subprocess.run(
        [sys.executable, "-m", "pycircuit.cli", "web", "-d", server, "-a", "0.0.0.0:0"],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )
    assert r.returncode == 2 and r.stdout == ""
    assert (
        len(r.stderr.strip().splitlines()) == 1
        and "--insecure" in r.stderr
        and "Traceback" not in r.stderr
    )
    view = WebView("-d", server, "-a", "0.0.0.0:0", "--insecure")
    try:
        assert view.url.startswith("http://127.0.0.1:")
        assert view.authed("/metrics").status == 200
    finally:
        view.stop()
    assert "warning" in view.proc.stderr.read()


def test_non_loopback_with_key_serves_https_signed_by_the_cluster_key():
    with tempfile.TemporaryDirectory() as d:
        key = os.path.join(d, "key")
        subprocess.run(
            [sys.executable, "-m", "pycircuit.cli", "keygen", "-o", key],
            check=True,
            env=child_env(),
        )
        p, url = start_server("--key", key)
        view = None
        try:
            view = WebView("-d", url, "--key", key, "-a", "0.0.0.0:0")
            assert view.url.startswith("https://127.0.0.1:")
            ctx = ssl.create_default_context(cafile=key)
            r = view.request(
                "GET", "/metrics", {"Authorization": f"Bearer {view.token}"}, context=ctx
            )
            assert r.status == 200 and b"pycircuit_workers" in r.body
            with pytest.raises(ssl.SSLError):  # not trusted without the cluster's certificate
                view.request("GET", "/metrics", context=ssl.create_default_context())
        finally:
            if view is not None:
                view.stop()
            stop_process(p)


def test_other_commands_do_not_import_the_web_stack():
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "pycircuit.cli", "ls", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )
    assert r.returncode == 0
    assert "aiohttp" not in r.stderr and "prometheus_client" not in r.stderr


# -- the page in a real browser --------------------------------------------------------
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 30_000


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium, driven by Playwright (never a downloaded browser).
    In CI both must be there: no skip."""
    if os.environ.get("CI") != "true":
        if not os.path.exists(CHROMIUM):
            pytest.skip("no chromium (apt-get install chromium)")
        pytest.importorskip("playwright")
    from playwright.sync_api import sync_playwright

    with (
        tempfile.TemporaryDirectory(prefix="pycircuit-chromium-") as profile,
        sync_playwright() as pw,
    ):
        # A persistent context is how Playwright takes our fresh --user-data-dir.
        ctx = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            yield ctx
        finally:
            ctx.close()


@pytest.fixture
def page(browser, two):
    _, view = two
    pg = browser.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(view.url)
    pg.wait_for_selector("#status.live", timeout=WAIT_MS)
    try:
        yield pg
    finally:
        pg.close()
    assert not errors, errors


def _worker_li(host_id: str, anchor: str, wid: str) -> str:
    return f'li[data-path="/{host_id}/{anchor}"] > ul > li[data-worker="{wid}"]'


def test_page_lists_every_host_and_the_workers_under_their_anchors(two, page):
    c, view = two
    assert urlsplit(page.url).query == ""  # the token left the address bar for a cookie
    hosts = c.hosts()
    a1, a2 = _spawn(c, hosts[0], "web/one"), _spawn(c, hosts[1], ["web/two", "web/also"])
    try:
        for h in hosts:
            page.wait_for_selector(f'#hosts tr[data-host="{h.id}"]', timeout=WAIT_MS)
            page.wait_for_selector(f'#tree li.host-root[data-host="{h.id}"]', timeout=WAIT_MS)
        page.wait_for_selector(_worker_li(hosts[0].id, "web/one", a1.id), timeout=WAIT_MS)
        page.wait_for_selector(_worker_li(hosts[1].id, "web/two", a2.id), timeout=WAIT_MS)
        row = page.locator(_worker_li(hosts[1].id, "web/also", a2.id))
        row.wait_for(timeout=WAIT_MS)
        assert f"pid {a2.pid}" in row.locator(".stats").first.text_content()
        assert (
            page.locator(f'#hosts tr[data-host="{hosts[0].id}"] td').first.text_content()
            == hosts[0].id
        )
        # The membership timeline has both hosts (the @join subscription starts with the live ones).
        for h in hosts:
            page.wait_for_selector(f'#events li.ev-join:has-text("{h.id}")', timeout=WAIT_MS)
    finally:
        c.kill(a1)
        c.kill(a2)


def test_page_follows_spawns_and_kills_live(two, page):
    c, view = two
    host = c.hosts()[0]
    addr = _spawn(c, host, "live")  # after the page opened
    sel = _worker_li(host.id, "live", addr.id)
    page.wait_for_selector(sel, timeout=WAIT_MS)
    c.kill(addr)
    page.wait_for_selector(sel, state="detached", timeout=WAIT_MS)
    # ... and its remains show up, with the cause of death.
    remains = page.locator(f'#remains details[data-worker="{addr.id}"]')
    remains.wait_for(timeout=WAIT_MS)
    assert "SIGKILL" in remains.locator("summary").text_content()


def test_stack_and_flame_graph_on_click(two, page):
    c, _ = two
    host = c.hosts()[0]
    addr = _spawn(c, host, "inspect")
    try:
        row = page.locator(_worker_li(host.id, "inspect", addr.id))
        row.wait_for(timeout=WAIT_MS)
        row.locator("button.stack").first.click()
        stack = page.locator("#stack")
        stack.wait_for(timeout=WAIT_MS)
        assert f"pid {addr.pid}" in stack.text_content() and "Thread" in stack.text_content()
        page.fill("#seconds", "0.5")
        page.locator(_worker_li(host.id, "inspect", addr.id)).locator(
            "button.profile"
        ).first.click()
        page.wait_for_selector("#flame svg rect", timeout=WAIT_MS)
        labels = page.locator("#flame svg title").all_text_contents()
        assert labels and labels[0].startswith(
            "all"
        )  # the root bar, then the workers' threads and frames
        assert any("samples" in t for t in labels[1:])
    finally:
        c.kill(addr)


def shouting():
    """A worker whose output is HTML (it shows in its remains)."""
    import threading

    print(XSS, flush=True)
    pycircuit.run_in_back(threading.Event().wait)


def test_an_anchor_named_with_html_does_not_inject(two, page):
    c, _ = two
    host = c.hosts()[0]
    addr = _spawn(c, host, XSS)
    _, loud = c.spawn(host, "loud", shouting)
    try:
        sel = f'li[data-worker="{addr.id}"]'
        page.wait_for_selector(sel, timeout=WAIT_MS)
        names = page.locator(".anchor-name").all_text_contents()
        assert XSS in names  # shown literally
        c.kill(loud)
        tail = page.locator(f'#remains details[data-worker="{loud.id}"] pre.stdout')
        tail.wait_for(state="attached", timeout=WAIT_MS)
        assert tail.text_content().strip() == XSS
        assert page.evaluate("document.querySelectorAll('img').length") == 0
        assert page.evaluate("window.__pwned") is None
    finally:
        c.kill(addr)


def test_kill_button_is_a_marked_control(two, page):
    c, _ = two
    host = c.hosts()[1]
    addr = _spawn(c, host, "button")
    sel = _worker_li(host.id, "button", addr.id)
    button = page.locator(sel).locator("button.kill").first
    button.wait_for(timeout=WAIT_MS)
    assert "control" in button.get_attribute("class") and "control" in button.get_attribute("title")
    page.once("dialog", lambda d: d.accept())
    button.click()
    page.wait_for_selector(sel, state="detached", timeout=WAIT_MS)
    assert addr.id not in {w["id"] for w in c.kernel(host).workers()}
