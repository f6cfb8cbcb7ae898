"""A lone request at low load waits for no timer on its way through a whole gateway (issue 14).

On both brokers a request, its reply and its telemetry event are sent as soon as they exist: no
producer linger, no flush timer. On RabbitMQ the reply and its telemetry event leave in one socket
write (the coalescing writer waits loop turns, never a timer, and a second write per request would
cost CPU). Only which timers were armed and which bytes were written is checked, never how long
anything took.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson

from tests.fixtures.upstreams import Upstream
from tests.integration.harness import StackFactory

# Below every periodic timer of the gateway (Kafka's 75 ms commit round, the collector governor's
# 100 ms, aiokafka's backoffs) and every deadline; above any batching delay worth having.
SHORT = 0.05


@contextmanager
def watch(loop: asyncio.AbstractEventLoop) -> Iterator[list[tuple[float, str]]]:
    """Every timer shorter than ``SHORT`` armed through ``loop.call_later`` meanwhile, with its callback."""
    armed: list[tuple[float, str]] = []
    original = loop.call_later

    def spy(delay: float, callback: Callable[..., object], *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        if 0 < delay < SHORT:
            armed.append((delay, getattr(callback, "__qualname__", repr(callback))))
        return original(delay, callback, *args, **kwargs)

    # The test loop is asyncio's own (pure Python): an instance attribute shadows the method.
    loop.call_later = spy  # type: ignore[method-assign,assignment]
    try:
        yield armed
    finally:
        del loop.call_later


async def _one(stack: Any, marker: str) -> dict[str, Any]:
    raw = orjson.dumps({"id": marker, "upstream": "echo", "method": "POST", "path": "/", "json": {"n": 1}})
    reply = await stack.client.send_raw(raw, correlation_id=marker, timeout=20)
    return dict(orjson.loads(reply.body))


@contextmanager
def socket_writes() -> Iterator[list[bytes]]:
    """Every ``asyncio.StreamWriter.write`` meanwhile (aiormq writes AMQP frames through one)."""
    writes: list[bytes] = []
    original = asyncio.StreamWriter.write

    def record(self: asyncio.StreamWriter, data: Any) -> None:
        writes.append(bytes(data))
        original(self, data)

    asyncio.StreamWriter.write = record  # type: ignore[method-assign]
    try:
        yield writes
    finally:
        asyncio.StreamWriter.write = original  # type: ignore[method-assign]


async def test_a_lone_request_is_answered_without_any_timer_armed(
    make_stack: StackFactory, echo_upstream: Upstream
) -> None:
    stack = await make_stack({"echo": {"endpoints": [echo_upstream.url]}})
    assert (await _one(stack, f"warm-{uuid.uuid4().hex[:8]}"))["status"] == 200  # connections, metadata
    marker = f"alone-{uuid.uuid4().hex[:8]}"
    with watch(asyncio.get_running_loop()) as armed, socket_writes() as writes:
        reply = await _one(stack, marker)
    assert reply["status"] == 200
    assert armed == []
    if stack.kind == "rabbitmq":
        # The gateway's writes naming the request: the reply (correlation id, body) and the
        # request.completed event (routing key, data.request_id) leave together. The client's own
        # request names it too, but carries no event. (On Kafka aiokafka's sender builds the requests.)
        gateway = [data for data in writes if marker.encode() in data and b"request.completed" in data]
        assert len(gateway) == 1
        assert gateway[0].count(marker.encode()) >= 3  # the reply's correlation id and id, the event's request_id
