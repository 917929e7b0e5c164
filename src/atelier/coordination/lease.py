"""A token-owned lease, renewed while held, usable only as ``async with`` (BUG-001).

The audited system threw away the token its lock returned, so release never worked and
a conversation stayed blocked until the lock expired. Here the token never leaves the
lease object, release happens in ``__aexit__`` whatever the body did, and a holder that
cannot renew in time is told (``lost``/``on_lost``) instead of carrying on unprotected.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from types import TracebackType

from atelier.coordination.base import Coordination, CoordinationUnavailable


class LeaseHeld(Exception):
    def __init__(self, key: str, retry_after_seconds: float) -> None:
        super().__init__(f"{key} is held by someone else")
        self.retry_after_seconds = retry_after_seconds


class Lease:
    def __init__(
        self,
        coordination: Coordination,
        key: str,
        *,
        ttl_seconds: float = 30.0,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self._coordination = coordination
        self._key = key
        self._ttl_ms = int(ttl_seconds * 1000)
        self._token = uuid.uuid4().hex
        self._on_lost = on_lost
        self._renewer: asyncio.Task[None] | None = None
        self._stopped = False
        self.lost = asyncio.Event()

    async def __aenter__(self) -> Lease:
        if not await self._coordination.acquire(self._key, self._token, self._ttl_ms):
            left = await self._coordination.lease_ttl_ms(self._key)
            raise LeaseHeld(self._key, max(left / 1000, 0.1))
        self._renewer = asyncio.create_task(self._renew(), name=f"lease-{self._key}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._renewer is not None
        # Stopped, not only cancelled: a client library may swallow the cancel of a call in
        # flight (asyncio.wait_for on Python 3.11 does when the call completes at that very
        # moment), and a renewer that lives on would hold the lock -- and this exit -- for ever.
        self._stopped = True
        self._renewer.cancel()
        try:
            await asyncio.wait({self._renewer})  # its cancellation is its own, not ours
        finally:
            # If the backend is down the lease simply runs out; never block the caller on it.
            with contextlib.suppress(CoordinationUnavailable):
                await self._coordination.release(self._key, self._token)

    async def _renew(self) -> None:
        interval = self._ttl_ms / 3000
        loop = asyncio.get_running_loop()
        valid_until = loop.time() + self._ttl_ms / 1000
        while not self._stopped:
            await asyncio.sleep(interval)
            try:
                renewed = await self._coordination.extend(self._key, self._token, self._ttl_ms)
            except CoordinationUnavailable:
                # A blip is fine while the lease still runs; past its end it is lost.
                renewed = loop.time() < valid_until - interval
                if renewed:
                    continue
            if self._stopped:
                return
            if not renewed:
                self.lost.set()
                if self._on_lost is not None:
                    self._on_lost()
                return
            valid_until = loop.time() + self._ttl_ms / 1000
