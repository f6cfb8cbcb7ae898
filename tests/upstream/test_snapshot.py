"""Each component's snapshot() on a fake clock: what it reports, and that reading it changes nothing."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
import redis.asyncio as aioredis

from gateway.clock import Deadline
from gateway.errors import RateLimitedError, UnknownUpstreamError
from gateway.events import BreakerStateChanged, RecordingObserver
from gateway.testing import FakeClock
from gateway.upstream.breaker import BreakerPolicy, BreakerState, CircuitBreaker
from gateway.upstream.bulkhead import Bulkhead, BulkheadPolicy
from gateway.upstream.config import UpstreamDefaults
from gateway.upstream.forward import build_forwarder
from gateway.upstream.health import HealthChecker, HealthPolicy
from gateway.upstream.host import Host
from gateway.upstream.outlier import OutlierDetector, OutlierPolicy
from gateway.upstream.pool import ConnectionPool, PoolPolicy
from gateway.upstream.ratelimit import LocalBuckets, Rate, RateLimiter
from gateway.upstream.ratelimit_redis import RedisBuckets
from gateway.upstream.snapshot import (
    BreakerSnapshot,
    BucketSnapshot,
    BulkheadSnapshot,
    HealthSnapshot,
    OutlierSnapshot,
    PoolSnapshot,
    TenantBucketSnapshot,
)
from tests.upstream.helpers import events_of, upstreams

WALL = 1_800_000_000.0 - 1000.0  # FakeClock(): wall = monotonic + WALL
Changes = list[tuple[BreakerState, BreakerState]]


def breaker(clock: FakeClock, changes: list[tuple[BreakerState, BreakerState]], **overrides: object) -> CircuitBreaker:
    policy = BreakerPolicy(
        **{"window_size": 10, "minimum_calls": 4, "open_duration": 5.0, "half_open_calls": 2, **overrides}  # type: ignore[arg-type]  # test overrides
    )
    return CircuitBreaker(policy, clock=clock, on_change=lambda old, new: changes.append((old, new)))


def calls(b: CircuitBreaker, *kinds: str | None, duration: float = 0.01) -> None:
    for kind in kinds:
        assert b.try_acquire()
        b.record(kind, duration)  # type: ignore[arg-type]  # test kinds are FailureKind or None


def test_breaker_snapshot_closed_shows_the_window_rates() -> None:
    clock, changes = FakeClock(), Changes()
    b = breaker(clock, changes)
    assert b.snapshot() == BreakerSnapshot("closed", "count:10", 0, None, None, None)
    calls(b, None, "5xx", None)
    calls(b, None, duration=20.0)
    assert b.snapshot() == BreakerSnapshot("closed", "count:10", 4, 25.0, 25.0, None)


def test_breaker_snapshot_open_shows_the_window_that_opened_it_and_when_it_probes() -> None:
    clock, changes = FakeClock(), Changes()
    b = breaker(clock, changes)
    calls(b, None, "5xx", "5xx", "connect_error")
    assert b.state is BreakerState.OPEN
    snap = b.snapshot()
    assert (snap.state, snap.calls, snap.failure_rate, snap.slow_call_rate) == ("open", 4, 75.0, 0.0)
    assert snap.open_until == 1005.0 + WALL


def test_breaker_snapshot_does_not_perform_the_due_transition() -> None:
    clock, changes = FakeClock(), Changes()
    b = breaker(clock, changes)
    calls(b, "5xx", "5xx", "5xx", "5xx")
    clock.advance(5.0)
    assert b.snapshot() == BreakerSnapshot("half_open", "count:10", 0, None, None, None)
    assert changes == [(BreakerState.CLOSED, BreakerState.OPEN)]  # only reading state transitions
    assert b.state is BreakerState.HALF_OPEN
    calls(b, None)
    assert b.snapshot() == BreakerSnapshot("half_open", "count:10", 1, 0.0, 0.0, None)


def test_breaker_snapshot_reopened_by_probes_shows_the_probes() -> None:
    clock, changes = FakeClock(), Changes()
    b = breaker(clock, changes)
    calls(b, "5xx", "5xx", "5xx", "5xx")
    clock.advance(5.0)
    calls(b, None, "timeout")  # 50 % of the probes fail: open again
    snap = b.snapshot()
    assert (snap.state, snap.calls, snap.failure_rate) == ("open", 2, 50.0)


def test_breaker_snapshot_of_a_time_window() -> None:
    clock, changes = FakeClock(), Changes()
    b = breaker(clock, changes, window_type="time", window_size=10, minimum_calls=100)
    calls(b, "5xx", None)
    assert b.snapshot() == BreakerSnapshot("closed", "time:10s", 2, 50.0, 0.0, None)
    clock.advance(11.0)
    assert b.snapshot().calls == 0


def test_outlier_snapshot_gives_ejected_until_in_epoch_seconds() -> None:
    clock = FakeClock()
    hosts = [Host("http://a"), Host("http://b")]
    d = OutlierDetector(
        "svc",
        hosts,
        OutlierPolicy(consecutive_failures=2, base_ejection_time=10.0),
        clock=clock,
        observer=RecordingObserver(),
    )
    d.record(hosts[0], "5xx")
    d.record(hosts[0], "5xx")
    d.record(hosts[1], "timeout")
    assert d.snapshot() == {
        "http://a": OutlierSnapshot(ejected_until=1010.0 + WALL, ejections=1, consecutive_failures=0),
        "http://b": OutlierSnapshot(ejected_until=None, ejections=0, consecutive_failures=1),
    }
    clock.advance(10.0)
    assert d.snapshot()["http://a"].ejected_until is None  # over, though not yet restored
    assert hosts[0].ejected  # the snapshot restored nothing


def test_health_snapshot_tracks_the_last_result_and_streaks() -> None:
    clock = FakeClock()
    hosts = [Host("http://a"), Host("http://b")]
    checker = HealthChecker(
        "svc", hosts, HealthPolicy("/health", unhealthy_threshold=2), clock=clock, observer=RecordingObserver()
    )
    assert checker.snapshot()["http://a"] == HealthSnapshot(True, None, 0, 0, None)
    checker.observe(hosts[0], False)
    clock.advance(3.0)
    checker.observe(hosts[0], False)
    checker.observe(hosts[1], True)
    snap = checker.snapshot()
    assert snap["http://a"] == HealthSnapshot(False, "failed", 0, 2, 1003.0 + WALL)
    assert snap["http://b"] == HealthSnapshot(True, "passed", 1, 0, 1003.0 + WALL)


async def test_pool_snapshot_counts_in_use_and_waiting() -> None:
    clock = FakeClock()
    url = "http://127.0.0.1:9"
    async with ConnectionPool("svc", [url], PoolPolicy(max_size=1), clock=clock) as pool:
        assert pool.snapshot(url) == PoolSnapshot(size=1, in_use=0, idle=0, waiting=0)
        lease = pool.get_connection(url)
        await lease.__aenter__()
        assert pool.snapshot(url) == PoolSnapshot(size=1, in_use=1, idle=0, waiting=0)
        waiter = asyncio.ensure_future(pool.get_connection(url).__aenter__())
        await asyncio.sleep(0)
        assert pool.snapshot(url).waiting == 1
        await lease.__aexit__(None, None, None)
        await waiter  # the slot moved to the waiter
        assert pool.snapshot(url) == PoolSnapshot(size=1, in_use=1, idle=0, waiting=0)
        with pytest.raises(KeyError):
            pool.snapshot("http://elsewhere")


def limiter(clock: FakeClock, backend: LocalBuckets | RedisBuckets) -> RateLimiter:
    return RateLimiter(
        "svc",
        upstream_rate=Rate(2.0, 10.0),
        tenant_rate=Rate(1.0, 3.0),
        wait=False,
        backend=backend,
        clock=clock,
        observer=RecordingObserver(),
    )


async def test_rate_limit_snapshot_shows_tokens_left_and_the_emptiest_tenants() -> None:
    clock = FakeClock()
    rl = limiter(clock, LocalBuckets(clock))
    full = rl.snapshot()
    assert (full.scope, full.degraded, full.upstream, full.tenants, full.tenant_buckets) == (
        "local", False, BucketSnapshot(10.0, 10.0, 2.0), (), 0,
    )  # fmt: skip
    deadline = Deadline.after(clock, 5.0)
    for tenant in ["acme", "acme", "acme", "globex", None]:
        await rl.acquire(tenant, deadline)
    with pytest.raises(RateLimitedError):
        await rl.acquire("acme", deadline)
    snap = rl.snapshot()
    assert snap.upstream == BucketSnapshot(5.0, 10.0, 2.0)
    assert snap.tenants == (TenantBucketSnapshot("acme", 0.0, 3.0, 1.0), TenantBucketSnapshot("globex", 2.0, 3.0, 1.0))
    assert snap.tenant_buckets == 2
    clock.advance(1.0)
    assert rl.snapshot().upstream == BucketSnapshot(7.0, 10.0, 2.0)  # refill counted, bucket untouched
    assert rl.snapshot().upstream == BucketSnapshot(7.0, 10.0, 2.0)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_rate_limit_snapshot_of_shared_buckets_is_the_local_view() -> None:
    clock = FakeClock()
    local = LocalBuckets(clock)
    client = aioredis.Redis(host="127.0.0.1", port=closed_port(), socket_connect_timeout=0.25)
    shared = RedisBuckets(client, fallback=local, clock=clock, observer=RecordingObserver())
    try:
        rl = limiter(clock, shared)
        assert (rl.snapshot().scope, rl.snapshot().degraded) == ("shared", False)
        await rl.acquire(None, Deadline.after(clock, 5.0))  # Redis unreachable: the local bucket decides
        snap = rl.snapshot()
        assert (snap.scope, snap.degraded, snap.upstream) == ("shared", True, BucketSnapshot(9.0, 10.0, 2.0))
    finally:
        await shared.aclose()


def test_bulkhead_snapshot() -> None:
    assert Bulkhead("svc", BulkheadPolicy(4, 2), clock=FakeClock()).snapshot() == BulkheadSnapshot(4, 2, 0, 0)


async def test_forwarder_snapshot_assembles_every_part_and_serialises_to_json() -> None:
    clock, observer = FakeClock(), RecordingObserver()
    config = upstreams(
        pay={
            "endpoints": ["http://127.0.0.1:9", "http://127.0.0.1:10"],
            "breaker": {"minimum_calls": 2, "window_size": 4},
            "outlier_detection": {"consecutive_failures": 2},
            "rate_limit": {"upstream": {"rate": 5}},
        },
        plain={"endpoints": ["http://127.0.0.1:11"]},
    )
    async with build_forwarder(config, UpstreamDefaults(), clock=clock, observer=observer, stats_interval=None) as fwd:
        router = fwd.router("pay")
        host = router.cluster.hosts[0]
        for _ in range(2):
            router.cluster.record(host, "5xx", 0.1)
        pay, plain = fwd.snapshot()
        assert fwd.snapshot("plain") == (plain,)
        with pytest.raises(UnknownUpstreamError):
            fwd.snapshot("nope")
    assert [e.url for e in pay.endpoints] == ["http://127.0.0.1:9", "http://127.0.0.1:10"]
    first = pay.endpoints[0]
    assert first.breaker is not None and first.breaker.state == "open" and first.breaker.failure_rate == 100.0
    assert first.outlier is not None and first.outlier.ejected_until is not None
    assert first.pool == PoolSnapshot(size=10, in_use=0, idle=0, waiting=0)
    assert pay.rate_limit is not None and pay.rate_limit.upstream == BucketSnapshot(5.0, 5.0, 5.0)
    assert (plain.rate_limit, plain.bulkhead, plain.endpoints[0].health) == (None, None, None)
    assert [(e.old, e.new) for e in events_of(observer, BreakerStateChanged)] == [("closed", "open")]
    document = json.loads(json.dumps(pay.to_json()))
    assert document["endpoints"][0]["breaker"]["state"] == "open"
    assert document["endpoints"][1]["outlier"] == {"ejected_until": None, "ejections": 0, "consecutive_failures": 0}
    assert document["endpoints"][0]["breaker"]["forced"] is None  # automatic: no operator override
