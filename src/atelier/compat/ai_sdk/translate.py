"""A run as the AI SDK's UI message stream (what ``useChat``'s default transport reads):
SSE of typed chunks, ``data: [DONE]`` last.

One run is one assistant message (its id: the run's), steps and all: its text as text
parts, the tools Atelier ran as tool parts already done (``providerExecuted``), a call
that waits for a person as the SDK's ``tool-approval-request``, a client tool's call as
an input the page's ``onToolCall`` answers, files the agent wrote as ``data-workspace-file``
parts. A pause ends the stream (``finish`` with ``tool-calls``); the page's answer starts
a stream of the same message from there.
"""

from __future__ import annotations

import json
from typing import Any

from atelier.http.sse import ServerSentEvent
from atelier.http.translate import Frame, Template, Translator, encode
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
    RunTimedOut,
    RunWaiting,
    StreamError,
    ToolCompleted,
    ToolRequested,
    ToolStarted,
    Usage,
)

STREAM_HEADERS = {"x-vercel-ai-ui-message-stream": "v1", "x-accel-buffering": "no"}
DONE = Frame("", "[DONE]")
_DELTA = Template({"type": "text-delta", "id": Template.HOLE, "delta": Template.HOLE})


def chunk(data: dict[str, Any]) -> Frame:
    return Frame("", data)


class UIMessageTranslator(Translator):
    """``message_id``: the assistant message the chunks build (the run's id); a stream
    that goes on after a pause says the same id, so the page adds to that message."""

    def __init__(
        self,
        message_id: str,
        conversation_id: str,
        *,
        answered: frozenset[str] = frozenset(),
        by_page: frozenset[str] = frozenset(),
    ) -> None:
        """``answered``: the calls of the pause the page just answered (it shows them
        already: their outputs go to those parts, in the step they belong to);
        ``by_page``: those of them the page ran itself."""
        self.message_id = message_id
        self.files = f"/v1/conversations/{conversation_id}/files/"
        self.text: str | None = None  # the open text part's id
        self.parts = 0
        self.step = bool(answered)  # a stream that goes on is inside the step that paused
        self.shown: set[str] = set(answered)
        self.client_calls: set[str] = set(by_page)  # the page has their output
        self.denied: set[str] = set()

    def start(self) -> list[Frame]:
        return [chunk({"type": "start", "messageId": self.message_id})]

    def _open_step(self) -> list[Frame]:
        if self.step:
            return []
        self.step = True
        return [chunk({"type": "start-step"})]

    def _close_text(self) -> list[Frame]:
        if self.text is None:
            return []
        ended, self.text = self.text, None
        return [chunk({"type": "text-end", "id": ended})]

    def _close_step(self) -> list[Frame]:
        frames = self._close_text()
        if self.step:
            self.step = False
            frames.append(chunk({"type": "finish-step"}))
        return frames

    def _finish(self, reason: str, *before: Frame) -> list[Frame]:
        self.done = True
        return [
            *self._close_step(),
            *before,
            chunk({"type": "finish", "finishReason": reason}),
            DONE,
        ]

    def handle(self, event: RunEvent | RunWaiting) -> list[Frame]:
        match event:
            case MessageDelta(text=text):
                frames = self._open_step()
                if self.text is None:
                    self.parts += 1
                    self.text = f"{self.message_id}-text-{self.parts}"
                    frames.append(chunk({"type": "text-start", "id": self.text}))
                frames.append(Frame("", _DELTA.fill(self.text, text)))
                return frames
            case MessageCompleted(role="assistant"):
                return self._close_step()
            case ToolStarted(call_id=call, name=name, input=arguments):
                if call in self.shown or call in self.client_calls:
                    return []
                self.shown.add(call)
                return [
                    *self._close_text(),
                    *self._open_step(),
                    chunk(_input(call, name, arguments) | {"providerExecuted": True}),
                ]
            case ToolCompleted(call_id=call, output=output, is_error=failed):
                # The model's next call is a new step: a page's sendAutomaticallyWhen looks
                # at the last step for calls still to answer.
                if call in self.client_calls or call in self.denied:
                    return self._close_step()
                done: dict[str, Any] = {
                    "toolCallId": call,
                    "providerExecuted": True,
                    "dynamic": True,
                }
                if failed:
                    output_chunk = {"type": "tool-output-error", "errorText": output}
                else:
                    output_chunk = {"type": "tool-output-available", "output": output}
                return [chunk(output_chunk | done), *self._close_step()]
            case ApprovalRequested(call_id=call, name=name, input=arguments):
                self.shown.add(call)
                return [
                    *self._close_text(),
                    *self._open_step(),
                    chunk(_input(call, name, arguments) | {"providerExecuted": True}),
                    chunk(
                        {"type": "tool-approval-request", "approvalId": call, "toolCallId": call}
                    ),
                ]
            case ApprovalResolved(call_id=call, decision="deny"):
                self.denied.add(call)
                return [chunk({"type": "tool-output-denied", "toolCallId": call})]
            case ToolRequested(call_id=call, name=name, input=arguments):
                self.client_calls.add(call)
                found = _input(call, name, arguments) | {"dynamic": False}
                return [*self._close_text(), *self._open_step(), chunk(found)]
            case FileChanged(path=path, size=size, change=change):
                data = {"path": path, "size": size, "change": change}
                if change != "deleted":
                    data["url"] = self.files + path
                return [chunk({"type": "data-workspace-file", "id": path, "data": data})]
            case Usage():
                usage = json.loads(event.data)
                usage.pop("type", None)
                return [chunk({"type": "message-metadata", "messageMetadata": {"usage": usage}})]
            case RunWaiting():
                return self._finish("tool-calls")
            case RunCompleted():
                return self._finish("stop")
            case RunCancelled():
                self.done = True
                return [*self._close_step(), chunk({"type": "abort", "reason": "cancelled"}), DONE]
            case RunFailed(error=error) | RunTimedOut(error=error):
                text = error.message if error else "the run failed"
                return self._finish("error", chunk({"type": "error", "errorText": text}))
            case StreamError(message=message):
                return [chunk({"type": "error", "errorText": message})]
        return []

    def stream_failed(self, _: BaseException) -> ServerSentEvent:
        text = "this stream failed; the run may go on: resume it"
        return ServerSentEvent(encode({"type": "error", "errorText": text}))


def _input(call: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "tool-input-available",
        "toolCallId": call,
        "toolName": name,
        "input": arguments,
        "dynamic": True,
    }
