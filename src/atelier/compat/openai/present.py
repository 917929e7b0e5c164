"""Atelier's runs as Responses API objects: the response, its output items and usage.

Ids are derived, so that a streamed item and the stored one are the same item: a reply
is ``msg_<run>_<seq>`` (its seq is known before its text streams), a call ``fc_<call>``
(its result ``fco_<call>``), an MCP call ``mcp_<call>``, an approval request
``mcpr_<call>``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from typing import Any

from atelier.conversations.models import Message
from atelier.errors import NotFound
from atelier.runs import RunStatus
from atelier.runs.models import Approval, Run

CLIENT_TOOL = "client_tool"  # an Approval of a caller's function call (runs.approvals)

WORKSPACE_LABEL = "atelier"  # the server label of the built-in tools' approval requests
STATUS = {
    RunStatus.QUEUED: "queued",
    RunStatus.RUNNING: "in_progress",
    # Waiting for a person: done for now, its output holds the approval requests (as an
    # OpenAI response with MCP approval requests is).
    RunStatus.AWAITING_APPROVAL: "completed",
    RunStatus.AWAITING_TOOL_RESULT: "completed",
    RunStatus.COMPLETED: "completed",
    RunStatus.FAILED: "failed",
    RunStatus.CANCELLED: "cancelled",
    RunStatus.TIMED_OUT: "failed",
}


def response_id(run_id: uuid.UUID, after: int = 0) -> str:
    """A response is a run -- from its start, or (``after``) from where it waited for the
    results of its caller's function calls: each result-taking request is a new response
    of the same run, whose output is what came after that event."""
    return f"resp_{run_id.hex}" + (f"_{after}" if after else "")


def segment_of(response: str) -> tuple[uuid.UUID, int]:
    """The run a response id names, and the id of the event it starts after."""
    try:
        if not response.startswith("resp_") or len(response) < 37:
            raise ValueError(response)
        run, _, after = response[5:].partition("_")
        if len(run) != 32 or (after and (not after.isdigit() or len(after) > 15)):
            raise ValueError(response)
        return uuid.UUID(hex=run), int(after or 0)
    except ValueError as exc:
        raise NotFound("not_found", "no such response") from exc


def run_id_of(response: str) -> uuid.UUID:
    return segment_of(response)[0]


def message_item(run_id: uuid.UUID, seq: int, text: str, status: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": f"msg_{run_id.hex}_{seq}",
        "role": "assistant",
        "status": status,
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def split_tool(name: str) -> tuple[str, str] | None:
    """An MCP tool's server and name (the model sees ``<server>__<tool>``); None: built in."""
    server, sep, tool = name.partition("__")
    return (server, tool) if sep else None


def call_item(call_id: str, name: str, args: dict[str, Any], status: str) -> dict[str, Any]:
    """A call the server ran, as an item every client knows to be server-side and done
    once it completes: ``mcp_call``, for built-in workspace tools too (server_label
    ``atelier``). A ``function_call`` would tell the client to run it itself (OpenAI's
    clients then fail, or run it again)."""
    server, tool = split_tool(name) or (WORKSPACE_LABEL, name)
    return {
        "type": "mcp_call",
        "id": f"mcp_{call_id}",
        "server_label": server,
        "name": tool,
        "arguments": json.dumps(args, ensure_ascii=False),
        "output": None,
        "error": None,
        "status": status,
    }


def finished_mcp(item: dict[str, Any], output: str, is_error: bool) -> dict[str, Any]:
    return {
        **item,
        "output": None if is_error else output,
        "error": output if is_error else None,
        "status": "failed" if is_error else "completed",
    }


def function_call_item(call_id: str, name: str, args: dict[str, Any]) -> dict[str, Any]:
    """A call of one of the caller's function tools: the caller runs it, and sends its
    ``function_call_output`` with the next request."""
    return {
        "type": "function_call",
        "id": f"fc_{call_id}",
        "call_id": call_id,
        "name": name,
        "arguments": json.dumps(args, ensure_ascii=False),
        "status": "completed",
    }


def approval_item(call_id: str, name: str, args: dict[str, Any]) -> dict[str, Any]:
    server, tool = split_tool(name) or (WORKSPACE_LABEL, name)
    return {
        "type": "mcp_approval_request",
        "id": f"mcpr_{call_id}",
        "server_label": server,
        "name": tool,
        "arguments": json.dumps(args, ensure_ascii=False),
    }


def output(
    run_id: uuid.UUID, rows: Iterable[Message], asked: list[Approval]
) -> list[dict[str, Any]]:
    """The run's output items, from what it stored."""
    rows = list(rows)
    results = {
        part["call_id"]: part
        for row in rows
        if row.role == "tool"
        for part in row.parts or []
        if part.get("type") == "tool_result"
    }
    approvals = {approval.call_id: approval for approval in asked}
    items: list[dict[str, Any]] = []
    for row in rows:
        if row.role != "assistant":
            continue
        if row.content:
            status = "incomplete" if row.incomplete else "completed"
            items.append(message_item(run_id, row.seq, row.content, status))
        for part in row.parts or []:
            if part.get("type") != "tool_call":
                continue
            call_id, name, args = part["id"], part["name"], part["arguments"]
            asked_for = approvals.get(call_id)
            if asked_for is not None and asked_for.kind == CLIENT_TOOL:
                items.append(function_call_item(call_id, name, args))
                continue  # the caller ran it: its result is the caller's own input
            if asked_for is not None:
                items.append(approval_item(call_id, name, args))
            result = results.get(call_id)
            if result is None:
                continue  # not called (yet)
            item = call_item(call_id, name, args, "completed")
            items.append(finished_mcp(item, result["content"], result["is_error"]))
    return items


def usage(input_tokens: int, output_tokens: int, cached: int = 0) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def error(run: Run | None, status: RunStatus, message: str | None = None) -> dict[str, Any] | None:
    found = run.error if run is not None else None
    if status not in (RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CANCELLED):
        return None
    code = found.code.value if found else status.value
    return {"code": code, "message": message or (found.message if found else status.value)}


def response(
    run: Run,
    *,
    after: int = 0,
    status: str,
    items: list[dict[str, Any]],
    usage_: dict[str, Any] | None,
    error_: dict[str, Any] | None,
    previous: str | None,
    metadata: dict[str, Any],
) -> dict[str, Any]:
    return {
        "id": response_id(run.id, after),
        "object": "response",
        "created_at": int(run.created_at.timestamp()),
        "status": status,
        "model": run.model_id,
        "output": items,
        "error": error_,
        "incomplete_details": None,
        "instructions": run.instructions,
        "metadata": metadata,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "temperature": None,
        "top_p": None,
        "previous_response_id": previous,
        "background": False,
        "store": True,
        "text": {"format": {"type": "text"}},
        "truncation": "disabled",
        "usage": usage_,
        "user": run.user_id,
    }
