"""Helpers for run tests: start runs, read their streams, wait for them to end."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from pathlib import Path

import httpx
from fastapi import FastAPI

from atelier.llm.base import ToolCall, ToolResult, ToolSpec
from atelier.runs.tools import WorkspaceTools
from tests.conftest import Caller

SSE = {"Accept": "text/event-stream"}
TERMINAL = {"run.completed", "run.failed", "run.cancelled", "run.timed_out"}
ENDED = {"completed", "failed", "cancelled", "timed_out"}

Event = tuple[int | None, str, dict]


def parse_sse(text: str) -> list[Event]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = [line for line in block.splitlines() if not line.startswith(":")]
        if not lines:
            continue
        fields = dict(line.split(": ", 1) for line in lines)
        number = int(fields["id"]) if "id" in fields else None  # an event may carry no id
        events.append((number, fields["event"], json.loads(fields["data"])))
    return events


async def new_conversation(client: httpx.AsyncClient, caller: Caller, **body: object) -> str:
    response = await client.post("/v1/conversations", json=body, headers=caller.headers())
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def start(
    client: httpx.AsyncClient,
    caller: Caller,
    conversation: str,
    text: str,
    user: str = "alice",
    **extra: str,
) -> httpx.Response:
    return await client.post(
        f"/v1/conversations/{conversation}/runs",
        json={"input": text},
        headers=caller.headers(user, **extra),
    )


async def run_streamed(
    client: httpx.AsyncClient, caller: Caller, conversation: str, text: str
) -> list[Event]:
    response = await start(client, caller, conversation, text, **SSE)
    assert response.status_code == 200, response.text
    return parse_sse(response.text)


async def wait_ended(
    client: httpx.AsyncClient, caller: Caller, conversation: str, run_id: str, timeout: float = 15
) -> dict:
    return await wait_status(client, caller, conversation, run_id, ENDED, timeout)


async def wait_status(
    client: httpx.AsyncClient,
    caller: Caller,
    conversation: str,
    run_id: str,
    statuses: Iterable[str],
    timeout: float = 15,
) -> dict:
    """The run once its status is one of ``statuses``."""
    wanted = set(statuses)
    async with asyncio.timeout(timeout):
        while True:
            run = (
                await client.get(
                    f"/v1/conversations/{conversation}/runs/{run_id}", headers=caller.headers()
                )
            ).json()
            if run["status"] in wanted:
                return dict(run)
            await asyncio.sleep(0.02)


async def messages(client: httpx.AsyncClient, caller: Caller, conversation: str) -> list[dict]:
    response = await client.get(
        f"/v1/conversations/{conversation}/messages?limit=500", headers=caller.headers()
    )
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def names(events: Iterable[Event]) -> list[str]:
    return [name for _, name, _ in events if name != "message.delta"]


class BlockingTools:
    """Workspace tools whose every call blocks until released (or the run is stopped).

    One instance serves every run that starts while it is installed, each in its own
    workspace; ``entered``, ``release`` and ``cancelled`` are shared by all of them."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.cancelled = asyncio.Event()

    def __call__(self, root: Path) -> _Blocked:
        return _Blocked(self, WorkspaceTools(root))


class _Blocked:
    def __init__(self, gate: BlockingTools, inner: WorkspaceTools) -> None:
        self.gate = gate
        self.inner = inner
        self.specs: list[ToolSpec] = inner.specs

    async def call(self, call: ToolCall) -> ToolResult:
        self.gate.entered.set()
        try:
            await self.gate.release.wait()
        except asyncio.CancelledError:
            self.gate.cancelled.set()
            raise
        return await self.inner.call(call)


def use_tools(app: FastAPI, factory: object) -> None:
    app.state.resources.runs.tools_factory = factory


async def start_blocked(
    app: FastAPI, client: httpx.AsyncClient, caller: Caller, command: str = "list files"
) -> tuple[str, dict, BlockingTools]:
    """A new conversation whose run is inside its first tool call, held there until
    ``tools.release`` is set: its conversation id, the run, and the tools."""
    conversation = await new_conversation(client, caller)
    use_tools(app, tools := BlockingTools())
    run = (await start(client, caller, conversation, command)).json()
    await asyncio.wait_for(tools.entered.wait(), 10)
    return conversation, run, tools
