"""``GatewayForwarder.take_out``: how the fleet's quorum takes an endpoint out of one replica
(gateway/control/shared_health.py), and how it comes back only by local means."""

from __future__ import annotations

from gateway.events import BreakerStateChanged, EndpointEjected, EndpointRestored, RecordingObserver
from gateway.testing import FakeClock
from gateway.upstream.config import UpstreamDefaults
from gateway.upstream.forward import build_forwarder
from tests.upstream.helpers import upstreams

A, B = "http://127.0.0.1:9", "http://127.0.0.1:10"


async def test_a_breaker_trips_open_and_its_half_open_probe_brings_it_back() -> None:
    clock, observer = FakeClock(), RecordingObserver()
    config = upstreams(pay={"endpoints": [A, B], "breaker": {"open_duration": 10.0, "half_open_calls": 1}})
    async with build_forwarder(config, UpstreamDefaults(), clock=clock, observer=observer, stats_interval=None) as fwd:
        cluster = fwd.router("pay").cluster
        assert fwd.take_out("pay", B, "quorum")
        assert not fwd.take_out("pay", B, "quorum")  # out already
        assert {cluster.choose().url for _ in range(5)} == {A}
        for host in cluster.hosts:
            cluster.release(host)
        clock.advance(10.0)
        breaker = cluster.hosts[1].breaker
        assert breaker is not None and breaker.state.value == "half_open"
        assert not fwd.take_out("pay", B, "quorum")  # the probe decides, not the peers
        breaker.try_acquire()
        breaker.record(None, 0.01)
        assert breaker.state.value == "closed"
    changes = [(e.old, e.new) for e in observer.events if isinstance(e, BreakerStateChanged)]
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


async def test_a_forced_breaker_and_unknown_endpoints_are_left_alone() -> None:
    clock, observer = FakeClock(), RecordingObserver()
    config = upstreams(pay={"endpoints": [A, B]}, bare={"endpoints": [A], "breaker": {"enabled": False},
                                                       "outlier_detection": {"enabled": False}})  # fmt: skip
    async with build_forwarder(config, UpstreamDefaults(), clock=clock, observer=observer, stats_interval=None) as fwd:
        fwd.force_breakers("pay", "closed", principal="ops", endpoint=B, duration=60.0)
        assert not fwd.take_out("pay", B, "quorum")  # an operator's forcing rules
        assert not fwd.take_out("pay", "http://elsewhere", "quorum")
        assert not fwd.take_out("nosuch", A, "quorum")
        assert not fwd.take_out("bare", A, "quorum")  # neither breaker nor outlier detection: nothing to do


async def test_without_a_breaker_the_outlier_detector_ejects_until_the_ejection_runs_out() -> None:
    clock, observer = FakeClock(), RecordingObserver()
    config = upstreams(
        pay={"endpoints": [A, B], "breaker": {"enabled": False}, "outlier_detection": {"base_ejection_time": 5.0}}
    )
    async with build_forwarder(config, UpstreamDefaults(), clock=clock, observer=observer, stats_interval=None) as fwd:
        cluster = fwd.router("pay").cluster
        assert fwd.take_out("pay", B, "3 of 3 replicas say it is down (quorum 2)")
        assert not fwd.take_out("pay", B, "again")
        assert not fwd.take_out("pay", A, "no room")  # max_ejection_percent 50: one of two at most
        assert {cluster.choose().url for _ in range(5)} == {A}
        clock.advance(5.0)
        cluster.choose()
    [ejected] = [e for e in observer.events if isinstance(e, EndpointEjected)]
    assert (ejected.endpoint, ejected.reason) == (B, "3 of 3 replicas say it is down (quorum 2)")
    assert [e.endpoint for e in observer.events if isinstance(e, EndpointRestored)] == [B]
