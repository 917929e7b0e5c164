"""Two real server processes sharing PostgreSQL, Redis and S3: a run started on one is
streamed and cancelled through the other; killing one mid-run frees its conversations
within the lease; SIGTERM leaves no run `running`."""

from __future__ import annotations

import asyncio
import fcntl
import signal
from pathlib import Path

import httpx

from tests.fixtures.processes import LEASE_SECONDS, Deployment, events, status_of
from tests.runs.helpers import TERMINAL

LONG_INPUT = " ".join(f"word{i}" for i in range(60))  # the offline model echoes it slowly


async def test_start_on_one_process_stream_and_cancel_through_the_other(
    deployment: Deployment, servers
) -> None:
    d = deployment
    a, b = servers(), servers()
    await asyncio.gather(a.ready(), b.ready())
    async with httpx.AsyncClient(base_url=a.url) as on_a, httpx.AsyncClient(base_url=b.url) as on_b:
        conversation = (await on_a.post("/v1/conversations", json={}, headers=d.headers())).json()[
            "id"
        ]
        run = (
            await on_a.post(
                f"/v1/conversations/{conversation}/runs",
                json={"input": LONG_INPUT},
                headers=d.headers(),
            )
        ).json()
        seen = []
        async for event in events(
            on_b, f"/v1/conversations/{conversation}/runs/{run['id']}/events", d.headers()
        ):
            seen.append(event)
            if sum(1 for _, name, _ in seen if name == "message.delta") == 3:
                cancel = await on_b.post(
                    f"/v1/conversations/{conversation}/runs/{run['id']}/cancel",
                    headers=d.headers(),
                )
                assert cancel.status_code == 202
        assert [i for i, _, _ in seen] == list(range(1, len(seen) + 1))
        assert seen[-1][1] == "run.cancelled"
        ended = await status_of(on_b, d, conversation, run["id"])
        assert ended["status"] == "cancelled"
        reply = (
            await on_b.get(f"/v1/conversations/{conversation}/messages", headers=d.headers())
        ).json()["data"][-1]
        assert reply["incomplete"] is True


async def test_a_killed_process_frees_its_conversations_within_the_lease(
    deployment: Deployment, servers
) -> None:
    d = deployment
    a, b = servers(), servers()
    await asyncio.gather(a.ready(), b.ready())
    async with httpx.AsyncClient(base_url=a.url) as on_a, httpx.AsyncClient(base_url=b.url) as on_b:
        conversations = [
            (await on_a.post("/v1/conversations", json={}, headers=d.headers())).json()["id"]
            for _ in range(2)
        ]
        runs = []
        for conversation in conversations:
            response = await on_a.post(
                f"/v1/conversations/{conversation}/runs",
                json={"input": LONG_INPUT},
                headers=d.headers(),
            )
            assert response.status_code == 202
            runs.append(response.json()["id"])
        async for _, name, _ in events(
            on_b, f"/v1/conversations/{conversations[0]}/runs/{runs[0]}/events", d.headers()
        ):
            if name == "message.delta":
                break
        a.process.send_signal(signal.SIGKILL)
        a.process.wait(10)

        # The first conversation: a new run through B is accepted once the lease runs out.
        async with asyncio.timeout(LEASE_SECONDS * 3 + 5):
            while True:
                response = await on_b.post(
                    f"/v1/conversations/{conversations[0]}/runs",
                    json={"input": "hello"},
                    headers=d.headers(),
                )
                if response.status_code == 202:
                    break
                assert response.status_code == 409
                await asyncio.sleep(0.1)
        lost = await status_of(on_b, d, conversations[0], runs[0])
        assert lost["status"] == "failed"
        assert lost["error"]["code"] == "worker_lost"

        # The second: nobody asks, B's reaper finds it.
        async with asyncio.timeout(LEASE_SECONDS * 3 + 5):
            while (await status_of(on_b, d, conversations[1], runs[1]))["status"] == "running":
                await asyncio.sleep(0.2)
        reaped = await status_of(on_b, d, conversations[1], runs[1])
        assert reaped["error"]["code"] == "worker_lost"
        tail = [
            e
            async for e in events(
                on_b, f"/v1/conversations/{conversations[1]}/runs/{runs[1]}/events", d.headers()
            )
        ]
        assert tail[-1][1] == "run.failed"
        assert sum(1 for _, name, _ in tail if name in TERMINAL) == 1


async def test_sigterm_lets_short_runs_finish_and_cancels_the_rest(
    deployment: Deployment, servers
) -> None:
    d = deployment
    server = servers(ATELIER_SHUTDOWN_GRACE_SECONDS="4")
    await server.ready()
    async with httpx.AsyncClient(base_url=server.url) as http:
        started = {}
        for text in ("hi", LONG_INPUT):
            conversation = (
                await http.post("/v1/conversations", json={}, headers=d.headers())
            ).json()["id"]
            run = await http.post(
                f"/v1/conversations/{conversation}/runs", json={"input": text}, headers=d.headers()
            )
            started[text] = (conversation, run.json()["id"])
        server.process.send_signal(signal.SIGTERM)
        # Uvicorn re-raises the signal once it has shut down cleanly.
        assert server.process.wait(30) in (0, -signal.SIGTERM)
    other = servers()
    await other.ready()
    async with httpx.AsyncClient(base_url=other.url) as http:
        short = await status_of(http, d, *started["hi"])
        long = await status_of(http, d, *started[LONG_INPUT])
    assert short["status"] == "completed"
    assert long["status"] == "cancelled"
    assert long["error"]["code"] == "shutdown"


async def test_one_idempotency_key_sent_to_two_processes_at_once_acts_once(
    deployment: Deployment, servers
) -> None:
    """The same run, started with the same key on two processes at the same moment: one
    run; both answers name it (one of them may be asked to retry while the first is
    being answered)."""
    d = deployment
    a, b = servers(), servers()
    await asyncio.gather(a.ready(), b.ready())
    async with (
        httpx.AsyncClient(base_url=a.url, timeout=30) as on_a,
        httpx.AsyncClient(base_url=b.url, timeout=30) as on_b,
    ):
        conversations = [
            (await on_a.post("/v1/conversations", json={}, headers=d.headers())).json()["id"]
            for _ in range(5)
        ]
        for number, conversation in enumerate(conversations):
            headers = d.headers(**{"Idempotency-Key": f"start-{number}"})
            body = {"input": "hello"}
            path = f"/v1/conversations/{conversation}/runs"
            answers = await asyncio.gather(
                on_a.post(path, json=body, headers=headers),
                on_b.post(path, json=body, headers=headers),
            )
            assert {r.status_code for r in answers} <= {202, 409}, [r.text for r in answers]
            started = {r.json()["id"] for r in answers if r.status_code == 202}
            assert len(started) == 1
            for retry in [r for r in answers if r.status_code == 409]:
                assert retry.json()["code"] == "idempotency_key_in_use"
            runs = (await on_b.get(path, headers=d.headers())).json()["data"]
            assert [run["id"] for run in runs] == list(started)


async def test_workers_of_one_host_start_together_on_a_fresh_data_directory(
    deployment: Deployment, servers
) -> None:
    """`--workers 2` on a machine that has never run Atelier: both workers make or read the
    development secrets key and claim a workspace-copy directory of their own at the same
    moment; runs on either work on their own copies."""
    d = deployment
    # A lease of its own: the deployment's 2 s (for the kill tests) can run out on a busy
    # machine, failing a run as lease_lost -- not what this test is about.
    server = servers(ATELIER_WORKERS="2", ATELIER_RUN_LEASE_SECONDS="30")
    await server.ready()
    copies = Path(d.env["ATELIER_DATA_DIR"]) / "runs"
    async with asyncio.timeout(30):
        while len(held_claims(copies)) < 2:
            await asyncio.sleep(0.1)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:

        async def write_then_read(number: int) -> str:
            conversation = (
                await http.post("/v1/conversations", json={}, headers=d.headers())
            ).json()["id"]
            run = await http.post(
                f"/v1/conversations/{conversation}/runs",
                json={"input": f"write note.txt: number {number}\nread note.txt"},
                headers=d.headers(),
            )
            assert run.status_code == 202, run.text
            path = f"/v1/conversations/{conversation}/runs/{run.json()['id']}/events"
            ends = [
                (name, data)
                async for _, name, data in events(http, path, d.headers())
                if name in TERMINAL
            ]
            assert [name for name, _ in ends] == ["run.completed"], (ends, server.output())
            note = await http.get(
                f"/v1/conversations/{conversation}/files/note.txt", headers=d.headers()
            )
            return note.text

        notes = await asyncio.gather(*(write_then_read(n) for n in range(8)))
    assert notes == [f"number {n}" for n in range(8)]
    assert len(held_claims(copies)) == 2  # neither worker died along the way


def held_claims(copies: Path) -> list[str]:
    """The workspace-copy directories a live process holds (their lock is taken)."""
    held = []
    for lock in copies.glob("process-*.lock") if copies.is_dir() else []:
        with lock.open("rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held.append(lock.stem)
    return held
