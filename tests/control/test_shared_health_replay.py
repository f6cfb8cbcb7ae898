"""Red team: signed ``health.verdicts`` notices captured on cmn.control (a Kafka topic any reader may
consume) and published again.

A signature stays good for SIGNATURE_MAX_AGE (300 s) and notices are not held to "once" (every replica
receives each of them), so before the fix a replayed notice counted as fresh: replicas long gone (the pods
of the last deploy) came back as live voters for minutes, enough to take a healthy endpoint out of every
replica, and replaying a live replica's latest notice kept it live after it died.
"""

from __future__ import annotations

import uuid

import orjson

from gateway.access import signature
from gateway.access.identity import Identifier, SigningKey
from gateway.control.shared_health import SharedHealth, build_shared_health
from gateway.envelope.health import HEALTH_VERDICTS, NOTICE_HEADER
from gateway.events import RecordingObserver, SecurityRefused
from gateway.settings import Settings
from gateway.testing import FakeClock
from tests.control.test_shared_health import BAD, FLEET, Bus, Channel, settle

KEY = SigningKey("gw", b"fleet-control-key-0123456789")


class Captured:
    """Genuine notices of the fleet as a reader of cmn.control saw them: body and headers."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock

    def notice(self, instance: str, *, down: bool = True) -> tuple[bytes, dict[str, str], str]:
        now = self.clock.time()
        verdict = {"upstream": "pay", "endpoint": BAD, "down": down, "since": now}
        body = orjson.dumps(
            {"type": HEALTH_VERDICTS, "instance": instance, "fleet": FLEET, "sent_at": now, "verdicts": [verdict]}
        )
        correlation_id = uuid.uuid4().hex
        headers = {NOTICE_HEADER: HEALTH_VERDICTS}
        headers |= signature.sign(
            "gw-key", KEY.secret, now_ms=int(now * 1000), correlation_id=correlation_id, reply_to="", body=body
        )
        return body, headers, correlation_id


async def replica(clock: FakeClock, taken: list[str], bus: Bus) -> tuple[SharedHealth, RecordingObserver]:
    identifier = Identifier({"gw-key": KEY}, clock=clock, max_age=300, require_identity=False)
    settings = Settings.model_validate({"CONTROL_PRINCIPALS": "gw", "CONTROL_KEY_ID": "gw-key"})
    observer = RecordingObserver()

    def take_out(upstream: str, endpoint: str, reason: str) -> bool:
        taken.append(endpoint)
        return True

    shared = build_shared_health(
        settings, instance="c", take_out=take_out, identifier=identifier, observer=observer, clock=clock
    )
    assert shared is not None
    channel = Channel(bus, None)  # Kafka: no user_id, the signature is the proof
    await channel.start(shared.receive)
    shared.start([channel])
    await settle()
    return shared, observer


async def test_replayed_notices_of_gone_replicas_take_nothing_out() -> None:
    clock, bus, taken = FakeClock(), Bus(), list[str]()
    captured = Captured(clock)
    old = [captured.notice("old-1"), captured.notice("old-2")]  # the last deploy's pods, during an outage
    clock.advance(200.0)  # long gone; their signatures still inside SIGNATURE_MAX_AGE
    shared, observer = await replica(clock, taken, bus)
    attacker = Channel(bus, None)
    for body, headers, correlation_id in old:
        await attacker.publish(body, reply_to="", correlation_id=correlation_id, headers=headers)
    await settle()
    assert shared.table.live_peers() == [] and taken == []
    refused = [e for e in observer.events if isinstance(e, SecurityRefused)]
    assert len(refused) == 2 and all("stale" in e.reason for e in refused)
    await shared.aclose()


async def test_replaying_a_replicas_latest_notice_does_not_keep_it_live() -> None:
    clock, bus, taken = FakeClock(), Bus(), list[str]()
    shared, _ = await replica(clock, taken, bus)
    attacker = Channel(bus, None)
    body, headers, correlation_id = Captured(clock).notice("b", down=False)
    await attacker.publish(body, reply_to="", correlation_id=correlation_id, headers=headers)  # b, genuinely
    assert shared.table.live_peers() == ["b"]
    clock.advance(25.0)  # b died after that notice; its copy is published again
    await attacker.publish(body, reply_to="", correlation_id=correlation_id, headers=headers)
    clock.advance(10.0)
    assert shared.table.live_peers() == []  # 35 s after b's last word: gone, whatever was replayed
    await shared.aclose()
