"""The built-in tools an agent has over its conversation's workspace, as the model is told
of them (the engine runs them: ``runs/tools.py``); agents choose among them by name."""

from __future__ import annotations

from atelier.llm.base import ToolSpec


def _string(description: str) -> dict[str, str]:
    return {"type": "string", "description": description}


SPECS = [
    ToolSpec(
        "list_files",
        "List the workspace's files (path and size), optionally under a prefix.",
        {"type": "object", "properties": {"prefix": _string("Only paths starting with this.")}},
    ),
    ToolSpec(
        "read_file",
        "Read a UTF-8 text file of the workspace.",
        {"type": "object", "properties": {"path": _string("Relative path.")}, "required": ["path"]},
    ),
    ToolSpec(
        "write_file",
        "Create or overwrite a file with the given text.",
        {
            "type": "object",
            "properties": {"path": _string("Relative path."), "content": _string("The text.")},
            "required": ["path", "content"],
        },
    ),
    ToolSpec(
        "edit_file",
        "Replace one exact occurrence of old_text with new_text in a file.",
        {
            "type": "object",
            "properties": {
                "path": _string("Relative path."),
                "old_text": _string("Text to find, exactly once."),
                "new_text": _string("Replacement."),
            },
            "required": ["path", "old_text", "new_text"],
        },
    ),
    ToolSpec(
        "delete_file",
        "Delete a file of the workspace.",
        {"type": "object", "properties": {"path": _string("Relative path.")}, "required": ["path"]},
    ),
    ToolSpec(
        "search_files",
        "Find lines containing the query text (case-insensitive).",
        {
            "type": "object",
            "properties": {"query": _string("Text to look for.")},
            "required": ["query"],
        },
    ),
]
