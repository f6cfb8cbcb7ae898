"""ChannelKeeper: a refused or unreachable control channel is reported and retried, never fatal."""

from __future__ import annotations

import asyncio

import pytest

from gateway.control.keeper import ChannelKeeper
from gateway.errors import BusUnavailableError, ConfigError
from gateway.events import ControlChannelChanged, RecordingObserver
from gateway.testing import FakeClock


class Opener:
    """Refuses the first ``refusals`` opens, then opens."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1
        if self.calls <= self.refusals:
            raise BusUnavailableError("ACCESS_REFUSED - access to exchange 'cmn.control' refused for user 'gw'")


def changes(events: RecordingObserver) -> list[tuple[bool, str]]:
    return [(e.available, e.reason) for e in events.events if isinstance(e, ControlChannelChanged)]


async def settle(clock: FakeClock, seconds: float) -> None:
    for _ in range(10):
        await asyncio.sleep(0)
    clock.advance(seconds)
    for _ in range(10):
        await asyncio.sleep(0)


async def test_an_open_channel_is_reported_available_once() -> None:
    clock, events, opener = FakeClock(), RecordingObserver(), Opener(0)
    keeper = ChannelKeeper(opener, transport="rabbitmq", clock=clock, observer=events)
    await keeper.start()
    assert keeper.available and opener.calls == 1
    assert changes(events) == [(True, "")]
    await keeper.aclose()


async def test_a_refused_channel_is_reported_then_retried_with_growing_delays_until_it_opens() -> None:
    clock, events, opener = FakeClock(), RecordingObserver(), Opener(3)
    keeper = ChannelKeeper(opener, transport="rabbitmq", clock=clock, observer=events, first_retry=1, max_retry=3)
    await keeper.start()  # returns at once: start-up is never held by the control channel
    assert not keeper.available
    assert changes(events) == [(False, "ACCESS_REFUSED - access to exchange 'cmn.control' refused for user 'gw'")]
    await settle(clock, 0.9)
    assert opener.calls == 1  # not before the first delay
    await settle(clock, 0.1)
    assert opener.calls == 2
    await settle(clock, 2)  # the delay doubled
    assert opener.calls == 3
    await settle(clock, 3)  # and is capped at max_retry
    assert opener.calls == 4 and keeper.available
    assert [available for available, _ in changes(events)] == [False, True]  # one line per transition
    await keeper.aclose()


async def test_closing_stops_the_retries() -> None:
    clock, events, opener = FakeClock(), RecordingObserver(), Opener(100)
    keeper = ChannelKeeper(opener, transport="kafka", clock=clock, observer=events)
    await keeper.start()
    await keeper.aclose()
    await settle(clock, 60)
    assert opener.calls == 1 and clock.sleepers == 0


async def test_only_broker_trouble_is_retried() -> None:
    async def misconfigured() -> None:
        raise ConfigError("a bug or a bad setting is not the broker's refusal")

    keeper = ChannelKeeper(misconfigured, transport="kafka", clock=FakeClock(), observer=RecordingObserver())
    with pytest.raises(ConfigError):
        await keeper.start()
