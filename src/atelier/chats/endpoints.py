from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from sqlalchemy import delete as sql_delete

from atelier.chats import service
from atelier.chats.models import Chat
from atelier.chats.schemas import (
    ChatMessageList,
    ChatMessageOut,
    ChatOut,
    ChatPage,
    ChatWrite,
    MessageIn,
)
from atelier.chats.turn import ChatTurn
from atelier.http.deps import ResourcesDep, SessionDep, UserPrincipalDep
from atelier.http.errors import ProblemError
from atelier.http.sse import EventStreamResponse
from atelier.llm.base import ChatMessage

router = APIRouter(prefix="/v1/chats", tags=["chats"])


@router.post("", status_code=201)
async def create_chat(body: ChatWrite, principal: UserPrincipalDep, session: SessionDep) -> ChatOut:
    if body.model_id is not None:
        await service.resolve_model(session, body.model_id)
    return service.present(await service.create(session, principal, body))


@router.get("")
async def list_chats(
    principal: UserPrincipalDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> ChatPage:
    rows, next_cursor = await service.list_page(session, principal, limit, cursor)
    return ChatPage(data=[service.present(chat) for chat in rows], next_cursor=next_cursor)


@router.get("/{chat_id}")
async def get_chat(chat_id: uuid.UUID, principal: UserPrincipalDep, session: SessionDep) -> ChatOut:
    return service.present(await service.get_owned(session, principal, chat_id))


@router.patch("/{chat_id}")
async def update_chat(
    chat_id: uuid.UUID, body: ChatWrite, principal: UserPrincipalDep, session: SessionDep
) -> ChatOut:
    if body.model_id is not None:
        await service.resolve_model(session, body.model_id)
    return service.present(await service.update_chat(session, principal, chat_id, body))


@router.delete("/{chat_id}", status_code=204)
async def delete_chat(
    chat_id: uuid.UUID, principal: UserPrincipalDep, session: SessionDep
) -> Response:
    chat = await service.get_owned(session, principal, chat_id)
    await session.execute(sql_delete(Chat).where(Chat.id == chat.id))
    return Response(status_code=204)


@router.get("/{chat_id}/messages")
async def list_messages(
    chat_id: uuid.UUID, principal: UserPrincipalDep, session: SessionDep
) -> ChatMessageList:
    chat = await service.get_owned(session, principal, chat_id)
    return ChatMessageList(
        data=[
            ChatMessageOut.model_validate(m, from_attributes=True)
            for m in await service.history(session, chat.id)
        ]
    )


@router.post(
    "/{chat_id}/messages",
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "the reply, or its event stream",
        },
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
    # held by the response: the turn opens its own.
    async with resources.sessionmaker() as session:
        chat = await service.get_owned(session, principal, chat_id)
        model = await service.resolve_model(
            session, body.model_id or chat.model_id or resources.settings.default_model
        )
        if resources.models.get(model.provider) is None:
            raise ProblemError(
                503, "model_unavailable", f"provider {model.provider!r} is not configured"
            )
        await service.append_message(session, chat.id, "user", body.content, model_id=model.id)
        stored = await service.history(session, chat.id)
        wants_title = chat.title is None and len(stored) == 1
        await session.commit()
    assert principal.user_id is not None
    turn = ChatTurn(
        resources=resources,
        tenant_id=principal.tenant_id,
        user_id=principal.user_id,
        chat_id=chat_id,
        model=model,
        history=[ChatMessage(m.role, m.content) for m in stored if m.content or m.role == "user"],  # type: ignore[arg-type]
        wants_title=wants_title,
    )
    task = resources.supervisor.spawn(turn.run(), name=f"chat-turn-{chat_id}")
    if "text/event-stream" in accept:
        return EventStreamResponse(turn.stream())
    result = await task
    message = ChatMessageOut.model_validate(result.message, from_attributes=True)
    if result.error is not None:
        raise ProblemError(
            502,
            result.error["code"],
            result.error["message"],
            extra={"message": message.model_dump(mode="json")},
        )
    return Response(message.model_dump_json(), media_type="application/json")
