"""Work outside the database that a unit of work must take back if it does not commit.

An upload writes its object to storage before its row exists; if the commit then fails
(a connection terminated mid-commit, a constraint), the object must go too, or storage
keeps bytes no row knows of. The service registers the undo on the session; whoever owns
the session's commit runs them when it does not commit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

log = structlog.get_logger("atelier.db")

_UNDO = "atelier.undo"
Undo = Callable[[], Awaitable[None]]


def unless_committed(session: AsyncSession, undo: Undo) -> None:
    """Run ``undo`` if ``session``'s unit of work ends without committing."""
    session.info.setdefault(_UNDO, []).append(undo)


def committed(session: AsyncSession) -> None:
    """The unit of work committed: nothing is to be undone."""
    session.info.pop(_UNDO, None)


async def not_committed(session: AsyncSession) -> None:
    """The unit of work did not commit: undo what was registered, each on its own (one
    failing undo does not keep the others from running)."""
    for undo in reversed(session.info.pop(_UNDO, [])):
        try:
            await undo()
        except Exception:
            log.warning("could not undo work of an uncommitted request", exc_info=True)
