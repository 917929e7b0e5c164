"""Throughput of an authenticated read through the full middleware stack vs the same app
without middleware (same routes, same dependencies, the principal injected directly).

Both servers run side by side as separate uvicorn processes; rounds alternate between
them so machine noise hits both. Target: the stack costs at most 30% of bare throughput.
"""

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _load import requests_per_second

ROUNDS, SECONDS, CONNECTIONS = 6, 2.0, 16


def build(kind: str):  # type: ignore[no-untyped-def]
    """The same app both times; "bare" has no middleware and its principal injected."""
    import uuid

    from atelier.app import create_app
    from atelier.http.deps import PrincipalDep, get_principal
    from atelier.http.scope import Principal
    from atelier.settings import Settings

    app = create_app(Settings(rate_limit_per_minute=10**9, rate_limit_burst=10**9))

    @app.get("/v1/bench/read")
    async def read(principal: PrincipalDep) -> dict[str, str]:
        return {"tenant": str(principal.tenant_id)}

    if kind == "bare":
        fixed = Principal(uuid.uuid4(), "bench", uuid.uuid4(), "bench")

        async def fixed_principal() -> Principal:
            return fixed

        app.user_middleware.clear()
        app.dependency_overrides[get_principal] = fixed_principal
    return app


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(kind: str, workdir: str, port: int) -> subprocess.Popen[bytes]:
    code = (
        "import sys, uvicorn; sys.path.insert(0, 'bench'); from edge import build; "
        f"uvicorn.run(build('{kind}'), host='127.0.0.1', port={port}, log_level='warning', "
        "access_log=False, log_config=None)"
    )
    env = {**os.environ, "ATELIER_DATA_DIR": workdir, "ATELIER_LOG_LEVEL": "WARNING"}
    return subprocess.Popen([sys.executable, "-c", code], env=env)


def wait_up(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/docs", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def make_key(workdir: str) -> str:
    from sqlalchemy.ext.asyncio import create_async_engine

    from atelier.db.engine import create_sessionmaker
    from atelier.db.migrate import migrate
    from atelier.tenants.service import create_api_key, create_tenant

    async def go() -> str:
        engine = create_async_engine(f"sqlite+aiosqlite:///{workdir}/atelier.db")
        await migrate(engine)
        async with create_sessionmaker(engine)() as session:
            tenant = await create_tenant(session, "bench")
            key = await create_api_key(session, tenant)
            await session.commit()
        await engine.dispose()
        return key.secret

    return asyncio.run(go())


def main() -> None:
    with tempfile.TemporaryDirectory() as workdir:
        key = make_key(workdir)
        ports = {"full": free_port(), "bare": free_port()}
        servers = [start(kind, workdir, port) for kind, port in ports.items()]
        try:
            for port in ports.values():
                wait_up(port)
            headers = {"Authorization": f"Bearer {key}", "X-User-ID": "bench"}
            results: dict[str, list[float]] = {"full": [], "bare": []}
            for _ in range(ROUNDS):
                for kind, port in ports.items():
                    rps = asyncio.run(
                        requests_per_second(
                            "127.0.0.1", port, "/v1/bench/read", headers, SECONDS, CONNECTIONS
                        )
                    )
                    results[kind].append(rps)
        finally:
            for server in servers:
                server.terminate()
                server.wait(10)
    full, bare = statistics.median(results["full"]), statistics.median(results["bare"])
    # Each round runs both servers back to back; the ratio within a round is what noise spares.
    ratio = statistics.median(f / b for f, b in zip(results["full"], results["bare"], strict=True))
    print(
        f"authenticated read, {CONNECTIONS} connections, {ROUNDS}x{SECONDS:.0f}s rounds (medians)"
    )
    print(f"  full stack : {full:8.0f} req/s   rounds {[round(r) for r in results['full']]}")
    print(f"  bare app   : {bare:8.0f} req/s   rounds {[round(r) for r in results['bare']]}")
    print(f"  ratio full/bare = {ratio:.2f}  (stack overhead {1 - ratio:.0%}; target <= 30%)")


if __name__ == "__main__":
    main()
