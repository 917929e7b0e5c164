"""A run's events on one API's wire: a translator per API, and the one loop that drives them.

A translator is a pure function of a run's events in order -- plus what the engine hands
it: ``RunWaiting`` when the run stops for a person, and, for APIs that show what the run
found, that (``found``) before its ``run.started``. It matches on event classes and returns
frames; it runs no query and knows no socket. The loop here gives each frame its SSE id
(the run's own event id, or the frame's number for APIs that number their own), leaves out
what a resumed client saw already, and sends each batch of frames in one write.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal, NamedTuple

from atelier.http.errors import ProblemError
from atelier.http.sse import EventBatch, EventStreamResponse, ServerSentEvent
from atelier.runs import ErrorCode, Numbered, RunEvent, RunStarted, RunWaiting, StreamError

EVENT_STREAM: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/event-stream": {"schema": {"$ref": "#/components/schemas/RunEvent"}}},
        "description": "the run's events (SSE)",
    }
}


class Frame(NamedTuple):
    event: str  # "" for protocols whose events are their data alone (AI SDK, AG-UI)
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


class Translator:
    """One API's view of a run. ``done`` once the translation ended: the run ended, or
    stopped where the API's runs stop (an interrupt)."""

    done = False
    shift = 0  # how much lower than the run's own ids the API's are (``native`` ids)

    def start(self) -> list[Frame]:
        """The frames before the run's first event (a LangGraph ``metadata``, say)."""
        return []

    def found(self, what: Any) -> None:
        """What the run found, from the loader the endpoint gave (before ``run.started``)."""

    def handle(self, event: RunEvent | RunWaiting) -> list[Frame]:
        raise NotImplementedError


class NativeTranslator(Translator):
    """``/v1``'s stream: each event as it is, under its own id."""

    def handle(self, event: RunEvent | RunWaiting) -> list[Frame]:
        if isinstance(event, RunWaiting):  # the native stream follows the run past a pause
            return []
        return [Frame(event.type, event.data)]


Ids = Literal["native", "frames", "none"]


async def translated(
    native: AsyncIterator[list[Numbered]],
    translator: Translator,
    *,
    ids: Ids = "frames",
    after_frame: int = 0,
    after_native: int = 0,
    found: Callable[[], Awaitable[Any]] | None = None,
) -> AsyncIterator[EventBatch]:
    """The frames of the run's events numbered above ``after_native``, and of those the
    ones numbered above ``after_frame`` (the start's always, when it is 0). Each frame's
    SSE id is its event's id (``native``), its own number (``frames``) or none."""
    count, shift, handle = 0, translator.shift, translator.handle

    def sse(frame: Frame, event_id: int | None) -> ServerSentEvent:
        data = frame.data if isinstance(frame.data, str) else encode(frame.data)
        if ids == "native":
            number = event_id - shift if event_id is not None else None
        else:
            number = count if ids == "frames" else None
        return ServerSentEvent(data, frame.event or None, number)  # "": data only

    out: list[ServerSentEvent] = []
    for frame in translator.start():
        count += 1
        if count > after_frame:
            out.append(sse(frame, None))
    if out:
        yield EventBatch(out)
    try:
        async for batch in native:
            out = []
            for event_id, event in batch:
                if found is not None and type(event) is RunStarted:
                    translator.found(await found())
                for frame in handle(event):
                    count += 1
                    if count > after_frame and (event_id is None or event_id > after_native):
                        out.append(sse(frame, event_id))
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


def native(events: AsyncIterator[list[Numbered]]) -> AsyncIterator[EventBatch]:
    return translated(events, NativeTranslator(), ids="native")


def stream_failed(_: BaseException) -> ServerSentEvent:
    event = StreamError(
        code=ErrorCode.STREAM_FAILED,
        message="this stream failed; the run may go on: resume with Last-Event-ID",
    )
    return ServerSentEvent(event.data, event.type)


def event_stream(events: AsyncIterator[EventBatch], location: str) -> EventStreamResponse:
    """A run's event stream; ``Location`` is where to resume it (with ``Last-Event-ID``)."""
    return EventStreamResponse(events, headers={"location": location}, on_failure=stream_failed)


def last_event_id(header: str | None, after: int | None) -> int:
    """Where a resumed stream goes on from; ``-1`` (what the LangGraph SDK sends when it has
    seen nothing) is the start."""
    if header is None or header.strip() == "-1":
        return after or 0
    if not header.isdigit() or int(header) > 2**53:
        raise ProblemError(400, "invalid_last_event_id", "Last-Event-ID must be an event number")
    return max(int(header), after or 0)


async def run_through(
    native: AsyncIterator[list[Numbered]],
    translator: Translator,
    found: Callable[[], Awaitable[Any]] | None = None,
) -> None:
    """Follow the run until the translation ends (its end, or a pause the API stops at)."""
    async for _ in translated(native, translator, found=found):
        pass
