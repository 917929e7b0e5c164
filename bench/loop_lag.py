"""How long the event loop waits while 100 MiB goes up and comes back (BUG-003), next to
the same loop left idle for as long, in one run.

A probe sleeps 5 ms at a time and records how late it wakes, while curl uploads a
100 MiB file to a real Atelier server in this process and downloads it again, first
on the local workspace directory and then on S3 (moto's server, when moto is installed).
Prints the worst and the 99th percentile lag of each, and of the idle loop. `make test`
proves deterministically that nothing blocks or hashes on the loop; this says how long
it waits, which a busy machine would make flaky in a test.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import uvicorn

sys.path.insert(0, str(Path(__file__).parent.parent))
from bench._lag import LoopLagProbe
from bench.edge import free_port

MiB = 1024 * 1024


class Lags(LoopLagProbe):
    """The probe, keeping every lag for percentiles."""

    def __init__(self) -> None:
        super().__init__()
        self.lags: list[float] = []

    async def _run(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(0.005)
            lag = time.perf_counter() - started - 0.005
            self.lags.append(lag)
            self.max_lag = max(self.max_lag, lag)


async def curl(*args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        "curl", "--silent", "--show-error", "--fail", *args, stdout=asyncio.subprocess.DEVNULL
    )
    assert await process.wait() == 0


async def transfer(settings_values: dict[str, object], source: Path, workdir: Path) -> Lags:
    from atelier.app import create_app
    from atelier.db.engine import create_engine, create_sessionmaker
    from atelier.db.migrate import migrate
    from atelier.settings import Settings
    from atelier.tenants.service import create_api_key, create_tenant

    data_dir = workdir / uuid.uuid4().hex
    settings = Settings(data_dir=data_dir, log_level="WARNING", **settings_values)  # type: ignore[arg-type]
    engine = await asyncio.to_thread(create_engine, settings)
    await migrate(engine)
    async with create_sessionmaker(engine)() as session:
        key = (await create_api_key(session, await create_tenant(session, "bench"))).secret
        await session.commit()
    await engine.dispose()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    headers = {"Authorization": f"Bearer {key}", "X-User-ID": "bench"}
    async with httpx.AsyncClient() as http:
        made = await http.post(
            f"http://127.0.0.1:{port}/v1/conversations", json={}, headers=headers
        )
    url = f"http://127.0.0.1:{port}/v1/conversations/{made.json()['id']}/files/big.bin"
    auth = [f"-H{name}: {value}" for name, value in headers.items()]
    await curl("-T", str(source), *auth, url)  # warm: first requests build validators
    async with Lags() as probe:
        await curl("-T", str(source), *auth, url)
        await curl("-o", str(workdir / "back.bin"), *auth, url)
    server.should_exit = True
    await task
    return probe


def moto_settings() -> tuple[dict[str, object], subprocess.Popen[bytes]] | None:
    try:
        import boto3
    except ImportError:
        return None
    port = free_port()
    code = (
        "import time; from moto.server import ThreadedMotoServer; "
        f"s = ThreadedMotoServer(ip_address='127.0.0.1', port={port}, verbose=False); "
        "s.start(); time.sleep(10**9)"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(endpoint, timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.1)
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_bucket(Bucket="bench")
    values = {
        "s3_bucket": "bench",
        "s3_endpoint_url": endpoint,
        "s3_access_key_id": "testing",
        "s3_secret_access_key": "testing",
    }
    return values, process


def report(name: str, lags: list[float]) -> None:
    p99 = statistics.quantiles(lags, n=100)[98]
    print(
        f"  {name:16}: max {max(lags) * 1000:6.1f} ms   p99 {p99 * 1000:6.2f} ms  ({len(lags)} ticks)"
    )


async def main() -> None:
    with tempfile.TemporaryDirectory() as temp:
        workdir = Path(temp)
        source = workdir / "big.bin"
        with source.open("wb") as handle:
            for _ in range(100):
                handle.write(os.urandom(MiB))
        async with Lags() as idle:
            await asyncio.sleep(3)
        results = {"local directory": await transfer({}, source, workdir)}
        moto = moto_settings()
        if moto is not None:
            values, process = moto
            try:
                results["S3 (moto)"] = await transfer(values, source, workdir)
            finally:
                process.terminate()
    print("Event loop lag while 100 MiB goes up and comes back (a 5 ms sleep, how late)")
    report("idle loop", idle.lags)
    for name, probe in results.items():
        report(name, probe.lags)


if __name__ == "__main__":
    asyncio.run(main())
