"""Forced breaker states (issue 11, ``cmn breaker open|close|reset``) on a fake clock: the breaker, the
cluster's refusal, the forwarder's API, export/apply for late starters, and the snapshot."""

from __future__ import annotations

import asyncio
import json

import pytest

from gateway.errors import CircuitOpenError, InvalidRequestError, UnknownUpstreamError
from gateway.events import BreakerForced, BreakerStateChanged, RecordingObserver
from gateway.testing import FakeClock
from gateway.upstream.breaker import FORCED_DURATION, BreakerPolicy, BreakerState, CircuitBreaker, ForcedState
from gateway.upstream.config import UpstreamDefaults
from gateway.upstream.forward import build_forwarder
from tests.upstream.helpers import parked, upstreams

Change = tuple[ForcedState | None, str, bool]


def breaker(clock: FakeClock) -> tuple[CircuitBreaker, list[Change], list[tuple[BreakerState, BreakerState]]]:
    forced: list[Change] = []
    changes: list[tuple[BreakerState, BreakerState]] = []
    policy = BreakerPolicy(window_size=10, minimum_calls=4, open_duration=5.0, half_open_calls=2)
    b = CircuitBreaker(
        policy,
        clock=clock,
        on_change=lambda old, new: changes.append((old, new)),
        on_forced=lambda new, by, expired: forced.append((new, by, expired)),
    )
    return b, forced, changes


def test_forced_open_refuses_every_call_naming_the_principal() -> None:
    clock = FakeClock()
    b, forced, _ = breaker(clock)
    assert b.permits() and b.refusal() is None
    b.force("open", "ops")
    assert not b.permits() and not b.try_acquire()
    with pytest.raises(CircuitOpenError) as refused:
        b.acquire()
    assert str(refused.value) == "forced open by ops"
    assert refused.value.code == "circuit_open"
    assert b.state is BreakerState.CLOSED  # the automatic state underneath is untouched
    assert forced == [(ForcedState("open", "ops", clock.monotonic() + FORCED_DURATION), "ops", False)]


def test_forced_closed_lets_calls_through_while_failures_trip_the_automatic_state() -> None:
    clock = FakeClock()
    b, _, changes = breaker(clock)
    b.force("closed", "ops", 600.0)
    for _ in range(8):
        assert b.try_acquire()
        b.record("5xx", 0.01)
    assert changes == [(BreakerState.CLOSED, BreakerState.OPEN)]  # outcomes still recorded
    assert b.state is BreakerState.OPEN and b.permits()  # ... but the forcing rules
    b.acquire()  # no refusal
    b.reset("ops")
    assert not b.permits()  # automatic again: the breaker the failures opened refuses
    with pytest.raises(CircuitOpenError) as refused:
        b.acquire()
    assert "forced" not in str(refused.value)


def test_forced_state_expires_after_its_duration_back_to_automatic() -> None:
    clock = FakeClock()
    b, forced, _ = breaker(clock)
    b.force("open", "ops", 60.0)
    clock.advance(59.9)
    assert not b.permits() and b.forced is not None
    clock.advance(0.1)
    assert b.permits() and b.forced is None
    assert forced[-1] == (None, "ops", True)  # the expiry is reported, naming who had forced it
    assert len(forced) == 2


def test_default_duration_is_an_hour() -> None:
    clock = FakeClock()
    b, _, _ = breaker(clock)
    b.force("open", "ops")
    clock.advance(3599.0)
    assert not b.permits()
    clock.advance(1.0)
    assert b.permits()


def test_reset_returns_to_automatic_and_reports_only_a_real_change() -> None:
    clock = FakeClock()
    b, forced, _ = breaker(clock)
    assert b.reset("ops") is False and forced == []
    b.force("open", "alice", 60.0)
    b.force("closed", "bob", 60.0)  # replaces the forcing
    assert b.forced == ForcedState("closed", "bob", clock.monotonic() + 60.0)
    assert b.reset("carol") is True
    assert b.forced is None and b.permits()
    assert [(f.state if f else None, by, expired) for f, by, expired in forced] == [
        ("open", "alice", False),
        ("closed", "bob", False),
        (None, "carol", False),
    ]


def test_force_refuses_a_bad_state_or_duration() -> None:
    b, _, _ = breaker(FakeClock())
    with pytest.raises(ValueError, match="'open' or 'closed'"):
        b.force("half_open", "ops")  # type: ignore[arg-type]  # what a bad command could send
    with pytest.raises(ValueError, match="positive"):
        b.force("open", "ops", 0.0)
    assert b.forced is None


def test_snapshot_shows_the_forcing_with_its_epoch_expiry_and_never_performs_the_expiry() -> None:
    clock = FakeClock()
    b, forced, _ = breaker(clock)
    b.force("open", "ops", 90.0)
    snap = b.snapshot()
    assert snap.state == "closed"
    assert snap.forced is not None
    assert (snap.forced.state, snap.forced.by, snap.forced.until) == ("open", "ops", clock.time() + 90.0)
    clock.advance(90.0)
    assert b.snapshot().forced is None
    assert len(forced) == 1  # the snapshot only reads; the expiry is performed by the next decision


async def test_expiry_timer_reports_on_time_without_traffic() -> None:
    clock = FakeClock()
    b, forced, _ = breaker(clock)
    b.force("open", "ops", 30.0)
    await parked(clock)
    clock.advance(30.0)
    for _ in range(3):
        await asyncio.sleep(0)
    assert forced[-1] == (None, "ops", True)  # nobody asked the breaker anything
    await b.aclose()


def two_upstreams() -> dict[str, dict[str, object]]:
    return {
        "pay": {"endpoints": ["http://127.0.0.1:9", "http://127.0.0.1:10"], "breaker": {"minimum_calls": 2}},
        "plain": {"endpoints": ["http://127.0.0.1:11"], "breaker": {"enabled": False}},
    }


async def test_forwarder_forces_every_endpoint_or_one_and_the_cluster_refuses_naming_the_principal() -> None:
    clock, observer = FakeClock(), RecordingObserver()
    config = upstreams(**two_upstreams())
    async with build_forwarder(config, UpstreamDefaults(), clock=clock, observer=observer, stats_interval=None) as fwd:
        cluster = fwd.router("pay").cluster
        one = fwd.force_breakers("pay", "open", principal="ops", endpoint="http://127.0.0.1:10", duration=60.0)
        assert one == [("pay", "http://127.0.0.1:10")]
        assert cluster.choose().url == "http://127.0.0.1:9"  # the other endpoint takes the traffic
        cluster.release(cluster.hosts[0])
        both = fwd.force_breakers("pay", "open", principal="ops", duration=60.0)
        assert both == [("pay", "http://127.0.0.1:9"), ("pay", "http://127.0.0.1:10")]
        with pytest.raises(CircuitOpenError) as refused:
            cluster.choose()
        assert str(refused.value) == "forced open by ops"
        assert fwd.force_breakers("pay", "automatic", principal="ops") == both
        assert fwd.force_breakers("pay", "automatic", principal="ops") == []  # nothing left to reset
        assert cluster.choose() in cluster.hosts
        with pytest.raises(UnknownUpstreamError):
            fwd.force_breakers("nope", "open", principal="ops")
        with pytest.raises(InvalidRequestError, match="has no endpoint 'http://x'"):
            fwd.force_breakers("pay", "open", principal="ops", endpoint="http://x")
        with pytest.raises(InvalidRequestError, match="no circuit breaker"):
            fwd.force_breakers("plain", "open", principal="ops")
    events = [e for e in observer.events if isinstance(e, BreakerForced)]
    assert [(e.endpoint[-2:], e.state, e.principal, e.until) for e in events] == [
        ("10", "open", "ops", clock.time() + 60.0),
        (":9", "open", "ops", clock.time() + 60.0),
        ("10", "open", "ops", clock.time() + 60.0),
        (":9", "automatic", "ops", None),
        ("10", "automatic", "ops", None),
    ]
    assert observer.of_type(BreakerStateChanged) == []  # forcing is not an automatic transition
    assert BreakerForced.on_stream


async def test_a_late_starter_applies_the_forced_states_a_peer_exports_skipping_expired_ones() -> None:
    config = upstreams(**two_upstreams())
    peer_clock = FakeClock(start=50.0, wall_start=1_800_000_000.0)
    late_clock = FakeClock(start=7000.0, wall_start=1_800_000_020.0)  # another process: another monotonic scale
    defaults, observer = UpstreamDefaults(), RecordingObserver()
    async with (
        build_forwarder(config, defaults, clock=peer_clock, observer=observer, stats_interval=None) as peer,
        build_forwarder(config, defaults, clock=late_clock, observer=observer, stats_interval=None) as late,
    ):
        peer.force_breakers("pay", "open", principal="ops", endpoint="http://127.0.0.1:9", duration=120.0)
        peer.force_breakers("pay", "closed", principal="sre", endpoint="http://127.0.0.1:10", duration=10.0)
        exported = json.loads(json.dumps(peer.forced_states()))
        assert [(f["endpoint"], f["state"], f["by"], f["until"]) for f in exported] == [
            ("http://127.0.0.1:9", "open", "ops", 1_800_000_120.0),
            ("http://127.0.0.1:10", "closed", "sre", 1_800_000_010.0),
        ]
        assert {f["upstream"] for f in exported} == {"pay"}
        foreign = {"upstream": "elsewhere", "endpoint": "http://a", "state": "open", "by": "x", "until": 1_900_000_000}
        applied = late.apply_forced_states([*exported, foreign])
        assert applied == [("pay", "http://127.0.0.1:9")]  # the closed one expired 10 s before it started
        forced = late.router("pay").cluster.hosts[0].breaker
        assert forced is not None and forced.forced is not None
        assert forced.forced.until == pytest.approx(late_clock.monotonic() + 100.0)  # the 100 s it had left
        assert late.forced_states()[0]["until"] == 1_800_000_120.0
        late_clock.advance(100.0)
        assert late.forced_states() == []


async def test_forwarder_snapshot_carries_the_forcing_as_json() -> None:
    clock = FakeClock()
    config = upstreams(**two_upstreams())
    async with build_forwarder(
        config, UpstreamDefaults(), clock=clock, observer=RecordingObserver(), stats_interval=None
    ) as fwd:
        fwd.force_breakers("pay", "closed", principal="ops", endpoint="http://127.0.0.1:9", duration=30.0)
        (pay,) = fwd.snapshot("pay")
    document = json.loads(json.dumps(pay.to_json()))
    assert document["endpoints"][0]["breaker"]["forced"] == {"state": "closed", "by": "ops", "until": clock.time() + 30}
    assert document["endpoints"][1]["breaker"]["forced"] is None
