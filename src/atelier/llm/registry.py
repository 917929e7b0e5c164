"""Which providers this process can call, built once in the lifespan."""

from __future__ import annotations

from contextlib import AsyncExitStack

from atelier.llm.base import ChatModel
from atelier.llm.offline import OfflineModel
from atelier.settings import Settings


class ModelRegistry:
    def __init__(self, providers: dict[str, ChatModel]) -> None:
        self.providers = providers

    def get(self, provider: str) -> ChatModel | None:
        return self.providers.get(provider)

    @classmethod
    async def open(cls, settings: Settings, stack: AsyncExitStack) -> ModelRegistry:
        providers: dict[str, ChatModel] = {
            "offline": OfflineModel(delay_seconds=settings.offline_model_delay_seconds)
        }
        if settings.anthropic_api_key is not None:
            from atelier.llm.anthropic import AnthropicModel

            providers["anthropic"] = await stack.enter_async_context(AnthropicModel.open(settings))
        if settings.openai_api_key is not None or settings.openai_base_url is not None:
            from atelier.llm.openai import OpenAIModel

            providers["openai"] = await stack.enter_async_context(OpenAIModel.open(settings))
        if settings.bedrock_enabled:
            from atelier.llm.bedrock import BedrockModel

            providers["bedrock"] = await stack.enter_async_context(BedrockModel.open(settings))
        return cls(providers)
