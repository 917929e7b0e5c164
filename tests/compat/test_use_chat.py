"""``useChat`` itself (``@ai-sdk/react``) in Chromium, on a product's page on another origin
with an end user's token, on both backends: it sends and streams, runs a tool of its own
(onToolCall + addToolOutput, re-sent by sendAutomaticallyWhen), answers an approval, and
after a reload in the middle of a run resumes the stream (``resume: true``). The page is
bundled from tests/js/use_chat/app.jsx with esbuild."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Response

from tests.compat.test_js_clients import JS, MISSING, NODE
from tests.conftest import Caller
from tests.console.test_console import NO_CHROMIUM, chromium_path
from tests.live import serve, serve_started

playwright_api = pytest.importorskip("playwright.async_api")
pytestmark = [
    pytest.mark.skipif(chromium_path() is None, reason=NO_CHROMIUM),
    pytest.mark.skipif(MISSING is not None, reason=f"{MISSING} missing"),
]
PAGE = b"""<!doctype html><meta charset="utf-8"><title>useChat</title>
<div id="root"></div><script type="module" src="/app.js"></script>"""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    out = tmp_path_factory.mktemp("use_chat") / "app.js"
    assert NODE is not None
    subprocess.run([NODE, str(JS / "use_chat" / "build.mjs"), str(out)], cwd=JS, check=True)
    return out.read_bytes()


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"offline_model_delay_seconds": 0.005}


def product(bundle: bytes) -> FastAPI:
    app = FastAPI()

    @app.get("/")
    async def page() -> Response:
        return Response(PAGE, media_type="text/html")

    @app.get("/favicon.ico")
    async def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/app.js")
    async def script() -> Response:
        return Response(bundle, media_type="text/javascript")

    return app


class Page:
    def __init__(self, page: Any, shop: str, setup: dict[str, str]) -> None:
        self.page = page
        self.problems: list[str] = []
        page.on("pageerror", lambda error: self.problems.append(str(error)))
        page.on(
            "console",
            lambda m: (
                self.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None
            ),
        )
        self.shop = shop
        self.setup = setup

    async def open(self) -> None:
        await self.page.add_init_script(f"window.ATELIER = {json.dumps(self.setup)};")
        await self.page.goto(self.shop)
        await self.page.wait_for_selector("#input")

    async def say(self, text: str) -> None:
        await self.page.fill("#input", text)
        await self.page.click("#send")

    async def ready(self) -> None:
        await self.page.wait_for_function(
            "document.querySelector('#status')?.textContent === 'ready'"
        )

    async def last_answer(self) -> str:
        answers = await self.page.query_selector_all(".msg.assistant")
        return str(await answers[-1].text_content()) if answers else ""


@pytest.fixture
async def chat_page(
    app: FastAPI, caller: Caller, bundle: bytes
) -> AsyncIterator[tuple[Any, str, str, Caller]]:
    async with (
        serve_started(app) as atelier,
        serve(product(bundle)) as shop,
        playwright_api.async_playwright() as driver,
    ):
        async with httpx.AsyncClient(base_url=atelier, headers=caller.headers(None)) as admin:
            assert (await admin.put("/v1/cors", json={"origins": [shop]})).status_code == 200
            minted = await admin.post("/v1/user-tokens", json={"user_id": "alice"})
        browser = await driver.chromium.launch(
            executable_path=chromium_path(), args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield browser, atelier, shop, minted.json()["token"]
        finally:
            await browser.close()


async def test_use_chat_sends_runs_its_own_tool_and_resumes_after_a_reload(
    chat_page: tuple[Any, str, str, str],
) -> None:
    browser, atelier, shop, token = chat_page
    chat = Page(
        await browser.new_page(),
        shop,
        {"api": atelier, "token": token, "chatId": uuid.uuid4().hex[:16]},
    )
    await chat.open()
    await chat.say("hello there")
    await chat.ready()
    assert "You said: hello there" in await chat.last_answer()

    # A tool the page runs: onToolCall answers, sendAutomaticallyWhen sends it back.
    await chat.say('call get_weather {"city": "Paris"}')
    await chat.page.wait_for_function(
        "[...document.querySelectorAll('.msg.assistant')].at(-1)?.textContent.includes('sunny in Paris')"
    )
    await chat.ready()
    assert "get_weather: output-available" in await chat.last_answer()

    # A reload in the middle of a run: the page starts from the stored messages and
    # useChat's resume picks the running answer up.
    long = " ".join(f"w{i}" for i in range(800))
    await chat.say(long)
    await chat.page.wait_for_function(
        "[...document.querySelectorAll('.msg.assistant')].at(-1)?.textContent.includes('w20 ')"
    )
    await chat.page.reload()
    await chat.page.wait_for_function(
        "[...document.querySelectorAll('.msg.assistant')].at(-1)?.textContent.includes('w799')",
        timeout=30_000,
    )
    await chat.ready()
    assert chat.problems == []


async def test_use_chat_answers_an_approval(
    chat_page: tuple[Any, str, str, str], caller: Caller
) -> None:
    browser, atelier, shop, token = chat_page
    async with httpx.AsyncClient(base_url=atelier, headers=caller.headers(None)) as admin:
        made = await admin.post(
            "/v1/agents", json={"name": "careful", "approval": {"require": ["write_*"]}}
        )
        assert made.status_code == 201
    setup = {"api": atelier, "token": token, "chatId": uuid.uuid4().hex[:16], "agent": "careful"}
    chat = Page(await browser.new_page(), shop, setup)
    await chat.open()
    await chat.say("write notes.txt: from useChat")
    await chat.page.click("button.tool.approval-requested")
    await chat.page.wait_for_selector("button.tool.output-available")
    await chat.ready()
    assert "wrote 12 bytes to notes.txt" in await chat.last_answer()  # "from useChat"
    await asyncio.sleep(0)
    assert chat.problems == []
