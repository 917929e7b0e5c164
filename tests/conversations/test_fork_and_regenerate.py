"""Fork (messages up to a point, the workspace copied inside the storage) and regenerate
(the same input again; the earlier answer kept, marked superseded, out of the history)."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import func, select

from atelier.conversations import messages as stored
from atelier.conversations.models import Conversation
from atelier.workspace.base import StorageError
from tests.conftest import make_caller
from tests.live import serve_started
from tests.runs.helpers import SSE, messages, new_conversation, run_streamed, start, wait_ended
from tests.workspace.helpers import stored_keys


async def put(client: httpx.AsyncClient, caller, conversation: str, path: str, data: bytes):
    response = await client.put(
        f"/v1/conversations/{conversation}/files/{path}", content=data, headers=caller.headers()
    )
    assert response.status_code in (200, 201), response.text


async def read(client: httpx.AsyncClient, caller, conversation: str, path: str) -> httpx.Response:
    return await client.get(
        f"/v1/conversations/{conversation}/files/{path}", headers=caller.headers()
    )


async def fork(client: httpx.AsyncClient, caller, conversation: str, **body) -> httpx.Response:
    return await client.post(
        f"/v1/conversations/{conversation}/fork", json=body or None, headers=caller.headers()
    )


class TestFork:
    async def test_a_fork_has_the_messages_up_to_a_point_and_the_files(self, app, caller) -> None:
        async with (
            serve_started(app) as url,
            httpx.AsyncClient(base_url=url, headers=caller.headers()) as client,
        ):
            source = await new_conversation(client, caller, title="plan", metadata={"k": 1})
            await put(client, caller, source, "notes/a.txt", b"alpha")
            await run_streamed(client, caller, source, "write b.txt: beta")
            await run_streamed(client, caller, source, "second question")
            everything = await messages(client, caller, source)
            first_turn_end = everything[1]["seq"]
            response = await fork(client, caller, source, at_seq=first_turn_end)
            assert response.status_code == 201, response.text
            copy = response.json()
            assert copy["id"] != source
            assert (copy["title"], copy["metadata"]) == ("plan", {"k": 1})
            copied = await messages(client, caller, copy["id"])
            assert [m["seq"] for m in copied] == [m["seq"] for m in everything[:2]]
            assert [m["content"] for m in copied] == [m["content"] for m in everything[:2]]
            assert (await read(client, caller, copy["id"], "notes/a.txt")).content == b"alpha"
            assert (await read(client, caller, copy["id"], "b.txt")).content == b"beta"
            # They are two workspaces now: a change to one leaves the other alone.
            await put(client, caller, copy["id"], "notes/a.txt", b"changed")
            assert (await read(client, caller, source, "notes/a.txt")).content == b"alpha"
            # The fork goes on from where it was cut.
            events = await run_streamed(client, caller, copy["id"], "go on")
            assert events[-1][1] == "run.completed"
            after = await messages(client, caller, copy["id"])
            assert after[-2]["seq"] == first_turn_end + 1

    async def test_a_fork_takes_everything_by_default(self, client, caller) -> None:
        source = await new_conversation(client, caller)
        await run_streamed(client, caller, source, "hello")
        response = await fork(client, caller, source)
        assert response.status_code == 201
        assert len(await messages(client, caller, response.json()["id"])) == len(
            await messages(client, caller, source)
        )

    async def test_a_fork_keeps_the_agent_and_the_version_it_was_pinned_to(
        self, client, caller
    ) -> None:
        agent = await client.post("/v1/agents", json={"name": "pinned"}, headers=caller.headers())
        agent_id = agent.json()["id"]
        await client.patch(
            f"/v1/agents/{agent_id}", json={"instructions": "v2"}, headers=caller.headers()
        )
        source = await new_conversation(client, caller, agent_id=agent_id, agent_version=1)
        await run_streamed(client, caller, source, "hello")
        copy = (await fork(client, caller, source)).json()
        assert (copy["agent_id"], copy["agent_version"]) == (agent_id, 1)

    async def test_files_are_copied_inside_the_storage(self, app, client, caller) -> None:
        storage = app.state.resources.storage
        source = await new_conversation(client, caller)
        await put(client, caller, source, "big.bin", b"x" * 300_000)

        def streamed(*args, **kwargs):  # type: ignore[no-untyped-def]
            raise AssertionError("a fork streamed a file through the process")

        original = (storage.get_stream, storage.put_stream)
        storage.get_stream = storage.put_stream = streamed
        try:
            response = await fork(client, caller, source)
        finally:
            storage.get_stream, storage.put_stream = original
        assert response.status_code == 201, response.text
        copied = await read(client, caller, response.json()["id"], "big.bin")
        assert copied.content == b"x" * 300_000

    @pytest.mark.parametrize("at_seq", [-1, "x", 2**60])
    async def test_bad_points_are_refused(self, client, caller, at_seq) -> None:
        source = await new_conversation(client, caller)
        response = await fork(client, caller, source, at_seq=at_seq)
        assert response.status_code == 422

    async def test_a_point_past_the_end_is_refused_and_nothing_is_made(
        self, app, client, caller
    ) -> None:
        source = await new_conversation(client, caller)
        response = await fork(client, caller, source, at_seq=5)
        assert response.status_code == 400
        assert response.json()["code"] == "invalid_at_seq"
        async with app.state.resources.sessionmaker() as session:
            assert await session.scalar(select(func.count()).select_from(Conversation)) == 1

    async def test_a_storage_failure_leaves_no_conversation_and_no_object(
        self, app, client, caller, request
    ) -> None:
        storage = app.state.resources.storage
        source = await new_conversation(client, caller)
        for n in range(5):
            await put(client, caller, source, f"f{n}.txt", b"data")
        copy = storage.copy
        calls = 0

        async def failing(source_key: str, target_key: str):  # type: ignore[no-untyped-def]
            nonlocal calls
            calls += 1
            if calls == 3:
                raise StorageError("storage went away")
            return await copy(source_key, target_key)

        storage.copy = failing
        try:
            response = await fork(client, caller, source)
        finally:
            storage.copy = copy
        assert response.status_code == 503
        assert response.json()["code"] == "storage_unavailable"
        async with app.state.resources.sessionmaker() as session:
            assert await session.scalar(select(func.count()).select_from(Conversation)) == 1
        keys = stored_keys(app.state.resources.settings, request)
        assert len(keys) == 5
        assert [key for key in keys if source not in key] == []  # the copies are gone

    async def test_another_user_cannot_fork_it(self, app, client, caller) -> None:
        source = await new_conversation(client, caller)
        response = await client.post(
            f"/v1/conversations/{source}/fork", headers=caller.headers("mallory")
        )
        assert response.status_code == 404
        other = await make_caller(app)
        response = await client.post(f"/v1/conversations/{source}/fork", headers=other.headers())
        assert response.status_code == 404


class TestRegenerate:
    async def test_the_earlier_answer_is_kept_but_superseded(self, app, caller) -> None:
        async with serve_started(app) as url, httpx.AsyncClient(base_url=url) as client:
            conversation = await new_conversation(client, caller)
            await run_streamed(client, caller, conversation, "first")
            first = await run_streamed(client, caller, conversation, "what now")
            run_id = first[0][2]["run_id"]
            response = await client.post(
                f"/v1/conversations/{conversation}/runs/{run_id}/regenerate",
                headers=caller.headers(**SSE),
            )
            assert response.status_code == 200, response.text
            assert "event: run.completed" in response.text
            found = await messages(client, caller, conversation)
        superseded = [m for m in found if m["superseded"]]
        assert {m["run_id"] for m in superseded} == {run_id}
        assert [m["role"] for m in superseded] == ["user", "assistant"]
        assert found[-2]["content"] == "what now"
        assert not found[-1]["superseded"]
        # The model no longer sees the superseded turn.
        async with app.state.resources.sessionmaker() as session:
            history = await stored.history(session, uuid.UUID(conversation))
        assert [m.content for m in history if m.role == "user"] == ["first", "what now"]

    async def test_a_run_still_going_cannot_be_regenerated(self, client, caller) -> None:
        conversation = await new_conversation(client, caller)
        started = await start(client, caller, conversation, " ".join(["w"] * 400))
        run_id = started.json()["id"]
        response = await client.post(
            f"/v1/conversations/{conversation}/runs/{run_id}/regenerate",
            headers=caller.headers(),
        )
        assert response.status_code == 409
        assert response.json()["code"] == "run_not_ended"
        await client.post(
            f"/v1/conversations/{conversation}/runs/{run_id}/cancel", headers=caller.headers()
        )
        await wait_ended(client, caller, conversation, run_id)
        found = await messages(client, caller, conversation)
        assert not any(m["superseded"] for m in found)

    async def test_an_unknown_run_is_404(self, client, caller) -> None:
        conversation = await new_conversation(client, caller)
        response = await client.post(
            f"/v1/conversations/{conversation}/runs/{uuid.uuid4()}/regenerate",
            headers=caller.headers(),
        )
        assert response.status_code == 404
