"""Whether a run may start, decided once its conversation is claimed (and before anything
of it is kept): its model, that model's provider, and the conversation's context."""

from __future__ import annotations

from atelier.http.errors import ProblemError
from atelier.llm.context import context_usage
from atelier.llm.models import CatalogModel
from atelier.llm.offline import estimate_tokens
from atelier.runs.environment import RunEnvironment, RunRequest
from atelier.runs.service import Claimed


def choose_model(
    env: RunEnvironment, request: RunRequest, conversation: Claimed, text: str
) -> CatalogModel:
    """The run's model; refused as plain HTTP if the run cannot go on with it."""
    model = env.catalog.resolve(
        request.model_id or conversation.model_id or env.settings.default_model
    )
    if env.models.get(model.provider) is None:
        raise ProblemError(
            503, "model_unavailable", f"provider {model.provider!r} is not configured"
        )
    estimate = conversation.estimated_context_tokens + estimate_tokens(text)
    if context_usage(estimate, model.context_window).status == "exceeded":  # BUG-008
        raise ProblemError(
            413,
            "context_window_exceeded",
            f"about {estimate} tokens do not fit {model.id}'s window of "
            f"{model.context_window}; start a new conversation",
        )
    return model
