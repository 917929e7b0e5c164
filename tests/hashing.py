"""Counts the bytes hashed on the event loop's thread.

Hashing is CPU work, not a blocking call, so blockbuster cannot see it; but hashing an
8 MiB part on the loop stalls it as surely as a blocking read (BUG-003: botocore signing
each part with SHA-256, or our Content-MD5 computed inline). Every hash constructor
that Atelier or botocore uses is wrapped for the duration; what is hashed on the loop's
thread is counted. A deterministic figure where a loop-lag threshold is not.
"""

from __future__ import annotations

import binascii
import hashlib
import threading
from collections.abc import Callable
from typing import Any

import botocore.auth
import botocore.httpchecksum
import pytest


class _Counted:
    def __init__(self, inner: Any, counter: HashingOnLoop) -> None:
        self._inner = inner
        self._counter = counter

    def update(self, data: bytes) -> None:
        self._counter.saw(len(data))
        self._inner.update(data)

    def copy(self) -> _Counted:
        return _Counted(self._inner.copy(), self._counter)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class HashingOnLoop:
    """``with HashingOnLoop(monkeypatch) as hashing: ...; hashing.loop_bytes``"""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.loop_thread = threading.get_ident()
        self.loop_bytes = 0
        self.other_bytes = 0

    def saw(self, size: int) -> None:
        if threading.get_ident() == self.loop_thread:
            self.loop_bytes += size
        else:
            self.other_bytes += size

    def _constructor(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def make(data: bytes = b"", **kwargs: Any) -> _Counted:
            counted = _Counted(original(**kwargs), self)
            if data:
                counted.update(data)
            return counted

        return make

    def _crc(self, original: Callable[..., int]) -> Callable[..., int]:
        def crc(data: bytes, value: int = 0) -> int:
            self.saw(len(data))
            return original(data, value)

        return crc

    def __enter__(self) -> HashingOnLoop:
        for name in ("md5", "sha1", "sha256", "sha512"):
            counted = self._constructor(getattr(hashlib, name))
            self.monkeypatch.setattr(hashlib, name, counted)
            for module in (botocore.auth, botocore.httpchecksum):
                if hasattr(module, name):
                    self.monkeypatch.setattr(module, name, counted)
        self.monkeypatch.setattr(botocore.httpchecksum, "crc32", self._crc(binascii.crc32))
        return self

    def __exit__(self, *exc: object) -> None:
        self.monkeypatch.undo()
