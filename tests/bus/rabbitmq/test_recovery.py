"""Resubscriber: retries a failing re-subscription at its interval (on a fake clock), and a newer
trigger replaces a running attempt."""

from __future__ import annotations

import asyncio

import aiormq

from gateway.bus.rabbitmq.recovery import Resubscriber
from gateway.testing import FakeClock


async def settle_loop() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_retries_at_its_interval_until_the_action_succeeds() -> None:
    clock = FakeClock()
    failures = [aiormq.exceptions.ChannelNotFoundEntity("home node is down"), ConnectionResetError()]
    calls: list[float] = []

    async def action() -> None:
        calls.append(clock.monotonic())
        if failures:
            raise failures.pop(0)

    resubscriber = Resubscriber(action, what="consumer", interval=0.5, clock=clock)
    resubscriber.trigger(object())  # as aio-pika calls it, with the channel
    await settle_loop()
    assert calls == [1000.0] and clock.sleepers == 1
    clock.advance(0.4)
    await settle_loop()
    assert len(calls) == 1  # not before the interval
    clock.advance(0.1)
    await settle_loop()
    clock.advance(0.5)
    await settle_loop()
    assert calls == [1000.0, 1000.5, 1001.0]
    assert clock.sleepers == 0 and resubscriber.attempts == 3
    await resubscriber.aclose()


async def test_a_newer_trigger_replaces_a_waiting_attempt_and_close_stops_it() -> None:
    clock = FakeClock()
    calls = 0

    async def always_failing() -> None:
        nonlocal calls
        calls += 1
        raise aiormq.exceptions.ChannelInvalidStateError("closed")

    resubscriber = Resubscriber(always_failing, what="consumer", interval=1.0, clock=clock)
    resubscriber.trigger()
    await settle_loop()
    resubscriber.trigger()  # the channel reopened again meanwhile: start over at once
    await settle_loop()
    assert calls == 2
    await resubscriber.aclose()
    clock.advance(10)
    await settle_loop()
    assert calls == 2  # nothing runs after close
    assert "idle" in repr(resubscriber)


async def test_errors_that_are_not_the_brokers_are_not_retried() -> None:
    clock = FakeClock()

    async def broken() -> None:
        raise ValueError("a bug, not a broker hiccup")

    resubscriber = Resubscriber(broken, what="consumer", interval=1.0, clock=clock)
    resubscriber.trigger()
    await settle_loop()
    assert resubscriber.attempts == 1 and clock.sleepers == 0
    await resubscriber.aclose()
