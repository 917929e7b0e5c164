"""Plain chats: streaming, failure, titles, cost and usage (BUG-005, 015, 016, 022)."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from atelier.conversations.models import Message as ChatMessage
from atelier.llm.base import ChatModel, UsageReport
from atelier.llm.fakes import GatedTitleModel, ScriptedModel
from atelier.llm.models import CatalogModel
from atelier.usage.models import UsageRecord
from tests.conftest import Caller

SSE = {"Accept": "text/event-stream"}


def parse_sse(text: str) -> list[tuple[int, str, dict]]:
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if not line.startswith(":")
        )
        events.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
    return events


async def use_model(app: FastAPI, model: ScriptedModel, **prices: object) -> None:
    """Route the offline catalog entry to ``model`` (and set its prices)."""
    app.state.resources.models.providers["offline"] = model
    if prices:
        await set_catalog(app, "offline", **prices)


async def set_catalog(app: FastAPI, model_id: str, **values: object) -> None:
    """Change a catalog entry, as an operator's catalog file would at the next start."""
    async with app.state.resources.sessionmaker() as session:
        row = await session.get(CatalogModel, model_id)
        for name, value in values.items():
            setattr(row, name, value)
        await session.commit()
        await app.state.resources.catalog.reload(session)


async def use_remote_model(
    app: FastAPI, model: ChatModel, provider_model_id: str = "remote-1"
) -> str:
    """A catalog model served by ``model`` as its (remote) provider; returns its id. Titles
    for it come from the real title generator asking that provider."""
    app.state.resources.models.providers[model.provider] = model
    async with app.state.resources.sessionmaker() as session:
        session.add(
            CatalogModel(
                id="remote",
                provider=model.provider,
                provider_model_id=provider_model_id,
                display_name="A remote model",
                context_window=100_000,
            )
        )
        await session.commit()
        await app.state.resources.catalog.reload(session)
    return "remote"


async def title_of(client: httpx.AsyncClient, caller: Caller, path: str) -> str | None:
    """The resource's title once it has one (titles land in the background)."""
    async with asyncio.timeout(10):
        while (title := (await client.get(path, headers=caller.headers())).json()["title"]) is None:
            await asyncio.sleep(0.02)
    return str(title)


@pytest.fixture
async def chat(client: httpx.AsyncClient, caller: Caller) -> str:
    return str((await client.post("/v1/chats", json={}, headers=caller.headers())).json()["id"])


class TestStreaming:
    async def test_streamed_reply_with_usage_title_and_done(self, client, caller, chat) -> None:
        response = await client.post(
            f"/v1/chats/{chat}/messages",
            json={"content": "Plan a trip to Kyoto"},
            headers=caller.headers(**SSE),
        )
        assert response.status_code == 200
        events = parse_sse(response.text)
        names = [name for _, name, _ in events]
        assert [n for n in names if n != "message.delta"] == [
            "message.completed",
            "usage",
            "title.updated",
            "done",
        ]
        assert [i for i, _, _ in events] == list(range(1, len(events) + 1))
        deltas = "".join(data["text"] for _, name, data in events if name == "message.delta")
        completed = next(data for _, name, data in events if name == "message.completed")
        assert completed["content"] == deltas
        assert completed["seq"] == 2
        messages = (
            await client.get(f"/v1/chats/{chat}/messages", headers=caller.headers())
        ).json()["data"]
        assert [(m["seq"], m["role"]) for m in messages] == [(1, "user"), (2, "assistant")]
        assert (await client.get(f"/v1/chats/{chat}", headers=caller.headers())).json()[
            "title"
        ] == "Plan a trip to Kyoto"

    async def test_without_sse_the_reply_is_returned(self, client, caller, chat) -> None:
        response = await client.post(
            f"/v1/chats/{chat}/messages", json={"content": "hi"}, headers=caller.headers()
        )
        assert response.status_code == 200
        assert response.json()["role"] == "assistant"
        assert response.json()["seq"] == 2


class TestErrorsBeforeTheStream:
    """BUG-022: what can fail before the stream starts is a plain HTTP error."""

    @pytest.mark.parametrize(
        ("body", "status", "code"),
        [
            ({"content": ""}, 422, "validation_error"),
            ({"content": "x", "model_id": "no-such-model"}, 400, "unknown_model"),
            ({"content": "x", "extra": 1}, 422, "validation_error"),
        ],
    )
    async def test_bad_requests(self, client, caller, chat, body, status, code) -> None:
        response = await client.post(
            f"/v1/chats/{chat}/messages", json=body, headers=caller.headers(**SSE)
        )
        assert response.status_code == status
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == code

    async def test_unknown_chat_is_404_before_any_stream(self, client, caller) -> None:
        import uuid

        response = await client.post(
            f"/v1/chats/{uuid.uuid4()}/messages",
            json={"content": "x"},
            headers=caller.headers(**SSE),
        )
        assert response.status_code == 404


class TestContextWindow:
    async def test_a_chat_that_no_longer_fits_its_model_is_413_before_any_stream(
        self, app, client, caller, chat
    ) -> None:
        """The same guard as runs (BUG-008): the whole history goes to the model each turn."""
        await set_catalog(app, "offline", context_window=300)
        first = await client.post(
            f"/v1/chats/{chat}/messages", json={"content": "word " * 100}, headers=caller.headers()
        )
        assert first.status_code == 200
        refused = await client.post(
            f"/v1/chats/{chat}/messages",
            json={"content": "word " * 200},
            headers=caller.headers(**SSE),
        )
        assert refused.status_code == 413
        assert refused.json()["code"] == "context_window_exceeded"
        stored = (await client.get(f"/v1/chats/{chat}/messages", headers=caller.headers())).json()
        assert len(stored["data"]) == 2  # nothing of the refused turn was kept


class TestOutputLimit:
    async def test_a_reply_cut_at_the_model_output_limit_is_kept_as_incomplete(
        self, app, client, caller, chat
    ) -> None:
        await set_catalog(app, "offline", max_output_tokens=5)
        response = await client.post(
            f"/v1/chats/{chat}/messages", json={"content": "tell me all"}, headers=caller.headers()
        )
        assert response.status_code == 200
        assert (response.json()["incomplete"], response.json()["stop_reason"]) == (
            True,
            "max_tokens",
        )
        stored = (await client.get(f"/v1/chats/{chat}/messages", headers=caller.headers())).json()
        assert stored["data"][-1]["stop_reason"] == "max_tokens"


class TestModelFailure:
    async def test_user_message_and_partial_reply_are_kept(self, app, client, caller, chat) -> None:
        """BUG-015 and BUG-022: one `error` event after the partial reply, then EOF."""
        await use_model(
            app,
            ScriptedModel(
                ["Once", " upon", " a", " time"], fail_after=2, usage=UsageReport(100, 2)
            ),
        )
        response = await client.post(
            f"/v1/chats/{chat}/messages",
            json={"content": "tell a story"},
            headers=caller.headers(**SSE),
        )
        events = parse_sse(response.text)
        names = [name for _, name, _ in events]
        assert names == ["message.delta", "message.delta", "message.completed", "usage", "error"]
        assert events[-1][2]["code"] == "model_error"
        assert events[2][2]["incomplete"] is True
        async with app.state.resources.sessionmaker() as session:
            stored = list(await session.scalars(select(ChatMessage).order_by(ChatMessage.seq)))
            usage = list(await session.scalars(select(UsageRecord)))
        assert [(m.role, m.content, m.incomplete) for m in stored] == [
            ("user", "tell a story", False),
            ("assistant", "Once upon", True),
        ]
        assert [(u.input_tokens, u.output_tokens) for u in usage] == [(100, 2)]

    async def test_non_streaming_failure_is_502_with_the_partial(
        self, app, client, caller, chat
    ) -> None:
        await use_model(app, ScriptedModel(["a", "b"], fail_after=1))
        response = await client.post(
            f"/v1/chats/{chat}/messages", json={"content": "x"}, headers=caller.headers()
        )
        assert response.status_code == 502
        assert response.json()["message"]["content"] == "a"
        assert response.json()["message"]["incomplete"] is True

    async def test_no_reported_usage_is_unknown_not_zero(self, app, client, caller, chat) -> None:
        await use_model(app, ScriptedModel(["fine"], usage=None))
        await client.post(
            f"/v1/chats/{chat}/messages", json={"content": "x"}, headers=caller.headers()
        )
        async with app.state.resources.sessionmaker() as session:
            (record,) = list(await session.scalars(select(UsageRecord)))
        assert record.input_tokens is None
        assert record.cost is None


class TestTitles:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, object]:
        return {"title_wait_seconds": 0.2}

    async def test_a_slow_title_model_never_delays_the_first_delta(
        self, app, client, caller
    ) -> None:
        """BUG-005: the reply streams and ends while its title is still being made (by the
        real title generator, asking the model); the title lands afterwards."""
        model = GatedTitleModel(["fast", " reply"])
        chat = (
            await client.post(
                "/v1/chats",
                json={"model_id": await use_remote_model(app, model)},
                headers=caller.headers(),
            )
        ).json()["id"]
        response = await client.post(
            f"/v1/chats/{chat}/messages", json={"content": "hello"}, headers=caller.headers(**SSE)
        )
        events = [name for _, name, _ in parse_sse(response.text)]
        assert events[0] == "message.delta"
        assert events[-1] == "done"
        assert "title.updated" not in events
        assert model.title_requested.is_set()
        assert not model.release.is_set()
        model.release.set()
        assert await title_of(client, caller, f"/v1/chats/{chat}") == "A gated title"


class TestCost:
    async def test_known_token_counts_give_the_exact_cost(self, app, client, caller, chat) -> None:
        """BUG-016: prices per 1M tokens, Decimal, same function on every path."""
        await use_model(
            app,
            ScriptedModel(
                ["ok"],
                usage=UsageReport(input_tokens=1234, output_tokens=567, cache_read_tokens=1000),
            ),
            input_price_per_mtok=Decimal("3"),
            output_price_per_mtok=Decimal("15"),
            cache_read_price_per_mtok=Decimal("0.30"),
        )
        response = await client.post(
            f"/v1/chats/{chat}/messages", json={"content": "x"}, headers=caller.headers(**SSE)
        )
        usage = next(data for _, name, data in parse_sse(response.text) if name == "usage")
        # 1234*3/1e6 + 567*15/1e6 + 1000*0.30/1e6 = 0.003702 + 0.008505 + 0.0003 = 0.012507
        assert usage["cost"] == "0.012507"
        assert (await client.get(f"/v1/chats/{chat}", headers=caller.headers())).json()[
            "total_cost"
        ] == "0.012507"
        report = (
            await client.get("/v1/usage", params={"group_by": "model"}, headers=caller.headers())
        ).json()
        assert report["data"] == [
            {
                "key": "offline",
                "input_tokens": 1234,
                "output_tokens": 567,
                "cache_read_tokens": 1000,
                "cache_write_tokens": 0,
                "cost": "0.012507",
                "requests": 1,
                "unpriced_requests": 0,
                "split": None,  # no split_by
            }
        ]


class TestTotals:
    async def test_a_chats_totals_after_several_turns_are_the_sum(
        self, app, client, caller, chat
    ) -> None:
        """BUG-009 for chats: each turn adds to the totals, in SQL; none overwrites them."""
        await use_model(
            app,
            ScriptedModel(["ok"], usage=UsageReport(10, 5)),
            input_price_per_mtok=Decimal("1"),
            output_price_per_mtok=Decimal("2"),
        )
        for _ in range(3):
            turn = await client.post(
                f"/v1/chats/{chat}/messages", json={"content": "x"}, headers=caller.headers()
            )
            assert turn.status_code == 200
        body = (await client.get(f"/v1/chats/{chat}", headers=caller.headers())).json()
        assert (body["total_input_tokens"], body["total_output_tokens"]) == (30, 15)
        assert body["total_cost"] == "0.000060"


class TestUsageReport:
    async def test_groups_sum_to_the_records(self, app, client, caller, chat) -> None:
        await use_model(
            app, ScriptedModel(["ok"], usage=UsageReport(10, 5)), input_price_per_mtok=Decimal("1")
        )
        bob_chat = (await client.post("/v1/chats", json={}, headers=caller.headers("bob"))).json()[
            "id"
        ]
        for _ in range(3):
            await client.post(
                f"/v1/chats/{chat}/messages", json={"content": "x"}, headers=caller.headers()
            )
        await client.post(
            f"/v1/chats/{bob_chat}/messages", json={"content": "x"}, headers=caller.headers("bob")
        )
        by_user = (
            await client.get("/v1/usage", params={"group_by": "user"}, headers=caller.headers())
        ).json()
        assert [(r["key"], r["input_tokens"], r["requests"]) for r in by_user["data"]] == [
            ("alice", 30, 3),
            ("bob", 10, 1),
        ]
        by_day = (
            await client.get("/v1/usage", params={"group_by": "day"}, headers=caller.headers())
        ).json()["data"]
        assert sum(r["requests"] for r in by_day) == 4
        assert sum(Decimal(r["cost"]) for r in by_day) == Decimal("0.000040")
        # Per day, split by user: each day's bar in a chart, stacked by user.
        split = (
            await client.get(
                "/v1/usage",
                params={"group_by": "day", "split_by": "user"},
                headers=caller.headers(),
            )
        ).json()["data"]
        assert {(r["split"], r["requests"]) for r in split} == {("alice", 3), ("bob", 1)}
        assert {r["key"] for r in split} == {r["key"] for r in by_day}
        same = await client.get(
            "/v1/usage", params={"group_by": "user", "split_by": "user"}, headers=caller.headers()
        )
        assert same.status_code == 400
        empty = await client.get(
            "/v1/usage", params={"from": "2099-01-01T00:00:00Z"}, headers=caller.headers()
        )
        assert empty.json()["data"] == []
        naive = await client.get(
            "/v1/usage", params={"from": "2026-01-01T00:00:00"}, headers=caller.headers()
        )
        assert naive.status_code == 400
        # An offset is honoured: 2099-01-01T09:00+09:00 is 2099-01-01T00:00Z, still after all.
        tokyo = await client.get(
            "/v1/usage", params={"from": "2099-01-01T09:00:00+09:00"}, headers=caller.headers()
        )
        assert tokyo.json()["data"] == []
        far_east = await client.get(
            "/v1/usage", params={"from": "2000-01-01T00:00:00+09:00"}, headers=caller.headers()
        )
        assert sum(r["requests"] for r in far_east.json()["data"]) == 4
        # Found by the fuzzer: a valid string with no representable UTC instant.
        beyond = await client.get(
            "/v1/usage", params={"to": "0001-01-01T00:00:00+20:00"}, headers=caller.headers()
        )
        assert (beyond.status_code, beyond.json()["code"]) == (400, "invalid_time")

    async def test_report_is_tenant_scoped(self, app, client, caller, chat) -> None:
        from tests.conftest import make_caller

        await client.post(
            f"/v1/chats/{chat}/messages", json={"content": "x"}, headers=caller.headers()
        )
        other = await make_caller(app)
        assert (await client.get("/v1/usage", headers=other.headers())).json()["data"] == []


class TestDisconnect:
    async def test_a_client_that_leaves_does_not_lose_the_reply(self, unstarted_app) -> None:
        from tests.conftest import make_caller
        from tests.live import serve

        async with serve(unstarted_app) as base_url, httpx.AsyncClient(base_url=base_url) as http:
            caller = await make_caller(unstarted_app)
            model = ScriptedModel([f"w{n} " for n in range(20)], delay=0.02)
            await use_model(unstarted_app, model)
            chat = (await http.post("/v1/chats", json={}, headers=caller.headers())).json()["id"]
            async with http.stream(
                "POST",
                f"/v1/chats/{chat}/messages",
                json={"content": "x"},
                headers=caller.headers(**SSE),
            ) as response:
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        break  # a real socket, closed after the first event
            assert not model.closed.is_set(), "the model call should outlive the client"
            for _ in range(100):
                messages = (
                    await http.get(f"/v1/chats/{chat}/messages", headers=caller.headers())
                ).json()["data"]
                if len(messages) == 2:
                    break
                await asyncio.sleep(0.05)
        assert messages[1]["content"] == "".join(f"w{n} " for n in range(20))
        assert messages[1]["incomplete"] is False


class TestChatCrud:
    async def test_crud_and_isolation(self, app, client, caller) -> None:
        from tests.conftest import make_caller

        created = await client.post("/v1/chats", json={"title": "t"}, headers=caller.headers())
        assert created.status_code == 201
        chat_id = created.json()["id"]
        assert (
            await client.patch(
                f"/v1/chats/{chat_id}", json={"title": "u"}, headers=caller.headers()
            )
        ).json()["title"] == "u"
        assert [
            c["id"]
            for c in (await client.get("/v1/chats", headers=caller.headers())).json()["data"]
        ] == [chat_id]
        stranger = await make_caller(app)
        for headers in (caller.headers("bob"), stranger.headers()):
            assert (await client.get(f"/v1/chats/{chat_id}", headers=headers)).status_code == 404
            assert (
                await client.post(
                    f"/v1/chats/{chat_id}/messages", json={"content": "x"}, headers=headers
                )
            ).status_code == 404
            assert (
                await client.get(f"/v1/chats/{chat_id}/messages", headers=headers)
            ).status_code == 404
            assert (await client.delete(f"/v1/chats/{chat_id}", headers=headers)).status_code == 404
        assert (
            await client.delete(f"/v1/chats/{chat_id}", headers=caller.headers())
        ).status_code == 204
        assert (
            await client.get(f"/v1/chats/{chat_id}", headers=caller.headers())
        ).status_code == 404


class TestModelsEndpoint:
    async def test_lists_configured_models_with_decimal_prices(self, client, caller) -> None:
        response = await client.get("/v1/models", headers=caller.headers())
        assert response.status_code == 200
        (offline,) = response.json()["data"]  # no other provider is configured in tests
        assert offline == {
            "id": "offline",
            "provider": "offline",
            "display_name": "Offline (built in, no network)",
            "context_window": 32768,
            "max_output_tokens": 4096,
            "input_price_per_mtok": "0.000000",
            "output_price_per_mtok": "0.000000",
            "currency": "USD",
        }


class TestChatTurnsAreRuns:
    """A chat turn runs on the run engine: it can be resumed and cancelled from anywhere."""

    @pytest.fixture
    def settings_overrides(self) -> dict[str, object]:
        return {"offline_model_delay_seconds": 0.01}

    async def test_a_reply_stream_resumes_after_the_last_event_seen(self, app, caller) -> None:
        from httpx_sse import aconnect_sse

        from tests.live import serve_started

        async with serve_started(app) as base_url, httpx.AsyncClient(base_url=base_url) as http:
            chat = (await http.post("/v1/chats", json={}, headers=caller.headers())).json()["id"]
            first = []
            async with aconnect_sse(
                http, "POST", f"/v1/chats/{chat}/messages",
                json={"content": "word " * 100}, headers=caller.headers(),
            ) as source:  # fmt: skip
                location = source.response.headers["location"]
                async for event in source.aiter_sse():
                    first.append(event)
                    if len(first) == 5:
                        break  # the client goes away mid-reply
            assert location.startswith(f"/v1/chats/{chat}/runs/")
            async with aconnect_sse(
                http, "GET", location, headers=caller.headers(**{"Last-Event-ID": first[-1].id})
            ) as source:
                rest = [event async for event in source.aiter_sse()]
            events = first + rest
            assert [int(e.id) for e in events] == list(range(1, len(events) + 1))
            assert events[-1].event == "done"
            text = "".join(e.json()["text"] for e in events if e.event == "message.delta")
            stored = (await http.get(f"/v1/chats/{chat}/messages", headers=caller.headers())).json()
        assert stored["data"][-1]["content"] == text

    @pytest.mark.parametrize("backend", ["services"])
    async def test_a_reply_is_cancelled_from_another_process(
        self, app, client, caller, settings, tmp_path
    ) -> None:
        """Two processes of one deployment: the turn runs on one, the cancel reaches it from
        the other, and the stream ends with a `cancelled` error."""
        from atelier.app import create_app

        chat = (await client.post("/v1/chats", json={}, headers=caller.headers())).json()["id"]
        await use_model(app, ScriptedModel([f"w{i} " for i in range(500)], delay=0.01))
        other = create_app(settings.model_copy(update={"data_dir": tmp_path / "other"}))
        async with other.router.lifespan_context(other):
            transport = httpx.ASGITransport(app=other)
            async with httpx.AsyncClient(transport=transport, base_url="http://other") as there:
                turn = asyncio.create_task(
                    client.post(
                        f"/v1/chats/{chat}/messages",
                        json={"content": "talk"},
                        headers=caller.headers(**SSE),
                    )
                )
                local = app.state.resources.runs.local
                async with asyncio.timeout(15):  # until its model has started talking
                    while not local or not next(iter(local.values())).accepted.done():
                        await asyncio.sleep(0.01)
                (run_id,) = list(local)
                cancelled = await there.post(
                    f"/v1/chats/{chat}/runs/{run_id}/cancel", headers=caller.headers()
                )
                assert cancelled.status_code == 202
                events = parse_sse((await asyncio.wait_for(turn, 15)).text)
        assert events[-1][1] == "error"
        assert events[-1][2]["code"] == "cancelled"
        reply = (await client.get(f"/v1/chats/{chat}/messages", headers=caller.headers())).json()
        assert reply["data"][-1]["incomplete"] is True
