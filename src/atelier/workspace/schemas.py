from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel


class FileOut(BaseModel):
    path: str
    size: int
    content_type: str
    etag: str
    source: Literal["user", "agent"]
    created_at: datetime
    updated_at: datetime


class FileList(BaseModel):
    data: list[FileOut]
