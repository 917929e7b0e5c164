"""Workspace file endpoints: bodies are streamed both ways and never held whole."""

from __future__ import annotations

import re
import stat
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from stream_zip import ZIP_AUTO, async_stream_zip

from atelier.conversations.service import get_owned
from atelier.errors import DomainError, size_text
from atelier.http.deps import ResourcesDep, SessionDep, UserPrincipalDep
from atelier.http.errors import BrokenOff, ProblemError
from atelier.http.multipart import MultipartReader
from atelier.workspace import service
from atelier.workspace.base import Storage, StorageError
from atelier.workspace.models import ConversationFile
from atelier.workspace.paths import InvalidPath, normalize_path, normalize_prefix
from atelier.workspace.schemas import FileList, FileOut

router = APIRouter(prefix="/v1/conversations/{conversation_id}", tags=["workspace"])
log = structlog.get_logger("atelier.workspace")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _path(raw: str) -> str:
    try:
        return normalize_path(raw)
    except InvalidPath as exc:
        raise ProblemError(400, "invalid_path", str(exc)) from exc


def _out(row: ConversationFile) -> FileOut:
    return FileOut.model_validate(row, from_attributes=True)


def _file_response(upload: service.Upload) -> JSONResponse:
    return JSONResponse(
        _out(upload.file).model_dump(mode="json"),
        status_code=201 if upload.created else 200,
        headers={"etag": f'"{upload.file.etag}"'},
    )


@router.put(
    "/files/{path:path}",
    status_code=201,
    response_model=FileOut,
    responses={200: {"model": FileOut, "description": "replaced"}},
    openapi_extra={
        "requestBody": {
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
            "required": True,
        }
    },
)
async def put_file(
    conversation_id: uuid.UUID,
    path: str,
    request: Request,
    principal: UserPrincipalDep,
    session: SessionDep,
    resources: ResourcesDep,
) -> JSONResponse:
    clean = _path(path)
    conversation = await get_owned(session, principal, conversation_id)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > resources.settings.max_file_size:
        raise ProblemError(
            413,
            "payload_too_large",
            f"the file is over the {size_text(resources.settings.max_file_size)} limit",
        )
    upload = await service.upload(
        session,
        resources.storage,
        resources.settings,
        conversation,
        clean,
        request.stream(),
        content_type=request.headers.get("content-type"),
        source="user",
    )
    return _file_response(upload)


@router.post(
    "/files",
    status_code=201,
    response_model=FileOut,
    openapi_extra={
        "requestBody": {
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "path": {"type": "string"},
                            "file": {"type": "string", "format": "binary"},
                        },
                        "required": ["file"],
                    }
                }
            },
            "required": True,
        }
    },
)
async def post_file(
    conversation_id: uuid.UUID,
    request: Request,
    principal: UserPrincipalDep,
    session: SessionDep,
    resources: ResourcesDep,
) -> JSONResponse:
    conversation = await get_owned(session, principal, conversation_id)
    reader = MultipartReader(request.headers.get("content-type", ""), request.stream())
    part = await reader.file()
    name = part.fields.get("path") or part.filename
    if not name:
        raise ProblemError(
            400, "invalid_path", "send a 'path' field (before the file) or a filename"
        )
    upload = await service.upload(
        session,
        resources.storage,
        resources.settings,
        conversation,
        _path(name),
        part.chunks,
        content_type=part.content_type,
        source="user",
    )
    if "path" not in part.fields and "path" in await reader.names_after():
        # It came after the file, which is stored by then: never somewhere else than the
        # client asked (the unit of work takes the upload back).
        raise ProblemError(
            422,
            "path_after_file",
            "send the 'path' field before the file part (curl: -F path=docs/a.txt -F file=@a.txt;"
            " FormData: append 'path' first)",
        )
    return _file_response(upload)


@router.get("/files")
async def list_files(
    conversation_id: uuid.UUID,
    principal: UserPrincipalDep,
    session: SessionDep,
    prefix: Annotated[str, Query(max_length=1024)] = "",
) -> FileList:
    try:
        clean = normalize_prefix(prefix)
    except InvalidPath as exc:
        raise ProblemError(400, "invalid_path", str(exc)) from exc
    conversation = await get_owned(session, principal, conversation_id)
    return FileList(
        data=[_out(row) for row in await service.list_files(session, conversation, clean)]
    )


@router.head("/files/{path:path}", operation_id="head_file", response_class=Response)
@router.get(
    "/files/{path:path}",
    operation_id="get_file",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}},
        206: {"description": "partial"},
        304: {"description": "not modified"},
        416: {"description": "range not satisfiable"},
    },
)
async def get_file(
    conversation_id: uuid.UUID,
    path: str,
    request: Request,
    principal: UserPrincipalDep,
    session: SessionDep,
    resources: ResourcesDep,
    range_header: Annotated[str | None, Header(alias="range")] = None,
    if_none_match: Annotated[str | None, Header(alias="if-none-match")] = None,
) -> Response:
    conversation = await get_owned(session, principal, conversation_id)
    row = await service.get_file(session, conversation, _path(path))
    etag = f'"{row.etag}"'
    headers = {"etag": etag, "accept-ranges": "bytes", "cache-control": "private, no-cache"}
    if if_none_match and (
        if_none_match.strip() == "*" or etag in [t.strip() for t in if_none_match.split(",")]
    ):
        return Response(status_code=304, headers=headers)
    start, end = 0, row.size - 1
    status = 200
    if range_header is not None and row.size > 0:
        parsed = _parse_range(range_header, row.size)
        if parsed is None:
            return Response(
                status_code=416, headers={**headers, "content-range": f"bytes */{row.size}"}
            )
        start, end = parsed
        status = 206
        headers["content-range"] = f"bytes {start}-{end}/{row.size}"
    headers["content-length"] = str(max(end - start + 1, 0))
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=row.content_type)
    key = service.object_key(resources.settings, conversation, row.path)
    ranged = status == 206
    body = await _opened(resources.storage, key, start if ranged else None, end if ranged else None)
    return StreamingResponse(body, status_code=status, headers=headers, media_type=row.content_type)


def _parse_range(value: str, size: int) -> tuple[int, int] | None:
    match = _RANGE.match(value.strip())
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":
        length = int(last)
        return (max(size - length, 0), size - 1) if length > 0 else None
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        return None
    return start, end


class DownloadBrokeOff(BrokenOff):
    """Storage failed after the response started: the client sees a failed transfer, never
    a short file that looks whole (or a zip that is valid with a member cut short)."""


async def _opened(
    storage: Storage, key: str, start: int | None, end: int | None
) -> AsyncIterator[bytes]:
    """The object's body with its first chunk already read: storage that fails before
    anything is sent is a 503, not a 200 with nothing after it."""
    stream = storage.get_stream(key, start=start, end=end)
    try:
        first = await anext(stream, b"")
    except StorageError as exc:
        await stream.aclose()  # type: ignore[attr-defined]
        raise service.storage_unavailable(exc) from exc
    return _body(key, first, stream)


async def _body(key: str, first: bytes, stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    # The storage iterator closes its body in `finally`; closing this generator closes it.
    try:
        if first:
            yield first
        async for chunk in stream:
            yield chunk
    except StorageError as exc:
        raise DownloadBrokeOff(f"storage failed mid-body: {exc}") from exc
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


async def _opened_mid_zip(storage: Storage, key: str) -> AsyncIterator[bytes]:
    try:
        return await _opened(storage, key, None, None)
    except (
        ProblemError,
        DomainError,
    ) as exc:  # the response has started: it can only break off now
        raise DownloadBrokeOff(f"{key}: {exc.detail}") from exc


@router.delete("/files/{path:path}", status_code=204)
async def delete_file(
    conversation_id: uuid.UUID,
    path: str,
    principal: UserPrincipalDep,
    session: SessionDep,
    resources: ResourcesDep,
) -> Response:
    conversation = await get_owned(session, principal, conversation_id)
    await service.delete_file(
        session, resources.storage, resources.settings, conversation, _path(path)
    )
    return Response(status_code=204)


@router.get(
    "/workspace.zip",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/zip": {}}}},
)
async def download_workspace(
    conversation_id: uuid.UUID,
    principal: UserPrincipalDep,
    session: SessionDep,
    resources: ResourcesDep,
) -> Response:
    conversation = await get_owned(session, principal, conversation_id)
    rows = await service.list_files(session, conversation, "")
    members = [
        (
            row.path,
            row.updated_at,
            row.size,
            service.object_key(resources.settings, conversation, row.path),
        )
        for row in rows
    ]

    # The first member is opened before the response starts: a storage outage is a 503.
    bodies = [await _opened(resources.storage, members[0][3], None, None)] if members else []

    async def files() -> AsyncIterator[tuple[str, datetime, int, Any, AsyncIterator[bytes]]]:
        for index, (path, modified, size, key) in enumerate(members):
            if index:
                bodies.append(await _opened_mid_zip(resources.storage, key))
            yield path, modified, stat.S_IFREG | 0o644, ZIP_AUTO(size), bodies[index]

    return StreamingResponse(
        async_stream_zip(files()),
        media_type="application/zip",
        headers={"content-disposition": f'attachment; filename="{conversation_id}.zip"'},
    )
