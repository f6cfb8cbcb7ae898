"""Whole gateways on real brokers: who is dead-lettered, what is settled, and what reaches cmn.telemetry.

- A slow upstream is ``timeout`` and never fills the dead-letter queue; only a request already past
  its deadline on arrival (the publisher's problem) is copied there.
- A reply the broker cannot confirm leaves its request unsettled; the broker redelivers it and the
  redelivery is answered (settling only after the reply is confirmed).
- Background events (breaker changes, retries) reach the stack's own telemetry stream.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
import pytest
from aiohttp import web

from gateway.app import Gateway, load_config
from gateway.bus.rabbitmq.requester import RabbitRequester
from gateway.bus.rabbitmq.transport import RabbitTransport
from gateway.client import GatewayClient
from gateway.clock import SystemClock
from gateway.events import MessageDeadLettered
from gateway.settings import load_settings
from tests.fixtures.proxy import TcpProxy
from tests.fixtures.rabbit import AMQP_URL, wait_until
from tests.fixtures.upstreams import StartUpstream, Upstream
from tests.integration.harness import StackFactory, delete_rabbit_topology


def _now_ms() -> int:
    return int(time.time() * 1000)


async def test_a_slow_upstream_is_timeout_and_leaves_no_dead_letter(
    make_stack: StackFactory, echo_upstream: Upstream
) -> None:
    """The caller's 1 s deadline runs out during the attempt: the upstream's slowness, not the publisher's."""
    stack = await make_stack({"echo": {"endpoints": [echo_upstream.url], "retry": {"attempts": 1}}})
    slow_id = f"slow-{uuid.uuid4().hex[:8]}"
    slow_raw = orjson.dumps({"id": slow_id, "upstream": "echo", "path": "/slow?delay_ms=3000", "timeout_ms": 1000})
    slow = await stack.client.send_raw(slow_raw, correlation_id=slow_id, timeout=15)  # waits past the budget
    assert orjson.loads(slow.body)["error"]["code"] == "timeout"
    # A request expired on arrival follows; its copy must be the only one in the dead letters.
    marker = f"expired-{uuid.uuid4().hex[:8]}"
    raw = orjson.dumps({"id": marker, "upstream": "echo", "timeout_ms": 50, "sent_at": _now_ms() - 5000})
    expired = await stack.client.send_raw(raw, correlation_id=marker)
    assert orjson.loads(expired.body)["error"]["code"] == "deadline_exceeded"
    letters = await stack.dead_letters(2, timeout=3.0)
    ours = [body for body, _ in letters if body in (raw, slow_raw)]
    assert ours == [raw]
    dead = [e for e in stack.events.events if isinstance(e, MessageDeadLettered)]
    assert [e.error_code for e in dead] == ["deadline_exceeded"]


async def test_a_request_expired_on_arrival_is_never_sent_and_is_dead_lettered(
    make_stack: StackFactory, echo_upstream: Upstream
) -> None:
    stack = await make_stack({"echo": {"endpoints": [echo_upstream.url]}})
    marker = f"expired-{uuid.uuid4().hex[:8]}"
    raw = orjson.dumps({"id": marker, "upstream": "echo", "timeout_ms": 50, "sent_at": _now_ms() - 5000})
    message = await stack.client.send_raw(raw, correlation_id=marker)
    assert orjson.loads(message.body)["error"]["code"] == "deadline_exceeded"
    letters = await stack.dead_letters(1, timeout=10.0)
    (headers,) = [h for b, h in letters if b == raw]
    assert headers["x-cmn-error"].startswith("deadline_exceeded: request expired")
    assert echo_upstream.hits == 0


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    p = await TcpProxy("127.0.0.1", 5672).start()
    yield p
    await p.aclose()


@asynccontextmanager
async def gateway_behind(
    proxy: TcpProxy, upstream: Upstream, **transport: float
) -> AsyncIterator[tuple[RabbitTransport, GatewayClient]]:
    """A gateway whose RabbitMQ connection runs through ``proxy`` (publish timeout 0.3 s), serving the
    upstream ``once``, and a caller connected to RabbitMQ directly."""
    queue = f"t.requests.{uuid.uuid4().hex[:10]}"
    gateway_side = RabbitTransport(
        f"amqp://guest:guest@127.0.0.1:{proxy.port}/",
        queue=queue,
        telemetry=f"{queue}.telemetry",
        publish_timeout=0.3,
        clock=SystemClock(),
        **transport,  # type: ignore[arg-type]
    )
    config = load_config(load_settings(ENABLE_METRICS=False), {"upstreams": {"once": {"endpoints": [upstream.url]}}})
    try:
        async with (
            Gateway(config, transports=[gateway_side]),
            GatewayClient(RabbitRequester(AMQP_URL, queue=queue, clock=SystemClock())) as client,
        ):
            yield gateway_side, client
    finally:
        await delete_rabbit_topology(queue)


async def test_a_reply_the_broker_never_confirms_leaves_the_request_unsettled_and_it_is_redelivered(
    proxy: TcpProxy, start_upstream: StartUpstream
) -> None:
    """The broker goes away while the upstream answers: the reply cannot be confirmed within the publish
    timeout, so the request is not settled (no ack is even tried); the broker redelivers it once the
    gateway is back, and the redelivery is answered and settled."""
    hits = 0

    async def answer_then_lose_the_broker(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        if hits == 1:
            proxy.cut(block=True)  # the gateway's connection dies before its reply is published
            asyncio.get_running_loop().call_later(1.0, proxy.resume)
        return web.json_response({"hit": hits})

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer_then_lose_the_broker)
    upstream = await start_upstream(app)
    async with gateway_behind(proxy, upstream, reconnect_interval=0.2) as (transport, client):
        reply = await client.request("once", "GET", "/pay", timeout=30)
        assert reply.status == 200 and reply.json_ == {"hit": 2}  # answered by the redelivery
        await wait_until(lambda: transport.settled == 1)  # the redelivery, once its reply was confirmed
        assert transport.dropped_settles == 0  # the unconfirmed first delivery was never acked


async def test_a_reply_confirmed_after_its_bound_on_a_live_channel_leaves_the_request_to_come_again(
    proxy: TcpProxy, start_upstream: StartUpstream
) -> None:
    """The broker goes silent for longer than the publish timeout and comes back (a stalled node, a
    blocked connection; a frozen proxy here): the reply's publish gives up and the request is left
    unsettled, but the connection lives on, so no channel closes to make RabbitMQ redeliver it. It
    must come again all the same (it sat unacked for the channel's life, holding a prefetch slot,
    before the transport handed such deliveries back). The late confirm means the caller got the
    first reply and the redelivery answers again: at least once, a duplicate reply (README)."""
    hits = 0

    async def answer_then_freeze_the_broker(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        if hits == 1:
            proxy.freeze()  # nothing flows, nothing closes: the reply's confirm comes after its bound
            asyncio.get_running_loop().call_later(1.0, proxy.resume)
        return web.json_response({"hit": hits})

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer_then_freeze_the_broker)
    upstream = await start_upstream(app)
    async with gateway_behind(proxy, upstream, unsettled_retry=0.1) as (transport, client):
        reply = await client.request("once", "GET", "/pay", timeout=30)
        assert reply.status == 200 and reply.json_ == {"hit": 1}  # confirmed late, delivered all the same
        await wait_until(lambda: transport.settled == 1, within=15)  # the redelivery, answered and settled
        assert hits == 2
        assert transport.in_flight == 0


async def test_breaker_and_retry_events_reach_the_stacks_telemetry_stream(
    make_stack: StackFactory, echo_upstream: Upstream
) -> None:
    name = f"trip{uuid.uuid4().hex[:8]}"
    breaker = {"window_size": 2, "minimum_calls": 2, "failure_rate_threshold": 50, "open_duration": 60}
    upstream = {"endpoints": [echo_upstream.url], "breaker": breaker, "retry": {"attempts": 2, "backoff_base": 0.001}}
    stack = await make_stack({name: upstream})
    for _ in range(2):
        reply = await stack.client.request(name, "GET", "/down?status=503", timeout=10)
        assert reply.status == 503 or (reply.error is not None and reply.error.code == "circuit_open")
    wanted = {"breaker.state_changed", "upstream.retry"}
    seen: dict[str, dict[str, object]] = {}
    async with asyncio.timeout(30):
        async for event in stack.client.telemetry(from_beginning=True):
            if event.type in wanted and event.data.get("upstream") == name and event.type not in seen:
                seen[event.type] = event.data
                if set(seen) == wanted:
                    break
    assert seen["breaker.state_changed"]["new"] == "open"
    assert seen["breaker.state_changed"]["old"] == "closed"
    assert seen["upstream.retry"]["attempt"] == 2  # the attempt about to be made
