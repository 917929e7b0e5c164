"""The LangGraph API as the official ``langgraph-sdk`` client sees it, over a real socket,
on both backends: the same runs as ``/v1``, streamed, resumed, cancelled, waited on."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.errors import ConflictError, NotFoundError, UnprocessableEntityError

from tests.compat.conftest import opened
from tests.conftest import Caller, make_caller
from tests.runs.helpers import BlockingTools, use_tools
from tests.webhooks.receiver import receiving

LONG = " ".join(f"word{i}" for i in range(60))
MODES = ["values", "messages-tuple", "updates"]


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    # Replies stream word by word at a pace a client can drop out of mid-stream.
    return {
        "offline_model_delay_seconds": 0.01,
        "webhook_allow_private": True,
        "webhook_poll_seconds": 0.05,
    }


def sdk(url: str, caller: Caller, user: str = "alice") -> LangGraphClient:
    """The SDK as a frontend configures it: its API key, and the end user's id."""
    client = get_client(url=f"{url}/langgraph", api_key=caller.key, headers={"X-User-ID": user})
    return opened(client)


@pytest.fixture
def lg(served: str, caller: Caller) -> LangGraphClient:
    return sdk(served, caller)


def said(parts: list[Any]) -> str:
    """The reply's text as the ``messages-tuple`` chunks streamed it."""
    return "".join(
        p.data[0]["content"]
        for p in parts
        if p.event == "messages" and p.data[0]["type"] == "AIMessageChunk"
    )


async def careful(native: httpx.AsyncClient, caller: Caller) -> httpx.Response:
    """An agent whose writes wait for a person's approval."""
    made = await native.post(
        "/v1/agents",
        json={"name": "careful", "approval": {"require": ["write_*"]}},
        headers=caller.headers(None),
    )
    assert made.status_code == 201, made.text
    return made


def ask(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


class CuttingProxy:
    """A TCP proxy in front of the server that cuts the first connection carrying
    ``count`` SSE frames of ``marker``, as a proxy timeout or a restart would."""

    def __init__(self, upstream: str, marker: bytes, count: int) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.marker, self.count = marker, count
        self.cut = False

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *_: object) -> None:
        self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)

        async def to_server() -> None:
            while data := await reader.read(65536):
                up_writer.write(data)
                await up_writer.drain()
            up_writer.close()

        async def to_client() -> None:
            seen = b""
            while data := await up_reader.read(65536):
                writer.write(data)
                await writer.drain()
                if not self.cut:
                    seen += data
                    if seen.count(self.marker) >= self.count:
                        self.cut = True
                        writer.transport.abort()
                        up_writer.close()
                        return
            writer.close()

        await asyncio.gather(to_server(), to_client(), return_exceptions=True)


class TestStreaming:
    async def test_a_run_streams_its_metadata_chunks_updates_and_values(
        self, lg: LangGraphClient, native: httpx.AsyncClient, caller: Caller
    ) -> None:
        thread = await lg.threads.create(metadata={"project": "x"})
        parts = [
            part
            async for part in lg.runs.stream(
                thread["thread_id"], "default", input=ask(LONG), stream_mode=MODES
            )
        ]
        assert parts[0].event == "metadata"
        run_id = parts[0].data["run_id"]
        final = [p for p in parts if p.event == "values"][-1].data["messages"]
        assert [m["type"] for m in final] == ["human", "ai"]
        assert final[0]["content"] == LONG
        reply = final[1]
        assert said(parts) == reply["content"]
        assert reply["content"]
        # Every chunk names the message it becomes.
        chunk_ids = {p.data[0]["id"] for p in parts if p.event == "messages"}
        assert chunk_ids == {reply["id"]}
        updates = [p.data for p in parts if p.event == "updates"]
        assert updates == [{"agent": {"messages": [reply]}}]
        # Ids number the frames, for Last-Event-ID.
        ids = [int(p.id) for p in parts]
        assert ids == list(range(1, len(parts) + 1))

        # The same run, through the SDK's other calls and through the native API.
        run = await lg.runs.get(thread["thread_id"], run_id)
        assert run["status"] == "success"
        assert [r["run_id"] for r in await lg.runs.list(thread["thread_id"])] == [run_id]
        state = await lg.threads.get_state(thread["thread_id"])
        assert state["values"]["messages"] == final
        assert state["next"] == []
        got = await lg.threads.get(thread["thread_id"])
        assert got["status"] == "idle"
        # Its own metadata, and what ran on it (as the LangGraph server tags threads).
        assert got["metadata"] == {
            "project": "x",
            "graph_id": "default",
            "assistant_id": (await lg.assistants.get("default"))["assistant_id"],
        }
        headers = caller.headers("alice")
        stored = await native.get(
            f"/v1/conversations/{thread['thread_id']}/messages", headers=headers
        )
        assert [m["content"] for m in stored.json()["data"]] == [LONG, reply["content"]]
        as_native = await native.get(
            f"/v1/conversations/{thread['thread_id']}/runs/{run_id}", headers=headers
        )
        assert as_native.json()["status"] == "completed"
        # ... and resumable there, after any of its native events.
        resumed = await native.get(
            f"/v1/conversations/{thread['thread_id']}/runs/{run_id}/events",
            headers={**headers, "Last-Event-ID": "1"},
        )
        assert "event: run.completed" in resumed.text
        assert "event: run.started" not in resumed.text

    async def test_a_reconnect_with_the_last_event_id_repeats_and_misses_nothing(
        self, lg: LangGraphClient
    ) -> None:
        thread = await lg.threads.create()
        first: list[Any] = []
        async for part in lg.runs.stream(
            thread["thread_id"], "default", input=ask(LONG), stream_mode=MODES
        ):
            first.append(part)
            if sum(p.event == "messages" for p in first) == 3:
                break  # the client drops out mid-reply
        run_id = first[0].data["run_id"]
        rest = [
            part
            async for part in lg.runs.join_stream(
                thread["thread_id"], run_id, stream_mode=MODES, last_event_id=first[-1].id
            )
        ]
        ids = [int(p.id) for p in first + rest]
        assert ids == list(range(1, len(ids) + 1))  # none twice, none skipped
        final = [p for p in rest if p.event == "values"][-1].data["messages"][-1]
        assert said(first + rest) == final["content"]
        assert len(said(first)) < len(final["content"])

    async def test_the_sdk_reconnects_by_itself_when_the_connection_is_cut(
        self, served: str, caller: Caller
    ) -> None:
        proxy = CuttingProxy(served, b"event: messages", 3)
        async with proxy as proxied:
            lg = sdk(proxied, caller)
            thread = await lg.threads.create()
            parts = [
                part
                async for part in lg.runs.stream(
                    thread["thread_id"], "default", input=ask(LONG), stream_mode=MODES
                )
            ]
        # The SDK saw the connection drop, asked the run, and followed the Location with
        # its Last-Event-ID: every frame once, in order, and the whole reply.
        assert proxy.cut
        ids = [int(p.id) for p in parts]
        assert ids == list(range(1, len(ids) + 1))
        final = [p for p in parts if p.event == "values"][-1].data["messages"][-1]
        assert said(parts) == final["content"]

    async def test_an_idempotency_key_gives_the_same_stream_and_no_second_run(
        self, lg: LangGraphClient
    ) -> None:
        thread = await lg.threads.create()
        once = {"Idempotency-Key": "lg-stream-1"}
        streams = []
        for _ in range(2):
            parts = lg.runs.stream(
                thread["thread_id"], "default", input=ask("hi"), stream_mode=MODES, headers=once
            )
            streams.append([(p.id, p.event, p.data) async for p in parts])
        first, again = streams
        assert again == first
        assert len(await lg.runs.list(thread["thread_id"])) == 1

    async def test_a_run_started_natively_is_joined_through_the_sdk(
        self, lg: LangGraphClient, native: httpx.AsyncClient, caller: Caller
    ) -> None:
        thread = await lg.threads.create()
        started = await native.post(
            f"/v1/conversations/{thread['thread_id']}/runs",
            json={"input": "hello"},
            headers=caller.headers("alice"),
        )
        assert started.status_code == 202, started.text
        run_id = started.json()["id"]
        parts = [
            p
            async for p in lg.runs.join_stream(
                thread["thread_id"], run_id, stream_mode="messages-tuple"
            )
        ]
        state = await lg.threads.get_state(thread["thread_id"])
        assert said(parts) == state["values"]["messages"][-1]["content"]
        assert (await lg.runs.join(thread["thread_id"], run_id))["messages"][-1]["type"] == "ai"


class TestBackgroundAndCancel:
    async def test_a_run_may_create_its_thread(self, lg: LangGraphClient) -> None:
        thread_id = str(uuid.uuid4())
        values = await lg.runs.wait(thread_id, "default", input=ask("hi"), if_not_exists="create")
        assert [m["type"] for m in values["messages"]] == ["human", "ai"]
        assert (await lg.threads.get(thread_id))["thread_id"] == thread_id
        with pytest.raises(NotFoundError):  # without it, a missing thread is missing
            await lg.runs.create(str(uuid.uuid4()), "default", input=ask("hi"))

    async def test_a_background_run_is_waited_for_and_its_values_returned(
        self, lg: LangGraphClient
    ) -> None:
        thread = await lg.threads.create()
        run = await lg.runs.create(thread["thread_id"], "default", input=ask("hi there"))
        assert run["status"] in ("pending", "running")
        values = await lg.runs.join(thread["thread_id"], run["run_id"])
        assert [m["type"] for m in values["messages"]] == ["human", "ai"]
        waited = await lg.runs.wait(thread["thread_id"], "default", input=ask("again"))
        assert [m["type"] for m in waited["messages"]] == ["human", "ai", "human", "ai"]
        assert (await lg.runs.get(thread["thread_id"], run["run_id"]))["status"] == "success"

    async def test_a_run_cancelled_from_another_client_ends_interrupted(
        self, app: FastAPI, served: str, caller: Caller, lg: LangGraphClient
    ) -> None:
        use_tools(app, tools := BlockingTools())
        thread = await lg.threads.create()
        run = await lg.runs.create(thread["thread_id"], "default", input=ask("list files"))
        await asyncio.wait_for(tools.entered.wait(), 10)
        # Busy: another run is refused, as LangGraph refuses it, unless it may wait.
        with pytest.raises(ConflictError):
            await lg.runs.create(thread["thread_id"], "default", input=ask("more"))
        queued = await lg.runs.create(
            thread["thread_id"], "default", input=ask("later"), multitask_strategy="enqueue"
        )
        assert queued["status"] == "pending"
        assert (await lg.threads.get(thread["thread_id"]))["status"] == "busy"

        other = sdk(served, caller)
        await other.runs.cancel(thread["thread_id"], run["run_id"], wait=True)
        assert tools.cancelled.is_set()
        assert (await lg.runs.get(thread["thread_id"], run["run_id"]))["status"] == "interrupted"
        tools.release.set()
        done = await lg.runs.join(thread["thread_id"], queued["run_id"])
        assert done["messages"][-1]["type"] == "ai"

    async def test_a_run_webhook_hears_of_its_end(self, lg: LangGraphClient) -> None:
        async with receiving() as receiver:
            thread = await lg.threads.create()
            await lg.runs.wait(
                thread["thread_id"], "default", input=ask("hi"), webhook=receiver.url
            )
            (got,) = await receiver.wait_for(1)
        import json

        body = json.loads(got.body)
        assert body["type"] == "run.completed"
        assert body["data"]["conversation_id"] == thread["thread_id"]


class TestInterrupts:
    async def test_a_call_that_needs_approval_interrupts_and_a_resume_goes_on(
        self, lg: LangGraphClient, native: httpx.AsyncClient, caller: Caller
    ) -> None:
        agent = await careful(native, caller)
        (assistant,) = await lg.assistants.search(graph_id="careful")
        assert assistant["assistant_id"] == agent.json()["id"]
        thread = await lg.threads.create()
        parts = [
            p
            async for p in lg.runs.stream(
                thread["thread_id"], "careful", input=ask("write a.txt: hi"), stream_mode=MODES
            )
        ]
        run_id = parts[0].data["run_id"]
        (interrupt,) = parts[-1].data["__interrupt__"]
        request = interrupt["value"]["action_requests"][0]
        assert (request["name"], request["args"]) == (
            "write_file",
            {"path": "a.txt", "content": "hi"},
        )
        state = await lg.threads.get_state(thread["thread_id"])
        assert [i["id"] for i in state["interrupts"]] == [interrupt["id"]]
        assert (await lg.threads.get(thread["thread_id"]))["status"] == "interrupted"

        resumed = [
            p
            async for p in lg.runs.stream(
                thread["thread_id"],
                "careful",
                command={"resume": {"decisions": [{"type": "approve"}]}},
                stream_mode=MODES,
            )
        ]
        assert resumed[0].data["run_id"] == run_id  # the same run goes on
        # One numbering across the wait: the whole run read again from its start gives the
        # frames the first stream gave, then those the resume gave, under the same ids.
        replay = [
            (p.id, p.event, p.data)
            async for p in lg.runs.join_stream(thread["thread_id"], run_id, stream_mode=MODES)
        ]
        before = [(p.id, p.event, p.data) for p in parts]
        after = [(p.id, p.event, p.data) for p in resumed[1:]]
        assert replay[: len(before)] == before
        assert replay[-len(after) :] == after
        final = [p for p in resumed if p.event == "values"][-1].data["messages"]
        assert [m["type"] for m in final] == ["human", "ai", "tool", "ai"]
        assert final[2]["status"] == "success"
        assert (await lg.runs.get(thread["thread_id"], run_id))["status"] == "success"
        read = await native.get(
            f"/v1/conversations/{thread['thread_id']}/files/a.txt",
            headers=caller.headers("alice"),
        )
        assert read.content == b"hi"

    async def test_a_denied_call_is_not_made(
        self, lg: LangGraphClient, native: httpx.AsyncClient, caller: Caller
    ) -> None:
        await careful(native, caller)
        thread = await lg.threads.create()
        async for _ in lg.runs.stream(thread["thread_id"], "careful", input=ask("write a.txt: hi")):
            pass
        nul = {"resume": {"type": "reject", "message": "no\x00"}}  # PostgreSQL holds no NUL
        with pytest.raises(httpx.HTTPStatusError) as bad:
            await lg.runs.wait(thread["thread_id"], "careful", command=nul)
        assert bad.value.response.status_code == 422
        values = await lg.runs.wait(thread["thread_id"], "careful", command={"resume": "reject"})
        assert values["messages"][2]["status"] == "error"
        with pytest.raises(httpx.HTTPStatusError) as refused:  # nothing waits any more
            await lg.runs.wait(thread["thread_id"], "careful", command={"resume": "approve"})
        assert refused.value.response.status_code == 409


class TestToolsTheFrontendRuns:
    async def test_a_client_tool_call_is_an_interrupt_resumed_with_its_output(
        self, lg: LangGraphClient
    ) -> None:
        weather = {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
        thread = await lg.threads.create()
        values = await lg.runs.wait(
            thread["thread_id"],
            "default",
            input=ask('call get_weather {"city": "Nice"}'),
            context={"client_tools": [weather]},
        )
        (interrupt,) = values["__interrupt__"]
        assert interrupt["value"] == {
            "type": "tool_call",
            "name": "get_weather",
            "args": {"city": "Nice"},
            "id": interrupt["id"],
        }
        assert (await lg.threads.get(thread["thread_id"]))["status"] == "interrupted"
        with pytest.raises(httpx.HTTPStatusError) as refused:  # a decision is no output
            await lg.runs.wait(thread["thread_id"], "default", command={"resume": "approve"})
        assert refused.value.response.json()["code"] == "invalid_resume"
        done = await lg.runs.wait(
            thread["thread_id"], "default", command={"resume": {interrupt["id"]: "sunny"}}
        )
        assert "__interrupt__" not in done
        tool = [m for m in done["messages"] if m["type"] == "tool"]
        assert [m["content"] for m in tool] == ["sunny"]
        assert done["messages"][-1]["type"] == "ai"


class TestWhatClientsSend:
    """What the SDKs (and RemoteGraph, useStream) really send, accepted as they send it."""

    async def test_join_stream_without_stream_mode_and_a_last_event_id_of_minus_one(
        self, lg: LangGraphClient, served: str, caller: Caller
    ) -> None:
        thread = await lg.threads.create()
        run = await lg.runs.create(thread["thread_id"], "default", input=ask("hello"))
        # The Python SDK sends `stream_mode=` (empty) when it is given none.
        joined = [p async for p in lg.runs.join_stream(thread["thread_id"], run["run_id"])]
        assert joined[-1].event == "values"
        # useStream's joinStream sends `Last-Event-ID: -1` when it has seen nothing.
        path = f"{served}/langgraph/threads/{thread['thread_id']}/runs/{run['run_id']}/stream"
        async with httpx.AsyncClient() as http:
            again = await http.get(path, headers={**caller.headers("alice"), "Last-Event-ID": "-1"})
        assert again.status_code == 200, again.text
        assert again.text.startswith("id: 1\nevent: metadata")  # from the very start

    async def test_a_command_with_an_empty_goto_resumes_and_a_real_goto_is_refused_by_name(
        self, lg: LangGraphClient, native: httpx.AsyncClient, served: str, caller: Caller
    ) -> None:
        await careful(native, caller)
        thread = await lg.threads.create()
        await lg.runs.wait(thread["thread_id"], "careful", input=ask("write a.txt: hi"))
        path = f"{served}/langgraph/threads/{thread['thread_id']}/runs/wait"
        async with httpx.AsyncClient(timeout=30) as http:
            elsewhere = {
                "assistant_id": "careful",
                "command": {"goto": "tools", "resume": "approve"},
            }
            refused = await http.post(path, json=elsewhere, headers=caller.headers("alice"))
            assert refused.status_code == 422
            assert "goto" in refused.text
            # RemoteGraph's Command(resume=...): goto always sent, empty.
            remote = {"assistant_id": "careful", "command": {"resume": "approve", "goto": []}}
            resumed = await http.post(path, json=remote, headers=caller.headers("alice"))
        assert resumed.status_code == 200, resumed.text
        assert resumed.json()["messages"][2]["status"] == "success"

    async def test_the_tools_mode_tells_each_calls_start_and_end(
        self, lg: LangGraphClient, served: str, caller: Caller
    ) -> None:
        """useStream adds ``tools`` when the UI shows tool progress."""
        thread = await lg.threads.create()
        parts = [
            p
            async for p in lg.runs.stream(
                thread["thread_id"],
                "default",
                input=ask("write a.txt: hi\nread nope.txt"),
                stream_mode=["tools"],
            )
        ]
        told = [p.data for p in parts if p.event == "tools"]
        assert [t["event"] for t in told] == [
            "on_tool_start",
            "on_tool_end",
            "on_tool_start",
            "on_tool_error",
        ]
        assert told[0]["name"] == "write_file"
        assert told[0]["input"] == {"path": "a.txt", "content": "hi"}
        assert told[1]["toolCallId"] == told[0]["toolCallId"]
        assert told[3]["error"]["message"]
        with pytest.raises(UnprocessableEntityError):  # refused by name, not ignored
            async for _ in lg.runs.stream(
                thread["thread_id"], "default", input=ask("hi"), stream_mode=["events"]
            ):
                pass

    async def test_state_at_the_present_checkpoint_and_a_clear_refusal_for_others(
        self, lg: LangGraphClient, served: str, caller: Caller
    ) -> None:
        thread = await lg.threads.create()
        await lg.runs.wait(thread["thread_id"], "default", input=ask("hello"))
        present = await lg.threads.get_state(thread["thread_id"])
        checkpoint = present["checkpoint"]["checkpoint_id"]
        at = await lg.threads.get_state(thread["thread_id"], checkpoint_id=checkpoint)
        assert at["values"] == present["values"]
        with pytest.raises(NotFoundError):
            await lg.threads.get_state(thread["thread_id"], checkpoint_id="seq-0")
        # RemoteGraph's get_state posts the checkpoint it names.
        path = f"{served}/langgraph/threads/{thread['thread_id']}/state/checkpoint"
        async with httpx.AsyncClient() as http:
            posted = await http.post(
                path,
                json={"checkpoint": {"checkpoint_id": checkpoint}, "subgraphs": False},
                headers=caller.headers("alice"),
            )
        assert posted.status_code == 200, posted.text
        assert posted.json()["values"] == present["values"]
        with pytest.raises(NotFoundError):  # a thread's state changes through its runs
            await lg.threads.update_state(thread["thread_id"], {"messages": []})

    async def test_threads_are_tagged_with_what_runs_on_them(self, lg: LangGraphClient) -> None:
        """Agent Chat UI lists a graph's threads by metadata."""
        thread = await lg.threads.create()
        await lg.runs.wait(thread["thread_id"], "default", input=ask("hello"))
        (found,) = await lg.threads.search(metadata={"graph_id": "default"})
        assert found["thread_id"] == thread["thread_id"]
        assert (
            found["metadata"]["assistant_id"]
            == (await lg.assistants.get("default"))["assistant_id"]
        )
        assert await lg.threads.search(metadata={"graph_id": "another"}) == []


class TestRefusals:
    async def test_what_cannot_be_honoured_is_refused_clearly(
        self, lg: LangGraphClient, served: str, caller: Caller
    ) -> None:
        thread = await lg.threads.create()
        with pytest.raises(NotFoundError):
            await lg.runs.create(thread["thread_id"], "no-such-agent", input=ask("hi"))
        with pytest.raises(NotFoundError):
            await lg.threads.get(str(uuid.uuid4()))
        with pytest.raises(UnprocessableEntityError):
            await lg.runs.create(
                thread["thread_id"], "default", input=ask("hi"), interrupt_before=["tools"]
            )
        with pytest.raises(UnprocessableEntityError):
            await lg.runs.create(thread["thread_id"], "default", input={"messages": []})
        response = await httpx.AsyncClient().post(
            f"{served}/langgraph/threads/{thread['thread_id']}/runs/stream",
            json={"assistant_id": "default", "input": ask("hi"), "stream_mode": ["debug"]},
            headers=caller.headers("alice"),
        )
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "unsupported_stream_mode"
        # What the fuzzer found: text PostgreSQL cannot hold, a webhook that is no URL.
        # And webhooks one URL parser reads as loopback and the sending client refuses.
        for hostile in (
            {"assistant_id": "de\x00fault"},
            {"webhook": "not a url"},
            {"webhook": "http://127.000.000.001:8080/h"},
            {"webhook": "http://0177.0.0.1/h"},
        ):
            with pytest.raises(UnprocessableEntityError):
                await lg.runs.create(
                    thread["thread_id"],
                    **{"assistant_id": "default", "input": ask("hi"), **hostile},
                )

    async def test_another_user_sees_no_thread_of_alice(
        self, lg: LangGraphClient, served: str, caller: Caller, app: FastAPI
    ) -> None:
        thread = await lg.threads.create()
        bob = sdk(served, caller, user="bob")
        with pytest.raises(NotFoundError):
            await bob.threads.get(thread["thread_id"])
        with pytest.raises(NotFoundError):
            await bob.runs.create(thread["thread_id"], "default", input=ask("hi"))
        assert await bob.threads.search() == []
        stranger = sdk(served, await make_caller(app))
        with pytest.raises(NotFoundError):
            await stranger.threads.get_state(thread["thread_id"])

    async def test_a_thread_id_held_elsewhere_answers_as_a_free_one(
        self, lg: LangGraphClient, served: str, caller: Caller, app: FastAPI
    ) -> None:
        """Thread ids are the client's to choose: one another tenant or user holds is free
        here, and nothing of theirs is seen or touched through it."""
        chosen = str(uuid.uuid4())
        mine = await lg.threads.create(thread_id=chosen, metadata={"who": "alice"})
        await lg.runs.wait(chosen, "default", input=ask("alice here"))
        with pytest.raises(ConflictError):  # a thread of one's own is taken, as ever
            await lg.threads.create(thread_id=chosen)
        again = await lg.threads.create(thread_id=chosen, if_exists="do_nothing")
        assert again["metadata"]["who"] == mine["metadata"]["who"] == "alice"

        bob = sdk(served, caller, user="bob")
        stranger = sdk(served, await make_caller(app))
        theirs = await bob.threads.create(thread_id=chosen, metadata={"who": "bob"})
        assert theirs["thread_id"] == chosen
        assert theirs["values"] == {"messages": []}
        run = await stranger.runs.create(
            chosen, "default", input=ask("stranger here"), if_not_exists="create"
        )
        assert run["thread_id"] == chosen
        await stranger.runs.join(chosen, run["run_id"])
        parts = [
            p
            async for p in stranger.runs.stream(
                chosen, "default", input=ask("again"), stream_mode="messages-tuple"
            )
        ]
        assert {p.data[1]["thread_id"] for p in parts if p.event == "messages"} == {chosen}
        said_there = (await stranger.threads.get_state(chosen))["values"]["messages"]
        assert [m["content"] for m in said_there if m["type"] == "human"] == [
            "stranger here",
            "again",
        ]
        assert [t["thread_id"] for t in await stranger.threads.search()] == [chosen]

        await stranger.threads.delete(chosen)
        await bob.threads.delete(chosen)
        state = await lg.threads.get_state(chosen)
        assert [m["content"] for m in state["values"]["messages"] if m["type"] == "human"] == [
            "alice here"
        ]
        assert state["checkpoint"]["thread_id"] == chosen
        assert [r["thread_id"] for r in await lg.runs.list(chosen)] == [chosen]


class TestRemoteGraph:
    """langgraph's RemoteGraph, unmodified: invoke, stream, get_state, and an interrupt
    resumed with Command(resume=...)."""

    def remote(self, served: str, caller: Caller, graph: str = "default") -> Any:
        from langgraph.pregel.remote import RemoteGraph

        return RemoteGraph(
            graph, url=f"{served}/langgraph", api_key=caller.key, headers={"X-User-ID": "alice"}
        )

    async def test_invoke_stream_and_state(self, served: str, caller: Caller) -> None:
        remote = self.remote(served, caller)
        config = {"configurable": {"thread_id": str(uuid.uuid4())}}
        values = await remote.ainvoke(ask("hello there"), config)
        assert [m["type"] for m in values["messages"]] == ["human", "ai"]
        chunks = [c async for c in remote.astream(ask("again"), config, stream_mode="values")]
        assert [m["type"] for m in chunks[-1]["messages"]] == ["human", "ai", "human", "ai"]
        state = await remote.aget_state(config)
        assert state.values["messages"] == chunks[-1]["messages"]

    async def test_an_interrupt_is_resumed_with_a_command(
        self, served: str, caller: Caller, native: httpx.AsyncClient
    ) -> None:
        from langgraph.types import Command

        await careful(native, caller)
        remote = self.remote(served, caller, "careful")
        config = {"configurable": {"thread_id": str(uuid.uuid4())}}
        waiting = await remote.ainvoke(ask("write a.txt: hi"), config)
        (interrupt,) = waiting["__interrupt__"]
        assert interrupt["value"]["action_requests"][0]["name"] == "write_file"
        done = await remote.ainvoke(Command(resume={"decisions": [{"type": "approve"}]}), config)
        assert "__interrupt__" not in done
        assert done["messages"][-1]["type"] == "ai"
        assert any(m["type"] == "tool" and "wrote" in m["content"] for m in done["messages"])
