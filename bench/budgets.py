"""What budget enforcement adds to a run's first events: side by side, in one run, a
tenant without budgets (nothing to enforce) and a tenant whose runs are bound by three
(tenant, key and end user): one more statement before the run starts, and a hold taken
before each model call.

One Atelier process (PostgreSQL + Redis) pinned to one core; ROUNDS runs per tenant,
alternating. Target: enforcement adds at most 2 ms to the first event's median.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent.parent))

from bench._cores import client_on_its_core
from bench.handover import stream
from bench.runs import one_atelier, prepare

ROUNDS = 100


def new_key(env: dict[str, str], tenant: str) -> str:
    cli = [sys.executable, "-m", "atelier.cli"]
    subprocess.run([*cli, "tenants", "create", tenant], env=env, check=True, capture_output=True)
    made = subprocess.run(
        [*cli, "keys", "create", "--tenant", tenant], env=env, check=True, capture_output=True
    )
    return made.stdout.decode().strip()


async def bind(port: int, headers: dict[str, str]) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers) as http:
        for body in (
            {"scope": "tenant", "period": "month", "limit": "1000000"},
            {"scope": "user", "subject": "bench", "period": "day", "limit": "1000000"},
            {"scope": "tenant", "period": "total", "limit": "1000000"},
        ):
            made = await http.post("/v1/budgets", json=body)
            made.raise_for_status()


async def one(port: int, headers: dict[str, str]) -> tuple[float, float]:
    """From the POST: to run.started, and to the first token."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers) as http:
        made = await http.post("/v1/conversations", json={"title": "bench"})
    path = f"/v1/conversations/{made.json()['id']}/runs"
    sent = time.perf_counter()
    seen = await stream(port, path, headers, {"input": "one two three"})
    return seen[b"run.started"] - sent, seen[b"message.delta"] - sent


async def rounds(port: int, free: dict[str, str], bound: dict[str, str]) -> tuple[list, list]:
    without, within = [], []
    for _ in range(ROUNDS):
        without.append(await one(port, free))
        within.append(await one(port, bound))
    return without, within


def main() -> None:
    client_on_its_core()
    database = f"atelier_budgets_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as workdir:
        env, free_key = prepare(database, workdir)
        bound_key = new_key(env, "bound")
        with one_atelier(env, database) as port:
            free = {"Authorization": f"Bearer {free_key}", "X-User-ID": "bench"}
            bound = {"Authorization": f"Bearer {bound_key}", "X-User-ID": "bench"}
            asyncio.run(bind(port, bound))
            asyncio.run(rounds(port, free, bound))  # warm up
            without, within = asyncio.run(rounds(port, free, bound))
    print(f"budget enforcement, {ROUNDS} runs each, one process on one core (ms, p50)")
    for index, name in ((0, "run.started"), (1, "first token")):
        off = statistics.median(r[index] for r in without) * 1000
        on = statistics.median(r[index] for r in within) * 1000
        print(
            f"  {name:12}: no budgets {off:6.2f}  three budgets {on:6.2f}"
            f"  added {on - off:+.2f} ms  ratio {on / off:.2f}  (target added <= 2 ms)"
        )


if __name__ == "__main__":
    main()
