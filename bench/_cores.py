"""Where benchmark processes run. The servers compared share one core and the client
that drives them gets the other, so each server is measured on the same footing; left to
the scheduler, the bare endpoint's rate swung 2x between runs on a 2-core machine."""

from __future__ import annotations

import os
from collections.abc import Callable

PINNED = hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2
SERVER_CORE, CLIENT_CORE = 0, 1


def on_server_core() -> Callable[[], None] | None:
    """For ``Popen(preexec_fn=...)``: the child runs on the servers' core."""
    return (lambda: os.sched_setaffinity(0, {SERVER_CORE})) if PINNED else None


def client_on_its_core() -> None:
    if PINNED:
        os.sched_setaffinity(0, {CLIENT_CORE})
