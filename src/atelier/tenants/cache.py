"""Verified API keys and end-user tokens, trusted for a few seconds so most requests cost
no lookup."""

from __future__ import annotations

import time
from collections import OrderedDict

from atelier.tenants.service import VerifiedKey
from atelier.tenants.tokens import VerifiedUser

Verified = VerifiedKey | VerifiedUser


class KeyCache:
    """Verified keys and tokens, trusted for ``ttl_seconds`` (a token: never past its
    expiry) so a revoked one stops working soon after."""

    def __init__(self, ttl_seconds: float, max_entries: int = 10_000) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, Verified]] = OrderedDict()

    def get(self, digest: str) -> Verified | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        expires, key = entry
        if time.monotonic() >= expires:
            del self._entries[digest]
            return None
        return key

    def put(self, digest: str, key: Verified) -> None:
        if self.ttl <= 0:
            return
        trusted = self.ttl
        if isinstance(key, VerifiedUser):
            trusted = min(trusted, key.expires_at - time.time())
        self._entries[digest] = (time.monotonic() + trusted, key)
        self._entries.move_to_end(digest)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        """Revocations made here take effect here at once (elsewhere: within the ttl)."""
        self._entries.clear()
