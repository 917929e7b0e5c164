"""Fakes of the LLM port for tests: a scripted model and a remote model whose titles wait."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from atelier.llm.base import ModelError, ModelRequest, Stop, StreamEvent, TextDelta, UsageReport
from atelier.llm.titles import TITLE_PROMPT


class ScriptedModel:
    """Streams ``words``; may fail after ``fail_after`` words."""

    provider = "scripted"

    def __init__(
        self,
        words: list[str],
        *,
        usage: UsageReport | None = None,
        delay: float = 0.0,
        fail_after: int | None = None,
    ) -> None:
        self.words = words
        self.usage = usage
        self.delay = delay
        self.fail_after = fail_after
        self.requests: list[ModelRequest] = []
        self.sent = 0  # words streamed so far, over every request
        self.closed = asyncio.Event()

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        self.requests.append(request)
        try:
            for index, word in enumerate(self.words):
                if self.fail_after is not None and index == self.fail_after:
                    if self.usage is not None:
                        yield self.usage
                    raise ModelError("the provider broke off mid-stream")
                await asyncio.sleep(self.delay)
                self.sent += 1
                yield TextDelta(word)
            if self.usage is not None:
                yield self.usage
            yield Stop("end_turn")
        finally:
            self.closed.set()


class GatedTitleModel(ScriptedModel):
    """A remote model: replies stream at once; a title request (the title generator's
    prompt) waits until ``release`` is set, then answers ``title``."""

    provider = "anthropic"

    def __init__(self, words: list[str], title: str = "A gated title") -> None:
        super().__init__(words)
        self.title = title
        self.release = asyncio.Event()
        self.title_requested = asyncio.Event()

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        if request.system != TITLE_PROMPT:
            async for event in super().stream(request):
                yield event
            return
        self.title_requested.set()
        await self.release.wait()
        yield TextDelta(self.title)
        yield Stop("end_turn")
