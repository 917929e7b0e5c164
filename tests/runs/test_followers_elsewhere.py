"""A run followed from another process gets every event of the run's log, in order --
checked event by event against the log replayed afterwards, with Redis healthy and with
a Redis that was restarted (its pooled connections gone stale) just before the runs."""

from __future__ import annotations

import asyncio

import pytest

from tests.faults import RedisServer
from tests.runs.helpers import Event, new_conversation, parse_sse, start, wait_status

pytestmark = pytest.mark.parametrize("backend", ["services"])
RUNS = 12
# Text, a tool step that writes two files, more text: every kind of event a run sends.
PLAN = "write notes/a.txt: alpha beta gamma\nwrite notes/b.txt: delta epsilon\nlist files"


@pytest.fixture
def settings_overrides(redis_server: RedisServer) -> dict[str, object]:
    return {"redis_url": redis_server.url, "offline_model_delay_seconds": 0.01}


async def follow_elsewhere_and_compare(client, elsewhere, caller) -> None:
    conversations = [await new_conversation(client, caller) for _ in range(RUNS)]

    async def one(conversation: str) -> tuple[list[Event], str]:
        run = await start(client, caller, conversation, PLAN)
        assert run.status_code == 202, run.text
        path = f"/v1/conversations/{conversation}/runs/{run.json()['id']}/events"
        followed = await elsewhere.get(path, headers=caller.headers(), timeout=60)
        return parse_sse(followed.text), path

    followed = await asyncio.gather(*(one(c) for c in conversations))
    for events, path in followed:
        replayed = parse_sse((await client.get(path, headers=caller.headers())).text)
        assert [e[1] for e in replayed].count("file.changed") == 2
        assert [n for n, _, _ in replayed] == list(range(1, len(replayed) + 1))
        assert events == replayed, "the follower elsewhere skipped or changed events"


async def test_a_follower_elsewhere_gets_every_event(app, client, caller, elsewhere) -> None:
    await follow_elsewhere_and_compare(client, elsewhere, caller)


async def test_a_follower_elsewhere_gets_every_event_after_a_redis_restart(
    app, client, caller, elsewhere, redis_server
) -> None:
    # Both processes hold pooled connections, then Redis restarts (empty) under them.
    await follow_elsewhere_and_compare(client, elsewhere, caller)
    redis_server.stop()
    redis_server.start()
    await asyncio.sleep(1)
    await follow_elsewhere_and_compare(client, elsewhere, caller)


async def test_a_follower_elsewhere_waits_for_a_slow_log_after_the_row_ended(
    app, client, caller, elsewhere, monkeypatch
) -> None:
    """The run's row ends before its last events reach the shared log (a busy Redis, a
    slow close): the follower, looking at the row at every quiet read, still gets them
    from the log rather than ending from the database without them."""
    from atelier.runs import follow, log

    monkeypatch.setattr(log, "FLUSH_LINGER_SECONDS", 4.0)
    monkeypatch.setattr(follow, "CHECK_ROW_EVERY", 1)
    await follow_elsewhere_and_compare(client, elsewhere, caller)


async def test_an_approval_request_the_log_never_got_comes_from_the_database(
    app, client, caller, elsewhere, monkeypatch
) -> None:
    """The run stops to wait for approval and its process dies before shipping a single
    event: a follower elsewhere still gets the approval request (the event a person must
    answer) under its own id, answers it there, and follows the run to its end."""
    from atelier.runs import follow, log

    monkeypatch.setattr(log, "DRAIN_SECONDS", 0.2)
    monkeypatch.setattr(follow, "SHIPPING_SECONDS", 1.0)
    monkeypatch.setattr(follow, "CHECK_ROW_EVERY", 1)
    # This process ships nothing: what it said dies with it.
    monkeypatch.setattr(app.state.resources.runs.env.shipper, "ship", lambda run_log: None)
    careful = {"name": "careful", "approval": {"require": ["write_*"]}}
    agent = await client.post("/v1/agents", json=careful, headers=caller.headers())
    conversation = await new_conversation(client, caller, agent_id=agent.json()["id"])
    run = (await start(client, caller, conversation, "write a.txt: hi")).json()
    runs = f"/v1/conversations/{conversation}/runs/{run['id']}"
    await wait_status(client, caller, conversation, run["id"], ["awaiting_approval"], 20)

    async def until_asked() -> list[Event]:
        seen: list[Event] = []
        async with elsewhere.stream("GET", f"{runs}/events", headers=caller.headers()) as stream:
            buffer = ""
            async for chunk in stream.aiter_text():
                buffer += chunk
                seen = parse_sse(buffer.rsplit("\n\n", 1)[0] + "\n\n") if "\n\n" in buffer else []
                if seen and seen[-1][1] == "approval.requested":
                    return seen
        return seen

    seen = await asyncio.wait_for(until_asked(), 20)
    asked = seen[-1]
    assert (asked[2]["name"], asked[2]["input"]) == (
        "write_file",
        {"path": "a.txt", "content": "hi"},
    )
    decided = await elsewhere.post(
        f"{runs}/approvals/{asked[2]['call_id']}",
        json={"decision": "approve"},
        headers=caller.headers(),
    )
    assert decided.status_code == 200, decided.text
    rest = parse_sse(
        (await elsewhere.get(f"{runs}/events?after={asked[0]}", headers=caller.headers())).text
    )
    assert rest[0][1] == "approval.resolved"
    assert rest[0][0] == asked[0] + 1
    assert rest[-1][1] == "run.completed"


async def test_a_resumed_follower_never_gets_the_event_it_named_again(
    app, client, caller, elsewhere, monkeypatch
) -> None:
    """Recovered from the database after the id the client saw, never from it: the
    client that resumes after a durable event does not get it twice."""
    from atelier.runs import follow, log

    monkeypatch.setattr(log, "DRAIN_SECONDS", 0.2)
    monkeypatch.setattr(follow, "SHIPPING_SECONDS", 1.0)
    monkeypatch.setattr(follow, "CHECK_ROW_EVERY", 1)
    monkeypatch.setattr(app.state.resources.runs.env.shipper, "ship", lambda run_log: None)
    conversation = await new_conversation(client, caller)
    run = (await start(client, caller, conversation, "hello there")).json()
    path = f"/v1/conversations/{conversation}/runs/{run['id']}/events"
    first = parse_sse((await elsewhere.get(path, headers=caller.headers())).text)
    durable = [n for n, name, _ in first if name in ("message.completed", "usage")]
    assert len(durable) >= 2, first
    again = parse_sse(
        (await elsewhere.get(f"{path}?after={durable[0]}", headers=caller.headers())).text
    )
    assert [n for n, _, _ in again if n is not None and n <= durable[0]] == []
    assert again[-1][1] == "run.completed"


async def test_a_run_whose_row_ended_without_an_id_still_ends_its_stream(
    app, client, caller, elsewhere, monkeypatch
) -> None:
    """A reaped run, a deleted conversation: the row ended but recorded no final id, and
    the log has nothing more. The follower ends with the row's word once its process had
    time to send its own -- not never."""
    from sqlalchemy import update

    from atelier.db.base import utcnow
    from atelier.runs.log import log_name
    from atelier.runs.models import Run

    monkeypatch.setattr("atelier.runs.queueing.QUEUED_LOOK_SECONDS", 0.1, raising=False)
    conversation = await new_conversation(client, caller)
    run = (await start(client, caller, conversation, "hello")).json()
    path = f"/v1/conversations/{conversation}/runs/{run['id']}/events"
    ended = parse_sse((await client.get(path, headers=caller.headers())).text)
    assert ended[-1][1] == "run.completed"
    await asyncio.sleep(0.5)  # its process has shipped its events and set their retention
    async with app.state.resources.sessionmaker() as session:
        await session.execute(
            update(Run).values(last_event_id=None, ended_at=utcnow().replace(year=2000))
        )
        await session.commit()
    await app.state.resources.coordination.expire_log(
        log_name(__import__("uuid").UUID(run["id"])), 1
    )
    await asyncio.sleep(1.5)
    tail = parse_sse(
        (
            await asyncio.wait_for(elsewhere.get(f"{path}?after=1", headers=caller.headers()), 30)
        ).text
    )
    assert tail[-1][1] == "run.completed"
    assert tail[-1][0] is None  # no id: never one that names another event
