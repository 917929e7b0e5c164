"""Defect 3 of the console: a server killed mid-run (SIGKILL) and started again left the
console saying "Running…" for ever, with Send enabled; after a reload the question had no
answer and no failure marker, and the text streamed before the crash was gone. Here a real
server process is killed and another started on its port, as a restart does; the page,
still open, must say the run failed (worker_lost), and say it again after a reload, with
what it had streamed."""

from __future__ import annotations

import signal

import httpx
import pytest

from tests.console.test_console import ARTIFACTS, chromium_path, playwright_api
from tests.fixtures.processes import Deployment

LONG_INPUT = " ".join(f"word{i}" for i in range(200))  # the offline model echoes it slowly


@pytest.mark.timeout(120)
async def test_a_crash_mid_run_ends_in_a_failure_the_page_says(
    any_deployment: Deployment, servers_of
) -> None:
    deployment, servers = any_deployment, servers_of
    first = servers()
    await first.ready()
    async with playwright_api.async_playwright() as driver:
        browser = await driver.chromium.launch(
            executable_path=chromium_path(), args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        page = await browser.new_page(viewport={"width": 1280, "height": 860})
        uncaught: list[str] = []
        page.on("pageerror", lambda error: uncaught.append(str(error)))
        await page.goto(f"{first.url}/console/")
        await page.fill("#key", deployment.key)
        await page.fill("#user", "alice")
        await page.press("#user", "Enter")
        await page.click("#new-conversation")
        await page.fill("#composer", LONG_INPUT)
        await page.press("#composer", "Enter")
        await page.wait_for_function(
            "() => (document.querySelector('#live .msg.assistant')?.textContent || '')"
            ".includes('word5')"
        )
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
        await page.wait_for_selector("#run-status[data-state='reconnecting']", timeout=15_000)
        streamed = await page.inner_text("#live .msg.assistant .text")
        # Started again on the same port: the page, still open, learns how the run ended.
        second = servers(port=first.port)
        await second.ready()
        await page.wait_for_selector("#run-status[data-state='failed']", timeout=60_000)
        status = await page.inner_text("#run-status")
        assert "worker_lost" in status, status
        assert await page.is_enabled("#send")
        assert await page.is_hidden("#cancel")
        assert "not saved" in await page.inner_text("#live .msg.assistant")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "crash.png"), full_page=True)
        # After a reload: the question, what was streamed, and the failure.
        await page.reload()
        footer = page.locator("#messages .run-footer[data-state='failed']")
        await footer.wait_for()
        assert "worker_lost" in await footer.inner_text()
        kept = await page.inner_text("#messages .msg.assistant .text")
        assert kept.strip() == streamed.strip()
        assert await page.locator("#messages .msg.user").count() == 1
        await browser.close()
    assert uncaught == []
    async with httpx.AsyncClient(base_url=second.url) as http:
        conversation = (await http.get("/v1/conversations", headers=deployment.headers())).json()[
            "data"
        ][0]
        runs = await http.get(
            f"/v1/conversations/{conversation['id']}/runs", headers=deployment.headers()
        )
    assert runs.json()["data"][0]["error"]["code"] == "worker_lost"
