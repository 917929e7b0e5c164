"""The run engine: one way of running for every API. Other packages use what is here.

A run is started with a ``RunRequest`` by the ``RunManager``, which yields its events as
``Numbered`` pairs -- ``(id, RunEvent)`` -- from whichever process executes it, and raises
the domain errors of ``atelier.errors``. Encoding to a wire is the APIs' business
(``atelier.http.translate``)."""

import importlib
from typing import TYPE_CHECKING, Any

from atelier.runs.events import (
    ACTIVE_STATUSES,
    CHAT_EVENTS,
    RUN_EVENTS,
    TERMINAL_TYPES,
    UNENDED_STATUSES,
    WAITING_STATUSES,
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
    ToolRequested,
    ToolStarted,
    ToolsUnavailable,
    Usage,
)

if TYPE_CHECKING:
    from atelier.runs.approvals import APPROVED
    from atelier.runs.approvals import decided as decided_approvals
    from atelier.runs.approvals import pending as pending_approvals
    from atelier.runs.environment import RunRequest
    from atelier.runs.manager import RunManager
    from atelier.runs.mcp import probe as probe_mcp_server
    from atelier.runs.service import owned_run

# The engine's entry points are imported when first asked for: the domains below the engine
# import its rows (``atelier.runs.models``), which imports this package first.
_LAZY = {
    "RunManager": ("atelier.runs.manager", "RunManager"),
    "RunRequest": ("atelier.runs.environment", "RunRequest"),
    "owned_run": ("atelier.runs.service", "owned_run"),
    "pending_approvals": ("atelier.runs.approvals", "pending"),
    "decided_approvals": ("atelier.runs.approvals", "decided"),
    "APPROVED": ("atelier.runs.approvals", "APPROVED"),
    "probe_mcp_server": ("atelier.runs.mcp", "probe"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(name)
    module, attribute = _LAZY[name]
    return getattr(importlib.import_module(module), attribute)


__all__ = [
    "ACTIVE_STATUSES",
    "APPROVED",
    "CHAT_EVENTS",
    "RUN_EVENTS",
    "TERMINAL_TYPES",
    "UNENDED_STATUSES",
    "WAITING_STATUSES",
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
    "ToolRequested",
    "ToolStarted",
    "ToolsUnavailable",
    "Usage",
    "decided_approvals",
    "owned_run",
    "pending_approvals",
    "probe_mcp_server",
]
