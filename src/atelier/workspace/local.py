"""A local directory as workspace storage (the embedded default).

Same semantics as S3: writes land atomically (temp file + rename), metadata beside the
object, every file operation runs on a worker thread so the event loop never blocks, and
every resolved path is checked to stay under the root, symlinks included.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

from atelier.workspace.base import (
    CHUNK_SIZE,
    ObjectInfo,
    ObjectNotFound,
    ObjectTooLarge,
    StorageError,
)

# Incoming chunks are gathered to this size before each (threaded) write.
WRITE_BUFFER = 1024 * 1024


class LocalStorage:
    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.objects = self.root / "objects"
        self.meta = self.root / "meta"
        self.tmp = self.root / "tmp"
        for directory in (self.objects, self.meta, self.tmp):
            directory.mkdir(parents=True, exist_ok=True)

    def _inside(self, base: Path, key: str) -> Path:
        path = (base / key).resolve()
        if not path.is_relative_to(base):
            raise StorageError(f"key escapes the storage root: {key!r}")
        return path

    async def put_stream(
        self, key: str, chunks: AsyncIterator[bytes], *, content_type: str, max_size: int
    ) -> ObjectInfo:
        target = await asyncio.to_thread(self._inside, self.objects, key)
        meta_target = await asyncio.to_thread(self._inside, self.meta, key)
        temp = self.tmp / uuid.uuid4().hex
        digest = hashlib.md5(usedforsecurity=False)
        size = 0
        handle: IO[bytes] = await asyncio.to_thread(open, temp, "wb")
        try:
            buffer = bytearray()
            async for chunk in chunks:
                size += len(chunk)
                if size > max_size:
                    raise ObjectTooLarge(max_size)
                buffer += chunk
                if len(buffer) >= WRITE_BUFFER:
                    await asyncio.to_thread(_write, handle, digest, bytes(buffer))
                    buffer.clear()
            if buffer:
                await asyncio.to_thread(_write, handle, digest, bytes(buffer))
            await asyncio.to_thread(handle.close)
            info = ObjectInfo(
                key=key, size=size, etag=digest.hexdigest(), content_type=content_type
            )
            await asyncio.to_thread(self._commit, temp, target, meta_target, info)
            return info
        except BaseException:
            await asyncio.to_thread(_discard, handle, temp)
            raise

    def _commit(self, temp: Path, target: Path, meta_target: Path, info: ObjectInfo) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        meta_target.parent.mkdir(parents=True, exist_ok=True)
        meta_temp = temp.with_suffix(".meta")
        meta_temp.write_text(json.dumps({"etag": info.etag, "content_type": info.content_type}))
        os.replace(temp, target)
        os.replace(meta_temp, meta_target)

    async def get_stream(
        self, key: str, *, start: int | None = None, end: int | None = None
    ) -> AsyncIterator[bytes]:
        path = await asyncio.to_thread(self._inside, self.objects, key)
        try:
            handle: IO[bytes] = await asyncio.to_thread(open, path, "rb")
        except FileNotFoundError as exc:
            raise ObjectNotFound(key) from exc
        try:
            if start:
                await asyncio.to_thread(handle.seek, start)
            remaining = None if end is None else end - (start or 0) + 1
            while remaining is None or remaining > 0:
                size = CHUNK_SIZE if remaining is None else min(CHUNK_SIZE, remaining)
                chunk = await asyncio.to_thread(handle.read, size)
                if not chunk:
                    return
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
        finally:
            # Closed here and now: an await in this `finally` can itself be cancelled (the
            # response's cancel scope is still cancelling when a client leaves), and the file
            # would then stay open until the garbage collector ran. Closing a file opened
            # for reading writes nothing back.
            handle.close()

    async def head(self, key: str) -> ObjectInfo:
        return await asyncio.to_thread(self._head, key)

    def _head(self, key: str) -> ObjectInfo:
        path = self._inside(self.objects, key)
        try:
            size = path.stat().st_size
            meta = json.loads(self._inside(self.meta, key).read_text())
        except FileNotFoundError as exc:
            raise ObjectNotFound(key) from exc
        return ObjectInfo(key=key, size=size, etag=meta["etag"], content_type=meta["content_type"])

    async def copy(self, source: str, target: str) -> ObjectInfo:
        return await asyncio.to_thread(self._copy, source, target)

    def _copy(self, source: str, target: str) -> ObjectInfo:
        """A hard link: writes replace an object by renaming a new file over it, so the
        two names never share a change (a plain copy where links are not possible)."""
        info = self._head(source)
        temp = self.tmp / uuid.uuid4().hex
        try:
            os.link(self._inside(self.objects, source), temp)
        except FileNotFoundError as exc:
            raise ObjectNotFound(source) from exc
        except OSError:
            shutil.copyfile(self._inside(self.objects, source), temp)
        copied = ObjectInfo(
            key=target, size=info.size, etag=info.etag, content_type=info.content_type
        )
        self._commit(
            temp, self._inside(self.objects, target), self._inside(self.meta, target), copied
        )
        return copied

    async def list_objects(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        keys = await asyncio.to_thread(self._keys, prefix)
        for key in keys:
            try:
                yield await self.head(key)
            except ObjectNotFound:
                continue  # deleted while we listed

    def _keys(self, prefix: str) -> list[str]:
        """Keys under ``prefix``, walking only the folder the prefix names (never every
        tenant's tree)."""
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        top = self._inside(self.objects, folder) if folder else self.objects
        keys = []
        for directory, _, files in os.walk(top):
            for name in files:
                key = Path(directory, name).relative_to(self.objects).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._delete, key)

    def _delete(self, key: str) -> None:
        for base in (self.objects, self.meta):
            self._inside(base, key).unlink(missing_ok=True)

    async def delete_prefix(self, prefix: str) -> int:
        keys = await asyncio.to_thread(self._keys, prefix)
        for key in keys:
            await asyncio.to_thread(self._delete, key)
        if prefix.endswith("/"):
            await asyncio.to_thread(self._remove_dirs, prefix)
        return len(keys)

    def _remove_dirs(self, prefix: str) -> None:
        for base in (self.objects, self.meta):
            shutil.rmtree(self._inside(base, prefix), ignore_errors=True)

    async def ping(self) -> None:
        await asyncio.to_thread(os.stat, self.objects)


def _write(handle: IO[bytes], digest: hashlib._Hash, data: bytes) -> None:
    handle.write(data)
    digest.update(data)


def _discard(handle: IO[bytes], temp: Path) -> None:
    handle.close()
    temp.unlink(missing_ok=True)
