"""Verified API keys, trusted for a few seconds so most requests cost no key lookup."""

from __future__ import annotations

import time
from collections import OrderedDict

from atelier.tenants.service import VerifiedKey


class KeyCache:
    """Verified keys, trusted for ``ttl_seconds`` so a revoked key stops working soon after."""

    def __init__(self, ttl_seconds: float, max_entries: int = 10_000) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, VerifiedKey]] = OrderedDict()

    def get(self, digest: str) -> VerifiedKey | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        expires, key = entry
        if time.monotonic() >= expires:
            del self._entries[digest]
            return None
        return key

    def put(self, digest: str, key: VerifiedKey) -> None:
        if self.ttl <= 0:
            return
        self._entries[digest] = (time.monotonic() + self.ttl, key)
        self._entries.move_to_end(digest)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
