"""How many database round trips a run costs before its first token reaches the client.

A statement counter on the engine is deterministic where a timing is not: every
statement, BEGIN, COMMIT and ROLLBACK is one round trip to the database. Only the
request's and the run's own are counted: the process's background duties (the reaper,
the queue, the webhook sender, ...) and a run's heartbeat query the same engine on their
own clock, and on a busy machine one of them could land between the POST and the first
token (this test failed so, once, with the suite in one process).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI
from sqlalchemy import event

from atelier.llm.base import ModelRequest, Stop, StreamEvent, TextDelta
from tests.runs.helpers import new_conversation, run_streamed

# 8, and since budgets one more: the statement that finds the budgets binding the run
# (and refuses it if one is spent).
MAX_ROUND_TRIPS_TO_FIRST_DELTA = 9


class Counter:
    def __init__(self, app: FastAPI) -> None:
        self.count = 0
        self.statements: list[str] = []
        self.daemons = app.state.resources.supervisor.daemons
        engine = app.state.resources.engine.sync_engine
        event.listen(engine, "before_cursor_execute", self._statement)
        for name in ("begin", "commit", "rollback"):
            event.listen(engine, name, self._transaction(name.upper()))

    def _ours(self) -> bool:
        """Not a background duty's, nor a run's heartbeat or idle watch."""
        task = asyncio.current_task()
        if task is None:
            return True
        watching = task.get_name().startswith(("run-heartbeat-", "run-idle-"))
        return task not in self.daemons and not watching

    def _statement(self, _conn, _cursor, statement: str, *_args: object) -> None:
        if self._ours():
            self.count += 1
            self.statements.append(statement.split("\n")[0][:80])

    def _transaction(self, name: str):  # type: ignore[no-untyped-def]
        def record(_conn: object) -> None:
            if self._ours():
                self.count += 1
                self.statements.append(name)

        return record

    def reset(self) -> None:
        self.count, self.statements = 0, []


class FirstTokenModel:
    """Notes the counter's value as it is about to send its first token."""

    provider = "offline"

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self.at_first_token: list[str] | None = None

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        if self.at_first_token is None:
            self.at_first_token = list(self.counter.statements)
        yield TextDelta("hello")
        yield Stop("end_turn")


@pytest.mark.parametrize("kind", ["conversation", "chat"])
async def test_post_to_first_delta_takes_at_most_9_round_trips(app, client, caller, kind) -> None:
    counter = Counter(app)
    model = FirstTokenModel(counter)
    app.state.resources.models.providers["offline"] = model
    # Titled, so no title is being made meanwhile (that happens beside the run, not before).
    if kind == "conversation":
        conversation = await new_conversation(client, caller, title="t")  # the key is cached
        await client.put(  # a workspace with a file: the run reads what it holds
            f"/v1/conversations/{conversation}/files/a.txt", content=b"a", headers=caller.headers()
        )
        counter.reset()
        await run_streamed(client, caller, conversation, "hi")
    else:
        chat = (
            await client.post("/v1/chats", json={"title": "t"}, headers=caller.headers())
        ).json()["id"]
        counter.reset()
        await client.post(
            f"/v1/chats/{chat}/messages", json={"content": "hi"}, headers=caller.headers()
        )
    assert model.at_first_token is not None
    assert len(model.at_first_token) <= MAX_ROUND_TRIPS_TO_FIRST_DELTA, model.at_first_token
