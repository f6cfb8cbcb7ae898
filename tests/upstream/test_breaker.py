"""CircuitBreaker on a fake clock: transitions, windows, probes; hypothesis against a naive model."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.testing import FakeClock
from gateway.upstream.breaker import BreakerPolicy, BreakerState, CircuitBreaker
from gateway.upstream.kinds import FailureKind
from tests.upstream.helpers import parked

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
ALLOWED = {(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, OPEN), (HALF_OPEN, CLOSED)}


def breaker(clock: FakeClock, **overrides: object) -> tuple[CircuitBreaker, list[tuple[BreakerState, BreakerState]]]:
    changes: list[tuple[BreakerState, BreakerState]] = []
    policy = BreakerPolicy(
        **{"window_size": 10, "minimum_calls": 4, "open_duration": 5.0, "half_open_calls": 2, **overrides}  # type: ignore[arg-type]  # test overrides
    )
    return CircuitBreaker(policy, clock=clock, on_change=lambda old, new: changes.append((old, new))), changes


def call(b: CircuitBreaker, kind: FailureKind | None, duration: float = 0.01) -> bool:
    if not b.try_acquire():
        return False
    b.record(kind, duration)
    return True


def test_opens_only_after_minimum_calls_at_the_failure_rate() -> None:
    b, changes = breaker(FakeClock())
    for _ in range(3):
        call(b, "connect_error")
    assert b.state is CLOSED  # 3 failures, but minimum_calls is 4
    call(b, "5xx")
    assert b.state is OPEN
    assert changes == [(CLOSED, OPEN)]
    assert not b.try_acquire()


def test_failure_rate_below_threshold_stays_closed() -> None:
    b, _ = breaker(FakeClock(), failure_rate_threshold=50.0, minimum_calls=10)
    for i in range(10):
        call(b, "timeout" if i % 3 == 0 else None)  # 4 of 10 fail: 40 %
    assert b.state is CLOSED


def test_count_window_forgets_old_calls() -> None:
    b, _ = breaker(FakeClock(), window_size=4, minimum_calls=4, failure_rate_threshold=75.0)
    for kind in ("5xx", "5xx", None, None, None, None):
        call(b, kind)  # both failures have slid out of the 4-call window
    call(b, "5xx")
    call(b, "5xx")
    assert b.state is CLOSED  # 2 of the last 4
    call(b, "5xx")
    assert b.state is OPEN


def test_time_window_forgets_calls_older_than_its_seconds() -> None:
    clock = FakeClock()
    b, _ = breaker(clock, window_type="time", window_size=10, minimum_calls=4)
    for _ in range(3):
        call(b, "5xx")
    clock.advance(11.0)
    call(b, "5xx")
    assert b.state is CLOSED  # the first three have left the window
    for _ in range(3):
        call(b, "5xx")
    assert b.state is OPEN


def test_slow_calls_trip_it_even_when_they_succeed() -> None:
    b, _ = breaker(FakeClock(), slow_call_duration=1.0, slow_call_rate_threshold=50.0)
    for _ in range(4):
        call(b, None, duration=2.0)
    assert b.state is OPEN


def test_unconfigured_failure_kinds_do_not_count() -> None:
    b, _ = breaker(FakeClock(), failure_on=frozenset({"connect_error"}))
    for _ in range(10):
        call(b, "5xx")
    assert b.state is CLOSED


def test_half_open_after_open_duration_then_limited_probes_close_it() -> None:
    clock = FakeClock()
    b, changes = breaker(clock)
    for _ in range(4):
        call(b, "5xx")
    clock.advance(4.9)
    assert b.state is OPEN
    clock.advance(0.1)
    assert b.state is HALF_OPEN
    assert b.try_acquire()
    assert b.try_acquire()
    assert not b.try_acquire()  # only half_open_calls probes
    b.record(None, 0.01)
    b.record(None, 0.01)
    assert b.state is CLOSED
    assert changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]


def test_failing_probes_reopen_for_another_open_duration() -> None:
    clock = FakeClock()
    b, changes = breaker(clock)
    for _ in range(4):
        call(b, "5xx")
    clock.advance(5.0)
    call(b, "5xx")
    call(b, None)  # 1 of 2 probes failed: 50 % ≥ threshold
    assert b.state is OPEN
    clock.advance(4.0)
    assert b.state is OPEN
    assert changes[-1] == (HALF_OPEN, OPEN)


def test_released_probe_is_given_back() -> None:
    clock = FakeClock()
    b, _ = breaker(clock, half_open_calls=1)
    for _ in range(4):
        call(b, "5xx")
    clock.advance(5.0)
    assert b.try_acquire()
    assert not b.try_acquire()
    b.release()  # e.g. the pool had no slot: the probe never ran
    assert b.try_acquire()


async def test_moves_to_half_open_by_itself_on_time() -> None:
    clock = FakeClock()
    b, changes = breaker(clock)
    for _ in range(4):
        call(b, "5xx")
    await parked(clock)  # the half-open timer
    clock.advance(5.0)
    for _ in range(3):
        await asyncio.sleep(0)
    assert changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN)]  # without anyone asking for the state
    await b.aclose()


class NaiveModel:
    """The spec written as plainly as possible: keep every outcome, recompute everything."""

    def __init__(self, policy: BreakerPolicy) -> None:
        self.p = policy
        self.state = CLOSED
        self.window: list[tuple[bool, bool]] = []
        self.probes: list[tuple[bool, bool]] = []
        self.issued = 0
        self.opened_at = 0.0

    def tick(self, now: float) -> None:
        if self.state is OPEN and now - self.opened_at >= self.p.open_duration:
            self.go(HALF_OPEN, now)

    def go(self, state: BreakerState, now: float) -> None:
        self.state, self.window, self.probes, self.issued = state, [], [], 0
        if state is OPEN:
            self.opened_at = now

    def tripped(self, outcomes: list[tuple[bool, bool]]) -> bool:
        n = len(outcomes)
        failed = sum(f for f, _ in outcomes) * 100 >= self.p.failure_rate_threshold * n
        slow = sum(s for _, s in outcomes) * 100 >= self.p.slow_call_rate_threshold * n
        return failed or slow

    def acquire(self, now: float) -> bool:
        self.tick(now)
        if self.state is CLOSED:
            return True
        if self.state is HALF_OPEN and self.issued < self.p.half_open_calls:
            self.issued += 1
            return True
        return False

    def record(self, failed: bool, slow: bool, now: float) -> None:
        self.tick(now)
        if self.state is CLOSED:
            self.window = [*self.window, (failed, slow)][-self.p.window_size :]
            if len(self.window) >= self.p.minimum_calls and self.tripped(self.window):
                self.go(OPEN, now)
        elif self.state is HALF_OPEN:
            self.probes.append((failed, slow))
            if len(self.probes) == self.p.half_open_calls:
                self.go(OPEN if self.tripped(self.probes) else CLOSED, now)


steps = st.lists(
    st.tuples(
        st.sampled_from(["call_ok", "call_fail", "call_slow", "advance"]),
        st.floats(min_value=0.0, max_value=4.0),
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(
    steps=steps,
    window=st.integers(1, 8),
    minimum=st.integers(1, 8),
    probes=st.integers(1, 4),
    threshold=st.sampled_from([25.0, 50.0, 100.0]),
)
def test_breaker_matches_the_naive_model(
    steps: list[tuple[str, float]], window: int, minimum: int, probes: int, threshold: float
) -> None:
    clock = FakeClock()
    b, changes = breaker(
        clock,
        window_size=window,
        minimum_calls=minimum,
        half_open_calls=probes,
        failure_rate_threshold=threshold,
        slow_call_rate_threshold=50.0,
        slow_call_duration=1.0,
    )
    model = NaiveModel(b.policy)
    for action, amount in steps:
        if action == "advance":
            clock.advance(amount)
            continue
        now = clock.monotonic()
        permitted = b.try_acquire()
        assert permitted == model.acquire(now)
        if permitted:
            failed, slow = action == "call_fail", action == "call_slow"
            b.record("5xx" if failed else None, 2.0 if slow else 0.1)
            model.record(failed, slow, now)
        model.tick(clock.monotonic())
        assert b.state is model.state
    assert all(change in ALLOWED for change in changes)
