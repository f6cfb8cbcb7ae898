"""The spec's ``CircuitBreaker``, with resilience4j's semantics, per upstream endpoint.

    CLOSED ──(window has ≥ minimum_calls and failure or slow-call rate ≥ threshold)──▶ OPEN
    OPEN ──(open_duration elapsed, by itself)──▶ HALF_OPEN
    HALF_OPEN ──(half_open_calls probes recorded, rates under thresholds)──▶ CLOSED
    HALF_OPEN ──(probe rates at or over a threshold)──▶ OPEN

Decisions (``try_acquire``, ``record``, ``state``) are synchronous and read only the injected clock;
the only I/O-like part is an optional timer task that makes OPEN → HALF_OPEN happen on time even
when no request asks. Every change goes to ``on_change`` (the forwarder turns it into a
``BreakerStateChanged`` event).

An operator can force a breaker (``cmn breaker open|close|reset``, issue 11):

    forced open    every call refused: CircuitOpenError("forced open by PRINCIPAL")
    forced closed  every call allowed; outcomes are still recorded, so the automatic state
                   underneath keeps moving and is what rules once the forcing ends
    reset          back to automatic

A forced state lasts ``duration`` seconds on the injected clock (an hour by default, so a
forgotten maintenance switch heals itself), then the breaker is automatic again. Every change of
the forcing (forced, reset, expired) goes to ``on_forced``.

Why our own: pybreaker and aiobreaker count consecutive failures only (no sliding failure rate,
no slow calls, no limited half-open probes) and read the system clock; resilience4j is Java.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from gateway.clock import Clock
from gateway.errors import CircuitOpenError
from gateway.upstream.kinds import FAILURE_KINDS, FailureKind, WindowType
from gateway.upstream.snapshot import BreakerSnapshot, ForcedSnapshot, rate, wall_time
from gateway.upstream.window import TimeWindow

_FAILED, _SLOW = 1, 2


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    window_type: WindowType = "count"  # the last N calls, or the calls of the last N seconds
    window_size: int = 50
    minimum_calls: int = 10
    failure_rate_threshold: float = 50.0  # percent
    slow_call_rate_threshold: float = 100.0  # percent
    slow_call_duration: float = 10.0
    open_duration: float = 10.0
    half_open_calls: int = 3
    failure_on: frozenset[FailureKind] = FAILURE_KINDS


class _CountWindow:
    """The outcomes of the last ``size`` calls in a ring, with running totals."""

    __slots__ = ("_next", "_ring", "calls", "failures", "slow")

    def __init__(self, size: int) -> None:
        self._ring = [0] * size
        self._next = 0
        self.calls = self.failures = self.slow = 0

    def add(self, outcome: int) -> None:
        evicted = self._ring[self._next] if self.calls == len(self._ring) else 0
        self.failures += bool(outcome & _FAILED) - bool(evicted & _FAILED)
        self.slow += bool(outcome & _SLOW) - bool(evicted & _SLOW)
        self.calls = min(self.calls + 1, len(self._ring))
        self._ring[self._next] = outcome
        self._next = (self._next + 1) % len(self._ring)


StateListener = Callable[[BreakerState, BreakerState], None]

ForcedKind = Literal["open", "closed"]
FORCED_DURATION = 3600.0  # the default: a forced state heals itself after an hour


@dataclass(frozen=True, slots=True)
class ForcedState:
    """An operator's override: ``state`` until ``until`` on the clock's monotonic scale."""

    state: ForcedKind
    by: str  # the principal who forced it
    until: float


ForcedListener = Callable[["ForcedState | None", str, bool], None]
"""Called with (the new forcing or None when automatic again, the principal, whether it expired)."""


class CircuitBreaker:
    def __init__(
        self,
        policy: BreakerPolicy,
        *,
        clock: Clock,
        on_change: StateListener | None = None,
        on_forced: ForcedListener | None = None,
    ) -> None:
        self.policy = policy
        self._clock = clock
        self._on_change = on_change
        self._on_forced = on_forced
        self._forced: ForcedState | None = None
        self._expiry: asyncio.Task[None] | None = None
        self._state = BreakerState.CLOSED
        self._opened_at = 0.0
        self._count = _CountWindow(policy.window_size)
        self._time = TimeWindow(float(policy.window_size), fields=3)  # calls, failures, slow
        self._probes_issued = 0
        self._probe = _CountWindow(policy.half_open_calls)
        self._timer: asyncio.Task[None] | None = None
        self._tripped = (0, 0, 0)  # calls, failures, slow of the window that last opened it

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._open_elapsed():
            self._transition(BreakerState.HALF_OPEN)
        return self._state

    @property
    def forced(self) -> ForcedState | None:
        """The operator's override in force now; reading it ends one whose time is up."""
        forced = self._forced
        if forced is not None and self._clock.monotonic() >= forced.until:
            self._set_forced(None, forced.by, expired=True)
            return None
        return forced

    def force(self, state: ForcedKind, principal: str, duration: float = FORCED_DURATION) -> ForcedState:
        """Force the breaker ``state`` ("open" or "closed") for ``duration`` seconds, replacing any forcing."""
        if state not in ("open", "closed"):
            raise ValueError(f"a breaker is forced 'open' or 'closed', not {state!r}")
        if duration <= 0:
            raise ValueError(f"a forced state lasts a positive duration, not {duration}")
        forced = ForcedState(state, principal, self._clock.monotonic() + duration)
        self._set_forced(forced, principal)
        self._schedule_expiry(duration)
        return forced

    def reset(self, principal: str) -> bool:
        """Back to automatic; False (and nothing reported) when it was not forced."""
        if self.forced is None:
            return False
        self._set_forced(None, principal)
        return True

    def _set_forced(self, new: ForcedState | None, principal: str, *, expired: bool = False) -> None:
        self._forced = new
        if new is None and self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if self._on_forced is not None:
            self._on_forced(new, principal, expired)

    def _schedule_expiry(self, duration: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (sync tests): the expiry happens on the next look at ``forced``
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry = loop.create_task(self._expire_later(duration))

    async def _expire_later(self, duration: float) -> None:
        await self._clock.sleep(duration)
        self._expiry = None  # this task is ending: an expiry must not cancel it
        _ = self.forced  # reading it performs the due expiry

    def trip(self) -> bool:
        """Open now, as if the window had crossed a threshold (the fleet's quorum said the endpoint is
        down: gateway/control/shared_health.py); False unless CLOSED and not forced. The way back is the
        usual one: OPEN for ``open_duration``, then this replica's own half-open probes decide."""
        if self.forced is not None or self.state is not BreakerState.CLOSED:
            return False
        self._tripped = self._window_totals()
        self._transition(BreakerState.OPEN)
        return True

    def refusal(self) -> CircuitOpenError | None:
        """Why a call is refused now (None when it would be permitted): a forced open names its principal."""
        forced = self.forced
        if forced is not None and forced.state == "open":
            return CircuitOpenError(f"forced open by {forced.by}")
        if self.permits():
            return None
        return CircuitOpenError(f"circuit breaker is {self.state.value}")

    def acquire(self) -> None:
        """``try_acquire`` that raises the refusal (CircuitOpenError) instead of returning False."""
        if (refused := self.refusal()) is not None:
            raise refused
        self.try_acquire()

    def permits(self) -> bool:
        """Whether ``try_acquire`` would succeed now (no side effect beyond time-driven transitions)."""
        forced = self.forced
        if forced is not None:
            return forced.state == "closed"
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        return state is BreakerState.HALF_OPEN and self._probes_issued < self.policy.half_open_calls

    def try_acquire(self) -> bool:
        """Take permission for one call; in HALF_OPEN only ``half_open_calls`` probes get it."""
        if not self.permits():
            return False
        if self._forced is not None:
            return True  # forced closed: not a probe
        if self._state is BreakerState.HALF_OPEN:
            self._probes_issued += 1
        return True

    def release(self) -> None:
        """A permitted call that produced no outcome (cancelled, no pool slot): give the probe back."""
        if self._forced is None and self._state is BreakerState.HALF_OPEN and self._probes_issued > self._probe.calls:
            self._probes_issued -= 1

    def record(self, kind: FailureKind | None, duration: float) -> None:
        """The outcome of a permitted call: its failure kind (None for success) and how long it took."""
        outcome = (_FAILED if kind in self.policy.failure_on else 0) | (
            _SLOW if duration >= self.policy.slow_call_duration else 0
        )
        state = self.state
        if state is BreakerState.CLOSED:
            self._record_closed(outcome)
        elif state is BreakerState.HALF_OPEN:
            self._record_probe(outcome)
        # OPEN: a call permitted before the breaker opened finished late; it tells us nothing new.

    def _record_closed(self, outcome: int) -> None:
        if self.policy.window_type == "time":
            calls, failures, slow = self._time.add_and_total(
                self._clock.monotonic(), 1, int(bool(outcome & _FAILED)), int(bool(outcome & _SLOW))
            )
        else:
            self._count.add(outcome)
            calls, failures, slow = self._count.calls, self._count.failures, self._count.slow
        if calls >= self.policy.minimum_calls and self._over_threshold(calls, failures, slow):
            self._tripped = (calls, failures, slow)
            self._transition(BreakerState.OPEN)

    def _record_probe(self, outcome: int) -> None:
        probe = self._probe
        probe.add(outcome)
        if probe.calls < self.policy.half_open_calls:
            return
        failed = self._over_threshold(probe.calls, probe.failures, probe.slow)
        if failed:
            self._tripped = (probe.calls, probe.failures, probe.slow)
        self._transition(BreakerState.OPEN if failed else BreakerState.CLOSED)

    def _over_threshold(self, calls: int, failures: int, slow: int) -> bool:
        return (
            failures * 100 >= self.policy.failure_rate_threshold * calls
            or slow * 100 >= self.policy.slow_call_rate_threshold * calls
        )

    def _open_elapsed(self) -> bool:
        return self._clock.monotonic() - self._opened_at >= self.policy.open_duration

    def _transition(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        self._count = _CountWindow(self.policy.window_size)
        self._time.clear()
        self._probes_issued = 0
        self._probe = _CountWindow(self.policy.half_open_calls)
        if new is BreakerState.OPEN:
            self._opened_at = self._clock.monotonic()
            self._schedule_half_open()
        if self._on_change is not None:
            self._on_change(old, new)

    def _schedule_half_open(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (sync tests): the transition happens on the next look at ``state``
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.create_task(self._half_open_later())

    async def _half_open_later(self) -> None:
        await self._clock.sleep(self.policy.open_duration)
        _ = self.state  # reading the state performs the due transition

    async def aclose(self) -> None:
        for task in (self._timer, self._expiry):
            if task is not None:
                task.cancel()
        self._timer = self._expiry = None

    def snapshot(self) -> BreakerSnapshot:
        """The state and the rates that decide it, without performing a due transition."""
        state = self._state
        if state is BreakerState.OPEN and self._open_elapsed():
            state = BreakerState.HALF_OPEN  # due; the timer or the next request performs it
            calls = failures = slow = 0
        elif state is BreakerState.OPEN:
            calls, failures, slow = self._tripped
        elif state is BreakerState.HALF_OPEN:
            calls, failures, slow = self._probe.calls, self._probe.failures, self._probe.slow
        else:
            calls, failures, slow = self._window_totals()
        open_until = self._opened_at + self.policy.open_duration if state is BreakerState.OPEN else None
        policy = self.policy
        return BreakerSnapshot(
            state=state.value,
            window=f"{policy.window_type}:{policy.window_size}{'s' if policy.window_type == 'time' else ''}",
            calls=calls,
            failure_rate=rate(failures, calls),
            slow_call_rate=rate(slow, calls),
            open_until=wall_time(self._clock, open_until) if open_until is not None else None,
            forced=self._forced_snapshot(),
        )

    def _forced_snapshot(self) -> ForcedSnapshot | None:
        forced = self._forced
        if forced is None or self._clock.monotonic() >= forced.until:
            return None  # expired: due, not performed (a snapshot only reads)
        return ForcedSnapshot(state=forced.state, by=forced.by, until=wall_time(self._clock, forced.until))

    def _window_totals(self) -> tuple[int, int, int]:
        if self.policy.window_type == "time":
            calls, failures, slow = self._time.totals(self._clock.monotonic())
            return calls, failures, slow
        return self._count.calls, self._count.failures, self._count.slow

    def __repr__(self) -> str:
        calls, failures, slow = self._window_totals()
        forced = f" forced {self._forced.state} by {self._forced.by}" if self._forced is not None else ""
        return (
            f"<CircuitBreaker {self._state.value}{forced} window={self.policy.window_type}:{self.policy.window_size}"
            f" calls={calls} failures={failures} slow={slow}>"
        )
