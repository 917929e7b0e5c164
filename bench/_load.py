"""A small keep-alive HTTP/1.1 load generator: fast enough not to be the bottleneck."""

from __future__ import annotations

import asyncio
import re
import time

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)", re.IGNORECASE)


async def _worker(host: str, port: int, request: bytes, stop_at: float, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < stop_at:
            writer.write(request)
            # One read for the whole head, so the client's cost does not grow per header.
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 2"):
                raise RuntimeError(f"unexpected response: {head[:40]!r}")
            match = _CONTENT_LENGTH.search(head)
            await reader.readexactly(int(match.group(1)) if match else 0)
            counts[0] += 1
    finally:
        writer.close()


async def requests_per_second(
    host: str, port: int, path: str, headers: dict[str, str], seconds: float, connections: int
) -> float:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{head}\r\n".encode()
    counts = [0]
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(
        *(_worker(host, port, request, stop_at, counts) for _ in range(connections))
    )
    return counts[0] / (time.perf_counter() - started)
