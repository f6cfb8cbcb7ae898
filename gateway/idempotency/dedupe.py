"""Idempotency: a duplicate delivery with the same key inside the window is answered from the first result.

Three layers: a store shared by replicas (in memory or Redis, with TTL) holds finished results; in
one process, a map of futures makes concurrent duplicates wait for the first call instead of racing it;
across replicas, a store that supports claims (Redis ``SET NX``) lets exactly one replica call the
upstream while duplicates elsewhere wait for its result. Only responses are remembered; a failure
(timeout, open circuit) is not, and releases the claim, so a retry may succeed. Keys are scoped and
fingerprinted (``gateway.idempotency.key``): the same key on a different request is refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import msgpack

from gateway.clock import Clock, Deadline
from gateway.errors import DeadlineExceededError, IdempotencyMismatchError
from gateway.idempotency.key import IdempotencyKey
from gateway.idempotency.store import ClaimingStore, IdempotencyStore
from gateway.upstream.base import UpstreamResponse

Call = Callable[[], Awaitable[UpstreamResponse]]
Keep = Callable[[UpstreamResponse], bool]


class Deduplicator:
    def __init__(
        self, store: IdempotencyStore | None, ttl: float, clock: Clock, *, poll_interval: float = 0.02
    ) -> None:
        self._store = store
        self._ttl = ttl
        self._clock = clock
        self._poll = poll_interval
        self._pending: dict[str, tuple[bytes, asyncio.Future[UpstreamResponse]]] = {}

    @property
    def enabled(self) -> bool:
        return self._store is not None

    async def run(
        self, idem: IdempotencyKey | None, deadline: Deadline, call: Call, *, keep: Keep | None = None
    ) -> UpstreamResponse:
        """``keep`` says whether a response is remembered (default: every one); one that is not is
        treated as a failure: its key is released for the next try (a parked request's, say)."""
        if idem is None or self._store is None:
            return await call()
        key = idem.scope
        pending = self._pending.get(key)
        if pending is not None:
            _same_request(pending[0], idem.fingerprint)
            return _replayed(await asyncio.shield(pending[1]))
        # Registered before the first await, so a duplicate arriving meanwhile waits for this call.
        future: asyncio.Future[UpstreamResponse] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_consume_exception)
        self._pending[key] = (idem.fingerprint, future)
        try:
            cached = await self._store.get(key)
            if cached is not None:
                response = _replayed(_unpack(cached, idem.fingerprint))
            else:
                response = await self._first_hand(self._store, idem, deadline, call, keep)
            future.set_result(response)
            return response
        except BaseException as exc:
            future.set_exception(exc)
            raise
        finally:
            del self._pending[key]

    async def _first_hand(
        self, store: IdempotencyStore, idem: IdempotencyKey, deadline: Deadline, call: Call, keep: Keep | None
    ) -> UpstreamResponse:
        key = idem.scope
        if not isinstance(store, ClaimingStore):
            response = await call()
            if keep is None or keep(response):
                await store.put(key, _pack(response, idem.fingerprint), self._ttl)
            return response
        while not await store.claim(key, max(deadline.remaining(self._clock), 0.001)):
            finished = await self._result_of_other(store, idem, deadline)
            if finished is not None:
                return _replayed(finished)
            # The other replica's call failed and released its claim: try to take it ourselves.
        try:
            response = await call()
        except BaseException:
            await store.release(key)
            raise
        if keep is None or keep(response):
            await store.put(key, _pack(response, idem.fingerprint), self._ttl)
        await store.release(key)  # after the put: a waiter that sees no claim finds the result
        return response

    async def _result_of_other(
        self, store: ClaimingStore, idem: IdempotencyKey, deadline: Deadline
    ) -> UpstreamResponse | None:
        while await store.claimed(idem.scope):
            if deadline.expired(self._clock):
                raise DeadlineExceededError("a duplicate of this request is still being served by another replica")
            await self._clock.sleep(self._poll)
        cached = await store.get(idem.scope)
        return _unpack(cached, idem.fingerprint) if cached is not None else None

    def __repr__(self) -> str:
        return f"<Deduplicator {type(self._store).__name__} ttl={self._ttl}s [{len(self._pending)} pending]>"


def _replayed(response: UpstreamResponse) -> UpstreamResponse:
    """A deduplicated answer made no upstream call: zero attempts."""
    return UpstreamResponse(response.status, response.headers, response.body, 0, response.endpoint, 0.0)


def _same_request(first: bytes, this: bytes) -> None:
    if first != this:
        raise IdempotencyMismatchError("idempotency key reused for a different request")


def _pack(r: UpstreamResponse, fingerprint: bytes) -> bytes:
    data = [fingerprint, r.status, dict(r.headers), r.body, r.attempts, r.endpoint, r.upstream_duration]
    return msgpack.packb(data, use_bin_type=True)  # type: ignore[no-any-return]  # untyped library


def _unpack(raw: bytes, fingerprint: bytes) -> UpstreamResponse:
    first, status, headers, body, attempts, endpoint, took = msgpack.unpackb(raw, raw=False)
    _same_request(first, fingerprint)
    return UpstreamResponse(status, headers, body, attempts, endpoint, took)


def _consume_exception(future: asyncio.Future[UpstreamResponse]) -> None:
    if not future.cancelled():
        future.exception()  # mark retrieved: nobody may be waiting on a failed first call
