from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Query, Response

from atelier.agents import service as agents
from atelier.conversations import forking, service
from atelier.conversations.models import Conversation
from atelier.conversations.schemas import (
    NO_NUL,
    AgentConversationWrite,
    ConversationOut,
    ConversationPage,
    ForkIn,
)
from atelier.http.deps import ResourcesDep, SessionDep, UserPrincipalDep
from atelier.resources import Resources

router = APIRouter(prefix="/v1/conversations", tags=["conversations"])


@router.post("", status_code=201)
async def create_conversation(
    body: AgentConversationWrite,
    principal: UserPrincipalDep,
    session: SessionDep,
    resources: ResourcesDep,
) -> ConversationOut:
    if body.model_id is not None:
        resources.catalog.resolve(body.model_id)
    await agents.check_choice(session, principal.tenant_id, body.agent_id, body.agent_version)
    limit = resources.settings.max_conversations_per_user
    conversation = await service.create(session, principal, body, limit=limit)
    return _present(resources, conversation)


@router.get("")
async def list_conversations(
    principal: UserPrincipalDep,
    session: SessionDep,
    resources: ResourcesDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    q: Annotated[str | None, Query(max_length=200, pattern=NO_NUL)] = None,
) -> ConversationPage:
    rows, next_cursor = await service.list_page(session, principal, limit, cursor, search=q)
    return service.present_page(
        rows, next_cursor, resources.catalog, resources.settings.default_model
    )


@router.get("/{conversation_id}")
async def get_conversation(
    conversation_id: uuid.UUID,
    principal: UserPrincipalDep,
    session: SessionDep,
    resources: ResourcesDep,
) -> ConversationOut:
    return _present(resources, await service.get_owned(session, principal, conversation_id))


@router.patch("/{conversation_id}")
async def update_conversation(
    conversation_id: uuid.UUID,
    body: AgentConversationWrite,
    principal: UserPrincipalDep,
    session: SessionDep,
    resources: ResourcesDep,
) -> ConversationOut:
    if body.model_id is not None:
        resources.catalog.resolve(body.model_id)
    conversation = await service.update(session, principal, conversation_id, body)
    if {"agent_id", "agent_version"} & body.model_fields_set:
        await agents.check_choice(
            session, principal.tenant_id, conversation.agent_id, conversation.agent_version
        )
    return _present(resources, conversation)


@router.post(
    "/{conversation_id}/fork",
    status_code=201,
    responses={400: {"description": "invalid_at_seq: past the last message"}},
)
async def fork_conversation(
    conversation_id: uuid.UUID,
    principal: UserPrincipalDep,
    resources: ResourcesDep,
    body: ForkIn | None = None,
) -> ConversationOut:
    """A new conversation with the messages up to ``at_seq`` and a copy of the workspace."""
    storage, settings = resources.storage, resources.settings
    at_seq = body.at_seq if body else None
    async with resources.sessionmaker() as session:
        copy = await forking.fork(session, storage, settings, principal, conversation_id, at_seq)
        try:
            await session.commit()
        except BaseException:
            await forking.forget(storage, settings, copy)
            raise
        return _present(resources, copy)


@router.delete("/{conversation_id}", status_code=204)
async def delete_conversation(
    conversation_id: uuid.UUID,
    principal: UserPrincipalDep,
    resources: ResourcesDep,
    background: BackgroundTasks,
) -> Response:
    background.add_task(
        await resources.runs.remove_conversation(principal, conversation_id, "agent")
    )
    return Response(status_code=204)


def _present(resources: Resources, conversation: Conversation) -> ConversationOut:
    return service.present([conversation], resources.catalog, resources.settings.default_model)[0]
