"""A multipart/form-data reader that streams the ``file`` part instead of spooling it.

Fields before the file (``path``) are read into memory with a small bound; the file's
bytes are handed on chunk by chunk as they arrive, so the upload size limit is enforced
while streaming and nothing is ever held whole.

The parser reports a part's start, headers, data and end through callbacks while it
parses one chunk. Every callback is queued, headers included, and the queue is read in
order: a body that arrives in one chunk (a small ``curl -F`` or browser upload) gives
exactly the result of the same body arriving a byte at a time.
"""

from __future__ import annotations

import urllib.parse
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

from python_multipart.multipart import MultipartParser, parse_options_header

from atelier.http.errors import ProblemError

MAX_FIELD_BYTES = 4096
MAX_HEADER_BYTES = 8192

Event = tuple[Literal["begin", "field", "value", "header", "headers", "data", "end"], bytes]


def _bad(detail: str) -> ProblemError:
    return ProblemError(400, "invalid_multipart", detail)


def disposition(value: bytes) -> dict[str, str]:
    """A part's Content-Disposition parameters, values decoded.

    Quoted values are UTF-8 (what browsers, curl and httpx send). ``filename*=`` (RFC 5987:
    ``UTF-8''na%C3%AFve.txt``), sent by some clients, wins over a plain ``filename``.
    """
    params: dict[str, str] = {}
    extended: dict[str, str] = {}
    for segment in _segments(value.decode("latin-1"))[1:]:
        key, _, raw = segment.partition("=")
        key = key.strip().lower()
        raw = raw.strip()
        if key.endswith("*"):
            charset, _, rest = raw.partition("'")
            _, _, encoded = rest.partition("'")
            try:
                extended[key[:-1]] = urllib.parse.unquote(
                    encoded, encoding=charset or "utf-8", errors="strict"
                )
            except (LookupError, UnicodeDecodeError):
                continue
            continue
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        params[key] = raw.encode("latin-1").decode("utf-8", "replace")
    return params | extended


def _segments(value: str) -> list[str]:
    """Split on ';' outside quoted strings."""
    segments: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ";" and not quoted:
            segments.append("".join(current))
            current = []
            continue
        current.append(char)
    segments.append("".join(current))
    return segments


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)

    @property
    def params(self) -> dict[str, str]:
        return disposition(self.headers.get(b"content-disposition", b""))


@dataclass
class MultipartFile:
    fields: dict[str, str]
    filename: str | None
    content_type: str | None
    chunks: AsyncIterator[bytes]


class MultipartReader:
    def __init__(self, content_type: str, body: AsyncIterator[bytes]) -> None:
        kind, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            raise ProblemError(
                415, "unsupported_media_type", "send multipart/form-data with a boundary"
            )
        self.body = body
        self.events: deque[Event] = deque()
        queue = self.events.append
        self.parser = MultipartParser(
            boundary,
            {
                "on_part_begin": lambda: queue(("begin", b"")),
                "on_header_field": lambda d, s, e: queue(("field", bytes(d[s:e]))),
                "on_header_value": lambda d, s, e: queue(("value", bytes(d[s:e]))),
                "on_header_end": lambda: queue(("header", b"")),
                "on_headers_finished": lambda: queue(("headers", b"")),
                "on_part_data": lambda d, s, e: queue(("data", bytes(d[s:e]))),
                "on_part_end": lambda: queue(("end", b"")),
            },
        )
        self.finished = False

    async def _next_event(self) -> Event:
        event = await self._next_or_end()
        if event is None:
            raise _bad("the multipart body ended before the file part was complete")
        return event

    async def _next_or_end(self) -> Event | None:
        while not self.events:
            if self.finished:
                return None
            try:
                chunk = await anext(self.body)
            except StopAsyncIteration:
                self.finished = True
                self.parser.finalize()
                continue
            try:
                self.parser.write(chunk)
            except Exception as exc:
                raise _bad(f"malformed multipart body: {exc}") from exc
        return self.events.popleft()

    async def file(self, name: str = "file") -> MultipartFile:
        """Read fields up to the part called ``name``, whose bytes are then streamed."""
        fields: dict[str, str] = {}
        part, header_bytes = _Part(), 0
        header_name, header_value, value = bytearray(), bytearray(), bytearray()
        while True:
            kind, data = await self._next_event()
            if kind == "begin":
                part, header_bytes = _Part(), 0
                value.clear()
            elif kind in ("field", "value"):
                (header_name if kind == "field" else header_value).extend(data)
                header_bytes += len(data)
                if header_bytes > MAX_HEADER_BYTES:
                    raise _bad(f"a part's headers are at most {MAX_HEADER_BYTES} bytes")
            elif kind == "header":
                part.headers[bytes(header_name).lower()] = bytes(header_value)
                header_name.clear()
                header_value.clear()
            elif kind == "headers" and part.params.get("name") == name:
                content_type = part.headers.get(b"content-type")
                return MultipartFile(
                    fields=fields,
                    filename=part.params.get("filename"),
                    content_type=content_type.decode("latin-1") if content_type else None,
                    chunks=self._file_chunks(),
                )
            elif kind == "data":
                value += data
                if len(value) > MAX_FIELD_BYTES:
                    raise _bad(f"form fields before the file are at most {MAX_FIELD_BYTES} bytes")
            elif kind == "end" and (field_name := part.params.get("name")):
                fields[field_name] = value.decode("utf-8", "replace")

    async def names_after(self) -> list[str]:
        """The names of the parts after the file, reading the body to its end (what they
        hold is not kept: at most ``MAX_FIELD_BYTES`` of it is read)."""
        names: list[str] = []
        header_name, header_value, part, read = bytearray(), bytearray(), _Part(), 0
        while (event := await self._next_or_end()) is not None:
            kind, data = event
            if kind == "begin":
                part = _Part()
            elif kind in ("field", "value"):
                (header_name if kind == "field" else header_value).extend(data)
                read += len(data)
            elif kind == "header":
                part.headers[bytes(header_name).lower()] = bytes(header_value)
                header_name.clear()
                header_value.clear()
            elif kind == "headers" and (name := part.params.get("name")):
                names.append(name)
            elif kind == "data":
                read += len(data)
            if read > MAX_FIELD_BYTES:
                raise _bad(f"the parts after the file are at most {MAX_FIELD_BYTES} bytes")
        return names

    async def _file_chunks(self) -> AsyncIterator[bytes]:
        while True:
            kind, data = await self._next_event()
            if kind == "data":
                yield data
            elif kind == "end":
                return
