"""What the compatibility surfaces cost over the native stream: side by side, in one run,
the same reply (400 words from the offline model, no delay) streamed natively, as a
LangGraph stream (values + messages-tuple) and as an OpenAI Responses stream.

One Atelier process (PostgreSQL + Redis) pinned to one core; ROUNDS runs per surface,
interleaved. Figures: the median time from the POST to the first text event and to the
stream's end, the bytes sent, and each surface's ratio to native. Target: no more than
the few database round trips a translation needs (reading the thread, making the
response's conversation) before the first text -- 6 ms -- and the whole stream within
1.5x native's time (a LangGraph or OpenAI frame is larger than a native event).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent.parent))

from bench._sse import post_for_stream
from bench.runs import deployed

ROUNDS = 30
WORDS = 400
ASK = " ".join(f"w{i}" for i in range(WORDS))
FIRST_TEXT = (b"event: message.delta", b"event: messages", b"event: response.output_text.delta")


async def timed(
    port: int, path: str, headers: dict[str, str], body: dict
) -> tuple[float, float, int]:
    """POST ``body`` for an event stream: seconds to the first text event, to the end of
    the stream, and the bytes of the stream."""
    sent = time.perf_counter()
    reader, writer = await post_for_stream(port, path, headers, body)
    first, size = 0.0, 0
    try:
        while line := await reader.readline():  # HTTP/1.0: the stream ends with the body
            size += len(line)
            if not first and line.startswith(FIRST_TEXT):
                first = time.perf_counter()
    finally:
        writer.close()
    return first - sent, time.perf_counter() - sent, size


async def rounds(port: int, headers: dict[str, str]) -> dict[str, list[tuple[float, float, int]]]:
    found: dict[str, list[tuple[float, float, int]]] = {"native": [], "langgraph": [], "openai": []}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers) as http:
        for _ in range(ROUNDS):
            conversation = (await http.post("/v1/conversations", json={})).json()["id"]
            found["native"].append(
                await timed(port, f"/v1/conversations/{conversation}/runs", headers, {"input": ASK})
            )
            thread = (await http.post("/langgraph/threads", json={})).json()["thread_id"]
            body = {
                "assistant_id": "default",
                "input": {"messages": [{"role": "user", "content": ASK}]},
                "stream_mode": ["values", "messages-tuple"],
            }
            path = f"/langgraph/threads/{thread}/runs/stream"
            found["langgraph"].append(await timed(port, path, headers, body))
            body = {"model": "default", "input": ASK, "stream": True}
            found["openai"].append(await timed(port, "/openai/v1/responses", headers, body))
    return found


def main() -> None:
    with deployed("compat") as (port, headers):
        asyncio.run(rounds(port, headers))  # warm up
        found = asyncio.run(rounds(port, headers))
    print(
        f"compatibility surfaces, {ROUNDS} runs each of a {WORDS}-word reply, one process on one core"
    )
    base_first = statistics.median(r[0] for r in found["native"]) * 1000
    base_total = statistics.median(r[1] for r in found["native"]) * 1000
    for name, runs in found.items():
        first = statistics.median(r[0] for r in runs) * 1000
        total = statistics.median(r[1] for r in runs) * 1000
        size = statistics.median(r[2] for r in runs) / 1024
        print(
            f"  {name:9}: first text {first:6.2f} ms ({first - base_first:+.2f})"
            f"  whole stream {total:7.2f} ms (x{total / base_total:.2f})  {size:6.1f} KiB"
        )
    print("  (target: first text within 6 ms of native; whole stream within x1.5)")


if __name__ == "__main__":
    main()
