"""Token buckets shared by every gateway replica, kept in Redis and updated by one atomic script.

The script reads Redis's own clock (replicas' clocks may disagree), refills every bucket, and takes
a token from all of them or from none. When Redis cannot be reached the limiter falls back to the
replica's local buckets, says so once per outage (a ``RateLimitBackendFallback`` event and a log
line) and tries Redis again after ``retry_interval``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Literal

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.clock import Clock
from gateway.events import Observer, RateLimitBackendFallback
from gateway.upstream.ratelimit import BucketKey, LocalBuckets

log = logging.getLogger(__name__)

# KEYS: bucket hashes. ARGV: rate_1, burst_1, rate_2, burst_2, ...
# Returns {wait seconds as a string (floats would be truncated to integers), 1-based limiting key or 0}.
TAKE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tokens = {}
local wait, limiting = 0, 0
for i, key in ipairs(KEYS) do
  local rate, burst = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local state = redis.call('HMGET', key, 'tokens', 'ts')
  local level = tonumber(state[1]) or burst
  local ts = tonumber(state[2]) or now
  level = math.min(burst, level + math.max(0, now - ts) * rate)
  tokens[i] = level
  if level < 1 and (1 - level) / rate > wait then
    wait, limiting = (1 - level) / rate, i
  end
end
if wait > 0 then
  return {tostring(wait), limiting}
end
for i, key in ipairs(KEYS) do
  local rate, burst = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  redis.call('HSET', key, 'tokens', tostring(tokens[i] - 1), 'ts', tostring(now))
  redis.call('PEXPIRE', key, math.ceil(burst / rate * 1000) + 1000)
end
return {'0', 0}
"""


class RedisBuckets:
    scope: Literal["local", "shared"] = "shared"

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        fallback: LocalBuckets,
        clock: Clock,
        observer: Observer,
        prefix: str = "cmn:ratelimit:",
        retry_interval: float = 5.0,
    ) -> None:
        self._client = client
        self._script = client.register_script(TAKE_SCRIPT)
        self._fallback = fallback
        self._clock = clock
        self._observer = observer
        self._prefix = prefix
        self._retry_interval = retry_interval
        self._down_until = -math.inf

    @property
    def local(self) -> LocalBuckets:
        """The fallback buckets: this replica's view, deciding while Redis is out."""
        return self._fallback

    @property
    def degraded(self) -> bool:
        """True while limits are local because Redis was unreachable."""
        return self._clock.monotonic() < self._down_until

    async def take(self, keys: Sequence[BucketKey]) -> tuple[float, int]:
        if self.degraded:
            return self._fallback.take_now(keys)
        names = [self._prefix + name for name, _ in keys]
        args: list[float] = [x for _, rate in keys for x in (rate.rate, rate.burst)]
        try:
            wait, limiting = await self._script(keys=names, args=args)
        except (RedisError, OSError) as exc:
            self._fall_back(exc)
            return self._fallback.take_now(keys)
        if self._down_until > -math.inf:
            self._down_until = -math.inf
            log.warning("rate limits are shared through Redis again")
        return float(wait), int(limiting) - 1

    def _fall_back(self, exc: BaseException) -> None:
        first = self._down_until == -math.inf
        self._down_until = self._clock.monotonic() + self._retry_interval
        if first:
            reason = f"redis unreachable ({type(exc).__name__})"  # never the URL or an object repr
            log.warning("rate limits fall back to local buckets: %s", reason)
            self._observer.on_event(RateLimitBackendFallback(reason=reason))

    async def aclose(self) -> None:
        await self._client.aclose()

    def __repr__(self) -> str:
        return f"<RedisBuckets prefix={self._prefix!r} degraded={self.degraded}>"
