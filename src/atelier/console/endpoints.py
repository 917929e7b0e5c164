"""``/console/``: the console's files, from a fixed list (nothing else on disk is
reachable); ``/`` redirects there."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse
from starlette.responses import Response

from atelier.http.errors import ProblemError

router = APIRouter(include_in_schema=False)
STATIC = Path(__file__).parent / "static"
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Read once, at import: the set of files the console is made of.
ASSETS = {path.name: TYPES[path.suffix] for path in STATIC.iterdir() if path.suffix in TYPES}


@router.get("/")
async def root() -> Response:
    return RedirectResponse("/console/", status_code=307)


@router.get("/console")
async def console_without_slash() -> Response:
    return RedirectResponse("/console/", status_code=307)


@router.get("/console/")
async def console() -> Response:
    return _asset("index.html")


@router.get("/console/{name}")
async def asset(name: str) -> Response:
    return _asset(name)


def _asset(name: str) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise ProblemError(404, "not_found", "no such console file")
    # Revalidated each time: a new version of the console is seen at the next load.
    return FileResponse(STATIC / name, media_type=media_type, headers={"cache-control": "no-cache"})
