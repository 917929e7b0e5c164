"""Webhooks: endpoints and secrets, Standard Webhooks signatures checked with the
library's own verifier on a real receiver, the outbox written with the run's end,
retries, filters, rotation, and no loopback or private destination unless allowed."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from atelier.db.base import utcnow
from atelier.webhooks import outbox
from atelier.webhooks.delivery import WebhookSender
from atelier.webhooks.models import Webhook, WebhookDelivery
from tests.conftest import Caller, make_caller
from tests.live import serve_started
from tests.runs.helpers import new_conversation, run_streamed, start, wait_ended
from tests.webhooks.receiver import receiving

FAST = {
    "webhook_allow_private": True,
    "webhook_poll_seconds": 0.05,
    "webhook_retry_base_seconds": 0.05,
    "webhook_timeout_seconds": 2,
}


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return dict(FAST)


async def hook(
    client: httpx.AsyncClient, caller: Caller, url: str, events: list[str] | None = None
) -> dict[str, Any]:
    body = {"url": url, "events": events or ["run.completed"]}
    response = await client.post("/v1/webhooks", json=body, headers=caller.headers(None))
    assert response.status_code == 201, response.text
    return dict(response.json())


async def deliveries(client: httpx.AsyncClient, caller: Caller, webhook_id: str) -> list[dict]:
    response = await client.get(
        f"/v1/webhooks/{webhook_id}/deliveries", headers=caller.headers(None)
    )
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


async def settled(
    client: httpx.AsyncClient, caller: Caller, webhook_id: str, count: int = 1
) -> list[dict]:
    """The deliveries once ``count`` of them are no longer pending."""
    async with asyncio.timeout(20):
        while True:
            found = await deliveries(client, caller, webhook_id)
            if sum(d["status"] != "pending" for d in found) >= count:
                return found
            await asyncio.sleep(0.05)


class TestEndpoints:
    async def test_the_secret_is_shown_once_and_never_again(self, client, caller) -> None:
        created = await hook(client, caller, "https://hooks.example.com/atelier")
        assert created["secret"].startswith("whsec_")
        assert created["events"] == ["run.completed"]
        path = f"/v1/webhooks/{created['id']}"
        shown = (await client.get(path, headers=caller.headers(None))).json()
        listed = (await client.get("/v1/webhooks", headers=caller.headers(None))).json()
        assert "secret" not in shown
        assert "secret" not in listed["data"][0]
        assert created["secret"] not in json.dumps([shown, listed])

    async def test_change_rotate_and_delete(self, app, client, caller) -> None:
        created = await hook(client, caller, "https://hooks.example.com/a")
        path = f"/v1/webhooks/{created['id']}"
        headers = caller.headers(None)
        changed = await client.patch(
            path, json={"events": ["run.failed", "run.failed", "run.cancelled"]}, headers=headers
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["events"] == ["run.cancelled", "run.failed"]
        rotated = await client.post(f"{path}/rotate-secret", headers=headers)
        assert rotated.status_code == 200
        assert rotated.json()["secret"] not in (created["secret"], None)
        assert rotated.json()["secret_rotated_at"] is not None
        async with app.state.resources.sessionmaker() as session:
            row = await session.get(Webhook, uuid.UUID(created["id"]))
            assert row is not None
            assert created["secret"] not in row.secret  # sealed at rest
        assert (await client.delete(path, headers=headers)).status_code == 204
        assert (await client.get(path, headers=headers)).status_code == 404

    @pytest.mark.parametrize(
        "body",
        [
            {"url": "ftp://hooks.example.com/", "events": ["run.completed"]},
            {"url": "not a url", "events": ["run.completed"]},
            {"url": "https://hooks.example.com/", "events": []},
            {"url": "https://hooks.example.com/", "events": ["run.exploded"]},
            {"url": "https://hooks.example.com/" + "a" * 2100, "events": ["run.completed"]},
            {"url": "https://hooks.example.com/", "events": ["run.completed"], "secret": "x"},
        ],
    )
    async def test_bad_bodies_are_refused_and_write_nothing(self, app, client, caller, body):
        response = await client.post("/v1/webhooks", json=body, headers=caller.headers(None))
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"
        async with app.state.resources.sessionmaker() as session:
            assert (await session.scalars(select(Webhook))).first() is None

    async def test_another_tenant_sees_none_of_them(self, app, client, caller) -> None:
        created = await hook(client, caller, "https://hooks.example.com/a")
        other = await make_caller(app)
        path = f"/v1/webhooks/{created['id']}"
        for method, suffix in [
            ("GET", ""),
            ("PATCH", ""),
            ("DELETE", ""),
            ("POST", "/rotate-secret"),
            ("GET", "/deliveries"),
        ]:
            response = await client.request(
                method,
                path + suffix,
                json={} if method == "PATCH" else None,
                headers=other.headers(None),
            )
            assert response.status_code == 404, (method, suffix)
        assert (await client.get("/v1/webhooks", headers=other.headers(None))).json()["data"] == []


PUBLIC = "https://93.184.215.14/hook"  # a public address (no DNS here to resolve names)


class TestPrivateDestinations:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, object]:
        return {**FAST, "webhook_allow_private": False}

    @pytest.mark.parametrize(
        "url",
        [
            "http://127.0.0.1:9/hook",
            "http://localhost/hook",  # a name that resolves to loopback
            "http://10.1.2.3/hook",
            "http://192.168.0.10/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/hook",
            "http://[::ffff:127.0.0.1]/hook",
            "http://0.0.0.0/hook",
        ],
    )
    async def test_loopback_and_private_urls_are_refused(self, app, client, caller, url):
        response = await client.post(
            "/v1/webhooks",
            json={"url": url, "events": ["run.failed"]},
            headers=caller.headers(None),
        )
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "webhook_url_not_allowed"
        async with app.state.resources.sessionmaker() as session:
            assert (await session.scalars(select(Webhook))).first() is None

    @pytest.mark.parametrize(
        "url",
        [
            "http://127.000.000.001:8080/h",  # pydantic reads these as 127.0.0.1;
            "http://0177.0.0.1/h",  # httpx, which would connect, refuses them
            "http://\u2460\u2461\u2466.0.0.1/h",
            "http://user:pw@hooks.example.com/h",  # credentials belong in no URL
        ],
    )
    async def test_urls_one_parser_reads_otherwise_are_a_422(self, app, client, caller, url):
        response = await client.post(
            "/v1/webhooks",
            json={"url": url, "events": ["run.failed"]},
            headers=caller.headers(None),
        )
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["loc"][:2] == ["body", "url"]
        async with app.state.resources.sessionmaker() as session:
            assert (await session.scalars(select(Webhook))).first() is None

    async def test_a_change_to_a_private_url_is_refused(self, client, caller) -> None:
        created = await hook(client, caller, PUBLIC)
        response = await client.patch(
            f"/v1/webhooks/{created['id']}",
            json={"url": "http://127.0.0.1/x"},
            headers=caller.headers(None),
        )
        assert response.json()["code"] == "webhook_url_not_allowed"

    async def test_sending_checks_the_address_again(self, app, client, caller) -> None:
        """A name that resolved to a public address when it was given may not later: the
        delivery is refused at the connection, and nothing reaches the receiver."""
        async with receiving() as receiver:
            created = await hook(client, caller, PUBLIC)
            async with app.state.resources.sessionmaker() as session:
                await session.execute(
                    update(Webhook)
                    .where(Webhook.id == uuid.UUID(created["id"]))
                    .values(url=receiver.url)
                )
                await session.commit()
            conversation = await new_conversation(client, caller)
            await run_streamed(client, caller, conversation, "hello")
            found = await deliveries(client, caller, created["id"])
            async with asyncio.timeout(20):
                while not found or found[0]["attempts"] == 0:
                    await asyncio.sleep(0.05)
                    found = await deliveries(client, caller, created["id"])
            assert found[0]["last_status_code"] is None
            assert "non-public" in found[0]["last_error"]
            assert receiver.received == []


class TestDelivery:
    async def test_a_completed_run_is_delivered_signed(self, app, client, caller) -> None:
        async with receiving() as receiver:
            created = await hook(client, caller, receiver.url)
            conversation = await new_conversation(client, caller)
            events = await run_streamed(client, caller, conversation, "hello there")
            run_id = events[0][2]["run_id"]
            (got,) = await receiver.wait_for(1)
            payload = got.verified(created["secret"])
            assert payload["type"] == "run.completed"
            assert payload["data"]["run_id"] == run_id
            assert payload["data"]["conversation_id"] == conversation
            assert payload["data"]["status"] == "completed"
            assert payload["data"]["user_id"] == "alice"
            assert got.headers["webhook-id"].startswith("msg_")
            with pytest.raises(Exception, match="signature"):
                got.verified("whsec_" + "QUJD" * 11)  # another secret does not verify it
            (delivery,) = await settled(client, caller, created["id"])
            assert delivery["status"] == "delivered"
            assert (delivery["attempts"], delivery["last_status_code"]) == (1, 200)
            assert got.headers["webhook-id"] == f"msg_{uuid.UUID(delivery['id']).hex}"

    async def test_no_log_line_carries_the_urls_query(self, client, caller, caplog) -> None:
        """A token in a webhook URL's query is the tenant's secret: the HTTP client's
        request lines (INFO) are not written."""
        async with receiving() as receiver:
            created = await hook(client, caller, receiver.url + "?token=s3cr3t-t0ken")
            conversation = await new_conversation(client, caller)
            await run_streamed(client, caller, conversation, "hello")
            await receiver.wait_for(1)
            await settled(client, caller, created["id"])
        assert not [r for r in caplog.records if "s3cr3t-t0ken" in r.getMessage()]

    async def test_a_urls_query_is_shown_redacted_and_kept_when_sent_back(
        self, app, caller
    ) -> None:
        async with (
            receiving() as receiver,
            serve_started(app) as served,
            httpx.AsyncClient(base_url=served, headers=caller.headers()) as client,
        ):
            created = await hook(client, caller, receiver.url + "?token=s3cr3t-t0ken")
            assert created["url"] == receiver.url + "?token=redacted"
            path = f"/v1/webhooks/{created['id']}"
            for shown in ("/v1/webhooks", path):
                assert "s3cr3t-t0ken" not in (await client.get(shown)).text
            read = (await client.get(path)).json()  # read, modify, write back
            body = {"url": read["url"], "events": ["run.completed", "run.failed"]}
            changed = await client.patch(path, json=body)
            assert changed.status_code == 200, changed.text
            assert "s3cr3t-t0ken" not in changed.text
            conversation = await new_conversation(client, caller)
            await run_streamed(client, caller, conversation, "hello")
            (got,) = await receiver.wait_for(1)
        assert got.query == "token=s3cr3t-t0ken"

    async def test_failures_are_retried_with_the_same_id_and_body(self, client, caller) -> None:
        async with receiving(script=[500, 503]) as receiver:
            created = await hook(client, caller, receiver.url)
            conversation = await new_conversation(client, caller)
            await run_streamed(client, caller, conversation, "hello")
            got = await receiver.wait_for(3)
            assert len({r.headers["webhook-id"] for r in got}) == 1
            assert len({r.body for r in got}) == 1
            for attempt in got:
                attempt.verified(created["secret"])
            (delivery,) = await settled(client, caller, created["id"])
            assert (delivery["status"], delivery["attempts"]) == ("delivered", 3)

    async def test_a_redirect_is_not_a_delivery(self, client, caller) -> None:
        """A 3xx is not followed (each hop would be a new, unchecked destination) and does
        not count as delivered: it is retried like any failure."""
        async with receiving(script=[302]) as receiver:
            created = await hook(client, caller, receiver.url)
            conversation = await new_conversation(client, caller)
            await run_streamed(client, caller, conversation, "hello")
            await receiver.wait_for(2)
            (delivery,) = await settled(client, caller, created["id"])
            assert (delivery["status"], delivery["attempts"]) == ("delivered", 2)

    async def test_the_previous_secret_signs_for_a_day_only(self, app, client, caller) -> None:
        from datetime import timedelta

        from atelier.db.base import utcnow

        async with receiving() as receiver:
            created = await hook(client, caller, receiver.url)
            path = f"/v1/webhooks/{created['id']}/rotate-secret"
            rotated = (await client.post(path, headers=caller.headers(None))).json()
            conversation = await new_conversation(client, caller)
            await run_streamed(client, caller, conversation, "hello")
            (within_the_day,) = await receiver.wait_for(1)
            assert len(within_the_day.headers["webhook-signature"].split()) == 2
            async with app.state.resources.sessionmaker() as session:
                await session.execute(
                    update(Webhook).values(rotated_at=utcnow() - timedelta(days=1, minutes=1))
                )
                await session.commit()
            await run_streamed(client, caller, conversation, "hello again")
            received = await receiver.wait_for(2)
            assert len(received[1].headers["webhook-signature"].split()) == 1
            received[1].verified(rotated["secret"])
            with pytest.raises(Exception, match="signature"):
                received[1].verified(created["secret"])

    async def test_only_the_chosen_events_are_sent(self, client, caller) -> None:
        async with receiving() as receiver:
            await hook(client, caller, receiver.url, ["run.cancelled"])
            conversation = await new_conversation(client, caller)
            await run_streamed(client, caller, conversation, "hello")  # completed: not sent
            started = await start(client, caller, conversation, " ".join(["w"] * 400))
            run_id = started.json()["id"]
            await client.post(
                f"/v1/conversations/{conversation}/runs/{run_id}/cancel",
                headers=caller.headers(),
            )
            await wait_ended(client, caller, conversation, run_id)
            await receiver.wait_for(1)
            await asyncio.sleep(0.3)  # a wrongly sent completion would have arrived by now
            assert receiver.types() == ["run.cancelled"]

    async def test_a_disabled_endpoint_gets_nothing(self, client, caller) -> None:
        async with receiving() as receiver:
            created = await hook(client, caller, receiver.url)
            await client.patch(
                f"/v1/webhooks/{created['id']}",
                json={"enabled": False},
                headers=caller.headers(None),
            )
            conversation = await new_conversation(client, caller)
            await run_streamed(client, caller, conversation, "hello")
            assert await deliveries(client, caller, created["id"]) == []

    async def test_after_a_rotation_both_secrets_verify_for_a_day(self, client, caller) -> None:
        async with receiving() as receiver:
            created = await hook(client, caller, receiver.url)
            rotated = await client.post(
                f"/v1/webhooks/{created['id']}/rotate-secret", headers=caller.headers(None)
            )
            conversation = await new_conversation(client, caller)
            await run_streamed(client, caller, conversation, "hello")
            (got,) = await receiver.wait_for(1)
            assert len(got.headers["webhook-signature"].split(" ")) == 2
            got.verified(created["secret"])
            got.verified(rotated.json()["secret"])

    async def test_an_endpoint_that_never_answers_well_ends_failed(
        self, app, client, caller
    ) -> None:
        app.state.resources.settings.webhook_retry_window_seconds = 0.5
        async with receiving(script=[500] * 100) as receiver:
            created = await hook(client, caller, receiver.url)
            conversation = await new_conversation(client, caller)
            await run_streamed(client, caller, conversation, "hello")
            (delivery,) = await settled(client, caller, created["id"])
            assert delivery["status"] == "failed"
            assert delivery["last_status_code"] == 500
            assert delivery["attempts"] == len(receiver.received) >= 2

    async def test_a_failed_delivery_is_sent_again_once_the_receiver_is_fixed(
        self, app, client, caller
    ) -> None:
        app.state.resources.settings.webhook_retry_window_seconds = 0.5
        async with receiving(script=[500] * 1000) as receiver:
            created = await hook(client, caller, receiver.url)
            conversation = await new_conversation(client, caller)
            await run_streamed(client, caller, conversation, "hello")
            (failed,) = await settled(client, caller, created["id"])
            assert failed["status"] == "failed"
            receiver.script.clear()  # the receiver is fixed: it answers 200 from now
            path = f"/v1/webhooks/{created['id']}/deliveries/{failed['id']}/redeliver"
            again = await client.post(path, headers=caller.headers(None))
            assert again.status_code == 202, again.text
            assert again.json()["status"] == "pending"
            (delivered,) = await settled(client, caller, created["id"])
            assert delivered["status"] == "delivered"
            taken = receiver.received[-1]
            assert taken.headers["webhook-id"] == f"msg_{uuid.UUID(failed['id']).hex}"
            assert taken.verified(created["secret"])["type"] == "run.completed"
            other = await make_caller(app)
            refused = await client.post(path, headers=other.headers(None))
            assert refused.status_code == 404

    async def test_a_deleted_endpoint_is_not_sent_its_pending_deliveries(
        self, app, client, caller
    ) -> None:
        async with receiving(script=[500] * 100) as receiver:
            created = await hook(client, caller, receiver.url)
            conversation = await new_conversation(client, caller)
            await run_streamed(client, caller, conversation, "hello")
            await receiver.wait_for(1)
            await client.delete(f"/v1/webhooks/{created['id']}", headers=caller.headers(None))
            seen = len(receiver.received)
            await asyncio.sleep(0.5)  # retries every 0.05-3 s would have come by now
            assert len(receiver.received) <= seen + 1  # one may have been in flight


class TestOutbox:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, object]:
        # The app's own sender sleeps through the test: only the two senders below take
        # from the outbox (with a third taking some, they could find nothing left and stop
        # before its deliveries arrived).
        return {**FAST, "webhook_poll_seconds": 60}

    async def test_two_senders_send_each_delivery_once(self, app, caller) -> None:
        """Two senders (two processes' worth) take from the same outbox at once."""
        resources = app.state.resources
        async with receiving() as receiver:
            async with resources.sessionmaker() as session:
                session.add(
                    Webhook(
                        tenant_id=caller.tenant_id,
                        url=receiver.url,
                        events=",run.completed,",
                        secret=resources.sealer.seal_text("whsec_" + "QUJD" * 11),
                    )
                )
                await session.flush()
                for n in range(45):
                    await outbox.record(session, caller.tenant_id, "run.completed", {"n": n})
                await session.commit()
            senders = [
                WebhookSender(resources.sessionmaker, resources.sealer, resources.settings)
                for _ in range(2)
            ]
            try:
                while True:
                    sent = await asyncio.gather(*(s.send_due() for s in senders))
                    if not any(sent):
                        break
            finally:
                for sender in senders:
                    await sender.aclose()
            ids = [r.headers["webhook-id"] for r in receiver.received]
            assert len(ids) == len(set(ids)) == 45

    async def test_nothing_is_written_for_an_event_nobody_wants(self, app, caller) -> None:
        async with app.state.resources.sessionmaker() as session:
            await outbox.record(session, caller.tenant_id, "run.failed", {"x": 1})
            await session.commit()
            assert (await session.scalars(select(WebhookDelivery))).first() is None

    async def test_an_event_and_its_delivery_commit_together(self, app, caller) -> None:
        resources = app.state.resources
        async with resources.sessionmaker() as session:
            session.add(
                Webhook(
                    tenant_id=caller.tenant_id,
                    url="https://hooks.example.com/",
                    events=",run.failed,",
                    secret=resources.sealer.seal_text("whsec_" + "QUJD" * 11),
                )
            )
            await session.commit()
        async with resources.sessionmaker() as session:
            await outbox.record(session, caller.tenant_id, "run.failed", {"x": 1})
            await session.rollback()
        async with resources.sessionmaker() as session:
            assert (await session.scalars(select(WebhookDelivery))).first() is None


@pytest.mark.parametrize("backend", ["services"])  # processes that share one database
class TestProcessesWithOtherKeys:
    """Two processes of one deployment with different data directories and no
    ATELIER_SECRETS_KEY: each made its own development key, so one cannot open what the
    other sealed. That process says so on /ready, and a delivery it takes up is left for
    a process that can sign it -- no attempt counted, nothing sent unsigned."""

    @pytest.fixture
    def settings_overrides(self) -> dict[str, object]:
        return {**FAST, "webhook_poll_seconds": 60}  # the test decides who sends, and when

    async def test_the_other_process_is_not_ready_and_spends_no_attempt(
        self, app, client, caller, settings, tmp_path
    ) -> None:
        from atelier.app import create_app

        async with receiving() as receiver:
            created = await hook(client, caller, receiver.url)
            other = create_app(settings.model_copy(update={"data_dir": tmp_path / "other"}))
            async with other.router.lifespan_context(other):
                transport = httpx.ASGITransport(app=other)
                async with httpx.AsyncClient(transport=transport, base_url="http://o") as there:
                    ready = await there.get("/ready")
                    assert ready.status_code == 503
                    assert ready.json()["checks"]["secrets"].startswith(
                        "unavailable: no configured key opens these secrets"
                    )
                    assert (await client.get("/ready")).status_code == 200
                    # The other process takes the delivery up first: it cannot sign it.
                    async with other.state.resources.sessionmaker() as session:
                        await outbox.record(
                            session, caller.tenant_id, "run.completed", {"run_id": "r1"}
                        )
                        await session.commit()
                    assert await other.state.resources.webhooks.send_due() == 1
            (delivery,) = await deliveries(client, caller, created["id"])
            assert (delivery["status"], delivery["attempts"]) == ("pending", 0)
            assert "no configured key" in delivery["last_error"]
            assert receiver.received == []
            # The process that sealed it sends it when it is due again.
            async with app.state.resources.sessionmaker() as session:
                await session.execute(update(WebhookDelivery).values(next_attempt_at=utcnow()))
                await session.commit()
            assert await app.state.resources.webhooks.send_due() == 1
            (got,) = await receiver.wait_for(1)
            got.verified(created["secret"])
