"""The storage port: objects of conversation workspaces, streamed in bounded chunks.

Adapters: ``s3.py`` (production, any S3-compatible endpoint) and ``local.py`` (a local
directory, the embedded default). Both close what they open, including download bodies
a consumer stops reading early (BUG-023).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

CHUNK_SIZE = 256 * 1024


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    content_type: str


class StorageError(Exception):
    """Storage did not do what was asked (unreachable, refused, failed mid-way)."""


class ObjectNotFound(StorageError):
    pass


class ObjectTooLarge(StorageError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"object exceeds {limit} bytes")
        self.limit = limit


class Storage(Protocol):
    name: str

    async def put_stream(
        self, key: str, chunks: AsyncIterator[bytes], *, content_type: str, max_size: int
    ) -> ObjectInfo:
        """Store the stream; past ``max_size`` raise ``ObjectTooLarge`` and store nothing."""

    def get_stream(
        self, key: str, *, start: int | None = None, end: int | None = None
    ) -> AsyncIterator[bytes]:
        """Yield the object's bytes (``end`` inclusive); the body is closed however it ends."""

    async def head(self, key: str) -> ObjectInfo:
        """Metadata without the body; ``ObjectNotFound`` if absent."""

    def list_objects(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        """Every object under ``prefix``, fetched page by page."""

    async def copy(self, source: str, target: str) -> ObjectInfo:
        """Copy an object inside the storage (its bytes never pass through this process),
        replacing ``target``; ``ObjectNotFound`` if ``source`` is absent."""

    async def delete(self, key: str) -> None:
        """Delete one object; deleting a missing one is not an error."""

    async def delete_prefix(self, prefix: str) -> int:
        """Delete everything under ``prefix`` in batches; returns how many were deleted."""

    async def ping(self) -> None: ...
