"""The agent's workspace tools: what they do, and that nothing escapes the workspace."""

from __future__ import annotations

from pathlib import Path

import pytest

from atelier.llm.base import ToolCall
from atelier.llm.offline import OfflineModel
from atelier.runs.tools import MAX_READ_BYTES, MAX_WRITE_BYTES, WorkspaceTools


@pytest.fixture
def tools(tmp_path: Path) -> WorkspaceTools:
    root = tmp_path / "work"
    (root / "notes").mkdir(parents=True)
    (root / "notes" / "a.txt").write_text("alpha\nRevenue grew 12%\n")
    (root / "b.md").write_text("# Beta\n")
    (tmp_path / "secret.txt").write_text("outside")
    return WorkspaceTools(root)


async def call(tools: WorkspaceTools, name: str, **arguments: object) -> tuple[str, bool]:
    result = await tools.call(ToolCall("c1", name, arguments))
    return result.content, result.is_error


async def test_list_read_write_edit_delete_search(tools: WorkspaceTools) -> None:
    assert await call(tools, "list_files") == ("b.md\t7\nnotes/a.txt\t23", False)
    assert await call(tools, "list_files", prefix="notes/") == ("notes/a.txt\t23", False)
    assert await call(tools, "read_file", path="notes/a.txt") == (
        "alpha\nRevenue grew 12%\n",
        False,
    )
    assert await call(tools, "write_file", path="out/report.md", content="draft one") == (
        "wrote 9 bytes to out/report.md",
        False,
    )
    assert await call(tools, "edit_file", path="out/report.md", old_text="one", new_text="two") == (
        "edited out/report.md",
        False,
    )
    assert (tools.root / "out" / "report.md").read_text() == "draft two"
    assert await call(tools, "search_files", query="revenue") == (
        "notes/a.txt:2: Revenue grew 12%",
        False,
    )
    assert await call(tools, "delete_file", path="b.md") == ("deleted b.md", False)
    assert not (tools.root / "b.md").exists()


@pytest.mark.parametrize(
    ("name", "arguments"),
    [
        ("read_file", {"path": "../secret.txt"}),
        ("read_file", {"path": "/etc/passwd"}),
        ("write_file", {"path": "../escape.txt", "content": "x"}),
        ("delete_file", {"path": "notes/../../secret.txt"}),
        ("read_file", {"path": "link/secret.txt"}),
        ("read_file", {"path": "passwd-link"}),
        ("write_file", {"path": "link/new.txt", "content": "x"}),
        ("read_file", {"path": 42}),
        ("read_file", {}),
        ("read_file", {"path": ".atelier-manifest.json"}),
    ],
)
async def test_nothing_escapes_the_workspace(
    tools: WorkspaceTools, name: str, arguments: dict
) -> None:
    (tools.root / "link").symlink_to(tools.root.parent)
    (tools.root / "passwd-link").symlink_to("/etc/passwd")
    content, is_error = await call(tools, name, **arguments)
    assert is_error, content
    assert "outside" not in content or "points outside" in content
    assert not (tools.root.parent / "escape.txt").exists()
    assert (tools.root.parent / "secret.txt").read_text() == "outside"


async def test_errors_go_back_to_the_model(tools: WorkspaceTools) -> None:
    assert (await call(tools, "read_file", path="missing.txt"))[1]
    assert (await call(tools, "delete_file", path="missing.txt"))[1]
    assert (await call(tools, "no_such_tool"))[1]
    (tools.root / "twice.txt").write_text("x x")
    content, is_error = await call(tools, "edit_file", path="twice.txt", old_text="x", new_text="y")
    assert is_error
    assert "2 times" in content
    (tools.root / "blob.bin").write_bytes(b"\xff\xfe\x00")
    assert (await call(tools, "read_file", path="blob.bin"))[1]


async def test_reads_are_capped(tools: WorkspaceTools) -> None:
    (tools.root / "big.txt").write_text("a" * (MAX_READ_BYTES + 10))
    content, is_error = await call(tools, "read_file", path="big.txt")
    assert not is_error
    assert content.endswith(f"[truncated: only the first {MAX_READ_BYTES} bytes are shown]")


async def test_editing_a_file_larger_than_a_read_keeps_all_of_it(tools: WorkspaceTools) -> None:
    """edit_file edits the whole file, never the truncated text read_file shows: a
    267,143-byte file once came back 262,194 bytes long with the marker inside."""
    head, tail = "HEAD-MARKER\n", "\n".join(f"line {n}" for n in range(40_000))
    original = head + "x" * MAX_READ_BYTES + tail
    (tools.root / "big.txt").write_text(original)
    assert await call(tools, "edit_file", path="big.txt", old_text="HEAD-MARKER", new_text="H") == (
        "edited big.txt",
        False,
    )
    assert (tools.root / "big.txt").read_text() == original.replace("HEAD-MARKER", "H")


async def test_a_file_over_the_write_limit_is_refused_unchanged(tools: WorkspaceTools) -> None:
    data = "y" * (MAX_WRITE_BYTES + 1)
    (tools.root / "huge.txt").write_text(data)
    content, is_error = await call(tools, "edit_file", path="huge.txt", old_text="y", new_text="z")
    assert is_error
    assert "only edits smaller files" in content
    assert (tools.root / "huge.txt").read_text() == data


async def test_the_offline_model_can_drive_every_tool(tools: WorkspaceTools) -> None:
    """The offline model's plain commands name these tools with arguments they accept."""
    from atelier.llm.base import ChatMessage, ModelRequest

    model = OfflineModel(delay_seconds=0)
    for command in (
        "list files",
        "read notes/a.txt",
        "write new.txt: hello",
        "search alpha",
        "delete new.txt",
    ):
        request = ModelRequest(
            model="offline", messages=[ChatMessage("user", command)], tools=tools.specs
        )
        (tool_call,) = [e async for e in model.stream(request) if isinstance(e, ToolCall)]
        assert not (await tools.call(tool_call)).is_error, command
