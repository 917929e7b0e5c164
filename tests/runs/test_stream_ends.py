"""Every stream of a run ends with the run's terminal event, numbered as the run numbered
it, whatever the interleaving of the run's end and its followers: a run's row that ended
is, at the latest one keep-alive interval later, a stream that ended."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest

from atelier.http.sse import KEEPALIVE_SECONDS
from atelier.runs import closing, follow
from atelier.runs.closing import Ending
from atelier.runs.models import Run
from tests.runs.helpers import TERMINAL, new_conversation, parse_sse, run_streamed, start


async def run_row(app, run_id: str) -> Run:  # type: ignore[no-untyped-def]
    async with app.state.resources.sessionmaker() as session:
        run = await session.get(Run, uuid.UUID(run_id))
        assert run is not None
        return run


async def events_of(client, caller, conversation: str, run_id: str) -> list:  # type: ignore[no-untyped-def]
    response = await client.get(
        f"/v1/conversations/{conversation}/runs/{run_id}/events", headers=caller.headers()
    )
    return parse_sse(response.text)


def assert_ends_as_its_row(events: list, row: Run) -> None:
    ids = [number for number, _, _ in events]
    assert ids == sorted(set(ids)), "an id was repeated or went back"
    assert [name for _, name, _ in events].count(events[-1][1]) == 1
    assert events[-1][1] == f"run.{row.status}"
    assert events[-1][0] == row.last_event_id


def test_a_quiet_local_stream_ends_within_one_keep_alive_interval() -> None:
    # Two quiet intervals at most between the row's end and the stream's.
    assert 2 * follow.LOCAL_QUIET_SECONDS <= KEEPALIVE_SECONDS


async def test_a_local_follower_ends_with_the_rows_terminal_event_when_memory_never_hears_it(
    app, client, caller, monkeypatch
) -> None:
    """The run closes its row and then never announces its end (it died in between, or a
    bug lost the event): the follower in its process used to wait for it forever."""
    monkeypatch.setattr(follow, "LOCAL_QUIET_SECONDS", 0.05)
    lost: list[Ending] = []
    monkeypatch.setattr(closing, "announce", lambda recorder, ending: lost.append(ending))
    conversation = await new_conversation(client, caller)
    async with asyncio.timeout(30):
        events = await run_streamed(client, caller, conversation, "hello")
    assert len(lost) == 1
    row = await run_row(app, events[0][2]["run_id"])
    assert row.status == "completed"
    assert_ends_as_its_row(events, row)
    assert [name for _, name, _ in events if name != "message.delta"] == [
        "run.started",
        "message.completed",
        "usage",
        "run.completed",
    ]


class HeldRelease:
    """Holds a run between closing its row and announcing its end: at the release of its
    conversation's lock."""

    def __init__(self, app) -> None:  # type: ignore[no-untyped-def]
        self.coordination = app.state.resources.coordination
        self.release = self.coordination.release
        self.paused, self.go = asyncio.Event(), asyncio.Event()

    async def __call__(self, key: str, token: str) -> None:
        if key.startswith("conversation:"):
            self.paused.set()
            await self.go.wait()
        await self.release(key, token)


async def test_a_follower_joining_between_the_close_and_the_announcement_gets_the_end(
    app, client, caller, monkeypatch
) -> None:
    held = HeldRelease(app)
    monkeypatch.setattr(held.coordination, "release", held)
    conversation = await new_conversation(client, caller)
    run = (await start(client, caller, conversation, "hello")).json()
    await asyncio.wait_for(held.paused.wait(), 15)
    row = await run_row(app, run["id"])
    assert row.status == "completed"  # the row ended; the stream has not heard of it
    follower = asyncio.create_task(events_of(client, caller, conversation, run["id"]))
    memory = app.state.resources.runs.local[uuid.UUID(run["id"])].events
    async with asyncio.timeout(15):  # the follower waits for the run's next event
        while not memory._waiters:
            await asyncio.sleep(0.01)
    held.go.set()
    events = await asyncio.wait_for(follower, 30)
    assert_ends_as_its_row(events, row)


async def test_cancelled_while_letting_go_of_its_lock_the_stream_says_what_the_row_says(
    app, client, caller, monkeypatch
) -> None:
    """Shutdown cancels a run that has closed its row and is releasing its lock: its stream
    ends as its row did (it used to say ``run.cancelled`` of a completed run)."""
    held = HeldRelease(app)
    monkeypatch.setattr(held.coordination, "release", held)
    conversation = await new_conversation(client, caller)
    run = (await start(client, caller, conversation, "write notes.txt: kept")).json()
    await asyncio.wait_for(held.paused.wait(), 15)
    (task,) = [
        t for t in app.state.resources.supervisor.tasks if t.get_name() == f"run-{run['id']}"
    ]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    events = await events_of(client, caller, conversation, run["id"])
    row = await run_row(app, run["id"])
    assert row.status == "completed"
    assert_ends_as_its_row(events, row)
    assert ("file.changed", "notes.txt") in [(name, data.get("path")) for _, name, data in events]


async def test_many_runs_at_once_each_stream_ends_with_its_runs_end(app, client, caller) -> None:
    conversations = await asyncio.gather(*(new_conversation(client, caller) for _ in range(40)))
    streams = await asyncio.gather(
        *(run_streamed(client, caller, c, "hello there " * 20) for c in conversations)
    )
    for events in streams:
        assert events[-1][1] in TERMINAL
        assert_ends_as_its_row(events, await run_row(app, events[0][2]["run_id"]))


class TestALockRenewalThatSwallowsItsCancel:
    """Under load, a renewal of the run's lock can be in flight when the run lets go of the
    lock, and redis-py (``asyncio.wait_for`` on Python 3.11) may drop the cancel when the
    reply arrives at that moment. The run must still end: it used to wait for its renewer
    for ever, keeping its stream open (keep-alives only) and its conversation locked."""

    @pytest.fixture
    def settings_overrides(self) -> dict[str, object]:
        return {"run_lease_seconds": 1}

    async def test_the_run_ends_its_stream_and_frees_its_conversation(
        self, app, client, caller, monkeypatch
    ) -> None:
        from tests.runs.helpers import start_blocked, wait_ended

        monkeypatch.setattr(follow, "LOCAL_QUIET_SECONDS", 3600)  # no rescue from the row
        coordination = app.state.resources.coordination
        extend, in_flight = coordination.extend, asyncio.Event()

        async def swallows_a_cancel(key: str, token: str, ttl_ms: int) -> bool:
            if not in_flight.is_set():
                in_flight.set()
                with contextlib.suppress(asyncio.CancelledError):  # the race, held open
                    await asyncio.sleep(3600)
            return bool(await extend(key, token, ttl_ms))

        conversation, run, tools = await start_blocked(app, client, caller)
        monkeypatch.setattr(coordination, "extend", swallows_a_cancel)
        await asyncio.wait_for(in_flight.wait(), 10)
        tools.release.set()
        async with asyncio.timeout(20):
            events = await events_of(client, caller, conversation, run["id"])
            await wait_ended(client, caller, conversation, run["id"])
            while uuid.UUID(run["id"]) in app.state.resources.runs.local:
                await asyncio.sleep(0.01)
        assert_ends_as_its_row(events, await run_row(app, run["id"]))
        assert (await start(client, caller, conversation, "again")).status_code == 202
