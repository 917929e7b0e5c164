"""A conversation's title: made from its first message beside the run (BUG-005: a slow
title model never holds the run up), saved whenever it is ready, and announced by the run
only if it is ready within ``ATELIER_TITLE_WAIT_SECONDS`` of the run's end."""

from __future__ import annotations

import asyncio

import structlog
from sqlalchemy import update

from atelier.conversations.models import Conversation
from atelier.runs.environment import RunEnvironment
from atelier.runs.recorder import Opened

log = structlog.get_logger("atelier.runs")


def start_title(env: RunEnvironment, opened: Opened, text: str) -> asyncio.Task[str | None]:
    conversation = opened.conversation
    return env.supervisor.spawn(_make(env, opened, text), name=f"title-{conversation.id}")


async def _make(env: RunEnvironment, opened: Opened, text: str) -> str | None:
    conversation_id = opened.conversation.id
    try:
        title = await env.titles.generate(opened.model, text, "")
    except Exception:
        log.warning("title generation failed", conversation_id=str(conversation_id))
        return None
    async with env.sessions() as session:
        named = await session.execute(
            update(Conversation)
            .where(Conversation.id == conversation_id, Conversation.title.is_(None))
            .values(title=title)
        )
        await session.commit()
    return title if named.rowcount else None  # type: ignore[attr-defined]


async def ready_title(task: asyncio.Task[str | None], wait_seconds: float) -> str | None:
    done, _ = await asyncio.wait({task}, timeout=wait_seconds)
    if task in done and not task.cancelled() and task.exception() is None:
        return task.result()
    return None
