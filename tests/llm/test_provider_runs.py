"""A provider's broken call, end to end: the issue #19 wire sequences, sent by a local peer
to the real provider client, through a chat turn served on a real socket."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from httpx_sse import aconnect_sse
from sqlalchemy import select
from structlog.testing import capture_logs

from atelier.conversations.models import Message
from atelier.usage.models import UsageRecord
from tests.chats.test_chats import use_remote_model
from tests.conftest import Caller
from tests.live import serve_started
from tests.llm.peers import Peer, sse
from tests.llm.test_providers import (
    PROVIDERS,
    anthropic_model,
    bedrock_model,
    broken_off,
    openai_model,
)

OPENERS = {"openai": openai_model, "anthropic": anthropic_model, "bedrock": bedrock_model}


async def chat_turn(url: str, caller: Caller) -> list[tuple[str, dict[str, Any]]]:
    async with httpx.AsyncClient(base_url=url, headers=caller.headers()) as client:
        created = await client.post("/v1/chats", json={"model_id": "remote"})
        assert created.status_code == 201, created.text
        path = f"/v1/chats/{created.json()['id']}/messages"
        async with aconnect_sse(client, "POST", path, json={"content": "hi"}) as source:
            return [(e.event, json.loads(e.data)) async for e in source.aiter_sse()]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_call_that_breaks_off_fails_and_keeps_its_partial_reply(
    app: FastAPI, caller: Caller, provider: str
) -> None:
    """Three pieces, then the failure as an unnamed event and no end marker: an incomplete
    reply, the counts the provider gave -- or, where it gave none, our estimate, marked so
    (never nothing) -- and ``error`` model_error."""
    opener: Any = OPENERS[provider]
    async with opener(Peer(frames=broken_off(provider))) as model:
        await use_remote_model(app, model, provider_model_id="m-1")
        with capture_logs() as logs:
            async with serve_started(app) as url:
                events = await chat_turn(url, caller)
    names = [name for name, _ in events if name != "title.updated"]
    assert names == [*["message.delta"] * 3, "message.completed", "usage", "error"]
    completed, usage, error = (data for name, data in events[3:] if name != "title.updated")
    assert (completed["content"], completed["incomplete"]) == ("abc", True)
    assert error["code"] == "model_error"
    assert "overloaded" in error["message"]
    assert any(e["event"] == "model call failed" for e in logs)
    if provider == "anthropic":  # message_start had counted the prompt before the failure
        assert (usage["input_tokens"], usage["output_tokens"]) == (12, 1)
        assert usage["cost"] is not None
        assert usage["estimated"] is False
    else:
        assert usage["estimated"] is True
        assert usage["input_tokens"] > 0
        assert usage["output_tokens"] == 1  # "abc", as we count
        assert usage["cost"] is not None
    async with app.state.resources.sessionmaker() as session:
        stored = await session.scalar(select(Message).where(Message.role == "assistant"))
        records = list(await session.scalars(select(UsageRecord)))
    assert stored is not None
    assert (stored.content, stored.incomplete) == ("abc", True)
    assert len(records) == 1


@pytest.mark.parametrize("provider", ["openai", "bedrock"])
async def test_a_call_that_broke_off_unreported_is_an_estimate_in_the_report(
    app: FastAPI, client: httpx.AsyncClient, caller: Caller, provider: str
) -> None:
    """A failed call whose provider reported no tokens is charged as our estimate, marked
    as one: never nothing."""
    opener: Any = OPENERS[provider]
    async with opener(Peer(frames=broken_off(provider))) as model:
        await use_remote_model(app, model, provider_model_id="m-1")
        async with serve_started(app) as url:
            await chat_turn(url, caller)
    report = await client.get("/v1/usage", params={"group_by": "model"}, headers=caller.headers())
    rows = {row["key"]: row for row in report.json()["data"]}
    assert rows["remote"]["requests"] == 1
    assert rows["remote"]["unpriced_requests"] == 0
    assert rows["remote"]["cost"] is not None
    async with app.state.resources.sessionmaker() as session:
        (record,) = list(await session.scalars(select(UsageRecord)))
    assert record.estimated is True


async def test_a_call_that_ended_unreported_has_an_unknown_cost(
    app: FastAPI, client: httpx.AsyncClient, caller: Caller
) -> None:
    """A call that ended well but whose provider said nothing of its tokens is counted
    apart, never summed as zero (not estimated: it was not cut short)."""
    frames = [
        *(sse({"choices": [{"index": 0, "delta": {"content": t}}]}) for t in ("a", "b")),
        sse({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        b"data: [DONE]\n\n",
    ]
    async with openai_model(Peer(frames=frames)) as model:
        await use_remote_model(app, model, provider_model_id="m-1")
        async with serve_started(app) as url:
            events = await chat_turn(url, caller)
    assert events[-1][0] == "done"
    report = await client.get("/v1/usage", params={"group_by": "model"}, headers=caller.headers())
    rows = {row["key"]: row for row in report.json()["data"]}
    assert rows["remote"]["unpriced_requests"] == 1
    assert rows["remote"]["cost"] is None
