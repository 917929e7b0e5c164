"""A lean SSE client for the benchmarks: one POST over a raw socket, chunked body parsed
by hand, events counted. httpx spends more CPU per event than the servers being measured
(on 2 cores the client and the server share the machine), which hid their difference.
"""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import urlsplit


async def post_for_stream(
    port: int, path: str, headers: dict[str, str], body: dict
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """POST ``body`` over HTTP/1.0 (the stream is the rest of the connection); the
    reader is past a 200 status line. The caller closes the writer."""
    payload = json.dumps(body).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = [
        f"POST {path} HTTP/1.0",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
        "Accept: text/event-stream",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    writer.write("\r\n".join(head).encode() + b"\r\n\r\n" + payload)
    status = await reader.readline()
    if b" 200 " not in status:
        writer.close()
        raise RuntimeError(f"{path}: {status!r} {await reader.read(500)!r}")
    return reader, writer


async def stream_events(
    url: str, headers: dict[str, str], body: dict, first_name: str = ""
) -> tuple[int, float]:
    """Events received, and seconds until the first event (named ``first_name``, if given)."""
    parts = urlsplit(url)
    payload = json.dumps(body).encode()
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        head = [
            f"POST {parts.path} HTTP/1.1",
            f"Host: {parts.netloc}",
            "Content-Type: application/json",
            f"Content-Length: {len(payload)}",
            "Connection: close",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        writer.write("\r\n".join(head).encode() + b"\r\n\r\n" + payload)
        status = await reader.readline()
        if b" 200 " not in status:
            raise RuntimeError(f"{url}: {status!r}")
        chunked = False
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"transfer-encoding:") and b"chunked" in line.lower():
                chunked = True
        first: float | None = None
        events = 0
        pending = b""
        while True:
            if chunked:
                size = int((await reader.readline()).split(b";")[0], 16)
                if size == 0:
                    break
                data = await reader.readexactly(size + 2)
                data = data[:-2]
            else:
                data = await reader.read(65536)
                if not data:
                    break
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.startswith(b"event:"):
                    events += 1
                    if first is None and line.endswith(first_name.encode()):
                        first = time.perf_counter() - started
        return events, first or 0.0
    finally:
        writer.close()
