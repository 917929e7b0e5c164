"""``/v1/chats``: plain chats, translated onto conversations of kind ``chat`` and runs."""

from __future__ import annotations

import json
import uuid
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Header, Query, Response

from atelier.chats import service
from atelier.chats.schemas import ChatMessageList, ChatOut, ChatPage, ChatWrite, MessageIn
from atelier.chats.translate import ChatTranslator
from atelier.conversations import service as conversations
from atelier.conversations.models import Kind
from atelier.conversations.schemas import NO_NUL
from atelier.http.deps import ResourcesDep, SessionDep, UserPrincipalDep
from atelier.http.errors import ProblemError
from atelier.http.translate import EVENT_STREAM, event_stream, last_event_id, translated
from atelier.runs import MessageCompleted, RunRequest, owned_run
from atelier.runs.schemas import RunOut

router = APIRouter(prefix="/v1/chats", tags=["chats"])
CHAT: Kind = "chat"


@router.post("", status_code=201)
async def create_chat(
    body: ChatWrite, principal: UserPrincipalDep, session: SessionDep, resources: ResourcesDep
) -> ChatOut:
    if body.model_id is not None:
        resources.catalog.resolve(body.model_id)
    limit = resources.settings.max_conversations_per_user
    return service.present(await conversations.create(session, principal, body, CHAT, limit=limit))


@router.get("")
async def list_chats(
    principal: UserPrincipalDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    q: Annotated[str | None, Query(max_length=200, pattern=NO_NUL)] = None,
) -> ChatPage:
    rows, next_cursor = await conversations.list_page(session, principal, limit, cursor, CHAT, q)
    return ChatPage(data=[service.present(chat) for chat in rows], next_cursor=next_cursor)


@router.get("/{chat_id}")
async def get_chat(chat_id: uuid.UUID, principal: UserPrincipalDep, session: SessionDep) -> ChatOut:
    return service.present(await conversations.get_owned(session, principal, chat_id, CHAT))


@router.patch("/{chat_id}")
async def update_chat(
    chat_id: uuid.UUID,
    body: ChatWrite,
    principal: UserPrincipalDep,
    session: SessionDep,
    resources: ResourcesDep,
) -> ChatOut:
    if body.model_id is not None:
        resources.catalog.resolve(body.model_id)
    return service.present(await conversations.update(session, principal, chat_id, body, CHAT))


@router.delete("/{chat_id}", status_code=204)
async def delete_chat(
    chat_id: uuid.UUID,
    principal: UserPrincipalDep,
    resources: ResourcesDep,
    background: BackgroundTasks,
) -> Response:
    background.add_task(await resources.runs.remove_conversation(principal, chat_id, CHAT))
    return Response(status_code=204)


@router.get("/{chat_id}/messages")
async def list_messages(
    chat_id: uuid.UUID, principal: UserPrincipalDep, session: SessionDep
) -> ChatMessageList:
    chat = await conversations.get_owned(session, principal, chat_id, CHAT)
    return ChatMessageList(data=await service.history(session, chat.id))


@router.post(
    "/{chat_id}/messages",
    responses={
        200: {
            "content": {
                "text/event-stream": {"schema": {"$ref": "#/components/schemas/ChatEvent"}}
            },
            "description": "the reply, or its event stream",
        },
        402: {"description": "budget_exceeded: a budget that binds the turn is spent"},
        409: {"description": "conversation_busy: a reply is still being made (see Retry-After)"},
        502: {"description": "the model failed; the partial reply is saved"},
    },
)
async def send_message(
    chat_id: uuid.UUID,
    body: MessageIn,
    principal: UserPrincipalDep,
    resources: ResourcesDep,
    accept: Annotated[str, Header()] = "application/json",
) -> Response:
    # Everything that can fail as plain HTTP happens before the stream starts (BUG-022), and
    # the user's message is committed before the model is called (BUG-015). No session is
    # held by the response: the run opens its own.
    run_id = await resources.runs.start(
        RunRequest(principal, chat_id, CHAT, body.content, body.model_id)
    )
    events = resources.runs.events(run_id, 0)
    if "text/event-stream" in accept:
        stream = translated(events, ChatTranslator(), ids="native")
        return event_stream(stream, f"/v1/chats/{chat_id}/runs/{run_id}/events")
    # Without a stream: the reply once the turn ends (a client that leaves does not stop it).
    translator, reply, error = ChatTranslator(), None, None
    async for batch in events:
        for _, event in batch:
            if isinstance(event, MessageCompleted):
                reply = uuid.UUID(event.message_id)
            for frame in translator.handle(event):
                if frame.event == "error":
                    error = json.loads(str(frame.data))
    message = None
    if reply is not None:
        async with resources.sessionmaker() as session:
            message = await service.message(session, reply)
    if error is not None or message is None:
        error = error or {"code": "internal_error", "message": "the reply was not saved"}
        extra = {"message": message.model_dump(mode="json")} if message is not None else {}
        raise ProblemError(502, error["code"], error["message"], extra=extra)
    return Response(message.model_dump_json(), media_type="application/json")


@router.get("/{chat_id}/runs/{run_id}/events", responses=EVENT_STREAM)
async def reply_events(
    chat_id: uuid.UUID,
    run_id: uuid.UUID,
    principal: UserPrincipalDep,
    resources: ResourcesDep,
    after: Annotated[int | None, Query(ge=0, le=2**53)] = None,
    last_event_id_header: Annotated[
        str | None, Header(alias="last-event-id", max_length=32)
    ] = None,
) -> Response:
    """A reply's stream again, from after the last event the client saw (its ``Location``)."""
    resume = last_event_id(last_event_id_header, after)
    async with resources.sessionmaker() as session:
        await owned_run(session, principal, chat_id, run_id, CHAT)
    events = resources.runs.events(run_id, resume + 1 if resume else 0)
    stream = translated(events, ChatTranslator(), ids="native")
    return event_stream(stream, f"/v1/chats/{chat_id}/runs/{run_id}/events")


@router.post("/{chat_id}/runs/{run_id}/cancel", status_code=202)
async def cancel_reply(
    chat_id: uuid.UUID, run_id: uuid.UUID, principal: UserPrincipalDep, resources: ResourcesDep
) -> RunOut:
    """Stop a reply from any process; idempotent (a finished one is returned unchanged)."""
    return RunOut.of(await resources.runs.cancel_owned(principal, chat_id, run_id, CHAT))
