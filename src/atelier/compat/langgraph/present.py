"""Atelier's rows as the LangGraph API's objects (LangChain messages, threads, runs)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from atelier.agents.models import Agent
from atelier.conversations.models import Conversation, Message
from atelier.runs import WAITING_STATUSES, RunStatus
from atelier.runs.models import Approval, Run

# A run waiting for a person is "interrupted", as a LangGraph run stopped by an
# interrupt is; so is a cancelled one (LangGraph's cancel is an interrupt).
RUN_STATUS = {
    RunStatus.QUEUED: "pending",
    RunStatus.RUNNING: "running",
    RunStatus.AWAITING_APPROVAL: "interrupted",
    RunStatus.AWAITING_TOOL_RESULT: "interrupted",
    RunStatus.COMPLETED: "success",
    RunStatus.FAILED: "error",
    RunStatus.CANCELLED: "interrupted",
    RunStatus.TIMED_OUT: "timeout",
}
AGENT_NODE, TOOLS_NODE = "agent", "tools"
CLIENT_TOOL = "client_tool"  # an Approval of a caller's tool call (runs.approvals)


def message_id(run_id: uuid.UUID | str | None, seq: int, fallback: uuid.UUID) -> str:
    """A message's LangGraph id: its run and place, known before its text streams (the
    chunks of a reply carry the id its stored message will have)."""
    return f"run-{run_id}-{seq}" if run_id is not None else str(fallback)


def messages(row: Message) -> list[dict[str, Any]]:
    """One stored message as LangChain messages (a tool message holds one per result)."""
    base: dict[str, Any] = {"additional_kwargs": {}, "response_metadata": {}, "name": None}
    mid = message_id(row.run_id, row.seq, row.id)
    parts = row.parts or []
    if row.role == "user":
        return [{**base, "type": "human", "content": row.content, "id": mid, "example": False}]
    if row.role == "assistant":
        calls = [
            {"name": p["name"], "args": p["arguments"], "id": p["id"], "type": "tool_call"}
            for p in parts
            if p.get("type") == "tool_call"
        ]
        metadata = {"stop_reason": row.stop_reason} if row.stop_reason else {}
        return [
            {
                **base,
                "response_metadata": metadata,
                "type": "ai",
                "content": row.content,
                "id": mid,
                "example": False,
                "tool_calls": calls,
                "invalid_tool_calls": [],
                "usage_metadata": None,
            }
        ]
    results = [p for p in parts if p.get("type") == "tool_result"]
    return [
        {
            **base,
            "type": "tool",
            "content": result["content"],
            "id": f"{mid}-{index}",
            "tool_call_id": result["call_id"],
            "status": "error" if result["is_error"] else "success",
            "artifact": None,
        }
        for index, result in enumerate(results)
    ]


def values(rows: Iterable[Message]) -> dict[str, Any]:
    return {"messages": [m for row in rows if not row.superseded for m in messages(row)]}


def interrupt(approval: Approval | dict[str, Any], client: bool = False) -> dict[str, Any]:
    """A call waiting for a person, as LangChain's human-in-the-loop interrupt -- or, for
    a tool the caller runs (``client``), the call to make; its id is the call's, which a
    resume names."""
    if isinstance(approval, Approval):
        call_id, name, args = approval.call_id, approval.name, approval.input
        client = approval.kind == CLIENT_TOOL
    else:
        call_id, name, args = approval["call_id"], approval["name"], approval["input"]
    if client:
        return {
            "value": {"type": "tool_call", "name": name, "args": args, "id": call_id},
            "id": call_id,
        }
    return {
        "value": {
            "action_requests": [
                {"name": name, "args": args, "description": f"The agent asks to call {name}."}
            ],
            "review_configs": [{"action_name": name, "allowed_decisions": ["approve", "reject"]}],
        },
        "id": call_id,
    }


def assistant(agent: Agent, definition: dict[str, Any], version: int) -> dict[str, Any]:
    return {
        "assistant_id": str(agent.id),
        "graph_id": agent.name,
        "name": agent.name,
        "description": definition.get("metadata", {}).get("description"),
        "config": {},
        "context": {},
        "metadata": definition.get("metadata", {}),
        "version": version,
        "created_at": _time(agent.created_at),
        "updated_at": _time(agent.updated_at),
    }


def thread(
    conversation: Conversation,
    status: str,
    state: dict[str, Any] | None = None,
    interrupts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "thread_id": str(conversation.thread_id or conversation.id),
        "created_at": _time(conversation.created_at),
        "updated_at": _time(conversation.updated_at),
        "metadata": conversation.metadata_,
        "status": status,
        "values": state or {},
        "interrupts": {i["id"]: [i] for i in interrupts or []},
    }


def thread_status(active: Run | None) -> str:
    if active is None:
        return "idle"
    return "interrupted" if active.status in WAITING_STATUSES else "busy"


def run(row: Run, thread_id: uuid.UUID) -> dict[str, Any]:
    return {
        "run_id": str(row.id),
        "thread_id": str(thread_id),
        "assistant_id": str(row.agent_id or ""),
        "created_at": _time(row.created_at),
        "updated_at": _time(row.ended_at or row.started_at or row.created_at),
        "status": RUN_STATUS[RunStatus(row.status)],
        "metadata": {},
        "multitask_strategy": "reject",
        "kwargs": {},
    }


def state(
    conversation: Conversation, rows: Iterable[Message], interrupts: list[dict[str, Any]]
) -> dict[str, Any]:
    """The thread's state: one checkpoint, the present (Atelier keeps no history of states)."""
    checkpoint = {
        "thread_id": str(conversation.thread_id or conversation.id),
        "checkpoint_ns": "",
        "checkpoint_id": f"seq-{conversation.last_message_seq}",
        "checkpoint_map": None,
    }
    return {
        "values": values(rows),
        "next": [TOOLS_NODE] if interrupts else [],
        "tasks": [
            {
                "id": i["id"],
                "name": TOOLS_NODE,
                "error": None,
                "interrupts": [i],
                "checkpoint": None,
                "state": None,
                "result": None,
            }
            for i in interrupts
        ],
        "checkpoint": checkpoint,
        "metadata": conversation.metadata_,
        "created_at": _time(conversation.updated_at),
        "parent_checkpoint": None,
        "interrupts": interrupts,
    }


def _time(moment: datetime) -> str:
    return moment.isoformat()
