"""A run's events as a Responses API stream: ``response.created`` and
``response.in_progress``, then each output item added, filled (text deltas, call
arguments, MCP call progress) and done, and ``response.completed`` (or ``.failed``)
with the output and usage; every event numbered by ``sequence_number`` from 0. A run
that stops to wait for a person completes with its ``mcp_approval_request`` items."""

from __future__ import annotations

import uuid
from typing import Any

from atelier.compat.openai import present
from atelier.http.sse import ServerSentEvent
from atelier.http.translate import Frame, Template, Translator, encode
from atelier.runs import (
    ApprovalRequested,
    ErrorCode,
    MessageCompleted,
    MessageDelta,
    RunCancelled,
    RunCompleted,
    RunEvent,
    RunFailed,
    RunStatus,
    RunTimedOut,
    RunWaiting,
    StreamError,
    ToolCompleted,
    ToolRequested,
    ToolStarted,
    Usage,
)


class ResponsesTranslator(Translator):
    def __init__(
        self, run_id: uuid.UUID, shell: dict[str, Any], client_tools: frozenset[str] = frozenset()
    ) -> None:
        self.run_id = run_id
        self.shell = shell  # the response object, as it is before any output
        self.client_tools = client_tools  # the caller's functions: it runs them itself
        self.asked_client = False  # the run stops for the caller's function calls
        self.items: list[dict[str, Any]] = []
        self.open: int | None = None  # the index of the reply streaming now
        self.delta: Template | None = None  # its delta frame, with holes
        self.last_seq = 0  # the run's last stored message
        self.calls: dict[str, int] = {}  # call id -> its call item's index
        self.tokens = [0, 0, 0]  # input, output, cached
        self.unflushed = False  # requests told whose pause is still to be said
        self.number = 0

    def start(self) -> list[Frame]:
        snapshot = self._snapshot("in_progress")
        return [
            self._frame("response.created", response=snapshot),
            self._frame("response.in_progress", response=snapshot),
        ]

    def found(self, what: Any) -> None:
        """The seq of the run's question: its reply's comes next."""
        self.last_seq = int(what or 0)

    def handle(self, event: RunEvent | RunWaiting) -> list[Frame]:
        # The response completes where the run stopped to wait for a person: live, once it
        # waits (the stream ends there); in a replay, before whatever came next. Either way
        # the same events under the same sequence numbers.
        if self.unflushed and not isinstance(event, ApprovalRequested | ToolRequested):
            self.unflushed = False
            paused = self._frame("response.completed", response=self._snapshot("completed"))
            if isinstance(event, RunWaiting) or self.asked_client:
                # The caller's function calls end the response: its results are the next
                # request's input, and what follows them is the next response.
                self.done = True
                return [paused]
            return [paused, *self._handle(event)]
        return self._handle(event)

    def _handle(self, event: RunEvent | RunWaiting) -> list[Frame]:
        match event:
            case MessageDelta(text=text):
                frames = self._open_reply() if self.open is None else []
                return [*frames, self._text_delta(text)]
            case MessageCompleted():
                self.last_seq = max(self.last_seq, event.seq)
                if event.role != "assistant":
                    return []
                frames = []
                if self.open is None and event.content:
                    frames = [*self._open_reply(event.seq), self._text_delta(event.content)]
                return frames + self._close_reply(event.content, event.incomplete)
            case ToolStarted() | ToolCompleted() if event.name in self.client_tools:
                return []  # the caller ran it: its output was the caller's own input
            case ToolStarted():
                return self._call(event.call_id, event.name, event.input)
            case ToolCompleted():
                return self._result(event.call_id, event.name, event.output, event.is_error)
            case ToolRequested():
                return self._function_call(event)
            case ApprovalRequested():
                return self._approval(event)
            case Usage():
                self.tokens[0] += event.input_tokens or 0
                self.tokens[1] += event.output_tokens or 0
                self.tokens[2] += event.cache_read_tokens or 0
                return []
            case RunCompleted():
                self.done = True
                return [self._frame("response.completed", response=self._snapshot("completed"))]
            case RunFailed() | RunCancelled() | RunTimedOut():
                self.done = True
                status = RunStatus(event.type.removeprefix("run."))
                error = event.error.model_dump(mode="json") if event.error else None
                failed = self._snapshot(present.STATUS[status], error=_error(status, error))
                return [self._frame("response.failed", response=failed)]
            case StreamError():  # this stream broke (the run goes on): retrieve it again
                self.done = True
                return [self._frame("error", code=event.code, message=event.message, param=None)]
        return []

    # -- items ------------------------------------------------------------------------------

    def _open_reply(self, seq: int | None = None) -> list[Frame]:
        item = present.message_item(self.run_id, seq or self.last_seq + 1, "", "in_progress")
        item["content"] = []
        self.open = len(self.items)
        self.items.append(item)
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        return [
            self._frame("response.output_item.added", output_index=self.open, item=item),
            self._frame(
                "response.content_part.added",
                item_id=item["id"],
                output_index=self.open,
                content_index=0,
                part=part,
            ),
        ]

    def _text_delta(self, text: str) -> Frame:
        assert self.open is not None
        if self.delta is None:  # the first delta of this reply: its frame, once
            self.delta = Template(
                {
                    "type": "response.output_text.delta",
                    "sequence_number": Template.HOLE,
                    "item_id": self.items[self.open]["id"],
                    "output_index": self.open,
                    "content_index": 0,
                    "delta": Template.HOLE,
                    "logprobs": [],
                }
            )
        frame = Frame("response.output_text.delta", self.delta.fill(self.number, text))
        self.number += 1
        return frame

    def _close_reply(self, text: str, incomplete: bool) -> list[Frame]:
        if self.open is None:
            return []
        index, self.open, self.delta = self.open, None, None
        item_id = self.items[index]["id"]
        seq = int(item_id.rsplit("_", 1)[1])
        status = "incomplete" if incomplete else "completed"
        item = self.items[index] = present.message_item(self.run_id, seq, text, status)
        where = {"item_id": item_id, "output_index": index, "content_index": 0}
        return [
            self._frame("response.output_text.done", **where, text=text, logprobs=[]),
            self._frame("response.content_part.done", **where, part=item["content"][0]),
            self._frame("response.output_item.done", output_index=index, item=item),
        ]

    def _call(self, call_id: str, name: str, args: dict[str, Any]) -> list[Frame]:
        item = present.call_item(call_id, name, args, "in_progress")
        index = self.calls[call_id] = len(self.items)
        self.items.append(item)
        where = {"item_id": item["id"], "output_index": index}
        started = {**item, "arguments": "", "status": "in_progress"}
        frames = [self._frame("response.output_item.added", output_index=index, item=started)]
        return [
            *frames,
            self._frame("response.mcp_call_arguments.delta", **where, delta=item["arguments"]),
            self._frame("response.mcp_call_arguments.done", **where, arguments=item["arguments"]),
            self._frame("response.mcp_call.in_progress", **where),
        ]

    def _result(self, call_id: str, name: str, output: str, is_error: bool) -> list[Frame]:
        index = self.calls.get(call_id)
        if index is None:
            return []
        item = self.items[index]
        done = self.items[index] = present.finished_mcp(item, output, is_error)
        where = {"item_id": item["id"], "output_index": index}
        progress = "response.mcp_call.failed" if is_error else "response.mcp_call.completed"
        return [
            self._frame(progress, **where),
            self._frame("response.output_item.done", output_index=index, item=done),
        ]

    def stream_failed(self, _: BaseException) -> ServerSentEvent:
        """The last event of a stream that broke after it started (not the run): OpenAI's
        ``error`` event, numbered on -- retrieve the response again to go on."""
        frame = self._frame(
            "error",
            code=ErrorCode.STREAM_FAILED,
            message="this stream failed; the response may go on: retrieve it with starting_after",
            param=None,
        )
        return ServerSentEvent(encode(frame.data), frame.event)

    def _function_call(self, event: ToolRequested) -> list[Frame]:
        item = present.function_call_item(event.call_id, event.name, event.input)
        index = len(self.items)
        self.items.append(item)
        self.unflushed = self.asked_client = True
        where = {"item_id": item["id"], "output_index": index}
        return [
            self._frame(
                "response.output_item.added",
                output_index=index,
                item={**item, "arguments": "", "status": "in_progress"},
            ),
            self._frame("response.function_call_arguments.delta", **where, delta=item["arguments"]),
            self._frame(
                "response.function_call_arguments.done", **where, arguments=item["arguments"]
            ),
            self._frame("response.output_item.done", output_index=index, item=item),
        ]

    def _approval(self, event: ApprovalRequested) -> list[Frame]:
        item = present.approval_item(event.call_id, event.name, event.input)
        index = len(self.items)
        self.items.append(item)
        self.unflushed = True
        return [
            self._frame("response.output_item.added", output_index=index, item=item),
            self._frame("response.output_item.done", output_index=index, item=item),
        ]

    # -- the response -----------------------------------------------------------------------

    def _snapshot(self, status: str, error: dict[str, Any] | None = None) -> dict[str, Any]:
        ended = status != "in_progress"
        return {
            **self.shell,
            "status": status,
            "output": list(self.items) if ended else [],
            "usage": present.usage(*self.tokens) if ended else None,
            "error": error,
        }

    def _frame(self, kind: str, **fields: Any) -> Frame:
        frame = Frame(kind, {"type": kind, "sequence_number": self.number, **fields})
        self.number += 1
        return frame


def _error(status: RunStatus, error: dict[str, Any] | None) -> dict[str, Any]:
    if error is not None:
        return {"code": error["code"], "message": error["message"]}
    return {"code": status.value, "message": f"the run ended {status.value}"}
