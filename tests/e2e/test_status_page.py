"""The operator status page (``GET /status``) against a real hub process.

The HTTP-level checks (headers, caching, redirect) use plain urllib. The rest drive
Debian's Chromium (``/usr/bin/chromium``) through Playwright: the page lists the
fleet with slots, token rates and prompt cache hits, draws the last 15 minutes,
shows a killed worker as down and out of rotation, drains and undrains, asks for an
admin token when auth is on, and says so when the hub cannot be reached. Every browser test
also checks that the page logged no console error and no CSP violation and
loaded nothing from anywhere but the hub.
"""

from __future__ import annotations

import json
import re
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Dialog,
    Locator,
    Page,
    Request,
    expect,
    sync_playwright,
)

from hub.auth.config import parse_auth
from hub.auth.issue import issue_token
from tests.conftest import workers_config
from tests.support.hubproc import FaultWorker, HubProcess
from tests.support.llama import LlamaWorker

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
NO_CHROMIUM = f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)"
JWT_ENV = "SPOKEHUB_STATUS_PAGE_JWT_SECRET"
# A model name that is markup (models come from workers and agents): the page must
# show it as text.
HTML_MODEL = '<img src=x id=injected onerror="document.title=1">'
UI_TIMEOUT_MS = 15_000

MakeHub = Callable[..., HubProcess]
MakeFault = Callable[..., FaultWorker]
MakeLlama = Callable[..., LlamaWorker]

# The browser's own report of an HTTP error status the test provokes on purpose
# (a 401/403 the page handles, a refused connection after the hub stops).
EXPECTED_401 = re.compile(r"^Failed to load resource: the server responded with a status "
                          r"of 40[13] \((Unauthorized|Forbidden)\)$")
EXPECTED_REFUSED = re.compile(r"^Failed to load resource: net::ERR_CONNECTION_REFUSED$")


# -- plain HTTP ------------------------------------------------------------------------

class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def http_get(url: str, headers: dict[str, str] | None = None) -> Reply:
    opener = urllib.request.build_opener(_NoRedirect)
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with opener.open(req, timeout=10) as resp:
            return Reply(resp.status, dict(resp.headers), resp.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, dict(exc.headers), exc.read())


def admin_workers(hub: HubProcess, token: str | None = None) -> dict[str, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    reply = http_get(f"{hub.url}/admin/workers", headers)
    assert reply.status == 200, reply.body
    return {w["name"]: w for w in json.loads(reply.body)["workers"]}


def post_json(hub: HubProcess, path: str, doc: dict[str, Any]) -> Any:
    req = urllib.request.Request(f"{hub.url}{path}", data=json.dumps(doc).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200
        return json.load(resp)


def chat(hub: HubProcess, model: str) -> None:
    post_json(hub, "/v1/chat/completions",
              {"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]})


def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s")
        time.sleep(0.1)


def asset_urls(html: str) -> list[str]:
    return re.findall(r'(?:href|src)="(static/[^"]+)"', html)


# -- the browser -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(NO_CHROMIUM)
    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


# Recorded before any page script runs: CSP violations the page would otherwise
# only report to the console.
_RECORD_CSP = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`);
});
"""


@dataclass
class StatusPage:
    page: Page
    hub: HubProcess
    console: list[tuple[str, str]] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)

    def open(self) -> StatusPage:
        self.page.goto(f"{self.hub.url}/")  # redirects to /status
        assert self.page.url == f"{self.hub.url}/status"
        return self

    def row(self, name: str) -> Locator:
        return self.page.locator(f'#rows tr[data-worker="{name}"]')

    def cell(self, name: str, column: str) -> Locator:
        return self.row(name).locator(f"td.{column}")

    def banner(self) -> Locator:
        return self.page.locator("#banner")

    def screenshot(self, directory: Path, name: str) -> Path:
        path = directory / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        print(f"status page screenshot: {path}")
        return path

    def chart(self, name: str) -> Locator:
        return self.page.locator(f"#chart-{name}")

    def assert_clean(self, allowed: tuple[re.Pattern[str], ...] = ()) -> None:
        """No page error, no CSP violation, no console error beyond ``allowed``
        and no request to anywhere but the hub."""
        violations = self.page.evaluate("window.__cspViolations")
        assert violations == [], violations
        assert self.page_errors == [], self.page_errors
        errors = [text for kind, text in self.console
                  if kind == "error" and not any(p.match(text) for p in allowed)]
        assert errors == [], errors
        warnings = [text for kind, text in self.console if kind == "warning"]
        assert warnings == [], warnings
        foreign = [r.url for r in self.requests if not r.url.startswith(f"{self.hub.url}/")]
        assert foreign == [], foreign


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Callable[[HubProcess], StatusPage]]:
    contexts = []

    def make(hub: HubProcess) -> StatusPage:
        context = browser.new_context(viewport={"width": 1500, "height": 820})
        contexts.append(context)
        context.add_init_script(_RECORD_CSP)
        page = context.new_page()
        page.set_default_timeout(UI_TIMEOUT_MS)
        status = StatusPage(page, hub)

        # Plain functions: Playwright tags its handlers, which a bound builtin refuses.
        def on_console(msg: ConsoleMessage) -> None:
            status.console.append((msg.type, msg.text))

        def on_page_error(exc: Exception) -> None:
            status.page_errors.append(str(exc))

        def on_request(request: Request) -> None:
            status.requests.append(request)

        page.on("console", on_console)
        page.on("pageerror", on_page_error)
        page.on("request", on_request)
        return status.open()

    yield make
    for context in contexts:
        context.close()


# -- tests -----------------------------------------------------------------------------

def test_status_page_headers_and_caching(make_hub: MakeHub) -> None:
    hub = make_hub(workers_config())
    root = http_get(f"{hub.url}/")
    assert root.status == 302 and root.headers["Location"] == "status"

    page = http_get(f"{hub.url}/status")
    assert page.status == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp.split("; ")
    assert "frame-ancestors 'none'" in csp
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Cache-Control"] == "no-cache"
    html = page.body.decode()
    # Nothing inline (the CSP would block it) and nothing from elsewhere.
    assert "<style" not in html and " style=" not in html
    assert re.findall(r"<script[^>]*>", html) == [
        f'<script type="module" src="{u}">' for u in asset_urls(html) if ".js" in u]
    assert "//" not in html.replace("<!doctype html>", "")
    assert http_get(f"{hub.url}/status",
                    {"If-None-Match": page.headers["ETag"]}).status == 304

    urls = asset_urls(html)
    assert {u.split("?")[0] for u in urls} == {
        "static/status.css", "static/status.js", "static/favicon.svg"}
    types = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
    for url in urls:
        assert re.fullmatch(r"static/[a-z]+\.[a-z]+\?v=[0-9a-f]{16}", url), url
        asset = http_get(f"{hub.url}/{url}")
        assert asset.status == 200, url
        assert asset.headers["Content-Type"].startswith(types[url[url.rindex("."):].split("?")[0]])
        assert asset.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert asset.headers["X-Content-Type-Options"] == "nosniff"
        assert "default-src 'self'" in asset.headers["Content-Security-Policy"]
        # Without the current hash (an old page, a hand-typed URL): revalidate.
        unversioned = http_get(f"{hub.url}/{url.split('?')[0]}")
        assert unversioned.headers["Cache-Control"] == "no-cache"
        assert unversioned.body == asset.body
        assert http_get(f"{hub.url}/{url}",
                        {"If-None-Match": asset.headers["ETag"]}).status == 304

    for missing in ("static/nope.js", "static/status.html", "static/..%2fstatus.py",
                    "static/"):
        assert http_get(f"{hub.url}/{missing}").status == 404, missing


def test_page_lists_the_fleet_and_shows_a_killed_worker_down(
        make_hub: MakeHub, make_fault: MakeFault, make_llama: MakeLlama,
        open_page: Callable[[HubProcess], StatusPage], tmp_path: Path) -> None:
    llama = make_llama("tiny")
    doomed = make_fault("fault-model")
    odd = make_fault(HTML_MODEL)
    config = workers_config(llama, doomed, odd, agents={"enabled": True, "ttl_s": 120})
    config["workers"].append({"name": "w3", "url": "http://127.0.0.1:9", "kind": "llamacpp"})
    hub = make_hub(config)
    # A worker registered by an agent, which also reports slots and free VRAM.
    post_json(hub, "/v1/agents/heartbeat", {
        "agent_id": "gpu-box-1",
        "workers": [{"name": "gpu-box-1-tiny", "url": llama.url, "kind": "llamacpp",
                     "models": ["tiny"], "slots_total": 2, "slots_busy": 1,
                     "vram_free_mb": 20480}]})
    chat(hub, "tiny")
    chat(hub, "tiny")  # the same prompt again: llama.cpp reuses its cache
    chat(hub, "fault-model")
    with pytest.raises(urllib.error.HTTPError):
        chat(hub, "no-such-model")  # an error for the chart

    status = open_page(hub)
    page = status.page
    expect(page.locator("#rows tr")).to_have_count(5)
    headers = page.locator("#workers thead th").all_inner_texts()
    assert [h.strip().lower() for h in headers[:7]] == [
        "worker", "kind", "source", "health", "rotation", "breaker", "models"]
    assert page.locator("#workers caption").inner_text() == "Workers"
    for name in ("w0", "w1", "w2"):
        expect(status.cell(name, "health")).to_contain_text("Up")
        expect(status.cell(name, "rotation")).to_have_text("In rotation")
        expect(status.cell(name, "breaker")).to_contain_text("Closed")
        expect(status.cell(name, "source")).to_have_text("config")
        expect(status.cell(name, "kind")).to_have_text("llamacpp")
    expect(status.cell("w3", "health")).to_contain_text("Down")
    expect(status.row("w3").locator("th")).to_contain_text("http://127.0.0.1:9")
    expect(status.cell("w3", "rotation")).to_have_text("Out: down")
    expect(status.cell("w0", "models")).to_have_text("tiny")  # all loaded: not repeated
    expect(status.cell("w0", "latency")).to_have_text(re.compile(r"^[0-9.]+ (ms|s)$"))
    # Config llama.cpp workers report slots too: the prober reads /slots.
    expect(status.cell("w0", "slots")).to_have_text(re.compile(r"^\d+ / \d+$"))
    expect(status.cell("w1", "slots")).to_have_text("\u2014not reported")
    expect(status.cell("w0", "vram")).to_have_text("\u2014not reported")
    # Tokens it reported over the last minute, and its prompt cache hits.
    expect(status.cell("w0", "tokens")).to_have_text(
        re.compile(r"^[0-9.]+prompt [0-9.]+/s[0-9.]+% cached$"))
    expect(status.cell("w1", "tokens")).to_have_text(  # the fault worker never says
        re.compile(r"^[0-9.]+prompt [0-9.]+/s$"))
    expect(status.cell("w2", "tokens")).to_have_text("\u2014not reported")
    expect(page.locator("#total-tokens")).to_have_text(re.compile(r"^[0-9.]+prompt"))
    expect(page.locator("#total-cache")).to_have_text(re.compile(r"^[0-9.]+%"))
    # The last 15 minutes, drawn from the hub's ring buffer.
    for name in ("requests", "errors", "ttft", "tokens"):
        svg = status.chart(name).locator("svg")
        expect(svg).to_have_attribute("data-points", re.compile(r"^[1-9][0-9]*$"))
        expect(svg.locator("path.series").first).to_be_attached()
        expect(svg).to_have_attribute("aria-label", re.compile(r"last 15 minutes"))
    expect(status.chart("errors").locator(".chart-legend")).to_contain_text("model_not_found")
    expect(status.chart("tokens").locator(".chart-legend")).to_have_text("completionprompt")
    expect(status.chart("requests").locator(".chart-value")).to_contain_text("/s")
    agent = f"gpu-box-1-llamacpp-{llama.port}"  # the hub names agent workers
    expect(status.cell(agent, "source")).to_have_text("agent:gpu-box-1")
    expect(status.cell(agent, "health")).to_contain_text("Up")
    # The agent said 1 busy; the hub's own probe of the idle worker may since say 0.
    expect(status.cell(agent, "slots")).to_have_text(re.compile(r"^[01] / 2$"))
    expect(status.cell(agent, "vram")).to_have_text("20.0 GiB")
    # Markup from a worker is shown as text, never parsed.
    expect(status.cell("w2", "models")).to_have_text(HTML_MODEL)
    assert page.locator("#injected").count() == 0
    expect(page.locator("#total-healthy > span").first).to_have_text("4 / 5")
    expect(page.locator("#total-healthy > .badge")).to_have_text("1 down")
    expect(page.locator("#total-budget")).to_contain_text("retries left")
    expect(status.banner()).to_be_hidden()
    expect(page.locator("#auth")).to_be_hidden()
    expect(page.locator("#token-state-text")).to_have_text(
        "No token needed: authentication is off on this hub.")
    first = page.locator("#updated-time").get_attribute("datetime")
    expect(page.locator("#updated-time")).not_to_have_attribute("datetime", first or "")
    status.screenshot(tmp_path, "status-fleet")

    doomed.proc.kill()
    expect(status.cell("w1", "health")).to_contain_text("Down")
    expect(status.cell("w1", "rotation")).to_have_text("Out: down")  # not "In rotation"
    expect(status.row("w1")).to_have_class(re.compile(r"\bdown\b"))
    expect(page.locator("#total-healthy > span").first).to_have_text("3 / 5")
    expect(page.locator("#total-healthy > .badge")).to_have_text("2 down")
    expect(status.cell("w0", "health")).to_contain_text("Up")
    status.screenshot(tmp_path, "status-worker-down")
    status.assert_clean()


def test_drain_and_undrain_from_the_page(
        make_hub: MakeHub, make_fault: MakeFault,
        open_page: Callable[[HubProcess], StatusPage]) -> None:
    a, b = make_fault(), make_fault()
    hub = make_hub(workers_config(a, b))
    status = open_page(hub)
    page = status.page
    drain = page.get_by_role("button", name="Drain worker w0", exact=True)
    expect(drain).to_be_visible()

    # Dismissing the confirmation leaves the worker alone.
    messages: list[str] = []

    def dismiss(dialog: Dialog) -> None:
        messages.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", dismiss)
    drain.click()
    wait_until(lambda: bool(messages), 5, "confirm dialog")
    assert 'Drain worker "w0"?' in messages[0]
    time.sleep(0.5)
    assert admin_workers(hub)["w0"]["draining"] is False

    page.once("dialog", lambda dialog: dialog.accept())
    drain.click()
    wait_until(lambda: admin_workers(hub)["w0"]["draining"] is True, 5, "w0 draining")
    expect(status.cell("w0", "rotation")).to_have_text("Draining")
    expect(page.locator("#notice")).to_contain_text("Worker w0 is draining")
    expect(page.locator("#total-draining")).to_have_text("1")
    assert admin_workers(hub)["w1"]["draining"] is False

    undrain = page.get_by_role("button", name="Undrain worker w0", exact=True)
    undrain.click()  # no confirmation to put a worker back
    wait_until(lambda: admin_workers(hub)["w0"]["draining"] is False, 5, "w0 undrained")
    expect(status.cell("w0", "rotation")).to_have_text("In rotation")
    expect(drain).to_be_visible()
    status.assert_clean()


def test_admin_token_prompt_with_auth_on(
        make_hub: MakeHub, make_fault: MakeFault,
        open_page: Callable[[HubProcess], StatusPage], tmp_path: Path) -> None:
    secret = secrets.token_hex(32)
    env = {JWT_ENV: secret}
    auth = {"enabled": True, "keys": [{"kid": "ops", "alg": "HS256", "secret_env": JWT_ENV}]}
    worker = make_fault()
    hub = make_hub(workers_config(worker, auth=auth), env=env)
    cfg = parse_auth(auth)
    admin = issue_token(cfg, tenant="ops", scopes=["admin"], ttl_s=600, environ=env)
    infer_only = issue_token(cfg, tenant="ops", scopes=["infer"], ttl_s=600, environ=env)
    assert http_get(f"{hub.url}/admin/workers").status == 401
    assert http_get(f"{hub.url}/status").status == 200  # the page itself needs no token

    status = open_page(hub)
    page = status.page
    token_box = page.get_by_role("textbox", name="Admin token", exact=True)
    expect(token_box).to_be_visible()
    expect(token_box).to_be_focused()
    expect(token_box).to_have_attribute("type", "password")
    expect(status.banner()).to_contain_text("Admin token required (HTTP 401)")
    expect(page.locator("#rows tr")).to_have_count(0)
    expect(page.locator("#empty")).to_have_text(
        "No fleet data: this needs a valid admin token.")
    status.screenshot(tmp_path, "status-token-prompt")

    use = page.get_by_role("button", name="Use token")
    token_box.fill(admin[:-4] + "AAAA")  # bad signature
    use.click()
    expect(status.banner()).to_contain_text("Token rejected (HTTP 401)")
    expect(token_box).to_be_visible()
    expect(token_box).to_have_value("")
    assert page.evaluate("sessionStorage.length") == 0  # a rejected token is not kept

    token_box.fill(infer_only)
    use.click()
    expect(status.banner()).to_contain_text("Access denied (HTTP 403)")
    expect(status.banner()).to_contain_text("admin scope")

    token_box.fill(admin)
    token_box.press("Enter")
    expect(status.cell("w0", "health")).to_contain_text("Up")
    expect(status.banner()).to_be_hidden()
    expect(page.locator("#auth")).to_be_hidden()
    expect(page.locator("#token-state-text")).to_have_text(
        "Using the admin token stored in this tab.")
    assert page.evaluate("sessionStorage.getItem('spokehub.adminToken')") == admin
    assert page.evaluate("localStorage.length") == 0

    # Drain works with the token; a reload of the tab keeps it.
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Drain worker w0").click()
    wait_until(lambda: admin_workers(hub, admin)["w0"]["draining"] is True, 5, "drained")
    page.reload()
    expect(status.cell("w0", "rotation")).to_have_text("Draining")
    status.screenshot(tmp_path, "status-with-token")

    # The token went out only as a Bearer header, never in a URL.
    data_calls = [r for r in status.requests if "/admin/" in r.url]
    assert data_calls
    assert not [r.url for r in status.requests if admin in r.url or infer_only in r.url]
    sent = {r.headers.get("authorization") for r in data_calls}
    assert f"Bearer {admin}" in sent and f"Bearer {infer_only}" in sent
    assert all(r.method in ("GET", "POST") for r in data_calls)

    page.get_by_role("button", name="Forget token").click()
    expect(status.banner()).to_contain_text("Admin token required (HTTP 401)")
    expect(token_box).to_be_visible()
    expect(page.locator("#rows tr")).to_have_count(0)
    assert page.evaluate("sessionStorage.length") == 0
    status.assert_clean(allowed=(EXPECTED_401,))


def test_banner_when_the_hub_is_unreachable(
        make_hub: MakeHub, make_fault: MakeFault,
        open_page: Callable[[HubProcess], StatusPage], tmp_path: Path) -> None:
    worker = make_fault()
    hub = make_hub(workers_config(worker))
    status = open_page(hub)
    page = status.page
    expect(status.cell("w0", "health")).to_contain_text("Up")
    shown = page.locator("#updated-time").inner_text()

    hub.stop()
    expect(status.banner()).to_contain_text("Cannot reach the hub.")
    expect(status.banner()).to_contain_text(f"The table shows data from {shown}")
    expect(page.locator("#updated")).to_have_class(re.compile(r"\bstale\b"))
    expect(page.locator("#updated-note")).to_have_text("(stale: the hub cannot be reached)")
    expect(status.row("w0")).to_be_visible()  # last known state stays, dimmed
    status.screenshot(tmp_path, "status-unreachable")
    status.assert_clean(allowed=(EXPECTED_REFUSED,))
