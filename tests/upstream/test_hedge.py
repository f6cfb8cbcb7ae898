"""Hedging's timing and the race itself, with a fake clock and attempts the test answers by hand."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.errors import PoolExhaustedError, UpstreamTimeoutError
from gateway.testing import FakeClock
from gateway.upstream.config import UpstreamsFile
from gateway.upstream.hedge import Finish, HedgePolicy, Hedging, race
from gateway.upstream.policies import hedge_policy
from tests.upstream.helpers import parked


def config_of(hedge: object) -> UpstreamsFile:
    return UpstreamsFile.model_validate({"upstreams": {"svc": {"endpoints": ["http://a:1"], "hedge": hedge}}})


def test_config_derives_a_fixed_or_a_learned_delay() -> None:
    fixed = hedge_policy(config_of({"after_ms": 50}).upstreams["svc"])
    learned = hedge_policy(config_of({"after_ms": "p95", "max": 2}).upstreams["svc"])
    assert fixed == HedgePolicy(after=0.05, max=1)
    assert learned is not None and learned.after is None and learned.max == 2 and learned.quantile == 0.95
    absent = UpstreamsFile.model_validate({"upstreams": {"svc": {"endpoints": ["http://a:1"]}}})
    assert hedge_policy(absent.upstreams["svc"]) is None


@pytest.mark.parametrize(
    "hedge",
    [{"after_ms": 0}, {"after_ms": -5}, {"after_ms": "p99"}, {"after_ms": "50"}, {"after_ms": 1.5},
     {"after_ms": 50, "max": 0}, {"after_ms": 50, "max": 4}, {"max": 1}, {"after_ms": 50, "extra": 1}],
)  # fmt: skip
def test_bad_hedge_settings_are_refused(hedge: object) -> None:
    with pytest.raises(ValidationError) as caught:
        config_of(hedge)
    assert all(e["loc"][:3] == ("upstreams", "svc", "hedge") for e in caught.value.errors())


def test_fixed_delay_hedges_only_when_it_ends_before_the_deadline() -> None:
    hedging = Hedging(HedgePolicy(after=0.05), clock=FakeClock())
    assert hedging.delay(remaining=1.0) == 0.05
    assert hedging.delay(remaining=0.05) is None
    assert "after 50 ms, max 1" in repr(hedging)


def test_learned_delay_waits_for_samples_then_follows_the_recent_p95() -> None:
    clock = FakeClock()
    hedging = Hedging(HedgePolicy(after=None, min_samples=20), clock=clock)
    for _ in range(19):
        hedging.observe(0.010)
    assert hedging.delay(remaining=5.0) is None  # not learned yet: no hedge
    hedging.observe(0.010)
    learned = hedging.delay(remaining=5.0)
    assert learned is not None and 0.010 <= learned < 0.011
    for _ in range(20):
        hedging.observe(0.200)  # the upstream slowed down: half the window is now 200 ms
    slower = hedging.delay(remaining=5.0)
    assert slower is not None and 0.2 <= slower < 0.22
    clock.advance(120.0)
    assert hedging.delay(remaining=5.0) is None  # the window emptied
    assert "p95" in repr(hedging)


class Attempts:
    """Attempts whose answers the test gives; records which were started and which cancelled."""

    def __init__(self) -> None:
        self.answers: list[asyncio.Future[str]] = []
        self.cancelled: list[int] = []

    def start(self) -> Coroutine[Any, Any, str]:
        index = len(self.answers)
        self.answers.append(asyncio.get_running_loop().create_future())
        return self._wait(index)

    async def _wait(self, index: int) -> str:
        try:
            return await self.answers[index]
        except asyncio.CancelledError:
            self.cancelled.append(index)
            raise


def final(outcome: str) -> bool:
    return outcome.startswith("ok")


def racing(clock: FakeClock, attempts: Attempts, *, hedges: int = 1, allow: bool = True) -> asyncio.Task[Finish[str]]:
    return asyncio.ensure_future(
        race(
            attempts.start(),
            start_hedge=lambda: attempts.start() if allow else None,
            delay=0.05,
            hedges=hedges,
            final=final,
            clock=clock,
        )
    )


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_hedge_starts_after_the_delay_and_its_answer_wins() -> None:
    clock, attempts = FakeClock(), Attempts()
    task = racing(clock, attempts)
    await parked(clock)
    clock.advance(0.049)
    await settle()
    assert len(attempts.answers) == 1  # not yet
    clock.advance(0.001)
    await settle()
    assert len(attempts.answers) == 2
    attempts.answers[1].set_result("ok from the hedge")
    assert await task == Finish("ok from the hedge", by=1, final=True)
    assert attempts.cancelled == [0]  # the loser was cancelled, and waited for


async def test_the_first_attempt_answering_in_time_means_no_hedge() -> None:
    clock, attempts = FakeClock(), Attempts()
    task = racing(clock, attempts)
    await parked(clock)
    attempts.answers[0].set_result("ok")
    assert await task == Finish("ok", by=0, final=True)
    assert len(attempts.answers) == 1 and clock.sleepers == 0  # the hedge timer was cancelled too


async def test_a_retryable_failure_leaves_the_race_to_the_hedge() -> None:
    clock, attempts = FakeClock(), Attempts()
    task = racing(clock, attempts)
    await parked(clock)
    clock.advance(0.05)
    await settle()
    attempts.answers[0].set_result("503")  # the first fails while the hedge is in flight
    await settle()
    assert not task.done()
    attempts.answers[1].set_result("ok late")
    assert await task == Finish("ok late", by=1, final=True)


async def test_when_every_attempt_fails_retryably_the_last_failure_stands() -> None:
    clock, attempts = FakeClock(), Attempts()
    task = racing(clock, attempts)
    await parked(clock)
    clock.advance(0.05)
    await settle()
    attempts.answers[1].set_result("503 from the hedge")
    await settle()
    attempts.answers[0].set_result("504 from the first")
    assert await task == Finish("504 from the first", by=0, final=False)


async def test_a_fast_failure_before_the_delay_ends_the_round_without_a_hedge() -> None:
    clock, attempts = FakeClock(), Attempts()
    task = racing(clock, attempts)
    await parked(clock)
    attempts.answers[0].set_result("connect refused")
    assert await task == Finish("connect refused", by=0, final=False)  # the retry loop takes it from here
    assert len(attempts.answers) == 1


async def test_no_hedge_when_none_may_be_started() -> None:
    clock, attempts = FakeClock(), Attempts()
    task = racing(clock, attempts, allow=False)  # budget spent, or no other endpoint
    await parked(clock)
    clock.advance(1.0)
    await settle()
    assert clock.sleepers == 0 and len(attempts.answers) == 1
    attempts.answers[0].set_result("ok slow")
    assert await task == Finish("ok slow", by=0, final=True)


async def test_up_to_max_hedges_one_delay_apart() -> None:
    clock, attempts = FakeClock(), Attempts()
    task = racing(clock, attempts, hedges=2)
    for started in (2, 3):
        await parked(clock)
        clock.advance(0.05)
        await settle()
        assert len(attempts.answers) == started
    clock.advance(1.0)
    await settle()
    assert len(attempts.answers) == 3  # max reached
    attempts.answers[2].set_result("ok")
    assert (await task).by == 2
    assert sorted(attempts.cancelled) == [0, 1]


async def test_an_attempt_that_raises_leaves_the_race_and_the_last_error_is_raised_alone() -> None:
    clock, attempts = FakeClock(), Attempts()
    task = racing(clock, attempts)
    await parked(clock)
    clock.advance(0.05)
    await settle()
    attempts.answers[1].set_exception(PoolExhaustedError("no slot for the hedge"))
    await settle()
    assert not task.done()
    attempts.answers[0].set_exception(UpstreamTimeoutError("deadline ran out"))
    with pytest.raises(UpstreamTimeoutError):
        await task


async def test_cancelling_the_race_cancels_every_attempt() -> None:
    clock, attempts = FakeClock(), Attempts()
    task = racing(clock, attempts)
    await parked(clock)
    clock.advance(0.05)
    await settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(attempts.cancelled) == [0, 1] and clock.sleepers == 0
