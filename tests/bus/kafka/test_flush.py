"""A lone record leaves at once: no linger timer is armed for it (issue 14, latency at low load).

aiokafka arms a timer of ``linger_ms`` for a batch that may wait for more records to join it; with
the producer's default (``DEFAULT_LINGER_MS``, none) a record goes into the next produce request
straight away, and records that come while one is in flight still share the next one. These tests
watch the event loop's timers while a record is sent through a real Tansu broker (through a whole
gateway: tests/integration/test_low_load.py); no timing is asserted, only which timers were armed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from gateway.bus.kafka.producer import DEFAULT_LINGER_MS, KafkaProducerLink
from gateway.bus.kafka.records import KafkaOptions
from gateway.clock import SystemClock
from tests.fixtures.kafka import unique

# Far below every periodic timer of the clients (the transport's 75 ms commit round, aiokafka's
# 100 ms+ backoffs and seconds-long request timeouts), far above any linger worth having.
SHORT = 0.05


@contextmanager
def short_timers(loop: asyncio.AbstractEventLoop) -> Iterator[list[float]]:
    """Delays of every timer under ``SHORT`` seconds armed through ``loop.call_later`` meanwhile."""
    armed: list[float] = []
    original = loop.call_later

    def spy(delay: float, callback: Callable[..., object], *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        if 0 < delay < SHORT:
            armed.append(delay)
        return original(delay, callback, *args, **kwargs)

    # The test loop is asyncio's own (pure Python): an instance attribute shadows the method.
    loop.call_later = spy  # type: ignore[method-assign,assignment]
    try:
        yield armed
    finally:
        del loop.call_later  # back to the class's method


async def _send_one(link: KafkaProducerLink, topic: str) -> list[float]:
    await link.send(topic, b"warm-up", key=None, headers={})  # metadata and connection first
    with short_timers(asyncio.get_running_loop()) as armed:
        await link.send(topic, b"alone", key=None, headers={})
    return armed


async def test_a_lone_record_is_sent_without_waiting_for_a_timer(kafka_bootstrap: str) -> None:
    assert DEFAULT_LINGER_MS == 0
    link = KafkaProducerLink(KafkaOptions(kafka_bootstrap), clock=SystemClock())
    try:
        assert await _send_one(link, unique("t.flush")) == []
    finally:
        await link.aclose()


async def test_the_timer_watch_sees_a_lingering_producer(kafka_bootstrap: str) -> None:
    """The watch above can fail: with a linger, the same send arms a timer of about that long."""
    link = KafkaProducerLink(KafkaOptions(kafka_bootstrap), linger_ms=20, clock=SystemClock())
    try:
        armed = await _send_one(link, unique("t.flush"))
    finally:
        await link.aclose()
    assert armed
    assert all(delay <= 0.02 for delay in armed)
