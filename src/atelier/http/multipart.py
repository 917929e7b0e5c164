"""A multipart/form-data reader that streams the ``file`` part instead of spooling it.

Fields before the file (``path``) are read into memory with a small bound; the file's
bytes are handed on chunk by chunk as they arrive, so the upload size limit is enforced
while streaming and nothing is ever held whole.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header

from atelier.http.errors import ProblemError

MAX_FIELD_BYTES = 4096


def _bad(detail: str) -> ProblemError:
    return ProblemError(400, "invalid_multipart", detail)


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)

    @property
    def name(self) -> str | None:
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        value = options.get(b"name")
        return value.decode("utf-8", "replace") if value is not None else None

    @property
    def filename(self) -> str | None:
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        value = options.get(b"filename")
        return value.decode("utf-8", "replace") if value is not None else None


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
        self.events: deque[tuple[str, bytes]] = deque()
        self._field = self._value = b""
        self.parser = MultipartParser(
            boundary,
            {
                "on_part_begin": lambda: self.events.append(("begin", b"")),
                "on_part_data": lambda d, s, e: self.events.append(("data", bytes(d[s:e]))),
                "on_part_end": lambda: self.events.append(("end", b"")),
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": lambda: self.events.append(("headers", b"")),
            },
        )
        self.part = _Part()
        self.finished = False

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _on_header_end(self) -> None:
        self.part.headers[self._field.lower()] = self._value
        self._field = self._value = b""

    async def _next_event(self) -> tuple[str, bytes]:
        while not self.events:
            if self.finished:
                raise _bad("the multipart body ended before the file part was complete")
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
        value = bytearray()
        while True:
            kind, data = await self._next_event()
            if kind == "begin":
                self.part = _Part()
                value.clear()
            elif kind == "headers" and self.part.name == name:
                content_type = self.part.headers.get(b"content-type")
                return MultipartFile(
                    fields=fields,
                    filename=self.part.filename,
                    content_type=content_type.decode("latin-1") if content_type else None,
                    chunks=self._file_chunks(),
                )
            elif kind == "data":
                value += data
                if len(value) > MAX_FIELD_BYTES:
                    raise _bad(f"form fields before the file are at most {MAX_FIELD_BYTES} bytes")
            elif kind == "end" and self.part.name:
                fields[self.part.name] = value.decode("utf-8", "replace")

    async def _file_chunks(self) -> AsyncIterator[bytes]:
        while True:
            kind, data = await self._next_event()
            if kind == "data":
                yield data
            elif kind == "end":
                return
