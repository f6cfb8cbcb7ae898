"""Parking end to end on RabbitMQ and on Tansu, with a real upstream that goes down and comes back."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest
from aiohttp import web

from gateway.bus.rabbitmq.transport import RabbitTransport
from gateway.telemetry.status_table import render_status
from tests.fixtures.rabbit import wait_until
from tests.fixtures.upstreams import StartUpstream
from tests.parking.conftest import ParkStackFactory, Switchable


def upstream(url: str, delays: list[int], **extra: Any) -> dict[str, Any]:
    return {
        "svc": {
            "endpoints": [url],
            "retry": {"attempts": 2, "backoff_base": 0.01},
            "timeouts": {"connect": 0.5, "attempt": 2},
            "park": {"delays": delays},
            **extra,
        }
    }


async def test_a_request_rides_out_an_outage_parked(park_stack: ParkStackFactory, switchable: Switchable) -> None:
    stack = await park_stack(upstream(switchable.url, [1, 2, 4]), delays=(1, 2, 4))
    call = asyncio.create_task(stack.client.request("svc", "GET", "/orders/7", timeout=20))
    await wait_until(lambda: len(stack.parked()) >= 2)  # down through the first tier and into the second
    await switchable.up()
    reply = await call
    assert reply.status == 200 and reply.json_ == {"method": "GET", "path": "/orders/7"}
    assert reply.attempts == 2 * 2 + 1  # two in-process attempts per failed try, then the good one
    assert [(e.tier, e.delay, e.park_count, e.reason) for e in stack.parked()[:2]] == [
        (0, 1, 1, "upstream_unavailable"),
        (1, 2, 2, "upstream_unavailable"),
    ]
    assert switchable.hits == 1
    # cmn status shows this replica's parking of the upstream, in its document and its table.
    (status,) = stack.gateway.status("svc").upstreams
    assert status.parking is not None and (status.parking.parked, status.parking.returned) == (2, 2)
    table = render_status([stack.gateway.status().to_json()])
    assert "svc  parked 2 back 2" in table


async def test_a_non_idempotent_request_never_parks(park_stack: ParkStackFactory, switchable: Switchable) -> None:
    stack = await park_stack(upstream(switchable.url, [1]), delays=(1,))
    started = time.monotonic()
    reply = await stack.client.request("svc", "POST", "/pay", json={"amount": 1}, timeout=20)
    assert reply.error is not None and reply.error.code == "upstream_unavailable"
    assert time.monotonic() - started < 1.0 and stack.parked() == []


async def test_a_post_with_an_idempotency_key_parks(park_stack: ParkStackFactory, switchable: Switchable) -> None:
    stack = await park_stack(upstream(switchable.url, [1]), delays=(1,))
    call = asyncio.create_task(stack.client.request("svc", "POST", "/pay", json={"a": 1}, idempotency_key="p-1"))
    await wait_until(lambda: bool(stack.parked()))
    await switchable.up()
    reply = await call
    assert reply.status == 200 and switchable.hits == 1


async def test_the_deadline_is_respected(park_stack: ParkStackFactory, switchable: Switchable) -> None:
    # 3 s: the 1 s tier fits, the 5 s one does not; the caller hears the last error within its deadline.
    stack = await park_stack(upstream(switchable.url, [1, 5]), delays=(1, 5))
    started = time.monotonic()
    reply = await stack.client.request("svc", "GET", "/", timeout=3)
    took = time.monotonic() - started
    assert reply.error is not None and reply.error.code == "upstream_unavailable"
    assert reply.attempts == 4  # two tries of two attempts
    assert 1.0 <= took < 3.0
    assert [e.tier for e in stack.parked()] == [0]


async def test_a_parked_request_whose_reply_address_is_gone_is_settled(
    park_stack: ParkStackFactory, switchable: Switchable
) -> None:
    stack = await park_stack(upstream(switchable.url, [2]), delays=(2,))
    extra: dict[str, Any] = {"use_direct_reply_to": False} if stack.kind == "rabbitmq" else {}
    leaving = await stack.another_client(**extra)
    call = asyncio.create_task(leaving.request("svc", "GET", "/gone", timeout=20))
    await wait_until(lambda: bool(stack.parked()))
    await leaving.aclose()  # the requester goes away while its request is parked: its reply queue with it
    call.cancel()
    await switchable.up()
    await wait_until(lambda: switchable.hits >= 1)
    await asyncio.sleep(0.5)  # room for a loop to show itself, were there one
    assert switchable.hits == 1  # answered by the upstream once, not looping
    assert stack.transport.in_flight == 0 and len(stack.parked()) == 1
    if isinstance(stack.transport, RabbitTransport):
        assert stack.transport.unroutable == 1  # the reply had nowhere to go: counted, and the request settled
        assert stack.transport.settled == stack.transport.received == 2


async def test_a_hanging_try_parks_after_its_try_budget_and_frees_its_slot(
    park_stack: ParkStackFactory, start_upstream: StartUpstream
) -> None:
    hung, released = asyncio.Event(), asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        if request.path == "/hang" and not hung.is_set():
            hung.set()
            # The first call hangs, an upstream that stopped answering: for 6 s, or until the test is
            # done with it (the server's cleanup would otherwise wait the 6 s out).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(released.wait(), 6)
        return web.json_response({"path": request.path})

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    slow = await start_upstream(app)
    config = upstream(slow.url, [1])
    config["svc"]["park"]["try_budget"] = 0.5
    config["svc"]["retry"]["attempts"] = 1
    stack = await park_stack(config, delays=(1,), max_in_flight=1)
    started = time.monotonic()
    first = asyncio.create_task(stack.client.request("svc", "GET", "/hang", timeout=20))
    await wait_until(lambda: bool(stack.parked()))
    assert time.monotonic() - started < 2.0  # not the 6 s the upstream holds it, nor the 20 s deadline
    # The one worker slot is free again: another request goes through while the first is parked.
    other = await stack.client.request("svc", "GET", "/other", timeout=5)
    assert other.status == 200
    reply = await first
    assert reply.status == 200 and reply.attempts == 2
    (event,) = stack.parked()
    assert event.reason in ("timeout", "deadline_exceeded")
    released.set()


async def test_a_signed_request_parks_and_comes_back_as_its_signer(
    park_stack: ParkStackFactory, switchable: Switchable, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Identity required, the upstream open to billing only: the returning copy must still be billing's,
    # though its signature was used once already (the seal vouches for it).
    monkeypatch.setenv("CMN_TEST_PARK_KEY", "billing-signing-secret")
    security = {"keys": {"billing-1": {"principal": "billing", "secret": {"env": "CMN_TEST_PARK_KEY"}}}}
    config = upstream(switchable.url, [1], access={"allow": ["billing"]})
    stack = await park_stack(config, delays=(1,), env={"REQUIRE_IDENTITY": True}, security=security)
    signed = await stack.another_client(key_id="billing-1", secret="billing-signing-secret")
    try:
        call = asyncio.create_task(signed.request("svc", "GET", "/mine", timeout=20))
        await wait_until(lambda: bool(stack.parked()))
        unsigned = await stack.client.request("svc", "GET", "/mine", timeout=5)
        await switchable.up()
        reply = await call
    finally:
        await signed.aclose()
    assert unsigned.error is not None and unsigned.error.code == "unauthenticated"
    assert reply.status == 200 and switchable.hits == 1
    assert [e.principal for e in stack.parked()] == ["billing"]
