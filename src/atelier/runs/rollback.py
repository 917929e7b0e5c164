"""Rollback: a run cancelled to make way for another is undone -- its messages removed and
its files put back as they were.

Before a run first replaces or deletes a file, the file is copied inside the storage
(``workspace.service.undo_prefix``) and noted in ``run_file_backups``; a file it creates
is noted as such. Only a conversation's last run can be rolled back (the run a rollback
request cancels), so a run that ends drops what the runs before it kept.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.conversations.models import Message
from atelier.runs.models import Run, RunFileBackup
from atelier.settings import Settings
from atelier.workspace import cleanup
from atelier.workspace import service as files
from atelier.workspace.base import Storage, StorageError
from atelier.workspace.models import ConversationFile
from atelier.workspace.service import Workspace, object_key, undo_prefix
from atelier.workspace.sync import FileChange

CONCURRENCY = 8


async def back_up(
    session: AsyncSession,
    storage: Storage,
    settings: Settings,
    conversation: Workspace,
    run_id: uuid.UUID,
    changes: list[FileChange],
) -> None:
    """Keep what each file was before the run's first change to it (raises StorageError)."""
    paths = [change.path for change in changes]
    if not paths:
        return
    kept = set(
        await session.scalars(
            select(RunFileBackup.path).where(
                RunFileBackup.run_id == run_id, RunFileBackup.path.in_(paths)
            )
        )
    )
    fresh = [path for path in paths if path not in kept]
    if not fresh:
        return
    before = {
        row.path: row
        for row in await session.scalars(
            select(ConversationFile).where(
                ConversationFile.conversation_id == conversation.id,
                ConversationFile.path.in_(fresh),
            )
        )
    }
    gate = asyncio.Semaphore(CONCURRENCY)
    prefix = undo_prefix(settings, conversation.tenant_id, conversation.id, run_id)

    async def keep(path: str) -> dict[str, Any]:
        row = before.get(path)
        if row is None:  # the run creates it: undone by deleting it
            return {"run_id": run_id, "path": path, "backup_key": None}
        async with gate:
            await storage.copy(object_key(settings, conversation, path), prefix + path)
        return {
            "run_id": run_id,
            "path": path,
            "backup_key": prefix + path,
            "source": row.source,
            "created_at": row.created_at,
        }

    rows = await _all(keep(path) for path in fresh)
    await session.execute(insert(RunFileBackup), rows)


async def undo(
    storage: Storage,
    settings: Settings,
    run_id: uuid.UUID,
    session: AsyncSession,
    conversation: Workspace,
) -> None:
    """Put the conversation back as it was before ``run_id``: its files restored (or
    deleted, if it created them) and its messages removed, in ``session``."""
    kept = list(await session.scalars(select(RunFileBackup).where(RunFileBackup.run_id == run_id)))

    async def put_back(backup: RunFileBackup) -> None:
        key = object_key(settings, conversation, backup.path)
        if backup.backup_key is None:
            await storage.delete(key)
        else:
            info = await storage.copy(backup.backup_key, key)
        row = await files.find_file(session, conversation, backup.path)
        if backup.backup_key is None:
            if row is not None:
                await session.delete(row)
            return
        restored = await files.record(
            session, conversation, backup.path, info, backup.source or "agent"
        )
        restored.file.created_at = backup.created_at or restored.file.created_at

    try:  # one at a time: each file's row follows its object, in the one session
        for backup in kept:
            await put_back(backup)
    except StorageError as exc:
        raise files.storage_unavailable(exc) from exc
    await session.execute(
        delete(Message).where(Message.conversation_id == conversation.id, Message.run_id == run_id)
    )
    await _forget(session, settings, conversation, [run_id])
    await session.flush()


async def forget_earlier(
    session: AsyncSession, settings: Settings, conversation: Workspace, run_id: uuid.UUID
) -> None:
    """The run ends: what the conversation's earlier runs kept can no longer be needed."""
    earlier = await session.scalars(
        select(RunFileBackup.run_id)
        .distinct()
        .join(Run, Run.id == RunFileBackup.run_id)
        .where(Run.conversation_id == conversation.id, Run.id != run_id)
    )
    runs = list(earlier)
    if runs:
        await _forget(session, settings, conversation, runs)


async def _forget(
    session: AsyncSession, settings: Settings, conversation: Workspace, runs: list[uuid.UUID]
) -> None:
    await session.execute(delete(RunFileBackup).where(RunFileBackup.run_id.in_(runs)))
    for run in runs:  # their copies go with the storage clean-ups (retried until gone)
        await cleanup.schedule(
            session, undo_prefix(settings, conversation.tenant_id, conversation.id, run)
        )


async def _all(jobs: Any) -> list[dict[str, Any]]:
    """Every job's result; all of them end before a failure is raised."""
    outcomes = await asyncio.gather(*jobs, return_exceptions=True)
    results: list[dict[str, Any]] = []
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
        results.append(outcome)
    return results
