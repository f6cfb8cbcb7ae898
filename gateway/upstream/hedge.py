"""Hedged requests: when an attempt is slow to answer, race it against another on a different endpoint.

    hedge: {after_ms: 50, max: 1}     # or after_ms: p95, the upstream's recent 95th percentile

The router decides *whether* a request may hedge (safe to replay, the retry budget allows it,
another endpoint is free) and what counts as a final answer; this module owns *when* (``Hedging``:
the fixed delay, or the learned quantile) and the race itself (``race``).

The race, for one round of the router's attempt loop::

    t=0        first attempt starts
    t=delay    no final answer yet → hedge 1 starts (if ``start_hedge`` says one may)
    t=2·delay  still none → hedge 2 (when ``max`` ≥ 2) ...
    the first *final* answer (a success, or a failure not worth retrying) wins at once; every other
    attempt is cancelled, and a cancelled attempt gives back its pool slot and breaker permit and
    is no verdict on its endpoint (the router's cancellation path does that)
    an attempt that ends in a retryable failure while others still run leaves the race to them;
    when the last one ends that way, the round's outcome is the last such failure, and the router's
    retry loop decides (backoff, budget, deadline) as it does for an unhedged attempt
    an attempt that raises a ``GatewayError`` (pool exhausted, deadline) also leaves the race; if
    nothing else is left, the last retryable failure stands, else the error is raised

A first attempt that fails fast, before the hedge delay, therefore ends the round without a hedge:
the ordinary retry (with its backoff) follows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from gateway.clock import Clock
from gateway.errors import GatewayError
from gateway.upstream.latency import LatencyTracker

T = TypeVar("T")
MAX_HEDGES = 3  # per request: each hedge is one more copy of the request on the upstream


@dataclass(frozen=True, slots=True)
class HedgePolicy:
    after: float | None  # seconds; None: the upstream's recent ``quantile`` of attempt latency
    max: int = 1  # hedges per request, at most MAX_HEDGES
    quantile: float = 0.95
    window: float = 60.0  # seconds of recent attempts the quantile is taken over
    min_samples: int = 20  # fewer attempts than this in the window: no hedging yet


class Hedging:
    """One upstream's hedging: how long an attempt may go unanswered before a hedge is sent.

    With ``after: None`` it learns the delay from attempts the router reports through ``observe``;
    until ``min_samples`` are in the window it does not hedge (a guessed delay could double the
    load of an upstream it knows nothing about).
    """

    __slots__ = ("_clock", "policy", "tracker")

    def __init__(self, policy: HedgePolicy, *, clock: Clock) -> None:
        self.policy = policy
        self._clock = clock
        self.tracker = LatencyTracker(policy.window, min_samples=policy.min_samples) if policy.after is None else None

    def delay(self, remaining: float) -> float | None:
        """Seconds until a hedge is due, or None: no hedging now (not learned yet, or past the deadline)."""
        after = self.policy.after
        if after is None and self.tracker is not None:
            after = self.tracker.quantile(self._clock.monotonic(), self.policy.quantile)
        if after is None or after >= remaining:
            return None
        return after

    def observe(self, seconds: float) -> None:
        """One attempt's latency (a cancelled loser's time so far: it was at least that slow)."""
        if self.tracker is not None:
            self.tracker.record(self._clock.monotonic(), seconds)

    def __repr__(self) -> str:
        policy = self.policy
        after = f"{policy.after * 1000:g} ms" if policy.after is not None else f"p{policy.quantile * 100:g}"
        learned = f" {self.tracker!r}" if self.tracker is not None else ""
        return f"<Hedging after {after}, max {self.policy.max}{learned}>"


@dataclass(frozen=True, slots=True)
class Finish(Generic[T]):
    """How a race ended: ``outcome`` came from attempt ``by`` (0 the first, n the n-th hedge)."""

    outcome: T
    by: int
    final: bool  # a final answer that ended the race, not the last retryable failure


async def race(
    first: Coroutine[Any, Any, T],
    *,
    start_hedge: Callable[[], Coroutine[Any, Any, T] | None],
    delay: float,
    hedges: int,
    final: Callable[[T], bool],
    clock: Clock,
) -> Finish[T]:
    """Run ``first``; every ``delay`` s without a final outcome, start ``start_hedge()`` (at most
    ``hedges``; a None from it ends hedging). See the module docstring for who wins."""
    order: dict[asyncio.Future[T], int] = {asyncio.ensure_future(first): 0}
    running = set(order)
    timer: asyncio.Future[None] | None = asyncio.ensure_future(clock.sleep(delay)) if hedges > 0 else None
    fallback: Finish[T] | None = None
    error: GatewayError | None = None
    try:
        while running:
            waiting: set[asyncio.Future[Any]] = {*running, timer} if timer is not None else set(running)
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            for task in sorted(done & running, key=order.__getitem__):
                running.discard(task)
                try:
                    outcome = task.result()
                except GatewayError as exc:
                    error = exc  # this attempt leaves the race to the others
                    continue
                if final(outcome):
                    return Finish(outcome, order[task], final=True)
                fallback = Finish(outcome, order[task], final=False)
            if timer is not None and timer in done:
                # Only beside an attempt still running: once all have failed, what follows is a retry.
                timer = _next_hedge(start_hedge, order, running, delay, hedges, clock) if running else None
        if fallback is not None:
            return fallback
        assert error is not None  # every attempt ended, each with an outcome or a GatewayError
        raise error
    finally:
        await _cancel(running, timer)


def _next_hedge(
    start_hedge: Callable[[], Coroutine[Any, Any, T] | None],
    order: dict[asyncio.Future[T], int],
    running: set[asyncio.Future[T]],
    delay: float,
    hedges: int,
    clock: Clock,
) -> asyncio.Future[None] | None:
    """Start the hedge that is due; the timer for the one after it, or None when hedging is over."""
    attempt = start_hedge()
    if attempt is None:
        return None
    task = asyncio.ensure_future(attempt)
    order[task] = len(order)
    running.add(task)
    if len(order) - 1 >= hedges:
        return None
    return asyncio.ensure_future(clock.sleep(delay))


async def _cancel(running: set[asyncio.Future[T]], timer: asyncio.Future[None] | None) -> None:
    """Cancel the losers and wait until each has given back what it held."""
    pending: list[asyncio.Future[Any]] = [*running, *([timer] if timer is not None else [])]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
