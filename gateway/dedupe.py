"""Idempotency: a duplicate delivery with the same key inside the window is answered from the first result.

Two layers: a store shared by replicas (in memory or Redis, with TTL) holds finished results, and an
in-process map of futures makes concurrent duplicates wait for the first call instead of racing it.
Only responses are remembered; a failure (timeout, open circuit) is not, so a retry may succeed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

import msgpack

from gateway.envelope.models import RequestEnvelope
from gateway.upstream.base import UpstreamResponse


class ResultStore(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes, ttl: float) -> None: ...


class Deduplicator:
    def __init__(self, store: ResultStore | None, ttl: float) -> None:
        self._store = store
        self._ttl = ttl
        self._pending: dict[str, asyncio.Future[UpstreamResponse]] = {}

    async def run(self, envelope: RequestEnvelope, call: Callable[[], Awaitable[UpstreamResponse]]) -> UpstreamResponse:
        if envelope.idempotency_key is None or self._store is None:
            return await call()
        key = f"{envelope.tenant or ''}:{envelope.upstream}:{envelope.idempotency_key}"
        pending = self._pending.get(key)
        if pending is not None:
            return _replayed(await asyncio.shield(pending))
        cached = await self._store.get(key)
        if cached is not None:
            return _replayed(_unpack(cached))
        future: asyncio.Future[UpstreamResponse] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_consume_exception)
        self._pending[key] = future
        try:
            response = await call()
            await self._store.put(key, _pack(response), self._ttl)
            future.set_result(response)
            return response
        except BaseException as exc:
            future.set_exception(exc)
            raise
        finally:
            del self._pending[key]

    def __repr__(self) -> str:
        return f"<Deduplicator {type(self._store).__name__} ttl={self._ttl}s [{len(self._pending)} pending]>"


def _replayed(response: UpstreamResponse) -> UpstreamResponse:
    """A deduplicated answer made no upstream call: zero attempts."""
    return UpstreamResponse(response.status, response.headers, response.body, 0, response.endpoint, 0.0)


def _pack(r: UpstreamResponse) -> bytes:
    data = [r.status, dict(r.headers), r.body, r.attempts, r.endpoint, r.upstream_duration]
    return msgpack.packb(data, use_bin_type=True)  # type: ignore[no-any-return]  # untyped library


def _unpack(raw: bytes) -> UpstreamResponse:
    status, headers, body, attempts, endpoint, took = msgpack.unpackb(raw, raw=False)
    return UpstreamResponse(status, headers, body, attempts, endpoint, took)


def _consume_exception(future: asyncio.Future[UpstreamResponse]) -> None:
    if not future.cancelled():
        future.exception()  # mark retrieved: nobody may be waiting on a failed first call
