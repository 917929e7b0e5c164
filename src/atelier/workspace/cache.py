"""This process's materialised copies of workspaces, where runs work on the files.

The processes of one host (``--workers``) share the data directory, so each claims a
directory of its own under it, held by an advisory lock for as long as it lives: no
process evicts or removes a copy another one is working in. A restarted process claims
a free directory and keeps the copies found there.

A copy is kept after its run (the next run of the conversation then fetches only what
changed), so the copies are bounded: past ``max_bytes`` the least recently used ones are
removed, never one a run is using. A deleted conversation's copy is removed here when
this process deletes it, when another process announces the deletion, and by a sweep
that asks the database which conversations still exist (a missed announcement).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import uuid
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import structlog

log = structlog.get_logger("atelier.workspace")


class WorkspaceCache:
    def __init__(self, root: Path, max_bytes: int, claim: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._claim = claim  # the locked descriptor that keeps `root` this process's
        self._sizes: OrderedDict[str, int] = OrderedDict()  # least recently used first
        self._in_use: Counter[str] = Counter()

    @classmethod
    async def open(cls, parent: Path, max_bytes: int) -> WorkspaceCache:
        """Claim a directory under `parent` no live process holds and take over the
        copies a previous process left there, oldest first."""
        root, claim = await asyncio.to_thread(_claim, parent)
        cache = cls(root, max_bytes, claim)
        for name, size in await asyncio.to_thread(_existing, cache.root):
            cache._sizes[name] = size
        await cache._evict()
        return cache

    def close(self) -> None:
        """Give the directory up, copies and all, for the next process to claim."""
        if self._claim >= 0:
            os.close(self._claim)  # closing the descriptor releases its lock
            self._claim = -1

    @property
    def used_bytes(self) -> int:
        return sum(self._sizes.values())

    def copies(self) -> list[uuid.UUID]:
        found = []
        for name in self._sizes:
            with contextlib.suppress(ValueError):
                found.append(uuid.UUID(name))
        return found

    @contextlib.asynccontextmanager
    async def use(self, conversation_id: uuid.UUID) -> AsyncIterator[Path]:
        """The conversation's directory, kept from eviction while the caller works in it."""
        name = str(conversation_id)
        self._in_use[name] += 1
        self._sizes[name] = self._sizes.get(name, 0)
        self._sizes.move_to_end(name)
        try:
            yield self.root / name
        finally:
            self._in_use[name] -= 1
            if not self._in_use[name]:
                del self._in_use[name]
            # Even when the run was cancelled: the copy's size must stay known.
            await asyncio.shield(self._settle(name))

    async def _settle(self, name: str) -> None:
        try:
            size = await asyncio.to_thread(_size_of, self.root / name)
        except OSError:
            size = 0
        if name in self._sizes:
            self._sizes[name] = size
        await self._evict()

    async def forget(self, conversation_ids: Iterable[uuid.UUID]) -> int:
        """Remove these conversations' copies (their conversations are gone)."""
        removed = 0
        for conversation_id in conversation_ids:
            name = str(conversation_id)
            if name in self._in_use:
                continue  # its run is ending; the sweep takes the copy next time
            self._sizes.pop(name, None)
            await asyncio.to_thread(shutil.rmtree, self.root / name, True)
            removed += 1
        return removed

    async def _evict(self) -> None:
        while self.used_bytes > self.max_bytes:
            name = next((n for n in self._sizes if n not in self._in_use), None)
            if name is None:
                return  # everything left is in use
            size = self._sizes.pop(name)
            await asyncio.to_thread(shutil.rmtree, self.root / name, True)
            log.info("workspace copy evicted", conversation_id=name, bytes=size)


def _claim(parent: Path) -> tuple[Path, int]:
    """The first `parent/process-N` whose lock file no live process holds, and the
    descriptor holding its lock (the kernel releases it when this process dies)."""
    parent.mkdir(parents=True, exist_ok=True)
    slot = 0
    while True:
        descriptor = os.open(parent / f"process-{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            slot += 1
            continue
        directory = parent / f"process-{slot}"
        directory.mkdir(exist_ok=True)
        return directory.resolve(), descriptor


def _existing(root: Path) -> list[tuple[str, int]]:
    """Directories under ``root`` as (name, size), least recently modified first."""
    found = []
    for entry in os.scandir(root):
        if entry.is_dir(follow_symlinks=False):
            found.append((entry.stat(follow_symlinks=False).st_mtime, entry.name))
    return [(name, _size_of(root / name)) for _, name in sorted(found)]


def _size_of(directory: Path) -> int:
    total = 0
    folders = [str(directory)]
    while folders:
        try:
            entries = list(os.scandir(folders.pop()))
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                folders.append(entry.path)
            elif entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    total += entry.stat(follow_symlinks=False).st_size
    return total
