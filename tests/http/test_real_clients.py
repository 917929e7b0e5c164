"""Every user-visible path the way clients really call it: a real uvicorn server on a
loopback socket, driven by curl and by httpx over TCP, on both backends.

The in-process transport hides how bytes arrive (it once hid a multipart bug that broke
every small browser and ``curl -F`` upload) and it buffers whole responses, so streams,
disconnects and aborted transfers are only real here. SSE is parsed by httpx-sse, a
standards-following parser, not by hand.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from httpx_sse import ServerSentEvent, aconnect_sse

from tests.conftest import Caller

MiB = 1024 * 1024
TERMINAL = {"run.completed", "run.failed", "run.cancelled", "run.timed_out"}


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    # Slow enough that a run is still streaming when a client leaves and comes back.
    return {"offline_model_delay_seconds": 0.01, "max_file_size": 32 * MiB}


@pytest.fixture
async def http(served: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=served, timeout=30) as client:
        yield client


@pytest.fixture
async def conversation(http: httpx.AsyncClient, caller: Caller) -> str:
    made = await http.post("/v1/conversations", json={}, headers=caller.headers())
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


async def curl(*args: str, stdin: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """Run curl; return its status, response headers and body."""
    process = await asyncio.create_subprocess_exec(
        "curl",
        "--silent",
        "--show-error",
        "--dump-header",
        "/dev/stderr",
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else None,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    body, head = await process.communicate(stdin)
    assert process.returncode == 0, head.decode(errors="replace")
    lines = head.decode("latin-1").split("\r\n")
    # The last response's head (curl may show a 100 Continue first).
    start = max(i for i, line in enumerate(lines) if line.startswith("HTTP/"))
    status = int(lines[start].split()[1])
    headers = {}
    for line in lines[start + 1 :]:
        name, _, value = line.partition(":")
        if value:
            headers[name.strip().lower()] = value.strip()
    return status, headers, body


def auth(caller: Caller, **extra: str) -> list[str]:
    return [f"-H{name}: {value}" for name, value in caller.headers(**extra).items()]


class TestUploads:
    async def test_curl_form_upload_of_a_small_file(
        self, served, caller, conversation, tmp_path: Path
    ) -> None:
        """`curl -F file=@notes.txt`: the whole body arrives in one chunk."""
        (tmp_path / "notes.txt").write_text("Buy milk.\n")
        url = f"{served}/v1/conversations/{conversation}/files"
        status, _, body = await curl("-F", f"file=@{tmp_path / 'notes.txt'}", *auth(caller), url)
        assert status == 201, body
        assert json.loads(body)["path"] == "notes.txt"
        status, _, body = await curl(
            "-F", "path=docs/ünïcode.txt", "-F", f"file=@{tmp_path / 'notes.txt'}",
            *auth(caller), url,
        )  # fmt: skip
        assert status == 201, body
        assert json.loads(body)["path"] == "docs/ünïcode.txt"
        _, _, back = await curl(*auth(caller), f"{url}/docs/%C3%BCn%C3%AFcode.txt")
        assert back == b"Buy milk.\n"

    async def test_a_path_after_the_file_is_refused_and_nothing_is_stored(
        self, served, caller, conversation, tmp_path: Path
    ) -> None:
        """`curl -F file=@x -F path=docs/x` (FormData built file-first): never stored
        under the file's own name instead of the path asked for."""
        (tmp_path / "report.txt").write_text("Q3\n")
        url = f"{served}/v1/conversations/{conversation}/files"
        status, _, body = await curl(
            "-F", f"file=@{tmp_path / 'report.txt'}", "-F", "path=docs/report.txt",
            *auth(caller), url,
        )  # fmt: skip
        assert status == 422, body
        assert json.loads(body)["code"] == "path_after_file"
        _, _, listed = await curl(*auth(caller), url)
        assert json.loads(listed)["data"] == []

    async def test_httpx_form_uploads_on_fresh_connections(
        self, served, caller, conversation
    ) -> None:
        for n in range(5):
            async with httpx.AsyncClient(base_url=served) as fresh:
                response = await fresh.post(
                    f"/v1/conversations/{conversation}/files",
                    files={"file": (f"n{n}.txt", b"tiny\n", "text/plain")},
                    headers=caller.headers(),
                )
            assert response.status_code == 201, response.text
            assert response.json()["size"] == 5

    async def test_curl_put_creates_then_replaces(
        self, served, caller, conversation, tmp_path: Path
    ) -> None:
        (tmp_path / "a.csv").write_text("a,b\n1,2\n")
        url = f"{served}/v1/conversations/{conversation}/files/data/a.csv"
        created, _, body = await curl("-T", str(tmp_path / "a.csv"), *auth(caller), url)
        assert created == 201, body
        assert json.loads(body)["content_type"] == "text/csv"
        replaced, _, _ = await curl("-T", str(tmp_path / "a.csv"), *auth(caller), url)
        assert replaced == 200

    async def test_20_mib_up_both_ways_and_back(
        self, served, http, caller, conversation, tmp_path: Path
    ) -> None:
        data = os.urandom(20 * MiB)
        digest = hashlib.sha256(data).hexdigest()
        (tmp_path / "big.bin").write_bytes(data)

        async def body() -> AsyncIterator[bytes]:
            for start in range(0, len(data), MiB):
                yield data[start : start + MiB]

        put = await http.put(
            f"/v1/conversations/{conversation}/files/put.bin",
            content=body(),
            headers=caller.headers(),
        )
        assert put.status_code == 201, put.text
        url = f"{served}/v1/conversations/{conversation}/files"
        status, _, answer = await curl(
            "-F", "path=form.bin", "-F", f"file=@{tmp_path / 'big.bin'}", *auth(caller), url
        )
        assert status == 201, answer
        for name in ("put.bin", "form.bin"):
            _, _, back = await curl(*auth(caller), f"{url}/{name}")
            assert hashlib.sha256(back).hexdigest() == digest


class TestDownloads:
    async def test_range_etag_and_not_modified(self, served, http, caller, conversation) -> None:
        await http.put(
            f"/v1/conversations/{conversation}/files/r.txt",
            content=b"0123456789abcdef",
            headers=caller.headers(),
        )
        url = f"{served}/v1/conversations/{conversation}/files/r.txt"
        status, headers, body = await curl("-r", "4-9", *auth(caller), url)
        assert (status, body) == (206, b"456789")
        assert headers["content-range"] == "bytes 4-9/16"
        status, _, body = await curl("-r", "-3", *auth(caller), url)
        assert (status, body) == (206, b"def")
        _, full, _ = await curl(*auth(caller), url)
        status, _, body = await curl(*auth(caller, **{"If-None-Match": full["etag"]}), url)
        assert (status, body) == (304, b"")

    async def test_workspace_zip(self, served, http, caller, conversation) -> None:
        files = {"a.txt": b"alpha", "dir/b.bin": os.urandom(300_000)}
        for path, data in files.items():
            await http.put(
                f"/v1/conversations/{conversation}/files/{path}",
                content=data,
                headers=caller.headers(),
            )
        url = f"{served}/v1/conversations/{conversation}/workspace.zip"
        status, headers, body = await curl(*auth(caller), url)
        assert status == 200
        assert headers["content-type"] == "application/zip"
        archive = zipfile.ZipFile(io.BytesIO(body))
        assert {name: archive.read(name) for name in archive.namelist()} == files


async def events_of(
    http: httpx.AsyncClient, method: str, url: str, headers: dict[str, str], **kwargs: object
) -> AsyncIterator[ServerSentEvent]:
    async with aconnect_sse(http, method, url, headers=headers, **kwargs) as source:
        assert source.response.status_code == 200
        async for event in source.aiter_sse():
            yield event


class TestStreams:
    async def test_a_chat_streams_to_done(self, http, caller) -> None:
        chat = (await http.post("/v1/chats", json={}, headers=caller.headers())).json()["id"]
        names, text = [], ""
        async for event in events_of(
            http, "POST", f"/v1/chats/{chat}/messages", caller.headers(), json={"content": "Hi"}
        ):
            names.append(event.event)
            if event.event == "message.delta":
                text += event.json()["text"]
        assert names[0] == "message.delta"
        assert names[-1] == "done"
        stored = (await http.get(f"/v1/chats/{chat}/messages", headers=caller.headers())).json()
        assert stored["data"][-1]["content"] == text

    async def test_a_run_resumed_after_a_disconnect_misses_and_repeats_nothing(
        self, http, caller, conversation
    ) -> None:
        runs = f"/v1/conversations/{conversation}/runs"
        first: list[ServerSentEvent] = []
        async for event in events_of(
            http, "POST", runs, caller.headers(), json={"input": "word " * 200}
        ):
            first.append(event)
            if len(first) == 10:
                break  # the client goes away mid-run
        run_id = first[0].json()["run_id"]
        rest = [
            event
            async for event in events_of(
                http,
                "GET",
                f"{runs}/{run_id}/events",
                caller.headers(**{"Last-Event-ID": first[-1].id}),
            )
        ]
        events = first + rest
        assert [int(e.id) for e in events] == list(range(1, len(events) + 1))
        assert events[-1].event == "run.completed"
        text = "".join(e.json()["text"] for e in events if e.event == "message.delta")
        stored = (
            await http.get(f"/v1/conversations/{conversation}/messages", headers=caller.headers())
        ).json()["data"]
        assert stored[-1]["content"] == text

    async def test_cancel_from_another_client_ends_the_stream(
        self, served, http, caller, conversation
    ) -> None:
        runs = f"/v1/conversations/{conversation}/runs"
        seen: list[str] = []
        async for event in events_of(
            http, "POST", runs, caller.headers(), json={"input": "word " * 2000}
        ):
            seen.append(event.event)
            if len(seen) == 3:
                run_id = (await http.get(runs, headers=caller.headers())).json()["data"][0]["id"]
                status, _, body = await curl(
                    "-X", "POST", *auth(caller), f"{served}{runs}/{run_id}/cancel"
                )
                assert status == 202, body
        assert seen[-1] == "run.cancelled"
        assert "run.completed" not in seen


class TestProblems:
    @pytest.mark.parametrize(
        ("args", "status", "code"),
        [
            (["-H", "X-User-ID: u"], 401, "missing_api_key"),
            (["{auth}"], 404, "not_found"),
            (["{auth}", "-X", "POST", "-H", "Content-Type: application/json", "-d", "{}"],
             422, "validation_error"),
            (["{auth}", "-H", "Last-Event-ID: nope"], 400, "invalid_last_event_id"),
        ],
    )  # fmt: skip
    async def test_errors_are_problem_json(
        self, served, caller, conversation, args, status, code
    ) -> None:
        path = {
            404: f"/v1/conversations/{'0' * 8}-0000-4000-8000-{'0' * 12}",
            422: f"/v1/conversations/{conversation}/runs",
            400: f"/v1/conversations/{conversation}/runs/{'0' * 8}-0000-4000-8000-{'0' * 12}/events",
        }.get(status, "/v1/conversations")
        expanded = [a for arg in args for a in (auth(caller) if arg == "{auth}" else [arg])]
        got, headers, body = await curl(*expanded, served + path)
        assert got == status, body
        assert headers["content-type"] == "application/problem+json"
        assert json.loads(body)["code"] == code

    async def test_an_oversize_upload_is_413_and_leaves_nothing(
        self, served, http, caller, conversation, tmp_path: Path
    ) -> None:
        (tmp_path / "huge.bin").write_bytes(b"x" * (33 * MiB))
        url = f"{served}/v1/conversations/{conversation}/files"
        status, headers, body = await curl(
            "-F", f"file=@{tmp_path / 'huge.bin'}", *auth(caller), url
        )
        assert status == 413
        assert headers["content-type"] == "application/problem+json"
        assert json.loads(body)["code"] == "payload_too_large"
        listed = await http.get(f"/v1/conversations/{conversation}/files", headers=caller.headers())
        assert listed.json()["data"] == []


class TestHugeJsonBodies:
    """JSON bodies are capped while they stream in: 413, and the server's memory unchanged
    (300 MiB once grew it by 0.9-1.2 GiB before the 422)."""

    @pytest.mark.parametrize("path", ["/v1/conversations", "/v1/chats/{chat}/messages"])
    async def test_a_huge_body_is_413_and_never_held(self, http, caller, path) -> None:
        import psutil

        chat = (await http.post("/v1/chats", json={}, headers=caller.headers())).json()["id"]
        url = path.format(chat=chat)
        me = psutil.Process()

        async def body(megabytes: int) -> AsyncIterator[bytes]:
            yield b'{"title": "'
            for _ in range(megabytes):
                yield b"x" * (1024 * 1024)
            yield b'"}'

        before = me.memory_info().rss
        streamed = await http.post(  # chunked: no size given up front
            url, content=body(200), headers=caller.headers(**{"Content-Type": "application/json"})
        )
        grown = me.memory_info().rss - before
        assert streamed.status_code == 413
        assert streamed.headers["content-type"] == "application/problem+json"
        assert streamed.json()["code"] == "payload_too_large"
        assert grown < 30 * MiB, f"the server grew by {grown / MiB:.0f} MiB"
        # 300 MiB announced: refused before a byte of it is sent (raw socket: no client
        # library sends a Content-Length it does not mean).
        host, port = str(http.base_url).removeprefix("http://").rstrip("/").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        head = "".join(f"{k}: {v}\r\n" for k, v in caller.headers().items())
        writer.write(
            f"POST {url} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {300 * MiB}\r\n{head}\r\n".encode()
        )
        status = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
        assert status.split()[1] == b"413", status
