"""What a tenant's floods make one process hold: its resident memory before and after,
with the caps in place (the attack review measured these without them).

(a) Four concurrent MCP tool calls answering 50 MiB each (the review: 156 -> 1,330 MiB,
    812 MiB still held after). With ATELIER_MCP_MAX_RESULT_BYTES (1 MiB) reading stops
    at the cap: each call is a tool error at once.
(b) An MCP server listing 20,000 tools with 2,000-character descriptions (the review:
    152 -> 680 MiB). With ATELIER_MCP_MAX_LIST_BYTES it is that server's failure.
(c) An agent patched until its versions' cap with 99 KB instructions, then listed (the
    review: one 148.9 MB answer for 1,500 versions): now capped and paged.

One `atelier serve` on embedded defaults, in a fresh data directory; the MCP servers are
the tests' FastMCP server. Prints MiB of resident memory after each flood.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent.parent))
from tests.agents.mcp_server import McpServerProcess

from bench.edge import free_port

VERSIONS = 200  # of ATELIER_MAX_AGENT_VERSIONS, set to this for the bench


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def main() -> None:
    data = Path(tempfile.mkdtemp(prefix="atelier-floods-"))
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")},
        "ATELIER_DATA_DIR": str(data),
        "ATELIER_MCP_ALLOW_PRIVATE": "true",
        "ATELIER_RATE_LIMIT_ENABLED": "false",
        "ATELIER_MCP_CALL_TIMEOUT_SECONDS": "120",
        "ATELIER_MCP_LIST_TIMEOUT_SECONDS": "120",
        "ATELIER_MAX_AGENT_VERSIONS": str(VERSIONS),
        "ATELIER_LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "atelier.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=300) as http:
            for _ in range(300):
                try:
                    if (await http.get("/ready")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            key = (data / "dev-api-key").read_text().strip()
            http.headers.update({"Authorization": f"Bearer {key}", "X-User-ID": "bench"})
            print(f"idle: {rss_mib(server.pid):.0f} MiB")
            with McpServerProcess() as flood, McpServerProcess(extra_tools=20_000) as crowded:
                await flooded_calls(http, flood.url, server.pid)
                await crowded_listing(http, crowded.url, server.pid)
            await many_versions(http, server.pid)
    finally:
        server.terminate()
        server.wait(30)


async def run(http: httpx.AsyncClient, agent_id: str, text: str) -> str:
    conversation = (await http.post("/v1/conversations", json={"agent_id": agent_id})).json()
    answer = await http.post(
        f"/v1/conversations/{conversation['id']}/runs",
        json={"input": text},
        headers={"Accept": "text/event-stream"},
    )
    return answer.text


async def agent(http: httpx.AsyncClient, name: str, url: str) -> str:
    made = await http.post(
        "/v1/agents", json={"name": name, "mcp_servers": [{"name": "crm", "url": url}]}
    )
    return str(made.json()["id"])


async def flooded_calls(http: httpx.AsyncClient, url: str, pid: int) -> None:
    agent_id = await agent(http, "flooded", url)
    started = time.monotonic()
    streams = await asyncio.gather(
        *(run(http, agent_id, 'call crm__flood {"mib": 50}') for _ in range(4))
    )
    capped = sum("is over 1048576 bytes" in s for s in streams)
    print(
        f"(a) 4 x 50 MiB MCP answers: {rss_mib(pid):.0f} MiB after; "
        f"{capped}/4 stopped at the cap in {time.monotonic() - started:.1f} s"
    )


async def crowded_listing(http: httpx.AsyncClient, url: str, pid: int) -> None:
    agent_id = await agent(http, "crowded", url)
    stream = await run(http, agent_id, "hello")
    told = "tools.unavailable" in stream
    print(f"(b) 20,000 listed tools: {rss_mib(pid):.0f} MiB after; told on the stream: {told}")


async def many_versions(http: httpx.AsyncClient, pid: int) -> None:
    made = (await http.post("/v1/agents", json={"name": "versions"})).json()
    instructions = "x" * 99_000
    refused = 0
    for number in range(VERSIONS + 10):
        changed = await http.patch(
            f"/v1/agents/{made['id']}", json={"instructions": f"{number}{instructions}"}
        )
        refused += changed.status_code == 409
    page = await http.get(f"/v1/agents/{made['id']}/versions")
    print(
        f"(c) {VERSIONS + 10} patches of 99 KB: {refused} refused past the cap; one page of "
        f"versions is {len(page.content) / 1e6:.1f} MB; {rss_mib(pid):.0f} MiB after"
    )


if __name__ == "__main__":
    asyncio.run(main())
