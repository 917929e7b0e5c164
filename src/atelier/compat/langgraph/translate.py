"""A run's events as a LangGraph run stream: ``metadata`` first, then per stream mode
``values`` (the thread's messages after each step), ``updates`` (each step's messages,
by node), ``messages`` (``messages-tuple``: reply chunks as they stream, then tool
results) and ``custom`` (Atelier's own events: tools, files, usage). A run that stops to
wait for a person ends its stream with its interrupts, as a LangGraph run does."""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from atelier.compat.langgraph import present
from atelier.compat.langgraph.threads import Thread
from atelier.compat.stream import START, Frame, Template, paused_after
from atelier.conversations.models import Message
from atelier.runs.events import TERMINAL_TYPES

STREAM_MODES = frozenset({"values", "updates", "messages-tuple", "custom"})
CUSTOM = frozenset(
    {
        "tool.started",
        "tool.completed",
        "tools.unavailable",
        "file.changed",
        "usage",
        "title.updated",
    }
)


class LangGraphTranslator:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        thread: Thread,
        run_id: uuid.UUID,
        modes: frozenset[str],
    ) -> None:
        self.sessions = sessions
        self.thread = thread
        self.run_id = run_id
        self.modes = modes
        self.messages: list[dict[str, Any]] = []  # the thread's, as of the last step
        self.last_seq = 0  # the last stored message of the run
        self.streamed = False  # whether the reply under way sent chunks
        self.delta: Template | None = None  # the reply's chunk frame, with a hole for text
        self.interrupts: list[dict[str, Any]] = []
        self.unflushed = False  # interrupts told whose values frame is still to come
        self.done = False

    async def translate(self, name: str, data: dict[str, Any]) -> list[Frame]:
        # The interrupts' frame comes where the run stopped to wait: live, as soon as it
        # waits (the stream ends there); in a replay, before whatever came next. Either
        # way the same frames under the same numbers.
        if self.unflushed and name != "approval.requested":
            self.unflushed = False
            return self._values(self.interrupts) + await self._translate(name, data)
        return await self._translate(name, data)

    async def _translate(self, name: str, data: dict[str, Any]) -> list[Frame]:
        if name == START:
            return [Frame("metadata", {"run_id": str(self.run_id), "attempt": 1})]
        if name == "run.started":
            await self._load_thread()
            return self._values()
        if name == "message.delta":
            self.streamed = True
            if "messages-tuple" not in self.modes:
                return []
            if self.delta is None:  # the first chunk of this reply: its frame, once
                self.delta = Template(self._chunk(Template.HOLE, []).data)  # type: ignore[arg-type]
            return [Frame("messages", self.delta.fill(data["text"]))]
        if name == "message.completed":
            return await self._completed(data)
        if name == "approval.requested":
            return await self._interrupted(data)
        if name == "approval.resolved":
            self.interrupts = []
        if name in TERMINAL_TYPES:
            self.done = True
            error = data.get("error")
            if name in ("run.failed", "run.timed_out") and error:
                return [Frame("error", {"error": error["code"], "message": error["message"]})]
            # "error" (this stream broke, the run goes on): ending the stream makes the
            # SDK ask the run, find it running and reconnect with its Last-Event-ID.
            return []
        if name in CUSTOM and "custom" in self.modes:
            return [Frame("custom", {"type": name, **data})]
        return []

    async def _load_thread(self) -> None:
        """The thread as the run found it: its messages up to the run's question."""
        asked = (
            select(func.min(Message.seq))
            .where(Message.run_id == self.run_id, Message.role == "user")
            .scalar_subquery()
        )
        async with self.sessions() as session:
            rows = list(
                await session.scalars(
                    select(Message)
                    .where(
                        Message.conversation_id == self.thread.conversation_id,
                        Message.seq <= asked,
                        Message.superseded.is_(False),
                    )
                    .order_by(Message.seq)
                )
            )
        self.last_seq = rows[-1].seq if rows else 0
        self.messages = present.values(rows)["messages"]

    async def _completed(self, data: dict[str, Any]) -> list[Frame]:
        async with self.sessions() as session:
            row = await session.get(Message, uuid.UUID(data["message_id"]))
        if row is None:  # its conversation is gone: what the event said is all there is
            row = Message(
                id=uuid.UUID(data["message_id"]),
                seq=data["seq"],
                role=data["role"],
                content=data["content"],
                run_id=self.run_id,
                parts=None,
                superseded=False,
                stop_reason=data.get("stop_reason"),
            )
        converted = present.messages(row)
        self.last_seq = max(self.last_seq, row.seq)
        self.messages += converted
        frames = []
        if "messages-tuple" in self.modes:
            if row.role == "assistant":
                calls = converted[0]["tool_calls"]
                text = "" if self.streamed else row.content
                if calls or text:
                    frames.append(self._chunk(text, calls, seq=row.seq))
            elif row.role == "tool":
                frames += [
                    Frame("messages", [message, self._metadata(present.TOOLS_NODE)])
                    for message in converted
                ]
        self.streamed, self.delta = False, None
        if "updates" in self.modes and row.role != "user":
            node = present.AGENT_NODE if row.role == "assistant" else present.TOOLS_NODE
            frames.append(Frame("updates", {node: {"messages": converted}}))
        return frames + self._values()

    async def _interrupted(self, data: dict[str, Any]) -> list[Frame]:
        this = present.interrupt(data)
        self.interrupts.append(this)
        self.unflushed = True
        frames = []
        if "updates" in self.modes:
            frames.append(Frame("updates", {"__interrupt__": [this]}))
        # The stream ends once every call the run waits on was told (as a LangGraph run
        # ends at an interrupt); a resume decides them and follows the same run.
        if await paused_after(self.sessions, self.run_id, len(self.interrupts)):
            self.done, self.unflushed = True, False
            return frames + self._values(self.interrupts)
        return frames

    def _values(self, interrupts: list[dict[str, Any]] | None = None) -> list[Frame]:
        if "values" not in self.modes:
            return []
        state: dict[str, Any] = {"messages": list(self.messages)}
        if interrupts:
            state["__interrupt__"] = interrupts
        return [Frame("values", state)]

    def _chunk(self, text: str, calls: list[dict[str, Any]], seq: int | None = None) -> Frame:
        chunk: dict[str, Any] = {
            "type": "AIMessageChunk",
            "content": text,
            "id": present.message_id(self.run_id, seq or self.last_seq + 1, self.run_id),
            "additional_kwargs": {},
            "response_metadata": {},
            "name": None,
            "tool_calls": calls,
            "invalid_tool_calls": [],
            "tool_call_chunks": [
                {"name": c["name"], "args": json.dumps(c["args"]), "id": c["id"], "index": i}
                for i, c in enumerate(calls)
            ],
        }
        return Frame("messages", [chunk, self._metadata(present.AGENT_NODE)])

    def _metadata(self, node: str) -> dict[str, Any]:
        return {
            "run_id": str(self.run_id),
            "thread_id": str(self.thread.thread_id),
            "langgraph_node": node,
            "langgraph_step": self.last_seq,
        }
