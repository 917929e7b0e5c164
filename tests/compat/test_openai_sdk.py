"""The Responses API as the official ``openai`` client sees it, over a real socket, on
both backends: a response is a run, streamed with the event order and sequence numbers
the SDK's stream helper checks, resumed, cancelled, run in the background, chained."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI
from openai import AsyncOpenAI

from atelier.llm.titles import TITLE_PROMPT
from atelier.runs.models import Run
from tests.agents.mcp_server import McpServerProcess
from tests.compat.conftest import opened
from tests.conftest import Caller, make_caller
from tests.runs.helpers import BlockingTools, use_tools

LONG = " ".join(f"word{i}" for i in range(60))


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"offline_model_delay_seconds": 0.01, "mcp_allow_private": True}


def sdk(url: str, caller: Caller, user: str = "alice") -> AsyncOpenAI:
    client = AsyncOpenAI(
        base_url=f"{url}/openai/v1",
        api_key=caller.key,
        default_headers={"X-User-ID": user},
        max_retries=0,
    )
    return opened(client)


@pytest.fixture
def oa(served: str, caller: Caller) -> AsyncOpenAI:
    return sdk(served, caller)


def text_of(events: list[Any]) -> str:
    return "".join(e.delta for e in events if e.type == "response.output_text.delta")


async def conversation_of(app: FastAPI, response_id: str) -> str:
    async with app.state.resources.sessionmaker() as session:
        run = await session.get(Run, uuid.UUID(hex=response_id[5:]))
        return str(run.conversation_id)


class TestStreaming:
    async def test_the_stream_helper_gets_every_event_in_order_and_the_final_response(
        self, app: FastAPI, oa: AsyncOpenAI, native: httpx.AsyncClient, caller: Caller
    ) -> None:
        async with oa.responses.stream(model="default", input=LONG) as stream:
            events = [event async for event in stream]
            final = await stream.get_final_response()
        kinds = [e.type for e in events]
        assert kinds[:4] == [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
        ]
        assert kinds[-4:] == [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
        assert [e.sequence_number for e in events] == list(range(len(events)))
        assert final.status == "completed"
        assert final.output_text == text_of(events)
        assert final.output_text
        assert final.usage is not None
        assert final.usage.total_tokens > 0

        # The same run, stored and seen natively.
        conversation = await conversation_of(app, final.id)
        stored = await native.get(
            f"/v1/conversations/{conversation}/messages", headers=caller.headers("alice")
        )
        assert [m["content"] for m in stored.json()["data"]] == [LONG, final.output_text]
        again = await oa.responses.retrieve(final.id)
        assert again.output_text == final.output_text
        assert again.usage.output_tokens == final.usage.output_tokens

    async def test_a_stream_resumed_after_a_sequence_number_repeats_and_misses_nothing(
        self, oa: AsyncOpenAI
    ) -> None:
        first = []
        stream = await oa.responses.create(model="default", input=LONG, stream=True)
        async for event in stream:
            first.append(event)
            if sum(e.type == "response.output_text.delta" for e in first) == 3:
                break  # the client drops out mid-reply
        await stream.close()
        response_id = first[0].response.id
        rest = [
            e
            async for e in await oa.responses.retrieve(
                response_id, stream=True, starting_after=first[-1].sequence_number
            )
        ]
        numbers = [e.sequence_number for e in first + rest]
        assert numbers == list(range(len(numbers)))
        final = rest[-1].response
        assert text_of(first + rest) == final.output[0].content[0].text
        # The helper, resuming the same way, filters on its side and still completes.
        async with oa.responses.stream(response_id=response_id, starting_after=5) as resumed:
            tail = [e async for e in resumed]
            assert (await resumed.get_final_response()).id == response_id
        assert tail[0].sequence_number == 6

    async def test_an_idempotency_key_gives_the_same_stream_and_no_second_run(
        self, oa: AsyncOpenAI, native: httpx.AsyncClient, caller: Caller
    ) -> None:
        once = {"Idempotency-Key": "oa-stream-1"}
        streams = []
        for _ in range(2):
            stream = await oa.responses.create(
                model="default", input="hi", stream=True, extra_headers=once
            )
            streams.append([e.to_dict() async for e in stream])
        assert streams[1] == streams[0]
        listed = await native.get("/v1/conversations", headers=caller.headers("alice"))
        assert len(listed.json()["data"]) == 1

    async def test_tool_calls_the_server_ran_are_server_side_items(self, oa: AsyncOpenAI) -> None:
        """A function_call in the output means "the client must run this": a call Atelier
        ran is an mcp_call, done, with its output -- streamed and retrieved alike."""
        response = await oa.responses.create(model="default", input="write notes.md: hello")
        kinds = [item.type for item in response.output]
        assert kinds == ["mcp_call", "message"]
        call = response.output[0]
        assert (call.server_label, call.name, call.status) == ("atelier", "write_file", "completed")
        assert '"notes.md"' in call.arguments
        assert call.output
        streamed = await oa.responses.create(model="default", input="list files", stream=True)
        events = [e async for e in streamed]
        assert "response.function_call_arguments.delta" not in {e.type for e in events}
        final = events[-1].response
        assert [i.type for i in final.output] == ["mcp_call", "message"]
        again = await oa.responses.retrieve(final.id)
        assert [i.type for i in again.output] == ["mcp_call", "message"]

    async def test_an_mcp_tool_call_is_an_mcp_call_item(
        self, oa: AsyncOpenAI, native: httpx.AsyncClient, caller: Caller, crm: McpServerProcess
    ) -> None:
        server = {"name": "crm", "url": crm.url}
        agent = {"name": "support", "tools": [], "mcp_servers": [server]}
        created = await native.post("/v1/agents", json=agent, headers=caller.headers(None))
        assert created.status_code == 201, created.text
        ask = 'call crm__find_customer {"email": "ann@example.com"}'
        async with oa.responses.stream(model="support", input=ask) as stream:
            kinds = [e.type async for e in stream]
            response = await stream.get_final_response()
        call = response.output[0]
        assert (call.type, call.server_label, call.name) == ("mcp_call", "crm", "find_customer")
        assert "Ann Lee" in call.output
        assert "response.mcp_call.completed" in kinds

    async def test_runs_cross_between_the_apis(
        self, app: FastAPI, oa: AsyncOpenAI, native: httpx.AsyncClient, caller: Caller
    ) -> None:
        headers = caller.headers("alice")
        # A response, resumed through the native API's event stream.
        response = await oa.responses.create(model="default", input="hello")
        conversation = await conversation_of(app, response.id)
        run_id = str(uuid.UUID(hex=response.id[5:]))
        events = await native.get(
            f"/v1/conversations/{conversation}/runs/{run_id}/events",
            headers={**headers, "Last-Event-ID": "1"},
        )
        assert "event: run.completed" in events.text
        assert "event: run.started" not in events.text
        # A native run, as a response.
        started = await native.post(
            f"/v1/conversations/{conversation}/runs", json={"input": "again"}, headers=headers
        )
        assert started.status_code == 202, started.text
        native_id = uuid.UUID(started.json()["id"])
        streamed = [
            e async for e in await oa.responses.retrieve(f"resp_{native_id.hex}", stream=True)
        ]
        assert streamed[-1].type == "response.completed"
        assert streamed[-1].response.previous_response_id == response.id
        assert text_of(streamed) == streamed[-1].response.output[0].content[0].text


class TestBackgroundAndChains:
    async def test_a_background_response_is_polled_to_its_end(self, oa: AsyncOpenAI) -> None:
        started = await oa.responses.create(model="default", input="hi there", background=True)
        assert started.status in ("queued", "in_progress", "completed")
        async with asyncio.timeout(20):
            while (got := await oa.responses.retrieve(started.id)).status != "completed":
                await asyncio.sleep(0.05)
        assert got.output_text

    async def test_previous_response_id_continues_the_conversation_and_branches(
        self, app: FastAPI, oa: AsyncOpenAI, native: httpx.AsyncClient, caller: Caller
    ) -> None:
        first = await oa.responses.create(model="default", input="one", instructions="Be brief.")
        assert first.instructions == "Be brief."
        second = await oa.responses.create(
            model="offline", input="two", previous_response_id=first.id
        )
        assert second.previous_response_id == first.id
        conversation = await conversation_of(app, first.id)
        assert await conversation_of(app, second.id) == conversation
        items = await oa.responses.input_items.list(second.id)
        assert [i.content[0].text for i in items.data] == ["two"]
        # From the first again: a branch, in a copy of the conversation up to it.
        branch = await oa.responses.create(
            model="default", input="three", previous_response_id=first.id
        )
        branched = await conversation_of(app, branch.id)
        assert branched != conversation
        stored = await native.get(
            f"/v1/conversations/{branched}/messages", headers=caller.headers("alice")
        )
        assert [m["content"] for m in stored.json()["data"]][::2] == ["one", "three"]

    async def test_input_as_message_items(self, oa: AsyncOpenAI) -> None:
        response = await oa.responses.create(
            model="default",
            instructions="Be brief.",
            input=[
                {"role": "developer", "content": "Answer in English."},
                {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "two "},
                        {"type": "input_text", "text": "parts"},
                    ],
                },
            ],
        )
        assert response.instructions == "Be brief.\n\nAnswer in English."
        items = await oa.responses.input_items.list(response.id)
        assert [i.content[0].text for i in items.data] == ["two parts"]

    async def test_a_response_cancelled_from_another_client(
        self, app: FastAPI, served: str, caller: Caller, oa: AsyncOpenAI
    ) -> None:
        use_tools(app, tools := BlockingTools())
        started = await oa.responses.create(model="default", input="list files", background=True)
        await asyncio.wait_for(tools.entered.wait(), 10)
        cancelled = await sdk(served, caller).responses.cancel(started.id)
        assert cancelled.status == "cancelled"
        assert tools.cancelled.is_set()
        assert (await oa.responses.retrieve(started.id)).status == "cancelled"

    async def test_a_deleted_response_is_gone_with_its_conversation(self, oa: AsyncOpenAI) -> None:
        response = await oa.responses.create(model="default", input="hi")
        await oa.responses.delete(response.id)
        with pytest.raises(openai.NotFoundError):
            await oa.responses.retrieve(response.id)


def raw(event: Any) -> dict[str, Any]:
    """An event as sent: the stream helper adds its snapshots, and parses the response a
    completion carries (compared by its status and items)."""
    if event.type == "response.completed":
        items = [(item.type, getattr(item, "id", None)) for item in event.response.output]
        number, status = event.sequence_number, event.response.status
        return {"type": event.type, "sequence_number": number, "status": status, "items": items}
    return {k: v for k, v in event.to_dict().items() if k not in ("snapshot", "parsed")}


class Told:
    """The offline model, noting the instructions of every call (titles aside)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.provider = model.provider
        self.systems: list[str] = []

    def stream(self, request: Any) -> Any:
        if request.system != TITLE_PROMPT:
            self.systems.append(request.system)
        return self.model.stream(request)


class TestApprovals:
    async def test_a_call_waiting_for_approval_is_an_mcp_approval_request(
        self, app: FastAPI, oa: AsyncOpenAI, native: httpx.AsyncClient, caller: Caller
    ) -> None:
        created = await native.post(
            "/v1/agents",
            json={"name": "careful", "approval": {"require": ["write_*"]}},
            headers=caller.headers(None),
        )
        assert created.status_code == 201, created.text
        providers = app.state.resources.models.providers
        providers["offline"] = told = Told(providers["offline"])
        async with oa.responses.stream(
            model="careful", input="write a.txt: hi", instructions="Mind the files."
        ) as stream:
            first = [raw(e) async for e in stream]
            asked = await stream.get_final_response()
        (request,) = [i for i in asked.output if i.type == "mcp_approval_request"]
        assert (request.name, request.server_label) == ("write_file", "atelier")
        approval = {
            "type": "mcp_approval_response",
            "approval_request_id": request.id,
            "approve": True,
        }
        async with oa.responses.stream(
            model="careful", input=[approval], previous_response_id=asked.id
        ) as stream:
            then = [raw(e) async for e in stream]
            done = await stream.get_final_response()
        assert done.id == asked.id  # the same response (the same run) goes on
        # One numbering across the wait: the response read again from its start gives the
        # events of the first stream, then those of the second, under the same numbers.
        replay = [raw(e) async for e in await oa.responses.retrieve(done.id, stream=True)]
        assert [e["sequence_number"] for e in replay] == list(range(len(replay)))
        assert replay[: len(first)] == first
        assert replay[-(len(then) - 2) :] == then[2:]  # after its created and in_progress
        # Its own instructions held on both sides of the wait (the run was taken up again).
        assert told.systems == ["Mind the files.", "Mind the files."]
        assert [i.type for i in done.output][-2:] == ["mcp_call", "message"]
        read = await native.get(
            f"/v1/conversations/{await _conversation(native, caller, done.id)}/files/a.txt",
            headers=caller.headers("alice"),
        )
        assert read.content == b"hi"


async def _conversation(native: httpx.AsyncClient, caller: Caller, response_id: str) -> str:
    listed = await native.get("/v1/conversations", headers=caller.headers("alice"))
    return str(listed.json()["data"][0]["id"])


WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather where the user is.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
ASK_WEATHER = 'call get_weather {"city": "Paris"}'


class TestFunctionTools:
    """Tools the caller runs: a call is a function_call item that ends the response; the
    next request's function_call_output takes the same run on, as a new response."""

    async def test_a_function_call_is_the_callers_and_its_output_goes_on(
        self, oa: AsyncOpenAI
    ) -> None:
        first = await oa.responses.create(
            model="default",
            input=ASK_WEATHER,
            tools=[WEATHER],  # type: ignore[list-item]
        )
        assert first.status == "completed"
        (call,) = first.output
        assert (call.type, call.name) == ("function_call", "get_weather")
        assert json.loads(call.arguments) == {"city": "Paris"}
        second = await oa.responses.create(
            model="default",
            previous_response_id=first.id,
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
            tools=[WEATHER],  # type: ignore[list-item]
        )
        assert second.id != first.id
        assert second.previous_response_id == first.id
        assert [item.type for item in second.output] == ["message"]
        assert second.output_text
        # Each response keeps its own part of the run.
        assert [i.type for i in (await oa.responses.retrieve(first.id)).output] == ["function_call"]
        assert [i.type for i in (await oa.responses.retrieve(second.id)).output] == ["message"]
        with pytest.raises(openai.NotFoundError):  # no response of the run starts there
            await oa.responses.retrieve(f"{first.id}_1")
        again = {"type": "function_call_output", "call_id": call.call_id, "output": "x"}
        with pytest.raises(openai.ConflictError):  # nothing waits for it any more
            await oa.responses.create(
                model="default",
                previous_response_id=first.id,
                input=[again],  # type: ignore[list-item]
            )

    async def test_streamed_with_server_tools_beside(self, oa: AsyncOpenAI) -> None:
        plan = f"write a.txt: hi\n{ASK_WEATHER}\nread a.txt"
        stream = await oa.responses.create(
            model="default",
            input=plan,
            tools=[WEATHER],
            stream=True,  # type: ignore[list-item]
        )
        events = [e async for e in stream]
        kinds = [e.type for e in events]
        assert "response.function_call_arguments.done" in kinds
        assert kinds[-1] == "response.completed"
        first = events[-1].response
        assert [i.type for i in first.output] == ["mcp_call", "function_call"]
        call = first.output[1]
        stream = await oa.responses.create(
            model="default",
            previous_response_id=first.id,
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "rain"}],
            stream=True,
        )
        events = [e async for e in stream]
        second = events[-1].response
        assert events[-1].type == "response.completed"
        # The read the server ran after the caller's result; no function call again.
        assert [i.type for i in second.output] == ["mcp_call", "message"]
        assert second.output[0].name == "read_file"
        assert second.output[0].output == "hi"


class TestHistoryInTheInput:
    """Clients that keep the conversation themselves (the AI SDK without
    previousResponseId, the Agents SDK's to_input_list, LangChain) send it whole."""

    async def test_a_history_starts_a_conversation_that_holds_it(
        self, oa: AsyncOpenAI, native: httpx.AsyncClient, caller: Caller, app: FastAPI
    ) -> None:
        history = [
            {"role": "user", "content": "my name is Ann"},
            {"role": "assistant", "content": "hello Ann"},
            {"role": "user", "content": "what is my name?"},
        ]
        response = await oa.responses.create(model="default", input=history)  # type: ignore[arg-type]
        assert response.status == "completed"
        assert response.output_text
        conversation = await conversation_of(app, response.id)
        stored = (
            await native.get(f"/v1/conversations/{conversation}/messages", headers=caller.headers())
        ).json()["data"]
        assert [(m["role"], m["content"]) for m in stored[:3]] == [
            ("user", "my name is Ann"),
            ("assistant", "hello Ann"),
            ("user", "what is my name?"),
        ]
        assert stored[3]["role"] == "assistant"
        # The same history again with previous_response_id is the same conversation...
        said = [*history, {"role": "assistant", "content": stored[3]["content"]}]
        later = await oa.responses.create(
            model="default",
            previous_response_id=response.id,
            input=[*said, {"role": "user", "content": "thanks"}],  # type: ignore[list-item]
        )
        assert later.previous_response_id == response.id
        # ... and another history with it is refused, by name.
        with pytest.raises(openai.ConflictError) as refused:
            await oa.responses.create(
                model="default",
                previous_response_id=response.id,
                input=[{"role": "user", "content": "something else"}, *history[1:]],  # type: ignore[list-item]
            )
        assert refused.value.code == "history_mismatch"

    async def test_function_outputs_with_the_history_resent_take_the_run_on(
        self, oa: AsyncOpenAI
    ) -> None:
        """The Agents SDK's loop: no previous_response_id, the whole input again with the
        function call and its output at the end."""
        asked = {"role": "user", "content": ASK_WEATHER}
        first = await oa.responses.create(
            model="default",
            input=[asked],
            tools=[WEATHER],  # type: ignore[list-item]
        )
        (call,) = first.output
        second = await oa.responses.create(
            model="default",
            input=[  # type: ignore[list-item]
                asked,
                call.model_dump(exclude_none=True),
                {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
            ],
            tools=[WEATHER],  # type: ignore[list-item]
        )
        assert second.previous_response_id == first.id
        assert [item.type for item in second.output] == ["message"]

    async def test_earlier_tool_turns_in_a_history_are_kept(
        self, oa: AsyncOpenAI, native: httpx.AsyncClient, caller: Caller, app: FastAPI
    ) -> None:
        earlier = [
            {"role": "user", "content": "weather?"},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": '{"city": "Paris"}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            {"role": "assistant", "content": "It is sunny."},
            {"role": "user", "content": "thanks"},
        ]
        response = await oa.responses.create(
            model="default",
            input=earlier,
            tools=[WEATHER],  # type: ignore[arg-type, list-item]
        )
        assert response.status == "completed"
        conversation = await conversation_of(app, response.id)
        stored = (
            await native.get(f"/v1/conversations/{conversation}/messages", headers=caller.headers())
        ).json()["data"]
        assert [m["role"] for m in stored] == [
            "user",
            "assistant",
            "tool",
            "assistant",
            "user",
            "assistant",
        ]
        assert stored[1]["parts"][0]["name"] == "get_weather"
        assert stored[2]["parts"][0]["content"] == "sunny"


class TestErrorsInOpenAIsShape:
    """OpenAI's clients read {"error": {"message", "type", "param", "code"}}: what they
    show is what Atelier said, with its stable code."""

    async def test_a_refusal_reads_as_openai_reads_errors(
        self, oa: AsyncOpenAI, served: str, caller: Caller
    ) -> None:
        with pytest.raises(openai.BadRequestError) as unknown:
            await oa.responses.create(model="no-such-model", input="hi")
        assert unknown.value.code == "unknown_model"
        assert "no-such-model" in unknown.value.message
        assert unknown.value.type == "invalid_request_error"
        with pytest.raises(openai.UnprocessableEntityError) as invalid:
            await oa.responses.create(model="default", input="hi", user="bob smith")
        assert (invalid.value.code, invalid.value.param) == ("validation_error", "user")
        assert "user" in invalid.value.message
        stranger = AsyncOpenAI(base_url=f"{served}/openai/v1", api_key="atl_not_a_key")
        with pytest.raises(openai.AuthenticationError) as refused:
            await stranger.responses.create(model="default", input="hi")
        assert refused.value.type == "authentication_error"
        assert refused.value.code
        await stranger.close()
        # The native API keeps problem+json.
        async with httpx.AsyncClient(base_url=served) as http:
            native = await http.get("/v1/conversations/nope", headers=caller.headers())
        assert native.headers["content-type"] == "application/problem+json"

    async def test_a_stream_that_breaks_ends_with_openais_error_event(
        self, oa: AsyncOpenAI, app: FastAPI, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from atelier.runs import MessageDelta, Numbered

        async def breaks(run_id, after):  # type: ignore[no-untyped-def]
            yield [Numbered(1, MessageDelta(text="a"))]
            raise RuntimeError("the follower broke")

        monkeypatch.setattr(app.state.resources.runs, "events", breaks)
        stream = await oa.responses.create(model="default", input="hi", stream=True)
        events = [event async for event in stream]
        last = events[-1]
        assert (last.type, last.code) == ("error", "stream_failed")
        numbers = [event.sequence_number for event in events]
        assert numbers == list(range(len(events)))  # numbered on, no gap


class TestRefusals:
    async def test_what_cannot_be_honoured_is_refused_clearly(
        self, oa: AsyncOpenAI, served: str, caller: Caller, app: FastAPI
    ) -> None:
        for tool in (
            {"type": "web_search"},  # only function tools: the agent's tools are its own
            {"type": "function", "name": "write_file", "parameters": {"type": "object"}},
        ):
            with pytest.raises(openai.UnprocessableEntityError):
                await oa.responses.create(model="default", input="hi", tools=[tool])  # type: ignore[list-item]
        with pytest.raises(openai.UnprocessableEntityError):
            await oa.responses.create(model="default", input="hi", store=False)
        with pytest.raises(openai.BadRequestError):
            await oa.responses.create(model="no-such-model", input="hi")
        with pytest.raises(openai.UnprocessableEntityError):  # PostgreSQL text holds no NUL
            await oa.responses.create(model="de\x00fault", input="hi")
        for user in ("bob smith", "bob\n", "b\u00f6b", "x" * 129):  # as X-User-ID refuses
            with pytest.raises(openai.UnprocessableEntityError):
                await oa.responses.create(model="default", input="hi", user=user)
        mine = await oa.responses.create(model="default", input="hi")
        with pytest.raises(openai.NotFoundError):
            await sdk(served, caller, user="bob").responses.retrieve(mine.id)
        with pytest.raises(openai.NotFoundError):
            await sdk(served, await make_caller(app)).responses.retrieve(mine.id)
        with pytest.raises(openai.NotFoundError):
            await oa.responses.retrieve("resp_not-a-run")

    async def test_a_refused_response_leaves_no_conversation_behind(
        self, oa: AsyncOpenAI, native: httpx.AsyncClient, caller: Caller
    ) -> None:
        spent = {"scope": "tenant", "period": "day", "limit": "0"}
        assert (
            await native.post("/v1/budgets", json=spent, headers=caller.headers(None))
        ).is_success
        with pytest.raises(openai.APIStatusError) as refused:
            await oa.responses.create(model="default", input="hi")
        assert refused.value.status_code == 402
        listed = await native.get("/v1/conversations", headers=caller.headers("alice"))
        assert listed.json()["data"] == []
