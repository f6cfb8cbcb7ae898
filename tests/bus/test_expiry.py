"""Expiry.bound(): asyncio.timeout's semantics for many waits of one timeout, one timer for them all.

Short real timeouts on the running loop (the bound is loop time, as asyncio.timeout's is); every
check is about which wait ends how, not about how fast.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from gateway.bus.expiry import Expiry

TIMEOUT = 0.05


async def wait_in(expiry: Expiry, future: asyncio.Future[str]) -> str:
    with expiry.bound():
        return await future


async def test_a_wait_past_the_timeout_raises_timeout_error() -> None:
    expiry = Expiry(TIMEOUT)
    never: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    with pytest.raises(TimeoutError, match=f"within {TIMEOUT} s"):
        await wait_in(expiry, never)
    assert "0 waiting, 0 expiring" in repr(expiry)


async def test_a_wait_answered_in_time_returns_and_is_never_cancelled_later() -> None:
    expiry = Expiry(TIMEOUT)
    loop = asyncio.get_running_loop()
    answered: asyncio.Future[str] = loop.create_future()
    loop.call_later(TIMEOUT / 5, answered.set_result, "ok")
    assert await wait_in(expiry, answered) == "ok"
    await asyncio.sleep(TIMEOUT * 3)  # the shared timer fires meanwhile: this task is left alone
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_waits_expire_each_at_their_own_deadline_whatever_finished_before() -> None:
    expiry = Expiry(TIMEOUT)
    loop = asyncio.get_running_loop()
    first: asyncio.Future[str] = loop.create_future()
    answered: asyncio.Future[str] = loop.create_future()
    late: asyncio.Future[str] = loop.create_future()
    waits = [asyncio.create_task(wait_in(expiry, first)), asyncio.create_task(wait_in(expiry, answered))]
    await asyncio.sleep(TIMEOUT / 2)
    waits.append(asyncio.create_task(wait_in(expiry, late)))
    answered.set_result("ok")
    await asyncio.wait([waits[0]])
    assert isinstance(waits[0].exception(), TimeoutError)
    assert waits[1].result() == "ok"
    assert not waits[2].done()  # started later: its own deadline is not yet due
    late.set_result("late but in time")
    assert await waits[2] == "late but in time"


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    expiry = Expiry(10.0)
    never: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(wait_in(expiry, never))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_cancellation_from_elsewhere_wins_over_an_expiry_at_the_same_time() -> None:
    expiry = Expiry(TIMEOUT)
    never: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(wait_in(expiry, never))
    await asyncio.sleep(0)
    expiry._expire()  # nothing due yet: a no-op that keeps the timer
    assert not task.done()
    await asyncio.sleep(TIMEOUT * 1.5)
    assert isinstance(task.exception(), TimeoutError)
    # Now both at once: the expiry cancels, a shutdown cancels too; the shutdown's is what shows.
    again = asyncio.create_task(wait_in(expiry, asyncio.get_running_loop().create_future()))
    await asyncio.sleep(0)
    expiry._waiting[again] = 0.0  # due now
    expiry._expire()
    again.cancel()
    with pytest.raises(asyncio.CancelledError):
        await again


async def test_bounds_do_not_nest_within_one_task() -> None:
    expiry = Expiry(TIMEOUT)
    with expiry.bound(), pytest.raises(RuntimeError, match="does not nest"), expiry.bound():
        pass


async def test_a_task_already_being_cancelled_still_gets_timeout_error_when_its_bound_expires() -> None:
    """asyncio.timeout (3.11.3 on, 3.12) compares with the cancellations pending when the block was
    entered, not with none: a task that caught a cancellation and goes on publishing (cleanup in a
    ``finally`` after a shutdown's cancel) gets TimeoutError, which the producer turns into
    KafkaUnavailableError; it got a bare CancelledError from Expiry, past every handler."""
    expiry = Expiry(TIMEOUT)

    async def cleanup_after_a_cancel() -> int:
        current = asyncio.current_task()
        assert current is not None
        current.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(1)
        assert current.cancelling() == 1
        with pytest.raises(TimeoutError, match=f"within {TIMEOUT} s"):
            await wait_in(expiry, asyncio.get_running_loop().create_future())
        return current.cancelling()

    assert await asyncio.create_task(cleanup_after_a_cancel()) == 1  # the caught cancellation still counted


def test_a_bound_on_a_second_event_loop_still_expires() -> None:
    """One Expiry outliving its loop (asyncio.run twice; a module-scoped fixture): the first loop's
    timer, never fired, was taken for the second's, so no wait on the new loop ever expired."""
    expiry = Expiry(TIMEOUT)

    async def answered() -> str:
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        done.set_result("ok")
        return await wait_in(expiry, done)

    async def never() -> None:
        never: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        with pytest.raises(TimeoutError, match=f"within {TIMEOUT} s"):  # the bound's, not wait_for's own
            await asyncio.wait_for(wait_in(expiry, never), TIMEOUT * 40)

    assert asyncio.run(answered()) == "ok"  # leaves its timer set on a loop that then closes
    asyncio.run(never())
