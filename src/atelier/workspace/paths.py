"""Workspace paths: relative POSIX paths a user or agent may name, checked before any I/O."""

from __future__ import annotations

import unicodedata

MAX_PATH_BYTES = 1024
MAX_SEGMENT_BYTES = 255


class InvalidPath(ValueError):
    """The path breaks the contract's rules (-> ``400 invalid_path``)."""


def normalize_path(raw: str) -> str:
    """Return the NFC-normalised path, or raise ``InvalidPath`` saying which rule it broke."""
    # ASCII, the common case, is its own NFC form, and its control characters are
    # exactly its unprintable ones: the same rules, checked without a scan per character.
    ascii_only = raw.isascii()
    path = raw if ascii_only else unicodedata.normalize("NFC", raw)
    size = len(path) if ascii_only else len(path.encode("utf-8", errors="surrogatepass"))
    if not 1 <= size <= MAX_PATH_BYTES:
        raise InvalidPath(f"a path is 1 to {MAX_PATH_BYTES} bytes of UTF-8")
    if not path.isprintable() if ascii_only else _has_control(path):
        raise InvalidPath("a path cannot contain control characters")
    if "\\" in path:
        raise InvalidPath("a path uses '/' as its separator, never '\\'")
    if path.startswith("/"):
        raise InvalidPath("a path is relative: it cannot start with '/'")
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidPath("a path cannot have empty, '.' or '..' segments")
        if len(segment.encode()) > MAX_SEGMENT_BYTES:
            raise InvalidPath(f"a path segment is at most {MAX_SEGMENT_BYTES} bytes")
    return path


def _has_control(path: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cs") or ch in "\u2028\u2029" for ch in path)


def normalize_prefix(raw: str) -> str:
    """A listing prefix: the empty string, or a path that may end with '/'."""
    if raw == "":
        return ""
    return normalize_path(raw[:-1]) + "/" if raw.endswith("/") else normalize_path(raw)
