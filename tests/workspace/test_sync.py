"""Workspace sync for agent runs, on both adapters."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from atelier.conversations.models import Conversation
from atelier.workspace.service import file_etags, list_files
from atelier.workspace.sync import WorkspaceSync
from tests.conftest import Caller


@pytest.fixture
async def conversation_id(client: httpx.AsyncClient, caller: Caller) -> str:
    return str(
        (await client.post("/v1/conversations", json={}, headers=caller.headers())).json()["id"]
    )


@pytest.fixture
def downloads(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every object body the app reads, whichever way it asks."""
    storage = app.state.resources.storage
    seen: list[str] = []
    real = storage.get_stream

    def counting(key: str, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(key)
        return real(key, **kwargs)

    monkeypatch.setattr(storage, "get_stream", counting)
    if getattr(storage, "client", None) is not None:  # S3: count GetObject calls on the wire too
        storage.client.meta.events.register(
            "before-call.s3.GetObject", lambda **kw: seen.append(kw["params"]["url_path"])
        )
    return seen


async def materialize(
    app: FastAPI, sync: WorkspaceSync, conversation: Conversation, work: Path
) -> int:
    async with app.state.resources.sessionmaker() as session:
        return await sync.materialize(conversation, work, await file_etags(session, conversation))


async def load(app: FastAPI, conversation_id: str) -> Conversation:
    async with app.state.resources.sessionmaker() as session:
        conversation = await session.get(Conversation, uuid.UUID(conversation_id))
        assert conversation is not None
        return conversation


class TestMaterialize:
    async def test_incremental_download(
        self, app, client, caller, conversation_id, downloads, tmp_path: Path
    ) -> None:
        base = f"/v1/conversations/{conversation_id}/files"
        for n in range(5):
            await client.put(
                f"{base}/dir/f{n}.txt", content=f"file {n}".encode(), headers=caller.headers()
            )
        sync = WorkspaceSync(app.state.resources.storage, app.state.resources.settings)
        work = tmp_path / "work"
        conversation = await load(app, conversation_id)
        assert await materialize(app, sync, conversation, work) == 5
        assert (work / "dir" / "f3.txt").read_text() == "file 3"
        fetched = len(downloads)
        assert await materialize(app, sync, conversation, work) == 0  # nothing changed
        assert len(downloads) == fetched
        await client.put(f"{base}/dir/f1.txt", content=b"changed", headers=caller.headers())
        await client.delete(f"{base}/dir/f4.txt", headers=caller.headers())
        assert await materialize(app, sync, conversation, work) == 1
        assert (work / "dir" / "f1.txt").read_text() == "changed"
        assert not (work / "dir" / "f4.txt").exists()


class TestCollectAndUpload:
    async def test_registers_agent_files_without_downloading_them(
        self, app, client, caller, conversation_id, downloads, tmp_path: Path
    ) -> None:
        """BUG-006: metadata comes from the upload, never from a GET of the body."""
        await client.put(
            f"/v1/conversations/{conversation_id}/files/keep.txt",
            content=b"k",
            headers=caller.headers(),
        )
        await client.put(
            f"/v1/conversations/{conversation_id}/files/edit.txt",
            content=b"e",
            headers=caller.headers(),
        )
        await client.put(
            f"/v1/conversations/{conversation_id}/files/drop.txt",
            content=b"d",
            headers=caller.headers(),
        )
        sync = WorkspaceSync(app.state.resources.storage, app.state.resources.settings)
        work = tmp_path / "work"
        conversation = await load(app, conversation_id)
        await materialize(app, sync, conversation, work)
        downloads.clear()

        # The agent works: 20 new files, one edit, one delete, and a symlink it must not smuggle out.
        for n in range(20):
            (work / "out").mkdir(exist_ok=True)
            (work / "out" / f"r{n}.csv").write_bytes(os.urandom(1000 + n))
        (work / "edit.txt").write_text("edited by the agent")
        (work / "drop.txt").unlink()
        (work / "escape").symlink_to("/etc/passwd")

        async with app.state.resources.sessionmaker() as session:
            collected = await sync.collect_and_upload(session, conversation, work)
            await session.commit()
        await sync.remember(work, collected)
        changes = collected.changes
        assert downloads == []
        by_path = {c.path: c for c in changes}
        assert by_path["edit.txt"].change == "modified"
        assert by_path["drop.txt"].change == "deleted"
        assert by_path["out/r7.csv"].change == "created"
        assert by_path["out/r7.csv"].size == 1007
        assert "escape" not in by_path
        assert "keep.txt" not in by_path

        async with app.state.resources.sessionmaker() as session:
            rows = {row.path: row for row in await list_files(session, conversation, "")}
        assert "drop.txt" not in rows
        assert rows["edit.txt"].size == len("edited by the agent")
        assert rows["edit.txt"].source == "agent"
        assert rows["out/r0.csv"].content_type == "text/csv"
        listing = await client.get(
            f"/v1/conversations/{conversation_id}/files", headers=caller.headers()
        )
        assert len(listing.json()["data"]) == 22
        body = await client.get(
            f"/v1/conversations/{conversation_id}/files/out/r3.csv", headers=caller.headers()
        )
        assert body.content == (work / "out" / "r3.csv").read_bytes()

        # Nothing changed since: nothing to do.
        async with app.state.resources.sessionmaker() as session:
            assert (await sync.collect_and_upload(session, conversation, work)).changes == []
