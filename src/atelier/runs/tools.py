"""The agent's workspace tools, confined to the run's materialised directory.

Every path is checked twice: by the workspace path rules, and by resolving it (symlinks
included) and requiring it to stay under the root. File I/O runs on worker threads.
Failures are returned to the model as error results, never raised into the run.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from atelier.llm.base import ToolCall, ToolResult, ToolSpec
from atelier.workspace.paths import InvalidPath, normalize_path
from atelier.workspace.sync import MANIFEST
from atelier.workspace.tool_specs import SPECS

MAX_READ_BYTES = 256 * 1024
MAX_WRITE_BYTES = 10 * 1024 * 1024
MAX_SEARCH_RESULTS = 50


class Tools(Protocol):
    """What a run may call: the specs the model is offered, and the calls themselves.
    Failures come back as error results; a call never raises into the run."""

    specs: list[ToolSpec]

    async def call(self, call: ToolCall) -> ToolResult: ...


ToolsFactory = Callable[[Path], Tools]


class ToolFailure(Exception):
    """A tool could not do what was asked; the message goes back to the model."""


class WorkspaceTools:
    specs = SPECS

    def __init__(self, root: Path) -> None:
        if not root.is_absolute():
            raise ValueError("the workspace root must be a resolved, absolute path")
        self.root = root
        self._tools: dict[str, Callable[[dict[str, Any]], Awaitable[str]]] = {
            "list_files": self._list,
            "read_file": self._read,
            "write_file": self._write,
            "edit_file": self._edit,
            "delete_file": self._delete,
            "search_files": self._search,
        }

    async def call(self, call: ToolCall) -> ToolResult:
        tool = self._tools.get(call.name)
        if tool is None:
            return ToolResult(call.id, f"unknown tool {call.name!r}", is_error=True)
        try:
            return ToolResult(call.id, await tool(call.arguments))
        except ToolFailure as exc:
            return ToolResult(call.id, str(exc), is_error=True)

    async def _path(self, arguments: dict[str, Any], name: str = "path") -> tuple[str, Path]:
        raw = arguments.get(name)
        if not isinstance(raw, str):
            raise ToolFailure(f"'{name}' must be a string")
        try:
            relative = normalize_path(raw)
        except InvalidPath as exc:
            raise ToolFailure(f"invalid path {raw!r}: {exc}") from exc
        if relative == MANIFEST:
            raise ToolFailure(f"{relative} is reserved")
        # Resolving follows symlinks on disk: a worker thread's job.
        full = await asyncio.to_thread((self.root / relative).resolve)
        if not full.is_relative_to(self.root):
            raise ToolFailure(f"{raw!r} points outside the workspace")
        return relative, full

    async def _list(self, arguments: dict[str, Any]) -> str:
        prefix = str(arguments.get("prefix") or "")
        files = await asyncio.to_thread(self._files)
        lines = [f"{path}\t{size}" for path, size in files if path.startswith(prefix)]
        return "\n".join(lines) if lines else "(no files)"

    def _files(self) -> list[tuple[str, int]]:
        found = []
        for directory, dirs, names in os.walk(self.root, followlinks=False):
            dirs[:] = sorted(d for d in dirs if not os.path.islink(os.path.join(directory, d)))
            for name in sorted(names):
                full = os.path.join(directory, name)
                relative = os.path.relpath(full, self.root).replace(os.sep, "/")
                if relative != MANIFEST and not os.path.islink(full):
                    found.append((relative, os.path.getsize(full)))
        return found

    async def _read(self, arguments: dict[str, Any]) -> str:
        relative, full = await self._path(arguments)
        data = await _load(relative, full, MAX_READ_BYTES + 1)
        text = _decode(relative, data[:MAX_READ_BYTES])
        if len(data) > MAX_READ_BYTES:
            text += f"\n[truncated: only the first {MAX_READ_BYTES} bytes are shown]"
        return text

    async def _write(self, arguments: dict[str, Any]) -> str:
        relative, full = await self._path(arguments)
        content = arguments.get("content")
        if not isinstance(content, str):
            raise ToolFailure("'content' must be a string")
        data = content.encode()
        if len(data) > MAX_WRITE_BYTES:
            raise ToolFailure(f"a file written by a tool is at most {MAX_WRITE_BYTES} bytes")
        await asyncio.to_thread(_write, full, data)
        return f"wrote {len(data)} bytes to {relative}"

    async def _edit(self, arguments: dict[str, Any]) -> str:
        relative, full = await self._path(arguments)
        old, new = arguments.get("old_text"), arguments.get("new_text")
        if not isinstance(old, str) or not old or not isinstance(new, str):
            raise ToolFailure("'old_text' (non-empty) and 'new_text' must be strings")
        # The whole file, never what read_file shows: that may be cut short, and writing it
        # back would destroy the rest.
        data = await _load(relative, full, MAX_WRITE_BYTES + 1)
        if len(data) > MAX_WRITE_BYTES:
            raise ToolFailure(
                f"{relative} is over {MAX_WRITE_BYTES} bytes; edit_file only edits smaller files"
            )
        text = _decode(relative, data)
        count = text.count(old)
        if count != 1:
            raise ToolFailure(
                f"old_text occurs {count} times in {relative}; it must occur exactly once"
            )
        edited = text.replace(old, new).encode()
        if len(edited) > MAX_WRITE_BYTES:
            raise ToolFailure(f"a file written by a tool is at most {MAX_WRITE_BYTES} bytes")
        await asyncio.to_thread(_write, full, edited)
        return f"edited {relative}"

    async def _delete(self, arguments: dict[str, Any]) -> str:
        relative, full = await self._path(arguments)
        try:
            await asyncio.to_thread(full.unlink)
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise ToolFailure(f"no file {relative}") from exc
        return f"deleted {relative}"

    async def _search(self, arguments: dict[str, Any]) -> str:
        query = arguments.get("query")
        if not isinstance(query, str) or not query.strip():
            raise ToolFailure("'query' must be a non-empty string")
        hits = await asyncio.to_thread(self._grep, query.lower())
        return "\n".join(hits) if hits else "(no matches)"

    def _grep(self, query: str) -> list[str]:
        hits: list[str] = []
        for relative, size in self._files():
            if size > MAX_READ_BYTES:
                continue
            try:
                lines = (self.root / relative).read_text("utf-8").splitlines()
            except (UnicodeDecodeError, OSError):
                continue
            for number, line in enumerate(lines, 1):
                if query in line.lower():
                    hits.append(f"{relative}:{number}: {line.strip()[:200]}")
                    if len(hits) >= MAX_SEARCH_RESULTS:
                        return hits
        return hits


async def _load(relative: str, full: Path, limit: int) -> bytes:
    """Up to ``limit`` bytes of a workspace file."""
    try:
        return await asyncio.to_thread(_read_head, full, limit)
    except (FileNotFoundError, IsADirectoryError) as exc:
        raise ToolFailure(f"no file {relative}") from exc


def _decode(relative: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ToolFailure(f"{relative} is not UTF-8 text") from exc


def _read_head(path: Path, limit: int) -> bytes:
    with path.open("rb") as handle:
        return handle.read(limit)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
