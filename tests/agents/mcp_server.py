"""A real MCP server (the official SDK's FastMCP over streamable HTTP), run as its own
process by the tests: ``python -m tests.agents.mcp_server PORT``."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from types import TracebackType

from mcp.server.fastmcp import Context, FastMCP

from tests.conftest import free_port


def build(port: int, extra_tools: int = 0) -> FastMCP:
    server = FastMCP("crm", host="127.0.0.1", port=port, stateless_http=True)

    @server.tool()
    def flood(mib: int) -> str:
        """Answers ``mib`` MiB of text: more than anyone should hold."""
        return "x" * (mib * 1024 * 1024)

    for number in range(extra_tools):  # a listing larger than anyone should hold
        server.add_tool(lambda: "ok", name=f"extra_{number}", description="d" * 2000)

    @server.tool()
    def find_customer(email: str) -> str:
        """Find a customer by email."""
        return f"customer {email}: Ann Lee, plan gold"

    @server.tool()
    def whoami(ctx: Context) -> str:  # type: ignore[type-arg]
        """Who the caller says it is."""
        request = ctx.request_context.request
        assert request is not None
        return str(request.headers.get("authorization", "nobody"))

    @server.tool()
    def where(ctx: Context) -> str:  # type: ignore[type-arg]
        """The query of the URL the caller called."""
        request = ctx.request_context.request
        assert request is not None
        return str(request.url.query)

    @server.tool()
    def fail() -> str:
        """Always fails."""
        raise ValueError("the CRM is down")

    @server.tool()
    async def hang() -> str:
        """Never answers."""
        await asyncio.sleep(3600)
        return "late"

    @server.tool()
    def die() -> str:
        """Takes the server down in the middle of the call."""
        os._exit(1)

    return server


class McpServerProcess:
    """The server in a process of its own (a test may kill it)."""

    def __init__(self, extra_tools: int = 0) -> None:
        self.extra_tools = extra_tools
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> McpServerProcess:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.agents.mcp_server",
                str(self.port),
                str(self.extra_tools),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("the MCP server stopped before it started")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the MCP server did not start")

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)


if __name__ == "__main__":
    build(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 0).run(
        transport="streamable-http"
    )
