"""The AI SDK's chats on Atelier's conversations: a chat id is a conversation of the end
user's (its UUID, or an id the client made, kept like a LangGraph thread id), its messages
the conversation's history."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.agents import service as agents
from atelier.compat.ai_sdk.schemas import UIMessage, output_text
from atelier.compat.langgraph import service as threads
from atelier.conversations import messages
from atelier.conversations import service as conversations
from atelier.conversations.messages import Turn
from atelier.conversations.models import Conversation
from atelier.errors import Conflict, NotFound
from atelier.resources import Resources
from atelier.runs import WAITING_STATUSES, pending_approvals
from atelier.runs.models import Approval, Run
from atelier.tenants.principal import Principal

# A chat id the client made (useChat's are short random strings) names the conversation
# whose thread id is derived from it: the same id finds the same conversation, per user.
_CHAT_IDS = uuid.UUID("0b8e1c55-7f0a-4a53-9a1e-5c2f3e7d9a41")


def thread_of(chat_id: str) -> str:
    try:
        return str(uuid.UUID(chat_id))
    except ValueError:
        return str(uuid.uuid5(_CHAT_IDS, chat_id))


async def find(session: AsyncSession, principal: Principal, chat_id: str) -> Conversation | None:
    return await threads.find(session, principal, thread_of(chat_id))


def said_by(ui: list[UIMessage]) -> list[tuple[str, str]]:
    """What the user and the assistant said, in order, one entry per text part."""
    said: list[tuple[str, str]] = []
    for message in ui:
        if message.role == "user" and message.text():
            said.append(("user", message.text()))
        elif message.role == "assistant":
            said += [("assistant", text) for text in message.texts()]
    return said


async def open_chat(
    resources: Resources,
    principal: Principal,
    chat_id: str,
    earlier: list[tuple[str, str]],
    *,
    agent_ref: str | None = None,
    model: str | None = None,
) -> tuple[uuid.UUID, str | None, bool]:
    """The chat's conversation -- made now, from the history the client sent (``earlier``:
    who said what), if the id is new; else checked against that history -- with the
    run's model and whether the conversation was made now. Shared by every frontend
    protocol whose client keeps the history (AI SDK, AG-UI)."""
    async with resources.sessionmaker() as session:
        model_id = None
        if model is not None:
            resources.catalog.resolve(model)
            model_id = model
        agent = None
        if agent_ref is not None:
            agent = await agents.find(session, principal.tenant_id, agent_ref)
            if agent is None:
                raise NotFound("unknown_agent", f"no agent {agent_ref!r}")
        conversation = await find(session, principal, chat_id)
        made = conversation is None
        if conversation is None:
            conversation = await threads.create(
                session,
                principal,
                uuid.UUID(thread_of(chat_id)),
                limit=resources.settings.max_conversations_per_user,
                looked=True,
            )
            if earlier:
                turns = [
                    Turn("user" if role == "user" else "assistant", text) for role, text in earlier
                ]
                await messages.seed(session, conversation, turns)
        else:
            stored = await messages.visible(session, conversation.id, conversation.last_message_seq)
            kept = [(m.role, m.content) for m in stored if m.role in ("user", "assistant")]
            if earlier != [(role, text) for role, text in kept if text]:
                raise Conflict(
                    "history_mismatch",
                    "the chat's earlier messages are not the conversation's: send the stored "
                    "history with the new message",
                )
        if agent is not None:
            conversations.run_agent(conversation, agent)
        await session.commit()
        return conversation.id, model_id, made


async def waiting(
    resources: Resources, principal: Principal, chat_id: str
) -> tuple[Run, list[Approval]]:
    """The chat's run that waits for the page (approvals, client tools), and what it waits on."""
    async with resources.sessionmaker() as session:
        conversation = await find(session, principal, chat_id)
        if conversation is None:
            raise NotFound("not_found", "no such chat")
        run = await threads.active(session, conversation)
        if run is None or run.status not in WAITING_STATUSES:
            raise Conflict("nothing_to_resume", "the chat waits for no approval or tool output")
        return run, await pending_approvals(session, run.id)


def answers(
    message: UIMessage, waited: list[Approval]
) -> tuple[list[tuple[str, bool, str | None]], list[tuple[str, str, bool]]]:
    """The page's answers in its last assistant message: approval responses, and outputs of
    the client tools, for the calls the run waits on."""
    open_calls = {approval.call_id: approval for approval in waited}
    decisions: list[tuple[str, bool, str | None]] = []
    outputs: list[tuple[str, str, bool]] = []
    for part in message.tool_parts():
        call = part["toolCallId"]
        approval = open_calls.get(call)
        if approval is None:
            continue
        state = part.get("state")
        response: Any = part.get("approval")
        if approval.kind == "approval" and state == "approval-responded":
            if isinstance(response, dict) and isinstance(response.get("approved"), bool):
                reason = response.get("reason")
                decisions.append(
                    (call, response["approved"], reason if isinstance(reason, str) else None)
                )
        elif approval.kind != "approval" and state == "output-available":
            outputs.append((call, output_text(part.get("output")), False))
        elif approval.kind != "approval" and state == "output-error":
            outputs.append((call, output_text(part.get("errorText", "error")), True))
    return decisions, outputs


async def last_run(resources: Resources, principal: Principal, chat_id: str) -> Run:
    async with resources.sessionmaker() as session:
        conversation = await find(session, principal, chat_id)
        if conversation is None:
            raise NotFound("not_found", "no such chat")
        run = await session.scalar(
            select(Run)
            .where(Run.conversation_id == conversation.id)
            .order_by(Run.created_at.desc(), Run.id.desc())
            .limit(1)
        )
        if run is None:
            raise Conflict("nothing_to_regenerate", "the chat has no answer to regenerate")
        return run


async def streaming(resources: Resources, principal: Principal, chat_id: str) -> Run | None:
    """The chat's run whose stream is open (running, or queued to): ``None`` when none."""
    async with resources.sessionmaker() as session:
        conversation = await find(session, principal, chat_id)
        run = await threads.active(session, conversation) if conversation else None
        if run is None or run.status in WAITING_STATUSES:
            return None
        return run


async def ui_messages(
    resources: Resources, principal: Principal, chat_id: str
) -> list[dict[str, Any]]:
    """The chat's history as UIMessages: the user's messages under their stored ids, each
    run's answer as one assistant message under the run's id -- the id its stream gave.
    An id no chat of the user's has is a new chat: none. Whole, not paged: the SDK sends
    the whole history back with each message and it must be the stored one, so a page of
    it would be a history the next request is refused for."""
    async with resources.sessionmaker() as session:
        conversation = await find(session, principal, chat_id)
        if conversation is None:
            return []  # a chat id nobody used yet is a new chat: it has no messages
        stored = await messages.visible(session, conversation.id, conversation.last_message_seq)
    out: list[dict[str, Any]] = []
    for message in stored:
        if message.role == "user":
            text = [{"type": "text", "text": message.content}]
            out.append({"id": str(message.id), "role": "user", "parts": text})
            continue
        answer = str(message.run_id or message.id)
        if not out or out[-1]["id"] != answer:
            out.append({"id": answer, "role": "assistant", "parts": []})
        if message.role == "assistant" and message.content:
            out[-1]["parts"].append({"type": "text", "text": message.content, "state": "done"})
        for part in message.parts or []:
            if part.get("type") == "tool_call":
                out[-1]["parts"].append(
                    {
                        "type": "dynamic-tool",
                        "toolName": part.get("name"),
                        "toolCallId": part.get("id"),
                        "state": "input-available",
                        "input": part.get("arguments", {}),
                    }
                )
            elif part.get("type") == "tool_result":
                for shown in out[-1]["parts"]:
                    if shown.get("toolCallId") == part.get("call_id"):
                        failed = bool(part.get("is_error"))
                        shown["state"] = "output-error" if failed else "output-available"
                        shown["errorText" if failed else "output"] = part.get("content")
    return out
