"""The spec's ConnectionPool against real loopback servers: reuse, growth, idle expiry, cleanup, reset."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

from gateway.clock import SystemClock
from gateway.errors import PoolExhaustedError
from gateway.testing import FakeClock
from gateway.upstream.http import Exchange
from gateway.upstream.pool import ConnectionPool, PoolPolicy
from tests.fixtures.upstreams import StartUpstream, Upstream
from tests.upstream.helpers import parked


def peer_app(state: dict[str, Any]) -> web.Application:
    """Records the client port of every request; ``?close=1`` answers with Connection: close."""

    async def handle(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        state["ports"].append(peer[1] if peer else None)
        if "delay_ms" in request.query:
            await asyncio.sleep(int(request.query["delay_ms"]) / 1000)
        headers = {"Connection": "close"} if "close" in request.query else {}
        return web.Response(text="ok", headers=headers)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    return app


@pytest.fixture
async def peers(start_upstream: StartUpstream) -> tuple[Upstream, dict[str, Any]]:
    state: dict[str, Any] = {"ports": []}
    return await start_upstream(app=peer_app(state)), state


def get(url: str, path: str = "/") -> Exchange:
    return Exchange("GET", url + path, {}, None, timeout=5.0, connect_timeout=2.0, max_response_bytes=1024)


async def test_spec_api_reuses_one_keep_alive_connection(peers: tuple[Upstream, dict[str, Any]]) -> None:
    upstream, state = peers
    async with ConnectionPool("svc", [upstream.url], PoolPolicy(max_size=4), clock=SystemClock()) as pool:
        for _ in range(20):
            async with pool.get_connection(upstream.url) as conn:
                result = await conn.request(get(upstream.url))
                assert result.status == 200
        assert pool.stats(upstream.url).in_use == 0
    assert len(state["ports"]) == 20
    assert len(set(state["ports"])) == 1


async def test_grows_under_load_up_to_max_then_idle_connections_expire(
    peers: tuple[Upstream, dict[str, Any]],
) -> None:
    upstream, state = peers
    policy = PoolPolicy(max_size=5, idle_timeout=0.2)
    async with ConnectionPool("svc", [upstream.url], policy, clock=SystemClock()) as pool:

        async def one() -> None:
            async with pool.get_connection(upstream.url) as conn:
                await conn.request(get(upstream.url, "/?delay_ms=100"))

        await asyncio.gather(*(one() for _ in range(15)))
        assert len(set(state["ports"])) == 5  # grew to the maximum, never beyond
        assert pool.stats(upstream.url).idle == 5
        for _ in range(50):
            if pool.stats(upstream.url).idle == 0:
                break
            await asyncio.sleep(0.05)
        assert pool.stats(upstream.url).idle == 0  # shrank again


async def test_connection_closed_by_the_server_is_dropped_not_reused(
    peers: tuple[Upstream, dict[str, Any]],
) -> None:
    upstream, state = peers
    async with ConnectionPool("svc", [upstream.url], PoolPolicy(max_size=2), clock=SystemClock()) as pool:
        for path in ("/?close=1", "/", "/"):
            async with pool.get_connection(upstream.url) as conn:
                assert (await conn.request(get(upstream.url, path))).status == 200
    assert state["ports"][0] != state["ports"][1] == state["ports"][2]


async def test_reset_closes_the_endpoints_connections(peers: tuple[Upstream, dict[str, Any]]) -> None:
    upstream, state = peers
    async with ConnectionPool("svc", [upstream.url], PoolPolicy(max_size=2), clock=SystemClock()) as pool:
        async with pool.get_connection(upstream.url) as conn:
            await conn.request(get(upstream.url))
            pool.reset(upstream.url)  # while in use: closed when this request is done
            await conn.request(get(upstream.url))  # the held slot still works on the old generation
        async with pool.get_connection(upstream.url) as conn:
            await conn.request(get(upstream.url))
    assert state["ports"][0] == state["ports"][1] != state["ports"][2]


async def test_exhausted_pool_waits_acquire_timeout_on_the_clock(echo_upstream: Upstream) -> None:
    clock = FakeClock()
    policy = PoolPolicy(max_size=1, acquire_timeout=2.5)
    pool = ConnectionPool("svc", [echo_upstream.url], policy, clock=clock)
    async with pool, pool.get_connection(echo_upstream.url):
        waiting = asyncio.ensure_future(pool.get_connection(echo_upstream.url).__aenter__())
        await parked(clock)
        assert pool.stats(echo_upstream.url).waiting == 1
        clock.advance(2.5)
        with pytest.raises(PoolExhaustedError) as caught:
            await waiting
    assert str(caught.value) == "Connection pool exhausted: upstream svc, 1 in use, waited 2500 ms"


async def test_unknown_endpoint_is_refused(echo_upstream: Upstream) -> None:
    async with ConnectionPool("svc", [echo_upstream.url], PoolPolicy(), clock=SystemClock()) as pool:
        with pytest.raises(KeyError, match="not an endpoint of upstream svc"):
            async with pool.get_connection("http://elsewhere:1"):
                pass
