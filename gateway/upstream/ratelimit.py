"""Token buckets per upstream and per tenant: over the limit → ``rate_limited`` (or wait, if configured).

A request takes one token from every bucket that applies (the upstream's, and its tenant's) or
from none: a tenant refused by its own bucket does not spend the upstream's token. The buckets live
in a ``BucketBackend``: in-process here, or shared by every replica through Redis
(``gateway.upstream.ratelimit_redis``).

Why our own bucket: aiolimiter's leaky bucket reads the event loop's clock (so it cannot run on a
fake clock), only waits (no "how long until a token" answer to compare with a deadline), and has no
all-or-nothing take across two buckets.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NoReturn, Protocol

from gateway.clock import Clock, Deadline
from gateway.errors import RateLimitedError
from gateway.events import Observer, RateLimited
from gateway.upstream.snapshot import BucketSnapshot, RateLimitSnapshot, TenantBucketSnapshot

TENANTS_SHOWN = 5  # a snapshot lists the emptiest tenant buckets only; it counts them all


@dataclass(frozen=True, slots=True)
class Rate:
    rate: float  # tokens per second
    burst: float  # bucket size

    @classmethod
    def of(cls, rate: float, burst: float | None) -> Rate:
        return cls(rate, burst if burst is not None else max(rate, 1.0))


BucketKey = tuple[str, Rate]


class BucketBackend(Protocol):
    async def take(self, keys: Sequence[BucketKey]) -> tuple[float, int]:
        """One token from every bucket or none: (0.0, -1), else (seconds to wait, limiting key's index)."""
        ...

    @property
    def scope(self) -> Literal["local", "shared"]:
        """Whether the buckets are this replica's or every replica's."""
        ...

    @property
    def degraded(self) -> bool:
        """A shared backend deciding locally for now (its store unreachable)."""
        ...

    @property
    def local(self) -> LocalBuckets:
        """The buckets held in this process (a shared backend's fallback)."""
        ...


class TokenBucket:
    __slots__ = ("rate", "tokens", "updated")

    def __init__(self, rate: Rate, now: float) -> None:
        self.rate = rate
        self.tokens = rate.burst
        self.updated = now

    def refill(self, now: float) -> None:
        elapsed = max(now - self.updated, 0.0)
        self.tokens = min(self.rate.burst, self.tokens + elapsed * self.rate.rate)
        self.updated = now

    def wait_time(self, now: float, n: float = 1.0) -> float:
        """Seconds until ``n`` tokens are there (0.0 when they are now)."""
        self.refill(now)
        missing = n - self.tokens
        return 0.0 if missing <= 0 else missing / self.rate.rate

    def level(self, now: float) -> float:
        """The tokens there now, refill included, without changing the bucket."""
        return min(self.rate.burst, self.tokens + max(now - self.updated, 0.0) * self.rate.rate)

    def __repr__(self) -> str:
        return f"<TokenBucket {self.tokens:.2f}/{self.rate.burst:g} +{self.rate.rate:g}/s>"


class LocalBuckets:
    """In-process buckets; the least recently used ones are forgotten past ``max_buckets`` (they refill)."""

    scope: Literal["local", "shared"] = "local"
    degraded = False

    def __init__(self, clock: Clock, max_buckets: int = 10_000) -> None:
        self._clock = clock
        self._max = max_buckets
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    async def take(self, keys: Sequence[BucketKey]) -> tuple[float, int]:
        return self.take_now(keys)

    def take_now(self, keys: Sequence[BucketKey]) -> tuple[float, int]:
        now = self._clock.monotonic()
        buckets = [self._bucket(name, rate, now) for name, rate in keys]
        waits = [b.wait_time(now) for b in buckets]
        longest = max(waits, default=0.0)
        if longest > 0:
            return longest, waits.index(longest)
        for bucket in buckets:
            bucket.tokens -= 1.0
        return 0.0, -1

    def _bucket(self, name: str, rate: Rate, now: float) -> TokenBucket:
        bucket = self._buckets.get(name)
        if bucket is None or bucket.rate != rate:
            bucket = self._buckets[name] = TokenBucket(rate, now)
            if len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        self._buckets.move_to_end(name)
        return bucket

    @property
    def local(self) -> LocalBuckets:
        return self

    def level(self, name: str, rate: Rate) -> BucketSnapshot:
        """How full a bucket is now, without touching it; one not held (or held at another rate) is full."""
        bucket = self._buckets.get(name)
        tokens = bucket.level(self._clock.monotonic()) if bucket is not None and bucket.rate == rate else rate.burst
        return BucketSnapshot(tokens=round(tokens, 3), burst=rate.burst, rate=rate.rate)

    def levels(self, prefix: str) -> list[tuple[str, float]]:
        """(name after ``prefix``, tokens now) of every bucket held whose name starts with ``prefix``."""
        now = self._clock.monotonic()
        return [(name[len(prefix) :], b.level(now)) for name, b in self._buckets.items() if name.startswith(prefix)]

    def __repr__(self) -> str:
        return f"<LocalBuckets {len(self._buckets)} buckets>"


class RateLimiter:
    """One upstream's limits: an upstream-wide rate and a per-tenant rate, either optional."""

    def __init__(
        self,
        upstream: str,
        *,
        upstream_rate: Rate | None,
        tenant_rate: Rate | None,
        wait: bool,
        backend: BucketBackend,
        clock: Clock,
        observer: Observer,
    ) -> None:
        self.upstream = upstream
        self.upstream_rate = upstream_rate
        self.tenant_rate = tenant_rate
        self.wait = wait
        self._backend = backend
        self._clock = clock
        self._observer = observer

    async def acquire(self, tenant: str | None, deadline: Deadline) -> None:
        """Return once a token is taken; RateLimitedError when over the limit (and not waiting for it)."""
        keys = self._keys(tenant)
        if not keys:
            return
        while True:
            delay, index = await self._backend.take(keys)
            if delay <= 0:
                return
            if not self.wait or delay >= deadline.remaining(self._clock):
                self._reject(tenant, keys[index][0])
            await self._clock.sleep(delay)

    def snapshot(self) -> RateLimitSnapshot:
        """Tokens left in the upstream's bucket and in the emptiest tenant buckets, as held here."""
        backend, local, tenant = self._backend, self._backend.local, self.tenant_rate
        upstream = local.level(self.upstream, self.upstream_rate) if self.upstream_rate is not None else None
        held = sorted(local.levels(self._tenant_prefix), key=lambda pair: pair[1]) if tenant is not None else []
        tenants = tuple(
            TenantBucketSnapshot(name, round(tokens, 3), tenant.burst, tenant.rate)
            for name, tokens in held[:TENANTS_SHOWN]
            if tenant is not None
        )
        return RateLimitSnapshot(backend.scope, backend.degraded, upstream, tenants, tenant_buckets=len(held))

    @property
    def _tenant_prefix(self) -> str:
        return f"{self.upstream}|tenant|"

    def _keys(self, tenant: str | None) -> list[BucketKey]:
        keys: list[BucketKey] = []
        if self.tenant_rate is not None and tenant is not None:
            keys.append((self._tenant_prefix + tenant, self.tenant_rate))
        if self.upstream_rate is not None:
            keys.append((self.upstream, self.upstream_rate))
        return keys

    def _reject(self, tenant: str | None, key: str) -> NoReturn:
        scope = "upstream" if key == self.upstream else "tenant"
        self._observer.on_event(RateLimited(self.upstream, tenant, scope))
        who = f"tenant {tenant} on upstream {self.upstream}" if scope == "tenant" else f"upstream {self.upstream}"
        raise RateLimitedError(f"rate limit exceeded for {who}")

    def __repr__(self) -> str:
        return (
            f"<RateLimiter {self.upstream} upstream={self.upstream_rate} tenant={self.tenant_rate}"
            f" wait={self.wait} backend={self._backend!r}>"
        )
