"""What the compatibility APIs share besides their translators (``atelier.http.translate``):
a JSON answer that waits for a run without a proxy taking the wait for a dead connection."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import structlog
from fastapi.responses import StreamingResponse
from starlette.responses import Response

log = structlog.get_logger("atelier.compat")
HEARTBEAT_SECONDS = 15.0  # a long wait's body starts with blank lines, JSON's whitespace


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
