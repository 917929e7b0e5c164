"""The run engine: one way of running for every API. Other packages use what is here.

A run is started with a ``RunRequest`` by the ``RunManager``, which yields its events as
``Numbered`` pairs -- ``(id, RunEvent)`` -- from whichever process executes it, and raises
the domain errors of ``atelier.errors``. Encoding to a wire is the APIs' business
(``atelier.http.translate``)."""

from typing import TYPE_CHECKING, Any

from atelier.runs.events import (
    ACTIVE_STATUSES,
    CHAT_EVENTS,
    RUN_EVENTS,
    TERMINAL_TYPES,
    ApprovalRequested,
    ApprovalResolved,
    Done,
    ErrorCode,
    FileChanged,
    MessageCompleted,
    MessageDelta,
    Numbered,
    RunCancelled,
    RunCompleted,
    RunEnded,
    RunError,
    RunEvent,
    RunFailed,
    RunStarted,
    RunStatus,
    RunTimedOut,
    RunWaiting,
    StreamError,
    TitleUpdated,
    ToolCompleted,
    ToolStarted,
    ToolsUnavailable,
    Usage,
)

if TYPE_CHECKING:
    from atelier.runs.environment import RunRequest
    from atelier.runs.manager import RunManager


def __getattr__(name: str) -> Any:
    # The engine's entry points are imported when first asked for: the domains below the
    # engine import its models (``atelier.runs.models``), which imports this package first.
    if name == "RunManager":
        from atelier.runs.manager import RunManager

        return RunManager
    if name == "RunRequest":
        from atelier.runs.environment import RunRequest

        return RunRequest
    raise AttributeError(name)


__all__ = [
    "ACTIVE_STATUSES",
    "CHAT_EVENTS",
    "RUN_EVENTS",
    "TERMINAL_TYPES",
    "ApprovalRequested",
    "ApprovalResolved",
    "Done",
    "ErrorCode",
    "FileChanged",
    "MessageCompleted",
    "MessageDelta",
    "Numbered",
    "RunCancelled",
    "RunCompleted",
    "RunEnded",
    "RunError",
    "RunEvent",
    "RunFailed",
    "RunManager",
    "RunRequest",
    "RunStarted",
    "RunStatus",
    "RunTimedOut",
    "RunWaiting",
    "StreamError",
    "TitleUpdated",
    "ToolCompleted",
    "ToolStarted",
    "ToolsUnavailable",
    "Usage",
]
