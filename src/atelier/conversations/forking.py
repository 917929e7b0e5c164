"""Forking a conversation: a new one with the same agent, the messages up to a point and a
copy of the workspace, made inside the storage (no file passes through this process)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.conversations.models import Conversation, Message
from atelier.conversations.service import get_owned, room_for_one
from atelier.db.base import utcnow
from atelier.errors import Refused
from atelier.settings import Settings
from atelier.tenants.principal import Principal
from atelier.workspace import service as files
from atelier.workspace.base import Storage, StorageError
from atelier.workspace.models import ConversationFile

CONCURRENCY = 8


async def fork(
    session: AsyncSession,
    storage: Storage,
    settings: Settings,
    principal: Principal,
    source_id: uuid.UUID,
    at_seq: int | None,
) -> Conversation:
    """The copy, flushed in ``session``, its objects already copied: if the caller's commit
    fails, it ``forget``s them."""
    source = await get_owned(session, principal, source_id)
    last = source.last_message_seq if at_seq is None else at_seq
    if last > source.last_message_seq:
        raise Refused(
            "invalid_at_seq", f"at_seq is past the last message ({source.last_message_seq})"
        )
    await room_for_one(session, principal, settings.max_conversations_per_user)
    now = utcnow()
    copy = Conversation(
        tenant_id=source.tenant_id,
        user_id=source.user_id,
        kind=source.kind,
        title=source.title,
        model_id=source.model_id,
        agent_id=source.agent_id,
        agent_version=source.agent_version,
        metadata_=dict(source.metadata_),
        last_message_seq=last,
        estimated_context_tokens=source.estimated_context_tokens,
        created_at=now,
        updated_at=now,
    )
    session.add(copy)
    await session.flush()
    rows = await session.scalars(
        select(Message).where(Message.conversation_id == source.id, Message.seq <= last)
    )
    kept = [
        {
            "id": uuid.uuid4(),
            "conversation_id": copy.id,
            "seq": row.seq,
            "role": row.role,
            "content": row.content,
            "parts": row.parts,
            "incomplete": row.incomplete,
            "superseded": row.superseded,
            "stop_reason": row.stop_reason,
            "created_at": row.created_at,
        }
        for row in rows
    ]
    if kept:
        await session.execute(insert(Message), kept)
    await _copy_files(session, storage, settings, source, copy)
    return copy


async def _copy_files(
    session: AsyncSession,
    storage: Storage,
    settings: Settings,
    source: Conversation,
    copy: Conversation,
) -> None:
    originals = list(
        await session.scalars(
            select(ConversationFile).where(ConversationFile.conversation_id == source.id)
        )
    )
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(original: ConversationFile) -> dict[str, object]:
        async with gate:
            info = await storage.copy(
                files.object_key(settings, source, original.path),
                files.object_key(settings, copy, original.path),
            )
        return {
            "id": uuid.uuid4(),
            "conversation_id": copy.id,
            "path": original.path,
            "size": info.size,
            "etag": info.etag,
            "content_type": original.content_type,
            "source": original.source,
            "created_at": original.created_at,
            "updated_at": original.updated_at,
        }

    # Every copy ends before the outcome is judged: one still under way would otherwise
    # land after a failure's clean-up.
    copied = await asyncio.gather(*(one(o) for o in originals), return_exceptions=True)
    failures = [outcome for outcome in copied if isinstance(outcome, BaseException)]
    if failures:
        await forget(storage, settings, copy)
        refused = next((e for e in failures if isinstance(e, StorageError)), None)
        if refused is None:
            raise failures[0]
        raise files.storage_unavailable(refused) from refused
    rows = [outcome for outcome in copied if not isinstance(outcome, BaseException)]
    if rows:
        await session.execute(insert(ConversationFile), rows)


async def forget(storage: Storage, settings: Settings, copy: Conversation) -> None:
    """Delete a copy's objects (it was not kept); best effort, as nothing refers to them."""
    with contextlib.suppress(StorageError):
        await storage.delete_prefix(files.conversation_prefix(settings, copy.tenant_id, copy.id))
