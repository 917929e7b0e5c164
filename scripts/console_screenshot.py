"""The README's pictures of the console: a run in progress, and the run inspector of a run
that asked for approval and wrote files -- taken in the distribution's Chromium against a
throwaway embedded server. `make screenshot` runs it."""

from __future__ import annotations

import asyncio
import shutil
import socket
import sys
import tempfile
from pathlib import Path

import httpx
import uvicorn
from playwright.async_api import async_playwright

from atelier.app import create_app
from atelier.db.engine import create_engine, create_sessionmaker
from atelier.db.migrate import migrate
from atelier.settings import Settings
from atelier.tenants.service import create_api_key, create_tenant

OUT = Path("docs/console.png")
INSPECTOR = Path("docs/console-inspector.png")
ASK = (
    "Tell me, step by step and at some length, how this workspace agent can help a team "
    "ship a product: planning, notes, files, reviews and the runs that tie them together."
)


async def main() -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("no Chromium: apt install chromium")
    with tempfile.TemporaryDirectory() as scratch:
        settings = Settings(
            environment="test",
            data_dir=Path(scratch) / ".atelier",
            offline_model_delay_seconds=0.08,
            log_level="ERROR",
        )
        settings.data_dir.mkdir()
        engine = create_engine(settings)
        await migrate(engine)
        async with create_sessionmaker(engine)() as session:
            tenant = await create_tenant(session, "demo")
            key = (await create_api_key(session, tenant, "console")).secret
            await session.commit()
        await engine.dispose()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None)
        )
        serving = asyncio.create_task(server.serve())
        while not server.started:
            if serving.done():
                serving.result()
                sys.exit("the server did not start")
            await asyncio.sleep(0.05)
        try:
            await shoot(chromium, f"http://127.0.0.1:{port}", key)
        finally:
            server.should_exit = True
            await serving


async def shoot(chromium: str, url: str, key: str) -> None:
    async with async_playwright() as driver:
        browser = await driver.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = await browser.new_page(viewport={"width": 1280, "height": 760})
        await page.goto(f"{url}/console/")
        await page.fill("#key", key)
        await page.fill("#user", "dana")
        await page.press("#user", "Enter")
        await page.click("#new-conversation")
        await page.fill("#title", "Launch plan")
        await page.press("#title", "Tab")
        await page.set_input_files(
            "#file-input",
            files=[{"name": "brief.txt", "mimeType": "text/plain", "buffer": b"The brief.\n" * 40}],
        )
        await page.wait_for_selector("#files li[data-path='brief.txt']")
        await page.fill("#composer", ASK)
        await page.press("#composer", "Enter")
        await page.wait_for_function(
            "() => (document.querySelectorAll('#live .msg.assistant .text')[0]?.textContent"
            " || '').split(' ').length > 25"
        )
        await page.screenshot(path=str(OUT))
        await page.wait_for_selector("#run-status[data-state='completed']", timeout=60_000)
        await inspect(page, url, key)
        await browser.close()
    print(f"wrote {OUT} and {INSPECTOR}")


async def inspect(page, url: str, key: str) -> None:  # type: ignore[no-untyped-def]
    """A run that waited for a person's approval, wrote a file, and is then inspected."""
    careful = {"name": "careful", "approval": {"require": ["write_*"]}}
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}) as api:
        (await api.post("/v1/agents", json=careful)).raise_for_status()
    await page.reload()
    await page.wait_for_selector("#composer")
    await page.select_option("#agent", label="agent: careful")
    await page.fill("#composer", "write notes/launch-checklist.md: brief, review, ship")
    await page.press("#composer", "Enter")
    await page.click(".approval button.approve")
    await page.wait_for_selector("#run-status[data-state='completed']", timeout=60_000)
    await page.click("#run-status .inspect")
    await page.wait_for_selector("#inspected-status[data-state='completed']")
    await page.locator("#timeline li[data-type='tool_call'] summary", has_text="Arguments").click()
    await page.screenshot(path=str(INSPECTOR))


if __name__ == "__main__":
    asyncio.run(main())
