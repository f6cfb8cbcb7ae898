"""Parking in the pipeline, on the in-memory transport with a real forwarder and a real upstream.

The upstream answers 503 while ``down`` is set. A parked copy is handed back with
``MemoryTransport.unpark`` (what the broker does once the tier's delay passed), so these tests drive
the decisions (park or answer, tier, deadline, seal, attempts) without waiting on a broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from gateway.access import signature
from gateway.access.guard import Guard
from gateway.access.identity import Identifier, SigningKey
from gateway.access.policy import AccessPolicy
from gateway.access.replay import MemoryReplayRecord
from gateway.access.reply_address import ReplyAddresses
from gateway.admission import Admission
from gateway.bus.base import DEAD_LETTERS, REQUESTS, TELEMETRY
from gateway.events import ObserverGroup, RecordingObserver, RequestCompleted, RequestParked, SecurityRefused
from gateway.idempotency import Deduplicator, MemoryIdempotencyStore
from gateway.parking import Parking, ParkPolicy, Sealer
from gateway.parking import ticket as park_headers
from gateway.pipeline import Pipeline
from gateway.telemetry.service import TelemetryService
from gateway.telemetry.tracing import NoopRequestTracer
from gateway.testing import FakeClock, MemoryTransport
from gateway.upstream.config import UpstreamDefaults, UpstreamsFile
from gateway.upstream.forward import build_forwarder
from gateway.worker import Lane, Worker
from tests.fixtures.upstreams import StartUpstream, Upstream

REPLIES = "cmn.replies.test"
SECRET = b"park-secret-for-tests-0123456789"
KEY = SigningKey("alice", b"alice-signing-secret")


@dataclass
class Flaky:
    upstream: Upstream
    down: bool = True


@dataclass
class Rig:
    transport: MemoryTransport
    events: RecordingObserver
    clock: FakeClock
    parking: Parking

    def send(self, **fields: Any) -> bytes:
        envelope = {"id": "r1", "upstream": "flaky", "method": "GET", "path": "/", "timeout_ms": 60_000, **fields}
        body = orjson.dumps(envelope)
        self.transport.send(body, reply_to=REPLIES, correlation_id="r1")
        return body

    def replies(self) -> list[dict[str, Any]]:
        return [orjson.loads(m.body) for m in self.transport.published]

    def parked_events(self) -> list[RequestParked]:
        return [e for e in self.events.events if isinstance(e, RequestParked)]


async def flaky_upstream(start_upstream: StartUpstream) -> Flaky:
    flaky: list[Flaky] = []

    async def handle(request: web.Request) -> web.Response:
        flaky[0].upstream.hits += 1
        return web.json_response({"ok": True}, status=503 if flaky[0].down else 200)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    flaky.append(Flaky(await start_upstream(app)))
    return flaky[0]


@asynccontextmanager
async def running(upstream: Upstream, *, delays: tuple[int, ...] = (1, 5, 30)) -> AsyncIterator[Rig]:
    clock = FakeClock()
    transport = MemoryTransport()
    events = RecordingObserver()
    observers = ObserverGroup([events])
    retry = {"attempts": 2, "backoff_base": 0.001}
    config = {"endpoints": [upstream.url], "retry": retry, "breaker": {"enabled": False}}
    upstreams = UpstreamsFile.model_validate({"upstreams": {"flaky": config}})
    forwarder = build_forwarder(upstreams, UpstreamDefaults(), clock=clock, observer=observers, stats_interval=None)
    telemetry = TelemetryService(clock=clock, instance="gw-test", publishers=[transport])
    guard = Guard(
        Identifier({"k1": KEY}, clock=clock, max_age=300, require_identity=False),
        AccessPolicy({}, {}),
        ReplyAddresses(
            queue_pattern="cmn.replies.*", topic_pattern="cmn.replies.*", reserved=(REQUESTS, TELEMETRY, DEAD_LETTERS)
        ),
        MemoryReplayRecord(clock),
    )
    parking = Parking({"flaky": ParkPolicy(delays)}, sealer=Sealer(SECRET), clock=clock, seal_ttl=300.0)
    pipeline = Pipeline(
        transport=transport,
        forwarder=forwarder,
        admission=Admission(
            clock, 30.0, 1 << 20, max_timeout_ms=300_000, max_envelope_depth=32, max_envelope_nodes=10_000
        ),
        guard=guard,
        telemetry=telemetry,
        observer=observers,
        tracer=NoopRequestTracer(),
        clock=clock,
        dedupe=Deduplicator(MemoryIdempotencyStore(clock), 60.0, clock),
        parking=parking,
    )
    worker = Worker([Lane(transport, pipeline)])
    await worker.start()
    try:
        yield Rig(transport, events, clock, parking)
    finally:
        await worker.aclose()
        await forwarder.aclose()


async def idle(rig: Rig) -> None:
    """Until every handler finished; the router's backoff sleeps on the fake clock, moved along here."""
    for _ in range(2000):
        await asyncio.sleep(0.002)  # the real upstream answers on the real loop
        if rig.clock.sleepers:
            rig.clock.advance(0.01)
        elif rig.transport.in_flight == 0:
            return
    raise AssertionError(f"still busy: {rig.transport!r}")


async def test_a_failed_get_parks_instead_of_failing_and_succeeds_on_return(start_upstream: StartUpstream) -> None:
    flaky = await flaky_upstream(start_upstream)
    async with running(flaky.upstream) as rig:
        body = rig.send()
        await idle(rig)
        assert rig.replies() == []  # not answered: parked
        ((original, tier, headers),) = rig.transport.parked
        assert tier == "cmn.requests.park.1s" and original.body == body
        assert headers[park_headers.COUNT] == "1" and headers[park_headers.ATTEMPTS] == "2"
        assert len(rig.transport.settled) == 1  # the original, once the copy was confirmed
        (event,) = rig.parked_events()
        assert (event.tier, event.delay, event.park_count, event.reason) == (0, 1, 1, "status_503")
        assert [kind for kind, _, _ in rig.transport.telemetry] == ["request.parked"]
        flaky.down = False
        rig.clock.advance(1.0)
        rig.transport.unpark()
        await idle(rig)
    (reply,) = rig.replies()
    assert (reply["status"], reply["attempts"]) == (200, 3)  # every try counted: 2 before parking, 1 after
    assert flaky.upstream.hits == 3 and len(rig.transport.settled) == 2


async def test_tiers_run_out_and_the_caller_gets_the_last_error_with_every_attempt(
    start_upstream: StartUpstream,
) -> None:
    flaky = await flaky_upstream(start_upstream)
    async with running(flaky.upstream, delays=(1, 5)) as rig:
        rig.send()
        await idle(rig)
        for delay in (1, 5):
            rig.clock.advance(delay)
            rig.transport.unpark()
            await idle(rig)
    assert [tier for _, tier, _ in rig.transport.parked] == ["cmn.requests.park.1s", "cmn.requests.park.5s"]
    (reply,) = rig.replies()
    assert (reply["status"], reply["attempts"]) == (503, 6)
    assert flaky.upstream.hits == 6


async def test_a_post_without_idempotency_key_never_parks(start_upstream: StartUpstream) -> None:
    flaky = await flaky_upstream(start_upstream)
    async with running(flaky.upstream) as rig:
        rig.send(method="POST", json={"pay": 1})
        await idle(rig)
    assert rig.transport.parked == []
    (reply,) = rig.replies()
    assert reply["status"] == 503


async def test_a_post_with_an_idempotency_key_parks(start_upstream: StartUpstream) -> None:
    flaky = await flaky_upstream(start_upstream)
    async with running(flaky.upstream) as rig:
        rig.send(method="POST", json={"pay": 1}, idempotency_key="pay-1")
        await idle(rig)
        assert len(rig.transport.parked) == 1
        flaky.down = False
        rig.clock.advance(1.0)
        rig.transport.unpark()
        await idle(rig)
    (reply,) = rig.replies()
    # The 503 was not remembered under the key: the returning copy called the upstream again.
    assert reply["status"] == 200 and flaky.upstream.hits == 3  # with a key, retried in process too


async def test_the_deadline_counts_from_the_first_publish(start_upstream: StartUpstream) -> None:
    flaky = await flaky_upstream(start_upstream)
    async with running(flaky.upstream, delays=(1, 5, 30)) as rig:
        rig.send(timeout_ms=10_000)  # 10 s: tiers 1 and 5 fit, 30 does not
        await idle(rig)
        rig.clock.advance(1.0)
        rig.transport.unpark()
        await idle(rig)
        assert len(rig.transport.parked) == 2
        # The copy's own arrival is no fresh start: with ~4 s left, the 5 s tier is refused below.
        rig.clock.advance(5.0)
        rig.transport.unpark()
        await idle(rig)
    assert len(rig.transport.parked) == 2
    (reply,) = rig.replies()
    assert reply["status"] == 503


async def test_a_parked_copy_past_its_deadline_is_not_sent(start_upstream: StartUpstream) -> None:
    flaky = await flaky_upstream(start_upstream)
    async with running(flaky.upstream) as rig:
        rig.send(timeout_ms=3_000)
        await idle(rig)
        hits = flaky.upstream.hits
        rig.clock.advance(10.0)  # the broker held it far longer than its tier (the gateway was down, say)
        rig.transport.unpark()
        await idle(rig)
    (reply,) = rig.replies()
    assert reply["error"]["code"] == "deadline_exceeded" and flaky.upstream.hits == hits


async def test_forged_park_headers_are_ignored(start_upstream: StartUpstream) -> None:
    flaky = await flaky_upstream(start_upstream)
    async with running(flaky.upstream, delays=(1,)) as rig:
        forged = {
            park_headers.COUNT: "0",
            park_headers.DEADLINE: "9999999999999",
            park_headers.ATTEMPTS: "0",
            park_headers.PRINCIPAL: "admin",
            park_headers.VIA: "user_id",
            park_headers.NONCE: "00",
            park_headers.SEAL: "v1=" + "0" * 64,
        }
        body = orjson.dumps({"id": "r1", "upstream": "flaky", "method": "GET", "path": "/", "timeout_ms": 60_000})
        rig.transport.send(body, reply_to=REPLIES, correlation_id="r1", headers=forged)
        await idle(rig)
        assert rig.parking.forged == 1
    # Served as a fresh, anonymous request (the forged deadline and principal ignored), and answered:
    # a copy whose park headers do not verify never parks again (tests/parking/test_foreign_seal.py).
    assert rig.transport.parked == []
    (reply,) = rig.replies()
    (completed,) = [e for e in rig.events.events if isinstance(e, RequestCompleted)]
    assert reply["status"] == 503 and completed.principal is None


async def test_a_signed_request_parks_as_its_signer_and_a_replayed_copy_is_refused(
    start_upstream: StartUpstream,
) -> None:
    flaky = await flaky_upstream(start_upstream)
    async with running(flaky.upstream) as rig:
        body = orjson.dumps({"id": "r1", "upstream": "flaky", "method": "GET", "path": "/", "timeout_ms": 60_000})
        signed = signature.sign(
            "k1", KEY.secret, now_ms=int(rig.clock.time() * 1000), correlation_id="r1", reply_to=REPLIES, body=body
        )
        rig.transport.send(body, reply_to=REPLIES, correlation_id="r1", headers=signed)
        await idle(rig)
        ((_, _, headers),) = rig.transport.parked
        assert (headers[park_headers.PRINCIPAL], headers[park_headers.VIA]) == ("alice", "signature")
        flaky.down = False
        rig.clock.advance(1.0)
        rig.transport.unpark()  # the signature was used once already: the seal vouches for alice
        await idle(rig)
        rig.transport.unpark()  # the same parked copy published again: a replay
        await idle(rig)
    # The replay is refused without an answer (the reply address is alice's, who has hers): recorded only.
    (first,) = rig.replies()
    assert first["status"] == 200
    assert flaky.upstream.hits == 3 and len(rig.transport.settled) == 3
    refused = [e for e in rig.events.events if isinstance(e, SecurityRefused)]
    assert [(e.kind, e.reason) for e in refused] == [("unauthenticated", "this parked copy was already used")]
