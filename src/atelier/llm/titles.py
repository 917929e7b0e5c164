"""Conversation and chat titles, generated in the background with an async call (BUG-005)."""

from __future__ import annotations

from atelier.llm.base import ChatMessage, ModelRequest, TextDelta
from atelier.llm.models import CatalogModel
from atelier.llm.registry import ModelRegistry

MAX_TITLE = 80
TITLE_PROMPT = (
    "Write a title of at most six words for a conversation that starts with the exchange "
    "below. Answer with the title only, no quotes."
)


class TitleGenerator:
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    async def generate(self, model: CatalogModel, user_text: str, reply: str) -> str:
        provider = self.registry.get(model.provider)
        if provider is None or model.provider == "offline":
            # The offline model has nothing better than the user's own first words.
            return _clean(" ".join(user_text.split()[:6])) or "New chat"
        request = ModelRequest(
            model=model.provider_model_id,
            system=TITLE_PROMPT,
            messages=[
                ChatMessage("user", f"User: {user_text[:2000]}\n\nAssistant: {reply[:2000]}")
            ],
            max_tokens=32,
        )
        parts = [
            event.text async for event in provider.stream(request) if isinstance(event, TextDelta)
        ]
        return _clean("".join(parts)) or "New chat"


def _clean(title: str) -> str:
    return " ".join(title.strip().strip("\"'").split())[:MAX_TITLE]
