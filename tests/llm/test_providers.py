"""Each provider against a local peer speaking its wire protocol over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from atelier.llm.base import (
    ChatMessage,
    ModelError,
    ModelRequest,
    Stop,
    TextDelta,
    ToolCall,
    ToolSpec,
    UsageReport,
)
from atelier.settings import Settings
from tests.live import serve
from tests.llm.peers import Peer, aws_error, aws_event, sse

TOOL = ToolSpec(
    "read_file", "Read a file", {"type": "object", "properties": {"path": {"type": "string"}}}
)
REQUEST = ModelRequest(
    model="m-1",
    system="be brief",
    messages=[ChatMessage("user", "hi")],
    tools=[TOOL],
    max_tokens=100,
)


def openai_text() -> list[bytes]:
    return [
        sse({"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]}),
        sse({"choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]}),
        sse(
            {
                "choices": [],
                "usage": {
                    "prompt_tokens": 12,
                    "completion_tokens": 2,
                    "prompt_tokens_details": {"cached_tokens": 4},
                },
            }
        ),
        sse("[DONE]"),
    ]


def openai_tool() -> list[bytes]:
    call = {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "read_file", "arguments": ""},
    }
    return [
        sse({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}),
        sse(
            {
                "choices": [
                    {
                        "index": 0,
                        "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"pa'}}]},
                    }
                ]
            }
        ),
        sse(
            {
                "choices": [
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [{"index": 0, "function": {"arguments": 'th": "a.txt"}'}}]
                        },
                        "finish_reason": "tool_calls",
                    }
                ]
            }
        ),
        sse({"choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 9}}),
        sse("[DONE]"),
    ]


def anthropic_text() -> list[bytes]:
    return [
        sse(
            {
                "type": "message_start",
                "message": {
                    "usage": {
                        "input_tokens": 12,
                        "output_tokens": 1,
                        "cache_read_input_tokens": 4,
                        "cache_creation_input_tokens": 0,
                    }
                },
            },
            "message_start",
        ),
        sse(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            "content_block_start",
        ),
        sse({"type": "ping"}, "ping"),
        sse(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Hel"},
            },
            "content_block_delta",
        ),
        sse(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "lo"},
            },
            "content_block_delta",
        ),
        sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": 2},
            },
            "message_delta",
        ),
        sse({"type": "message_stop"}, "message_stop"),
    ]


def anthropic_tool() -> list[bytes]:
    return [
        sse(
            {
                "type": "message_start",
                "message": {"usage": {"input_tokens": 20, "output_tokens": 1}},
            },
            "message_start",
        ),
        sse(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {
                    "type": "tool_use",
                    "id": "call_1",
                    "name": "read_file",
                    "input": {},
                },
            },
            "content_block_start",
        ),
        sse(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": '{"pa'},
            },
            "content_block_delta",
        ),
        sse(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": 'th": "a.txt"}'},
            },
            "content_block_delta",
        ),
        sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use"},
                "usage": {"output_tokens": 9},
            },
            "message_delta",
        ),
        sse({"type": "message_stop"}, "message_stop"),
    ]


def bedrock_text() -> list[bytes]:
    return [
        aws_event("messageStart", {"role": "assistant"}),
        aws_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hel"}}),
        aws_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "lo"}}),
        aws_event("contentBlockStop", {"contentBlockIndex": 0}),
        aws_event("messageStop", {"stopReason": "end_turn"}),
        aws_event(
            "metadata",
            {
                "usage": {
                    "inputTokens": 12,
                    "outputTokens": 2,
                    "cacheReadInputTokens": 4,
                    "totalTokens": 14,
                },
                "metrics": {"latencyMs": 5},
            },
        ),
    ]


def bedrock_tool() -> list[bytes]:
    return [
        aws_event("messageStart", {"role": "assistant"}),
        aws_event(
            "contentBlockStart",
            {
                "contentBlockIndex": 0,
                "start": {"toolUse": {"toolUseId": "call_1", "name": "read_file"}},
            },
        ),
        aws_event(
            "contentBlockDelta", {"contentBlockIndex": 0, "delta": {"toolUse": {"input": '{"pa'}}}
        ),
        aws_event(
            "contentBlockDelta",
            {"contentBlockIndex": 0, "delta": {"toolUse": {"input": 'th": "a.txt"}'}}},
        ),
        aws_event("contentBlockStop", {"contentBlockIndex": 0}),
        aws_event("messageStop", {"stopReason": "tool_use"}),
        aws_event(
            "metadata",
            {
                "usage": {"inputTokens": 20, "outputTokens": 9, "totalTokens": 29},
                "metrics": {"latencyMs": 5},
            },
        ),
    ]


@asynccontextmanager
async def openai_model(peer: Peer) -> AsyncIterator[Any]:
    from atelier.llm.openai import OpenAIModel

    async with serve(peer.app("/v1/chat/completions")) as url:  # type: ignore[arg-type]
        settings = Settings(openai_base_url=f"{url}/v1", openai_api_key="sk-test")
        async with OpenAIModel.open(settings) as model:
            yield model


@asynccontextmanager
async def anthropic_model(peer: Peer) -> AsyncIterator[Any]:
    from atelier.llm.anthropic import AnthropicModel

    async with (
        serve(peer.app("/v1/messages")) as url,  # type: ignore[arg-type]
        AnthropicModel.open(
            Settings(anthropic_base_url=url, anthropic_api_key="sk-ant-test")
        ) as model,
    ):
        yield model


@asynccontextmanager
async def bedrock_model(peer: Peer) -> AsyncIterator[Any]:
    from atelier.llm.bedrock import BedrockModel

    peer.media_type = "application/vnd.amazon.eventstream"
    async with (
        serve(peer.app("/model/m-1/converse-stream")) as url,  # type: ignore[arg-type]
        BedrockModel.open(Settings(bedrock_enabled=True, bedrock_endpoint_url=url)) as model,
    ):
        yield model


PROVIDERS = {
    "openai": (openai_model, openai_text, openai_tool),
    "anthropic": (anthropic_model, anthropic_text, anthropic_tool),
    "bedrock": (bedrock_model, bedrock_text, bedrock_tool),
}


async def drain(model: Any, seen: list[Any]) -> None:
    async for event in model.stream(REQUEST):
        seen.append(event)


async def collect(model: Any) -> list[Any]:
    return [event async for event in model.stream(REQUEST)]


@pytest.mark.parametrize("provider", PROVIDERS)
class TestProviderProtocols:
    async def test_text_and_usage(self, provider: str) -> None:
        open_model, text, _ = PROVIDERS[provider]
        peer = Peer(frames=text())
        async with open_model(peer) as model:
            events = await collect(model)
        assert [e.text for e in events if isinstance(e, TextDelta)] == ["Hel", "lo"]
        usage = [e for e in events if isinstance(e, UsageReport)][-1]
        # OpenAI counts cached prompt tokens in prompt_tokens: they are counted apart.
        uncached = 8 if provider == "openai" else 12
        assert (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens) == (
            uncached,
            2,
            4,
        )
        assert events[-1] == Stop("end_turn")
        sent = peer.requests[0]
        assert "m-1" in str(sent) or provider == "bedrock"
        assert "read_file" in str(sent)

    async def test_tool_call_with_streamed_arguments(self, provider: str) -> None:
        open_model, _, tool = PROVIDERS[provider]
        async with open_model(Peer(frames=tool())) as model:
            events = await collect(model)
        assert [e for e in events if isinstance(e, ToolCall)] == [
            ToolCall("call_1", "read_file", {"path": "a.txt"})
        ]
        assert events[-1] == Stop("tool_use")
        assert [e for e in events if isinstance(e, UsageReport)][-1].output_tokens == 9

    async def test_error_in_the_middle_of_the_stream(self, provider: str) -> None:
        open_model, text, _ = PROVIDERS[provider]
        if provider == "bedrock":
            broken = [
                *text()[:2],
                aws_event("modelStreamErrorException", {"message": "overloaded"}, exception=True),
            ]
        elif provider == "anthropic":
            broken = [
                *text()[:4],
                sse(
                    {
                        "type": "error",
                        "error": {"type": "overloaded_error", "message": "overloaded"},
                    },
                    "error",
                ),
            ]
        else:
            broken = [*text()[:1], sse({"error": {"message": "overloaded"}})]
        seen: list[Any] = []
        async with open_model(Peer(frames=broken)) as model:
            with pytest.raises(ModelError):
                await drain(model, seen)
        assert [e.text for e in seen if isinstance(e, TextDelta)] == ["Hel"]

    async def test_cancellation_closes_the_connection(self, provider: str) -> None:
        open_model, text, _ = PROVIDERS[provider]
        peer = Peer(frames=text()[:2], forever=text()[1])
        async with open_model(peer) as model:
            stream = model.stream(REQUEST)

            async def consume() -> None:
                async for _ in stream:
                    pass

            task = asyncio.create_task(consume())
            async with asyncio.timeout(10):
                while not peer.requests:  # the peer is streaming to it
                    await asyncio.sleep(0.01)
            assert not peer.disconnected.is_set()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.wait_for(peer.disconnected.wait(), 10)

    async def test_refusal_is_a_model_error(self, provider: str) -> None:
        open_model, _, _ = PROVIDERS[provider]
        async with open_model(Peer(status=429)) as model:
            with pytest.raises(ModelError):
                await collect(model)


# The wire sequences of issue #19, as an independent proxy sent them: a failure sent as an
# unnamed event, a stream cut without its end marker, usage only at the end, cache tokens.
def broken_off(provider: str) -> list[bytes]:
    """Three text pieces, then the failure as an unnamed event; the connection closes."""
    failure = {"error": {"message": "ServiceUnavailableError: overloaded", "code": "503"}}
    if provider == "anthropic":
        start = anthropic_text()[:2]
        pieces = [
            sse(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": t},
                },
                "content_block_delta",
            )
            for t in ("a", "b", "c")
        ]
        return [*start, *pieces, sse(failure)]
    if provider == "openai":
        return [
            *(sse({"choices": [{"index": 0, "delta": {"content": t}}]}) for t in ("a", "b", "c")),
            sse(failure),
        ]
    pieces = [
        aws_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": t}})
        for t in ("a", "b", "c")
    ]
    # Bedrock's unnamed failure: an error message, named by no event or exception type.
    unnamed = aws_error("ServiceUnavailableError", "overloaded")
    return [aws_event("messageStart", {"role": "assistant"}), *pieces, unnamed]


def cut_off(provider: str) -> list[bytes]:
    """Everything but the protocol's end marker, then the connection closes."""
    if provider == "anthropic":
        return anthropic_text()[:-1]  # no message_stop
    if provider == "openai":
        return openai_text()[:-1]  # no [DONE]
    return bedrock_text()[:-1]  # messageStop, but not the metadata that ends the stream


def unfinished(provider: str) -> list[bytes]:
    """The text, and an end marker where the protocol's reason for stopping never came."""
    if provider == "anthropic":
        return [*anthropic_text()[:-2], sse({"type": "message_stop"}, "message_stop")]
    if provider == "openai":
        return [openai_text()[0], sse("[DONE]")]  # no finish_reason
    return [*bedrock_text()[:-2], bedrock_text()[-1]]  # no messageStop


def usage_at_the_end(provider: str) -> tuple[list[bytes], UsageReport]:
    """Counts only in the protocol's last event, cache tokens included."""
    if provider == "anthropic":
        frames = anthropic_text()
        frames[0] = sse(
            {
                "type": "message_start",
                "message": {"usage": {"input_tokens": 0, "output_tokens": 1}},
            },
            "message_start",
        )
        frames[-2] = sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {
                    "input_tokens": 8,
                    "output_tokens": 11,
                    "cache_read_input_tokens": 5,
                    "cache_creation_input_tokens": 3,
                },
            },
            "message_delta",
        )
        return frames, UsageReport(8, 11, 5, 3)
    if provider == "openai":
        # prompt_tokens include the cached ones: 5 of the 13 were read from the cache.
        frames = openai_text()
        frames[2] = sse(
            {
                "choices": [],
                "usage": {
                    "prompt_tokens": 13,
                    "completion_tokens": 11,
                    "prompt_tokens_details": {"cached_tokens": 5},
                },
            }
        )
        return frames, UsageReport(8, 11, 5, None)
    frames = bedrock_text()
    frames[-1] = aws_event(
        "metadata",
        {
            "usage": {
                "inputTokens": 8,
                "outputTokens": 11,
                "cacheReadInputTokens": 5,
                "cacheWriteInputTokens": 3,
                "totalTokens": 27,
            },
            "metrics": {"latencyMs": 5},
        },
    )
    return frames, UsageReport(8, 11, 5, 3)


@pytest.mark.parametrize("provider", PROVIDERS)
class TestTheProtocolsEnd:
    """A call succeeds only with its protocol's end marker; an error in any event fails it."""

    async def test_an_unnamed_error_event_is_an_error(self, provider: str) -> None:
        open_model = PROVIDERS[provider][0]
        seen: list[Any] = []
        async with open_model(Peer(frames=broken_off(provider))) as model:
            with pytest.raises(ModelError, match="overloaded"):
                await drain(model, seen)
        assert [e.text for e in seen if isinstance(e, TextDelta)] == ["a", "b", "c"]
        assert not any(isinstance(e, Stop) for e in seen)

    async def test_a_stream_cut_before_its_end_marker_is_an_error(self, provider: str) -> None:
        open_model = PROVIDERS[provider][0]
        seen: list[Any] = []
        async with open_model(Peer(frames=cut_off(provider))) as model:
            with pytest.raises(ModelError, match="ended"):
                await drain(model, seen)
        assert [e.text for e in seen if isinstance(e, TextDelta)] == ["Hel", "lo"]
        assert not any(isinstance(e, Stop) for e in seen)

    async def test_an_end_without_a_reason_to_stop_is_an_error(self, provider: str) -> None:
        open_model = PROVIDERS[provider][0]
        async with open_model(Peer(frames=unfinished(provider))) as model:
            with pytest.raises(ModelError, match="ended"):
                await collect(model)

    async def test_usage_and_cache_tokens_from_the_last_event(self, provider: str) -> None:
        open_model = PROVIDERS[provider][0]
        frames, expected = usage_at_the_end(provider)
        async with open_model(Peer(frames=frames)) as model:
            events = await collect(model)
        reports = [e for e in events if isinstance(e, UsageReport)]
        assert reports[-1] == expected
        assert events[-1] == Stop("end_turn")


class TestUsageBeforeAFailure:
    async def test_anthropic_counts_reported_before_a_failure_are_kept(self) -> None:
        """message_start's counts are yielded as they come: a call that then fails is billed
        for what the provider reported."""
        seen: list[Any] = []
        async with anthropic_model(Peer(frames=broken_off("anthropic"))) as model:
            with pytest.raises(ModelError):
                await drain(model, seen)
        reports = [e for e in seen if isinstance(e, UsageReport)]
        assert reports[-1] == UsageReport(12, 1, 4, 0)

    async def test_openai_cumulative_usage_in_every_chunk_keeps_the_latest(self) -> None:
        frames = [
            sse(
                {
                    "choices": [{"index": 0, "delta": {"content": "a"}}],
                    "usage": {"prompt_tokens": 9},
                }
            ),
            sse(
                {
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 9, "completion_tokens": 1},
                }
            ),
            sse("[DONE]"),
        ]
        async with openai_model(Peer(frames=frames)) as model:
            events = await collect(model)
        assert [e for e in events if isinstance(e, UsageReport)][-1] == UsageReport(9, 1)
