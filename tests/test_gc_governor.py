"""The collection governor: held above the burst size, released below it or after the longest hold."""

from __future__ import annotations

import asyncio
import gc

from gateway.gc_governor import CollectionGovernor, HoldPolicy
from gateway.testing import FakeClock


class FakeCollector:
    def __init__(self) -> None:
        self.enabled = True
        self.switches: list[str] = []

    def enable(self) -> None:
        self.enabled = True
        self.switches.append("on")

    def disable(self) -> None:
        self.enabled = False
        self.switches.append("off")

    def isenabled(self) -> bool:
        return self.enabled


POLICY = HoldPolicy(hold_above=100, release_below=20, max_hold=30.0, interval=0.1)


def governor(load: list[int], collector: FakeCollector, clock: FakeClock) -> CollectionGovernor:
    return CollectionGovernor(lambda: load[0], collector, clock, POLICY)


def test_holds_during_a_burst_and_releases_when_it_drains() -> None:
    load, collector, clock = [50], FakeCollector(), FakeClock()
    subject = governor(load, collector, clock)
    subject.step()
    assert collector.enabled and not subject.holding  # 50 in flight is no burst
    load[0] = 101
    subject.step()
    assert not collector.enabled and subject.holding and subject.holds == 1
    load[0] = 60
    subject.step()
    assert not collector.enabled  # between the marks: still held (no flapping)
    load[0] = 19
    subject.step()
    assert collector.enabled and not subject.holding
    assert collector.switches == ["off", "on"]


def test_a_burst_that_lasts_is_collected_at_least_every_max_hold() -> None:
    load, collector, clock = [5000], FakeCollector(), FakeClock()
    subject = governor(load, collector, clock)
    subject.step()
    clock.advance(29.9)
    subject.step()
    assert not collector.enabled
    clock.advance(0.1)
    subject.step()
    assert collector.enabled  # released after 30 s although the burst goes on
    subject.step()
    assert not collector.enabled and subject.holds == 2  # and held again for the next stretch
    assert collector.switches == ["off", "on", "off"]


def test_a_collector_switched_off_elsewhere_is_left_off() -> None:
    load, collector, clock = [5000], FakeCollector(), FakeClock()
    collector.enabled = False
    subject = governor(load, collector, clock)
    subject.step()
    load[0] = 0
    subject.step()
    assert not collector.enabled and collector.switches == [] and subject.holds == 0


async def test_run_samples_on_the_clock_and_releases_when_stopped() -> None:
    load, collector, clock = [5000], FakeCollector(), FakeClock()
    subject = governor(load, collector, clock)
    task = asyncio.create_task(subject.run())
    await asyncio.sleep(0)
    assert not collector.enabled
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert collector.enabled  # never left off behind a stopped governor


def test_the_gc_module_is_a_collector() -> None:
    subject = CollectionGovernor(lambda: 0, gc, FakeClock())
    subject.step()
    assert gc.isenabled() and not subject.holding
