"""What the domains and the engine refuse with: an error with a stable ``code`` that a
client can act on, and no idea of HTTP. Each API renders them in its own shape
(``http/errors.py``: problem+json, its status from the error's class; the Responses API:
OpenAI's error object), so a rule is written once whichever API it is reached through."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """``code``: stable, for programs; ``detail``: for people; ``extra``: fields a client
    may use (``limit``, ``budget_id``, ...); ``retry_after``: seconds after which the same
    request may succeed."""

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        extra: dict[str, Any] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.extra = extra or {}
        self.retry_after = retry_after


class NotFound(DomainError):
    """No such thing -- or not this caller's, which is indistinguishable."""


class Invalid(DomainError):
    """The request is well formed but its content breaks a rule."""


class Refused(DomainError):
    """The request asks for something that is not allowed (a private URL, an unknown
    model, a position past the end)."""


class Forbidden(DomainError):
    """The caller is who they say, but may not do this (an end-user token reaching past
    what it grants)."""


class Conflict(DomainError):
    """The request conflicts with the state of what it names."""


class LimitReached(Conflict):
    """A collection that grows with requests is at its cap."""

    def __init__(self, what: str, limit: int, setting: str) -> None:
        super().__init__(
            "limit_reached",
            f"at most {limit} {what.replace('_', ' ')} may be kept ({setting}); delete some first",
            extra={"limit": what},
        )


class ConversationBusy(Conflict):
    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__("conversation_busy", detail, retry_after=retry_after)


class TooLarge(DomainError):
    """What was sent does not fit (a quota, a context window)."""


class BudgetExceeded(DomainError):
    """A budget that binds the request has nothing left."""


class Unavailable(DomainError):
    """A service we depend on did not answer (storage, coordination, secrets): retry."""


def size_text(size: int) -> str:
    """A size as people say it in an error: 104857600 → "100 MiB", 1536 → "1.5 KiB"."""
    if size < 1024:
        return f"{size} bytes"
    value, units = size / 1024, ["KiB", "MiB", "GiB", "TiB"]
    while value >= 1024 and len(units) > 1:
        value, units = value / 1024, units[1:]
    return f"{value:.1f}".removesuffix(".0") + f" {units[0]}"
