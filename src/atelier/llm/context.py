"""Context-window usage: the one guarded place it is computed (BUG-008)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ContextStatus = Literal["ok", "warning", "critical", "exceeded", "unknown"]
WARNING_AT = 70.0
CRITICAL_AT = 90.0


@dataclass(frozen=True)
class ContextUsage:
    percent: float | None
    status: ContextStatus


def context_usage(estimated_tokens: int, context_window: int | None) -> ContextUsage:
    """Usage of ``context_window``; a missing, zero or negative window is ``unknown``."""
    if context_window is None or context_window <= 0:
        return ContextUsage(percent=None, status="unknown")
    percent = round(100.0 * max(estimated_tokens, 0) / context_window, 2)
    if percent > 100.0:
        status: ContextStatus = "exceeded"
    elif percent >= CRITICAL_AT:
        status = "critical"
    elif percent >= WARNING_AT:
        status = "warning"
    else:
        status = "ok"
    return ContextUsage(percent=percent, status=status)
