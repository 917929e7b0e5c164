"""Runs that do not end well: cancel, timeouts, lost locks, dead processes, shutdown,
deleted conversations and disconnected clients (BUG-001, 004, 010, 019)."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import event, func, select, update

from atelier.conversations import messages as stored
from atelier.conversations.models import Conversation, Message
from atelier.db.base import utcnow
from atelier.http.scope import Principal
from atelier.llm.fakes import ScriptedModel
from atelier.llm.models import CatalogModel
from atelier.runs import service
from atelier.runs.models import Run
from atelier.usage.models import UsageRecord
from tests.chats.test_chats import use_model
from tests.live import serve_started
from tests.runs.helpers import (
    SSE,
    BlockingTools,
    messages,
    new_conversation,
    parse_sse,
    run_streamed,
    start,
    start_blocked,
    use_tools,
    wait_ended,
)


async def run_row(app, run_id: str) -> Run:
    async with app.state.resources.sessionmaker() as session:
        run = await session.get(Run, uuid.UUID(run_id))
        assert run is not None
        return run


async def events_of(client, caller, conversation: str, run_id: str) -> list:
    response = await client.get(
        f"/v1/conversations/{conversation}/runs/{run_id}/events", headers=caller.headers()
    )
    return parse_sse(response.text)


async def drop_lease(app, conversation: str) -> None:
    """What an expired lease looks like to its holder: the key is simply gone."""
    coordination = app.state.resources.coordination
    key = f"conversation:{conversation}"
    if coordination.name == "redis":
        await coordination.client.delete(coordination._key(key))
    else:
        coordination._leases.pop(key)


async def open_run(session, conversation: uuid.UUID | Conversation, run_id=None, **extra):  # type: ignore[no-untyped-def]
    """Claim the conversation for a new run, as a run task would, in ``session``."""
    row = (
        conversation
        if isinstance(conversation, Conversation)
        else await session.get(Conversation, conversation)
    )
    run_id = run_id or uuid.uuid4()
    values = {"model_id": "offline", "agent": None, "text": "a", "owner_id": "x"}
    values |= {"abandoned_after": 1} | extra
    principal = Principal(row.tenant_id, "tenant", uuid.uuid4(), row.user_id)
    claimed, _ = await service.claim(
        session, principal, row.id, "agent", run_id, abandoned_after=values.pop("abandoned_after")
    )
    await service.open_run(session, claimed, run_id=run_id, **values)
    return run_id


async def claimed(app, client, caller) -> tuple[uuid.UUID, uuid.UUID]:  # type: ignore[no-untyped-def]
    """A new conversation whose active run is a fresh id (committed)."""
    conversation = uuid.UUID(await new_conversation(client, caller))
    async with app.state.resources.sessionmaker() as session:
        run_id = await open_run(session, conversation)
        await session.commit()
    return conversation, run_id


class TestCancel:
    async def test_cancel_during_a_tool_call(self, app, client, caller) -> None:
        conversation, run, tools = await start_blocked(app, client, caller)
        url = f"/v1/conversations/{conversation}/runs/{run['id']}/cancel"
        response = await client.post(url, headers=caller.headers())
        assert response.status_code == 202
        ended = await wait_ended(client, caller, conversation, run["id"])
        assert ended["status"] == "cancelled"
        assert tools.cancelled.is_set()
        events = await events_of(client, caller, conversation, run["id"])
        assert [n for _, n, _ in events][-3:] == [
            "tool.started",
            "message.completed",
            "run.cancelled",
        ]
        log = await messages(client, caller, conversation)
        assert [m["role"] for m in log] == ["user", "assistant", "tool"]
        assert log[2]["parts"][0]["is_error"] is True
        # Idempotent: a finished run comes back unchanged.
        again = await client.post(url, headers=caller.headers())
        assert again.status_code == 202
        assert again.json() == ended
        # And the conversation takes a new run at once.
        tools.release.set()
        assert (await start(client, caller, conversation, "hello")).status_code == 202

    async def test_cancel_mid_reply_saves_the_partial_reply(self, app, client, caller) -> None:
        conversation = await new_conversation(client, caller)
        model = ScriptedModel([f"w{i} " for i in range(500)], delay=0.01)
        await use_model(app, model)
        run = (await start(client, caller, conversation, "talk")).json()
        async with asyncio.timeout(15):
            while model.sent < 3:
                await asyncio.sleep(0.01)
        await client.post(
            f"/v1/conversations/{conversation}/runs/{run['id']}/cancel", headers=caller.headers()
        )
        ended = await wait_ended(client, caller, conversation, run["id"])
        assert ended["status"] == "cancelled"
        assert model.closed.is_set()
        reply = (await messages(client, caller, conversation))[-1]
        assert reply["role"] == "assistant"
        assert reply["incomplete"] is True
        assert reply["content"].startswith("w0 w1 ")
        assert len(reply["content"].split()) < 500

    async def test_a_client_disconnect_never_cancels(self, app, client, caller) -> None:
        """BUG-004: 50 streams cut at random points; every run completes and is saved."""
        await use_model(app, ScriptedModel([f"w{i} " for i in range(40)], delay=0.002))
        conversations = [await new_conversation(client, caller) for _ in range(50)]
        rng = random.Random(4)

        async def cut(live: httpx.AsyncClient, conversation: str) -> None:
            limit = rng.randrange(0, 3000)
            async with live.stream(
                "POST",
                f"/v1/conversations/{conversation}/runs",
                json={"input": "talk"},
                headers=caller.headers(**SSE),
            ) as response:
                assert response.status_code == 200
                received = 0
                async for chunk in response.aiter_bytes():
                    received += len(chunk)
                    if received >= limit:
                        break

        async with serve_started(app) as base, httpx.AsyncClient(base_url=base) as live:
            gate = asyncio.Semaphore(10)

            async def one(conversation: str) -> None:
                async with gate:
                    await cut(live, conversation)

            await asyncio.gather(*(one(c) for c in conversations))
        for conversation in conversations:
            runs = (
                await client.get(f"/v1/conversations/{conversation}/runs", headers=caller.headers())
            ).json()["data"]
            ended = await wait_ended(client, caller, conversation, runs[0]["id"])
            assert ended["status"] == "completed"
            log = await messages(client, caller, conversation)
            assert [m["role"] for m in log] == ["user", "assistant"]
            assert log[1]["content"] == "".join(f"w{i} " for i in range(40))
            assert log[1]["incomplete"] is False
        async with app.state.resources.sessionmaker() as session:
            assert await session.scalar(select(func.count()).select_from(UsageRecord)) == 50


@pytest.mark.parametrize(
    "settings_overrides", [{"run_idle_timeout_seconds": 0.3, "run_deadline_seconds": 60}]
)
class TestIdleTimeout:
    async def test_a_hanging_model_times_out_and_frees_the_conversation(
        self, app, client, caller
    ) -> None:
        """BUG-010: the run task itself is cancelled; provider closed, lock released."""
        conversation = await new_conversation(client, caller)
        model = ScriptedModel(["never"], delay=3600)
        await use_model(app, model)
        run = (await start(client, caller, conversation, "hi")).json()
        ended = await wait_ended(client, caller, conversation, run["id"], timeout=5)
        assert ended["status"] == "timed_out"
        assert ended["error"]["code"] == "timed_out"
        assert "no model or tool progress" in ended["error"]["message"]
        assert model.closed.is_set()
        events = await events_of(client, caller, conversation, run["id"])
        assert events[-1][1] == "run.timed_out"
        await use_model(app, ScriptedModel(["fine"]))
        next_run = await start(client, caller, conversation, "again")
        assert next_run.status_code == 202
        assert (await wait_ended(client, caller, conversation, next_run.json()["id"]))[
            "status"
        ] == "completed"

    async def test_a_hanging_tool_times_out(self, app, client, caller) -> None:
        conversation = await new_conversation(client, caller)
        use_tools(app, tools := BlockingTools())
        run = (await start(client, caller, conversation, "list files")).json()
        ended = await wait_ended(client, caller, conversation, run["id"], timeout=5)
        assert ended["status"] == "timed_out"
        assert tools.cancelled.is_set()


@pytest.mark.parametrize(
    "settings_overrides", [{"run_deadline_seconds": 0.5, "run_idle_timeout_seconds": 60}]
)
async def test_the_deadline_ends_a_run_that_keeps_making_progress(app, client, caller) -> None:
    conversation = await new_conversation(client, caller)
    await use_model(app, ScriptedModel([f"w{i} " for i in range(10_000)], delay=0.005))
    run = (await start(client, caller, conversation, "talk")).json()
    ended = await wait_ended(client, caller, conversation, run["id"], timeout=5)
    assert ended["status"] == "timed_out"
    assert "deadline" in ended["error"]["message"]
    reply = (await messages(client, caller, conversation))[-1]
    assert reply["incomplete"] is True
    assert reply["content"]


@pytest.mark.parametrize("settings_overrides", [{"run_lease_seconds": 1}])
async def test_losing_the_lock_stops_the_run(app, client, caller) -> None:
    """BUG-001: a holder that cannot renew its lease stops instead of running unprotected."""
    conversation, run, tools = await start_blocked(app, client, caller)
    await drop_lease(app, conversation)
    ended = await wait_ended(client, caller, conversation, run["id"], timeout=5)
    assert ended["status"] == "failed"
    assert ended["error"]["code"] == "lease_lost"
    assert tools.cancelled.is_set()


class TestCrashRecovery:
    async def _abandoned_run(self, app, client, caller) -> tuple[str, uuid.UUID]:
        """A run whose process died: active, heartbeat a lease ago, lock free."""
        conversation = await new_conversation(client, caller)
        async with app.state.resources.sessionmaker() as session:
            run_id = await open_run(session, uuid.UUID(conversation), owner_id="dead")
            await session.execute(
                update(Run)
                .where(Run.id == run_id)
                .values(status="running", heartbeat_at=utcnow() - timedelta(minutes=5))
            )
            await session.commit()
        return conversation, run_id

    async def test_the_reaper_fails_runs_whose_process_died(self, app, client, caller) -> None:
        conversation, run_id = await self._abandoned_run(app, client, caller)
        manager = app.state.resources.runs
        assert await manager.reap() == 1
        ended = await wait_ended(client, caller, conversation, str(run_id))
        assert ended["status"] == "failed"
        assert ended["error"]["code"] == "worker_lost"
        events = await events_of(client, caller, conversation, str(run_id))
        assert [n for _, n, _ in events] == ["run.failed"]
        body = (
            await client.get(f"/v1/conversations/{conversation}", headers=caller.headers())
        ).json()
        assert body["active_run_id"] is None
        assert await manager.reap() == 0
        assert "atelier_runs_reaped_total 1.0" in (await client.get("/metrics")).text

    async def test_the_reaper_leaves_a_run_whose_lock_is_held(self, app, client, caller) -> None:
        conversation, run_id = await self._abandoned_run(app, client, caller)
        coordination = app.state.resources.coordination
        assert await coordination.acquire(f"conversation:{conversation}", "alive", 10_000)
        assert await app.state.resources.runs.reap() == 0
        assert (await run_row(app, str(run_id))).status == "running"

    async def test_a_new_run_takes_over_an_abandoned_conversation_at_once(
        self, app, client, caller
    ) -> None:
        conversation, run_id = await self._abandoned_run(app, client, caller)
        response = await start(client, caller, conversation, "hello")
        assert response.status_code == 202
        abandoned = await run_row(app, str(run_id))
        assert abandoned.status == "failed"
        assert abandoned.error_code == "worker_lost"
        ended = await wait_ended(client, caller, conversation, response.json()["id"])
        assert ended["status"] == "completed"
        log = await messages(client, caller, conversation)
        assert [m["seq"] for m in log] == [1, 2, 3]


@pytest.mark.parametrize("settings_overrides", [{"run_lease_seconds": 1.5}])
class TestHeartbeats:
    async def test_the_process_beats_for_all_its_runs_in_one_statement(
        self, app, client, caller
    ) -> None:
        """Hundreds of runs cost the database one heartbeat per interval, not one each."""
        tools = BlockingTools()
        runs = []
        for _ in range(3):
            conversation = await new_conversation(client, caller)
            use_tools(app, tools)
            runs.append((await start(client, caller, conversation, "list files")).json()["id"])
        heartbeats = app.state.resources.runs.env.heartbeats
        async with asyncio.timeout(10):  # all three opened, and beaten for
            while len(heartbeats) < 3:
                await asyncio.sleep(0.01)
        beats: list[object] = []

        def seen(_conn, _cursor, statement: str, parameters: object, *_: object) -> None:
            if "heartbeat_at" in statement and statement.lstrip().upper().startswith("UPDATE"):
                beats.append(parameters)

        engine = app.state.resources.engine.sync_engine
        event.listen(engine, "before_cursor_execute", seen)
        try:
            await asyncio.sleep(1.2)  # two beats at least (every 0.5 s)
        finally:
            event.remove(engine, "before_cursor_execute", seen)
            tools.release.set()
        assert len(beats) >= 2
        for parameters in beats:  # each beat names every run
            assert all(
                run_id.replace("-", "") in str(parameters).replace("-", "") for run_id in runs
            )

    async def test_a_run_taken_for_dead_stops_at_the_next_beat(self, app, client, caller) -> None:
        _, run, tools = await start_blocked(app, client, caller)
        async with app.state.resources.sessionmaker() as session:  # what the reaper does
            await session.execute(
                update(Run).where(Run.id == uuid.UUID(run["id"])).values(status="failed")
            )
            await session.commit()
        await asyncio.wait_for(tools.cancelled.wait(), 5)


class TestShutdown:
    async def test_running_runs_are_cancelled_and_saved_after_the_grace(
        self, app, client, caller
    ) -> None:
        _, run, _ = await start_blocked(app, client, caller)
        await app.state.resources.runs.shutdown(grace_seconds=0.2)
        ended = await run_row(app, run["id"])
        assert ended.status == "cancelled"
        assert ended.error_code == "shutdown"
        refused = await start(client, caller, await new_conversation(client, caller), "hi")
        assert refused.status_code == 503
        assert refused.json()["code"] == "shutting_down"

    async def test_runs_that_finish_within_the_grace_complete(self, app, client, caller) -> None:
        conversation = await new_conversation(client, caller)
        await use_model(app, ScriptedModel(["a ", "b ", "c"], delay=0.05))
        run = (await start(client, caller, conversation, "hi")).json()
        await app.state.resources.runs.shutdown(grace_seconds=10)
        assert (await run_row(app, run["id"])).status == "completed"


async def test_deleting_a_conversation_cancels_its_run_first(app, client, caller) -> None:
    conversation, run, tools = await start_blocked(app, client, caller, "write a.txt: hello")
    response = await client.delete(f"/v1/conversations/{conversation}", headers=caller.headers())
    assert response.status_code == 204
    assert tools.cancelled.is_set()
    gone = await client.get(f"/v1/conversations/{conversation}", headers=caller.headers())
    assert gone.status_code == 404
    async with app.state.resources.sessionmaker() as session:
        assert await session.get(Run, uuid.UUID(run["id"])) is None
    workspace_copy = app.state.resources.workspaces.root / conversation
    async with asyncio.timeout(5):
        while workspace_copy.exists():
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("settings_overrides", [{"run_max_steps": 2}])
async def test_a_run_stops_at_its_step_limit(app, client, caller) -> None:
    conversation = await new_conversation(client, caller)
    run = (await start(client, caller, conversation, "list files\nlist files\nlist files")).json()
    ended = await wait_ended(client, caller, conversation, run["id"])
    assert ended["status"] == "failed"
    assert ended["error"]["code"] == "step_limit"
    roles = [m["role"] for m in await messages(client, caller, conversation)]
    assert roles == ["user", "assistant", "tool", "assistant", "tool"]


class TestDatabaseGuards:
    async def test_only_one_run_can_claim_a_conversation(self, app, client, caller) -> None:
        """Besides the lock, the database refuses a second active run (compare-and-set)."""
        conversation = uuid.UUID(await new_conversation(client, caller))
        sessionmaker = app.state.resources.sessionmaker
        async with sessionmaker() as first, sessionmaker() as second:
            seen_by_first = await first.get(Conversation, conversation)
            seen_by_second = await second.get(Conversation, conversation)
            await first.commit()
            await second.commit()
            await open_run(first, seen_by_first)
            await first.commit()
            with pytest.raises(service.RunConflict):
                await open_run(second, seen_by_second, text="b", owner_id="y")

    async def test_seq_is_gapless_and_unique_under_concurrent_writers(
        self, app, client, caller
    ) -> None:
        """BUG-019: seq is taken in SQL only when a message is stored."""
        conversation, run_id = await claimed(app, client, caller)
        sessionmaker = app.state.resources.sessionmaker

        async def write(index: int) -> None:
            async with sessionmaker() as session:
                await stored.append(session, conversation, run_id, "assistant", f"m{index}")
                await session.commit()

        async def fenced_out() -> None:
            async with sessionmaker() as session:
                with pytest.raises(stored.Fenced):
                    await stored.append(session, conversation, uuid.uuid4(), "user", "no")

        await asyncio.gather(*(write(i) for i in range(20)), *(fenced_out() for _ in range(5)))
        async with sessionmaker() as session:
            seqs = list(
                await session.scalars(
                    select(Message.seq)
                    .where(Message.conversation_id == conversation)
                    .order_by(Message.seq)
                )
            )
            counter = (await session.get(Conversation, conversation)).last_message_seq
        assert seqs == list(range(1, 22))
        assert counter == 21

    async def test_concurrent_usage_updates_lose_nothing(self, app, client, caller) -> None:
        """BUG-009: totals are `total = total + :n` in SQL, never read-modify-write."""
        from decimal import Decimal

        conversation, run_id = await claimed(app, client, caller)
        sessionmaker = app.state.resources.sessionmaker

        async def count_conversation(n: int) -> None:
            async with sessionmaker() as session:
                cost = Decimal("0.000001") * n
                await stored.append(
                    session,
                    conversation,
                    run_id,
                    "assistant",
                    "",
                    counted=stored.Counted(n, 2 * n, cost, context_tokens=n),
                )
                await session.commit()

        async def count_run(n: int) -> None:  # on its own: no other row lock orders them
            async with sessionmaker() as session:
                await service.count_usage(session, run_id, n, 2 * n, Decimal("0.000001") * n)
                await session.commit()

        await asyncio.gather(*(count_conversation(n) for n in range(1, 21)))
        await asyncio.gather(*(count_run(n) for n in range(1, 21)))
        async with sessionmaker() as session:
            row = await session.get(Conversation, conversation)
            run = await session.get(Run, run_id)
        assert (row.total_input_tokens, row.total_output_tokens) == (210, 420)
        assert row.total_cost == Decimal("0.000210")
        assert (run.input_tokens, run.output_tokens, run.cost) == (210, 420, Decimal("0.000210"))

    async def test_history_answers_tool_calls_a_dead_run_left_open(
        self, app, client, caller
    ) -> None:
        conversation = uuid.UUID(await new_conversation(client, caller))
        async with app.state.resources.sessionmaker() as session:
            run_id = await open_run(session, conversation)
            await stored.append(
                session,
                conversation,
                run_id,
                "assistant",
                "",
                parts=[{"type": "tool_call", "id": "c1", "name": "list_files", "arguments": {}}],
            )
            history = await stored.history(session, conversation)
        assert [m.role for m in history] == ["user", "assistant", "tool"]
        assert history[2].tool_results[0].call_id == "c1"
        assert history[2].tool_results[0].is_error is True


async def test_catalog_model_check_refuses_a_zero_window(app) -> None:
    """The other half of BUG-008: a zero window never reaches the catalog."""
    from sqlalchemy.exc import IntegrityError

    async with app.state.resources.sessionmaker() as session:
        (await session.get(CatalogModel, "offline")).context_window = 0
        with pytest.raises(IntegrityError):
            await session.commit()


class TestStreamsEndWithOneTerminalEvent:
    """BUG-022 after the first byte: whatever fails, the stream ends with one terminal event."""

    async def test_a_producer_failing_mid_stream_ends_with_an_error_event(
        self, app, client, caller, monkeypatch
    ) -> None:
        from atelier.runs import MessageDelta, Numbered

        conversation = await new_conversation(client, caller)
        run = (await start(client, caller, conversation, "hi")).json()
        await wait_ended(client, caller, conversation, run["id"])

        async def breaks(run_id, after):  # type: ignore[no-untyped-def]
            yield [Numbered(1, MessageDelta(text="a"))]
            raise RuntimeError("the follower broke")

        monkeypatch.setattr(app.state.resources.runs, "events", breaks)
        events = await events_of(client, caller, conversation, run["id"])
        assert [name for _, name, _ in events] == ["message.delta", "error"]
        assert events[-1][2]["code"] == "stream_failed"

    async def test_the_database_failing_while_a_follower_falls_back_to_it_is_retried(
        self, app, client, caller, monkeypatch
    ) -> None:
        """The event log is gone (expired): the follower asks the run's row, and the database
        does not answer the first times. The stream waits, then ends as the run did."""
        from sqlalchemy.exc import OperationalError

        conversation = await new_conversation(client, caller)
        done = await run_streamed(client, caller, conversation, "hi")
        run_id = done[0][2]["run_id"]
        async with asyncio.timeout(15):  # the run has left this process: followed from the log
            while uuid.UUID(run_id) in app.state.resources.runs.local:
                await asyncio.sleep(0.01)
        coordination = app.state.resources.coordination
        if coordination.name == "redis":
            await coordination.client.delete(coordination._key(f"log:run:{run_id}"))
        else:
            coordination._logs.pop(f"run:{run_id}")
        sessions = app.state.resources.runs.env.sessions
        failures = iter(range(2))

        def flaky():  # type: ignore[no-untyped-def]
            if next(failures, None) is not None:
                raise OperationalError("SELECT", {}, ConnectionRefusedError("the database is down"))
            return sessions()

        monkeypatch.setattr(app.state.resources.runs.env, "sessions", flaky)
        monkeypatch.setattr("atelier.runs.follow.FOLLOW_WAIT_MS", 10)
        replay = await events_of(client, caller, conversation, run_id)
        assert replay[-1][1] == "run.completed"
        assert replay[-1][0] == done[-1][0]  # under the run's own id
        stored = [(n, name) for n, name, _ in done if name in ("message.completed", "usage")]
        assert [(n, name) for n, name, _ in replay[:-1]] == stored
