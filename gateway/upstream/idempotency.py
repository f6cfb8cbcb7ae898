"""The dedupe store behind ``idempotency_key``: the first result, kept for a while, by key.

The pipeline asks ``get(key)`` before forwarding and ``put(key, encoded_reply, ttl)`` after, so a
redelivered or duplicated request is answered from the first result without a second upstream call.
In memory for one replica; in Redis when replicas must share it. A store that cannot be reached
fails open (a miss, a skipped write, a log line): losing dedupe for a moment beats failing requests.
"""

from __future__ import annotations

import heapq
import logging
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.clock import Clock

log = logging.getLogger(__name__)


class IdempotencyStore(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes, ttl: float) -> None: ...

    async def aclose(self) -> None: ...


class MemoryIdempotencyStore:
    """Entries expire after their TTL on the injected clock; past ``max_entries`` the soonest to expire go."""

    def __init__(self, clock: Clock, max_entries: int = 100_000) -> None:
        self._clock = clock
        self._max = max_entries
        self._entries: dict[str, tuple[float, bytes]] = {}
        self._expiries: list[tuple[float, str]] = []  # heap; stale rows are skipped when popped

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires <= self._clock.monotonic():
            del self._entries[key]
            return None
        return value

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        expires = self._clock.monotonic() + ttl
        self._entries[key] = (expires, value)
        heapq.heappush(self._expiries, (expires, key))
        self._purge()

    def _purge(self) -> None:
        now = self._clock.monotonic()
        while self._expiries and (self._expiries[0][0] <= now or len(self._entries) > self._max):
            expires, key = heapq.heappop(self._expiries)
            entry = self._entries.get(key)
            if entry is not None and entry[0] == expires:
                del self._entries[key]
        if len(self._expiries) > 2 * len(self._entries) + 1024:
            # Rewritten keys leave stale heap rows behind; rebuild before they pile up.
            self._expiries = [(e, k) for k, (e, _) in self._entries.items()]
            heapq.heapify(self._expiries)

    def __len__(self) -> int:
        return len(self._entries)

    async def aclose(self) -> None:
        self._entries.clear()
        self._expiries.clear()

    def __repr__(self) -> str:
        return f"<MemoryIdempotencyStore {len(self._entries)}/{self._max} entries>"


class RedisIdempotencyStore:
    def __init__(self, client: aioredis.Redis, *, prefix: str = "cmn:idempotency:") -> None:
        self._client = client
        self._prefix = prefix

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "cmn:idempotency:", timeout: float = 0.5) -> RedisIdempotencyStore:
        client = aioredis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        return cls(client, prefix=prefix)

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self._client.get(self._prefix + key)
        except (RedisError, OSError) as exc:
            log.warning("idempotency store unreachable, treating %s as new: %r", key, exc)
            return None
        return value if isinstance(value, bytes) else None

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        try:
            await self._client.set(self._prefix + key, value, px=max(1, int(ttl * 1000)))
        except (RedisError, OSError) as exc:
            log.warning("idempotency store unreachable, result for %s not kept: %r", key, exc)

    async def claim(self, key: str, ttl: float) -> bool:
        """Take the right to execute ``key`` (SET NX, expiring after ``ttl`` in case the owner dies).

        True when this replica should call the upstream; False when another replica holds the claim.
        An unreachable Redis answers True: fail open, as ``get`` does, rather than stall requests.
        """
        try:
            taken = await self._client.set(self._claim(key), b"1", nx=True, px=max(1, int(ttl * 1000)))
        except (RedisError, OSError) as exc:
            log.warning("idempotency store unreachable, executing %s unclaimed: %r", key, exc)
            return True
        return bool(taken)

    async def release(self, key: str) -> None:
        """Give a claim up (the call failed): a waiting duplicate may now execute it itself."""
        try:
            await self._client.delete(self._claim(key))
        except (RedisError, OSError) as exc:
            log.warning("idempotency store unreachable, claim on %s left to expire: %r", key, exc)

    async def claimed(self, key: str) -> bool:
        try:
            return bool(await self._client.exists(self._claim(key)))
        except (RedisError, OSError):
            return False

    def _claim(self, key: str) -> str:
        return f"{self._prefix}{key}:claim"

    async def aclose(self) -> None:
        await self._client.aclose()

    def __repr__(self) -> str:
        return f"<RedisIdempotencyStore prefix={self._prefix!r}>"
