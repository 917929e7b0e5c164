"""S3 (or any S3-compatible endpoint) as workspace storage, through one aiobotocore client.

Uploads of up to one part go up as a single PUT; larger ones as multipart uploads of
8 MiB parts, aborted on any error, limit breach or cancellation (BUG-007). Checksums are
only computed where S3 requires them: botocore computes them on the event loop, which
stalled it for ~280 ms per 100 MiB (BUG-003). Bodies are read under ``async with`` so a
consumer that stops early still closes the connection (BUG-023).
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import hashlib
import io
import itertools
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import aiohttp
import structlog
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from atelier.aws import session_for
from atelier.settings import Settings
from atelier.workspace.base import (
    CHUNK_SIZE,
    ObjectInfo,
    ObjectNotFound,
    ObjectTooLarge,
    StorageError,
)

PART_SIZE = 8 * 1024 * 1024
DELETE_BATCH = 1000
MAX_COPY_SIZE = 5 * 1024**3
_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}


@contextmanager
def _translated_errors(key: str) -> Iterator[None]:
    try:
        yield
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in _NOT_FOUND:
            raise ObjectNotFound(key) from exc
        raise StorageError(f"S3 refused {key!r}: {code}") from exc
    except (TimeoutError, BotoCoreError, OSError, aiohttp.ClientError) as exc:
        # aiohttp's own: a body cut off mid-read (ClientPayloadError) is no OSError.
        raise StorageError(f"S3 unreachable for {key!r}: {type(exc).__name__}") from exc


def _md5(chunks: list[bytes]) -> bytes:
    digest = hashlib.md5(usedforsecurity=False)
    for chunk in chunks:
        digest.update(chunk)
    return digest.digest()


async def _content_md5(chunks: list[bytes]) -> str:
    return base64.b64encode(await asyncio.to_thread(_md5, chunks)).decode()


class ChunksReader(io.RawIOBase):
    """A seekable, read-only file over a list of byte strings (no joined copy).

    As a file object the body is also sent in small writes with back-pressure, instead of
    being copied whole into the socket's send buffer while S3 reads slowly.
    """

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks
        self._starts = list(itertools.accumulate((len(c) for c in chunks), initial=0))
        self._size = self._starts[-1]
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = min(max(base + offset, 0), self._size)
        return self._position

    def __len__(self) -> int:
        return self._size

    def read(self, size: int | None = -1) -> bytes:
        end = self._size if size is None or size < 0 else min(self._position + size, self._size)
        pieces = []
        index = bisect.bisect_right(self._starts, self._position) - 1
        while self._position < end:
            chunk, start = self._chunks[index], self._starts[index]
            piece = chunk[self._position - start : end - start]
            pieces.append(piece)
            self._position += len(piece)
            index += 1
        return b"".join(pieces)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _unquote(etag: str) -> str:
    return etag.strip('"')


log = structlog.get_logger("atelier.storage")
ABORT_RETRY_DELAYS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


class S3Storage:
    name = "s3"

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket
        self._aborting: set[asyncio.Task[None]] = set()

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings) -> AsyncIterator[S3Storage]:
        assert settings.s3_bucket is not None
        config = AioConfig(
            max_pool_connections=64,
            connect_timeout=5,
            read_timeout=60,
            retries={"max_attempts": 3, "mode": "standard"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            # Otherwise botocore SHA-256-hashes every body it signs for a plain-http endpoint
            # (MinIO, dev S3) on the event loop: ~25 ms per 8 MiB part. Integrity comes from
            # the Content-MD5 we compute on a worker thread, which S3 verifies.
            s3={"payload_signing_enabled": False},
        )
        secret = settings.s3_secret_access_key
        async with (await session_for("s3")).create_client(
            "s3",
            region_name=settings.s3_region,
            endpoint_url=settings.s3_endpoint_url,
            aws_access_key_id=settings.s3_access_key_id,
            aws_secret_access_key=secret.get_secret_value() if secret else None,
            config=config,
        ) as client:
            storage = cls(client, settings.s3_bucket)
            try:
                yield storage
            finally:
                await storage._finish_aborts()

    async def put_stream(
        self, key: str, chunks: AsyncIterator[bytes], *, content_type: str, max_size: int
    ) -> ObjectInfo:
        # An upload holds one part (8 MiB) at a time, as the chunks that arrived: they are
        # sent through a file view over the list, never joined into a second copy.
        pending: list[bytes] = []
        pending_size = size = 0
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        try:
            with _translated_errors(key):
                async for chunk in chunks:
                    size += len(chunk)
                    if size > max_size:
                        raise ObjectTooLarge(max_size)
                    pending.append(chunk)
                    pending_size += len(chunk)
                    if pending_size >= PART_SIZE:
                        if upload_id is None:
                            created = await self.client.create_multipart_upload(
                                Bucket=self.bucket, Key=key, ContentType=content_type
                            )
                            upload_id = created["UploadId"]
                        part, pending, pending_size = pending, [], 0
                        parts.append(await self._upload_part(key, upload_id, len(parts) + 1, part))
                if upload_id is None:
                    put = await self.client.put_object(
                        Bucket=self.bucket,
                        Key=key,
                        Body=ChunksReader(pending),
                        ContentType=content_type,
                        ContentMD5=await _content_md5(pending),
                    )
                    etag = put["ETag"]
                else:
                    if pending:
                        parts.append(
                            await self._upload_part(key, upload_id, len(parts) + 1, pending)
                        )
                    done = await self.client.complete_multipart_upload(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        MultipartUpload={"Parts": parts},
                    )
                    etag = done["ETag"]
        except BaseException:
            if upload_id is not None:
                # In the background, retried: the error answers now, and an S3 that was
                # briefly unreachable still gets its parts removed.
                task = asyncio.create_task(self._abort(key, upload_id), name=f"abort-{key}")
                self._aborting.add(task)
                task.add_done_callback(self._aborting.discard)
            raise
        return ObjectInfo(key=key, size=size, etag=_unquote(etag), content_type=content_type)

    async def _upload_part(
        self, key: str, upload_id: str, number: int, chunks: list[bytes]
    ) -> dict[str, Any]:
        uploaded = await self.client.upload_part(
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=ChunksReader(chunks),
            ContentMD5=await _content_md5(chunks),
        )
        return {"ETag": uploaded["ETag"], "PartNumber": number}

    async def _abort(self, key: str, upload_id: str) -> None:
        # If S3 stays away for all of this, the bucket's lifecycle rule for incomplete
        # uploads is the backstop.
        for delay in ABORT_RETRY_DELAYS:
            try:
                await self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id
                )
                return
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "NoSuchUpload":
                    return
            except (BotoCoreError, OSError, TimeoutError):
                pass
            await asyncio.sleep(delay)
        log.warning("multipart upload left for the bucket lifecycle rule", key=key)

    async def _finish_aborts(self) -> None:
        if self._aborting:
            _, pending = await asyncio.wait(set(self._aborting), timeout=5)
            for task in pending:
                task.cancel()

    async def get_stream(
        self, key: str, *, start: int | None = None, end: int | None = None
    ) -> AsyncIterator[bytes]:
        request: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if start is not None or end is not None:
            request["Range"] = f"bytes={start or 0}-{'' if end is None else end}"
        with _translated_errors(key):
            response = await self.client.get_object(**request)
            async with response["Body"] as body:
                while chunk := await body.read(CHUNK_SIZE):
                    yield chunk

    async def head(self, key: str) -> ObjectInfo:
        with _translated_errors(key):
            response = await self.client.head_object(Bucket=self.bucket, Key=key)
        return ObjectInfo(
            key=key,
            size=int(response["ContentLength"]),
            etag=_unquote(response["ETag"]),
            content_type=response.get("ContentType") or "application/octet-stream",
        )

    async def list_objects(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        with _translated_errors(prefix):
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", ()):
                    yield ObjectInfo(
                        key=item["Key"],
                        size=int(item["Size"]),
                        etag=_unquote(item["ETag"]),
                        content_type="",
                    )

    async def copy(self, source: str, target: str) -> ObjectInfo:
        info = await self.head(source)
        if info.size > MAX_COPY_SIZE:  # one CopyObject's limit
            raise StorageError(f"{source!r} is too large to copy ({info.size} bytes)")
        with _translated_errors(source):
            response = await self.client.copy_object(
                Bucket=self.bucket, Key=target, CopySource={"Bucket": self.bucket, "Key": source}
            )
        etag = _unquote(response["CopyObjectResult"]["ETag"])
        return ObjectInfo(key=target, size=info.size, etag=etag, content_type=info.content_type)

    async def delete(self, key: str) -> None:
        with _translated_errors(key):
            await self.client.delete_object(Bucket=self.bucket, Key=key)

    async def delete_prefix(self, prefix: str) -> int:
        deleted = 0
        batch: list[dict[str, str]] = []
        async for info in self.list_objects(prefix):
            batch.append({"Key": info.key})
            if len(batch) == DELETE_BATCH:
                deleted += await self._delete_batch(prefix, batch)
                batch = []
        if batch:
            deleted += await self._delete_batch(prefix, batch)
        return deleted

    async def _delete_batch(self, prefix: str, batch: list[dict[str, str]]) -> int:
        with _translated_errors(prefix):
            response = await self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
            )
        if errors := response.get("Errors"):
            raise StorageError(f"S3 could not delete {len(errors)} objects under {prefix!r}")
        return len(batch)

    async def ping(self) -> None:
        with _translated_errors(self.bucket):
            await self.client.head_bucket(Bucket=self.bucket)
