"""Whether a run may start, decided once its conversation is claimed (and before anything
of it is kept): its agent version, its model, that model's provider, the conversation's
context, and its budgets."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from atelier.agents import service as agents
from atelier.agents.service import ResolvedAgent
from atelier.budgets import enforcement as budgets
from atelier.errors import Forbidden, TooLarge, Unavailable
from atelier.llm.context import context_usage
from atelier.llm.models import CatalogModel
from atelier.llm.offline import estimate_tokens
from atelier.runs.environment import RunEnvironment, RunRequest
from atelier.runs.service import Claimed


@dataclass(frozen=True)
class Admitted:
    model: CatalogModel
    agent: ResolvedAgent | None  # None: a chat turn (the chat agent)
    budgets: tuple[budgets.Binding, ...] = ()  # what binds its spending


def payer(conversation: Claimed, agent: ResolvedAgent | None) -> budgets.Payer:
    agent_id = agent.agent_id if agent else None
    return budgets.Payer(
        conversation.tenant_id, conversation.api_key_id, conversation.user_id, agent_id
    )


async def admit(
    env: RunEnvironment, request: RunRequest, session: AsyncSession, conversation: Claimed
) -> Admitted:
    """The run's agent version and model; refused as plain HTTP if the run cannot go on."""
    agent = None
    if request.kind == "agent":
        agent = await agents.resolve(
            session, conversation.tenant_id, conversation.agent_id, conversation.agent_version
        )
        if not request.principal.may_use_agent(agent.agent_id):
            raise Forbidden(
                "agent_not_granted", "the token does not grant this conversation's agent"
            )
    model = env.catalog.resolve(
        request.model_id
        or conversation.model_id
        or (agent.definition.model_id if agent else None)
        or env.settings.default_model
    )
    if env.models.get(model.provider) is None:
        raise Unavailable("model_unavailable", f"provider {model.provider!r} is not configured")
    estimate = conversation.estimated_context_tokens + estimate_tokens(request.text)
    if context_usage(estimate, model.context_window).status == "exceeded":  # BUG-008
        raise TooLarge(
            "context_window_exceeded",
            f"about {estimate} tokens do not fit {model.id}'s window of "
            f"{model.context_window}; start a new conversation",
        )
    # Last, as it is the one refusal a client can do nothing about but wait or pay.
    bindings = await budgets.admit(session, payer(conversation, agent), model.currency)
    return Admitted(model, agent, bindings)
