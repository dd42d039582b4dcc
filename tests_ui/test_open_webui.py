"""Open WebUI, the chat front end people put in front of Ollama or an OpenAI-style
server, pointed at a real hub and driven in Chromium.

Each test starts its own Open WebUI (``.venv-ui``, offline, no login) with one
connection to the hub: its OpenAI connection (``OPENAI_API_BASE_URL=<hub>/v1``) or
its Ollama connection (``OLLAMA_BASE_URL=<hub>``), the other turned off. The page
must list the hub's model in its model picker, send a message and show a streamed
answer (the tiny model writes gibberish: the answer only has to be non-empty and
grow while it streams); the hub must have served the chat, streaming, on the
matching route. Screenshots land next to the logs and in the repository root
(``webui-openai.png``, ``webui-ollama.png``; not committed).

Not collected by the default suite (``testpaths = ["tests"]``): run it with
``scripts/test_ui.sh`` or ``scripts/test.sh --ui``.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.support.hubproc import HubProcess
from tests.support.procs import ROOT
from tests_ui.webui import OpenWebUI

UI_TIMEOUT_MS = 30_000
PROMPT = "Hello from the spokehub UI test"

# Open WebUI's own markup (0.12): stable ids on the model picker and the composer.
MODEL_BUTTON = "#model-selector-model-button"
CHAT_INPUT = "#chat-input"
ASSISTANT = ".chat-assistant"



def connection_env(connection: str, hub: HubProcess) -> dict[str, str]:
    """Open WebUI's environment for one connection to the hub, the other one off."""
    if connection == "openai":
        return {"ENABLE_OPENAI_API": "true", "ENABLE_OLLAMA_API": "false",
                "OPENAI_API_BASE_URL": hub.base_url, "OPENAI_API_KEY": "unused-auth-off"}
    return {"ENABLE_OPENAI_API": "false", "ENABLE_OLLAMA_API": "true",
            "OLLAMA_BASE_URL": hub.url}


# The hub route each connection's chat arrives on.
CHAT_ROUTE = {"openai": "/chat/completions", "ollama": "/api/chat"}

# Records every length the last answer's text goes through while it streams in.
WATCH_ANSWER = """() => {
  window.__answerLengths = [];
  const seen = () => {
    const all = document.querySelectorAll('.chat-assistant');
    if (!all.length) return;
    const n = all[all.length - 1].innerText.trim().length;
    const lens = window.__answerLengths;
    if (!lens.length || lens[lens.length - 1] !== n) lens.push(n);
  };
  new MutationObserver(seen).observe(document.body,
    {subtree: true, childList: true, characterData: true});
}"""


def chat_requests(hub: HubProcess) -> list[dict[str, Any]]:
    """The hub's structured log lines for requests a worker served."""
    out = []
    for line in hub.proc.log().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("logger") == "spokehub.request":
            out.append(rec)
    return out


def requests_total(hub: HubProcess, route: str) -> float:
    with urllib.request.urlopen(f"{hub.url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    total = 0.0
    for m in re.finditer(r'^spokehub_requests_total\{([^}]*)\} (\S+)$', text, re.M):
        if f'route="{route}"' in m.group(1) and 'status="200"' in m.group(1):
            total += float(m.group(2))
    return total


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    pg.set_default_timeout(UI_TIMEOUT_MS)
    try:
        yield pg
    finally:
        ctx.close()


@pytest.mark.parametrize("connection", list(CHAT_ROUTE))
def test_chat_through_hub(connection: str, hub: HubProcess, page: Page,
                          workdir: Path) -> None:
    route = CHAT_ROUTE[connection]
    ui = OpenWebUI(workdir, connection, connection_env(connection, hub))
    t0 = time.monotonic()
    ui.start()
    print(f"\nopen-webui ({connection}) ready in {time.monotonic() - t0:.1f}s at {ui.url}; "
          f"log {ui.proc.log_path}")
    outside: list[str] = []
    page.on("request", lambda r: None if r.url.startswith((ui.url, "data:", "blob:"))
            else outside.append(r.url))
    before = requests_total(hub, route)
    served_before = len(chat_requests(hub))
    shot = workdir / f"webui-{connection}.png"
    try:
        page.goto(ui.url, wait_until="load")
        # First visit: a "What's New" dialog covers the page until dismissed.
        whats_new = page.get_by_role("button", name="Okay, Let's Go!")
        with contextlib.suppress(PlaywrightTimeout):
            whats_new.click(timeout=10_000)

        # The model picker is filled from the hub: only its model is there.
        page.locator(MODEL_BUTTON).click()
        options = page.get_by_role("option")
        expect(options.first).to_be_visible()
        names = [t.strip() for t in options.all_inner_texts()]
        print(f"model picker ({connection}): {names}")
        assert names, "the model picker is empty"
        assert all(n.split(":")[0] == "tiny" for n in names), names
        options.first.click()
        expect(page.locator(MODEL_BUTTON)).to_contain_text("tiny")

        page.evaluate(WATCH_ANSWER)
        page.locator(CHAT_INPUT).click()
        page.keyboard.type(PROMPT)
        page.keyboard.press("Enter")

        expect(page.locator(".chat-user").last).to_contain_text(PROMPT)
        answer = page.locator(ASSISTANT).last
        expect(answer).to_have_text(re.compile(r"\S"))
        # Done streaming: only a finished answer gets its action row (Regenerate is
        # an answer's alone; the question has Copy and Edit too).
        expect(page.get_by_role("button", name="Regenerate")).to_have_count(1)
        text = answer.inner_text().strip()
        lengths: list[int] = page.evaluate("window.__answerLengths")
        print(f"answer ({connection}): {len(text)} chars, "
              f"{len(lengths)} distinct lengths while streaming: {text[:80]!r}...")
        assert text
        assert len(lengths) >= 2, f"the answer appeared at once, not streamed: {lengths}"
        # The hub logs a request once its stream has ended.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not [
                r for r in chat_requests(hub)[served_before:] if r.get("route") == route]:
            time.sleep(0.2)
    finally:
        page.screenshot(path=str(shot), full_page=True)
        copy = ROOT / shot.name
        shutil.copyfile(shot, copy)
        print(f"screenshot: {shot} (copied to {copy})")
        ui.stop()

    # The hub served it: a streamed chat on the connection's route, through a worker.
    served = [r for r in chat_requests(hub)[served_before:] if r.get("route") == route]
    assert served, f"hub logged no {route} request: {chat_requests(hub)[served_before:]}"
    assert any(r.get("stream") and r.get("status") == 200 and r.get("worker")
               for r in served), served
    assert requests_total(hub, route) > before
    print(f"hub ({connection}): {[(r['route'], r['worker'], r['stream']) for r in served]}")
    assert not outside, f"the page loaded from outside Open WebUI: {outside}"
