"""A process's copies of workspaces: bounded disk, never evicting a copy in use, and no copy
of a deleted conversation left on any process's disk."""

from __future__ import annotations

import asyncio
import os
import sys
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
        previous = await WorkspaceCache.open(tmp_path / "runs", max_bytes=10_000)
        old, new = uuid.uuid4(), uuid.uuid4()
        fill(previous.root / str(old), 600)
        fill(previous.root / str(new), 600)
        os.utime(previous.root / str(old), (1_000_000, 1_000_000))
        previous.close()
        cache = await WorkspaceCache.open(tmp_path / "runs", max_bytes=1000)
        assert cache.root == previous.root
        assert not (cache.root / str(old)).exists()
        assert (cache.root / str(new)).exists()
        assert cache.copies() == [new]


class TestProcessesOfOneHost:
    """Workers share the data directory; each works in a directory of its own."""

    async def test_each_claims_its_own_directory(self, tmp_path: Path) -> None:
        first = await WorkspaceCache.open(tmp_path / "runs", max_bytes=1000)
        second = await WorkspaceCache.open(tmp_path / "runs", max_bytes=1000)
        assert first.root != second.root
        second.close()
        # The free directory is claimed again; the held one never is.
        third = await WorkspaceCache.open(tmp_path / "runs", max_bytes=1000)
        assert third.root == second.root
        first.close()
        third.close()

    async def test_one_never_evicts_a_copy_another_is_working_in(self, tmp_path: Path) -> None:
        # Both once had this conversation; now the other process runs it while this one
        # goes over its budget. Sharing one directory, this one deleted the run's files.
        here = await WorkspaceCache.open(tmp_path / "runs", max_bytes=1000)
        there = await WorkspaceCache.open(tmp_path / "runs", max_bytes=1000)
        shared, filler = uuid.uuid4(), uuid.uuid4()
        async with here.use(shared) as directory:
            await asyncio.to_thread(fill, directory, 600)
        async with there.use(shared) as working:
            await asyncio.to_thread(fill, working, 600)
            async with here.use(filler) as directory:
                await asyncio.to_thread(fill, directory, 600)
            assert not (here.root / str(shared)).exists()  # evicted here...
            assert (working / "data.bin").exists()  # ...and the run there goes on
            await there.forget([filler])
            assert (here.root / str(filler)).exists()
        here.close()
        there.close()

    async def test_a_dead_process_gives_its_directory_up(self, tmp_path: Path) -> None:
        claim = (
            "import asyncio, sys\n"
            "from pathlib import Path\n"
            "from atelier.workspace.cache import WorkspaceCache\n"
            "cache = asyncio.run(WorkspaceCache.open(Path(sys.argv[1]), 1000))\n"
            "print(cache.root, flush=True)\n"
            "sys.stdin.read()\n"
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            claim,
            str(tmp_path / "runs"),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        theirs = Path((await process.stdout.readline()).decode().strip())
        ours = await WorkspaceCache.open(tmp_path / "runs", max_bytes=1000)
        assert ours.root != theirs
        process.kill()  # no clean-up runs: the kernel drops the lock with the process
        await process.wait()
        after = await WorkspaceCache.open(tmp_path / "runs", max_bytes=1000)
        assert after.root == theirs
        ours.close()
        after.close()


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
