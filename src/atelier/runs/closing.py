"""How a run's row ends: the files it changed uploaded and recorded with its final status,
in one unit of work retried while the database is unreachable; then the events that say
so, under the ids the row recorded."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

import atelier.runs.rollback as rollback
import atelier.runs.service as service
from atelier.runs.events import (
    ErrorCode,
    FileChanged,
    RunError,
    RunEvent,
    RunStatus,
    TitleUpdated,
    ended,
)
from atelier.runs.recorder import Recorder
from atelier.workspace.sync import Collected, WorkspaceSync

log = structlog.get_logger("atelier.runs")


@dataclass
class Ending:
    """What a closed run still announces, with the ids it recorded for them."""

    changes: list[FileChanged] = field(default_factory=list)
    title: str | None = None
    final: RunEvent | None = None


async def close(
    recorder: Recorder,
    status: RunStatus,
    error: RunError | None,
    *,
    sync: WorkspaceSync | None,
    directory: Path | None,
    title: str | None,
) -> tuple[RunStatus, RunError | None, Ending]:
    """Upload and record the files the run changed and give the run its end, in one
    unit of work, retried until the database takes it (the run keeps its lock
    meanwhile, so nobody takes it for dead; the files are uploaded again and recorded
    with it, so none is left in storage without its row). Returns the final status
    (storage may have failed) and what is left to announce."""

    async def close_once() -> tuple[RunStatus, RunError | None, Collected]:
        async with recorder.sessions() as session:
            collected, final_status, final_error = await collect(
                recorder, session, sync, directory, status, error
            )
            final_id = recorder.events.last_id + len(collected.changes) + (title is not None) + 1
            if sync is not None:
                await rollback.forget_earlier(
                    session, sync.settings, recorder.conversation, recorder.run_id
                )
            await service.end_run(
                session, recorder.run_id, final_status, final_error, last_event_id=final_id
            )
            await session.commit()
        return final_status, final_error, collected

    status, error, collected = await recorder.persisting("run could not be closed", close_once)
    if sync is not None and directory is not None:
        await sync.remember(directory, collected)
    changes = [FileChanged(path=c.path, size=c.size, change=c.change) for c in collected.changes]
    return status, error, Ending(changes, title, ended(status, str(recorder.run_id), error))


async def collect(
    recorder: Recorder,
    session: AsyncSession,
    sync: WorkspaceSync | None,
    directory: Path | None,
    status: RunStatus,
    error: RunError | None,
) -> tuple[Collected, RunStatus, RunError | None]:
    """The run's files, uploaded and recorded in ``session``; a run that completed but
    whose files storage refused (some or all) ends failed, with those it took."""
    if sync is None or directory is None:
        return Collected([], {}, None), status, error
    # What the files were before the run changed them, should the run be rolled back.
    back_up = functools.partial(
        rollback.back_up,
        session,
        sync.storage,
        sync.settings,
        recorder.conversation,
        recorder.run_id,
    )
    try:
        collected = await sync.collect_and_upload(
            session, recorder.conversation, directory, before=back_up
        )
    except DBAPIError:
        raise
    except Exception:  # the local copy could not be read: the row still ends
        log.exception("run files could not be collected", run_id=str(recorder.run_id))
        failure = RunError(code=ErrorCode.INTERNAL_ERROR, message="the run's files were lost")
        ended_as = RunStatus.FAILED if status == RunStatus.COMPLETED else status
        return Collected([], {}, None), ended_as, error or failure
    if collected.error is not None and status == RunStatus.COMPLETED:
        status = RunStatus.FAILED
        error = RunError(
            code=ErrorCode.STORAGE_UNAVAILABLE,
            message=f"workspace storage failed: {collected.error}",
        )
    return collected, status, error


def announce(recorder: Recorder, ending: Ending) -> None:
    """The closed run's last events, under the ids its row recorded."""
    for change in ending.changes:
        recorder.events.emit(change)
    if ending.title is not None:
        recorder.events.emit(TitleUpdated(title=ending.title))
    if ending.final is not None:
        recorder.events.emit(ending.final)
