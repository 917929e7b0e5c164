"""A second message while the agent works: refused (409), queued behind the active run,
or interrupting it -- never two runs at once on one conversation, and in order."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from atelier.conversations.models import Message
from atelier.llm.base import ToolCall, ToolResult
from atelier.runs.environment import RunRequest
from atelier.runs.models import Approval, Run, RunFileBackup
from atelier.runs.supervision import RunTask
from atelier.runs.tools import WorkspaceTools
from atelier.tenants.principal import Principal
from tests.conftest import Caller
from tests.runs.helpers import (
    ENDED,
    BlockingTools,
    new_conversation,
    parse_sse,
    use_tools,
    wait_status,
)

SLOW = " ".join(f"word{i}" for i in range(40))  # the offline model echoes it word by word


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"offline_model_delay_seconds": 0.02}


async def post(
    tcp: httpx.AsyncClient, caller: Caller, conversation: str, text: str, strategy: str
) -> httpx.Response:
    return await tcp.post(
        f"/v1/conversations/{conversation}/runs",
        json={"input": text, "multitask_strategy": strategy},
        headers=caller.headers(),
    )


async def all_ended(app: FastAPI, conversation: str, count: int) -> list[Run]:
    async with asyncio.timeout(60):
        while True:
            async with app.state.resources.sessionmaker() as session:
                runs = list(
                    await session.scalars(
                        select(Run)
                        .where(Run.conversation_id == uuid.UUID(conversation))
                        .order_by(Run.created_at, Run.id)
                    )
                )
            if len(runs) == count and all(r.status in ENDED for r in runs):
                return runs
            await asyncio.sleep(0.05)


def never_overlap(runs: list[Run]) -> None:
    started = sorted((r for r in runs if r.started_at), key=lambda r: r.started_at)
    for before, after in itertools.pairwise(started):
        assert before.ended_at is not None
        assert before.ended_at <= after.started_at, (before.id, after.id)


class TestEnqueue:
    async def test_queued_runs_start_in_order_when_the_one_before_ends(
        self, app, tcp, caller
    ) -> None:
        conversation = await new_conversation(tcp, caller)
        first = await post(tcp, caller, conversation, SLOW, "enqueue")
        second = await post(tcp, caller, conversation, "second", "enqueue")
        third = await post(tcp, caller, conversation, "third", "enqueue")
        assert [r.status_code for r in (first, second, third)] == [202, 202, 202]
        assert (second.json()["status"], third.json()["status"]) == ("queued", "queued")
        runs = await all_ended(app, conversation, 3)
        assert [r.status for r in runs] == ["completed"] * 3
        never_overlap(runs)
        assert [r.input for r in sorted(runs, key=lambda r: r.started_at)] == [
            SLOW,
            "second",
            "third",
        ]
        async with app.state.resources.sessionmaker() as session:
            asked = list(
                await session.scalars(
                    select(Message.content).where(Message.role == "user").order_by(Message.seq)
                )
            )
        assert asked == [SLOW, "second", "third"]

    async def test_twenty_at_once_never_overlap_and_keep_their_order(
        self, app, tcp, caller
    ) -> None:
        conversation = await new_conversation(tcp, caller)
        answers = await asyncio.gather(
            *(post(tcp, caller, conversation, f"message {i}", "enqueue") for i in range(20))
        )
        assert {a.status_code for a in answers} == {202}
        runs = await all_ended(app, conversation, 20)
        assert {r.status for r in runs} == {"completed"}
        never_overlap(runs)
        by_start = sorted(runs, key=lambda r: r.started_at)
        assert [r.id for r in by_start] == [r.id for r in runs]  # queued order = start order

    async def test_a_queued_run_streams_once_it_starts(self, app, tcp, caller) -> None:
        conversation = await new_conversation(tcp, caller)
        await post(tcp, caller, conversation, SLOW, "enqueue")
        streamed = await tcp.post(
            f"/v1/conversations/{conversation}/runs",
            json={"input": "after you", "multitask_strategy": "enqueue"},
            headers=caller.headers(Accept="text/event-stream"),
        )
        events = parse_sse(streamed.text)
        assert events[0][1] == "run.started"
        assert events[-1][1] == "run.completed"
        assert [number for number, _, _ in events] == list(range(1, len(events) + 1))

    async def test_a_queued_run_can_be_cancelled_and_never_runs(self, app, tcp, caller) -> None:
        conversation = await new_conversation(tcp, caller)
        await post(tcp, caller, conversation, SLOW, "enqueue")
        queued = (await post(tcp, caller, conversation, "never", "enqueue")).json()["id"]
        path = f"/v1/conversations/{conversation}/runs/{queued}"
        cancelled = await tcp.post(f"{path}/cancel", headers=caller.headers())
        assert cancelled.status_code == 202
        events = parse_sse((await tcp.get(f"{path}/events", headers=caller.headers())).text)
        assert [(n, name) for n, name, _ in events] == [(1, "run.cancelled")]
        runs = await all_ended(app, conversation, 2)
        assert [r.status for r in runs] == ["completed", "cancelled"]
        assert runs[1].started_at is None

    async def test_a_cancel_while_its_turn_is_being_tried_still_cancels(
        self, app, tcp, caller
    ) -> None:
        """The queue tries a queued run's turn (its task is being accepted here, and will
        find the conversation busy) just as its cancel comes: the row says cancelled, and
        the run never starts once the conversation is free."""
        conversation = await new_conversation(tcp, caller)
        use_tools(app, tools := BlockingTools())
        await post(tcp, caller, conversation, "list files", "enqueue")
        await asyncio.wait_for(tools.entered.wait(), 10)
        queued = (await post(tcp, caller, conversation, "never", "enqueue")).json()["id"]
        manager = app.state.resources.runs
        env = manager.env
        owner = Principal(caller.tenant_id, "", uuid.UUID(int=0), "alice")
        trying = RunTask(
            env,
            RunRequest(
                owner,
                uuid.UUID(conversation),
                "agent",
                "never",
                None,
                queued_run_id=uuid.UUID(queued),
            ),
        )
        manager.local[trying.run_id] = trying  # its accept under way, not done
        try:
            path = f"/v1/conversations/{conversation}/runs/{queued}"
            assert (await tcp.post(f"{path}/cancel", headers=caller.headers())).status_code == 202
        finally:  # (the queue's own try may have taken its place meanwhile)
            if manager.local.get(trying.run_id) is trying:
                del manager.local[trying.run_id]
        tools.release.set()
        runs = await all_ended(app, conversation, 2)
        assert [r.status for r in runs] == ["completed", "cancelled"]
        assert runs[1].started_at is None

    async def test_reject_is_still_409_and_waits_behind_the_queue(self, app, tcp, caller) -> None:
        conversation = await new_conversation(tcp, caller)
        await post(tcp, caller, conversation, SLOW, "enqueue")
        await post(tcp, caller, conversation, "queued", "enqueue")
        refused = await post(tcp, caller, conversation, "now", "reject")
        assert (refused.status_code, refused.json()["code"]) == (409, "conversation_busy")


class TestInterrupt:
    async def test_the_active_run_is_cancelled_with_its_work_kept_then_the_new_one_runs(
        self, app, tcp, caller
    ) -> None:
        conversation = await new_conversation(tcp, caller)
        active = (await post(tcp, caller, conversation, SLOW, "reject")).json()["id"]
        async with asyncio.timeout(30):  # it has said something
            while not await _partial(app, active):
                await asyncio.sleep(0.02)
        await post(tcp, caller, conversation, "more", "enqueue")  # waits behind both
        interrupting = await post(tcp, caller, conversation, "stop, do this", "interrupt")
        assert interrupting.status_code == 202
        runs = await all_ended(app, conversation, 3)
        by_id = {str(r.id): r for r in runs}
        assert by_id[active].status == "cancelled"
        never_overlap(runs)
        order = [r.input for r in sorted(runs, key=lambda r: r.started_at)]
        assert order == [SLOW, "stop, do this", "more"]
        async with app.state.resources.sessionmaker() as session:
            kept = await session.scalar(
                select(Message).where(
                    Message.run_id == uuid.UUID(active), Message.role == "assistant"
                )
            )
        assert kept is not None
        assert kept.incomplete is True


async def _partial(app: FastAPI, run_id: str) -> bool:
    run = app.state.resources.runs.local.get(uuid.UUID(run_id))
    return run is not None and run.events.last_id >= 3


class HeldAtRead:
    """Workspace tools that really write and delete, but hold a ``read_file`` call until
    the run is stopped: the run has changed files when it is cut short."""

    def __init__(self) -> None:
        self.holding = asyncio.Event()

    def __call__(self, root: Path) -> HeldAtRead._Tools:
        return HeldAtRead._Tools(self, WorkspaceTools(root))

    class _Tools:
        def __init__(self, gate: HeldAtRead, inner: WorkspaceTools) -> None:
            self.gate, self.inner, self.specs = gate, inner, inner.specs

        async def call(self, call: ToolCall) -> ToolResult:
            if call.name == "read_file":
                self.gate.holding.set()
                await asyncio.Event().wait()
            return await self.inner.call(call)


CHANGES = "write a.txt: changed\nwrite new.txt: fresh\ndelete keep.txt\nread a.txt"


async def files_of(tcp: httpx.AsyncClient, caller: Caller, conversation: str) -> dict[str, bytes]:
    listed = await tcp.get(f"/v1/conversations/{conversation}/files", headers=caller.headers())
    found = {}
    for item in listed.json()["data"]:
        got = await tcp.get(
            f"/v1/conversations/{conversation}/files/{item['path']}", headers=caller.headers()
        )
        found[item["path"]] = got.content
    return found


async def cut_short(app: FastAPI, tcp: httpx.AsyncClient, caller: Caller, strategy: str):
    """A conversation with two files, whose run changed them and is held; then a run that
    cuts in with ``strategy``. Returns the conversation and the run cut short."""
    conversation = await new_conversation(tcp, caller)
    for path, data in (("a.txt", b"original"), ("keep.txt", b"keep me")):
        put = await tcp.put(
            f"/v1/conversations/{conversation}/files/{path}", content=data, headers=caller.headers()
        )
        assert put.status_code == 201
    use_tools(app, held := HeldAtRead())
    active = (await post(tcp, caller, conversation, CHANGES, "reject")).json()["id"]
    await asyncio.wait_for(held.holding.wait(), 30)
    cutting = await post(tcp, caller, conversation, "instead", strategy)
    assert cutting.status_code == 202, cutting.text
    runs = await all_ended(app, conversation, 2)
    never_overlap(runs)
    assert [r.status for r in runs] == ["cancelled", "completed"]
    return conversation, active


class TestRollback:
    async def test_the_active_run_is_cancelled_and_its_messages_and_files_undone(
        self, app, tcp, caller
    ) -> None:
        conversation, active = await cut_short(app, tcp, caller, "rollback")
        assert await files_of(tcp, caller, conversation) == {
            "a.txt": b"original",
            "keep.txt": b"keep me",
        }
        async with app.state.resources.sessionmaker() as session:
            left = list(await session.scalars(select(Message).order_by(Message.seq)))
            backups = list(await session.scalars(select(RunFileBackup)))
        assert [m.content for m in left if m.role == "user"] == ["instead"]
        assert all(m.run_id != uuid.UUID(active) for m in left)
        assert backups == []  # used up
        # The next run sees the files as they were.
        use_tools(app, WorkspaceTools)
        ran = await tcp.post(
            f"/v1/conversations/{conversation}/runs",
            json={"input": "read a.txt"},
            headers=caller.headers(Accept="text/event-stream"),
        )
        assert "original" in ran.text

    async def test_a_file_changed_on_both_sides_of_an_approval_wait_comes_back_whole(
        self, app, tcp, caller
    ) -> None:
        """The run changes a.txt, waits for a person, changes a.txt again, then is rolled
        back: a.txt is what it was before the run -- the copy kept at its first change, not
        the run's own first version."""
        careful = {"name": "careful", "approval": {"require": ["delete_file"]}}
        agent = (await tcp.post("/v1/agents", json=careful, headers=caller.headers())).json()
        conversation = await new_conversation(tcp, caller, agent_id=agent["id"])
        for path, data in (("a.txt", b"original"), ("keep.txt", b"keep me")):
            put = await tcp.put(
                f"/v1/conversations/{conversation}/files/{path}",
                content=data,
                headers=caller.headers(),
            )
            assert put.status_code == 201
        use_tools(app, held := HeldAtRead())
        plan = "write a.txt: first\ndelete keep.txt\nwrite a.txt: second\nread a.txt"
        active = (await post(tcp, caller, conversation, plan, "reject")).json()["id"]
        runs = f"/v1/conversations/{conversation}/runs/{active}"
        await wait_status(tcp, caller, conversation, active, ["awaiting_approval"], 30)
        async with app.state.resources.sessionmaker() as session:
            call = await session.scalar(
                select(Approval.call_id).where(Approval.run_id == uuid.UUID(active))
            )
        decided = await tcp.post(
            f"{runs}/approvals/{call}", json={"decision": "approve"}, headers=caller.headers()
        )
        assert decided.status_code == 200, decided.text
        await asyncio.wait_for(held.holding.wait(), 30)
        cutting = await post(tcp, caller, conversation, "instead", "rollback")
        assert cutting.status_code == 202, cutting.text
        await all_ended(app, conversation, 2)
        assert await files_of(tcp, caller, conversation) == {
            "a.txt": b"original",
            "keep.txt": b"keep me",
        }

    async def test_an_interrupt_keeps_the_same_changes(self, app, tcp, caller) -> None:
        """The contrast: without a rollback the cut-short run's work stays."""
        conversation, _ = await cut_short(app, tcp, caller, "interrupt")
        assert await files_of(tcp, caller, conversation) == {
            "a.txt": b"changed",
            "new.txt": b"fresh",
        }
        async with app.state.resources.sessionmaker() as session:
            asked = list(
                await session.scalars(
                    select(Message.content).where(Message.role == "user").order_by(Message.seq)
                )
            )
        assert asked == [CHANGES, "instead"]

    async def test_what_a_run_kept_goes_once_a_later_run_ends(self, app, tcp, caller) -> None:
        conversation = await new_conversation(tcp, caller)
        await tcp.put(
            f"/v1/conversations/{conversation}/files/a.txt", content=b"v1", headers=caller.headers()
        )
        await post(tcp, caller, conversation, "write a.txt: v2", "enqueue")
        await post(tcp, caller, conversation, "write b.txt: other", "enqueue")
        runs = await all_ended(app, conversation, 2)
        async with app.state.resources.sessionmaker() as session:
            kept = list(await session.scalars(select(RunFileBackup)))
        # The first run's copy of a.txt is no longer needed; the second's note of b.txt is.
        assert [(k.run_id, k.path, k.backup_key) for k in kept] == [(runs[1].id, "b.txt", None)]
