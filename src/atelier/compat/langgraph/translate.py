"""A run's events as a LangGraph run stream: ``metadata`` first, then per stream mode
``values`` (the thread's messages after each step), ``updates`` (each step's messages,
by node), ``messages`` (``messages-tuple``: reply chunks as they stream, then tool
results) and ``custom`` (Atelier's own events: tools, files, usage). A run that stops to
wait for a person ends its stream with its interrupts, as a LangGraph run does."""

from __future__ import annotations

import json
import uuid
from typing import Any

from atelier.compat.langgraph import present
from atelier.compat.langgraph.schemas import Thread
from atelier.conversations.models import Message
from atelier.http.translate import Frame, Template, Translator
from atelier.runs import (
    ApprovalRequested,
    ApprovalResolved,
    FileChanged,
    MessageCompleted,
    MessageDelta,
    RunCancelled,
    RunCompleted,
    RunEvent,
    RunFailed,
    RunStarted,
    RunTimedOut,
    RunWaiting,
    StreamError,
    TitleUpdated,
    ToolCompleted,
    ToolRequested,
    ToolStarted,
    ToolsUnavailable,
    Usage,
)

STREAM_MODES = frozenset({"values", "updates", "messages-tuple", "custom", "tools"})


class LangGraphTranslator(Translator):
    def __init__(self, thread: Thread, run_id: uuid.UUID, modes: frozenset[str]) -> None:
        self.thread = thread
        self.run_id = run_id
        self.modes = modes
        self.messages: list[dict[str, Any]] = []  # the thread's, as of the last step
        self.last_seq = 0  # the last stored message of the run
        self.streamed = False  # whether the reply under way sent chunks
        self.delta: Template | None = None  # the reply's chunk frame, with a hole for text
        self.interrupts: list[dict[str, Any]] = []
        self.unflushed = False  # interrupts told whose values frame is still to come

    def start(self) -> list[Frame]:
        return [Frame("metadata", {"run_id": str(self.run_id), "attempt": 1})]

    def found(self, what: Any) -> None:
        """The thread as the run found it: its messages up to the run's question."""
        rows: list[Message] = what
        self.last_seq = rows[-1].seq if rows else 0
        self.messages = present.values(rows)["messages"]

    def handle(self, event: RunEvent | RunWaiting) -> list[Frame]:
        # The interrupts' frame comes where the run stopped to wait: live, once it waits
        # (the stream ends there); in a replay, before whatever came next. Either way the
        # same frames under the same numbers.
        if self.unflushed and not isinstance(event, ApprovalRequested | ToolRequested):
            self.unflushed = False
            if isinstance(event, RunWaiting):
                self.done = True
                return self._values(self.interrupts)
            return self._values(self.interrupts) + self._handle(event)
        return self._handle(event)

    def _handle(self, event: RunEvent | RunWaiting) -> list[Frame]:
        match event:
            case RunStarted():
                return self._values()
            case MessageDelta(text=text):
                self.streamed = True
                if "messages-tuple" not in self.modes:
                    return []
                if self.delta is None:  # the first chunk of this reply: its frame, once
                    self.delta = Template(self._chunk(Template.HOLE, []).data)  # type: ignore[arg-type]
                return [Frame("messages", self.delta.fill(text))]
            case MessageCompleted():
                return self._completed(event)
            case ApprovalRequested() | ToolRequested():
                return self._interrupted(event)
            case ApprovalResolved():
                self.interrupts = []
            case RunCompleted() | RunCancelled():
                self.done = True
            case RunFailed() | RunTimedOut():
                self.done = True
                if event.error is not None:
                    error = {"error": event.error.code, "message": event.error.message}
                    return [Frame("error", error)]
            case StreamError():
                # This stream broke (the run goes on): ending the stream makes the SDK ask
                # the run, find it running and reconnect with its Last-Event-ID.
                self.done = True
            case ToolStarted() | ToolCompleted():
                return self._tool(event) + self._custom(event)
            case ToolsUnavailable() | FileChanged() | Usage():
                return self._custom(event)
            case TitleUpdated():
                return self._custom(event)
        return []

    def _tool(self, event: ToolStarted | ToolCompleted) -> list[Frame]:
        """The ``tools`` mode: a tool call's start and end, as useStream reads them."""
        if "tools" not in self.modes:
            return []
        said: dict[str, Any] = {"toolCallId": event.call_id, "name": event.name}
        if isinstance(event, ToolStarted):
            said |= {"event": "on_tool_start", "input": event.input}
        elif event.is_error:
            said |= {"event": "on_tool_error", "error": {"message": event.output}}
        else:
            said |= {"event": "on_tool_end", "output": event.output}
        return [Frame("tools", said)]

    def _custom(self, event: RunEvent) -> list[Frame]:
        if "custom" not in self.modes:
            return []
        return [Frame("custom", {"type": event.type, **json.loads(event.data)})]

    def _completed(self, event: MessageCompleted) -> list[Frame]:
        row = Message(
            id=uuid.UUID(event.message_id),
            seq=event.seq,
            role=event.role,
            content=event.content,
            run_id=self.run_id,
            parts=event.parts,
            superseded=False,
            stop_reason=event.stop_reason,
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

    def _interrupted(self, event: ApprovalRequested | ToolRequested) -> list[Frame]:
        client = isinstance(event, ToolRequested)
        this = present.interrupt(event.model_dump(mode="json"), client)
        self.interrupts.append(this)
        self.unflushed = True
        if "updates" in self.modes:
            return [Frame("updates", {"__interrupt__": [this]})]
        return []

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
