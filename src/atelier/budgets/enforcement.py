"""Budgets at work: which ones bind a run, the refusal before it starts, and the hold each
model call takes on them -- its worst case, reserved in SQL under the counter row's lock
before the call, settled to what it cost when it ends.

A call may start when its worst case fits beside what is spent and held -- or, when less
than a worst case is left, alone (nothing else held): so the end of a budget can still be
used, one call at a time, and runs racing on it overspend it by at most one call's cost.
A call that finds the budget held by others waits for them; one that finds it spent
ends its run. Functions flush; the caller's unit of work commits (a refused reservation
is rolled back with the others).
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import (
    Select,
    and_,
    bindparam,
    case,
    delete,
    insert,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.budgets.models import Budget, BudgetPeriod, BudgetReservation
from atelier.db.base import utcnow
from atelier.errors import BudgetExceeded, DomainError
from atelier.runs.events import ACTIVE_STATUSES
from atelier.runs.models import Run
from atelier.usage.money import money_str
from atelier.webhooks import outbox

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # the one period of a "total" budget


def period_start(period: str, now: datetime) -> datetime:
    if period == "day":
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "month":
        return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return EPOCH


@dataclass(frozen=True)
class Binding:
    """A budget that binds a run, as the run needs it (no session needed to read it)."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    scope: str
    subject: str | None
    period: str
    limit: Decimal
    currency: str
    thresholds: tuple[Decimal, ...]

    @classmethod
    def of(cls, budget: Budget) -> Binding:
        return cls(
            budget.id,
            budget.tenant_id,
            budget.scope,
            budget.subject,
            budget.period,
            budget.limit,
            budget.currency,
            tuple(Decimal(t) for t in budget.thresholds),
        )


@dataclass(frozen=True)
class Payer:
    """Whose spend a run is: its tenant, key, end user and agent."""

    tenant_id: uuid.UUID
    api_key_id: uuid.UUID | None
    user_id: str
    agent_id: uuid.UUID | None


async def admit(session: AsyncSession, payer: Payer, currency: str) -> tuple[Binding, ...]:
    """The budgets (in ``currency``) that bind the run, in one statement; ``402
    budget_exceeded`` if one of them is spent for its current period."""
    now = utcnow()
    rows = await session.execute(
        _admitting(payer.api_key_id is not None, payer.agent_id is not None),
        {
            "tenant_id": payer.tenant_id,
            "user_id": payer.user_id,
            "api_key": str(payer.api_key_id),
            "agent": str(payer.agent_id),
            "currency": currency,
            "day": period_start("day", now),
            "month": period_start("month", now),
        },
    )
    bindings = []
    for budget, spent in rows:
        if spent is not None and spent >= budget.limit:
            raise exceeded(Binding.of(budget))
        bindings.append(Binding.of(budget))
    return tuple(bindings)


_PERIOD_START = BudgetPeriod.__table__.c.period_start.type


@functools.cache
def _admitting(by_key: bool, by_agent: bool) -> Select[Budget, Decimal]:
    """``admit``'s statement, built once per shape (with bound parameters):
    it is on every run's way to its start."""
    scopes = [
        Budget.scope == "tenant",
        and_(Budget.scope == "user", Budget.subject == bindparam("user_id")),
    ]
    if by_key:
        scopes.append(and_(Budget.scope == "api_key", Budget.subject == bindparam("api_key")))
    if by_agent:
        scopes.append(and_(Budget.scope == "agent", Budget.subject == bindparam("agent")))
    current = case(
        (Budget.period == "day", bindparam("day", type_=_PERIOD_START)),
        (Budget.period == "month", bindparam("month", type_=_PERIOD_START)),
        else_=EPOCH,
    )
    return (
        select(Budget, BudgetPeriod.spent)
        .outerjoin(
            BudgetPeriod,
            and_(BudgetPeriod.budget_id == Budget.id, BudgetPeriod.period_start == current),
        )
        .where(
            Budget.tenant_id == bindparam("tenant_id"),
            or_(*scopes),
            Budget.currency == bindparam("currency"),
        )
        .order_by(Budget.id)
    )


def _amount(value: Decimal) -> str:
    """12.5 → "12.50", 0.0025 → "0.0025": cents at least, no trailing zeros past them."""
    exact = format(value.normalize(), "f")
    return exact if len(exact.partition(".")[2]) > 2 else f"{value:.2f}"


def exceeded(budget: Binding) -> DomainError:
    """Says which budget, as a person knows it: "the user budget of alice (5.00 USD a day)
    is spent for this day" (its id is in ``budget_id``)."""
    whose = {"tenant": "the tenant's budget"}.get(
        budget.scope, f"the {budget.scope.replace('_', ' ')} budget of {budget.subject}"
    )
    every = "in total" if budget.period == "total" else f"a {budget.period}"
    detail = f"{whose} ({_amount(budget.limit)} {budget.currency} {every}) is spent" + (
        "" if budget.period == "total" else f" for this {budget.period}"
    )
    return BudgetExceeded(
        "budget_exceeded",
        detail,
        extra={"budget_id": str(budget.id), "scope": budget.scope, "subject": budget.subject},
    )


@dataclass(frozen=True)
class Refusal:
    binding: Binding
    spent: bool  # else held by other calls now: it may fit once they settle


async def reserve(
    session: AsyncSession, run_id: uuid.UUID, bindings: tuple[Binding, ...], amount: Decimal
) -> Refusal | None:
    """Hold ``amount`` of every budget for the run's next call; why a budget would not,
    if one would not (then the caller rolls back: nothing is held). One statement takes
    every hold, locking the counter rows in budget order (two runs never wait on each
    other's rows), and one records them."""
    now = utcnow()
    if session.get_bind().dialect.name == "postgresql":
        # A hold need not survive a crash (its run does not either, and the hold and its
        # counter go together): its commit does not wait for the disk.
        await session.execute(text("SET LOCAL synchronous_commit TO OFF"))
    starts = {binding.id: period_start(binding.period, now) for binding in bindings}
    held = await _hold(session, starts, amount)
    if len(held) < len(bindings):
        await _open_periods(session, {b: s for b, s in starts.items() if b not in held})
        held |= await _hold(session, {b: s for b, s in starts.items() if b not in held}, amount)
    for binding in bindings:
        if binding.id not in held:
            spent = await session.scalar(
                select(BudgetPeriod.spent).where(
                    BudgetPeriod.budget_id == binding.id,
                    BudgetPeriod.period_start == starts[binding.id],
                )
            )
            return Refusal(binding, spent is None or spent >= binding.limit)
    await session.execute(
        insert(BudgetReservation),
        [
            {
                "run_id": run_id,
                "budget_id": budget_id,
                "period_start": start,
                "amount": amount,
                "created_at": now,
            }
            for budget_id, start in starts.items()
        ],
    )
    return None


async def _hold(
    session: AsyncSession, starts: dict[uuid.UUID, datetime], amount: Decimal
) -> set[uuid.UUID]:
    """Add ``amount`` to ``reserved`` of each of these periods where the call fits; the
    budgets it was added to."""
    if not starts:
        return set()
    key = tuple_(BudgetPeriod.budget_id, BudgetPeriod.period_start)
    wanted = list(starts.items())
    locked = (
        select(BudgetPeriod.budget_id, BudgetPeriod.period_start)
        .where(key.in_(wanted))
        .order_by(BudgetPeriod.budget_id)
        .with_for_update()
    )
    limit = select(Budget.limit).where(Budget.id == BudgetPeriod.budget_id).scalar_subquery()
    used = BudgetPeriod.spent + BudgetPeriod.reserved
    fits = or_(used + amount <= limit, and_(BudgetPeriod.reserved == 0, BudgetPeriod.spent < limit))
    rows = await session.execute(
        update(BudgetPeriod)
        .where(key.in_(locked), fits)
        .values(reserved=BudgetPeriod.reserved + amount)
        .returning(BudgetPeriod.budget_id)
        .execution_options(synchronize_session=False)
    )
    return set(rows.scalars())


async def settle(
    session: AsyncSession, run_id: uuid.UUID, bindings: tuple[Binding, ...], cost: Decimal
) -> None:
    """The run's call ended having cost ``cost``: its holds become spending, counted in
    the periods they were taken in; a threshold crossed is told once (webhooks)."""
    held = await session.execute(
        delete(BudgetReservation)
        .where(BudgetReservation.run_id == run_id)
        .returning(
            BudgetReservation.budget_id, BudgetReservation.period_start, BudgetReservation.amount
        )
    )
    by_id = {binding.id: binding for binding in bindings}
    for budget_id, start, amount in sorted(held.all()):  # in id order, as they were taken
        spent = await session.scalar(
            update(BudgetPeriod)
            .where(BudgetPeriod.budget_id == budget_id, BudgetPeriod.period_start == start)
            .values(reserved=BudgetPeriod.reserved - amount, spent=BudgetPeriod.spent + cost)
            .returning(BudgetPeriod.spent)
        )
        binding = by_id.get(budget_id)
        if spent is not None and binding is not None:
            await _crossed(session, binding, start, spent - cost, spent)


async def release_abandoned(session: AsyncSession) -> int:
    """Holds of runs that ended without settling (their process died) or are gone."""
    alive = select(Run.id).where(Run.status.in_(ACTIVE_STATUSES))
    # A look first, which writes nothing: there is rarely anything to release.
    orphan = select(BudgetReservation.run_id).where(BudgetReservation.run_id.not_in(alive))
    if await session.scalar(orphan.limit(1)) is None:
        return 0
    held = await session.execute(
        delete(BudgetReservation)
        .where(BudgetReservation.run_id.not_in(alive))
        .returning(
            BudgetReservation.budget_id, BudgetReservation.period_start, BudgetReservation.amount
        )
    )
    released = held.all()
    for budget_id, start, amount in released:
        await session.execute(
            update(BudgetPeriod)
            .where(BudgetPeriod.budget_id == budget_id, BudgetPeriod.period_start == start)
            .values(reserved=BudgetPeriod.reserved - amount)
        )
    return len(released)


async def _open_periods(session: AsyncSession, starts: dict[uuid.UUID, datetime]) -> None:
    """The counter rows of periods that just began (a new day or month)."""
    dialect = session.get_bind().dialect.name
    upsert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    for budget_id, start in starts.items():
        await session.execute(
            upsert(BudgetPeriod)
            .values(budget_id=budget_id, period_start=start, spent=0, reserved=0)
            .on_conflict_do_nothing()
        )


async def _crossed(
    session: AsyncSession, binding: Binding, start: datetime, before: Decimal, after: Decimal
) -> None:
    """Tell of the thresholds ``before -> after`` crossed: each once per period, as only
    the one update that crosses it sees both sides."""
    report = {
        "budget_id": str(binding.id),
        "scope": binding.scope,
        "subject": binding.subject,
        "period": binding.period,
        "period_start": start.isoformat(),
        "limit": money_str(binding.limit),
        "spent": money_str(after),
        "currency": binding.currency,
    }
    for threshold in binding.thresholds:
        line = binding.limit * threshold
        if before < line <= after:
            data = report | {"threshold": str(threshold)}
            await outbox.record(session, binding.tenant_id, "budget.threshold", data)
    if before < binding.limit <= after:
        await outbox.record(session, binding.tenant_id, "budget.exceeded", report)
