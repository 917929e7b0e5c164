"""One chat turn: the model call runs as a supervised task, not inside the request.

The request only watches the turn's event queue. A client that disconnects does not
stop the turn: the reply is completed and saved. A model that fails mid-stream still
leaves the user's message (committed before the call, BUG-015), the partial reply
marked incomplete, and the usage it reported.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import update

from atelier.chats import service
from atelier.chats.models import Chat
from atelier.chats.models import ChatMessage as StoredMessage
from atelier.http.sse import ServerSentEvent
from atelier.llm.base import (
    ChatMessage,
    ModelError,
    ModelRequest,
    Stop,
    TextDelta,
    UsageReport,
)
from atelier.llm.models import CatalogModel
from atelier.resources import Resources
from atelier.usage.money import money_str
from atelier.usage.service import record_usage

log = structlog.get_logger("atelier.chats")
SYSTEM_PROMPT = "You are a helpful assistant."


@dataclass
class TurnResult:
    message: StoredMessage
    error: dict[str, str] | None = None


@dataclass
class ChatTurn:
    resources: Resources
    tenant_id: uuid.UUID
    user_id: str
    chat_id: uuid.UUID
    model: CatalogModel
    history: list[ChatMessage]
    wants_title: bool
    events: asyncio.Queue[ServerSentEvent | None] = field(default_factory=asyncio.Queue)
    _next_id: int = 0

    def emit(self, name: str, data: dict[str, Any]) -> None:
        self._next_id += 1
        self.events.put_nowait(ServerSentEvent(json.dumps(data), name, self._next_id))

    async def stream(self) -> AsyncIterator[ServerSentEvent]:
        while (event := await self.events.get()) is not None:
            yield event

    async def run(self) -> TurnResult:
        """Run the turn; the stream always gets a terminal event, whatever fails."""
        try:
            return await self._run()
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                log.exception("chat turn could not be saved")
            self.emit(
                "error", {"code": "internal_error", "message": "the reply could not be saved"}
            )
            raise
        finally:
            self.events.put_nowait(None)

    async def _run(self) -> TurnResult:
        provider = self.resources.models.get(self.model.provider)
        text: list[str] = []
        usage = UsageReport()
        stop: str | None = None
        error: dict[str, str] | None = None
        try:
            if provider is None:
                raise ModelError(f"provider {self.model.provider!r} is not configured")
            request = ModelRequest(
                model=self.model.provider_model_id,
                system=SYSTEM_PROMPT,
                messages=self.history,
                max_tokens=self.model.max_output_tokens or 4096,
            )
            async with asyncio.timeout(self.resources.settings.model_timeout_seconds):
                async for event in provider.stream(request):
                    if isinstance(event, TextDelta):
                        text.append(event.text)
                        self.emit("message.delta", {"text": event.text})
                    elif isinstance(event, UsageReport):
                        usage = event
                    elif isinstance(event, Stop):
                        stop = event.reason
        except TimeoutError:
            error = {"code": "model_timeout", "message": "the model did not finish in time"}
        except ModelError as exc:
            error = {"code": "model_error", "message": str(exc)}
        except asyncio.CancelledError:
            error = {"code": "cancelled", "message": "the service is shutting down"}
            await asyncio.shield(self._save("".join(text), usage, error, stop))
            raise
        except Exception as exc:
            log.exception("chat turn failed")
            error = {"code": "model_error", "message": type(exc).__name__}
        message, cost = await asyncio.shield(self._save("".join(text), usage, error, stop))
        self.emit(
            "message.completed",
            {
                "message_id": str(message.id),
                "seq": message.seq,
                "role": "assistant",
                "content": message.content,
                "incomplete": message.incomplete,
                "stop_reason": message.stop_reason,
            },
        )
        self.emit(
            "usage",
            {
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "cost": money_str(cost) if cost is not None else None,
            },
        )
        if error is None and self.wants_title:
            await self._title(message.content)
        self.emit("error" if error else "done", error or {})
        return TurnResult(message=message, error=error)

    async def _save(
        self, text: str, usage: UsageReport, error: dict[str, str] | None, stop: str | None
    ) -> tuple[StoredMessage, Decimal | None]:
        async with self.resources.sessionmaker() as session:
            message = await service.append_message(
                session,
                self.chat_id,
                "assistant",
                text,
                model_id=self.model.id,
                # A model failure, or the output limit, cut the reply short.
                incomplete=error is not None or stop == "max_tokens",
                stop_reason=stop,
            )
            record = await record_usage(
                session,
                tenant_id=self.tenant_id,
                user_id=self.user_id,
                model=self.model,
                usage=usage,
                chat_id=self.chat_id,
            )
            # Totals accumulate in SQL: concurrent turns never overwrite each other (BUG-009).
            await session.execute(
                update(Chat)
                .where(Chat.id == self.chat_id)
                .values(
                    total_input_tokens=Chat.total_input_tokens + (usage.input_tokens or 0),
                    total_output_tokens=Chat.total_output_tokens + (usage.output_tokens or 0),
                    total_cost=Chat.total_cost + (record.cost or 0),
                )
            )
            await session.commit()
        return message, record.cost

    async def _title(self, reply: str) -> None:
        """Title the chat in the background; stream it if it is ready soon, never wait long."""
        user_text = next((m.content for m in self.history if m.role == "user"), "")
        task = self.resources.supervisor.spawn(
            self._make_title(user_text, reply), name=f"title-{self.chat_id}"
        )
        done, _ = await asyncio.wait({task}, timeout=self.resources.settings.title_wait_seconds)
        if task in done and not task.cancelled() and task.exception() is None and task.result():
            self.emit("title.updated", {"title": task.result()})

    async def _make_title(self, user_text: str, reply: str) -> str | None:
        try:
            title = await self.resources.titles.generate(self.model, user_text, reply)
        except Exception:
            log.warning("title generation failed", chat_id=str(self.chat_id), exc_info=True)
            return None
        async with self.resources.sessionmaker() as session:
            # Only if nobody named the chat meanwhile.
            await session.execute(
                update(Chat)
                .where(Chat.id == self.chat_id, Chat.title.is_(None))
                .values(title=title)
            )
            await session.commit()
        return title
