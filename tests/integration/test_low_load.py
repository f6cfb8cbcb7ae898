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


async def test_a_lone_request_is_answered_without_any_timer_armed(
    make_stack: StackFactory, echo_upstream: Upstream
) -> None:
    stack = await make_stack({"echo": {"endpoints": [echo_upstream.url]}})
    assert (await _one(stack, f"warm-{uuid.uuid4().hex[:8]}"))["status"] == 200  # connections, metadata
    with watch(asyncio.get_running_loop()) as armed:
        reply = await _one(stack, f"alone-{uuid.uuid4().hex[:8]}")
    assert reply["status"] == 200
    assert armed == []


async def test_on_rabbitmq_the_reply_and_its_event_leave_in_one_write(
    make_stack: StackFactory, echo_upstream: Upstream
) -> None:
    stack = await make_stack({"echo": {"endpoints": [echo_upstream.url]}})
    if stack.kind != "rabbitmq":
        return  # Kafka has no socket writes of ours to look at: aiokafka's sender builds the request
    writes: list[bytes] = []
    original = asyncio.StreamWriter.write

    def record(self: asyncio.StreamWriter, data: Any) -> None:
        writes.append(bytes(data))
        original(self, data)

    await _one(stack, f"warm-{uuid.uuid4().hex[:8]}")
    marker = f"alone-{uuid.uuid4().hex[:8]}".encode()
    asyncio.StreamWriter.write = record  # type: ignore[method-assign]
    try:
        await _one(stack, marker.decode())
    finally:
        asyncio.StreamWriter.write = original  # type: ignore[method-assign]
    # The gateway's writes naming the request: the reply (correlation id, body) and the
    # request.completed event (routing key and data.request_id). The client's own request names it
    # too, but carries no event.
    gateway = [data for data in writes if marker in data and b"request.completed" in data]
    assert len(gateway) == 1
    (joined,) = gateway
    assert joined.count(marker) >= 3  # the reply's correlation id and id, and the event's request_id
