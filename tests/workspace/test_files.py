"""Workspace files over HTTP, on both adapters (local directory; moto S3)."""

from __future__ import annotations

import asyncio
import hashlib
import uuid

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from atelier.settings import Settings
from atelier.workspace.models import ConversationFile
from tests.conftest import Caller, make_caller
from tests.workspace.helpers import open_multipart_uploads, stored_keys
from tests.workspace.test_paths import HOSTILE

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100


@pytest.fixture
async def conversation(client: httpx.AsyncClient, caller: Caller) -> str:
    response = await client.post(
        "/v1/conversations", json={"title": "files"}, headers=caller.headers()
    )
    return str(response.json()["id"])


async def file_rows(app: FastAPI) -> int:
    async with app.state.resources.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(ConversationFile)) or 0)


MiB = 1024 * 1024


class TestUploadAndDownload:
    async def test_put_then_get_round_trips_with_headers(
        self, client, caller, conversation
    ) -> None:
        body = b"col1,col2\n1,2\n" * 1000
        url = f"/v1/conversations/{conversation}/files/reports/q3.csv"
        created = await client.put(url, content=body, headers=caller.headers())
        assert created.status_code == 201, created.text
        file = created.json()
        assert file["path"] == "reports/q3.csv"
        assert file["size"] == len(body)
        assert file["source"] == "user"
        assert file["content_type"] == "text/csv"
        assert file["etag"] == hashlib.md5(body).hexdigest()
        assert file["created_at"] == file["updated_at"]

        got = await client.get(url, headers=caller.headers())
        assert got.status_code == 200
        assert got.content == body
        assert got.headers["content-length"] == str(len(body))
        assert got.headers["etag"] == f'"{file["etag"]}"'
        assert got.headers["content-type"].startswith("text/csv")

        head = await client.head(url, headers=caller.headers())
        assert head.status_code == 200
        assert head.headers["content-length"] == str(len(body))
        assert head.content == b""

    async def test_replace_is_200_and_list_filters_by_prefix(
        self, client, caller, conversation
    ) -> None:
        base = f"/v1/conversations/{conversation}/files"
        assert (
            await client.put(f"{base}/a/one.txt", content=b"1", headers=caller.headers())
        ).status_code == 201
        assert (
            await client.put(f"{base}/a/one.txt", content=b"11", headers=caller.headers())
        ).status_code == 200
        assert (
            await client.put(f"{base}/b/two.txt", content=b"2", headers=caller.headers())
        ).status_code == 201
        everything = (await client.get(base, headers=caller.headers())).json()["data"]
        assert [(f["path"], f["size"]) for f in everything] == [("a/one.txt", 2), ("b/two.txt", 1)]
        under_a = (
            await client.get(base, params={"prefix": "a/"}, headers=caller.headers())
        ).json()["data"]
        assert [f["path"] for f in under_a] == ["a/one.txt"]

    async def test_ranges_conditional_get_and_416(self, client, caller, conversation) -> None:
        url = f"/v1/conversations/{conversation}/files/digits.txt"
        etag = (await client.put(url, content=b"0123456789", headers=caller.headers())).json()[
            "etag"
        ]
        part = await client.get(url, headers=caller.headers(Range="bytes=2-5"))
        assert part.status_code == 206
        assert part.content == b"2345"
        assert part.headers["content-range"] == "bytes 2-5/10"
        assert (await client.get(url, headers=caller.headers(Range="bytes=-3"))).content == b"789"
        assert (await client.get(url, headers=caller.headers(Range="bytes=7-"))).content == b"789"
        bad = await client.get(url, headers=caller.headers(Range="bytes=20-30"))
        assert bad.status_code == 416
        assert bad.headers["content-range"] == "bytes */10"
        cached = await client.get(url, headers=caller.headers(**{"If-None-Match": f'"{etag}"'}))
        assert cached.status_code == 304
        assert cached.content == b""

    async def test_content_type_client_then_sniffed_then_extension(
        self, client, caller, conversation
    ) -> None:
        base = f"/v1/conversations/{conversation}/files"
        declared = await client.put(
            f"{base}/x.bin",
            content=b"hello",
            headers=caller.headers(**{"Content-Type": "text/markdown"}),
        )
        assert declared.json()["content_type"] == "text/markdown"
        sniffed = await client.put(
            f"{base}/picture",
            content=PNG,
            headers=caller.headers(**{"Content-Type": "application/octet-stream"}),
        )
        assert sniffed.json()["content_type"] == "image/png"
        by_extension = await client.put(
            f"{base}/notes.json", content=b"{}", headers=caller.headers()
        )
        assert by_extension.json()["content_type"] == "application/json"

    async def test_empty_file(self, client, caller, conversation) -> None:
        url = f"/v1/conversations/{conversation}/files/empty"
        assert (await client.put(url, content=b"", headers=caller.headers())).json()["size"] == 0
        got = await client.get(url, headers=caller.headers(Range="bytes=0-"))
        assert got.status_code == 200
        assert got.content == b""

    async def test_multipart_upload_streams_the_file_part(
        self, client, caller, conversation
    ) -> None:
        data = bytes(range(256)) * 4096
        response = await client.post(
            f"/v1/conversations/{conversation}/files",
            data={"path": "uploads/blob.bin"},
            files={"file": ("ignored.bin", data, "application/x-custom")},
            headers=caller.headers(),
        )
        assert response.status_code == 201, response.text
        assert response.json()["path"] == "uploads/blob.bin"
        assert response.json()["content_type"] == "application/x-custom"
        got = await client.get(
            f"/v1/conversations/{conversation}/files/uploads/blob.bin", headers=caller.headers()
        )
        assert got.content == data
        by_name = await client.post(
            f"/v1/conversations/{conversation}/files",
            files={"file": ("named.txt", b"hi", "text/plain")},
            headers=caller.headers(),
        )
        assert by_name.json()["path"] == "named.txt"

    @pytest.mark.parametrize(
        ("content_type", "body", "status"),
        [
            ("text/plain", b"x", 415),
            ("multipart/form-data; boundary=zz", b"garbage", 400),
            (
                "multipart/form-data; boundary=zz",
                b'--zz\r\nContent-Disposition: form-data; name="other"\r\n\r\nv\r\n--zz--\r\n',
                400,
            ),
        ],
    )
    async def test_bad_multipart_is_a_clear_4xx(
        self, client, caller, conversation, content_type, body, status
    ) -> None:
        response = await client.post(
            f"/v1/conversations/{conversation}/files",
            content=body,
            headers=caller.headers(**{"Content-Type": content_type}),
        )
        assert response.status_code == status
        assert response.headers["content-type"] == "application/problem+json"

    async def test_delete_file(self, app, client, caller, conversation, settings, request) -> None:
        url = f"/v1/conversations/{conversation}/files/gone.txt"
        await client.put(url, content=b"bye", headers=caller.headers())
        assert (await client.delete(url, headers=caller.headers())).status_code == 204
        assert (await client.get(url, headers=caller.headers())).status_code == 404
        assert (await client.delete(url, headers=caller.headers())).status_code == 404
        assert stored_keys(settings, request) == []
        assert await file_rows(app) == 0

    async def test_a_zip_whose_member_breaks_off_is_never_a_valid_archive(
        self, app, client, caller, conversation, monkeypatch
    ) -> None:
        """Storage failing in the middle of a member breaks the transfer off: the client never
        gets a valid zip with a member cut short (it once got 262,144 of 2,097,152 bytes)."""
        import io
        import zipfile

        from atelier.workspace.base import StorageError
        from atelier.workspace.endpoints import DownloadBrokeOff

        base = f"/v1/conversations/{conversation}/files"
        await client.put(f"{base}/a.bin", content=b"a" * 600_000, headers=caller.headers())
        storage = app.state.resources.storage
        real = storage.get_stream

        async def breaks(key, **kwargs):  # type: ignore[no-untyped-def]
            async for chunk in real(key, **kwargs):
                yield chunk
                raise StorageError("the storage went away mid-object")

        monkeypatch.setattr(storage, "get_stream", breaks)

        # In process the break surfaces as the app's exception; a real client sees the
        # connection close mid-body (tests/test_faults.py).
        async def download() -> None:
            response = await client.get(
                f"/v1/conversations/{conversation}/workspace.zip", headers=caller.headers()
            )
            zipfile.ZipFile(io.BytesIO(response.content)).testzip()

        with pytest.raises(DownloadBrokeOff):
            await download()

    async def test_workspace_zip_streams_every_file(self, client, caller, conversation) -> None:
        import io
        import zipfile

        base = f"/v1/conversations/{conversation}/files"
        await client.put(f"{base}/a.txt", content=b"alpha", headers=caller.headers())
        await client.put(f"{base}/dir/b.bin", content=PNG, headers=caller.headers())
        response = await client.get(
            f"/v1/conversations/{conversation}/workspace.zip", headers=caller.headers()
        )
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/zip"
        archive = zipfile.ZipFile(io.BytesIO(response.content))
        assert sorted(archive.namelist()) == ["a.txt", "dir/b.bin"]
        assert archive.read("a.txt") == b"alpha"
        assert archive.read("dir/b.bin") == PNG


class TestHostileInput:
    async def test_hostile_paths_are_400_and_store_nothing(
        self, app, client, caller, conversation, settings, request
    ) -> None:
        sendable = [p for p in HOSTILE if not any("\ud800" <= ch <= "\udfff" for ch in p)]
        assert len(sendable) >= 30
        for path in sendable:
            response = await client.post(
                f"/v1/conversations/{conversation}/files",
                files={"file": ("x", b"payload", "text/plain")},
                data={"path": path},
                headers=caller.headers(),
            )
            if path == "":
                # An empty field falls back to the filename ("x"): not hostile; remove it.
                assert response.status_code == 201
                await client.delete(
                    f"/v1/conversations/{conversation}/files/x", headers=caller.headers()
                )
                continue
            assert response.status_code == 400, (path, response.text)
            assert response.json()["code"] == "invalid_path"
        for raw in ("%2E%2E/secret", "a/%2e%2e/%2e%2e/b", "%5Cwindows", "a%00b", "%0A"):
            response = await client.put(
                f"/v1/conversations/{conversation}/files/{raw}",
                content=b"x",
                headers=caller.headers(),
            )
            assert response.status_code in (400, 404), (raw, response.status_code)
        assert stored_keys(settings, request) == []
        assert await file_rows(app) == 0


class TestStreamingUploads:
    """BUG-007: an upload is stored while its body is still arriving, never read whole."""

    @pytest.mark.parametrize("form", [False, True])
    async def test_storage_has_the_first_mebibytes_before_the_body_ends(
        self, app, client, caller, conversation, monkeypatch, form
    ) -> None:
        storage = app.state.resources.storage
        real = storage.put_stream
        arrived = asyncio.Event()

        async def spying(key, chunks, **kwargs):  # type: ignore[no-untyped-def]
            async def counted():  # type: ignore[no-untyped-def]
                seen = 0
                async for chunk in chunks:
                    seen += len(chunk)
                    if seen >= 4 * MiB:
                        arrived.set()
                    yield chunk

            return await real(key, counted(), **kwargs)

        monkeypatch.setattr(storage, "put_stream", spying)
        boundary = "streamed"

        async def body():  # type: ignore[no-untyped-def]
            if form:
                yield (
                    f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                    'filename="big.bin"\r\n\r\n'
                ).encode()
            for n in range(16):
                yield b"u" * MiB
                if n == 7:  # half sent: a server that streams has stored some of it by now
                    await asyncio.wait_for(arrived.wait(), 10)
            if form:
                yield f"\r\n--{boundary}--\r\n".encode()

        base = f"/v1/conversations/{conversation}/files"
        if form:
            headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
            response = await client.post(base, content=body(), headers=caller.headers(**headers))
        else:
            response = await client.put(f"{base}/big.bin", content=body(), headers=caller.headers())
        assert response.status_code == 201, response.text
        assert response.json()["size"] == 16 * MiB


class TestLimits:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, object]:
        # Big enough that an S3 upload goes multipart (8 MiB parts) before it breaks the limit.
        return {
            "max_file_size": 10 * 1024 * 1024,
            "max_workspace_files": 3,
            "max_workspace_bytes": 12 * 1024 * 1024,
        }

    async def test_oversize_put_is_413_and_leaves_nothing(
        self, app, client, caller, conversation, settings, request
    ) -> None:
        big = b"z" * (11 * 1024 * 1024)

        async def body():  # streamed, no content-length: the limit must hold while streaming
            for start in range(0, len(big), 1024 * 1024):
                yield big[start : start + 1024 * 1024]

        response = await client.put(
            f"/v1/conversations/{conversation}/files/big.bin",
            content=body(),
            headers=caller.headers(),
        )
        assert response.status_code == 413
        assert response.json()["code"] == "payload_too_large"
        assert stored_keys(settings, request) == []
        assert await open_multipart_uploads(settings, request) == []
        assert await file_rows(app) == 0

    async def test_oversize_multipart_is_413_and_leaves_nothing(
        self, app, client, caller, conversation, settings, request
    ) -> None:
        response = await client.post(
            f"/v1/conversations/{conversation}/files",
            files={"file": ("big.bin", b"z" * (11 * 1024 * 1024), "application/octet-stream")},
            headers=caller.headers(),
        )
        assert response.status_code == 413
        assert stored_keys(settings, request) == []
        assert await open_multipart_uploads(settings, request) == []
        assert await file_rows(app) == 0

    async def test_declared_oversize_is_refused_before_reading(
        self, client, caller, conversation
    ) -> None:
        response = await client.put(
            f"/v1/conversations/{conversation}/files/big.bin",
            content=b"x",
            headers=caller.headers(**{"Content-Length": str(50 * 1024 * 1024)}),
        )
        assert response.status_code in (400, 413)

    async def test_file_count_and_byte_quotas_have_their_own_codes(
        self, client, caller, conversation
    ) -> None:
        base = f"/v1/conversations/{conversation}/files"
        for n in range(3):
            assert (
                await client.put(f"{base}/{n}", content=b"x", headers=caller.headers())
            ).status_code == 201
        fourth = await client.put(f"{base}/3", content=b"x", headers=caller.headers())
        assert fourth.status_code == 409
        assert fourth.json()["code"] == "workspace_file_limit"
        # Replacing an existing file is not a new file.
        assert (
            await client.put(
                f"{base}/0", content=b"y" * (7 * 1024 * 1024), headers=caller.headers()
            )
        ).status_code == 200
        over = await client.put(
            f"{base}/1", content=b"y" * (6 * 1024 * 1024), headers=caller.headers()
        )
        assert over.status_code == 413
        assert over.json()["code"] == "workspace_quota_exceeded"


class TestIsolation:
    async def test_other_users_and_tenants_cannot_touch_files(
        self, app, client, caller, conversation
    ) -> None:
        url = f"/v1/conversations/{conversation}/files/private.txt"
        await client.put(url, content=b"secret", headers=caller.headers())
        stranger = await make_caller(app)
        for headers in (caller.headers("bob"), stranger.headers("alice")):
            assert (await client.get(url, headers=headers)).status_code == 404
            assert (await client.head(url, headers=headers)).status_code == 404
            assert (await client.put(url, content=b"overwrite", headers=headers)).status_code == 404
            assert (await client.delete(url, headers=headers)).status_code == 404
            assert (
                await client.get(f"/v1/conversations/{conversation}/files", headers=headers)
            ).status_code == 404
            assert (
                await client.get(f"/v1/conversations/{conversation}/workspace.zip", headers=headers)
            ).status_code == 404
        assert (await client.get(url, headers=caller.headers())).content == b"secret"

    async def test_unknown_conversation_is_404(self, client, caller) -> None:
        response = await client.put(
            f"/v1/conversations/{uuid.uuid4()}/files/a.txt", content=b"x", headers=caller.headers()
        )
        assert response.status_code == 404


class TestDeleteConversation:
    async def test_delete_removes_rows_and_objects(
        self, app, client, caller, conversation, settings, request
    ) -> None:
        """BUG-011."""
        for n in range(5):
            await client.put(
                f"/v1/conversations/{conversation}/files/f{n}.txt",
                content=b"x",
                headers=caller.headers(),
            )
        assert len(stored_keys(settings, request)) == 5
        assert (
            await client.delete(f"/v1/conversations/{conversation}", headers=caller.headers())
        ).status_code == 204
        assert stored_keys(settings, request) == []
        assert await file_rows(app) == 0
        assert (
            await client.get(f"/v1/conversations/{conversation}", headers=caller.headers())
        ).status_code == 404

    async def test_a_workspace_of_more_than_1000_objects_is_emptied(
        self, app, client, caller, conversation, settings, request
    ) -> None:
        """BUG-011: S3 deletes at most 1,000 keys per request; every batch must go."""
        from atelier.workspace.service import conversation_prefix

        resources = app.state.resources
        owner = await client.get(f"/v1/conversations/{conversation}", headers=caller.headers())
        assert owner.status_code == 200
        prefix = conversation_prefix(settings, caller.tenant_id, uuid.UUID(conversation))
        gate = asyncio.Semaphore(32)

        async def put(n: int) -> None:
            async with gate:
                await resources.storage.put_stream(
                    f"{prefix}bulk/{n:04d}.txt", _one(b"x"), content_type="text/plain", max_size=9
                )

        await asyncio.gather(*(put(n) for n in range(1005)))
        assert len(stored_keys(settings, request)) == 1005
        deleted = await client.delete(f"/v1/conversations/{conversation}", headers=caller.headers())
        assert deleted.status_code == 204
        assert stored_keys(settings, request) == []

    async def test_storage_failure_is_retried_until_the_prefix_is_empty(
        self, app: FastAPI, client, caller, conversation, settings: Settings, request, monkeypatch
    ) -> None:
        from atelier.workspace import cleanup
        from atelier.workspace.base import StorageError
        from atelier.workspace.models import StorageCleanup

        for n in range(3):
            await client.put(
                f"/v1/conversations/{conversation}/files/f{n}.txt",
                content=b"x",
                headers=caller.headers(),
            )
        storage = app.state.resources.storage
        real = storage.delete_prefix

        async def failing(prefix: str) -> int:
            raise StorageError("storage is down")

        monkeypatch.setattr(storage, "delete_prefix", failing)
        assert (
            await client.delete(f"/v1/conversations/{conversation}", headers=caller.headers())
        ).status_code == 204
        assert await file_rows(app) == 0
        assert len(stored_keys(settings, request)) == 3  # not yet: storage failed
        async with app.state.resources.sessionmaker() as session:
            # The workspace's prefix, and the one of the copies rollbacks would restore.
            jobs = list(await session.scalars(select(StorageCleanup)))
            assert len(jobs) == 2
            for job in jobs:
                assert job.attempts == 1
                assert "storage is down" in (job.last_error or "")
                job.next_attempt_at = job.created_at  # due now, not after the back-off
            await session.commit()

        monkeypatch.setattr(storage, "delete_prefix", real)
        assert await cleanup.run_due(app.state.resources.sessionmaker, storage) == 2
        assert stored_keys(settings, request) == []
        async with app.state.resources.sessionmaker() as session:
            assert await session.scalar(select(func.count()).select_from(StorageCleanup)) == 0


async def test_local_storage_walks_only_the_prefix_it_is_asked_for(tmp_path, monkeypatch) -> None:
    import os

    from atelier.workspace.local import LocalStorage

    storage = await asyncio.to_thread(LocalStorage, tmp_path / "store")
    for tenant in ("t1", "t2", "t3"):
        for n in range(3):
            await storage.put_stream(
                f"workspaces/{tenant}/c/{n}.txt", _one(b"x"), content_type="text/plain", max_size=10
            )
    walked: list[str] = []
    real_walk = os.walk

    def walk(top, *args, **kwargs):  # type: ignore[no-untyped-def]
        for directory, dirs, files in real_walk(top, *args, **kwargs):
            walked.append(os.path.relpath(directory, storage.objects))
            yield directory, dirs, files

    monkeypatch.setattr(os, "walk", walk)
    assert [info.key async for info in storage.list_objects("workspaces/t2/c/")] == [
        f"workspaces/t2/c/{n}.txt" for n in range(3)
    ]
    assert await storage.delete_prefix("workspaces/t3/") == 3
    assert all(d.startswith(("workspaces/t2/c", "workspaces/t3")) for d in walked), walked


async def _one(data: bytes):  # type: ignore[no-untyped-def]
    yield data
