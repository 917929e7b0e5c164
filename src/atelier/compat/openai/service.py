"""The Responses API's rules and queries, on the conversations and runs of ``/v1``: the
endpoints parse and present; what a response is, continues and may do is decided here."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from atelier.conversations.models import Message


async def question_seq(sessions: async_sessionmaker[AsyncSession], run_id: uuid.UUID) -> int:
    """The seq of the run's question: its reply's comes next."""
    async with sessions() as session:
        seq = await session.scalar(
            select(func.min(Message.seq)).where(Message.run_id == run_id, Message.role == "user")
        )
    return seq or 0
