"""Idempotency-Key: the same request twice is answered once, whatever the timing; the
key with another request is refused; answers that say "try again" are not kept."""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from atelier.conversations.models import Conversation
from atelier.runs.models import Run
from tests.conftest import Caller
from tests.runs.helpers import new_conversation


async def count(app: FastAPI, model: type) -> int:
    async with app.state.resources.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


def keyed(caller: Caller, key: str, **extra: str) -> dict[str, str]:
    return caller.headers(**{"Idempotency-Key": key, **extra})


class TestIdempotencyKey:
    async def test_the_same_request_is_answered_once(self, app, tcp, caller) -> None:
        body = {"title": "Trip"}
        first = await tcp.post("/v1/conversations", json=body, headers=keyed(caller, "k-1"))
        again = await tcp.post("/v1/conversations", json=body, headers=keyed(caller, "k-1"))
        assert (first.status_code, again.status_code) == (201, 201)
        assert again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true"
        assert "idempotent-replayed" not in first.headers
        assert await count(app, Conversation) == 1

    async def test_twenty_at_once_make_one(self, app, tcp, caller) -> None:
        answers = await asyncio.gather(
            *(
                tcp.post("/v1/conversations", json={"title": "x"}, headers=keyed(caller, "burst"))
                for _ in range(20)
            )
        )
        assert {a.status_code for a in answers} <= {201, 409}
        created = {a.json()["id"] for a in answers if a.status_code == 201}
        assert len(created) == 1
        assert await count(app, Conversation) == 1

    async def test_the_key_with_another_request_is_refused(self, app, tcp, caller) -> None:
        await tcp.post("/v1/conversations", json={"title": "a"}, headers=keyed(caller, "k-2"))
        other_body = await tcp.post(
            "/v1/conversations", json={"title": "b"}, headers=keyed(caller, "k-2")
        )
        other_path = await tcp.post("/v1/chats", json={"title": "a"}, headers=keyed(caller, "k-2"))
        other_user = await tcp.post(
            "/v1/conversations",
            json={"title": "a"},
            headers=keyed(caller, "k-2") | {"X-User-ID": "bob"},
        )
        for refused in (other_body, other_path, other_user):
            assert (refused.status_code, refused.json()["code"]) == (422, "idempotency_key_reused")
        assert await count(app, Conversation) == 1

    async def test_a_run_started_twice_runs_once_and_streams_again(self, app, tcp, caller) -> None:
        conversation = await new_conversation(tcp, caller)
        path = f"/v1/conversations/{conversation}/runs"
        body = {"input": "hello there"}
        headers = keyed(caller, "run-1", Accept="text/event-stream")
        first = await tcp.post(path, json=body, headers=headers)
        again = await tcp.post(path, json=body, headers=headers)
        assert again.headers["idempotent-replayed"] == "true"
        assert again.text == first.text  # the same events, the same ids, from the first
        assert "run.completed" in first.text
        assert await count(app, Run) == 1
        plain = await tcp.post(path, json=body, headers=keyed(caller, "run-2"))
        plain_again = await tcp.post(path, json=body, headers=keyed(caller, "run-2"))
        assert plain.status_code == 202
        assert plain_again.json()["id"] == plain.json()["id"]
        assert await count(app, Run) == 2

    async def test_an_answer_that_says_try_again_is_not_kept(self, app, tcp, caller) -> None:
        conversation = await new_conversation(tcp, caller)
        path = f"/v1/conversations/{conversation}/runs"
        running = await tcp.post(path, json={"input": "x " * 300}, headers=caller.headers())
        busy = await tcp.post(path, json={"input": "y"}, headers=keyed(caller, "later"))
        assert (busy.status_code, busy.json()["code"]) == (409, "conversation_busy")
        async with asyncio.timeout(30):
            run = running.json()["id"]
            while (await tcp.get(f"{path}/{run}", headers=caller.headers())).json()[
                "status"
            ] == "running":
                await asyncio.sleep(0.05)
        retried = await tcp.post(path, json={"input": "y"}, headers=keyed(caller, "later"))
        assert retried.status_code == 202
        assert "idempotent-replayed" not in retried.headers

    async def test_a_file_put_twice_is_stored_once(self, app, tcp, caller) -> None:
        conversation = await new_conversation(tcp, caller)
        path = f"/v1/conversations/{conversation}/files/notes.txt"
        first = await tcp.put(path, content=b"v1", headers=keyed(caller, "put-1"))
        again = await tcp.put(path, content=b"v1", headers=keyed(caller, "put-1"))
        assert first.status_code == 201
        assert (again.status_code, again.headers["idempotent-replayed"]) == (201, "true")
        changed = await tcp.put(path, content=b"v2", headers=keyed(caller, "put-1"))
        assert changed.status_code == 422
        assert (await tcp.get(path, headers=caller.headers())).content == b"v1"

    @pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "a\tb", "a b"])
    async def test_a_bad_key_is_400(self, tcp, caller, key) -> None:
        headers = caller.headers()
        response = await tcp.post(
            "/v1/conversations",
            json={},
            headers=[
                *((k.encode(), v.encode()) for k, v in headers.items()),
                (b"idempotency-key", key.encode("utf-8")),
            ],
        )
        assert (response.status_code, response.json()["code"]) == (400, "invalid_idempotency_key")

    async def test_keys_are_per_tenant(self, app, tcp, caller) -> None:
        from tests.conftest import make_caller

        other = await make_caller(app)
        mine = await tcp.post("/v1/conversations", json={}, headers=keyed(caller, "shared"))
        theirs = await tcp.post("/v1/conversations", json={}, headers=keyed(other, "shared"))
        assert mine.json()["id"] != theirs.json()["id"]
        assert "idempotent-replayed" not in theirs.headers
        assert json.loads(theirs.text)["id"]


class TestWhatIsKept:
    """Stored answers hold no secret in the clear, are given again only to the key that
    made them, go with what they are about, and are capped per tenant."""

    @pytest.fixture
    def settings_overrides(self) -> dict[str, object]:
        return {"webhook_allow_private": True, "max_idempotency_records": 5}

    async def test_a_secret_is_kept_sealed_and_given_only_to_its_key(
        self, app, tcp, caller
    ) -> None:
        from atelier.idempotency.models import IdempotentRequest
        from atelier.tenants.models import Tenant
        from atelier.tenants.service import create_api_key

        body = {"url": "http://127.0.0.1:9/hook", "events": ["run.completed"]}
        headers = caller.headers(None, **{"Idempotency-Key": "hook-1"})
        first = await tcp.post("/v1/webhooks", json=body, headers=headers)
        assert first.status_code == 201, first.text
        assert first.headers["cache-control"] == "no-store"
        secret = first.json()["secret"]
        async with app.state.resources.sessionmaker() as session:
            kept = await session.scalar(select(IdempotentRequest.body))
        assert kept is not None
        assert secret.encode() not in kept
        assert b"whsec_" not in kept
        again = await tcp.post("/v1/webhooks", json=body, headers=headers)
        assert (again.headers["idempotent-replayed"], again.json()["secret"]) == ("true", secret)
        # Another key of the same tenant does not get it.
        async with app.state.resources.sessionmaker() as session:
            tenant = await session.get(Tenant, caller.tenant_id)
            assert tenant is not None
            other = await create_api_key(session, tenant, "other")
            await session.commit()
        stranger = {"Authorization": f"Bearer {other.secret}", "Idempotency-Key": "hook-1"}
        refused = await tcp.post("/v1/webhooks", json=body, headers=stranger)
        assert (refused.status_code, refused.json()["code"]) == (422, "idempotency_key_reused")
        assert secret not in refused.text
        # Deleted: its stored answer goes with it.
        gone = await tcp.delete(f"/v1/webhooks/{first.json()['id']}", headers=caller.headers(None))
        assert gone.status_code == 204
        made_again = await tcp.post("/v1/webhooks", json=body, headers=headers)
        assert "idempotent-replayed" not in made_again.headers
        assert made_again.json()["secret"] != secret
        # A process whose keys cannot open it says so (503), never a 500.
        from cryptography.fernet import Fernet

        from atelier.agents.secrets import Sealer

        app.state.resources.sealer = Sealer([Fernet.generate_key().decode()])
        unopened = await tcp.post("/v1/webhooks", json=body, headers=headers)
        assert (unopened.status_code, unopened.json()["code"]) == (503, "secrets_unavailable")

    async def test_a_deleted_conversation_takes_its_answers_with_it(self, app, tcp, caller) -> None:
        conversation = await new_conversation(tcp, caller)
        path = f"/v1/conversations/{conversation}/runs"
        body = {"input": "a private thought"}
        first = await tcp.post(path, json=body, headers=keyed(caller, "run-1"))
        assert first.status_code == 202, first.text
        async with asyncio.timeout(15):
            while (await tcp.get(f"{path}/{first.json()['id']}", headers=caller.headers())).json()[
                "status"
            ] != "completed":
                await asyncio.sleep(0.05)
        assert (
            await tcp.delete(f"/v1/conversations/{conversation}", headers=caller.headers())
        ).status_code == 204
        again = await tcp.post(path, json=body, headers=keyed(caller, "run-1"))
        assert again.status_code == 404
        assert "a private thought" not in again.text

    async def test_a_tenant_keeps_at_most_its_limit(self, app, tcp, caller) -> None:
        for number in range(5):
            made = await tcp.post("/v1/conversations", json={}, headers=keyed(caller, f"c{number}"))
            assert made.status_code == 201
        refused = await tcp.post("/v1/conversations", json={}, headers=keyed(caller, "c5"))
        assert (refused.status_code, refused.json()["code"]) == (409, "limit_reached")
        assert "ATELIER_MAX_IDEMPOTENCY_RECORDS" in refused.json()["detail"]
        # A key it already keeps is still answered; a request without a key still works.
        again = await tcp.post("/v1/conversations", json={}, headers=keyed(caller, "c0"))
        assert again.headers["idempotent-replayed"] == "true"
        assert (
            await tcp.post("/v1/conversations", json={}, headers=caller.headers())
        ).status_code == 201
