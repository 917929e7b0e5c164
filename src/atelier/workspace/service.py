"""Workspace files: storage objects plus their rows, kept in step.

Metadata always comes from what storage reported for the upload (or a HEAD), never from
downloading the object (BUG-006).
"""

from __future__ import annotations

import contextlib
import functools
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import bindparam, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.db import undo
from atelier.db.base import utcnow
from atelier.errors import Conflict, DomainError, NotFound, TooLarge, Unavailable, size_text
from atelier.settings import Settings
from atelier.workspace import content_types
from atelier.workspace.base import ObjectInfo, ObjectTooLarge, Storage, StorageError
from atelier.workspace.models import ConversationFile


class Workspace(Protocol):
    """Whose workspace: a conversation row, or what a run knows of its conversation."""

    @property
    def id(self) -> uuid.UUID: ...

    @property
    def tenant_id(self) -> uuid.UUID: ...


def conversation_prefix(
    settings: Settings, tenant_id: uuid.UUID, conversation_id: uuid.UUID
) -> str:
    return f"{settings.s3_prefix}/{tenant_id}/{conversation_id}/"


def undo_prefix(
    settings: Settings,
    tenant_id: uuid.UUID,
    conversation_id: uuid.UUID,
    run_id: uuid.UUID | None = None,
) -> str:
    """Where the objects a run replaced or deleted are kept, should it be rolled back:
    beside the workspaces, never under one (no workspace path can reach them)."""
    base = f"{settings.s3_prefix}/undo/{tenant_id}/{conversation_id}/"
    return base if run_id is None else f"{base}{run_id}/"


def object_key(settings: Settings, conversation: Workspace, path: str) -> str:
    return conversation_prefix(settings, conversation.tenant_id, conversation.id) + path


def storage_unavailable(exc: StorageError) -> DomainError:
    return Unavailable("storage_unavailable", f"workspace storage failed: {exc}", retry_after=5)


@dataclass(frozen=True)
class Upload:
    file: ConversationFile
    created: bool


async def find_file(
    session: AsyncSession, conversation: Workspace, path: str
) -> ConversationFile | None:
    return await session.scalar(
        select(ConversationFile).where(
            ConversationFile.conversation_id == conversation.id, ConversationFile.path == path
        )
    )


async def get_file(session: AsyncSession, conversation: Workspace, path: str) -> ConversationFile:
    row = await find_file(session, conversation, path)
    if row is None:
        raise NotFound("not_found", "no such file")
    return row


async def list_files(
    session: AsyncSession, conversation: Workspace, prefix: str
) -> list[ConversationFile]:
    query = select(ConversationFile).where(ConversationFile.conversation_id == conversation.id)
    if prefix:
        # Compare as a range, not LIKE: a prefix may contain '%' or '_'.
        query = query.where(
            ConversationFile.path >= prefix, ConversationFile.path < prefix + "\U0010ffff"
        )
    return list(await session.scalars(query.order_by(ConversationFile.path)))


async def file_etags(session: AsyncSession, conversation: Workspace) -> dict[str, str]:
    """Path -> etag of every file: what a sync compares, without loading whole rows."""
    rows = await session.execute(_ETAGS, {"conversation_id": conversation.id})
    return {path: etag for path, etag in rows}


_ETAGS = select(ConversationFile.path, ConversationFile.etag).where(  # built once
    ConversationFile.conversation_id == bindparam("conversation_id")
)


async def upload(
    session: AsyncSession,
    storage: Storage,
    settings: Settings,
    conversation: Workspace,
    path: str,
    chunks: AsyncIterator[bytes],
    *,
    content_type: str | None,
    source: str,
) -> Upload:
    """Stream ``chunks`` to storage under the quotas, then record the file."""
    count, used = (
        await session.execute(
            select(func.count(), func.coalesce(func.sum(ConversationFile.size), 0)).where(
                ConversationFile.conversation_id == conversation.id, ConversationFile.path != path
            )
        )
    ).one()
    existing = await session.scalar(
        select(ConversationFile.id).where(
            ConversationFile.conversation_id == conversation.id, ConversationFile.path == path
        )
    )
    if existing is None and count >= settings.max_workspace_files:
        raise Conflict(
            "workspace_file_limit",
            f"a workspace holds at most {settings.max_workspace_files} files",
        )
    quota_left = settings.max_workspace_bytes - int(used)
    limit = min(settings.max_file_size, max(quota_left, 0))

    first, rest = await _peek(chunks)
    chosen_type = content_types.choose(content_type, first, path)
    key = object_key(settings, conversation, path)
    try:
        info = await storage.put_stream(
            key, _chain(first, rest), content_type=chosen_type, max_size=limit
        )
    except ObjectTooLarge as exc:
        if limit < settings.max_file_size:
            raise TooLarge(
                "workspace_quota_exceeded",
                f"the workspace is limited to {settings.max_workspace_bytes} bytes",
            ) from exc
        raise TooLarge(
            "payload_too_large", f"the file is over the {size_text(settings.max_file_size)} limit"
        ) from exc
    except StorageError as exc:
        raise storage_unavailable(exc) from exc
    if existing is None:
        # No object without a row: if the row is not committed (recording fails, or the
        # commit itself does), neither may the bytes stay.
        undo.unless_committed(session, functools.partial(_forget, storage, key))
    return await record(session, conversation, path, info, source)


async def record(
    session: AsyncSession, conversation: Workspace, path: str, info: ObjectInfo, source: str
) -> Upload:
    """Insert or update the row for ``path`` from storage's metadata."""
    row = await find_file(session, conversation, path)
    created = row is None
    now = utcnow()
    if row is None:
        row = ConversationFile(conversation_id=conversation.id, path=path, created_at=now)
        try:
            async with session.begin_nested():
                _apply(row, info, source, now)
                session.add(row)
        except IntegrityError:
            # A concurrent upload of the same path won the insert: this one replaces it.
            created = False
            row = await get_file(session, conversation, path)
            _apply(row, info, source, now)
    else:
        _apply(row, info, source, now)
    await session.flush()
    return Upload(file=row, created=created)


def _apply(row: ConversationFile, info: ObjectInfo, source: str, now: datetime) -> None:
    row.size = info.size
    row.etag = info.etag
    row.content_type = info.content_type
    row.source = source
    row.updated_at = now


async def delete_file(
    session: AsyncSession,
    storage: Storage,
    settings: Settings,
    conversation: Workspace,
    path: str,
) -> None:
    row = await get_file(session, conversation, path)
    try:
        await storage.delete(object_key(settings, conversation, path))
    except StorageError as exc:
        raise storage_unavailable(exc) from exc
    await session.delete(row)
    await session.flush()


async def _forget(storage: Storage, key: str) -> None:
    # Best effort: the caller's error is what the client sees either way.
    with contextlib.suppress(StorageError):
        await storage.delete(key)


async def _peek(chunks: AsyncIterator[bytes]) -> tuple[bytes, AsyncIterator[bytes]]:
    async for chunk in chunks:
        if chunk:
            return chunk, chunks
    return b"", chunks


async def _chain(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for chunk in rest:
        if chunk:
            yield chunk
