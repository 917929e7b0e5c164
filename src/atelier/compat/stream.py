"""A run's native events as another API's events, numbered from the run's first event.

A translation is a pure function of the run's events in order (and of what the database
says of the messages they name), so the same run always gives the same numbered frames:
a client that reconnects after frame ``n`` is sent the translation from the start with
the first ``n`` frames skipped -- nothing repeated, nothing missing.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from fastapi.responses import StreamingResponse
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.responses import Response

from atelier.http.sse import EventBatch, ServerSentEvent
from atelier.runs import approvals
from atelier.runs.events import RunStatus
from atelier.runs.models import Approval, Run

log = structlog.get_logger("atelier.compat")
START = "start"  # the name a translator's first, made-up event goes by (native id 0)
HEARTBEAT_SECONDS = 15.0  # a long wait's body starts with blank lines, JSON's whitespace


@dataclass(frozen=True)
class Frame:
    event: str
    data: dict[str, Any] | list[Any] | str  # a str is the data's JSON, made already


class Template:
    """A frame's JSON made once, with holes for what changes: the hot path (a reply's
    text deltas) fills the holes instead of encoding the whole frame again."""

    HOLE = "\x00"

    def __init__(self, data: dict[str, Any] | list[Any]) -> None:
        self.parts = encode(data).split(encode(self.HOLE))

    def fill(self, *values: object) -> str:
        pieces = [self.parts[0]]
        for value, part in zip(values, self.parts[1:], strict=True):
            pieces += [encode(value), part]
        return "".join(pieces)


def encode(data: object) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


class Translator(Protocol):
    async def translate(self, name: str, data: dict[str, Any]) -> list[Frame]:
        """The frames for one native event (``START`` first); may read the database."""
        ...

    @property
    def done(self) -> bool:
        """Whether the translation ended (the run ended, or paused where the API stops)."""
        ...


async def translated(
    native: AsyncIterator[EventBatch],
    translator: Translator,
    *,
    after_frame: int = 0,
    after_native: int = 0,
    numbered: bool = True,
) -> AsyncIterator[EventBatch]:
    """The frames numbered above ``after_frame`` (the start's always, when ``after_frame``
    is 0) of the native events numbered above ``after_native``; each frame's SSE id is its
    number when ``numbered``."""
    count = 0

    def sse(frame: Frame) -> ServerSentEvent:
        data = frame.data if isinstance(frame.data, str) else encode(frame.data)
        return ServerSentEvent(data, frame.event, count if numbered else None)

    out: list[ServerSentEvent] = []
    for frame in await translator.translate(START, {}):
        count += 1
        if count > after_frame:
            out.append(sse(frame))
    if out:
        yield EventBatch(out)
    try:
        async for batch in native:
            out = []
            for event in batch.events:
                if event.event is None:
                    continue
                native_id = int(event.id) if isinstance(event.id, int | str) else 0
                for frame in await translator.translate(event.event, json.loads(event.data)):
                    count += 1
                    if count > after_frame and (native_id == 0 or native_id > after_native):
                        out.append(sse(frame))
                if translator.done:
                    break
            if out:
                yield EventBatch(out)
            if translator.done:
                return
    finally:
        aclose = getattr(native, "aclose", None)
        if aclose is not None:
            await aclose()


async def run_through(native: AsyncIterator[EventBatch], translator: Translator) -> None:
    """Follow the run until the translation ends (its end, or a pause the API stops at)."""
    async for _ in translated(native, translator):
        pass


async def paused_after(
    sessions: async_sessionmaker[AsyncSession], run_id: uuid.UUID, told: int
) -> bool:
    """Whether the run waits for a person on exactly the ``told`` calls it asked about
    since it last went on: then it said all it will until a decision (a translation ends
    there, as the other APIs' runs end at an interrupt)."""
    async with sessions() as session:
        status = await session.scalar(select(Run.status).where(Run.id == run_id))
        waiting = await session.scalar(
            select(func.count())
            .select_from(Approval)
            .where(Approval.run_id == run_id, Approval.status == approvals.PENDING)
        )
    return status == RunStatus.AWAITING_APPROVAL and waiting == told


def json_when_done(
    work: Awaitable[object],
    headers: dict[str, str],
    on_error: Callable[[Exception], object],
) -> Response:
    """A JSON body once ``work`` is done; a blank line every ``HEARTBEAT_SECONDS`` until
    then (JSON allows leading whitespace), so that no proxy takes a long wait for a dead
    connection. The headers go out at once, so a failure after them is ``on_error``'s
    body, not a cut connection."""

    async def body() -> AsyncIterator[bytes]:
        task = asyncio.ensure_future(work)
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=HEARTBEAT_SECONDS)
                if not task.done():
                    yield b"\n"
            try:
                result = task.result()
            except Exception as exc:
                log.exception("a waited-for answer failed after its headers")
                result = on_error(exc)
            yield json.dumps(result, ensure_ascii=False).encode()
        finally:
            task.cancel()

    return StreamingResponse(body(), media_type="application/json", headers=headers)
