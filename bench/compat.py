"""What the compatibility surfaces cost over the native stream: side by side, in one run,
the same reply (400 words from the offline model, no delay) streamed natively, as a
LangGraph stream (values + messages-tuple), as an OpenAI Responses stream, as the AI SDK's
UI message stream and as AG-UI events -- these two on a chat's next turn (the chat made
before, untimed, as native's conversation and LangGraph's thread are) and on a new chat
(made by the timed request, as an OpenAI response's conversation is).

One Atelier process (PostgreSQL + Redis) pinned to one core; ROUNDS runs per surface,
interleaved. Figures: the median time from the POST to the first text event and to the
stream's end, the bytes sent, and each surface's ratio to native. Target: no more than
the few database round trips a translation needs (reading the thread, making the
response's conversation) before the first text -- 6 ms -- and the whole stream within
1.5x native's time (a LangGraph or OpenAI frame is larger than a native event).

``--against REF`` measures this version beside another (a git ref, checked out in a
temporary worktree and served from its sources), rounds interleaved, and prints each
surface's figures for both and their ratio: what a change did to the streams' cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent.parent))

from bench._sse import post_for_stream
from bench.runs import deployed

ROUNDS = 30
WORDS = 400
ASK = " ".join(f"w{i}" for i in range(WORDS))
FIRST_TEXT = (
    b"event: message.delta",
    b"event: messages",
    b"event: response.output_text.delta",
    b'data: {"type":"text-delta"',
    b'data: {"type":"TEXT_MESSAGE_CONTENT"',
)
SURFACES = ("native", "langgraph", "openai", "ai-sdk", "ai-sdk new", "ag-ui", "ag-ui new")


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


async def rounds(
    port: int, headers: dict[str, str], count: int = ROUNDS, surfaces: tuple[str, ...] = SURFACES
) -> dict[str, list[tuple[float, float, int]]]:
    found: dict[str, list[tuple[float, float, int]]] = {name: [] for name in surfaces}
    if "ai-sdk" not in surfaces:
        found.pop("ai-sdk new", None)
    if "ag-ui" not in surfaces:
        found.pop("ag-ui new", None)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers) as http:
        for _ in range(count):
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
            if "ai-sdk" in found:  # useChat's requests: a chat's next turn, and a new chat
                chat = uuid.uuid4().hex[:16]
                hello = {"id": "u0", "role": "user", "parts": [{"type": "text", "text": "hi"}]}
                await http.post("/ai-sdk/chat", json={"id": chat, "messages": [hello]})
                history = (await http.get(f"/ai-sdk/chat/{chat}/messages")).json()
                said = {"id": "u", "role": "user", "parts": [{"type": "text", "text": ASK}]}
                body = {"id": chat, "messages": [*history, said], "trigger": "submit-message"}
                found["ai-sdk"].append(await timed(port, "/ai-sdk/chat", headers, body))
                body = {"id": uuid.uuid4().hex[:16], "messages": [said]}
                found["ai-sdk new"].append(await timed(port, "/ai-sdk/chat", headers, body))
            if "ag-ui" in found:  # HttpAgent's RunAgentInput: a thread's next run, a new one
                thread = str(uuid.uuid4())
                hello = {"id": "u0", "role": "user", "content": "hi"}
                first = {"threadId": thread, "runId": "r0", "messages": [hello]}
                await http.post("/ag-ui/agents/default", json=first)
                answer = (await http.get(f"/v1/conversations/{thread}/messages")).json()["data"]
                earlier = [
                    {"id": m["id"], "role": m["role"], "content": m["content"]} for m in answer
                ]
                said = {"id": "u", "role": "user", "content": ASK}
                body = {"threadId": thread, "runId": "r", "messages": [*earlier, said]}
                found["ag-ui"].append(await timed(port, "/ag-ui/agents/default", headers, body))
                body = {"threadId": str(uuid.uuid4()), "runId": "r", "messages": [said]}
                found["ag-ui new"].append(await timed(port, "/ag-ui/agents/default", headers, body))
    return found


Found = dict[str, list[tuple[float, float, int]]]


def medians(found: Found) -> dict[str, tuple[float, float, float]]:
    return {
        name: (
            statistics.median(r[0] for r in runs) * 1000,
            statistics.median(r[1] for r in runs) * 1000,
            statistics.median(r[2] for r in runs) / 1024,
        )
        for name, runs in found.items()
    }


def report(found: Found) -> None:
    figures = medians(found)
    base_first, base_total, _ = figures["native"]
    for name, (first, total, size) in figures.items():
        print(
            f"  {name:10}: first text {first:6.2f} ms ({first - base_first:+.2f})"
            f"  whole stream {total:7.2f} ms (x{total / base_total:.2f})  {size:6.1f} KiB"
        )


@contextlib.contextmanager
def worktree(ref: str) -> Iterator[Path]:
    """The sources of ``ref``, checked out beside this repository for the run."""
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as where:
        path = Path(where) / "other"
        subprocess.run(
            ["git", "-C", str(root), "worktree", "add", "--detach", str(path), ref],
            check=True,
            capture_output=True,
        )
        try:
            yield path / "src"
        finally:
            subprocess.run(
                ["git", "-C", str(root), "worktree", "remove", "--force", str(path)],
                check=False,
                capture_output=True,
            )


async def beside(
    ports: dict[str, tuple[int, dict[str, str]]], surfaces: tuple[str, ...]
) -> dict[str, Found]:
    """Rounds of each version in turn, so that both see the same machine."""
    found: dict[str, Found] = {version: {name: [] for name in surfaces} for version in ports}
    for _ in range(ROUNDS // 5):
        for version, (port, headers) in ports.items():
            for surface, runs in (await rounds(port, headers, 5, surfaces)).items():
                found[version][surface] += runs
    return found


def against(ref: str) -> None:
    with (
        worktree(ref) as other,
        deployed("compat_this") as this,
        deployed("compat_other", {"PYTHONPATH": str(other)}) as that,
    ):
        ports = {"this": this, ref: that}
        # The surfaces both versions have (an older one may lack the newer protocols).
        surfaces = tuple(
            s for s in SURFACES if "--all" in sys.argv or s in ("native", "langgraph", "openai")
        )
        asyncio.run(beside(ports, surfaces))  # warm up
        found = asyncio.run(beside(ports, surfaces))
    print(f"compatibility surfaces, this version beside {ref}, {ROUNDS} runs each, one core")
    for version, runs in found.items():
        print(f" {version}:")
        report(runs)
    now, then = medians(found["this"]), medians(found[ref])
    print(" this / other (whole stream, first text):")
    for surface in now:
        print(
            f"  {surface:9}: x{now[surface][1] / then[surface][1]:.2f} whole stream,"
            f" {now[surface][0] - then[surface][0]:+.2f} ms first text"
        )


def main() -> None:
    if "--against" in sys.argv:
        against(sys.argv[sys.argv.index("--against") + 1])
        return
    with deployed("compat") as (port, headers):
        asyncio.run(rounds(port, headers))  # warm up
        found = asyncio.run(rounds(port, headers))
    print(
        f"compatibility surfaces, {ROUNDS} runs each of a {WORDS}-word reply, one process on one core"
    )
    report(found)
    print(
        "  (target: first text within 6 ms of native; whole stream within x1.5 --"
        " x1.2 for the AI SDK and AG-UI)"
    )


if __name__ == "__main__":
    main()
