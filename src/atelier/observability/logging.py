"""Structured logs: JSON in production, readable in development.

Every line carries the request id, tenant and user bound by the HTTP middleware
(contextvars), and anything shaped like an API key is redacted before it is written.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import re
import signal
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from atelier.http.errors import BrokenOff
from atelier.settings import Settings

_API_KEY = re.compile(r"atl_[0-9a-f]{12}_[A-Za-z0-9_-]{4,}")


def redact(text: str) -> str:
    return _API_KEY.sub("atl_[redacted]", text)


def _redact_api_keys(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in event.items():
        if isinstance(value, str) and "atl_" in value:
            event[key] = redact(value)
    return event


def configure_logging(settings: Settings) -> None:
    """Configure structlog and the stdlib root logger (a process-wide concern).

    What needs the logging task's context runs where it logs; rendering (tracebacks read
    source files) and writing run on one writer thread of the process.
    """
    stamp: list[structlog.types.Processor] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if settings.json_logs
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        # Drop below-level events before any processor spends time on them.
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.contextvars.merge_contextvars,
            *stamp,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        # Lines from other libraries' stdlib loggers.
        foreign_pre_chain=[_context_of_record, *stamp],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if settings.json_logs else _identity,
            _redact_api_keys,
            renderer,
        ],
    )
    root = logging.getLogger()
    root.handlers[:] = [_off_the_loop(formatter)]
    root.setLevel(settings.log_level)
    # Our middleware writes one access line per request, with its request id.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.error").addFilter(_not_broken_off)
    # httpx logs every request's URL at INFO: a tenant's webhook or MCP URL may carry a
    # token in its query. Its warnings still come through.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


def _not_broken_off(record: logging.LogRecord) -> bool:
    """The server's "Exception in ASGI application" for a response broken off on purpose
    (``BrokenOff``): our middleware already logged it once, as a warning."""
    exc = record.exc_info[1] if record.exc_info else None
    return not isinstance(exc, BrokenOff)


class _ToWriter(logging.handlers.QueueHandler):
    """Hands each record to the writer thread as it is, with the context of the task that
    logged it (the writer thread has none of its own)."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record.atelier_context = structlog.contextvars.get_contextvars()
        return record


def _context_of_record(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    record = event.get("_record")
    return {**getattr(record, "atelier_context", {}), **event}


_records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
_writer: logging.handlers.QueueListener | None = None


def _off_the_loop(formatter: logging.Formatter) -> logging.Handler:
    """One writer thread per process takes the records and writes them to stderr: a write
    to a full pipe blocks that thread, never the event loop."""
    global _writer
    if _writer is None:
        stderr = logging.StreamHandler(sys.stderr)
        _writer = logging.handlers.QueueListener(_records, stderr)
        _writer.start()
        atexit.register(flush_logs)
    assert _writer.handlers
    _writer.handlers[0].setFormatter(formatter)
    return _ToWriter(_records)


def flush_logs() -> None:
    """Write what is still queued (at exit: the last lines say how the process ended)."""
    global _writer
    if _writer is not None:
        _writer.stop()
        _writer = None


def flush_logs_on_signals() -> None:
    """A server stopped by a signal dies of it (uvicorn re-raises it once shut down), and
    atexit does not run then: write the queued lines first, then die of the signal."""

    def flush_then_die(number: int, _frame: object) -> None:
        flush_logs()
        signal.signal(number, signal.SIG_DFL)
        signal.raise_signal(number)

    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, flush_then_die)


def _identity(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    return event
