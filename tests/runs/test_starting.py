"""How many runs a process takes on (runs/starting.py): past its limits a start is a clear
503 with Retry-After that keeps nothing, never a first event seconds late or a 500."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest
from sqlalchemy import func, select

from atelier.runs.models import Run
from tests.runs.helpers import (
    SSE,
    messages,
    new_conversation,
    start,
    start_blocked,
    wait_ended,
)


async def runs_of(app, conversation: str) -> int:
    async with app.state.resources.sessionmaker() as session:
        return await session.scalar(
            select(func.count())
            .select_from(Run)
            .where(Run.conversation_id == uuid.UUID(conversation))
        )


def refused(response: httpx.Response, code: str) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "1"
    assert response.json()["code"] == code


@pytest.mark.parametrize("settings_overrides", [{"max_active_runs": 1}])
async def test_past_its_runs_a_process_refuses_a_start_and_keeps_nothing(
    app, client, caller
) -> None:
    _, run, tools = await start_blocked(app, client, caller)
    other = await new_conversation(client, caller)
    refused(await start(client, caller, other, "hello"), "at_capacity")
    assert await messages(client, caller, other) == []
    assert await runs_of(app, other) == 0
    metrics = (await client.get("/metrics")).text
    assert 'atelier_run_starts_refused_total{code="at_capacity"} 1.0' in metrics
    tools.release.set()
    await wait_ended(client, caller, run["conversation_id"], run["id"])
    async with asyncio.timeout(10):  # its task lets go once its last events are shipped
        while app.state.resources.runs.local:
            await asyncio.sleep(0.01)
    again = await start(client, caller, other, "hello")
    assert again.status_code == 202
    assert (await wait_ended(client, caller, other, again.json()["id"]))["status"] == "completed"


@pytest.mark.parametrize(
    "settings_overrides", [{"max_starting_runs": 1, "run_start_wait_seconds": 0.2}]
)
async def test_a_start_that_would_wait_too_long_in_line_is_refused(app, client, caller) -> None:
    """One start holds the only opening (its conversation's lock is held elsewhere, so it
    tries for a second); another waits its 0.2 s in line and is refused."""
    held, other = await new_conversation(client, caller), await new_conversation(client, caller)
    coordination = app.state.resources.coordination
    assert await coordination.acquire(f"conversation:{held}", "elsewhere", 10_000)
    first = asyncio.ensure_future(start(client, caller, held, "hello"))
    await asyncio.sleep(0.05)
    refused(await start(client, caller, other, "hello"), "server_busy")
    assert (await first).status_code == 409  # its own conversation stayed busy
    assert await runs_of(app, other) == 0
    again = await start(client, caller, other, "hello")
    assert again.status_code == 202


@pytest.mark.parametrize(
    "settings_overrides", [{"max_starting_runs": 2, "run_start_wait_seconds": 0}]
)
async def test_a_burst_of_starts_is_let_in_or_refused_clearly_and_every_stream_ends(
    app, served, caller
) -> None:
    """Forty streamed starts at once over real sockets: each is a stream that ends with
    its run, or a 503 server_busy with Retry-After; none is a 500 or a cut stream."""
    async with httpx.AsyncClient(base_url=served, timeout=30) as http:
        conversations = [await new_conversation(http, caller) for _ in range(40)]

        async def one(conversation: str) -> tuple[int, str]:
            async with http.stream(
                "POST",
                f"/v1/conversations/{conversation}/runs",
                json={"input": "hello"},
                headers=caller.headers() | SSE,
            ) as response:
                body = (await response.aread()).decode()
                if response.status_code != 200:
                    refused(response, "server_busy")
                    return 503, ""
                return 200, [b for b in body.split("\n\n") if b.strip()][-1]

        answers = await asyncio.gather(*(one(c) for c in conversations))
    streamed = [last for status, last in answers if status == 200]
    assert 2 <= len(streamed) < 40
    for last in streamed:
        assert "event: run.completed" in last
        assert json.loads(last.split("data: ", 1)[1])["run_id"]
