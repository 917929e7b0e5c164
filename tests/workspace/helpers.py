"""What storage holds, read behind the app's back (boto3 for S3, the directory for local)."""

from __future__ import annotations

import asyncio
import os

import pytest

from atelier.settings import Settings


def stored_keys(settings: Settings, request: pytest.FixtureRequest) -> list[str]:
    if settings.s3_bucket:
        client = request.getfixturevalue("moto").client()
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=settings.s3_bucket)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]
    root = settings.workspace_dir.resolve()
    keys = []
    for sub in ("objects", "tmp"):
        for directory, _, files in os.walk(root / sub):
            keys += [os.path.relpath(os.path.join(directory, f), root) for f in files]
    return keys


async def open_multipart_uploads(
    settings: Settings, request: pytest.FixtureRequest, wait_seconds: float = 5.0
) -> list[str]:
    """Multipart uploads still open once the app's background aborts had time to run."""
    if not settings.s3_bucket:
        return []
    client = request.getfixturevalue("moto").client()
    deadline = asyncio.get_running_loop().time() + wait_seconds
    while True:
        uploads = client.list_multipart_uploads(Bucket=settings.s3_bucket).get("Uploads", [])
        if not uploads or asyncio.get_running_loop().time() > deadline:
            return [upload["Key"] for upload in uploads]
        await asyncio.sleep(0.05)
