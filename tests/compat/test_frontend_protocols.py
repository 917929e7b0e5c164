"""The AI SDK's and AG-UI's endpoints over a real socket, on both backends: the wire details
their clients rely on, and every refusal a clear error in problem+json (their clients show
the body's text), never a 500. The clients themselves: tests/js/ai_sdk_ui.mjs, ag_ui.mjs."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import Caller


def user(text: str) -> dict[str, Any]:
    return {"id": uuid.uuid4().hex, "role": "user", "parts": [{"type": "text", "text": text}]}


def chunks(body: str) -> list[Any]:
    found = []
    for block in body.split("\n\n"):
        if block.startswith("data: "):
            data = block.removeprefix("data: ")
            found.append(data if data == "[DONE]" else json.loads(data))
    return found


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"offline_model_delay_seconds": 0.001}


class TestAiSdk:
    async def test_a_reply_is_one_message_of_typed_chunks_then_done(
        self, tcp: httpx.AsyncClient, caller: Caller
    ) -> None:
        answer = await tcp.post(
            "/ai-sdk/chat",
            json={"id": "c1", "messages": [user("hello")], "trigger": "submit-message"},
            headers=caller.headers(),
        )
        assert answer.status_code == 200
        assert answer.headers["x-vercel-ai-ui-message-stream"] == "v1"
        assert answer.headers["content-type"].startswith("text/event-stream")
        found = chunks(answer.text)
        types = [c["type"] for c in found[:-1]]
        assert types[:3] == ["start", "start-step", "text-start"]
        assert types[-4:] == ["text-end", "finish-step", "message-metadata", "finish"]
        assert found[-1] == "[DONE]"
        assert found[-2] == {"type": "finish", "finishReason": "stop"}
        text = "".join(c["delta"] for c in found[:-1] if c["type"] == "text-delta")
        assert text.startswith("You said: hello.")
        # The message's id is the one the stored history gives it.
        stored = await tcp.get("/ai-sdk/chat/c1/messages", headers=caller.headers())
        assert stored.json()[-1]["id"] == found[0]["messageId"]
        # Nothing streams now: the SDK's resume gets its 204.
        resumed = await tcp.get("/ai-sdk/chat/c1/stream", headers=caller.headers())
        assert resumed.status_code == 204

    @pytest.mark.parametrize(
        ("body", "status", "code"),
        [
            ({"id": "c2", "messages": [user("  ")]}, 422, "invalid_input"),
            (
                {"id": "c2", "messages": [{"role": "assistant", "parts": []}]},
                404,
                "not_found",
            ),
            ({"id": "c2", "messages": [user("hi")], "agent": "nobody"}, 404, "unknown_agent"),
            (
                {"id": "c2", "messages": [user("hi")], "model": "no-such-model"},
                400,
                "unknown_model",
            ),
            ({"id": "has space", "messages": [user("hi")]}, 422, "validation_error"),
        ],
    )
    async def test_refusals_are_problems(
        self,
        tcp: httpx.AsyncClient,
        caller: Caller,
        body: dict[str, Any],
        status: int,
        code: str,
    ) -> None:
        answer = await tcp.post("/ai-sdk/chat", json=body, headers=caller.headers())
        assert (answer.status_code, answer.json()["code"]) == (status, code), answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")

    async def test_a_history_that_is_not_the_chats_is_refused_and_nothing_runs(
        self, tcp: httpx.AsyncClient, caller: Caller
    ) -> None:
        first = user("hello")
        await tcp.post(
            "/ai-sdk/chat", json={"id": "c3", "messages": [first]}, headers=caller.headers()
        )
        answer = await tcp.post(
            "/ai-sdk/chat",
            json={"id": "c3", "messages": [user("something else"), user("again")]},
            headers=caller.headers(),
        )
        assert (answer.status_code, answer.json()["code"]) == (409, "history_mismatch")
        stored = await tcp.get("/ai-sdk/chat/c3/messages", headers=caller.headers())
        assert len(stored.json()) == 2
        # An answer to nothing: the chat waits for none.
        answer = await tcp.post(
            "/ai-sdk/chat",
            json={"id": "c3", "messages": [first, {"role": "assistant", "parts": []}]},
            headers=caller.headers(),
        )
        assert (answer.status_code, answer.json()["code"]) == (409, "nothing_to_resume")

    async def test_chats_are_each_users_own(self, tcp: httpx.AsyncClient, caller: Caller) -> None:
        await tcp.post(
            "/ai-sdk/chat",
            json={"id": "c4", "messages": [user("mine")]},
            headers=caller.headers("alice"),
        )
        theirs = await tcp.get("/ai-sdk/chat/c4/messages", headers=caller.headers("bob"))
        assert theirs.json() == []  # for Bob, "c4" is a chat of his own not started yet
        # Bob's "c4" is a chat of his own.
        answer = await tcp.post(
            "/ai-sdk/chat",
            json={"id": "c4", "messages": [user("bob's")]},
            headers=caller.headers("bob"),
        )
        assert answer.status_code == 200
        assert (
            len((await tcp.get("/ai-sdk/chat/c4/messages", headers=caller.headers("alice"))).json())
            == 2
        )


class TestAgUi:
    async def test_a_run_is_started_then_finished_with_the_clients_ids(
        self, tcp: httpx.AsyncClient, caller: Caller
    ) -> None:
        thread = str(uuid.uuid4())
        body = {
            "threadId": thread,
            "runId": "run-1",
            "messages": [{"id": "u", "role": "user", "content": "hi"}],
        }
        answer = await tcp.post("/ag-ui/agents/default", json=body, headers=caller.headers())
        assert answer.status_code == 200
        events = chunks(answer.text)
        assert events[0] == {
            "type": "RUN_STARTED",
            "threadId": thread,
            "runId": "run-1",
            "protocolVersion": "1.0",
        }
        assert events[-1]["type"] == "RUN_FINISHED"
        assert (events[-1]["threadId"], events[-1]["runId"]) == (thread, "run-1")
        snapshot = events[-2]
        assert snapshot["type"] == "MESSAGES_SNAPSHOT"
        assert [m["role"] for m in snapshot["messages"]] == ["user", "assistant"]
        # The thread is a conversation of the caller's, under the client's id.
        listed = await tcp.get(f"/v1/conversations/{thread}/messages", headers=caller.headers())
        assert listed.status_code == 200

    @pytest.mark.parametrize(
        ("agent", "body", "status", "code"),
        [
            ("default", {"threadId": "t", "runId": "r", "messages": []}, 422, "invalid_input"),
            (
                "nobody",
                {"threadId": "t", "runId": "r", "messages": [{"role": "user", "content": "hi"}]},
                404,
                "unknown_agent",
            ),
            (
                "default",
                {
                    "threadId": "t",
                    "runId": "r",
                    "messages": [{"role": "tool", "toolCallId": "x", "content": "1"}],
                },
                404,
                "not_found",
            ),
            (
                "default",
                {
                    "threadId": "t",
                    "runId": "r",
                    "messages": [{"role": "user", "content": "hi"}],
                    "tools": [{"name": "bad name!"}],
                },
                422,
                "invalid_input",
            ),
        ],
    )
    async def test_refusals_are_problems(
        self,
        tcp: httpx.AsyncClient,
        caller: Caller,
        agent: str,
        body: dict[str, Any],
        status: int,
        code: str,
    ) -> None:
        answer = await tcp.post(f"/ag-ui/agents/{agent}", json=body, headers=caller.headers())
        assert (answer.status_code, answer.json()["code"]) == (status, code), answer.text


@pytest.mark.parametrize("query", ["after_seq=9007199254740992", "before_seq=9007199254740992"])
async def test_message_numbers_past_32_bits_are_no_500(
    tcp: httpx.AsyncClient, caller: Caller, query: str
) -> None:
    """The table's numbers are 32-bit; the API takes any up to 2**53 (the console asks for
    the newest page with before_seq=2**53)."""
    made = await tcp.post("/v1/conversations", json={}, headers=caller.headers())
    answer = await tcp.get(
        f"/v1/conversations/{made.json()['id']}/messages?{query}", headers=caller.headers()
    )
    assert answer.status_code == 200
