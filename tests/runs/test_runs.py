"""Agent runs over HTTP: start, stream, persist, lock, resume (BUG-001, 004, 005, 006, 019, 022)."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from sqlalchemy import func, select

from atelier.llm.base import UsageReport
from atelier.llm.fakes import GatedTitleModel, ScriptedModel
from atelier.usage.models import UsageRecord
from tests.chats.test_chats import set_catalog, title_of, use_model, use_remote_model
from tests.live import serve_started
from tests.runs.helpers import (
    SSE,
    TERMINAL,
    messages,
    names,
    new_conversation,
    parse_sse,
    run_streamed,
    start,
    start_blocked,
    wait_ended,
)


class TestStreamedRun:
    async def test_reads_a_file_writes_a_new_one_and_streams_every_step(
        self, client, caller
    ) -> None:
        conversation = await new_conversation(client, caller)
        put = await client.put(
            f"/v1/conversations/{conversation}/files/notes.txt",
            content=b"Buy milk.\nCall Kenji.\n",
            headers=caller.headers(),
        )
        assert put.status_code == 201
        events = await run_streamed(
            client, caller, conversation, "read notes.txt\nwrite todo.md: - milk"
        )
        assert [i for i, _, _ in events] == list(range(1, len(events) + 1))
        assert names(events) == [
            "run.started",
            "message.completed",  # assistant: calls read_file
            "usage",
            "tool.started",
            "tool.completed",
            "message.completed",  # tool result
            "message.completed",  # assistant: calls write_file
            "usage",
            "tool.started",
            "tool.completed",
            "message.completed",
            "message.completed",  # assistant: the final reply
            "usage",
            "file.changed",
            "title.updated",
            "run.completed",
        ]
        read = next(d for _, n, d in events if n == "tool.completed")
        assert read["name"] == "read_file"
        assert read["output"] == "Buy milk.\nCall Kenji.\n"
        assert read["is_error"] is False
        changed = next(d for _, n, d in events if n == "file.changed")
        assert changed == {"path": "todo.md", "size": len(b"- milk"), "change": "created"}

        stored = await client.get(
            f"/v1/conversations/{conversation}/files/todo.md", headers=caller.headers()
        )
        assert stored.content == b"- milk"
        listing = (
            await client.get(f"/v1/conversations/{conversation}/files", headers=caller.headers())
        ).json()["data"]
        assert {f["path"]: f["source"] for f in listing} == {
            "notes.txt": "user",
            "todo.md": "agent",
        }

        log = await messages(client, caller, conversation)
        assert [m["seq"] for m in log] == list(range(1, 7))
        assert [m["role"] for m in log] == [
            "user",
            "assistant",
            "tool",
            "assistant",
            "tool",
            "assistant",
        ]
        deltas = "".join(d["text"] for _, n, d in events if n == "message.delta")
        assert log[-1]["content"] == deltas
        assert log[1]["parts"][0]["name"] == "read_file"

        body = (
            await client.get(f"/v1/conversations/{conversation}", headers=caller.headers())
        ).json()
        assert body["title"] == "read notes.txt write todo.md: - milk"
        assert body["active_run_id"] is None
        assert body["total_input_tokens"] > 0
        assert body["total_output_tokens"] > 0
        runs = (
            await client.get(f"/v1/conversations/{conversation}/runs", headers=caller.headers())
        ).json()["data"]
        assert len(runs) == 1
        assert runs[0]["status"] == "completed"
        assert runs[0]["started_at"]
        assert runs[0]["ended_at"]
        assert runs[0]["input_tokens"] == body["total_input_tokens"]

    async def test_without_sse_the_run_is_accepted_and_proceeds(self, client, caller) -> None:
        conversation = await new_conversation(client, caller)
        response = await start(client, caller, conversation, "hello")
        assert response.status_code == 202
        run = response.json()
        assert run["status"] in ("queued", "running")
        assert run["conversation_id"] == conversation
        ended = await wait_ended(client, caller, conversation, run["id"])
        assert ended["status"] == "completed"
        assert ended["error"] is None
        assert [m["role"] for m in await messages(client, caller, conversation)] == [
            "user",
            "assistant",
        ]

    async def test_tool_errors_go_back_to_the_model(self, client, caller) -> None:
        conversation = await new_conversation(client, caller)
        events = await run_streamed(client, caller, conversation, "read ../../etc/passwd")
        result = next(d for _, n, d in events if n == "tool.completed")
        assert result["is_error"] is True
        assert events[-1][1] == "run.completed"


@pytest.mark.parametrize("settings_overrides", [{"title_wait_seconds": 0.2}])
async def test_a_slow_title_model_never_delays_the_run(app, client, caller) -> None:
    """BUG-005: the title is made after the run, in the background, by the real title
    generator; the stream waits for it at most ATELIER_TITLE_WAIT_SECONDS and ends while
    the title model is still working; the title lands later."""
    model = GatedTitleModel(["fast", " reply"])
    conversation = await new_conversation(
        client, caller, model_id=await use_remote_model(app, model)
    )
    events = await run_streamed(client, caller, conversation, "hello")
    assert "title.updated" not in names(events)
    assert events[-1][1] == "run.completed"
    assert model.title_requested.is_set()
    assert not model.release.is_set()
    model.release.set()
    path = f"/v1/conversations/{conversation}"
    assert await title_of(client, caller, path) == "A gated title"


async def test_a_model_failing_mid_stream_is_one_run_failed_then_the_end(
    app, client, caller
) -> None:
    """BUG-022: after the stream starts, a failure is one terminal event, then EOF."""
    await use_model(
        app, ScriptedModel(["a ", "b ", "c ", "d "], fail_after=2, usage=UsageReport(5, 2))
    )
    conversation = await new_conversation(client, caller)
    events = await run_streamed(client, caller, conversation, "hello")
    assert names(events) == ["run.started", "message.completed", "usage", "run.failed"]
    assert events[-1][2]["error"]["code"] == "model_error"
    partial = next(d for _, n, d in events if n == "message.completed")
    assert partial["content"] == "a b "
    assert partial["incomplete"] is True
    usage = next(d for _, n, d in events if n == "usage")
    assert (usage["input_tokens"], usage["output_tokens"]) == (5, 2)
    assert [m["role"] for m in await messages(client, caller, conversation)] == [
        "user",
        "assistant",
    ]


class TestRefusedBeforeTheStream:
    async def test_unknown_and_foreign_conversations_are_404(self, client, caller) -> None:
        conversation = await new_conversation(client, caller)
        other = await start(client, caller, conversation, "hi", user="mallory")
        assert other.status_code == 404
        missing = await start(client, caller, "00000000-0000-4000-8000-000000000000", "hi", **SSE)
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"

    @pytest.mark.parametrize(
        "body",
        [{}, {"input": ""}, {"input": "x" * 100_001}, {"input": "hi", "extra": 1}, {"input": 3}],
    )
    async def test_invalid_bodies_are_422_and_store_nothing(self, client, caller, body) -> None:
        conversation = await new_conversation(client, caller)
        response = await client.post(
            f"/v1/conversations/{conversation}/runs", json=body, headers=caller.headers(**SSE)
        )
        assert response.status_code == 422
        assert await messages(client, caller, conversation) == []

    async def test_refusals_to_a_stream_client_are_plain_http(self, app, client, caller) -> None:
        """BUG-022: a client asking for a stream gets a refusal as plain HTTP, never a 200
        stream that carries the error."""
        conversation, _, tools = await start_blocked(app, client, caller)
        busy = await start(client, caller, conversation, "again", **SSE)
        assert (busy.status_code, busy.json()["code"]) == (409, "conversation_busy")
        assert busy.headers["content-type"] == "application/problem+json"
        assert int(busy.headers["retry-after"]) >= 1
        tools.release.set()
        await set_catalog(app, "offline", context_window=50)
        small = await new_conversation(client, caller)
        too_long = await start(client, caller, small, "word " * 100, **SSE)
        assert (too_long.status_code, too_long.json()["code"]) == (413, "context_window_exceeded")
        assert await messages(client, caller, small) == []

    async def test_unknown_model_is_400(self, client, caller) -> None:
        conversation = await new_conversation(client, caller)
        response = await client.post(
            f"/v1/conversations/{conversation}/runs",
            json={"input": "hi", "model_id": "no-such-model"},
            headers=caller.headers(),
        )
        assert response.status_code == 400
        assert response.json()["code"] == "unknown_model"

    async def test_bad_last_event_id_is_400(self, client, caller) -> None:
        conversation = await new_conversation(client, caller)
        run = (await start(client, caller, conversation, "hi")).json()
        response = await client.get(
            f"/v1/conversations/{conversation}/runs/{run['id']}/events",
            headers=caller.headers(**{"Last-Event-ID": "abc"}),
        )
        assert response.status_code == 400
        assert response.json()["code"] == "invalid_last_event_id"
        await wait_ended(client, caller, conversation, run["id"])


class TestConversationLock:
    async def test_back_to_back_runs_the_second_starts_at_once(self, client, caller) -> None:
        """BUG-001: the lock is released when a run ends, not when it expires: the moment a
        run's stream has ended, the next run is accepted (never 409 conversation_busy)."""
        conversation = await new_conversation(client, caller)
        for _ in range(3):
            events = await run_streamed(client, caller, conversation, "hello")
            assert events[-1][1] == "run.completed"
            response = await start(client, caller, conversation, "again")
            assert response.status_code == 202, response.text
            await wait_ended(client, caller, conversation, response.json()["id"])

    async def test_a_wrong_token_does_not_release_the_lock(self, app, client, caller) -> None:
        conversation, run, tools = await start_blocked(app, client, caller)
        coordination = app.state.resources.coordination
        assert await coordination.release(f"conversation:{conversation}", "not-the-token") is False
        busy = await start(client, caller, conversation, "hello")
        assert busy.status_code == 409
        assert busy.json()["code"] == "conversation_busy"
        assert int(busy.headers["retry-after"]) >= 1
        tools.release.set()
        assert (await wait_ended(client, caller, conversation, run["id"]))["status"] == "completed"

    async def test_twenty_concurrent_starts_accept_exactly_one(self, app, client, caller) -> None:
        conversation = await new_conversation(client, caller)
        await use_model(app, ScriptedModel(["slow"] * 20, delay=0.02))
        responses = await asyncio.gather(
            *(start(client, caller, conversation, f"run {i}") for i in range(20))
        )
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [202] + [409] * 19
        assert all("retry-after" in r.headers for r in responses if r.status_code == 409)
        accepted = next(r for r in responses if r.status_code == 202).json()
        await wait_ended(client, caller, conversation, accepted["id"])
        log = await messages(client, caller, conversation)
        assert [m["role"] for m in log] == ["user", "assistant"]
        metrics = (await client.get("/metrics")).text
        assert "atelier_run_lock_contention_total 19.0" in metrics


class TestPersistence:
    @pytest.mark.parametrize("settings_overrides", [{"run_max_output_tokens": 5}])
    async def test_a_reply_cut_at_the_output_limit_is_kept_as_incomplete(
        self, client, caller
    ) -> None:
        conversation = await new_conversation(client, caller)
        events = await run_streamed(client, caller, conversation, "tell me everything")
        completed = next(d for _, n, d in events if n == "message.completed")
        assert completed["incomplete"] is True
        assert completed["stop_reason"] == "max_tokens"
        reply = (await messages(client, caller, conversation))[-1]
        assert (reply["incomplete"], reply["stop_reason"]) == (True, "max_tokens")
        assert reply["content"]  # what came before the cut is kept
        normal = await new_conversation(client, caller)
        await run_streamed(client, caller, normal, "hi")

    async def test_a_finished_reply_says_why_the_model_stopped(self, client, caller) -> None:
        conversation = await new_conversation(client, caller)
        await run_streamed(client, caller, conversation, "list files")
        call, _, reply = (await messages(client, caller, conversation))[1:]
        assert (call["stop_reason"], reply["stop_reason"]) == ("tool_use", "end_turn")
        assert reply["incomplete"] is False

    async def test_totals_after_three_runs_equal_the_sum(self, app, client, caller) -> None:
        """BUG-009: totals accumulate in SQL."""
        conversation = await new_conversation(client, caller)
        for text in ("one", "list files", "three three three"):
            events = await run_streamed(client, caller, conversation, text)
            assert events[-1][1] == "run.completed"
        runs = (
            await client.get(f"/v1/conversations/{conversation}/runs", headers=caller.headers())
        ).json()["data"]
        body = (
            await client.get(f"/v1/conversations/{conversation}", headers=caller.headers())
        ).json()
        assert body["total_input_tokens"] == sum(r["input_tokens"] for r in runs)
        assert body["total_output_tokens"] == sum(r["output_tokens"] for r in runs)
        async with app.state.resources.sessionmaker() as session:
            recorded = (
                await session.execute(
                    select(
                        func.sum(UsageRecord.input_tokens),
                        func.sum(UsageRecord.output_tokens),
                        func.count(),
                    )
                )
            ).one()
        assert recorded == (body["total_input_tokens"], body["total_output_tokens"], 4)

    async def test_unknown_context_window_runs_with_status_unknown(
        self, app, client, caller
    ) -> None:
        """BUG-008: without a usable window the run works and the status is unknown.

        The catalog refuses a zero window (CHECK constraint, tests/llm); a missing one is
        what reaches the run path, through the same guarded ``context_usage``.
        """
        await set_catalog(app, "offline", context_window=None)
        conversation = await new_conversation(client, caller)
        events = await run_streamed(client, caller, conversation, "hello")
        assert events[-1][1] == "run.completed"
        body = (
            await client.get(f"/v1/conversations/{conversation}", headers=caller.headers())
        ).json()
        assert body["context_status"] == "unknown"
        assert body["context_usage_percent"] is None
        assert body["estimated_context_tokens"] > 0

    async def test_input_over_the_window_is_413_and_stores_nothing(
        self, app, client, caller
    ) -> None:
        await set_catalog(app, "offline", context_window=100)
        conversation = await new_conversation(client, caller)
        response = await start(client, caller, conversation, "word " * 200, **SSE)
        assert response.status_code == 413
        assert response.json()["code"] == "context_window_exceeded"
        assert await messages(client, caller, conversation) == []
        runs = await client.get(f"/v1/conversations/{conversation}/runs", headers=caller.headers())
        assert runs.json()["data"] == []


class TestResume:
    async def test_last_event_id_replays_exactly_the_missed_events(self, client, caller) -> None:
        conversation = await new_conversation(client, caller)
        events = await run_streamed(client, caller, conversation, "list files")
        run_id = events[0][2]["run_id"]
        url = f"/v1/conversations/{conversation}/runs/{run_id}/events"
        for last in (0, 1, 4, len(events) - 1):
            by_header = await client.get(
                url, headers=caller.headers(**{"Last-Event-ID": str(last)})
            )
            assert parse_sse(by_header.text) == events[last:]
            by_query = await client.get(f"{url}?after={last}", headers=caller.headers())
            assert parse_sse(by_query.text) == events[last:]

    async def test_reconnecting_mid_run_gets_the_rest_then_the_terminal_event(
        self, app, client, caller
    ) -> None:
        conversation = await new_conversation(client, caller)
        await use_model(app, ScriptedModel([f"w{i} " for i in range(30)], delay=0.02))
        run = (await start(client, caller, conversation, "hi")).json()
        url = f"/v1/conversations/{conversation}/runs/{run['id']}/events"
        async with serve_started(app) as base, httpx.AsyncClient(base_url=base) as live:
            async with live.stream("GET", url, headers=caller.headers()) as response:
                buffer = ""
                async for chunk in response.aiter_text():
                    buffer += chunk
                    if buffer.count("\n\n") >= 5:
                        break
            seen = parse_sse(buffer[: buffer.rindex("\n\n")])
            assert seen[-1][1] not in TERMINAL
            rest = await live.get(
                url, headers=caller.headers(**{"Last-Event-ID": str(seen[-1][0])})
            )
        tail = parse_sse(rest.text)
        combined = seen + tail
        assert [i for i, _, _ in combined] == list(range(1, len(combined) + 1))
        assert sum(1 for _, n, _ in combined if n in TERMINAL) == 1
        assert combined[-1][1] == "run.completed"
        replay = parse_sse((await client.get(url, headers=caller.headers())).text)
        assert replay == combined

    async def test_a_follower_behind_what_memory_keeps_gets_the_rest_from_the_shared_log(
        self, app, client, caller
    ) -> None:
        """A running run keeps only its latest events in memory (bounded per run)."""
        conversation = await new_conversation(client, caller)
        await use_model(app, ScriptedModel([f"w{i} " for i in range(1000)], delay=0.002))
        run = (await start(client, caller, conversation, "hi")).json()
        local = app.state.resources.runs.local[uuid.UUID(run["id"])]
        async with asyncio.timeout(10):
            while local.events.dropped < 100:
                await asyncio.sleep(0.01)
        response = await client.get(
            f"/v1/conversations/{conversation}/runs/{run['id']}/events", headers=caller.headers()
        )
        events = parse_sse(response.text)
        assert [i for i, _, _ in events] == list(range(1, len(events) + 1))
        assert sum(1 for _, n, _ in events if n == "message.delta") == 1000
        assert events[-1][1] == "run.completed"
