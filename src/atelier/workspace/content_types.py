"""A file's content type: the client's word, else its first bytes, else its extension."""

from __future__ import annotations

import mimetypes

# The system's type tables are read once, here, at import: guess_type would otherwise read
# them from disk on its first call, on the event loop.
mimetypes.init()

GENERIC = "application/octet-stream"
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"%PDF-", "application/pdf"),
    (b"PK\x03\x04", "application/zip"),
    (b"\x1f\x8b", "application/gzip"),
    (b"RIFF", "application/octet-stream"),  # refined below when it is WebP
)


def sniff(head: bytes) -> str | None:
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    for magic, content_type in _MAGIC:
        if head.startswith(magic) and content_type != GENERIC:
            return content_type
    return None


def choose(client_value: str | None, head: bytes, path: str) -> str:
    if client_value:
        value = client_value.strip()
        if value and value.lower() != GENERIC and len(value) <= 255 and value.isprintable():
            return value
    return sniff(head) or mimetypes.guess_type(path, strict=False)[0] or GENERIC
