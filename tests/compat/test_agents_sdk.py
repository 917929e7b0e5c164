"""The OpenAI Agents SDK (``openai-agents``), unmodified, against the Responses API over a
real socket: a function tool it runs itself (the run waits for it in its row, and the
SDK's resent history takes it on), and Atelier's own tools beside -- with Runner.run and
Runner.run_streamed."""

from __future__ import annotations

import json

import pytest
from openai import AsyncOpenAI

from agents import (
    Agent,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from tests.compat.conftest import opened
from tests.conftest import Caller

set_tracing_disabled(True)  # its traces would go to OpenAI's servers
ASKED: list[str] = []


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city, as the user's device sees it."""
    ASKED.append(city)
    return json.dumps({"city": city, "sky": "clear", "celsius": 21})


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"offline_model_delay_seconds": 0.001}


def agent(served: str, caller: Caller) -> Agent:
    client = opened(
        AsyncOpenAI(
            base_url=f"{served}/openai/v1",
            api_key=caller.key,
            default_headers={"X-User-ID": "alice"},
            max_retries=0,
        )
    )
    return Agent(
        name="weather",
        instructions="You answer about the weather.",
        model=OpenAIResponsesModel(model="default", openai_client=client),
        tools=[get_weather],
    )


class TestAgentsSdk:
    async def test_runner_runs_its_function_tool_and_gets_the_answer(
        self, served: str, caller: Caller
    ) -> None:
        ASKED.clear()
        result = await Runner.run(agent(served, caller), 'call get_weather {"city": "Paris"}')
        assert ASKED == ["Paris"]  # the SDK ran its own tool, once
        assert result.final_output
        kinds = [item.type for item in result.new_items]
        assert kinds.count("tool_call_item") == 1
        assert kinds.count("tool_call_output_item") == 1
        assert kinds[-1] == "message_output_item"

    async def test_server_tools_are_not_the_sdks_to_run(self, served: str, caller: Caller) -> None:
        ASKED.clear()
        result = await Runner.run(agent(served, caller), "write notes.md: hello")
        assert ASKED == []
        assert result.final_output  # no "Tool write_file not found"

    async def test_run_streamed_with_both_kinds_of_tools(self, served: str, caller: Caller) -> None:
        ASKED.clear()
        plan = 'write a.txt: hi\ncall get_weather {"city": "Oslo"}\nread a.txt'
        streamed = Runner.run_streamed(agent(served, caller), plan)
        kinds = [event.type async for event in streamed.stream_events()]
        assert ASKED == ["Oslo"]
        assert "raw_response_event" in kinds
        assert streamed.final_output
