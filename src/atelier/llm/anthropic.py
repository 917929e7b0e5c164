"""Anthropic Messages API, streamed (text, tool use, usage including cache tokens)."""

from __future__ import annotations

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

API_VERSION = "2023-06-01"
_STOPS: dict[str | None, Any] = {
    "end_turn": "end_turn",
    "tool_use": "tool_use",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
}


class AnthropicModel:
    provider = "anthropic"

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings) -> AsyncIterator[AnthropicModel]:
        assert settings.anthropic_api_key is not None
        async with httpx.AsyncClient(
            base_url=settings.anthropic_base_url,
            headers={
                "x-api-key": settings.anthropic_api_key.get_secret_value(),
                "anthropic-version": API_VERSION,
            },
            timeout=httpx.Timeout(settings.model_timeout_seconds, connect=10),
        ) as client:
            yield cls(client)

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        body: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "messages": [_message(m) for m in request.messages],
            "stream": True,
        }
        if request.system:
            body["system"] = request.system
        if request.tools:
            body["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.parameters}
                for t in request.tools
            ]
        blocks: dict[int, dict[str, str]] = {}
        usage = UsageReport()
        stop: str | None = None
        try:
            async with self.client.stream("POST", "/v1/messages", json=body) as response:
                await raise_for_status(response)
                async for event, data in sse_events(response):
                    payload = loads(data)
                    # An error is an error in any event, named ``error`` or not at all.
                    if event == "error" or "error" in payload:
                        raise ModelError(f"the provider reported: {payload.get('error')}")
                    # Counts may come in message_start and message_delta (cumulative).
                    if event in ("message_start", "message_delta") and (
                        counts := _usage(payload, event)
                    ):
                        usage = usage.merged(**counts)
                        yield usage
                    if event == "content_block_start":
                        block = payload.get("content_block") or {}
                        if block.get("type") == "tool_use":
                            blocks[payload["index"]] = {
                                "id": block["id"],
                                "name": block["name"],
                                "json": "",
                            }
                    elif event == "content_block_delta":
                        delta = payload.get("delta") or {}
                        if delta.get("type") == "text_delta":
                            yield TextDelta(delta.get("text", ""))
                        elif delta.get("type") == "input_json_delta":
                            blocks[payload["index"]]["json"] += delta.get("partial_json", "")
                    elif event == "content_block_stop" and payload.get("index") in blocks:
                        block = blocks.pop(payload["index"])
                        yield ToolCall(
                            id=block["id"],
                            name=block["name"],
                            arguments=parse_arguments(block["json"]),
                        )
                    elif event == "message_delta":
                        stop = (payload.get("delta") or {}).get("stop_reason") or stop
                    elif event == "message_stop":
                        break
                else:  # the stream ended without message_stop: the call broke off
                    raise ModelError("the provider's stream ended before message_stop")
        except httpx.HTTPError as exc:
            raise ModelError(f"the provider connection failed: {type(exc).__name__}") from exc
        if stop is None:  # message_delta, which says why the model stopped, never came
            raise ModelError("the provider's stream ended without a stop_reason")
        yield Stop(_STOPS.get(stop, "other"))


def _usage(payload: dict[str, Any], event: str) -> dict[str, int]:
    """The token counts an event carries (message_start's in its message)."""
    holder = payload.get("message") if event == "message_start" else payload
    counts = holder.get("usage") if isinstance(holder, dict) else None
    if not isinstance(counts, dict):
        return {}
    named = {
        "input_tokens": counts.get("input_tokens"),
        "output_tokens": counts.get("output_tokens"),
        "cache_read_tokens": counts.get("cache_read_input_tokens"),
        "cache_write_tokens": counts.get("cache_creation_input_tokens"),
    }
    return {name: n for name, n in named.items() if isinstance(n, int)}


def _message(message: ChatMessage) -> dict[str, Any]:
    if message.tool_results:
        return {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": r.call_id,
                    "content": r.content,
                    "is_error": r.is_error,
                }
                for r in message.tool_results
            ],
        }
    content: list[dict[str, Any]] = (
        [{"type": "text", "text": message.content}] if message.content else []
    )
    content += [
        {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
        for c in message.tool_calls
    ]
    return {"role": "assistant" if message.role == "assistant" else "user", "content": content}
