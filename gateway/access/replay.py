"""Each signature is accepted once: a captured signed message cannot be sent again as its signer.

Without this, anyone who saw a signed message (a reader of the requests queue, a dead-letter copy)
could publish it again within SIGNATURE_MAX_AGE and have the upstream called as the signer; with
direct reply-to, whose per-channel name the signature cannot bind, the answer would even come back
to them. A signature is remembered for as long as it is valid (max age plus the future skew).

A redelivery of the same message is not a replay: RabbitMQ marks it ``redelivered``, and a Kafka
record comes back at the same position, which is what ``first_use`` is given and keeps.

The in-process memory guards one replica; with REDIS_URL the record is shared (``SET NX``), so a
copy sent to another replica is caught too. An unreachable Redis falls back to this replica's memory.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.clock import Clock

log = logging.getLogger(__name__)

MAX_REMEMBERED = 500_000  # about 80 MB at most; past it the oldest are forgotten early (and counted)


class ReplayRecord(Protocol):
    async def first_use(self, signature: str, position: str | None, ttl: float) -> bool:
        """True when ``signature`` was not seen within ``ttl``, or was seen at the same ``position``."""
        ...

    async def aclose(self) -> None: ...


class MemoryReplayRecord:
    def __init__(self, clock: Clock, *, max_entries: int = MAX_REMEMBERED) -> None:
        self._clock = clock
        self._max = max_entries
        self._seen: OrderedDict[str, tuple[float, str | None]] = OrderedDict()  # insertion = expiry order
        self.forgotten_early = 0

    async def first_use(self, signature: str, position: str | None, ttl: float) -> bool:
        return self.record(signature, position, ttl)

    def record(self, signature: str, position: str | None, ttl: float) -> bool:
        now = self._clock.monotonic()
        self._expire(now)
        seen = self._seen.get(signature)
        if seen is not None:
            return position is not None and seen[1] == position
        self._seen[signature] = (now + ttl, position)
        if len(self._seen) > self._max:
            self._seen.popitem(last=False)
            self.forgotten_early += 1
        return True

    def _expire(self, now: float) -> None:
        while self._seen:
            signature, (until, _) = next(iter(self._seen.items()))
            if until > now:
                return
            del self._seen[signature]

    async def aclose(self) -> None:
        self._seen.clear()

    def __repr__(self) -> str:
        return f"<MemoryReplayRecord [{len(self._seen)} signatures, {self.forgotten_early} forgotten early]>"


class RedisReplayRecord:
    def __init__(self, client: aioredis.Redis, fallback: MemoryReplayRecord, *, prefix: str = "cmn:sig:") -> None:
        self._client = client
        self._fallback = fallback
        self._prefix = prefix

    @classmethod
    def from_url(cls, url: str, fallback: MemoryReplayRecord, *, timeout: float = 0.5) -> RedisReplayRecord:
        client = aioredis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        return cls(client, fallback)

    async def first_use(self, signature: str, position: str | None, ttl: float) -> bool:
        key = self._prefix + signature
        value = (position or "").encode()
        try:
            if await self._client.set(key, value, nx=True, px=max(1, int(ttl * 1000))):
                return True
            seen = await self._client.get(key)
        except (RedisError, OSError) as exc:
            log.warning("replay record unreachable, using this replica's memory: %s", type(exc).__name__)
            return self._fallback.record(signature, position, ttl)
        return position is not None and seen == value

    async def aclose(self) -> None:
        await self._client.aclose()

    def __repr__(self) -> str:
        return f"<RedisReplayRecord prefix={self._prefix}>"
