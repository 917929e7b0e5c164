"""AWS Bedrock ConverseStream (the audited system's provider), through aiobotocore.

Fully async: no sync boto3 call ever runs on the event loop (BUG-005's cause).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from atelier.aws import session_for
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
from atelier.llm.http_stream import parse_arguments
from atelier.settings import Settings

_STOPS: dict[str | None, Any] = {
    "end_turn": "end_turn",
    "tool_use": "tool_use",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
}
_STREAM_ERRORS = (
    "internalServerException",
    "modelStreamErrorException",
    "validationException",
    "throttlingException",
    "serviceUnavailableException",
)


class BedrockModel:
    provider = "bedrock"

    def __init__(self, client: Any) -> None:
        self.client = client

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings) -> AsyncIterator[BedrockModel]:
        config = AioConfig(
            read_timeout=settings.model_timeout_seconds,
            connect_timeout=10,
            retries={"max_attempts": 2},
        )
        async with (await session_for("bedrock-runtime")).create_client(
            "bedrock-runtime",
            region_name=settings.bedrock_region,
            endpoint_url=settings.bedrock_endpoint_url,
            config=config,
        ) as client:
            yield cls(client)

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        arguments: dict[str, Any] = {
            "modelId": request.model,
            "messages": [_message(m) for m in request.messages],
            "inferenceConfig": {"maxTokens": request.max_tokens},
        }
        if request.system:
            arguments["system"] = [{"text": request.system}]
        if request.tools:
            arguments["toolConfig"] = {
                "tools": [
                    {
                        "toolSpec": {
                            "name": t.name,
                            "description": t.description,
                            "inputSchema": {"json": t.parameters},
                        }
                    }
                    for t in request.tools
                ]
            }
        tools: dict[int, dict[str, str]] = {}
        usage = UsageReport()
        stop: str | None = None
        ended = False  # the stream's last event, metadata, came
        try:
            response = await self.client.converse_stream(**arguments)
        except (ClientError, BotoCoreError) as exc:
            raise ModelError(f"Bedrock refused the call: {exc}") from exc
        stream = response["stream"]
        try:
            async for event in stream:
                if error := next((event[name] for name in _STREAM_ERRORS if name in event), None):
                    raise ModelError(f"Bedrock reported: {error.get('message', error)}")
                if start := event.get("contentBlockStart"):
                    if tool := (start.get("start") or {}).get("toolUse"):
                        tools[start["contentBlockIndex"]] = {
                            "id": tool["toolUseId"],
                            "name": tool["name"],
                            "json": "",
                        }
                elif delta := event.get("contentBlockDelta"):
                    body = delta.get("delta") or {}
                    if "text" in body:
                        yield TextDelta(body["text"])
                    elif "toolUse" in body:
                        tools[delta["contentBlockIndex"]]["json"] += body["toolUse"].get(
                            "input", ""
                        )
                elif (block_stop := event.get("contentBlockStop")) and block_stop.get(
                    "contentBlockIndex"
                ) in tools:
                    tool = tools.pop(block_stop["contentBlockIndex"])
                    yield ToolCall(
                        id=tool["id"], name=tool["name"], arguments=parse_arguments(tool["json"])
                    )
                elif (message_stop := event.get("messageStop")) is not None:
                    stop = message_stop.get("stopReason") or "other"
                elif (metadata := event.get("metadata")) is not None:
                    ended = True
                    counts = metadata.get("usage") or {}
                    usage = usage.merged(
                        input_tokens=counts.get("inputTokens"),
                        output_tokens=counts.get("outputTokens"),
                        cache_read_tokens=counts.get("cacheReadInputTokens"),
                        cache_write_tokens=counts.get("cacheWriteInputTokens"),
                    )
                    yield usage
        except ClientError as exc:  # an exception event, modelled or not
            raise ModelError(f"Bedrock reported: {exc}") from exc
        except (BotoCoreError, OSError) as exc:
            raise ModelError(f"the Bedrock stream broke: {type(exc).__name__}") from exc
        finally:
            # Closes the HTTP response, also when the consumer stops early or is cancelled.
            with contextlib.suppress(Exception):
                stream.close()
        # A ConverseStream ends with messageStop, then metadata; without them it broke off.
        if stop is None or not ended:
            raise ModelError("the Bedrock stream ended before messageStop and metadata")
        yield Stop(_STOPS.get(stop, "other"))


def _message(message: ChatMessage) -> dict[str, Any]:
    if message.tool_results:
        return {
            "role": "user",
            "content": [
                {
                    "toolResult": {
                        "toolUseId": r.call_id,
                        "content": [{"text": r.content}],
                        "status": "error" if r.is_error else "success",
                    }
                }
                for r in message.tool_results
            ],
        }
    content: list[dict[str, Any]] = [{"text": message.content}] if message.content else []
    content += [
        {"toolUse": {"toolUseId": c.id, "name": c.name, "input": c.arguments}}
        for c in message.tool_calls
    ]
    return {"role": "assistant" if message.role == "assistant" else "user", "content": content}
