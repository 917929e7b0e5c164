from hypothesis import given
from hypothesis import strategies as st

from atelier.coordination.base import Quota, gcra


def test_burst_then_steady_rate() -> None:
    quota = Quota(per_minute=60, burst=3)
    tat = None
    allowed = []
    for _ in range(5):
        decision, tat = gcra(tat, 0.0, quota, 1)
        allowed.append(decision.allowed)
    assert allowed == [True, True, True, False, False]
    decision, tat = gcra(tat, 1000.0, quota, 1)  # one interval later: one more
    assert decision.allowed
    decision, _ = gcra(tat, 1000.0, quota, 1)
    assert not decision.allowed
    assert 0 < decision.retry_after_ms <= 1001


@given(
    per_minute=st.integers(1, 10_000),
    burst=st.integers(1, 500),
    steps=st.lists(st.tuples(st.floats(0, 5_000), st.integers(1, 5)), max_size=60),
)
def test_never_more_than_burst_plus_refill(per_minute: int, burst: int, steps) -> None:
    quota = Quota(per_minute=per_minute, burst=burst)
    now, tat, spent = 0.0, None, 0
    for delta, cost in steps:
        now += delta
        decision, tat = gcra(tat, now, quota, cost)
        if decision.allowed:
            spent += cost
        assert decision.remaining >= 0
    assert spent <= burst + now / quota.interval_ms + 1e-6
