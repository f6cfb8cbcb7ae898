"""Fault injection against real upstream processes and servers on loopback."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import pytest
from aiohttp import web

from gateway.clock import SystemClock
from gateway.errors import CircuitOpenError, GatewayError, UpstreamUnavailableError
from gateway.events import BreakerStateChanged, EndpointEjected, RecordingObserver
from gateway.upstream.base import UpstreamResponse
from gateway.upstream.config import UpstreamDefaults
from gateway.upstream.forward import GatewayForwarder, build_forwarder
from tests.fixtures.upstreams import StartUpstream
from tests.upstream.helpers import events_of, outbound, upstreams
from tests.upstream.processes import StartProcess

Outcome = UpstreamResponse | GatewayError


def forwarder(observer: RecordingObserver, **config: Any) -> GatewayForwarder:
    return build_forwarder(
        upstreams(svc=config),
        UpstreamDefaults(retry_attempts=3, request_timeout=5.0, connect_timeout=1.0),
        clock=SystemClock(),
        observer=observer,
    )


async def steady_load(
    fwd: GatewayForwarder, *, workers: int, stop: asyncio.Event, method: str = "GET"
) -> list[Outcome]:
    outcomes: list[Outcome] = []

    async def worker() -> None:
        while not stop.is_set():
            try:
                outcomes.append(await fwd.forward(outbound(method=method)))
            except GatewayError as exc:
                outcomes.append(exc)

    await asyncio.gather(*(worker() for _ in range(workers)))
    return outcomes


def served_by(outcomes: list[Outcome]) -> Counter[str]:
    return Counter(o.endpoint for o in outcomes if isinstance(o, UpstreamResponse))


async def test_killed_endpoint_costs_no_idempotent_request_and_is_ejected(upstream_process: StartProcess) -> None:
    a, b = await upstream_process(), await upstream_process()
    observer = RecordingObserver()
    config = {"endpoints": [a.url, b.url], "outlier_detection": {"consecutive_failures": 3, "base_ejection_time": 30}}
    async with forwarder(observer, **config) as fwd:
        stop = asyncio.Event()
        load = asyncio.ensure_future(steady_load(fwd, workers=16, stop=stop))
        await asyncio.sleep(0.3)
        await a.kill()
        await asyncio.sleep(0.5)
        stop.set()
        outcomes = await load
        after = [await fwd.forward(outbound()) for _ in range(20)]
    errors = [o for o in outcomes if isinstance(o, GatewayError)]
    assert errors == []
    assert served_by(outcomes)[a.url] > 0  # it did serve before the kill
    assert [e.endpoint for e in events_of(observer, EndpointEjected)] == [a.url]
    assert served_by(list(after)) == Counter({b.url: 20})


async def test_slow_endpoint_times_out_and_retries_land_on_the_fast_one(upstream_process: StartProcess) -> None:
    slow, fast = await upstream_process(delay_ms=3000), await upstream_process()
    observer = RecordingObserver()
    config = {
        "endpoints": [slow.url, fast.url],
        "timeouts": {"attempt": 0.5},  # the fast one answers in ms even on a busy machine
        "outlier_detection": {"consecutive_failures": 2, "base_ejection_time": 30},
    }
    async with forwarder(observer, **config) as fwd:
        responses = await asyncio.gather(*(fwd.forward(outbound()) for _ in range(20)))
    assert {r.status for r in responses} == {200}
    assert {r.endpoint for r in responses} == {fast.url}
    assert any(r.attempts == 2 for r in responses)  # some went to the slow one first
    assert [e.endpoint for e in events_of(observer, EndpointEjected)] == [slow.url]


def switchable_app(state: dict[str, Any]) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        state["hits"] += 1
        return web.json_response({"ok": True}, status=state["status"])

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def test_5xx_storm_opens_the_breaker_which_answers_at_once_then_recovers(
    start_upstream: StartUpstream,
) -> None:
    state = {"status": 500, "hits": 0}
    upstream = await start_upstream(app=switchable_app(state))
    observer = RecordingObserver()
    config = {
        "endpoints": [upstream.url],
        "breaker": {"minimum_calls": 5, "window_size": 10, "open_duration": 0.3, "half_open_calls": 2},
        "outlier_detection": {"enabled": False},
    }
    async with forwarder(observer, **config) as fwd:
        storm = [await fwd.forward(outbound()) for _ in range(5)]
        with pytest.raises(CircuitOpenError):
            await fwd.forward(outbound())
        hits_when_open = state["hits"]
        for _ in range(10):
            with pytest.raises(CircuitOpenError):
                await fwd.forward(outbound())
        assert state["hits"] == hits_when_open  # the open breaker never touched the network
        state["status"] = 200
        await asyncio.sleep(0.35)
        recovered = [await fwd.forward(outbound()) for _ in range(5)]
    assert {r.status for r in storm} == {500}
    assert {r.status for r in recovered} == {200}
    changes = [(e.old, e.new) for e in events_of(observer, BreakerStateChanged)]
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


async def test_flapping_endpoint_is_ejected_for_longer_each_time(upstream_process: StartProcess) -> None:
    flappy, steady = await upstream_process(), await upstream_process()
    observer = RecordingObserver()
    config = {
        "endpoints": [flappy.url, steady.url],
        "load_balancer": "round_robin",
        "outlier_detection": {"consecutive_failures": 1, "base_ejection_time": 0.3, "max_ejection_time": 10},
    }
    outcomes: list[Outcome] = []
    async with forwarder(observer, **config) as fwd:
        for _ in range(3):
            await flappy.kill()
            outcomes += [await fwd.forward(outbound()) for _ in range(5)]
            await flappy.start()  # back on the same port
            await asyncio.sleep(max(e.duration for e in events_of(observer, EndpointEjected)) + 0.05)
            outcomes += [await fwd.forward(outbound()) for _ in range(5)]
    assert all(isinstance(o, UpstreamResponse) and o.status == 200 for o in outcomes)
    durations = [e.duration for e in events_of(observer, EndpointEjected)]
    assert durations == [0.3, 0.6, pytest.approx(0.9)]
    assert served_by(outcomes)[flappy.url] > 0  # it was taken back each time


class ResettingServer:
    """Answers headers and a tenth of the promised body, then drops the connection."""

    def __init__(self) -> None:
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        self.requests += 1
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100)
        await writer.drain()
        writer.transport.abort()


async def test_reset_mid_response_is_retried_elsewhere_only_when_replayable(start_upstream: StartUpstream) -> None:
    resetting = ResettingServer()
    server = await asyncio.start_server(resetting.handle, "127.0.0.1", 0)
    broken = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    healthy = await start_upstream()
    observer = RecordingObserver()
    async with server:
        async with forwarder(observer, endpoints=[broken, healthy.url], load_balancer="round_robin") as fwd:
            get = await fwd.forward(outbound())  # round robin starts on the broken one
        async with forwarder(observer, endpoints=[broken]) as only_broken:
            with pytest.raises(UpstreamUnavailableError, match="broke"):
                await only_broken.forward(outbound(method="POST"))
    assert get.status == 200 and get.attempts == 2 and get.endpoint == healthy.url
    assert json.loads(get.body)["method"] == "GET"
    assert resetting.requests == 2  # one GET attempt, one POST attempt: the POST was not replayed


class KeepAliveFailing:
    """Answers every request 500 on a keep-alive connection; counts connections opened and closed by the client."""

    def __init__(self) -> None:
        self.opened = 0
        self.closed = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.opened += 1
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed += 1
        finally:
            writer.close()


async def test_ejection_closes_the_endpoints_idle_connections(start_upstream: StartUpstream) -> None:
    failing = KeepAliveFailing()
    server = await asyncio.start_server(failing.handle, "127.0.0.1", 0)
    bad = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    good = await start_upstream()
    observer = RecordingObserver()
    config = {
        "endpoints": [bad, good.url],
        "load_balancer": "round_robin",
        "retry": {"attempts": 1},
        "outlier_detection": {"consecutive_failures": 2, "base_ejection_time": 30},
    }
    async with server, forwarder(observer, **config) as fwd:
        statuses = [(await fwd.forward(outbound())).status for _ in range(4)]
        assert failing.opened >= 1
        for _ in range(100):  # the close happens in a task: give it a moment
            if failing.closed == failing.opened:
                break
            await asyncio.sleep(0.01)
        closed_while_running = failing.closed
    assert statuses == [500, 200, 500, 200]
    assert [e.endpoint for e in events_of(observer, EndpointEjected)] == [bad]
    assert closed_while_running == failing.opened  # not left idle for the 30 s keep-alive


async def test_retry_after_is_honoured_between_the_two_hits(start_upstream: StartUpstream) -> None:
    """A 503 with ``Retry-After: 1`` and a 5 s deadline: the retry waits the second the upstream asked
    for, although the backoff alone would be at most 20 ms."""
    hits: list[float] = []

    async def handle(request: web.Request) -> web.Response:
        hits.append(asyncio.get_running_loop().time())
        if len(hits) == 1:
            return web.Response(status=503, headers={"Retry-After": "1"})
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    upstream = await start_upstream(app)
    observer = RecordingObserver()
    config = {"endpoints": [upstream.url], "retry": {"attempts": 2, "backoff_base": 0.01, "backoff_max": 0.02}}
    async with forwarder(observer, **config) as fwd:
        response = await fwd.forward(outbound(timeout=5.0))
    assert response.status == 200 and response.attempts == 2
    assert len(hits) == 2
    assert hits[1] - hits[0] >= 1.0
