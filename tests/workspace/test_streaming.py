"""Streaming under load over a real socket: loop stalls (BUG-003) and aborted downloads (BUG-023)."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import psutil
import pytest
from fastapi import FastAPI

from atelier.settings import Settings
from tests.conftest import Caller, make_caller
from tests.hashing import HashingOnLoop
from tests.live import serve

MiB = 1024 * 1024


@pytest.fixture
async def live(unstarted_app: FastAPI) -> AsyncIterator[tuple[str, FastAPI, Caller, str]]:
    async with serve(unstarted_app) as base_url:
        caller = await make_caller(unstarted_app)
        async with httpx.AsyncClient(base_url=base_url) as http:
            created = await http.post("/v1/conversations", json={}, headers=caller.headers())
        yield base_url, unstarted_app, caller, created.json()["id"]


async def curl(*args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        "curl",
        "--silent",
        "--show-error",
        "--fail",
        *args,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()


class TestTheLoopNeverWaits:
    async def test_100_mib_up_and_down_neither_block_nor_hash_on_the_loop(
        self, live, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """BUG-003: 100 MiB goes up (S3: multipart, 8 MiB parts) and comes back through a
        real server with no blocking call on the event loop (blockbuster, active for every
        test, fails the request that makes one) and no body hashed on it. How long the loop
        waits is measured in `bench/loop_lag.py`."""
        base_url, _, caller, conversation = live
        source = tmp_path / "big.bin"
        with source.open("wb") as handle:
            for _ in range(100):
                handle.write(os.urandom(MiB))
        url = f"{base_url}/v1/conversations/{conversation}/files/big.bin"
        auth = [f"-H{name}: {value}" for name, value in caller.headers().items()]
        with HashingOnLoop(monkeypatch) as hashing:
            await curl("-T", str(source), *auth, url)
            await curl("-o", str(tmp_path / "back.bin"), *auth, url)
        assert (tmp_path / "back.bin").read_bytes() == source.read_bytes()
        assert hashing.other_bytes >= 100 * MiB  # Content-MD5 (S3) or the etag (local)
        assert hashing.loop_bytes < MiB, f"{hashing.loop_bytes} bytes hashed on the loop"


class BodyCloses:
    """Counts the storage bodies a download opens and the ones explicitly closed: a body
    left to the garbage collector holds its connection (or file) until it runs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from aiobotocore.response import AioStreamingBody

        from atelier.workspace import local

        self.numbers = itertools.count()
        self.opened_ids: set[int] = set()
        self.closed_ids: set[int] = set()
        spy = self
        real_read, real_close = AioStreamingBody.read, AioStreamingBody.close

        async def read(body, *args, **kwargs):  # type: ignore[no-untyped-def]
            if not hasattr(body, "spied"):  # a body counts from its first read
                body.spied = next(spy.numbers)
                spy.opened_ids.add(body.spied)
            return await real_read(body, *args, **kwargs)

        def close(body):  # type: ignore[no-untyped-def]
            if hasattr(body, "spied"):
                spy.closed_ids.add(body.spied)
            real_close(body)

        monkeypatch.setattr(AioStreamingBody, "read", read)
        monkeypatch.setattr(AioStreamingBody, "close", close)
        monkeypatch.setattr(local, "open", self._open, raising=False)

    @property
    def opened(self) -> int:
        return len(self.opened_ids)

    @property
    def closed(self) -> int:
        return len(self.closed_ids & self.opened_ids)

    def _open(self, path, mode="r"):  # type: ignore[no-untyped-def]
        spy = self

        class Counted:
            def __init__(self, handle) -> None:  # type: ignore[no-untyped-def]
                self.handle = handle
                self.spied = next(spy.numbers)
                spy.opened_ids.add(self.spied)

            def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
                return getattr(self.handle, name)

            def close(self) -> None:
                spy.closed_ids.add(self.spied)
                self.handle.close()

        return Counted(open(path, mode))


class TestAbortedDownloads:
    async def test_100_aborted_downloads_leak_nothing(
        self, live, settings: Settings, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """BUG-023: a client that stops after the first chunk leaves no body open: each is
        closed explicitly when the response ends, not whenever the collector runs."""
        bodies = BodyCloses(monkeypatch)
        base_url, _, caller, conversation = live
        # Bigger than the socket buffers: a client that stops reading holds the server in
        # the middle of sending, where only the response's own clean-up closes the body.
        path = f"/v1/conversations/{conversation}/files/big.bin"
        async with httpx.AsyncClient(base_url=base_url) as http:
            await http.put(path, content=os.urandom(24 * MiB), headers=caller.headers())
        host, port = base_url.removeprefix("http://").split(":")
        head = "".join(f"{k}: {v}\r\n" for k, v in caller.headers().items())
        request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{head}\r\n".encode()
        me = psutil.Process()
        fds_before = me.num_fds()
        for attempt in range(100):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(request)
            await reader.readuntil(b"\r\n\r\n")
            await reader.read(64 * 1024)  # the first chunk, then hang up
            if attempt % 5 == 0:
                # Reading nothing more for a while leaves the server waiting to send: the
                # hang-up then finds it there, between two chunks of the body.
                await asyncio.sleep(0.1)
            writer.close()
            await writer.wait_closed()
        moto_port = int(settings.s3_endpoint_url.rsplit(":", 1)[1]) if settings.s3_bucket else 0

        def leaked() -> str | None:
            to_s3 = [
                c
                for c in me.net_connections(kind="tcp")
                if c.raddr and c.raddr.port == moto_port and c.status == psutil.CONN_ESTABLISHED
            ]
            if len(to_s3) > 10:
                return f"{len(to_s3)} connections to S3 still open"
            if me.num_fds() - fds_before > 10:
                return "file handles or sockets leaked"
            return None

        # The server notices the last disconnects a moment after they happen.
        for _ in range(200):
            if leaked() is None:
                break
            await asyncio.sleep(0.05)
        assert leaked() is None, leaked()
        for _ in range(200):
            if bodies.closed >= bodies.opened:
                break
            await asyncio.sleep(0.05)
        assert bodies.opened >= 100
        assert bodies.closed == bodies.opened, f"{bodies.opened - bodies.closed} bodies left open"
        # And the pool still serves a complete download promptly.
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
            complete = await http.get(path, headers=caller.headers())
        assert complete.status_code == 200
        assert len(complete.content) == 24 * MiB
