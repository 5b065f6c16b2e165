"""The web console end to end: `aios up` with agents working, driven by a real headless Chromium
(Debian's `chromium`, through Playwright with the system browser). Every page loads, live numbers
change without a reload, a syscall's timeline opens, a held deletion is approved and another rejected
with a reason (the agents see the outcome), an agent's files and memory are browsed; the login form
and the API refuse a missing or wrong token; no console error on any page. Screenshots go to
`bench/out/console/` (git-ignored).

No browser is a failure that says so, not a skip: CI installs `chromium` (.ci/run)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from aios_sdk import AIOS, ApprovalDenied
from tests.e2e.helpers import aios, wait_until

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("AIOS_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[2] / "bench" / "out" / "console"
MODEL = "sim-llama-8b"
# The network is closed here: without these Chromium waits on connections it will never get.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _browser_or_fail() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the console's browser tests need the `playwright` package (dev extras: make setup)")
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.fail(
            f"no browser at {CHROMIUM}: install Debian's chromium (apt-get install -y chromium),"
            " as .ci/run does, or set AIOS_CHROMIUM"
        )
    return sync_playwright


@dataclass
class Load:
    """Agents working in the background (their own event loop, in a thread)."""

    home: Path
    stop: threading.Event = field(default_factory=threading.Event)
    calls: int = 0
    deletes: dict[str, object] = field(default_factory=dict)  # path -> outcome (info or error)
    loop: asyncio.AbstractEventLoop | None = None

    async def chat_loop(self, agent: str) -> None:
        async with AIOS.connect(home=self.home, agent=agent) as a:
            while not self.stop.is_set():
                msg = [{"role": "user", "content": "work [sim:tokens=40]"}]
                await a.llm.chat(MODEL, msg, max_tokens=64, timeout=30)
                self.calls += 1

    async def delete(self, path: str) -> None:
        async with AIOS.connect(home=self.home, agent="writer") as w:
            try:
                self.deletes[path] = await w.files.delete(path, timeout=90)
            except ApprovalDenied as exc:
                self.deletes[path] = exc

    def start(self) -> None:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self.loop = loop
            ready.set()
            tasks = [loop.create_task(self.chat_loop(a)) for a in ("local", "reader", "reader")]
            loop.run_until_complete(self._until_stopped())
            for t in tasks:
                t.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.close()

        threading.Thread(target=run, daemon=True).start()
        ready.wait()

    async def _until_stopped(self) -> None:
        await asyncio.to_thread(self.stop.wait)

    def submit(self, coro: Any) -> None:
        assert self.loop is not None
        asyncio.run_coroutine_threadsafe(coro, self.loop)


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[Path, str, str, Load]]:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        cfg = Path(tmp) / "aios.toml"
        cfg.write_text('agents = ["reader", "writer"]\n')
        up = aios(home, "up", "--detach", "--config", str(cfg))
        assert up.returncode == 0, up.stdout + up.stderr
        try:
            gateway = next(line for line in up.stdout.splitlines() if line.startswith("Console: "))
            url = gateway.removeprefix("Console: ").split("/ui/")[0]
            token = (home / "console.token").read_text().strip()
            load = Load(home)
            load.start()
            yield home, url, token, load
            load.stop.set()
        finally:
            down = aios(home, "down")
            assert down.returncode == 0, down.stdout + down.stderr


def _prepare_writer(home: Path) -> None:
    async def run() -> None:
        async with AIOS.connect(home=home, agent="writer") as w:
            for name in ("keep.txt", "gone.txt", "notes/today.md"):
                await w.files.write(name, f"contents of {name}\nsecond line")
            await w.memory.add("Alice prefers tea", tags=["prefs"])

    asyncio.run(run())


def test_api_refuses_without_token(stack: tuple[Path, str, str, Load]) -> None:
    _, url, token, _ = stack
    for headers in ({}, {"Cookie": "aios_console=wrong"}):
        req = urllib.request.Request(f"{url}/ui/api/overview", headers=headers)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == 401
    ok = urllib.request.Request(f"{url}/ui/api/overview", headers={"Cookie": f"aios_console={token}"})
    with urllib.request.urlopen(ok, timeout=10) as resp:
        assert resp.status == 200
    # A state change needs the page's own header (a cross-site form cannot send it).
    post = urllib.request.Request(
        f"{url}/ui/api/approvals/x", data=b"{}", headers={"Cookie": f"aios_console={token}"}, method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(post, timeout=10)
    assert err.value.code == 403


def test_console_in_a_browser(stack: tuple[Path, str, str, Load]) -> None:
    home, url, token, load = stack
    sync_playwright = _browser_or_fail()
    SHOTS.mkdir(parents=True, exist_ok=True)
    _prepare_writer(home)
    rule = aios(home, "rule", "add", "agent:writer", "files.delete", "approve", "--id", "console-e2e")
    assert rule.returncode == 0, rule.stderr
    problems: list[str] = []
    with sync_playwright() as p:
        # Playwright gives each launch a fresh, temporary profile (its own --user-data-dir).
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            ctx = browser.new_context(viewport={"width": 1280, "height": 800})
            page = ctx.new_page()
            page.set_default_timeout(15_000)
            page.on(
                "console",
                lambda m: (
                    problems.append(f"console {m.type}: {m.text} {m.location}") if m.type == "error" else None
                ),
            )
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))

            # Login: no cookie -> the form; a wrong token is refused; the right one lets in.
            page.goto(f"{url}/ui/")
            assert page.url.endswith("/ui/login")
            page.fill("#token", "not-the-token")
            page.click("button[type=submit]")
            page.locator("#failed").wait_for(state="visible")
            page.fill("#token", token)
            page.click("button[type=submit]")

            # Overview: live numbers change with no reload.
            page.wait_for_url(f"{url}/ui/")
            page.locator("#live.on").wait_for()
            wait_until("calls finished", lambda: load.calls > 0)
            first = page.inner_text("#stat-done")
            page.wait_for_function(
                "before => document.getElementById('stat-done')?.textContent !== before", arg=first
            )
            assert page.locator("table >> text=llm.sim-llama-8b").count() >= 1
            assert page.locator("meter").count() >= 1
            page.wait_for_function(
                "document.querySelectorAll('svg.chart rect.bar').length > 0", timeout=20_000
            )
            page.screenshot(path=str(SHOTS / "overview.png"), full_page=True)

            # Agents: a page of rows, updated live.
            page.click("nav >> text=Agents")
            page.locator("#agents-rows >> text=reader").wait_for()
            calls = page.locator("#agents-rows tr:has-text('reader') td").first.inner_text()
            page.wait_for_function(
                """before => [...document.querySelectorAll('#agents-rows tr')]
                    .some(r => r.textContent.includes('reader') && r.cells[1].textContent !== before)""",
                arg=calls,
            )
            page.screenshot(path=str(SHOTS / "agents.png"), full_page=True)

            # Syscall explorer, filtered; a syscall's timeline.
            page.click("nav >> text=Syscalls")
            page.fill("#f-agent", "reader")
            page.select_option("#f-state", "done")
            page.click("form.filters button[type=submit]")
            page.wait_for_url("**state=done**")
            page.locator("table tbody tr").first.wait_for()
            assert page.locator("table tbody tr:has-text('llm.chat')").count() > 0
            # Live: the newest page follows new syscalls without a reload (the agents keep working).
            newest = page.locator("table tbody tr a code").first.inner_text()
            page.wait_for_function(
                "before => document.querySelector('table tbody tr a code')?.textContent !== before",
                arg=newest,
                timeout=30_000,
            )
            page.screenshot(path=str(SHOTS / "syscalls.png"), full_page=True)
            page.locator("table tbody tr a code").first.click()
            page.locator("#timeline .seg.running").wait_for()
            assert page.locator("#timeline .seg.queued, #timeline .seg.admission").count() >= 1
            assert page.locator("text=Backend").count() >= 1 and page.locator("dd >> text=sim").count() >= 1
            page.screenshot(path=str(SHOTS / "timeline.png"), full_page=True)

            # Approvals: two held deletions; approve one, reject the other with a reason.
            load.submit(load.delete("keep.txt"))
            load.submit(load.delete("gone.txt"))
            page.click("nav >> text=Approvals")
            page.wait_for_function(
                "document.querySelectorAll('article.approval').length === 2", timeout=30_000
            )
            page.wait_for_function("document.getElementById('pending').textContent === '2'")
            page.screenshot(path=str(SHOTS / "approvals.png"), full_page=True)
            keep = page.locator("article.approval:has-text('keep.txt')")
            gone = page.locator("article.approval:has-text('gone.txt')")
            gone.locator("button.danger").click()  # no reason yet: refused in the page
            gone.locator("[role=status] >> text=Say why").wait_for()
            gone.locator("input[name=reason]").fill("not today")
            gone.locator("button.danger").click()
            gone.locator("[role=status] >> text=rejected").wait_for()
            keep.locator("button.primary").click()
            keep.locator("[role=status] >> text=approved").wait_for()
            wait_until("both deletions answered", lambda: len(load.deletes) == 2, timeout=20)
            assert isinstance(load.deletes["gone.txt"], ApprovalDenied)
            assert "not today" in str(load.deletes["gone.txt"])
            assert not isinstance(load.deletes["keep.txt"], Exception)
            page.wait_for_function("document.getElementById('pending').textContent === '0'")

            # One agent: its files (read-only, a file's text) and memory.
            page.goto(f"{url}/ui/#/agent/writer")
            page.locator("#files-h").wait_for()
            page.locator("text=Alice prefers tea").wait_for()
            page.click("a >> text=notes/today.md")
            page.locator("pre.file >> text=contents of notes/today.md").wait_for()
            page.screenshot(path=str(SHOTS / "agent.png"), full_page=True)

            # Keyboard: the menu is reachable with Tab and follows Enter.
            page.goto(f"{url}/ui/#/overview")
            page.locator("#live.on").wait_for()
            page.locator("a.skip").focus()  # the first stop of the page
            page.keyboard.press("Tab")
            assert page.evaluate("document.activeElement.textContent") == "Overview"
            page.keyboard.press("Tab")
            page.keyboard.press("Enter")
            page.locator("#agents-rows").wait_for()

            # A phone: nothing wider than the screen but the tables' own scroll areas.
            phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
            phone.add_cookies([{"name": "aios_console", "value": token, "url": f"{url}/ui/"}])
            mp = phone.new_page()
            mp.on("pageerror", lambda e: problems.append(f"page error (phone): {e}"))
            mp.goto(f"{url}/ui/#/overview")
            mp.locator("#stat-done").wait_for()
            assert mp.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
            mp.screenshot(path=str(SHOTS / "phone.png"), full_page=True)
            phone.close()
        finally:
            browser.close()
    with contextlib.suppress(Exception):
        aios(home, "rule", "rm", "console-e2e")
    assert problems == [], problems
