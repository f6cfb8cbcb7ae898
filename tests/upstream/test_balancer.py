"""Load balancers and host selection in the cluster."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from gateway.errors import CircuitOpenError
from gateway.testing import FakeClock
from gateway.upstream.balancer import LeastRequest, RoundRobin, WeightedRandom, make_balancer
from gateway.upstream.breaker import BreakerPolicy, CircuitBreaker
from gateway.upstream.cluster import Cluster
from gateway.upstream.host import Host
from gateway.upstream.pool import ConnectionPool, PoolPolicy


def test_least_request_prefers_the_less_loaded_of_two() -> None:
    hosts = [Host("a"), Host("b")]
    hosts[0].active = 5
    lb = LeastRequest(random.Random(1))
    assert {lb.pick(hosts).url for _ in range(50)} == {"b"}


def test_least_request_spreads_load_over_many_hosts() -> None:
    hosts = [Host(str(i)) for i in range(5)]
    lb = LeastRequest(random.Random(2))
    for _ in range(1000):
        lb.pick(hosts).active += 1
    assert max(h.active for h in hosts) - min(h.active for h in hosts) <= 3


def test_least_request_scales_by_weight() -> None:
    hosts = [Host("heavy", weight=3), Host("light", weight=1)]
    lb = LeastRequest(random.Random(3))
    for _ in range(400):
        lb.pick(hosts).active += 1
    assert 250 <= hosts[0].active <= 350


def test_round_robin_cycles() -> None:
    hosts = [Host("a"), Host("b"), Host("c")]
    rr = RoundRobin()
    assert [rr.pick(hosts).url for _ in range(6)] == ["a", "b", "c", "a", "b", "c"]


def test_random_ignores_weights() -> None:
    hosts = [Host("a", weight=1), Host("b", weight=4)]
    lb = make_balancer("random", random.Random(5))
    counts = Counter(lb.pick(hosts).url for _ in range(5000))
    assert 0.45 <= counts["b"] / 5000 <= 0.55


def test_weighted_random_follows_weights() -> None:
    hosts = [Host("a", weight=1), Host("b", weight=4)]
    lb = WeightedRandom(random.Random(4))
    counts = Counter(lb.pick(hosts).url for _ in range(5000))
    assert 0.75 <= counts["b"] / 5000 <= 0.85


async def cluster(hosts: list[Host]) -> Cluster:
    pool = ConnectionPool("svc", [h.url for h in hosts], PoolPolicy(), clock=FakeClock())
    return Cluster("svc", hosts, balancer=RoundRobin(), pool=pool)


async def test_choose_skips_open_breakers_and_answers_circuit_open_when_none_are_left() -> None:
    clock = FakeClock()
    policy = BreakerPolicy(minimum_calls=1, window_size=1)
    hosts = [Host(f"http://h{i}", breaker=CircuitBreaker(policy, clock=clock)) for i in range(2)]
    c = await cluster(hosts)
    hosts[0].breaker.record("5xx", 0.1)  # type: ignore[union-attr]  # set just above
    assert {c.choose().url for _ in range(4)} == {"http://h1"}
    hosts[1].breaker.record("5xx", 0.1)  # type: ignore[union-attr]  # set just above
    with pytest.raises(CircuitOpenError):
        c.choose()
    await c.aclose()


async def test_choose_avoids_the_failed_host_and_panics_rather_than_refusing() -> None:
    hosts = [Host("http://a"), Host("http://b")]
    c = await cluster(hosts)
    assert {c.choose(avoid=hosts[0]).url for _ in range(4)} == {"http://b"}
    hosts[0].healthy = False
    hosts[1].ejected_until = 1e12
    assert {c.choose().url for _ in range(4)} == {"http://a", "http://b"}  # nothing healthy: use all
    await c.aclose()
