"""Shared health (gateway/control/shared_health.py): three replicas, each a real forwarder with real
breakers on a FakeClock, joined by an in-memory control channel that delivers every notice to every
replica, as the brokers do (the brokers themselves: tests/integration/test_fleet_health.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TypeVar

import orjson
import pytest

from gateway.access import signature
from gateway.access.identity import Identifier, SigningKey
from gateway.bus.base import Delivery, Handler
from gateway.control.quorum import QuorumTable
from gateway.control.shared_health import SharedHealth, build_shared_health
from gateway.envelope.health import HEALTH_VERDICTS, MAX_NOTICE_BYTES, NOTICE_HEADER
from gateway.errors import BusUnavailableError, ConfigError
from gateway.events import (
    BreakerStateChanged,
    EndpointTakenOut,
    ObserverGroup,
    RecordingObserver,
    SecurityRefused,
    SharedHealthChanged,
)
from gateway.settings import Settings
from gateway.testing import FakeClock
from gateway.upstream.config import UpstreamDefaults
from gateway.upstream.forward import GatewayForwarder, build_forwarder
from tests.fixtures.logs import Captured
from tests.upstream.helpers import upstreams

GOOD, BAD = "http://127.0.0.1:9", "http://127.0.0.1:10"
FLEET = "cmn.requests"


class Bus:
    """Every notice published reaches every replica's channel, its sender's included."""

    def __init__(self) -> None:
        self.channels: list[Channel] = []
        self.sent: list[dict[str, object]] = []

    async def deliver(self, body: bytes, user: str | None, headers: Mapping[str, str], correlation_id: str) -> None:
        if body.startswith(b"{"):
            self.sent.append(orjson.loads(body))
        for channel in self.channels:
            if channel.handler is not None and channel.hears:
                delivery = Delivery(
                    body, "application/json", None, correlation_id, dict(headers), "rabbitmq", user_id=user
                )
                await channel.handler(delivery)


class Channel:
    name = "rabbitmq"

    def __init__(self, bus: Bus, user: str | None) -> None:
        self.bus, self.user = bus, user
        self.handler: Handler | None = None
        self.fails = False
        self.hears = True
        bus.channels.append(self)

    async def start(self, handler: Handler) -> None:
        self.handler = handler

    async def publish(
        self, body: bytes, *, reply_to: str, correlation_id: str, headers: Mapping[str, str] | None = None
    ) -> None:
        assert reply_to == ""  # a notice gets no answer
        if self.fails:
            raise BusUnavailableError("broker gone")
        await self.bus.deliver(body, self.user, headers or {}, correlation_id)

    async def answer(self, reply_to: str, correlation_id: str | None, body: bytes) -> None:
        raise AssertionError("notices are not answered")

    async def aclose(self) -> None:
        self.handler = None


@dataclass
class Replica:
    name: str
    forwarder: GatewayForwarder
    shared: SharedHealth
    channel: Channel
    events: RecordingObserver

    def fail_locally(self, url: str) -> None:
        """Requests to ``url`` fail here until its breaker opens (minimum_calls 2, 50 %)."""
        host = next(h for h in self.forwarder.router("pay").cluster.hosts if h.url == url)
        assert host.breaker is not None
        for _ in range(2):
            host.breaker.record("5xx", 0.01)

    def state(self, url: str) -> str:
        host = next(h for h in self.forwarder.router("pay").cluster.hosts if h.url == url)
        assert host.breaker is not None
        return host.breaker.state.value


E = TypeVar("E")


def of(replica: Replica, kind: type[E]) -> list[E]:
    return [e for e in replica.events.events if isinstance(e, kind)]


CONFIG = {
    "pay": {
        "endpoints": [GOOD, BAD],
        "breaker": {"minimum_calls": 2, "open_duration": 10.0, "half_open_calls": 1},
        "outlier_detection": {"enabled": False},
    }
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def fleet(clock: FakeClock) -> AsyncIterator[tuple[Bus, list[Replica]]]:
    bus = Bus()
    replicas = []
    async with AsyncExitStack() as stack:
        for name in ("a", "b", "c"):
            events = RecordingObserver()
            group = ObserverGroup([events])
            forwarder = build_forwarder(
                upstreams(**CONFIG), UpstreamDefaults(), clock=clock, observer=group, stats_interval=None
            )
            stack.push_async_callback(forwarder.aclose)
            identifier = Identifier({}, clock=clock, max_age=300, require_identity=False)
            table = QuorumTable(name, clock=clock)
            shared = SharedHealth(
                table, fleet=FLEET, take_out=forwarder.take_out, identify=identifier.identify,
                principals={"gw"}, observer=group, clock=clock,
            )  # fmt: skip
            group.add(shared)
            channel = Channel(bus, "gw")
            await channel.start(shared.receive)
            shared.start([channel])
            stack.push_async_callback(shared.aclose)
            replicas.append(Replica(name, forwarder, shared, channel, events))
        await settle()
        yield bus, replicas


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_replicas_learn_each_other_and_a_quorum_takes_the_dead_endpoint_out(
    fleet: tuple[Bus, list[Replica]],
) -> None:
    bus, (a, b, c) = fleet
    assert all(r.shared.table.live_peers() == sorted({"a", "b", "c"} - {r.name}) for r in (a, b, c))
    a.fail_locally(BAD)
    await settle()
    assert (b.state(BAD), c.state(BAD)) == ("closed", "closed")  # one sick replica is not a quorum
    b.fail_locally(BAD)
    await settle()
    assert c.state(BAD) == "open" and c.state(GOOD) == "closed"
    [taken] = of(c, EndpointTakenOut)
    assert (taken.endpoint, taken.votes, taken.quorum, taken.live) == (BAD, 2, 2, 3)
    assert of(a, EndpointTakenOut) == of(b, EndpointTakenOut) == []
    # C's take-out is not a verdict of its own: it never publishes BAD as down.
    from_c = [n for n in bus.sent if n["instance"] == "c"]
    assert from_c and not any(v["down"] for n in from_c for v in n["verdicts"])  # type: ignore[attr-defined]


async def test_the_way_back_is_local_and_old_verdicts_do_not_take_it_out_again(
    fleet: tuple[Bus, list[Replica]], clock: FakeClock
) -> None:
    _, (a, b, c) = fleet
    a.fail_locally(BAD)
    b.fail_locally(BAD)
    await settle()
    assert c.state(BAD) == "open"
    clock.advance(10.0)  # C's breaker half-opens and its own probe passes: back, locally
    await settle()
    assert c.state(BAD) == "half_open"
    host = next(h for h in c.forwarder.router("pay").cluster.hosts if h.url == BAD)
    assert host.breaker is not None
    host.breaker.try_acquire()
    host.breaker.record(None, 0.01)
    assert c.state(BAD) == "closed"
    clock.advance(5.0)  # heartbeats repeat A's and B's old verdicts
    await settle()
    assert c.state(BAD) == "closed" and len(of(c, EndpointTakenOut)) == 1


async def test_a_replica_fails_alone_and_the_others_keep_the_endpoint(
    fleet: tuple[Bus, list[Replica]], clock: FakeClock
) -> None:
    _, (a, b, c) = fleet
    a.fail_locally(BAD)
    for _ in range(4):
        clock.advance(5.0)
        await settle()
    assert (b.state(BAD), c.state(BAD)) == ("closed", "closed")
    assert of(b, EndpointTakenOut) == of(c, EndpointTakenOut) == []


async def test_a_silent_control_channel_means_local_decisions_loudly(
    fleet: tuple[Bus, list[Replica]], clock: FakeClock
) -> None:
    _, (a, b, c) = fleet
    c.channel.hears = False  # C's queue is gone: nothing reaches it, not even its own heartbeat
    for _ in range(4):
        clock.advance(5.0)
        await settle()
    assert c.shared.table.degraded
    changes = of(c, SharedHealthChanged)
    assert changes[-1].degraded and not any(e.degraded for e in of(a, SharedHealthChanged))
    a.fail_locally(BAD)
    b.fail_locally(BAD)
    await settle()
    assert c.state(BAD) == "closed"  # degraded: the peers' verdicts (heard before) no longer decide
    c.channel.hears = True
    c.channel.fails = True  # and publishing fails outright
    clock.advance(5.0)
    await settle()
    assert c.shared.table.degraded
    c.channel.fails = False
    clock.advance(5.0)
    await settle()
    assert not c.shared.table.degraded and not of(c, SharedHealthChanged)[-1].degraded
    assert c.state(BAD) == "open"  # back on the channel: the quorum decides again


async def test_hostile_notices_are_refused_and_the_reader_carries_on(
    fleet: tuple[Bus, list[Replica]], clock: FakeClock
) -> None:
    bus, (a, b, c) = fleet
    evil = Channel(bus, "mallory")
    stranger = Channel(bus, None)
    down = {"upstream": "pay", "endpoint": BAD, "down": True, "since": clock.time()}
    forged = {"type": HEALTH_VERDICTS, "fleet": FLEET, "sent_at": clock.time(), "verdicts": [down]}
    headers = {NOTICE_HEADER: HEALTH_VERDICTS}
    for name in ("x", "y"):  # a principal not in CONTROL_PRINCIPALS claims two replicas say it is down
        await evil.publish(orjson.dumps({**forged, "instance": name}), reply_to="", correlation_id="1", headers=headers)
    await stranger.publish(orjson.dumps({**forged, "instance": "z"}), reply_to="", correlation_id="2", headers=headers)
    forged_signature = {**headers, signature.KEY_ID: "k", signature.SIGNED_AT: "1", signature.SIGNATURE: "v1=00"}
    await stranger.publish(orjson.dumps(forged), reply_to="", correlation_id="3", headers=forged_signature)
    gw = Channel(bus, "gw")
    for body in (b"\xff not json", b"[]", b" " * (MAX_NOTICE_BYTES + 1), orjson.dumps({**forged, "instance": "../x"})):
        await gw.publish(body, reply_to="", correlation_id="4", headers=headers)
    await settle()
    assert c.state(BAD) == "closed" and c.shared.refused == 8
    kinds = sorted(e.kind for e in of(c, SecurityRefused))
    assert kinds == ["forbidden", "forbidden", "forbidden", "unauthenticated"]  # unsigned: anonymous, forbidden
    assert c.shared.table.live_peers() == ["a", "b"]
    a.fail_locally(BAD)  # and the real fleet still works
    b.fail_locally(BAD)
    await settle()
    assert c.state(BAD) == "open"


async def test_signed_notices_prove_a_kafka_gateway(clock: FakeClock) -> None:
    keys = {"gw-key": SigningKey("gw", b"s3cret")}
    identifier = Identifier(keys, clock=clock, max_age=300, require_identity=False)
    settings = Settings.model_validate({"CONTROL_PRINCIPALS": "gw", "CONTROL_KEY_ID": "gw-key"})
    observer = RecordingObserver()
    shared = build_shared_health(
        settings, instance="k1", take_out=lambda u, e, r: False, identifier=identifier, observer=observer, clock=clock
    )
    assert shared is not None
    bus = Bus()
    channel = Channel(bus, None)  # Kafka: no user_id, the signature is the proof
    await channel.start(shared.receive)
    shared.start([channel])
    await settle()
    assert shared.refused == 0 and not shared.table.degraded
    sent = bus.sent[-1]
    assert sent["instance"] == "k1" and sent["fleet"] == "cmn.requests"
    await shared.aclose()
    with pytest.raises(ConfigError, match="CONTROL_KEY_ID"):
        build_shared_health(
            Settings.model_validate({"CONTROL_PRINCIPALS": "gw", "CONTROL_KEY_ID": "nope"}),
            instance="k1", take_out=lambda u, e, r: False, identifier=identifier, observer=observer, clock=clock,
        )  # fmt: skip


def test_off_or_without_principals_there_is_no_shared_health(clock: FakeClock) -> None:
    identifier = Identifier({}, clock=clock, max_age=300, require_identity=False)

    def build(env: dict[str, str]) -> SharedHealth | None:
        return build_shared_health(
            Settings.model_validate(env), instance="i", take_out=lambda u, e, r: False,
            identifier=identifier, observer=RecordingObserver(), clock=clock,
        )  # fmt: skip

    assert build({"SHARED_HEALTH": "false", "CONTROL_PRINCIPALS": "gw"}) is None
    assert build({"CONTROL_PRINCIPALS": ""}) is None
    assert build({"CONTROL_PRINCIPALS": "gw"}) is not None
    with pytest.raises(ValueError, match="greater than or equal to 2"):
        Settings.model_validate({"SHARED_HEALTH_QUORUM": "1"})


async def test_a_breaker_opening_on_its_own_is_published_at_once(fleet: tuple[Bus, list[Replica]]) -> None:
    bus, (a, _, _) = fleet
    before = len(bus.sent)
    a.fail_locally(BAD)
    await settle()
    [notice] = [n for n in bus.sent[before:] if n["instance"] == "a"]
    assert notice["verdicts"] == [{"upstream": "pay", "endpoint": BAD, "down": True, "since": notice["sent_at"]}]
    assert [e.new for e in of(a, BreakerStateChanged)] == ["open"]
    assert "taken_out=0" in repr(a.shared)


async def test_a_fleet_whose_own_principal_is_not_listed_says_so_once_not_every_heartbeat(
    clock: FakeClock, captured: Captured
) -> None:
    identifier = Identifier({}, clock=clock, max_age=300, require_identity=False)
    shared = SharedHealth(
        QuorumTable("me", clock=clock), fleet=FLEET, take_out=lambda u, e, r: False, identify=identifier.identify,
        principals={"ops"}, observer=RecordingObserver(), clock=clock,
    )  # fmt: skip
    channel = Channel(Bus(), "gw")  # the gateways' AMQP user, which CONTROL_PRINCIPALS forgot
    await channel.start(shared.receive)
    shared.start([channel])
    for _ in range(4):
        await settle()
        clock.advance(5.0)
    await settle()
    await shared.aclose()
    events = [line["event"] for line in captured.lines()]
    assert shared.refused == 5 and events.count("own_verdicts_refused") == 1
    assert events.count("verdicts_refused") == 1  # the first of its kind; the rest are counted
    assert events.count("shared_health_degraded") == 1


def test_a_notice_keeps_within_its_bound_down_verdicts_first(clock: FakeClock) -> None:
    identifier = Identifier({}, clock=clock, max_age=300, require_identity=False)
    table = QuorumTable("me", clock=clock)
    shared = SharedHealth(
        table, fleet=FLEET, take_out=lambda u, e, r: False, identify=identifier.identify,
        principals={"gw"}, observer=RecordingObserver(), clock=clock,
    )  # fmt: skip
    for i in range(200):  # more verdicts, and longer URLs, than one notice holds
        table.own(("pay", f"http://10.0.{i}.1:8080/" + "p" * 1500), i % 2 == 0, clock.time())
    notice = shared.notice()
    assert len(notice.encode()) <= MAX_NOTICE_BYTES
    assert 0 < len(notice.verdicts) < 100
    assert all(v.down for v in notice.verdicts)  # the up ones went first


def test_the_heartbeat_setting_sets_how_soon_silence_counts_as_degraded(clock: FakeClock) -> None:
    identifier = Identifier({}, clock=clock, max_age=300, require_identity=False)

    def built(env: dict[str, str]) -> SharedHealth:
        shared = build_shared_health(
            Settings.model_validate({"CONTROL_PRINCIPALS": "gw", **env}), instance="i",
            take_out=lambda u, e, r: False, identifier=identifier, observer=RecordingObserver(), clock=clock,
        )  # fmt: skip
        assert shared is not None
        return shared

    fast, default = built({"SHARED_HEALTH_HEARTBEAT_MS": "1000"}), built({})
    clock.advance(3.5)  # three 1 s heartbeats unheard; not yet three of the default 5 s
    assert fast.table.degraded and not default.table.degraded
    clock.advance(12.0)
    assert default.table.degraded
    for bad in ("50", "20000"):  # under 100 ms floods the channel; over 10 s a live peer could look gone
        with pytest.raises(ValueError, match="SHARED_HEALTH_HEARTBEAT_MS"):
            Settings.model_validate({"SHARED_HEALTH_HEARTBEAT_MS": bad})
