"""Fakes of the LLM port for tests: a scripted model and a slow title generator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from atelier.llm.base import ModelError, ModelRequest, Stop, StreamEvent, TextDelta, UsageReport
from atelier.llm.models import CatalogModel


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
                yield TextDelta(word)
            if self.usage is not None:
                yield self.usage
            yield Stop("end_turn")
        finally:
            self.closed.set()


class SlowTitles:
    def __init__(self, seconds: float, title: str = "A slow title") -> None:
        self.seconds = seconds
        self.title = title

    async def generate(self, model: CatalogModel, user_text: str, reply: str) -> str:
        await asyncio.sleep(self.seconds)
        return self.title
