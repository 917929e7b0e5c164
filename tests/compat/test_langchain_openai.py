"""``langchain-openai`` with ``use_responses_api=True``, unmodified, over a real socket:
``bind_tools`` tools are the caller's (a tool call it must make, then its ToolMessage in
the resent history takes the run on), and Atelier's own tools are not calls for it."""

from __future__ import annotations

import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from tests.conftest import Caller


@tool
def get_weather(city: str) -> str:
    """The weather in a city, as the user's device sees it."""
    return f"clear in {city}"


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"offline_model_delay_seconds": 0.001}


def chat(served: str, caller: Caller) -> ChatOpenAI:
    return ChatOpenAI(
        model="default",
        base_url=f"{served}/openai/v1",
        api_key=caller.key,  # type: ignore[arg-type]
        default_headers={"X-User-ID": "alice"},
        use_responses_api=True,
        max_retries=0,
    )


class TestLangChainOpenAI:
    async def test_a_bound_tool_is_called_and_its_result_taken(
        self, served: str, caller: Caller
    ) -> None:
        model = chat(served, caller).bind_tools([get_weather])
        asked = HumanMessage('call get_weather {"city": "Lyon"}')
        reply = await model.ainvoke([asked])
        (call,) = reply.tool_calls
        assert (call["name"], call["args"]) == ("get_weather", {"city": "Lyon"})
        result = ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])
        answer = await model.ainvoke([asked, reply, result])
        assert answer.tool_calls == []
        assert answer.text

    async def test_a_call_atelier_ran_is_no_tool_call_to_make(
        self, served: str, caller: Caller
    ) -> None:
        model = chat(served, caller).bind_tools([get_weather])
        reply = await model.ainvoke("write notes.md: hello")
        assert reply.tool_calls == []  # an agent loop would otherwise run write_file again
        assert reply.text
        streamed = [chunk async for chunk in model.astream("list files")]
        assert all(not chunk.tool_call_chunks for chunk in streamed)
