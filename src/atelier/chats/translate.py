"""A chat turn's stream: the run's events without ``run.started``, ids one lower (a chat's
first event is 1), and the run's end as ``done`` or ``error``."""

from __future__ import annotations

from atelier.http.translate import Frame, Translator, encode
from atelier.runs import (
    ErrorCode,
    RunCancelled,
    RunCompleted,
    RunEvent,
    RunFailed,
    RunStarted,
    RunTimedOut,
    RunWaiting,
    StreamError,
)


class ChatTranslator(Translator):
    shift = 1

    def handle(self, event: RunEvent | RunWaiting) -> list[Frame]:
        match event:
            case RunStarted() | RunWaiting():
                return []
            case RunCompleted():
                self.done = True
                return [Frame("done", "{}")]
            case RunFailed() | RunCancelled() | RunTimedOut():
                self.done = True
                code = {RunTimedOut: "model_timeout", RunCancelled: "cancelled"}.get(type(event))
                error = event.error
                data = {
                    "code": code or (error.code if error else ErrorCode.INTERNAL_ERROR),
                    "message": error.message if error else "",
                }
                return [Frame("error", encode(data))]
            case StreamError():
                self.done = True
                return [Frame(event.type, event.data)]
            case _:
                return [Frame(event.type, event.data)]
