"""OpenAI-compatible Chat Completions (OpenAI, vLLM, Ollama, llama.cpp servers), streamed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from atelier.llm.base import (
    ChatMessage,
    ModelError,
    ModelRequest,
    Stop,
    StreamEvent,
    TextDelta,
    ToolCall,
    UsageReport,
)
from atelier.llm.http_stream import loads, parse_arguments, raise_for_status, sse_events
from atelier.settings import Settings

_STOPS: dict[str | None, Any] = {
    "stop": "end_turn",
    "tool_calls": "tool_use",
    "length": "max_tokens",
}


class OpenAIModel:
    provider = "openai"

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings) -> AsyncIterator[OpenAIModel]:
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        async with httpx.AsyncClient(
            base_url=settings.openai_base_url or "https://api.openai.com/v1",
            headers={"authorization": f"Bearer {key}"} if key else {},
            timeout=httpx.Timeout(settings.model_timeout_seconds, connect=10),
        ) as client:
            yield cls(client)

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        body: dict[str, Any] = {
            "model": request.model,
            "messages": _messages(request),
            "max_tokens": request.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in request.tools
            ]
        calls: dict[int, dict[str, str]] = {}
        usage = UsageReport()
        finish: str | None = None
        try:
            # Leaving this block (completion, error or cancellation) closes the connection.
            async with self.client.stream("POST", "/chat/completions", json=body) as response:
                await raise_for_status(response)
                async for _, data in sse_events(response):
                    if data == "[DONE]":
                        break
                    chunk = loads(data)
                    if "error" in chunk:
                        raise ModelError(f"the provider reported: {chunk['error']}")
                    if counts := _usage(chunk.get("usage")):
                        usage = usage.merged(**counts)
                        yield usage
                    for choice in chunk.get("choices") or ():
                        delta = choice.get("delta") or {}
                        if text := delta.get("content"):
                            yield TextDelta(text)
                        for call in delta.get("tool_calls") or ():
                            slot = calls.setdefault(
                                call.get("index", 0), {"id": "", "name": "", "arguments": ""}
                            )
                            slot["id"] = call.get("id") or slot["id"]
                            function = call.get("function") or {}
                            slot["name"] += function.get("name") or ""
                            slot["arguments"] += function.get("arguments") or ""
                        finish = choice.get("finish_reason") or finish
                else:  # no [DONE]: the call broke off
                    raise ModelError("the provider's stream ended before [DONE]")
        except httpx.HTTPError as exc:
            raise ModelError(f"the provider connection failed: {type(exc).__name__}") from exc
        if finish is None:
            raise ModelError("the provider's stream ended without a finish_reason")
        for _, call in sorted(calls.items()):
            yield ToolCall(
                id=call["id"], name=call["name"], arguments=parse_arguments(call["arguments"])
            )
        yield Stop(_STOPS.get(finish, "other"))


def _usage(usage: object) -> dict[str, int]:
    """Counts of a chunk's ``usage``, with cached prompt tokens counted apart: OpenAI's
    ``prompt_tokens`` include them (a proxy's ``cache_creation_input_tokens`` too)."""
    if not isinstance(usage, dict):
        return {}
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    written = usage.get("cache_creation_input_tokens")
    prompt = usage.get("prompt_tokens")
    counts = {
        "output_tokens": usage.get("completion_tokens"),
        "cache_read_tokens": cached,
        "cache_write_tokens": written,
    }
    if isinstance(prompt, int):
        apart = sum(n for n in (cached, written) if isinstance(n, int))
        counts["input_tokens"] = max(prompt - apart, 0)
    return {name: n for name, n in counts.items() if isinstance(n, int)}


def _messages(request: ModelRequest) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = (
        [{"role": "system", "content": request.system}] if request.system else []
    )
    for message in request.messages:
        out += _message(message)
    return out


def _message(message: ChatMessage) -> list[dict[str, Any]]:
    if message.tool_results:
        return [
            {"role": "tool", "tool_call_id": r.call_id, "content": r.content}
            for r in message.tool_results
        ]
    item: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        item["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            for c in message.tool_calls
        ]
    return [item]
