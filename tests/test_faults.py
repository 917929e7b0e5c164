"""Faults of the real services, injected for real: a Redis that stops, an S3 endpoint
that goes away mid-transfer, PostgreSQL connections killed mid-run."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import func, select

from atelier.db import engine as engine_module
from atelier.llm.base import ToolCall, ToolResult
from atelier.llm.fakes import ScriptedModel
from atelier.runs.tools import WorkspaceTools
from atelier.workspace.models import ConversationFile
from tests.chats.test_chats import use_model
from tests.conftest import Caller, asyncpg_dsn, make_caller
from tests.faults import RedisServer, TcpProxy
from tests.runs.helpers import (
    messages,
    new_conversation,
    parse_sse,
    start,
    start_blocked,
    use_tools,
    wait_ended,
)
from tests.workspace.helpers import open_multipart_uploads, stored_keys

pytestmark = pytest.mark.parametrize("backend", ["services"])


async def file_rows(app, path: str) -> int:
    async with app.state.resources.sessionmaker() as session:
        return int(
            await session.scalar(
                select(func.count())
                .select_from(ConversationFile)
                .where(ConversationFile.path == path)
            )
            or 0
        )


class TestRedisStops:
    @pytest.fixture
    def settings_overrides(self, redis_server: RedisServer) -> dict[str, object]:
        return {"redis_url": redis_server.url, "run_lease_seconds": 2}

    async def test_runs_in_flight_keep_their_work_new_runs_are_refused_then_it_recovers(
        self, app, client, caller, redis_server
    ) -> None:
        short = await new_conversation(client, caller)
        long = await new_conversation(client, caller)
        await use_model(app, ScriptedModel([f"w{i} " for i in range(100)], delay=0.05))
        long_run = (await start(client, caller, long, "talk")).json()
        streaming = app.state.resources.runs.local[uuid.UUID(long_run["id"])].events
        async with asyncio.timeout(10):  # it has its model before the next one is swapped in
            while streaming.last_id < 3:
                await asyncio.sleep(0.01)
        await use_model(app, ScriptedModel([f"s{i} " for i in range(5)], delay=0.02))
        short_run = (await start(client, caller, short, "talk")).json()
        redis_server.stop()

        # Shorter than the lease: it finishes as if nothing happened.
        assert (await wait_ended(client, caller, short, short_run["id"]))["status"] == "completed"
        assert (await messages(client, caller, short))[-1]["incomplete"] is False
        # Longer: it cannot renew its lock, so it stops -- and keeps what it produced.
        ended = await wait_ended(client, caller, long, long_run["id"], timeout=10)
        assert ended["status"] == "failed"
        assert ended["error"]["code"] == "lease_lost"
        partial = (await messages(client, caller, long))[-1]
        assert partial["incomplete"] is True
        assert partial["content"].startswith("w0 w1 ")

        third = await new_conversation(client, caller)
        refused = await start(client, caller, third, "hello")
        assert refused.status_code == 503
        assert refused.json()["code"] == "coordination_unavailable"
        assert "retry-after" in refused.headers
        assert await messages(client, caller, third) == []
        ready = await client.get("/ready")
        assert ready.status_code == 503
        assert "coordination" in ready.text

        redis_server.start()
        async with asyncio.timeout(15):
            while (accepted := await start(client, caller, third, "hello")).status_code != 202:
                await asyncio.sleep(0.2)
        assert (await wait_ended(client, caller, third, accepted.json()["id"]))["status"] == (
            "completed"
        )
        assert (await client.get("/ready")).status_code == 200


class TestFollowersThroughARedisOutage:
    """A run executes on one process and is streamed from another while Redis goes away
    (and, in one case, comes back empty). The other process's stream still ends with the
    run's terminal event, never gives one id to two events, and sends again from the
    database the stored messages and usage it missed."""

    @pytest.fixture
    def settings_overrides(self, redis_server: RedisServer) -> dict[str, object]:
        return {"redis_url": redis_server.url, "run_lease_seconds": 2}

    @pytest.mark.parametrize("comes_back_empty", [False, True])
    async def test_a_follower_elsewhere_ends_and_never_repeats_an_id(
        self, app, client, caller, settings, redis_server, tmp_path, comes_back_empty
    ) -> None:
        import httpx

        from atelier.app import create_app

        conversation = await new_conversation(client, caller)
        await use_model(app, ScriptedModel([f"w{i} " for i in range(300)], delay=0.02))
        run = (await start(client, caller, conversation, "talk")).json()
        url = f"/v1/conversations/{conversation}/runs/{run['id']}/events"
        here = asyncio.create_task(client.get(url, headers=caller.headers()))
        other = create_app(settings.model_copy(update={"data_dir": tmp_path / "other"}))
        async with other.router.lifespan_context(other):
            transport = httpx.ASGITransport(app=other)
            async with httpx.AsyncClient(transport=transport, base_url="http://other") as there:
                elsewhere = asyncio.create_task(there.get(url, headers=caller.headers()))
                log = app.state.resources.runs.local[uuid.UUID(run["id"])].events
                async with asyncio.timeout(10):  # the other process has seen some of it
                    while log.last_id < 30:
                        await asyncio.sleep(0.01)
                await asyncio.sleep(0.2)
                redis_server.stop()
                if comes_back_empty:
                    await asyncio.sleep(0.5)
                    redis_server.start()
                owner = parse_sse((await asyncio.wait_for(here, 60)).text)
                follower = parse_sse((await asyncio.wait_for(elsewhere, 60)).text)
        ids = [number for number, _, _ in follower]
        assert ids == sorted(set(ids)), "an id was repeated or went back"
        assert follower[-1][1] == owner[-1][1] == "run.failed"
        assert follower[-1][2]["error"]["code"] == "lease_lost"
        assert follower[-1][0] == owner[-1][0]  # the terminal event under the run's own id
        by_id = {number: (name, data) for number, name, data in owner}
        for number, name, data in follower:
            assert by_id[number] == (name, data)  # same id, same event
        # What the follower missed of what was stored, it got from the database.
        stored = {n for n, name, _ in owner if name in ("message.completed", "usage")}
        assert stored <= set(ids)


class TestRedisStopsDuringRateLimiting:
    @pytest.fixture
    def settings_overrides(self, redis_server: RedisServer) -> dict[str, object]:
        return {
            "redis_url": redis_server.url,
            "rate_limit_enabled": True,
            "rate_limit_per_minute": 60,
            "rate_limit_burst": 4,
            "rate_limit_expensive_cost": 2,
        }

    async def test_limits_hold_through_the_outage_and_redis_takes_over_again(
        self, app, client, redis_server
    ) -> None:
        async def burst(who: Caller, user: str) -> list[int]:
            return [
                (await client.get("/v1/models", headers=who.headers(user))).status_code
                for _ in range(6)
            ]

        caller = await make_caller(app)
        assert await burst(caller, "before") == [200] * 4 + [429] * 2
        redis_server.stop()
        assert await burst(caller, "during") == [200] * 4 + [429] * 2
        fallbacks = app.state.metrics.rate_limit_fallbacks._value.get()
        assert fallbacks >= 6
        redis_server.start()
        await asyncio.sleep(2.5)  # the limiter retries Redis 2 s after it last failed
        assert await burst(caller, "after") == [200] * 4 + [429] * 2
        assert app.state.metrics.rate_limit_fallbacks._value.get() == fallbacks


@pytest.fixture
async def s3_proxy(moto) -> AsyncIterator[TcpProxy]:
    async with TcpProxy(moto.port) as proxy:
        yield proxy


class TestS3GoesAway:
    @pytest.fixture
    def settings_overrides(self, s3_proxy: TcpProxy) -> dict[str, object]:
        return {"s3_endpoint_url": s3_proxy.url}

    async def test_during_an_upload_503_and_nothing_is_left(
        self, app, client, caller, settings, request, s3_proxy
    ) -> None:
        conversation = await new_conversation(client, caller)

        async def body() -> AsyncIterator[bytes]:
            for index in range(24):
                if index == 12:  # a part is up, another is on its way
                    s3_proxy.cut()
                yield b"x" * (1024 * 1024)

        response = await client.put(
            f"/v1/conversations/{conversation}/files/big.bin",
            content=body(),
            headers=caller.headers(),
        )
        assert response.status_code == 503
        assert response.json()["code"] == "storage_unavailable"
        assert await file_rows(app, "big.bin") == 0
        s3_proxy.restore()
        assert await open_multipart_uploads(settings, request, wait_seconds=15) == []
        assert stored_keys(settings, request) == []

    async def test_during_a_runs_sync_the_run_fails_and_nothing_is_half_recorded(
        self, app, client, caller, settings, request, s3_proxy
    ) -> None:
        conversation, run, tools = await start_blocked(
            app, client, caller, "write notes/a.txt: hello"
        )
        s3_proxy.cut()
        tools.release.set()
        ended = await wait_ended(client, caller, conversation, run["id"], timeout=30)
        assert ended["status"] == "failed"
        assert ended["error"]["code"] == "storage_unavailable"
        assert await file_rows(app, "notes/a.txt") == 0
        s3_proxy.restore()
        assert stored_keys(settings, request) == []
        # The conversation goes on; the next run's workspace matches storage again.
        use_tools(app, WorkspaceTools)
        follow_up = (await start(client, caller, conversation, "list files")).json()
        done = await wait_ended(client, caller, conversation, follow_up["id"])
        assert done["status"] == "completed"
        listing = [m for m in await messages(client, caller, conversation) if m["role"] == "tool"]
        assert listing[-1]["parts"][0]["content"] == "(no files)"


class TestDownloadsWhileS3GoesAway:
    """A download never looks whole when it is not (BUG-023's cousin): an outage before the
    response is a 503; one after it started breaks the transfer off, logged and counted."""

    @pytest.fixture
    def settings_overrides(self, s3_proxy: TcpProxy) -> dict[str, object]:
        return {"s3_endpoint_url": s3_proxy.url}

    async def test_an_outage_before_the_response_is_a_503(
        self, app, client, caller, s3_proxy
    ) -> None:
        conversation = await new_conversation(client, caller)
        base = f"/v1/conversations/{conversation}"
        await client.put(f"{base}/files/a.txt", content=b"seven b", headers=caller.headers())
        s3_proxy.cut()
        for path in ("/files/a.txt", "/workspace.zip"):
            response = await client.get(base + path, headers=caller.headers())
            assert response.status_code == 503, path
            assert response.json()["code"] == "storage_unavailable"

    async def test_an_outage_mid_body_breaks_the_transfer_off(
        self, app, client, caller, s3_proxy, caplog
    ) -> None:
        import httpx

        from tests.live import serve_started

        conversation = await new_conversation(client, caller)
        base = f"/v1/conversations/{conversation}"
        for name in ("big.bin", "second.bin"):
            await client.put(
                f"{base}/files/{name}", content=b"z" * (8 * 1024 * 1024), headers=caller.headers()
            )
        async with serve_started(app) as url, httpx.AsyncClient(base_url=url) as http:
            for path in ("/files/big.bin", "/workspace.zip"):
                s3_proxy.restore()
                received: list[int] = []

                async def download(path: str = path, received: list[int] = received) -> None:
                    async with http.stream("GET", base + path, headers=caller.headers()) as got:
                        assert got.status_code == 200
                        async for chunk in got.aiter_bytes():
                            received.append(len(chunk))
                            s3_proxy.cut()  # after the first bytes

                with pytest.raises(httpx.HTTPError):
                    await download()
                assert 0 < sum(received) < 8 * 1024 * 1024, path
        # What the service did on purpose is one warning each, not an error for an alert.
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
        broken_off = [r for r in caplog.records if "response broken off" in r.getMessage()]
        assert len(broken_off) == 2
        aborted = app.state.metrics.http_requests.labels("GET", _route(app, path), "aborted")
        assert aborted._value.get() == 1  # the zip's; the file's counted under its own route


def _route(app, path: str) -> str:  # type: ignore[no-untyped-def]
    return "/v1/conversations/{conversation_id}" + (
        "/workspace.zip" if path.endswith(".zip") else "/files/{path:path}"
    )


async def test_postgres_connections_killed_mid_run_never_leave_it_running(
    app, client, caller, settings
) -> None:
    conversation, run, tools = await start_blocked(app, client, caller)
    assert await kill_backends(settings) >= 1
    tools.release.set()
    ended = await wait_ended(client, caller, conversation, run["id"], timeout=30)
    assert ended["status"] in ("completed", "failed")
    again = (await start(client, caller, conversation, "hello")).json()
    assert (await wait_ended(client, caller, conversation, again["id"]))["status"] == "completed"


async def test_postgres_connections_killed_between_requests_cost_one_503_at_most(
    client, caller, settings
) -> None:
    # Several pooled connections, all of them then killed while idle.
    await asyncio.gather(*(new_conversation(client, caller) for _ in range(5)))
    assert await kill_backends(settings) >= 1
    answers = [await client.get("/v1/conversations", headers=caller.headers()) for _ in range(5)]
    statuses = [answer.status_code for answer in answers]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(503) <= 1, statuses  # the pool is replaced after the first
    for answer in answers:
        if answer.status_code == 503:
            assert answer.json()["code"] == "database_unavailable"
            assert answer.headers["retry-after"] == "1"
    assert statuses[-1] == 200


async def test_postgres_connections_killed_while_idle_cost_no_error(
    client, caller, settings, monkeypatch
) -> None:
    # Every pooled connection counts as idle: each is pinged, and a dead one replaced.
    monkeypatch.setattr(engine_module, "PING_AFTER_IDLE_SECONDS", 0.0)
    await asyncio.gather(*(new_conversation(client, caller) for _ in range(5)))
    assert await kill_backends(settings) >= 1
    answers = [await client.get("/v1/conversations", headers=caller.headers()) for _ in range(5)]
    assert [answer.status_code for answer in answers] == [200] * 5


async def test_a_busy_pool_is_not_pinged(app, client, caller, monkeypatch) -> None:
    dialect = app.state.resources.engine.sync_engine.dialect
    pings = []
    real_ping = dialect.do_ping
    monkeypatch.setattr(dialect, "do_ping", lambda c: pings.append(c) or real_ping(c))
    for _ in range(5):
        assert (await client.get("/v1/conversations", headers=caller.headers())).status_code == 200
    assert pings == []  # each connection came back moments ago
    monkeypatch.setattr(engine_module, "PING_AFTER_IDLE_SECONDS", 0.0)
    assert (await client.get("/v1/conversations", headers=caller.headers())).status_code == 200
    assert len(pings) == 1


async def kill_backends(settings) -> int:
    """Terminate every PostgreSQL connection to the app's database; how many there were."""
    admin = await asyncpg.connect(asyncpg_dsn(settings.database_url))
    try:
        return int(
            await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    finally:
        await admin.close()


class WritesTwoFiles:
    """Tools whose every call writes ``a.txt`` and ``b.txt`` into the run's workspace."""

    def __call__(self, root: Path) -> WritesTwoFiles:
        self.root, self.specs = root, WorkspaceTools(root).specs
        return self

    async def call(self, call: ToolCall) -> ToolResult:
        for name in ("a.txt", "b.txt"):
            await asyncio.to_thread((self.root / name).write_text, f"{name} by the agent")
        return ToolResult(call.id, "written", False)


class TestPostgresFailsAtTheClose:
    """The run's closing unit of work (upload, file rows, final status) is retried while
    PostgreSQL drops its connections; the run stays locked and alive meanwhile."""

    @pytest.fixture
    def settings_overrides(self) -> dict[str, object]:
        return {"run_lease_seconds": 1}

    async def test_the_close_is_retried_every_object_gets_its_row_and_the_owner_is_not_reaped(
        self, app, client, caller, settings, request, tmp_path, monkeypatch
    ) -> None:
        from atelier.app import create_app
        from atelier.runs import recorder, service

        original_end_run = service.end_run
        attempts: list[int] = []
        retrying = asyncio.Event()

        async def end_run_after_a_kill(session, run_id, *args, **kwargs):  # type: ignore[no-untyped-def]
            attempts.append(1)
            if len(attempts) <= 2:  # the connection of the close dies under it, twice
                await kill_backends(settings)
            elif not retrying.is_set():
                retrying.set()
            return await original_end_run(session, run_id, *args, **kwargs)

        monkeypatch.setattr(recorder.service, "end_run", end_run_after_a_kill)
        # Long enough between tries for the run's heartbeat to look stale (lease: 1 s).
        monkeypatch.setattr(recorder, "RETRY_SECONDS", (1.5, 1.5))
        use_tools(app, WritesTwoFiles())
        conversation = await new_conversation(client, caller)
        other = create_app(settings.model_copy(update={"data_dir": tmp_path / "other"}))
        async with other.router.lifespan_context(other):
            stream = asyncio.create_task(
                client.post(
                    f"/v1/conversations/{conversation}/runs",
                    json={"input": "list files"},
                    headers=caller.headers(Accept="text/event-stream"),
                )
            )
            async with asyncio.timeout(30):
                while len(attempts) < 2:
                    await asyncio.sleep(0.05)
            await asyncio.sleep(1.2)  # its heartbeat is now older than the lease
            # Neither this process nor another takes the live run for dead: it holds its lock.
            assert await other.state.resources.runs.reap() == 0
            assert await app.state.resources.runs.reap() == 0
            events = parse_sse((await asyncio.wait_for(stream, 30)).text)
        assert len(attempts) == 3
        assert events[-1][1] == "run.completed"
        changed = sorted(data["path"] for _, name, data in events if name == "file.changed")
        assert changed == ["a.txt", "b.txt"]
        ids = [number for number, _, _ in events]
        assert ids == list(range(1, len(events) + 1))
        assert await file_rows(app, "a.txt") == await file_rows(app, "b.txt") == 1
        assert sorted(key.rsplit("/", 1)[-1] for key in stored_keys(settings, request)) == [
            "a.txt",
            "b.txt",
        ]
        run_id = events[0][2]["run_id"]
        row = await wait_ended(client, caller, conversation, run_id)
        assert row["status"] == "completed"


class TestS3RefusesSomeFiles:
    async def test_every_recorded_file_gets_its_event_whatever_ends_the_run(
        self, app, client, caller, settings, request, monkeypatch
    ) -> None:
        from atelier.workspace.base import StorageError

        storage = app.state.resources.runs.env.storage
        put_stream = storage.put_stream

        async def refuses_b(key: str, *args, **kwargs):  # type: ignore[no-untyped-def]
            if key.endswith("/b.txt"):
                raise StorageError("the bucket refused b.txt")
            return await put_stream(key, *args, **kwargs)

        monkeypatch.setattr(storage, "put_stream", refuses_b)
        use_tools(app, WritesTwoFiles())
        conversation = await new_conversation(client, caller)
        response = await start(
            client, caller, conversation, "list files", Accept="text/event-stream"
        )
        events = parse_sse(response.text)
        assert events[-1][1] == "run.failed"
        assert events[-1][2]["error"]["code"] == "storage_unavailable"
        changed = [data for _, name, data in events if name == "file.changed"]
        assert changed == [
            {"path": "a.txt", "size": len("a.txt by the agent"), "change": "created"}
        ]
        assert await file_rows(app, "a.txt") == 1
        assert await file_rows(app, "b.txt") == 0
        assert [key.rsplit("/", 1)[-1] for key in stored_keys(settings, request)] == ["a.txt"]
        listing = await client.get(
            f"/v1/conversations/{conversation}/files", headers=caller.headers()
        )
        assert [f["path"] for f in listing.json()["data"]] == ["a.txt"]


class TestPostgresFailsAtAnUploadsCommit:
    async def test_the_object_goes_with_the_row_that_did_not_commit(
        self, app, client, caller, settings, request, monkeypatch
    ) -> None:
        """The file's row is written, then its connection is terminated before the commit:
        the client is told to retry, and storage keeps no object without a row."""
        from atelier.workspace import service

        record = service.record

        async def then_the_connection_dies(*args, **kwargs):  # type: ignore[no-untyped-def]
            recorded = await record(*args, **kwargs)
            await kill_backends(settings)
            return recorded

        monkeypatch.setattr(service, "record", then_the_connection_dies)
        conversation = await new_conversation(client, caller)
        put = await client.put(
            f"/v1/conversations/{conversation}/files/up39.bin",
            content=b"x" * 4096,
            headers=caller.headers(),
        )
        assert put.status_code == 503, put.text
        assert put.json()["code"] == "database_unavailable"
        monkeypatch.setattr(service, "record", record)
        assert await file_rows(app, "up39.bin") == 0
        assert [k for k in stored_keys(settings, request) if k.endswith("/up39.bin")] == []
        # The retry the client was asked for stores it, row and object.
        again = await client.put(
            f"/v1/conversations/{conversation}/files/up39.bin",
            content=b"x" * 4096,
            headers=caller.headers(),
        )
        assert again.status_code == 201, again.text
        assert await file_rows(app, "up39.bin") == 1
        assert [k for k in stored_keys(settings, request) if k.endswith("/up39.bin")] != []
