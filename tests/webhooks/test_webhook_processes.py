"""A process killed after a run's end committed, while it was sending the webhook: the
delivery is not lost -- another process sends it (at least once, never zero)."""

from __future__ import annotations

import httpx

from tests.fixtures.processes import Deployment
from tests.webhooks.receiver import receiving


async def test_a_delivery_survives_the_death_of_its_sender(deployment: Deployment, servers):
    d = deployment
    env = {
        "ATELIER_WEBHOOK_ALLOW_PRIVATE": "true",
        "ATELIER_WEBHOOK_TIMEOUT_SECONDS": "3",
        "ATELIER_WEBHOOK_POLL_SECONDS": "0.1",
    }
    async with receiving(script=["hang"]) as receiver:
        a = servers(**env)
        await a.ready()
        async with httpx.AsyncClient(base_url=a.url, headers=d.headers(), timeout=30) as http:
            created = await http.post(
                "/v1/webhooks", json={"url": receiver.url, "events": ["run.completed"]}
            )
            assert created.status_code == 201, created.text
            conversation = (await http.post("/v1/conversations", json={})).json()["id"]
            ran = await http.post(
                f"/v1/conversations/{conversation}/runs",
                json={"input": "hello"},
                headers={"Accept": "text/event-stream"},
            )
            assert "event: run.completed" in ran.text
        (first,) = await receiver.wait_for(1)  # A took it and is sending it: kill A now
        a.stop()
        b = servers(**env)
        await b.ready()
        second = (await receiver.wait_for(2, timeout=40))[1]
        assert second.headers["webhook-id"] == first.headers["webhook-id"]
        payload = second.verified(created.json()["secret"])
        assert payload["data"]["conversation_id"] == conversation
        async with httpx.AsyncClient(base_url=b.url, headers=d.headers()) as http:
            path = f"/v1/webhooks/{created.json()['id']}/deliveries"
            (delivery,) = (await http.get(path)).json()["data"]
        assert delivery["status"] == "delivered"
        assert delivery["last_status_code"] == 200
