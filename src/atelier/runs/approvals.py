"""Tool calls that wait: for a person's decision (an approval), or for the result of a
tool the caller runs (a client tool). Functions flush; the caller commits.

A run that waits does so in its row (``awaiting_approval``, ``awaiting_tool_result``),
holding no task and no lock; its conversation stays busy (it is still the active run).
Once every call is decided or answered -- from any process, or denied when it expires --
any process may resume it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Exists, and_, exists, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.db.base import utcnow
from atelier.errors import Conflict, NotFound
from atelier.llm.base import ToolCall
from atelier.runs.events import WAITING_STATUSES
from atelier.runs.models import Approval, Run

PENDING, APPROVED, DENIED = "pending", "approved", "denied"
APPROVAL, CLIENT_TOOL = "approval", "client_tool"


@dataclass(frozen=True)
class Decision:
    """A person's word on a call; for a client tool, its result (``output``), or its
    denial when no result came in time."""

    approved: bool
    reason: str | None
    output: str | None = None
    is_error: bool = False
    client: bool = False  # a client tool's call


def undecided(run_id: uuid.UUID | Any) -> Exists:
    """Whether the run still waits for a decision (``run_id``: a value or a column)."""
    return exists().where(Approval.run_id == run_id, Approval.status == PENDING)


async def request(
    session: AsyncSession,
    run_id: uuid.UUID,
    calls: list[ToolCall],
    expires_at: datetime,
    *,
    first_event_id: int,
    client_tools: frozenset[str] = frozenset(),
) -> None:
    """Pending approvals of ``calls`` (results, for the calls of ``client_tools``),
    announced by events numbered from ``first_event_id``."""
    now = utcnow()
    await session.execute(
        insert(Approval),
        [
            {
                "id": uuid.uuid4(),
                "run_id": run_id,
                "call_id": call.id,
                "name": call.name,
                "input": call.arguments,
                "status": PENDING,
                "created_at": now,
                "expires_at": expires_at,
                "event_id": first_event_id + number,
                "kind": CLIENT_TOOL if call.name in client_tools else APPROVAL,
            }
            for number, call in enumerate(calls)
        ],
    )


async def decide(
    session: AsyncSession, run_id: uuid.UUID, call_id: str, approved: bool, reason: str | None
) -> None:
    """Record a decision, once: a second one is ``409 already_decided``."""
    status = APPROVED if approved else DENIED
    await _settle(session, run_id, call_id, APPROVAL, status=status, reason=reason)


async def _settle(
    session: AsyncSession, run_id: uuid.UUID, call_id: str, kind: str, **values: Any
) -> None:
    """Give a waiting call of ``kind`` its decision or result, once: ``NotFound`` if the run
    waits for no such call, ``409 already_decided`` if it has one."""
    settled = await session.scalar(
        update(Approval)
        .where(
            Approval.run_id == run_id,
            Approval.call_id == call_id,
            Approval.kind == kind,
            Approval.status == PENDING,
        )
        .values(**values, decided_at=utcnow())
        .returning(Approval.id)
    )
    if settled is not None:
        return
    found = await session.scalar(
        select(Approval.status).where(
            Approval.run_id == run_id, Approval.call_id == call_id, Approval.kind == kind
        )
    )
    if found is None:
        raise NotFound("not_found", "the run waits for no such call")
    raise Conflict("already_decided", f"this call was already {found}")


async def pending(session: AsyncSession, run_id: uuid.UUID) -> list[Approval]:
    """The calls of the run that wait for a decision, in the order they were asked."""
    rows = await session.scalars(
        select(Approval)
        .where(Approval.run_id == run_id, Approval.status == PENDING)
        .order_by(Approval.created_at, Approval.call_id)
    )
    return list(rows)


async def answer(
    session: AsyncSession, run_id: uuid.UUID, call_id: str, output: str, is_error: bool
) -> None:
    """Record a client tool's result, once: a second one is ``409 already_decided``."""
    await _settle(
        session, run_id, call_id, CLIENT_TOOL, status=APPROVED, output=output, is_error=is_error
    )


async def decided(session: AsyncSession, run_id: uuid.UUID) -> list[Approval]:
    """The calls of the run that were decided, in the order they were."""
    rows = await session.scalars(
        select(Approval)
        .where(Approval.run_id == run_id, Approval.status != PENDING)
        .order_by(Approval.decided_at)
    )
    return list(rows)


async def decisions(session: AsyncSession, run_id: uuid.UUID) -> dict[str, Decision]:
    rows = await session.scalars(
        select(Approval).where(Approval.run_id == run_id, Approval.status != PENDING)
    )
    return {
        row.call_id: Decision(
            row.status == APPROVED, row.reason, row.output, row.is_error, row.kind == CLIENT_TOOL
        )
        for row in rows
    }


async def expire(session: AsyncSession, reason: str) -> set[uuid.UUID]:
    """Deny every call whose time to be decided has passed; the runs they belong to."""
    rows = await session.scalars(
        update(Approval)
        .where(Approval.status == PENDING, Approval.expires_at < utcnow())
        .values(status=DENIED, reason=reason, decided_at=utcnow())
        .returning(Approval.run_id)
    )
    return set(rows)


async def deny_pending(session: AsyncSession, run_id: uuid.UUID, reason: str) -> None:
    await session.execute(
        update(Approval)
        .where(Approval.run_id == run_id, Approval.status == PENDING)
        .values(status=DENIED, reason=reason, decided_at=utcnow())
    )


async def decided_runs(session: AsyncSession, limit: int = 100) -> list[uuid.UUID]:
    """Runs that wait although every call of theirs is decided: ready to go on."""
    rows = await session.scalars(
        select(Run.id)
        .where(and_(Run.status.in_(WAITING_STATUSES), ~undecided(Run.id)))
        .limit(limit)
    )
    return list(rows)
