"""A run's native events as another API's events, numbered from the run's first event.

A translation is a pure function of the run's events in order (and of what the database
says of the messages they name), so the same run always gives the same numbered frames:
a client that reconnects after frame ``n`` is sent the translation from the start with
the first ``n`` frames skipped -- nothing repeated, nothing missing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from atelier.http.sse import EventBatch, ServerSentEvent

START = "start"  # the name a translator's first, made-up event goes by (native id 0)


@dataclass(frozen=True)
class Frame:
    event: str
    data: dict[str, Any] | list[Any]


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
        data = json.dumps(frame.data, separators=(",", ":"), ensure_ascii=False)
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
