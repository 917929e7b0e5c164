"""Workspace sync for agent runs: storage -> a local directory -> storage.

``materialize`` downloads only what changed since the last time (a manifest of etags);
``collect_and_upload`` finds what the agent created, modified or deleted, uploads it
concurrently and records each file from the upload's own metadata -- never by
downloading it again (BUG-006); ``remember`` notes the copy is in step once that is
committed.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from atelier.settings import Settings
from atelier.workspace import content_types, service
from atelier.workspace.base import CHUNK_SIZE, ObjectInfo, Storage, StorageError
from atelier.workspace.paths import InvalidPath, normalize_path

MANIFEST = ".atelier-manifest.json"
CONCURRENCY = 8


@dataclass(frozen=True)
class FileChange:
    path: str
    size: int
    change: Literal["created", "modified", "deleted"]


@dataclass(frozen=True)
class _Local:
    size: int
    mtime_ns: int


@dataclass
class Collected:
    """What a run changed in its copy, as far as storage took it and the session recorded
    it. The copy's manifest is remembered only once the session commits (``remember``): if
    the commit fails, the next collection finds the same changes again."""

    changes: list[FileChange]
    etags: dict[str, str]
    error: StorageError | None


class WorkspaceSync:
    def __init__(self, storage: Storage, settings: Settings) -> None:
        self.storage = storage
        self.settings = settings

    async def materialize(
        self, conversation: service.Workspace, directory: Path, wanted: dict[str, str]
    ) -> int:
        """Bring ``directory`` up to date with ``wanted`` (path -> etag, from the file rows);
        returns how many files were fetched."""
        manifest, local = await asyncio.to_thread(_look, directory, create=True)
        stale = [
            path
            for path, etag in wanted.items()
            if manifest.get(path, {}).get("etag") != etag
            or path not in local
            or _changed(manifest[path], local[path])
        ]
        gate = asyncio.Semaphore(CONCURRENCY)

        async def fetch(path: str) -> None:
            async with gate:
                key = service.object_key(self.settings, conversation, path)
                await _download_to(self.storage.get_stream(key), directory / path)

        await asyncio.gather(*(fetch(path) for path in stale))
        extra = set(local) - set(wanted)
        for path in extra:
            await asyncio.to_thread((directory / path).unlink, missing_ok=True)
        # A warm workspace that matches costs one look at the directory, nothing more.
        if stale or extra or set(manifest) != set(wanted):
            await self._save(directory, wanted)
        return len(stale)

    async def collect_and_upload(
        self,
        session: AsyncSession,
        conversation: service.Workspace,
        directory: Path,
        before: Callable[[list[FileChange]], Awaitable[None]] | None = None,
    ) -> Collected:
        """Upload what changed in ``directory`` since it was materialised and record it in
        ``session``. Every change storage accepted is recorded, even when another failed.
        ``before`` sees the changes first; if it raises StorageError, none is made."""
        manifest, local = await asyncio.to_thread(_look, directory, create=False)
        changes: list[FileChange] = []
        for path, stat in sorted(local.items()):
            if path not in manifest:
                changes.append(FileChange(path, stat.size, "created"))
            elif _changed(manifest[path], stat):
                changes.append(FileChange(path, stat.size, "modified"))
        changes += [FileChange(path, 0, "deleted") for path in sorted(set(manifest) - set(local))]
        if before is not None and changes:
            try:
                await before(changes)
            except StorageError as exc:
                return Collected([], {}, exc)

        gate = asyncio.Semaphore(CONCURRENCY)

        async def apply(change: FileChange) -> ObjectInfo | None:
            async with gate:
                key = service.object_key(self.settings, conversation, change.path)
                if change.change == "deleted":
                    await self.storage.delete(key)
                    return None
                head = await asyncio.to_thread(_head_bytes, directory / change.path)
                return await self.storage.put_stream(
                    key,
                    _read_chunks(directory / change.path),
                    content_type=content_types.choose(None, head, change.path),
                    max_size=self.settings.max_file_size,
                )

        outcomes = await asyncio.gather(*(apply(c) for c in changes), return_exceptions=True)
        # Record every change storage accepted (a session is not for concurrent use): no
        # object is left without its row. Then report the first failure.
        etags = {path: str(entry.get("etag", "")) for path, entry in manifest.items()}
        applied: list[FileChange] = []
        error: StorageError | None = None
        for change, outcome in zip(changes, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, StorageError):
                    raise outcome
                error = error or outcome
            elif outcome is None:
                row = await service.find_file(session, conversation, change.path)
                if row is not None:
                    await session.delete(row)
                etags.pop(change.path, None)
                applied.append(change)
            else:
                await service.record(session, conversation, change.path, outcome, "agent")
                etags[change.path] = outcome.etag
                applied.append(FileChange(change.path, outcome.size, change.change))
        await session.flush()
        return Collected(applied, etags if applied else {}, error)

    async def remember(self, directory: Path, collected: Collected) -> None:
        """After the session that recorded ``collected`` committed: the copy is in step."""
        if collected.changes:
            await self._save(directory, collected.etags)

    async def _save(self, directory: Path, etags: dict[str, str]) -> None:
        local = await asyncio.to_thread(_scan, directory)
        manifest = {
            path: {"etag": etags.get(path, ""), "size": stat.size, "mtime_ns": stat.mtime_ns}
            for path, stat in local.items()
        }
        await asyncio.to_thread(_write_manifest, directory, manifest)


def _look(
    directory: Path, *, create: bool
) -> tuple[dict[str, dict[str, object]], dict[str, _Local]]:
    """The manifest and the files, in one trip to a worker thread."""
    if create:
        directory.mkdir(parents=True, exist_ok=True)
    return _read_manifest(directory), _scan(directory)


def _changed(entry: dict[str, object], stat: _Local) -> bool:
    return entry.get("size") != stat.size or entry.get("mtime_ns") != stat.mtime_ns


def _scan(directory: Path) -> dict[str, _Local]:
    """Regular files under ``directory`` with valid workspace paths; symlinks are never
    followed. One scandir per folder: the kind of each entry comes with the listing, and
    one lstat per file gives its size and time."""
    found: dict[str, _Local] = {}
    folders = [(str(directory), "")]
    while folders:
        folder, prefix = folders.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:  # gone or unreadable: as os.walk, skip it
            continue
        for entry in entries:
            relative = prefix + entry.name
            if entry.is_dir(follow_symlinks=False):
                folders.append((entry.path, relative + "/"))
                continue
            if not entry.is_file(follow_symlinks=False) or relative == MANIFEST:
                continue
            try:
                path = normalize_path(relative)
                stat = entry.stat(follow_symlinks=False)
            except (InvalidPath, OSError):
                continue
            found[path] = _Local(size=stat.st_size, mtime_ns=stat.st_mtime_ns)
    return found


def _read_manifest(directory: Path) -> dict[str, dict[str, object]]:
    try:
        data = json.loads((directory / MANIFEST).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_manifest(directory: Path, manifest: dict[str, dict[str, object]]) -> None:
    temp = directory / f"{MANIFEST}.{uuid.uuid4().hex}"
    temp.write_text(json.dumps(manifest))
    os.replace(temp, directory / MANIFEST)


def _head_bytes(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(512)


async def _read_chunks(path: Path) -> AsyncIterator[bytes]:
    handle = await asyncio.to_thread(path.open, "rb")
    try:
        while chunk := await asyncio.to_thread(handle.read, CHUNK_SIZE):
            yield chunk
    finally:
        await asyncio.to_thread(handle.close)


async def _download_to(chunks: AsyncIterator[bytes], target: Path) -> None:
    await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
    handle = await asyncio.to_thread(temp.open, "wb")
    try:
        async for chunk in chunks:
            await asyncio.to_thread(handle.write, chunk)
        await asyncio.to_thread(handle.close)
        await asyncio.to_thread(os.replace, temp, target)
    except BaseException:
        await asyncio.to_thread(handle.close)
        await asyncio.to_thread(temp.unlink, missing_ok=True)
        raise
