"""The web console in a real Chromium (the distribution's, driven by Playwright), against a
real server on both backends: sign in, upload by picker and by drop (a small file and a
20 MiB one, as a browser sends them), a run streamed to its end, a reload in the middle of
a run, cancel, approvals, chats, agents and usage; keyboard only; no console error and no
failed request. Each scenario leaves a screenshot in ``artifacts/console/``."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from atelier.llm.base import ModelRequest, Stop, StreamEvent, TextDelta
from atelier.llm.titles import TITLE_PROMPT
from tests.conftest import Caller
from tests.live import serve_started
from tests.runs.helpers import BlockingTools, use_tools

playwright_api = pytest.importorskip("playwright.async_api")

ARTIFACTS = Path(os.environ.get("ATELIER_ARTIFACTS_DIR", "artifacts")) / "console"


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    return os.environ.get("ATELIER_CHROMIUM") or None


NO_CHROMIUM = "no Chromium on this machine: install the distribution's (apt install chromium)"
if chromium_path() is None and os.environ.get("ATELIER_REQUIRE_SERVICES") == "1":
    raise RuntimeError(NO_CHROMIUM)  # CI installs it: a missing one is a broken CI
pytestmark = pytest.mark.skipif(chromium_path() is None, reason=NO_CHROMIUM)


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    # (An MCP server on loopback may be saved: one test's agent names a server that is gone.)
    return {"offline_model_delay_seconds": 0.02, "mcp_allow_private": True}


class Console:
    """A page of the console, watching for console errors and failed requests."""

    def __init__(self, page: Any, url: str, caller: Caller, backend: str) -> None:
        self.page = page
        self.url = url
        self.caller = caller
        self.backend = backend
        self.problems: list[str] = []
        self.expect_refusal: int | None = None  # a status a scenario provokes on purpose
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        page.on("requestfailed", self._failed)
        page.on("response", self._response)

    def _console(self, message: Any) -> None:
        provoked = f"status of {self.expect_refusal}"  # Chromium's note of a refused fetch
        if message.type == "error" and provoked not in message.text:
            self.problems.append(f"console: {message.text}")

    def _failed(self, request: Any) -> None:
        failure = request.failure or ""
        if "ERR_ABORTED" not in failure:  # a stream the page closed on purpose
            self.problems.append(f"request failed: {request.url} {failure}")

    def _response(self, response: Any) -> None:
        if response.status >= 400 and response.status != self.expect_refusal:
            self.problems.append(f"HTTP {response.status}: {response.url}")

    async def sign_in(self) -> None:
        await self.page.goto(f"{self.url}/")
        assert self.page.url == f"{self.url}/console/"
        await self.page.fill("#key", self.caller.key)
        await self.page.fill("#user", "alice")
        await self.page.press("#user", "Enter")
        await self.page.wait_for_selector("#new-conversation")

    async def new_conversation(self) -> str:
        await self.page.click("#new-conversation")
        await self.page.wait_for_selector("#composer")
        return self.page.url.rsplit("/", 1)[1]

    async def ask(self, text: str) -> None:
        await self.page.fill("#composer", text)
        await self.page.press("#composer", "Enter")

    async def run_ended(self, state: str = "completed") -> None:
        await self.page.wait_for_selector(f"#run-status[data-state='{state}']", timeout=30_000)

    async def screenshot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(
            path=str(ARTIFACTS / f"{name}-{self.backend}.png"), full_page=True
        )

    async def careful_agent(self) -> None:
        """An agent whose file writes wait for a person's approval ("agent: careful")."""
        async with self.api() as api:
            careful = {"name": "careful", "approval": {"require": ["write_*"]}}
            assert (await api.post("/v1/agents", json=careful)).status_code == 201

    def api(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url, headers=self.caller.headers("alice"), timeout=30
        )


@pytest.fixture
async def console(app: FastAPI, caller: Caller, backend: str) -> AsyncIterator[Console]:
    async with serve_started(app) as url, playwright_api.async_playwright() as driver:
        browser = await driver.chromium.launch(
            executable_path=chromium_path(), args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        page = await browser.new_page(viewport={"width": 1280, "height": 860})
        opened = Console(page, url, caller, backend)
        try:
            yield opened
        finally:
            await browser.close()
        assert opened.problems == []


async def stored_messages(console: Console, conversation: str) -> list[dict[str, Any]]:
    async with console.api() as api:
        listed = await api.get(f"/v1/conversations/{conversation}/messages")
    return list(listed.json()["data"])


async def test_files_upload_by_picker_and_by_drop_small_and_20_mib(
    console: Console, tmp_path: Path
) -> None:
    await console.sign_in()
    conversation = await console.new_conversation()
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(20 * 1024 * 1024))
    small = tmp_path / "notes.txt"
    small.write_text("small notes\n")
    await console.page.set_input_files("#file-input", [str(small), str(big)])
    await console.page.wait_for_selector("#files li[data-path='big.bin']", timeout=60_000)
    # A drop, as a person drags a file onto the zone.
    await console.page.evaluate(
        """() => {
            const data = new DataTransfer();
            data.items.add(new File(["dropped in"], "dropped.txt", {type: "text/plain"}));
            document.getElementById("drop-zone").dispatchEvent(
                new DragEvent("drop", {dataTransfer: data, bubbles: true, cancelable: true}));
        }"""
    )
    await console.page.wait_for_selector("#files li[data-path='dropped.txt']")
    await console.screenshot("files")
    async with console.api() as api:
        files = {
            f["path"]: f
            for f in (await api.get(f"/v1/conversations/{conversation}/files")).json()["data"]
        }
        assert files["big.bin"]["size"] == 20 * 1024 * 1024
        body = (await api.get(f"/v1/conversations/{conversation}/files/big.bin")).content
        assert hashlib.sha256(body).digest() == hashlib.sha256(big.read_bytes()).digest()
        dropped = await api.get(f"/v1/conversations/{conversation}/files/dropped.txt")
        assert dropped.content == b"dropped in"
        assert files["notes.txt"]["size"] == len("small notes\n")


async def test_a_run_streams_to_its_end_and_shows_its_tool_calls_and_files(
    console: Console,
) -> None:
    await console.sign_in()
    conversation = await console.new_conversation()
    await console.ask("write hello.txt: hi from the agent")
    await console.run_ended()
    await console.page.wait_for_selector("#files li[data-path='hello.txt']")
    calls = await console.page.locator("#live details.call > summary").all_inner_texts()
    assert calls == ["Tool call: write_file"]
    await console.screenshot("run")
    shown = await console.page.locator("#live .msg.assistant .text").all_inner_texts()
    stored = [
        m["content"]
        for m in await stored_messages(console, conversation)
        if m["role"] == "assistant" and m["content"]
    ]
    assert shown == stored


class HeldReply:
    """A model whose reply stops after ``hold_after`` words until ``release`` is set (a
    title request is answered at once)."""

    provider = "scripted"

    def __init__(self, words: int, hold_after: int) -> None:
        self.words = [f"word{i} " for i in range(words)]
        self.hold_after = hold_after
        self.held = asyncio.Event()
        self.release = asyncio.Event()

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        if request.system == TITLE_PROMPT:
            yield TextDelta("A title")
        else:
            for index, word in enumerate(self.words):
                if index == self.hold_after:
                    self.held.set()
                    await self.release.wait()
                yield TextDelta(word)
        yield Stop("end_turn")


async def test_a_reload_mid_run_resumes_with_nothing_repeated_or_missed(
    console: Console, app: FastAPI
) -> None:
    app.state.resources.models.providers["offline"] = model = HeldReply(60, hold_after=20)
    await console.sign_in()
    conversation = await console.new_conversation()
    await console.ask("tell me")
    await asyncio.wait_for(model.held.wait(), 30)
    # The reply's words as shown (its Markdown drawn as HTML: whitespace aside).
    text = (
        "(document.querySelector('#live .msg.assistant .text')?.textContent || '')"
        ".replace(/\\s+/g, ' ').trim()"
    )
    shown = f"() => {text}"
    # Functions, not expressions: the console's CSP forbids eval (Playwright's way with those).
    await console.page.wait_for_function(f"() => {text}.split(' ').length >= 20")
    before = await console.page.evaluate(shown)
    resumed_after: list[str] = []
    console.page.on(
        "request",
        lambda request: (
            resumed_after.append(request.headers.get("last-event-id", ""))
            if request.url.endswith("/events")
            else None
        ),
    )
    await console.page.reload()
    # What the stream showed is back before the run goes on ...
    await console.page.wait_for_function(f"() => {text} === {json.dumps(before)}")
    model.release.set()
    await console.run_ended()
    after = await console.page.evaluate(shown)
    (reply,) = [m for m in await stored_messages(console, conversation) if m["role"] == "assistant"]
    # ... and it goes on from the last event shown: nothing twice, nothing missing.
    assert after == " ".join(reply["content"].split())
    assert after.startswith(before)
    assert len(before) < len(after)
    assert resumed_after
    assert int(resumed_after[0]) > 20
    await console.screenshot("reload")


async def test_conversations_renamed_and_deleted_files_downloaded_and_deleted(
    console: Console, tmp_path: Path
) -> None:
    await console.sign_in()
    conversation = await console.new_conversation()
    await console.page.fill("#title", "Quarterly report")
    await console.page.press("#title", "Tab")
    link = f"#conversation-list a[href='#/conversations/{conversation}']"
    await console.page.wait_for_selector(f"{link}:has-text('Quarterly report')")
    notes = tmp_path / "notes.txt"
    notes.write_text("some notes\n")
    await console.page.set_input_files("#file-input", str(notes))
    await console.page.wait_for_selector("#files li[data-path='notes.txt']")
    async with console.page.expect_download() as downloading:
        await console.page.click("button[aria-label='Download notes.txt']")
    download = await downloading.value
    assert Path(await download.path()).read_text() == "some notes\n"
    async with console.page.expect_download() as zipping:
        await console.page.click("#download-zip")
    archive = await zipping.value
    with zipfile.ZipFile(await archive.path()) as opened:
        assert opened.read("notes.txt") == b"some notes\n"
    asked: list[str] = []  # deleting a file asks first

    async def accept(dialog: Any) -> None:
        asked.append(dialog.message)
        await dialog.accept()

    console.page.once("dialog", lambda dialog: asyncio.ensure_future(accept(dialog)))
    await console.page.click("button[aria-label='Delete notes.txt']")
    await console.page.wait_for_selector("#files li[data-path='notes.txt']", state="detached")
    assert asked == ["Delete notes.txt?"]
    console.page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await console.page.click("#delete-conversation")
    await console.page.wait_for_selector(link, state="detached")
    async with console.api() as api:
        gone = await api.get(f"/v1/conversations/{conversation}")
    assert gone.status_code == 404


async def test_cancel_stops_the_run(console: Console, app: FastAPI) -> None:
    use_tools(app, tools := BlockingTools())
    await console.sign_in()
    await console.new_conversation()
    await console.ask("list files")
    await console.page.wait_for_selector("#live details.call")
    badge = "#conversation-list li.current .badge"
    assert await console.page.inner_text(badge) == "running"
    await console.page.click("#cancel")
    await console.run_ended("cancelled")
    await console.page.wait_for_selector(badge, state="detached")
    assert tools.cancelled.is_set()
    await console.screenshot("cancel")


async def test_approval_prompts_approve_and_deny(console: Console) -> None:
    await console.careful_agent()
    await console.sign_in()
    conversation = await console.new_conversation()
    await console.page.select_option("#agent", label="agent: careful")
    await console.ask("write a.txt: approved")
    await console.page.click(".approval button.approve")
    await console.run_ended()
    await console.page.wait_for_selector("#files li[data-path='a.txt']")
    await console.screenshot("approval")
    await console.ask("write b.txt: denied")
    await console.page.wait_for_selector("#run-status[data-state='running']")
    await console.page.click(".approval button.deny")
    await console.run_ended()
    async with console.api() as api:
        listed = (await api.get(f"/v1/conversations/{conversation}/files")).json()["data"]
    assert [f["path"] for f in listed] == ["a.txt"]


async def test_an_mcp_server_that_offers_no_tools_is_said_as_a_note(console: Console) -> None:
    from tests.conftest import free_port

    gone = f"http://127.0.0.1:{free_port()}/mcp"  # nothing listens there
    async with console.api() as api:
        crm = {"name": "crm-agent", "mcp_servers": [{"name": "crm", "url": gone}]}
        assert (await api.post("/v1/agents", json=crm)).status_code == 201
    await console.sign_in()
    await console.new_conversation()
    await console.page.select_option("#agent", label="agent: crm-agent")
    await console.ask("hello")
    await console.run_ended()
    note = await console.page.text_content("#live [role='note']")
    assert note is not None
    assert note.startswith("The tools of crm are unavailable:")
    # A note beside the reply, not words of the assistant's.
    replies = await console.page.locator(".msg.assistant .text").all_text_contents()
    assert not any("unavailable" in reply for reply in replies)


async def test_a_refused_run_says_why_and_gives_the_text_back(console: Console) -> None:
    async with console.api() as api:
        spent = {"scope": "tenant", "period": "day", "limit": "0"}
        assert (await api.post("/v1/budgets", json=spent)).status_code == 201
    await console.sign_in()
    await console.new_conversation()
    console.expect_refusal = 402
    await console.ask("this costs money")
    await console.page.wait_for_selector("#notice:not([hidden])")
    assert "budget" in (await console.page.inner_text("#notice")).lower()
    assert await console.page.input_value("#composer") == "this costs money"
    assert await console.page.locator("#messages .msg.user").count() == 0
    assert await console.page.locator("#run-status").count() == 0
    await console.screenshot("refused")


async def test_the_composer_works_from_the_keyboard_alone(console: Console) -> None:
    await console.sign_in()
    await console.new_conversation()
    for _ in range(40):  # Tab through the page until the composer has the focus
        if await console.page.evaluate("document.activeElement?.id") == "composer":
            break
        await console.page.keyboard.press("Tab")
    assert await console.page.evaluate("document.activeElement?.id") == "composer"
    await console.page.keyboard.type("hello from the keyboard")
    await console.page.keyboard.press("Enter")
    await console.run_ended()
    await console.page.keyboard.press("Tab")  # on to the next control: the agent
    assert await console.page.evaluate("document.activeElement?.id") == "agent"
    await console.screenshot("keyboard")


async def test_chats_agents_and_usage(console: Console) -> None:
    await console.sign_in()
    await console.page.click("nav a[href='#/chats']")
    await console.page.click("#new-chat")
    await console.ask("hi chat")
    await console.page.wait_for_selector("#messages .msg.assistant[data-message-id]")
    await console.screenshot("chat")

    await console.page.click("nav a[href='#/agents']")
    await console.page.click("#agent-list a")
    await console.page.fill("#instructions", "Be brief.")
    await console.page.click("#agent button[type='submit']")
    await console.page.wait_for_selector("#agent h2:has-text('version 2')")
    await console.screenshot("agents")

    await console.page.click("nav a[href='#/usage']")
    await console.page.wait_for_selector("#usage-by-model rect")
    assert await console.page.locator("#usage-by-user rect").count() >= 1
    assert "offline" in await console.page.locator("#usage-totals").inner_text()
    await console.screenshot("usage")


async def test_the_console_keeps_the_key_out_of_urls_and_runs_no_inline_script(
    console: Console,
) -> None:
    await console.sign_in()
    urls: list[str] = []
    console.page.on("request", lambda request: urls.append(request.url))
    await console.new_conversation()
    await console.ask("hello")
    await console.run_ended()
    assert urls
    assert all(console.caller.key not in url for url in urls)
    assert console.caller.key not in console.page.url
    async with console.api() as api:
        page = await api.get("/console/")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    # Gone with the session: a new tab (a new context) is signed out.
    context = await console.page.context.browser.new_context()
    other = await context.new_page()
    await other.goto(f"{console.url}/console/")
    await other.wait_for_selector("#key")
    await context.close()
    # And kept in this tab's storage only: not where other tabs of the same browser would
    # find it (localStorage, cookies), which a new context cannot tell apart.
    stored = await console.page.evaluate(
        "() => [JSON.stringify(localStorage), document.cookie, JSON.stringify(sessionStorage)]"
    )
    assert console.caller.key not in stored[0] + stored[1]
    assert console.caller.key in stored[2]
