"""A process's copies of workspaces: bounded disk, never evicting a copy in use, and no copy
of a deleted conversation left on any process's disk."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import pytest
from fastapi import FastAPI

from atelier.app import create_app
from atelier.settings import Settings
from atelier.workspace.cache import WorkspaceCache
from tests.conftest import Caller
from tests.runs.helpers import new_conversation, run_streamed, start_blocked


def fill(directory: Path, size: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "data.bin").write_bytes(b"x" * size)


class TestEviction:
    async def test_least_recently_used_copies_go_first(self, tmp_path: Path) -> None:
        cache = await WorkspaceCache.open(tmp_path / "runs", max_bytes=1000)
        a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        for conversation in (a, b):
            async with cache.use(conversation) as directory:
                await asyncio.to_thread(fill, directory, 400)
        async with cache.use(a):
            pass  # a is now more recent than b
        async with cache.use(c) as directory:
            await asyncio.to_thread(fill, directory, 400)
        assert (cache.root / str(a)).exists()
        assert not (cache.root / str(b)).exists()
        assert (cache.root / str(c)).exists()
        assert cache.used_bytes == 800

    async def test_a_copy_in_use_is_never_evicted(self, tmp_path: Path) -> None:
        cache = await WorkspaceCache.open(tmp_path / "runs", max_bytes=1000)
        busy, other = uuid.uuid4(), uuid.uuid4()
        async with cache.use(busy) as busy_dir:
            await asyncio.to_thread(fill, busy_dir, 600)
        async with cache.use(busy):
            async with cache.use(other) as directory:
                await asyncio.to_thread(fill, directory, 500)
            # Over the limit, and the least recently used copy is in use: the other goes.
            assert not (cache.root / str(other)).exists()
            assert (busy_dir / "data.bin").exists()
        assert (busy_dir / "data.bin").exists()
        assert cache.used_bytes == 600

    async def test_copies_left_by_a_previous_process_are_taken_over_oldest_first(
        self, tmp_path: Path
    ) -> None:
        root = tmp_path / "runs"
        old, new = uuid.uuid4(), uuid.uuid4()
        fill(root / str(old), 600)
        fill(root / str(new), 600)
        os.utime(root / str(old), (1_000_000, 1_000_000))
        cache = await WorkspaceCache.open(root, max_bytes=1000)
        assert not (root / str(old)).exists()
        assert (root / str(new)).exists()
        assert cache.copies() == [new]


@pytest.mark.parametrize("settings_overrides", [{"workspace_cache_bytes": 1}])
async def test_runs_evict_finished_copies_but_never_a_running_ones(app, client, caller) -> None:
    run_dir = app.state.resources.workspaces.root
    busy, busy_run, tools = await start_blocked(app, client, caller, "write kept.txt: mine")
    assert (run_dir / busy).is_dir()
    done = await new_conversation(client, caller)
    await client.put(
        f"/v1/conversations/{done}/files/a.txt", content=b"some text", headers=caller.headers()
    )
    # No tool call: not blocked. Its stream ends after the run let go of its copy.
    assert (await run_streamed(client, caller, done, "hello"))[-1][1] == "run.completed"
    assert not (run_dir / done).exists()  # over the 1-byte budget, and not in use
    assert (run_dir / busy).is_dir()  # in use by the run still inside its tool call
    tools.release.set()
    await client.get(
        f"/v1/conversations/{busy}/runs/{busy_run['id']}/events", headers=caller.headers()
    )  # to its end
    assert not (run_dir / busy).exists()


async def test_the_sweep_removes_copies_of_deleted_conversations(app, client, caller) -> None:
    workspaces = app.state.resources.workspaces
    kept = await new_conversation(client, caller)
    gone = uuid.uuid4()  # a conversation another process deleted
    for conversation in (uuid.UUID(kept), gone):
        async with workspaces.use(conversation) as directory:
            await asyncio.to_thread(fill, directory, 10)
    assert await app.state.resources.runs.sweep_workspaces() == 1
    assert (workspaces.root / kept).is_dir()
    assert not (workspaces.root / str(gone)).exists()


@pytest.mark.parametrize("backend", ["services"])
async def test_a_deletion_reaches_every_process_copy(
    app: FastAPI, client, caller: Caller, settings: Settings, tmp_path: Path
) -> None:
    """Two processes of one deployment (two apps, one database and Redis, two disks)."""
    conversation = await new_conversation(client, caller)
    other_dir = tmp_path / "other" / ".atelier"
    other = create_app(settings.model_copy(update={"data_dir": other_dir}))
    async with other.router.lifespan_context(other):
        async with other.state.resources.workspaces.use(uuid.UUID(conversation)) as copy:
            await asyncio.to_thread(fill, copy, 10)
        response = await client.delete(
            f"/v1/conversations/{conversation}", headers=caller.headers()
        )
        assert response.status_code == 204
        async with asyncio.timeout(10):
            while copy.exists():
                await asyncio.sleep(0.02)
