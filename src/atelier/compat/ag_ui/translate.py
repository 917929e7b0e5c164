"""A run as AG-UI events (protocol 1.0): ``RUN_STARTED``, each model message as
``TEXT_MESSAGE_*``, each tool call as ``TOOL_CALL_*`` (Atelier's own with their
``TOOL_CALL_RESULT``), files written as ``CUSTOM`` events, a ``MESSAGES_SNAPSHOT`` of the
conversation as the client now has it, then ``RUN_FINISHED`` -- its outcome ``success``
(naming the frontend tool calls left to answer), ``interrupt`` (calls waiting for a
person's approval) or ``cancelled`` -- or ``RUN_ERROR``.

Each AG-UI run echoes the client's ``runId``; one Atelier run may span several of them
(it waits for the page, and the page's next input takes it on).
"""

from __future__ import annotations

import json
from typing import Any

from atelier.http.sse import ServerSentEvent
from atelier.http.translate import Frame, Template, Translator, encode
from atelier.runs import (
    ApprovalRequested,
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
)

PROTOCOL_VERSION = "1.0"
_CONTENT = Template(
    {"type": "TEXT_MESSAGE_CONTENT", "messageId": Template.HOLE, "delta": Template.HOLE}
)


def event(data: dict[str, Any]) -> Frame:
    return Frame("", data)


class AGUITranslator(Translator):
    """``history``: the input's messages, which the snapshot goes on from."""

    def __init__(
        self,
        thread_id: str,
        run_id: str,
        engine_run: str,
        conversation_id: str,
        history: list[dict[str, Any]],
    ) -> None:
        self.thread_id = thread_id
        self.run_id = run_id
        self.prefix = engine_run
        self.files = f"/v1/conversations/{conversation_id}/files/"
        self.messages = list(history)
        self.text: dict[str, Any] | None = None  # the assistant message being written
        self.count = 0
        self.client_calls: list[str] = []
        self.interrupts: list[dict[str, Any]] = []
        self.shown_calls: set[str] = set()

    def start(self) -> list[Frame]:
        return [
            event(
                {
                    "type": "RUN_STARTED",
                    "threadId": self.thread_id,
                    "runId": self.run_id,
                    "protocolVersion": PROTOCOL_VERSION,
                }
            )
        ]

    def _close_text(self) -> list[Frame]:
        if self.text is None:
            return []
        message, self.text = self.text, None
        return [event({"type": "TEXT_MESSAGE_END", "messageId": message["id"]})]

    def _call(self, call: str, name: str, arguments: dict[str, Any]) -> list[Frame]:
        if call in self.shown_calls:
            return []
        self.shown_calls.add(call)
        frames = self._close_text()
        args = json.dumps(arguments, ensure_ascii=False)
        owner = (
            self.messages[-1]
            if self.messages and self.messages[-1]["role"] == "assistant"
            else None
        )
        if owner is None:
            self.count += 1
            owner = {"id": f"{self.prefix}-{self.count}", "role": "assistant", "content": ""}
            self.messages.append(owner)
        owner.setdefault("toolCalls", []).append(
            {"id": call, "type": "function", "function": {"name": name, "arguments": args}}
        )
        return [
            *frames,
            event(
                {
                    "type": "TOOL_CALL_START",
                    "toolCallId": call,
                    "toolCallName": name,
                    "parentMessageId": owner["id"],
                }
            ),
            event({"type": "TOOL_CALL_ARGS", "toolCallId": call, "delta": args}),
            event({"type": "TOOL_CALL_END", "toolCallId": call}),
        ]

    def _finish(self, outcome: dict[str, Any]) -> list[Frame]:
        self.done = True
        return [
            *self._close_text(),
            event({"type": "MESSAGES_SNAPSHOT", "messages": self.messages}),
            event(
                {
                    "type": "RUN_FINISHED",
                    "threadId": self.thread_id,
                    "runId": self.run_id,
                    "outcome": outcome,
                }
            ),
        ]

    def handle(self, event_: RunEvent | RunWaiting) -> list[Frame]:
        match event_:
            case MessageDelta(text=text) if text:
                frames: list[Frame] = []
                if self.text is None:
                    self.count += 1
                    self.text = {
                        "id": f"{self.prefix}-{self.count}",
                        "role": "assistant",
                        "content": "",
                    }
                    self.messages.append(self.text)
                    frames.append(
                        event(
                            {
                                "type": "TEXT_MESSAGE_START",
                                "messageId": self.text["id"],
                                "role": "assistant",
                            }
                        )
                    )
                self.text["content"] += text
                frames.append(Frame("", _CONTENT.fill(self.text["id"], text)))
                return frames
            case MessageCompleted(role="assistant"):
                return self._close_text()
            case ToolStarted(call_id=call, name=name, input=arguments):
                return self._call(call, name, arguments)
            case ApprovalRequested(call_id=call, name=name, input=arguments):
                self.interrupts.append(
                    {
                        "id": call,
                        "reason": "tool_approval",
                        "message": f"May the agent run {name}?",
                        "toolCallId": call,
                        "responseSchema": {
                            "type": "object",
                            "properties": {
                                "approved": {"type": "boolean"},
                                "reason": {"type": "string"},
                            },
                            "required": ["approved"],
                        },
                    }
                )
                return self._call(call, name, arguments)
            case ToolRequested(call_id=call, name=name, input=arguments):
                self.client_calls.append(call)
                return self._call(call, name, arguments)
            case ToolCompleted(call_id=call, output=output):
                if call in self.client_calls:
                    return []
                result = {
                    "id": f"{call}-result",
                    "role": "tool",
                    "toolCallId": call,
                    "content": output,
                }
                self.messages.append(result)
                return [
                    *self._close_text(),
                    event(
                        {
                            "type": "TOOL_CALL_RESULT",
                            "messageId": result["id"],
                            "toolCallId": call,
                            "content": output,
                            "role": "tool",
                        }
                    ),
                ]
            case FileChanged(path=path, size=size, change=change):
                value = {"path": path, "size": size, "change": change}
                if change != "deleted":
                    value["url"] = self.files + path
                return [event({"type": "CUSTOM", "name": "atelier.file", "value": value})]
            case RunWaiting():
                if self.interrupts:
                    return self._finish({"type": "interrupt", "interrupts": self.interrupts})
                return self._finish({"type": "success", "pendingToolCallIds": self.client_calls})
            case RunCompleted():
                return self._finish({"type": "success"})
            case RunCancelled():
                return self._finish({"type": "cancelled"})
            case RunFailed(error=error) | RunTimedOut(error=error):
                self.done = True
                message = error.message if error else "the run failed"
                code = str(error.code) if error else "run_failed"
                return [
                    *self._close_text(),
                    event({"type": "RUN_ERROR", "message": message, "code": code}),
                ]
            case StreamError(message=message, code=code):
                self.done = True
                return [
                    *self._close_text(),
                    event({"type": "RUN_ERROR", "message": message, "code": str(code)}),
                ]
        return []

    def stream_failed(self, _: BaseException) -> ServerSentEvent:
        failed = {"type": "RUN_ERROR", "message": "this stream failed", "code": "stream_failed"}
        return ServerSentEvent(encode(failed))
