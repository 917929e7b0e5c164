"""Budgets: per tenant, key, end user and agent; refused before a run (402) when spent;
each model call holds its worst case and settles to its cost; 20 runs racing on a nearly
spent budget overspend it by at most one call; thresholds told once; an exact ledger."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from atelier.budgets.enforcement import period_start
from atelier.budgets.models import BudgetPeriod, BudgetReservation
from atelier.conversations.models import Message
from atelier.db.base import utcnow
from atelier.runs.models import Run
from atelier.usage.models import UsageRecord
from tests.chats.test_chats import set_catalog
from tests.conftest import Caller, make_caller
from tests.live import serve_started
from tests.runs.helpers import SSE, new_conversation, parse_sse, run_streamed, start, wait_ended
from tests.webhooks.receiver import receiving

MILLI = {"input_price_per_mtok": Decimal(1000), "output_price_per_mtok": Decimal(1000)}


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {
        "webhook_allow_private": True,
        "webhook_poll_seconds": 0.05,
        "offline_model_delay_seconds": 0.002,
    }


@pytest.fixture
async def priced(app: FastAPI) -> None:
    """The offline model at 0.001 per token, in and out."""
    await set_catalog(app, "offline", **MILLI)


async def budget(client: httpx.AsyncClient, caller: Caller, **body: object) -> dict:
    response = await client.post("/v1/budgets", json=body, headers=caller.headers(None))
    assert response.status_code == 201, response.text
    return dict(response.json())


async def shown(client: httpx.AsyncClient, caller: Caller, budget_id: str) -> dict:
    response = await client.get(f"/v1/budgets/{budget_id}", headers=caller.headers(None))
    assert response.status_code == 200
    return dict(response.json())


async def spent_on(app: FastAPI) -> Decimal:
    async with app.state.resources.sessionmaker() as session:
        total = await session.scalar(select(func.coalesce(func.sum(UsageRecord.cost), 0)))
    return Decimal(total)


class TestEndpoints:
    async def test_create_show_change_and_delete(self, client, caller) -> None:
        created = await budget(
            client, caller, scope="tenant", period="month", limit="12.50", thresholds=[0.8, 0.5]
        )
        assert (created["limit"], created["currency"]) == ("12.500000", "USD")
        assert created["thresholds"] == ["0.5", "0.8"]
        assert (created["spent"], created["remaining"]) == ("0.000000", "12.500000")
        assert created["period_start"].startswith(utcnow().strftime("%Y-%m-01T00:00:00"))
        path = f"/v1/budgets/{created['id']}"
        changed = await client.patch(path, json={"limit": "20"}, headers=caller.headers(None))
        assert changed.json()["limit"] == "20.000000"
        listed = await client.get("/v1/budgets", headers=caller.headers(None))
        assert [b["id"] for b in listed.json()["data"]] == [created["id"]]
        assert (await client.delete(path, headers=caller.headers(None))).status_code == 204
        assert (await client.get(path, headers=caller.headers(None))).status_code == 404

    @pytest.mark.parametrize(
        "body",
        [
            {"scope": "tenant", "subject": "x", "period": "day", "limit": "1"},
            {"scope": "user", "period": "day", "limit": "1"},
            {"scope": "api_key", "subject": str(uuid.uuid4()), "period": "day", "limit": "1"},
            {"scope": "agent", "subject": "not-a-uuid", "period": "day", "limit": "1"},
            {"scope": "tenant", "period": "week", "limit": "1"},
            {"scope": "tenant", "period": "day", "limit": "-1"},
            {"scope": "tenant", "period": "day", "limit": "1", "thresholds": [1.5]},
            {"scope": "tenant", "period": "day", "limit": "1", "currency": "usd"},
            {"scope": "tenant", "period": "day", "limit": "1e400"},
        ],
    )
    async def test_bad_budgets_are_refused_and_write_nothing(self, client, caller, body) -> None:
        response = await client.post("/v1/budgets", json=body, headers=caller.headers(None))
        assert response.status_code == 422, response.text
        listed = await client.get("/v1/budgets", headers=caller.headers(None))
        assert listed.json()["data"] == []

    async def test_another_tenants_key_or_agent_is_no_subject(self, app, client, caller) -> None:
        other = await make_caller(app)
        agent = (
            await client.post("/v1/agents", json={"name": "theirs"}, headers=other.headers())
        ).json()["id"]
        for scope, subject in (("agent", agent), ("api_key", str(other.tenant_id))):
            response = await client.post(
                "/v1/budgets",
                json={"scope": scope, "subject": subject, "period": "day", "limit": "1"},
                headers=caller.headers(None),
            )
            assert response.json()["code"] == "invalid_budget"

    async def test_another_tenant_sees_none_of_them(self, app, client, caller) -> None:
        created = await budget(client, caller, scope="tenant", period="day", limit="1")
        other = await make_caller(app)
        path = f"/v1/budgets/{created['id']}"
        for method in ("GET", "PATCH", "DELETE"):
            response = await client.request(
                method, path, json={} if method == "PATCH" else None, headers=other.headers(None)
            )
            assert response.status_code == 404
        assert (await client.get("/v1/budgets", headers=other.headers(None))).json()["data"] == []


class TestBeforeARun:
    async def test_a_spent_budget_refuses_runs_and_chat_turns_before_anything_is_written(
        self, app, caller, priced
    ) -> None:
        """Over a real socket: the refusal is plain HTTP, also when a stream was asked for."""
        async with serve_started(app) as url, httpx.AsyncClient(base_url=url) as client:
            conversation = await new_conversation(client, caller)
            chat = (await client.post("/v1/chats", json={}, headers=caller.headers())).json()
            spent = await budget(
                client, caller, scope="user", subject="alice", period="day", limit="0"
            )
            for path, body in (
                (f"/v1/conversations/{conversation}/runs", {"input": "hello"}),
                (f"/v1/chats/{chat['id']}/messages", {"content": "hello"}),
            ):
                for accept in ({}, SSE):
                    response = await client.post(path, json=body, headers=caller.headers(**accept))
                    assert response.status_code == 402, response.text
                    assert response.headers["content-type"] == "application/problem+json"
                    assert response.json()["code"] == "budget_exceeded"
                    assert response.json()["budget_id"] == spent["id"]
                    # Said as a person knows the budget, not by its id.
                    assert response.json()["detail"] == (
                        "the user budget of alice (0.00 USD a day) is spent for this day"
                    )
            async with app.state.resources.sessionmaker() as session:
                assert await session.scalar(select(func.count()).select_from(Run)) == 0
                assert await session.scalar(select(func.count()).select_from(Message)) == 0
            # Another user of the tenant is not bound by alice's budget.
            bobs = await client.post("/v1/conversations", json={}, headers=caller.headers("bob"))
            other = await start(client, caller, bobs.json()["id"], "hello", user="bob")
            assert other.status_code == 202, other.text

    async def test_a_new_budget_starts_with_what_was_spent_in_its_period(
        self, app, client, caller, priced
    ) -> None:
        conversation = await new_conversation(client, caller)
        await run_streamed(client, caller, conversation, "hello there")
        cost = await spent_on(app)
        assert cost > 0
        created = await budget(client, caller, scope="tenant", period="day", limit="100")
        assert Decimal(created["spent"]) == cost
        limited = await budget(client, caller, scope="tenant", period="total", limit=str(cost))
        refused = await start(client, caller, conversation, "again")
        assert refused.status_code == 402, refused.text
        assert (refused.status_code, refused.json()["budget_id"]) == (402, limited["id"])

    async def test_each_scope_binds_only_its_own(self, app, client, caller, priced) -> None:
        agent = (
            await client.post("/v1/agents", json={"name": "helper"}, headers=caller.headers())
        ).json()["id"]
        other_key = await make_caller(app)  # a key of another tenant: never binds alice's runs
        await budget(client, other_key, scope="tenant", period="day", limit="0")
        await budget(client, caller, scope="user", subject="bob", period="day", limit="0")
        await budget(client, caller, scope="agent", subject=agent, period="day", limit="0")
        conversation = await new_conversation(client, caller)  # the default agent
        assert (await start(client, caller, conversation, "hello")).status_code == 202
        helper = await new_conversation(client, caller, agent_id=agent)
        assert (await start(client, caller, helper, "hello")).status_code == 402
        key_budget = await budget(
            client,
            caller,
            scope="api_key",
            subject=str(await key_id(app, caller)),
            period="day",
            limit="0",
        )
        fresh = await new_conversation(client, caller)
        refused = await start(client, caller, fresh, "hello")
        assert refused.json()["budget_id"] == key_budget["id"]


async def key_id(app: FastAPI, caller: Caller) -> uuid.UUID:
    from atelier.tenants.models import ApiKey

    async with app.state.resources.sessionmaker() as session:
        return await session.scalar(select(ApiKey.id).where(ApiKey.tenant_id == caller.tenant_id))


class TestDuringARun:
    async def test_a_run_stops_when_its_budget_is_spent_with_its_work_kept(
        self, app, client, caller, priced
    ) -> None:
        conversation = await new_conversation(client, caller)
        created = await budget(client, caller, scope="tenant", period="day", limit="0.001")
        plan = "write a.txt: one\nwrite b.txt: two\nwrite c.txt: three"
        events = await run_streamed(client, caller, conversation, plan)
        names = [name for _, name, _ in events]
        assert names[-1] == "run.failed"
        assert events[-1][2]["error"]["code"] == "budget_exceeded"
        assert names.count("usage") == 1  # one call was made, the next one refused
        assert "file.changed" in names  # what it did before is kept
        after = await shown(client, caller, created["id"])
        assert Decimal(after["spent"]) == await spent_on(app)
        assert (after["reserved"], after["remaining"]) == ("0.000000", "0.000000")

    async def test_twenty_runs_racing_overspend_by_at_most_one_call(
        self, app, client, caller, priced
    ) -> None:
        # Titled conversations: no title is made (a model call of its own).
        conversation = await new_conversation(client, caller, title="t")
        await run_streamed(client, caller, conversation, "hello")  # one call's cost
        one_call = await spent_on(app)
        # It starts with that call spent: room for 3 more, and a little.
        limit = one_call * 4 + Decimal("0.000500")
        created = await budget(client, caller, scope="tenant", period="day", limit=str(limit))
        conversations = [await new_conversation(client, caller, title="t") for _ in range(20)]
        started = await asyncio.gather(*(start(client, caller, c, "hello") for c in conversations))
        assert all(r.status_code == 202 for r in started)
        ended = await asyncio.gather(
            *(
                wait_ended(client, caller, c, r.json()["id"], timeout=60)
                for c, r in zip(conversations, started, strict=True)
            )
        )
        total = await spent_on(app)
        async with app.state.resources.sessionmaker() as session:
            costs = list(await session.scalars(select(UsageRecord.cost)))
        after = await shown(client, caller, created["id"])
        assert Decimal(after["spent"]) == total  # the ledger and the counter agree
        assert after["reserved"] == "0.000000"  # nothing is left held
        assert total > limit  # the budget was spent...
        assert total <= limit + max(costs)  # ...and overspent by at most one call
        statuses = sorted(run["status"] for run in ended)
        refused = [r for r in ended if r["status"] == "failed"]
        assert statuses.count("completed") >= 2
        assert refused
        assert all(r["error"]["code"] == "budget_exceeded" for r in refused)


class TestThresholds:
    async def test_thresholds_and_the_limit_are_told_once_per_period(
        self, app, client, caller, priced
    ) -> None:
        async with receiving() as receiver:
            hook = await client.post(
                "/v1/webhooks",
                json={"url": receiver.url, "events": ["budget.threshold", "budget.exceeded"]},
                headers=caller.headers(None),
            )
            secret = hook.json()["secret"]
            conversation = await new_conversation(client, caller, title="t")
            await run_streamed(client, caller, conversation, "hello")
            one_call = await spent_on(app)
            created = await budget(
                client,
                caller,
                scope="tenant",
                period="month",
                limit=str(one_call * 3),
                thresholds=[0.5, 0.9],
            )
            for _ in range(4):  # 2/3, then the limit; the last one is refused (402)
                await start(client, caller, conversation, "hello")
                async with asyncio.timeout(20):
                    while (await shown(client, caller, created["id"]))["reserved"] != "0.000000":
                        await asyncio.sleep(0.05)
                await asyncio.sleep(0.1)
            got = await receiver.wait_for(3)
            await asyncio.sleep(0.3)  # a repeated one would have come by now
            payloads = [r.verified(secret) for r in receiver.received]
            told = sorted((p["type"], p["data"].get("threshold")) for p in payloads)
            assert told == [
                ("budget.exceeded", None),
                ("budget.threshold", "0.5"),
                ("budget.threshold", "0.9"),
            ]
            assert len(got) == 3
            assert all(p["data"]["budget_id"] == created["id"] for p in payloads)


class TestLedger:
    async def test_a_call_cut_short_is_recorded_as_an_estimate(
        self, app, client, caller, priced
    ) -> None:
        app.state.resources.settings.offline_model_delay_seconds = 0.05
        conversation = await new_conversation(client, caller)
        run = (await start(client, caller, conversation, " ".join(["word"] * 200))).json()
        async with asyncio.timeout(20):
            while not await _streaming(app, run["id"]):
                await asyncio.sleep(0.02)
        await client.post(
            f"/v1/conversations/{conversation}/runs/{run['id']}/cancel", headers=caller.headers()
        )
        await wait_ended(client, caller, conversation, run["id"])
        async with app.state.resources.sessionmaker() as session:
            (record,) = list(await session.scalars(select(UsageRecord)))
        assert record.estimated is True
        assert record.input_tokens
        assert record.output_tokens
        assert record.cost == (record.input_tokens + record.output_tokens) * Decimal("0.001")
        events = await client.get(
            f"/v1/conversations/{conversation}/runs/{run['id']}/events", headers=caller.headers()
        )
        usage = next(d for _, n, d in parse_sse(events.text) if n == "usage")
        assert usage["estimated"] is True

    async def test_usage_groups_by_key_and_agent(self, app, client, caller, priced) -> None:
        agent = (
            await client.post("/v1/agents", json={"name": "helper"}, headers=caller.headers())
        ).json()["id"]
        conversation = await new_conversation(client, caller, agent_id=agent)
        await run_streamed(client, caller, conversation, "hello")
        total = await spent_on(app)
        for group, expected in (("api_key", str(await key_id(app, caller))), ("agent", agent)):
            report = await client.get(
                "/v1/usage", params={"group_by": group}, headers=caller.headers()
            )
            (row,) = report.json()["data"]
            assert (row["key"], Decimal(row["cost"])) == (expected, total)

    async def test_what_a_dead_run_held_is_released(self, app, client, caller) -> None:
        created = await budget(client, caller, scope="tenant", period="day", limit="5")
        budget_id = uuid.UUID(created["id"])
        start_of_day = period_start("day", utcnow())
        async with app.state.resources.sessionmaker() as session:
            row = await session.get(BudgetPeriod, (budget_id, start_of_day))
            row.reserved = Decimal(3)
            session.add(
                BudgetReservation(
                    run_id=uuid.uuid4(),  # a run that is gone
                    budget_id=budget_id,
                    period_start=start_of_day,
                    amount=Decimal(3),
                )
            )
            await session.commit()
        assert await app.state.resources.runs.upkeep.abandoned_holds() == 1
        assert (await shown(client, caller, created["id"]))["reserved"] == "0.000000"


async def _streaming(app: FastAPI, run_id: str) -> bool:
    run = app.state.resources.runs.local.get(uuid.UUID(run_id))
    return run is not None and run.events.last_id >= 3


async def test_a_spend_that_lands_exactly_on_a_line_tells_it_once(monkeypatch) -> None:
    """Spend landing on a threshold's line (or the limit) crosses it; the next spend, which
    starts on the line, does not cross it again."""
    import uuid
    from datetime import UTC, datetime
    from decimal import Decimal

    from atelier.budgets import enforcement

    told: list[tuple[str, str | None]] = []

    async def record(_session, _tenant, event_type, data, **_):  # type: ignore[no-untyped-def]
        told.append((event_type, data.get("threshold")))

    monkeypatch.setattr(enforcement.outbox, "record", record)
    binding = enforcement.Binding(
        uuid.uuid4(), uuid.uuid4(), "tenant", None, "day", Decimal("1"), "USD", (Decimal("0.5"),)
    )
    start = datetime(2026, 1, 1, tzinfo=UTC)
    steps = [("0", "0.5"), ("0.5", "0.7"), ("0.7", "1"), ("1", "1.2")]
    for before, after in steps:
        await enforcement._crossed(None, binding, start, Decimal(before), Decimal(after))  # type: ignore[arg-type]
    assert told == [("budget.threshold", "0.5"), ("budget.exceeded", None)]


@pytest.mark.parametrize("backend", ["services"])  # row locks: PostgreSQL's
async def test_runs_bound_by_several_budgets_in_any_order_never_deadlock(
    app: FastAPI, client: httpx.AsyncClient, caller: Caller
) -> None:
    """Two runs hold the same two budgets (a tenant's and a user's) given in opposite
    orders, and both reach their holds at the same moment: the counter rows are locked in
    budget order, so one waits for the other instead of each holding what the other
    needs (a deadlock PostgreSQL would break by failing one)."""
    from sqlalchemy import event, select
    from sqlalchemy.util import await_only

    from atelier.budgets import enforcement
    from atelier.budgets.models import Budget
    from atelier.db.base import utcnow

    for scope, subject in (("tenant", None), ("user", "alice")):
        body = {"scope": scope, "period": "total", "limit": "100"}
        await budget(client, caller, **({**body, "subject": subject} if subject else body))
    sessions = app.state.resources.sessionmaker
    async with sessions() as session:
        bindings = tuple(
            enforcement.Binding.of(b)
            for b in await session.scalars(select(Budget).order_by(Budget.id))
        )
        await enforcement._open_periods(
            session, {b.id: enforcement.period_start(b.period, utcnow()) for b in bindings}
        )
        await session.commit()
    # Each session's first write to the counters waits until the other's has arrived.
    together = asyncio.Barrier(2)
    arrived: set[int] = set()

    def meet(conn, _cursor, statement: str, *_args) -> None:  # type: ignore[no-untyped-def]
        if (
            statement.lstrip().upper().startswith("UPDATE BUDGET_PERIODS")
            and id(conn) not in arrived
        ):
            arrived.add(id(conn))
            await_only(asyncio.wait_for(together.wait(), 10))

    engine = app.state.resources.engine.sync_engine
    event.listen(engine, "before_cursor_execute", meet)
    try:

        async def hold(order: tuple[enforcement.Binding, ...]) -> object:
            async with sessions() as session:
                refused = await enforcement.reserve(session, uuid.uuid4(), order, Decimal("1"))
                await session.commit()
                return refused

        refusals = await asyncio.wait_for(
            asyncio.gather(hold(bindings), hold(tuple(reversed(bindings)))), 30
        )
    finally:
        event.remove(engine, "before_cursor_execute", meet)
    assert refusals == [None, None]
