"""How long the console takes to open a long conversation: a 10,000-message conversation
beside a 100-message one, side by side in one run, in the distribution's Chromium against
one embedded server (SQLite). The console asks for the newest page only (100 messages and
their runs), so the long one should cost what the short one does.

Figures (median of ROUNDS loads each, interleaved): the scripting time Chromium spent
(CDP ``ScriptDuration``) from the navigation until the newest message is shown, the wall
time to it, and the long conversation's ratio to the short. Target: under a second of
scripting for 10,000 messages.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import uvicorn
from playwright.async_api import Page, async_playwright

sys.path.insert(0, str(Path(__file__).parent.parent))

from atelier.app import create_app
from atelier.conversations.messages import Turn, seed
from atelier.conversations.models import Conversation
from atelier.db.engine import create_engine, create_sessionmaker
from atelier.db.migrate import migrate
from atelier.settings import Settings
from atelier.tenants.service import create_api_key, create_tenant

ROUNDS = 7
SIZES = (100, 10_000)


async def conversation_of(sessions, tenant_id: uuid.UUID, messages: int) -> str:
    async with sessions() as session:
        conversation = Conversation(
            id=uuid.uuid4(), tenant_id=tenant_id, user_id="bench", title=f"{messages} messages"
        )
        session.add(conversation)
        await session.flush()
        turns = []
        for n in range(messages // 2):
            turns += [
                Turn("user", f"question {n}: what does line {n} of the plan say?"),
                Turn(
                    "assistant",
                    f"answer {n}: it says **this**, with `code` and a list:\n\n- a\n- b",
                ),
            ]
        await seed(session, conversation, turns)
        await session.commit()
        return str(conversation.id)


async def opened(
    page: Page, cdp, url: str, conversation: str, newest: int
) -> tuple[float, float, float]:
    """Seconds of scripting, of all main-thread work (scripts, style, layout) and of wall
    time from navigating to the conversation until its newest answer is shown."""
    await page.goto(f"{url}/console/#/chats")  # somewhere else first: a real navigation
    await page.wait_for_selector("#chat-list", state="attached")
    before = {m["name"]: m["value"] for m in (await cdp.send("Performance.getMetrics"))["metrics"]}
    started = time.perf_counter()
    await page.evaluate(f"() => {{ location.hash = '#/conversations/{conversation}'; }}")
    await page.wait_for_function(
        f"() => [...document.querySelectorAll('.msg')].some(m => m.textContent.includes('answer {newest}:'))"
    )
    wall = time.perf_counter() - started
    after = {m["name"]: m["value"] for m in (await cdp.send("Performance.getMetrics"))["metrics"]}
    return (
        after["ScriptDuration"] - before["ScriptDuration"],
        after["TaskDuration"] - before["TaskDuration"],
        wall,
    )


async def main() -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("no Chromium: apt install chromium")
    with tempfile.TemporaryDirectory() as scratch:
        settings = Settings(
            environment="test", data_dir=Path(scratch) / ".atelier", log_level="ERROR"
        )
        settings.data_dir.mkdir()
        engine = create_engine(settings)
        await migrate(engine)
        sessions = create_sessionmaker(engine)
        async with sessions() as session:
            tenant = await create_tenant(session, "bench")
            key = (await create_api_key(session, tenant, "console")).secret
            await session.commit()
        conversations = {size: await conversation_of(sessions, tenant.id, size) for size in SIZES}
        await engine.dispose()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None)
        )
        serving = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        try:
            async with async_playwright() as driver:
                browser = await driver.chromium.launch(
                    executable_path=chromium, args=["--no-sandbox"]
                )
                page = await browser.new_page(viewport={"width": 1280, "height": 860})
                cdp = await page.context.new_cdp_session(page)
                await cdp.send("Performance.enable")
                await page.goto(f"{url}/console/")
                await page.fill("#key", key)
                await page.fill("#user", "bench")
                await page.press("#user", "Enter")
                await page.wait_for_selector("#new-conversation")
                figures: dict[int, list[tuple[float, float, float]]] = {size: [] for size in SIZES}
                for _ in range(ROUNDS):
                    for size in SIZES:
                        figures[size].append(
                            await opened(page, cdp, url, conversations[size], size // 2 - 1)
                        )
                await browser.close()
        finally:
            server.should_exit = True
            await serving
    script, work, wall = (
        {size: statistics.median(run[i] for run in runs) for size, runs in figures.items()}
        for i in range(3)
    )
    print(f"opening a conversation in Chromium, median of {ROUNDS} loads each")
    print(f"{'messages':>10} {'scripting ms':>14} {'main thread ms':>16} {'to newest ms':>14}")
    for size in SIZES:
        print(
            f"{size:>10} {script[size] * 1000:>14.1f} {work[size] * 1000:>16.1f}"
            f" {wall[size] * 1000:>14.1f}"
        )
    print(
        f"10,000 vs 100: scripting x{script[10_000] / script[100]:.2f}, main thread"
        f" x{work[10_000] / work[100]:.2f}, to the newest message x{wall[10_000] / wall[100]:.2f}"
        f" (target: under 1 s of scripting: {'met' if script[10_000] < 1 else 'MISSED'})"
    )


if __name__ == "__main__":
    asyncio.run(main())
