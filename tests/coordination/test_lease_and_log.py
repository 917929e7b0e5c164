"""Leases (BUG-001) and run event logs, on the in-process adapter and on real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from fastapi import FastAPI

from atelier.coordination.base import Coordination, LogBatch
from atelier.coordination.lease import Lease, LeaseHeld


@pytest.fixture
def coordination(app: FastAPI) -> Coordination:
    return app.state.resources.coordination  # type: ignore[no-any-return]


class TestLease:
    async def test_second_holder_waits_then_gets_it_at_once(
        self, coordination: Coordination
    ) -> None:
        """BUG-001: back to back, the second takes the lease the moment the first lets go."""
        async with Lease(coordination, "conv-1", ttl_seconds=600):
            with pytest.raises(LeaseHeld) as held:
                async with Lease(coordination, "conv-1"):
                    pass
            assert 0 < held.value.retry_after_seconds <= 600
        # Taking a lease never waits: it is taken at once or refused (LeaseHeld).
        async with Lease(coordination, "conv-1"):
            pass

    async def test_released_even_when_the_body_fails(self, coordination: Coordination) -> None:
        with pytest.raises(RuntimeError):
            async with Lease(coordination, "conv-2", ttl_seconds=600):
                raise RuntimeError("the run crashed")
        async with Lease(coordination, "conv-2"):
            pass

    async def test_a_wrong_token_frees_nothing(self, coordination: Coordination) -> None:
        async with Lease(coordination, "conv-3", ttl_seconds=600):
            assert await coordination.release("conv-3", "not-the-token") is False
            assert await coordination.extend("conv-3", "not-the-token", 10) is False
            with pytest.raises(LeaseHeld):
                async with Lease(coordination, "conv-3"):
                    pass

    async def test_renewed_while_held(self, coordination: Coordination) -> None:
        async with Lease(coordination, "conv-4", ttl_seconds=2) as lease:
            renewals, previous = 0, await coordination.lease_ttl_ms("conv-4")
            async with asyncio.timeout(30):
                while renewals < 2:  # its time left went back up: renewed
                    await asyncio.sleep(0.05)
                    left = await coordination.lease_ttl_ms("conv-4")
                    renewals += left > previous
                    previous = left
            with pytest.raises(LeaseHeld):
                async with Lease(coordination, "conv-4"):
                    pass
            assert not lease.lost.is_set()

    async def test_losing_the_lease_is_reported(self, coordination: Coordination) -> None:
        lost: list[bool] = []
        async with Lease(
            coordination, "conv-5", ttl_seconds=0.3, on_lost=lambda: lost.append(True)
        ) as lease:
            # Someone else ends up holding it (e.g. after a pause longer than the TTL).
            assert await coordination.release("conv-5", lease._token)
            assert await coordination.acquire("conv-5", "intruder", 60_000)
            await asyncio.wait_for(lease.lost.wait(), 10)
        assert lost == [True]
        assert await coordination.release("conv-5", "intruder")  # our exit did not free theirs


class SwallowsACancel:
    """A coordination whose ``extend`` swallows a cancel that arrives while it is in flight,
    as ``asyncio.wait_for`` on Python 3.11 does when the reply and the cancel come together
    (redis-py reads under it): the point of the race, held open."""

    def __init__(self, inner: Coordination) -> None:
        self.inner = inner
        self.in_flight, self.swallowed = asyncio.Event(), asyncio.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def extend(self, key: str, token: str, ttl_ms: int) -> bool:
        self.in_flight.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.swallowed.set()
        return await self.inner.extend(key, token, ttl_ms)


class TestLeaseEndsWhenACancelIsSwallowed:
    async def test_leaving_returns_and_frees_the_lock(self, coordination: Coordination) -> None:
        """A renewer that lived on would keep the lock, and its holder's exit, for ever."""
        swallowing = SwallowsACancel(coordination)
        lease = Lease(swallowing, "conv-7", ttl_seconds=0.3)  # type: ignore[arg-type]
        async with asyncio.timeout(10) as limit:
            async with lease:
                await swallowing.in_flight.wait()
        assert not limit.expired()
        assert swallowing.swallowed.is_set()
        assert lease._renewer is not None
        assert lease._renewer.done()
        assert await coordination.lease_ttl_ms("conv-7") == 0


@pytest.mark.parametrize("backend", ["services"])
async def test_redis_calls_do_not_swallow_a_cancel(coordination: Coordination, monkeypatch) -> None:
    """redis-py may drop a cancel that arrives with a reply; the adapter raises it again."""
    in_flight = asyncio.Event()

    async def set_swallowing(*args: object, **kwargs: object) -> bool:
        in_flight.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)
        return True

    monkeypatch.setattr(coordination.client, "set", set_swallowing)  # type: ignore[attr-defined]
    call = asyncio.create_task(coordination.acquire("conv-8", "token", 1000))
    await asyncio.wait_for(in_flight.wait(), 10)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(call, 10)


class TestEventLog:
    async def test_numbered_replay_and_resume(self, coordination: Coordination) -> None:
        ids = [
            await coordination.append_events("run-1", [("message.delta", f'{{"n": {n}}}')])
            for n in range(5)
        ]
        assert ids == [1, 2, 3, 4, 5]
        everything = await coordination.read_events("run-1", after=0, wait_ms=0)
        assert next((e.id, e.name, e.data) for e in everything) == (1, "message.delta", '{"n": 0}')
        assert [e.id for e in await coordination.read_events("run-1", after=3, wait_ms=0)] == [4, 5]
        assert await coordination.read_events("run-1", after=5, wait_ms=0) == []
        assert await coordination.read_events("other-run", after=0, wait_ms=0) == []

    async def test_a_batch_is_numbered_in_order_after_what_was_there(
        self, coordination: Coordination
    ) -> None:
        assert await coordination.append_events("run-b", [("a", "1")]) == 1
        batch = [(f"e{n}", str(n)) for n in range(2, 7)]
        assert await coordination.append_events("run-b", batch) == 6
        events = await coordination.read_events("run-b", after=0, wait_ms=0)
        assert [(e.id, e.name, e.data) for e in events] == [(1, "a", "1")] + [
            (n, f"e{n}", str(n)) for n in range(2, 7)
        ]

    async def test_explicit_numbers_only_grow(self, coordination: Coordination) -> None:
        """The run numbers its own events; what the log already has is never stored twice
        (an append retried after its reply was lost), and nothing goes in out of order."""
        assert await coordination.append_events("run-x", [("a", "1"), ("b", "2")], first_id=1) == 2
        retried = [("b", "2"), ("c", "3")]
        assert await coordination.append_events("run-x", retried, first_id=2) == 3
        assert await coordination.append_events("run-x", [("late", "0")], first_id=1) == 1
        assert await coordination.append_events("run-x", [("end", "4")]) == 4
        events = await coordination.read_events("run-x", after=0, wait_ms=0)
        assert [(e.id, e.name) for e in events] == [(1, "a"), (2, "b"), (3, "c"), (4, "end")]

    async def test_several_logs_in_one_call(self, coordination: Coordination) -> None:
        await coordination.append_events("run-y", [("a", "1")], first_id=1)
        await coordination.append_to_logs(
            [
                LogBatch("run-y", [("a", "1"), ("b", "2")], 1),
                LogBatch("run-z", [("c", "3")], 5),  # a log that lost 1-4 (Redis restarted)
            ]
        )
        y = await coordination.read_events("run-y", after=0, wait_ms=0)
        z = await coordination.read_events("run-z", after=0, wait_ms=0)
        assert [(e.id, e.name) for e in y] == [(1, "a"), (2, "b")]
        assert [(e.id, e.name) for e in z] == [(5, "c")]

    async def test_a_waiting_reader_wakes_on_append(self, coordination: Coordination) -> None:
        # A reader that did not wake on the append would return nothing when its wait ends.
        reader = asyncio.create_task(coordination.read_events("run-2", after=0, wait_ms=1500))
        await asyncio.sleep(0.05)
        assert not reader.done()
        await coordination.append_events("run-2", [("run.started", "{}")])
        events = await asyncio.wait_for(reader, 10)
        assert [e.name for e in events] == ["run.started"]

    async def test_a_wait_times_out_empty(self, coordination: Coordination) -> None:
        started = time.perf_counter()
        assert await coordination.read_events("run-3", after=0, wait_ms=200) == []
        assert time.perf_counter() - started >= 0.19  # it waited (a busy machine waits longer)

    async def test_expired_logs_go_away(self, coordination: Coordination) -> None:
        await coordination.append_events("run-4", [("run.completed", "{}")])
        await coordination.expire_log("run-4", 1)
        await asyncio.sleep(1.2)
        await coordination.append_events(
            "run-5", [("x", "{}")]
        )  # the in-process log sweeps on write
        assert await coordination.read_events("run-4", after=0, wait_ms=0) == []


class TestSignals:
    async def test_every_subscriber_gets_what_is_published_after_it_subscribed(
        self, coordination: Coordination
    ) -> None:
        first = coordination.subscribe("chan")
        second = coordination.subscribe("chan")
        receivers = asyncio.gather(*(anext(s) for s in (first, second)))
        # Subscribing takes a moment; what is sent before it is not received: send until
        # both have it.
        async with asyncio.timeout(10):
            while not receivers.done():
                await coordination.publish("other", "not for them")
                await coordination.publish("chan", "run-7")
                await asyncio.sleep(0.05)
        assert receivers.result() == ["run-7", "run-7"]
        for subscription in (first, second):
            await subscription.aclose()

    async def test_cancelled_listeners_and_readers_stop_promptly(
        self, coordination: Coordination
    ) -> None:
        """redis-py can swallow a cancellation in a blocking read; shutdown must not hang."""

        async def listen() -> None:
            async for _ in coordination.subscribe("quiet"):
                pass

        async def read() -> None:
            while True:
                await coordination.read_events("quiet-log", 0, 1000)

        for pause in (0, 0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.3):
            tasks = [asyncio.create_task(listen()), asyncio.create_task(read())]
            await asyncio.sleep(pause)
            for task in tasks:
                task.cancel()
            done, _ = await asyncio.wait(tasks, timeout=10)
            assert set(tasks) == done


class TestBucketsChargedTogether:
    async def test_a_refusal_by_one_bucket_charges_none(self, coordination: Coordination) -> None:
        from atelier.coordination.base import Quota

        user_a, user_b = ("u:a", Quota(60, 5)), ("u:b", Quota(60, 5))
        key = ("k:1", Quota(60, 3))
        decisions = [await coordination.rate_limit([user_a, key], 1) for _ in range(4)]
        assert [d.allowed for d in decisions] == [True, True, True, False]
        assert decisions[-1].limit == 3  # the bucket that refused is the one reported
        # The key's ceiling holds for another user too; its own bucket was never charged.
        assert not (await coordination.rate_limit([user_b, key], 1)).allowed
        alone = await coordination.rate_limit([user_b], 1)
        assert alone.allowed
        assert alone.remaining == 4
