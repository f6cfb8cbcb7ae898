"""The spec's ``ConnectionPool``: per-endpoint slots over one keep-alive aiohttp connector each.

    async with pool.get_connection("http://10.0.0.5:8080") as conn:
        result = await conn.request(exchange)

A slot is the right to have one request on the wire to that endpoint. The pool counts slots itself
(so it can say who waited how long, and fail with ``pool_exhausted``); aiohttp's connector, sized
to the same maximum, owns the sockets: it opens them on demand (the pool grows under load), reuses
keep-alive ones, drops broken ones and closes those idle past ``idle_timeout`` (it shrinks again).
``reset(endpoint)`` swaps in a fresh connector, so an ejected endpoint's sockets are closed once
the requests still using them finish.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any

import aiohttp

from gateway.clock import Clock
from gateway.errors import PoolExhaustedError
from gateway.events import PoolStats
from gateway.upstream.http import AttemptTracer, Exchange, HttpResult, exchange
from gateway.upstream.slots import Slots
from gateway.upstream.snapshot import PoolSnapshot
from gateway.upstream.tls import TlsContextProvider


@dataclass(frozen=True, slots=True)
class PoolPolicy:
    max_size: int = 10  # per endpoint
    acquire_timeout: float = 5.0
    idle_timeout: float = 30.0


class _Session:
    """One connector generation of an endpoint; retired generations close when their last user leaves."""

    __slots__ = ("active", "retired", "session")

    def __init__(self, policy: PoolPolicy) -> None:
        connector = aiohttp.TCPConnector(limit=policy.max_size, keepalive_timeout=policy.idle_timeout)
        self.session = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False, raise_for_status=False
        )
        self.active = 0
        self.retired = False

    def idle_connections(self) -> int:
        conns = getattr(self.session.connector, "_conns", {})  # aiohttp exposes no public idle count
        return sum(len(v) for v in conns.values())


class _EndpointPool:
    __slots__ = ("current", "slots")

    def __init__(self, policy: PoolPolicy) -> None:
        self.slots = Slots(policy.max_size)
        self.current = _Session(policy)


class PooledConnection:
    """A held slot: requests sent through it reuse the endpoint's keep-alive connections."""

    __slots__ = ("_pool", "_session", "_upstream", "endpoint")

    def __init__(self, pool: ConnectionPool, endpoint: str, session: _Session, upstream: str) -> None:
        self._pool = pool
        self._session = session
        self._upstream = upstream
        self.endpoint = endpoint

    def request(self, ex: Exchange) -> Coroutine[Any, Any, HttpResult]:
        """The exchange's coroutine itself (no frame of its own between the router and aiohttp)."""
        if ex.ssl_context is None and self._pool.tls is not None:
            context = self._pool.tls.context_for(self._upstream)
            if context is not None:
                ex = replace(ex, ssl_context=context)
        return exchange(self._session.session, ex, self._pool.attempts)

    def __repr__(self) -> str:
        return f"<PooledConnection {self._upstream} {self.endpoint}>"


class _Lease:
    __slots__ = ("_conn", "_endpoint", "_pool", "_wait")

    def __init__(self, pool: ConnectionPool, endpoint: str, wait: float) -> None:
        self._pool = pool
        self._endpoint = endpoint
        self._wait = wait
        self._conn: PooledConnection | None = None

    async def __aenter__(self) -> PooledConnection:
        self._conn = await self._pool._acquire(self._endpoint, self._wait)
        return self._conn

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._conn is not None:
            self._pool._release(self._conn)


class ConnectionPool:
    """Slots and keep-alive connections for every endpoint of one upstream."""

    def __init__(
        self,
        upstream: str,
        endpoints: Iterable[str],
        policy: PoolPolicy,
        *,
        clock: Clock,
        tls: TlsContextProvider | None = None,
        attempts: AttemptTracer | None = None,
    ) -> None:
        self.upstream = upstream
        self.policy = policy
        self.tls = tls
        self.attempts = attempts  # each attempt's trace span, when tracing is on
        self._clock = clock
        self._endpoints: dict[str, _EndpointPool] = {url: _EndpointPool(policy) for url in endpoints}
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    def get_connection(self, endpoint: str, timeout: float | None = None) -> _Lease:
        """``async with pool.get_connection(endpoint) as conn``; PoolExhaustedError after the wait.

        The wait is ``acquire_timeout``, or ``timeout`` when shorter (what is left of a deadline).
        """
        wait = self.policy.acquire_timeout if timeout is None else min(timeout, self.policy.acquire_timeout)
        return _Lease(self, endpoint, wait)

    async def _acquire(self, endpoint: str, wait: float) -> PooledConnection:
        entry = self._entry(endpoint)
        if not entry.slots.try_take():
            started = self._clock.monotonic()
            if not await entry.slots.wait(self._clock, wait):
                waited_ms = (self._clock.monotonic() - started) * 1000
                raise PoolExhaustedError(
                    f"Connection pool exhausted: upstream {self.upstream}, {entry.slots.in_use} in use, "
                    f"waited {waited_ms:.0f} ms"
                )
        session = entry.current
        session.active += 1
        return PooledConnection(self, endpoint, session, self.upstream)

    def _release(self, conn: PooledConnection) -> None:
        session = conn._session
        session.active -= 1
        if session.retired and session.active == 0:
            self._close_later(session)
        self._endpoints[conn.endpoint].slots.give()

    def reset(self, endpoint: str) -> None:
        """Close the endpoint's connections: idle ones now, busy ones when their request ends."""
        entry = self._entry(endpoint)
        old, entry.current = entry.current, _Session(self.policy)
        old.retired = True
        if old.active == 0:
            self._close_later(old)

    def stats(self, endpoint: str) -> PoolStats:
        now = self.snapshot(endpoint)
        return PoolStats(self.upstream, endpoint, in_use=now.in_use, idle=now.idle, waiting=now.waiting)

    def snapshot(self, endpoint: str) -> PoolSnapshot:
        entry = self._entry(endpoint)
        return PoolSnapshot(
            size=entry.slots.size,
            in_use=entry.slots.in_use,
            idle=entry.current.idle_connections(),
            waiting=entry.slots.waiting,
        )

    def all_stats(self) -> list[PoolStats]:
        return [self.stats(url) for url in self._endpoints]

    def _entry(self, endpoint: str) -> _EndpointPool:
        try:
            return self._endpoints[endpoint]
        except KeyError:
            raise KeyError(f"{endpoint} is not an endpoint of upstream {self.upstream}") from None

    def _close_later(self, session: _Session) -> None:
        task = asyncio.get_running_loop().create_task(session.session.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        closes = [entry.current.session.close() for entry in self._endpoints.values()]
        await asyncio.gather(*closes, *self._closing, return_exceptions=True)

    async def __aenter__(self) -> ConnectionPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        in_use = sum(e.slots.in_use for e in self._endpoints.values())
        waiting = sum(e.slots.waiting for e in self._endpoints.values())
        return (
            f"<ConnectionPool {self.upstream} [{len(self._endpoints)} endpoints, max {self.policy.max_size}"
            f" each | {in_use} in use, {waiting} waiting]>"
        )
