"""The idempotency store: finished results by scoped key, each kept for a TTL. Defined once, here.

The ``Deduplicator`` asks ``get(key)`` before forwarding and ``put(key, packed_result, ttl)`` after, so
a redelivered or duplicated request is answered from the first result without a second upstream call.
In memory for one replica (bounded by bytes); in Redis when replicas share it (Redis's own
``maxmemory`` bounds it there). A store that cannot be reached fails open (a miss, a skipped write, a
log line): losing dedupe for a moment beats failing requests.
"""

from __future__ import annotations

import heapq
import logging
import sys
from typing import Protocol, runtime_checkable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.clock import Clock

log = logging.getLogger(__name__)

MIB = 1024 * 1024
DEFAULT_MEMORY_BYTES = 64 * MIB
"""What one replica's in-memory store may hold: six 10 MiB responses (the default MAX_RESPONSE_BYTES), or
about 100,000 small ones."""

ENTRY_OVERHEAD = 192
"""Bytes an entry costs beyond its key and value objects: dict slot, (expiry, value) tuple, float, heap
row (measured with tracemalloc: about 165)."""


class IdempotencyStore(Protocol):
    """Results by key, each for ``ttl`` seconds."""

    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes, ttl: float) -> None: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class ClaimingStore(IdempotencyStore, Protocol):
    """A store shared by replicas that can also say which one executes a key."""

    async def claim(self, key: str, ttl: float) -> bool: ...

    async def release(self, key: str) -> None: ...

    async def claimed(self, key: str) -> bool: ...


class MemoryIdempotencyStore:
    """Entries expire after their TTL on the injected clock; the store holds at most ``max_bytes``.

    Each entry counts its key, its value and ``ENTRY_OVERHEAD``. Past the budget, the soonest to expire
    go first: with the gateway's one ``IDEMPOTENCY_TTL``, the oldest. A value larger than a quarter of
    the budget is not kept at all (it would push out a quarter of every other caller's results): its
    request is still answered, and a duplicate of it goes upstream again, as it would after the TTL.
    """

    def __init__(self, clock: Clock, max_bytes: int = DEFAULT_MEMORY_BYTES) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, not {max_bytes}")
        self._clock = clock
        self._max = max_bytes
        self._largest = max_bytes // 4
        self._bytes = 0
        self._entries: dict[str, tuple[float, bytes]] = {}
        self._expiries: list[tuple[float, str]] = []  # heap; stale rows are skipped when popped
        self.evicted = 0  # pushed out by the budget before their TTL
        self.too_large = 0  # never kept

    @property
    def max_bytes(self) -> int:
        return self._max

    @property
    def nbytes(self) -> int:
        """The bytes this store accounts for (keys, values, per-entry overhead); never above ``max_bytes``."""
        return self._bytes

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires <= self._clock.monotonic():
            self._drop(key)
            return None
        return value

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        self._drop(key)
        size = _size(key, value)
        if size > self._largest:
            self.too_large += 1
            log.debug("idempotency result for %s not kept: %d bytes, over a quarter of the budget", key, size)
            return
        expires = self._clock.monotonic() + ttl
        self._entries[key] = (expires, value)
        self._bytes += size
        heapq.heappush(self._expiries, (expires, key))
        self._purge()

    def _purge(self) -> None:
        now = self._clock.monotonic()
        while self._expiries and (self._expiries[0][0] <= now or self._bytes > self._max):
            expires, key = heapq.heappop(self._expiries)
            entry = self._entries.get(key)
            if entry is not None and entry[0] == expires:
                self._drop(key)
                if expires > now:
                    self.evicted += 1
        if len(self._expiries) > 2 * len(self._entries) + 1024:
            # Rewritten keys leave stale heap rows behind; rebuild before they pile up.
            self._expiries = [(e, k) for k, (e, _) in self._entries.items()]
            heapq.heapify(self._expiries)

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= _size(key, entry[1])

    def __len__(self) -> int:
        return len(self._entries)

    async def aclose(self) -> None:
        self._entries.clear()
        self._expiries.clear()
        self._bytes = 0

    def __repr__(self) -> str:
        return (
            f"<MemoryIdempotencyStore {len(self._entries)} entries, {self._bytes / MIB:.1f} of"
            f" {self._max / MIB:.1f} MiB [{self.evicted} evicted, {self.too_large} too large]>"
        )


def _size(key: str, value: bytes) -> int:
    return sys.getsizeof(key) + sys.getsizeof(value) + ENTRY_OVERHEAD


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
