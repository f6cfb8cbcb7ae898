"""The pipeline's decisions without a broker: decode, guard, admit, dedupe, forward, reply, settle, dead-letter.

A real pipeline (real forwarder to a real aiohttp upstream, real guard, admission and dedupe) runs
behind the real worker on ``gateway.testing.MemoryTransport``, which keeps the Transport contract:
confirmed publishes or the broker's errors, settle at most once, unsettled deliveries come again
only when redelivered. The real-broker suites (tests/bus, tests/integration) stay beside these.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from gateway.access.guard import Guard
from gateway.access.identity import Identifier
from gateway.access.policy import AccessPolicy
from gateway.access.replay import MemoryReplayRecord
from gateway.access.reply_address import ReplyAddresses
from gateway.admission import Admission
from gateway.app import Gateway, load_config
from gateway.bus.base import DEAD_LETTERS, REQUESTS, TELEMETRY
from gateway.client import GatewayClient
from gateway.envelope.codec import JSON, Reply
from gateway.errors import BusUnavailableError
from gateway.events import Event, ObserverGroup, RecordingObserver, RequestCompleted, SecurityRefused
from gateway.idempotency import Deduplicator, MemoryIdempotencyStore
from gateway.pipeline import Pipeline
from gateway.settings import load_settings
from gateway.telemetry.service import TelemetryService
from gateway.telemetry.tracing import NoopRequestTracer
from gateway.testing import FakeClock, MemoryRequester, MemoryTransport
from gateway.upstream.config import UpstreamDefaults, UpstreamsFile
from gateway.upstream.forward import build_forwarder
from gateway.worker import Lane, Worker
from tests.fixtures.upstreams import Upstream
from tests.upstream.helpers import parked

REPLIES = "cmn.replies.test"


@dataclass
class Rig:
    transport: MemoryTransport
    events: RecordingObserver
    observers: ObserverGroup
    clock: FakeClock

    def request(self, reply_to: str | None = REPLIES, **fields: Any) -> bytes:
        envelope = {"id": "r1", "upstream": "echo", "method": "GET", "path": "/", **fields}
        self.transport.send(orjson.dumps(envelope), reply_to=reply_to, correlation_id=str(envelope["id"]))
        return orjson.dumps(envelope)

    def replies(self) -> list[dict[str, Any]]:
        return [orjson.loads(m.body) for m in self.transport.published]

    def completed(self) -> list[dict[str, Any]]:
        """The request.completed events as published on the telemetry stream."""
        return [orjson.loads(body)["data"] for kind, body, _ in self.transport.telemetry if kind == "request.completed"]

    def of(self, kind: str) -> list[Event]:
        return [e for e in self.events.events if e.type == kind]


@asynccontextmanager
async def running(
    upstream: Upstream, transport: MemoryTransport | None = None, **upstream_config: Any
) -> AsyncIterator[Rig]:
    clock = FakeClock()
    transport = transport or MemoryTransport()
    events = RecordingObserver()
    observers = ObserverGroup([events])
    upstreams = UpstreamsFile.model_validate({"upstreams": {"echo": {"endpoints": [upstream.url], **upstream_config}}})
    forwarder = build_forwarder(upstreams, UpstreamDefaults(), clock=clock, observer=observers, stats_interval=None)
    telemetry = TelemetryService(clock=clock, instance="gw-test", publishers=[transport])
    observers.add(telemetry)
    guard = Guard(
        Identifier({}, clock=clock, max_age=300, require_identity=False),
        AccessPolicy({}, {}),
        ReplyAddresses(
            queue_pattern="cmn.replies.*", topic_pattern="cmn.replies.*", reserved=(REQUESTS, TELEMETRY, DEAD_LETTERS)
        ),
        MemoryReplayRecord(clock),
    )
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
    )
    worker = Worker([Lane(transport, pipeline)])
    await worker.start()
    try:
        yield Rig(transport, events, observers, clock)
    finally:
        await worker.aclose()
        await forwarder.aclose()


async def test_a_good_request_is_forwarded_answered_recorded_and_settled_once(echo_upstream: Upstream) -> None:
    async with running(echo_upstream) as rig:
        rig.request(path="/hello", headers={"x-app": "a"})
        await rig.transport.idle()
    (reply,) = rig.replies()
    assert (reply["id"], reply["status"], reply["attempts"]) == ("r1", 200, 1)
    assert reply["json"]["path"] == "/hello" and reply["json"]["headers"]["x-app"] == "a"
    assert rig.transport.published[0].destination == REPLIES and rig.transport.published[0].correlation_id == "r1"
    assert echo_upstream.hits == 1
    assert len(rig.transport.settled) == 1 and rig.transport.unsettled == [] and rig.transport.dead_letters == []
    # One event, built once: the observers and the stream saw the same request.completed.
    (observed,) = rig.of("request.completed")
    assert isinstance(observed, RequestCompleted)
    (published,) = rig.completed()
    assert published["request_id"] == observed.request_id == "r1"
    assert (published["status_code"], published["upstream"], published["transport"]) == (200, "echo", "memory")
    assert published["principal"] is None and published["dead_lettered"] is False


async def test_undecodable_input_is_answered_dead_lettered_and_settled(echo_upstream: Upstream) -> None:
    async with running(echo_upstream) as rig:
        rig.transport.send(b"not json", reply_to=REPLIES, correlation_id="c-9")
        await rig.transport.idle()
    (reply,) = rig.replies()
    assert reply["error"]["code"] == "invalid_request" and reply["id"] == "c-9"
    ((dead, reason),) = rig.transport.dead_letters
    assert dead.body == b"not json" and reason.startswith("invalid_request:")
    assert len(rig.transport.settled) == 1 and echo_upstream.hits == 0
    assert rig.completed()[0]["dead_lettered"] is True
    assert [e.type for e in rig.of("message.dead_lettered")] == ["message.dead_lettered"]


async def test_a_refused_reply_address_gets_nothing_and_raises_a_security_event(echo_upstream: Upstream) -> None:
    async with running(echo_upstream) as rig:
        rig.request(reply_to=REQUESTS)  # replying there would loop requests back into the gateway
        await rig.transport.idle()
    assert rig.transport.published == [] and echo_upstream.hits == 0
    ((_, reason),) = rig.transport.dead_letters
    assert reason.startswith("reply_to_refused:")
    assert len(rig.transport.settled) == 1
    assert [e.type for e in rig.of("security.reply_to_refused")] == ["security.reply_to_refused"]


async def test_an_unknown_upstream_is_refused_before_any_network_io(echo_upstream: Upstream) -> None:
    async with running(echo_upstream) as rig:
        rig.request(upstream="nowhere")
        await rig.transport.idle()
    assert rig.replies()[0]["error"]["code"] == "unknown_upstream"
    assert len(rig.transport.dead_letters) == 1 and echo_upstream.hits == 0


async def test_a_request_expired_on_arrival_is_never_sent_and_is_dead_lettered(echo_upstream: Upstream) -> None:
    """Past its deadline before the gateway saw it: the publisher's problem, so the DLQ keeps a copy."""
    async with running(echo_upstream) as rig:
        past = int(rig.clock.time() * 1000) - 5_000
        rig.request(deadline=past)
        await rig.transport.idle()
    assert rig.replies()[0]["error"]["code"] == "deadline_exceeded"
    ((_, reason),) = rig.transport.dead_letters
    assert reason.startswith("deadline_exceeded: request expired")
    assert echo_upstream.hits == 0 and len(rig.transport.settled) == 1


async def test_a_slow_upstream_is_timeout_and_never_dead_lettered(echo_upstream: Upstream) -> None:
    """The attempt timeout cuts a slow upstream short: ``timeout``, the caller is told, the DLQ stays empty."""
    async with running(echo_upstream, timeouts={"attempt": 0.2}, retry={"attempts": 1}) as rig:
        rig.request(path="/?delay_ms=2000")
        await rig.transport.idle()
    (reply,) = rig.replies()
    assert reply["error"]["code"] == "timeout"
    assert rig.transport.dead_letters == [] and rig.completed()[0]["dead_lettered"] is False
    assert len(rig.transport.settled) == 1


async def test_a_deadline_run_out_inside_the_gateway_is_answered_and_never_dead_lettered(
    echo_upstream: Upstream,
) -> None:
    """Queued in the bulkhead behind a slow request until its deadline passed: ``deadline_exceeded``,
    answered and settled, the DLQ empty. Only a request already past its deadline on arrival is the
    publisher's problem (``RequestExpiredError``); one that ran out while the gateway held it is not."""
    async with running(echo_upstream, limits={"max_concurrent": 1, "max_queued": 1}) as rig:
        rig.request(id="slow", path="/?delay_ms=300", timeout_ms=30_000)
        rig.request(id="queued", timeout_ms=1_000)
        await parked(rig.clock)  # "queued" waits on the FakeClock for the bulkhead's slot
        rig.clock.advance(1.0)
        await rig.transport.idle()
    replies = {r["id"]: r for r in rig.replies()}
    assert replies["queued"]["error"]["code"] == "deadline_exceeded"
    assert "queued in the bulkhead" in replies["queued"]["error"]["message"]
    assert replies["slow"]["status"] == 200
    assert rig.transport.dead_letters == [] and [c["dead_lettered"] for c in rig.completed()] == [False, False]
    assert len(rig.transport.settled) == 2


async def test_a_repeated_idempotency_key_reaches_the_upstream_once(echo_upstream: Upstream) -> None:
    async with running(echo_upstream) as rig:
        rig.request(id="a", method="POST", path="/pay", json={"n": 1}, idempotency_key="k-1")
        await rig.transport.idle()
        rig.request(id="b", method="POST", path="/pay", json={"n": 1}, idempotency_key="k-1")
        await rig.transport.idle()
    assert echo_upstream.hits == 1
    assert [(r["id"], r["status"]) for r in rig.replies()] == [("a", 200), ("b", 200)]
    assert len(rig.transport.settled) == 2


async def test_a_reply_the_broker_cannot_confirm_leaves_the_request_unsettled_until_it_comes_again(
    echo_upstream: Upstream,
) -> None:
    """Settling after the reply is confirmed: a failed reply publish never settles; the redelivery is answered."""
    async with running(echo_upstream) as rig:
        rig.transport.fail_replies(BusUnavailableError("no confirm within 30 s"))
        rig.request()
        await rig.transport.idle()
        assert rig.transport.settled == [] and len(rig.transport.unsettled) == 1
        assert rig.transport.publish_attempts == 1  # one publish: the transport owns the retrying
        rig.transport.fail_replies(None)
        rig.transport.redeliver_unsettled()  # the broker's redelivery once the channel closed
        await rig.transport.idle()
    assert [d.redelivered for d in rig.transport.settled] == [True]
    assert [r["status"] for r in rig.replies()] == [200]
    assert echo_upstream.hits == 2


async def test_a_refusal_raises_its_security_event_even_when_its_reply_cannot_be_delivered(
    echo_upstream: Upstream,
) -> None:
    """The event says a hostile request was refused; whether the answer reached the sender does not change
    that. Raised after the reply's confirm, it was missing for a reply the broker did not confirm, and a
    caller could hold its reply before the event existed (a flaky end-to-end test showed it)."""
    async with running(echo_upstream) as rig:
        rig.transport.fail_replies(BusUnavailableError("no confirm within 30 s"))
        rig.request(path="/a/../../etc/passwd")
        await rig.transport.idle()
        assert rig.transport.settled == []  # unsettled: it comes again, and is refused again
        refusals = [e for e in rig.events.events if isinstance(e, SecurityRefused)]
        assert [(e.request_id, e.upstream) for e in refusals] == [("r1", "echo")]
        assert refusals[0].kind == "invalid_path"


async def test_a_telemetry_event_the_broker_cannot_confirm_leaves_the_request_unsettled(
    echo_upstream: Upstream,
) -> None:
    async with running(echo_upstream) as rig:
        rig.transport.fail_telemetry(BusUnavailableError("stream away"))
        rig.request()
        await rig.transport.idle()
    assert rig.transport.settled == [] and len(rig.transport.unsettled) == 1


async def test_a_reply_too_large_for_the_bus_is_answered_with_the_reason(echo_upstream: Upstream) -> None:
    transport = MemoryTransport(max_message_bytes=4096)
    async with running(echo_upstream, transport) as rig:
        rig.request(path="/?size=100000")
        await rig.transport.idle()
    (reply,) = rig.replies()
    assert reply["status"] is None and reply["error"]["code"] == "payload_too_large"
    assert len(rig.transport.settled) == 1


async def test_a_reply_address_the_broker_refuses_for_good_is_settled_without_a_reply(echo_upstream: Upstream) -> None:
    async with running(echo_upstream) as rig:
        rig.transport.refuse(REPLIES)
        rig.request()
        await rig.transport.idle()
    assert rig.transport.published == [] and len(rig.transport.settled) == 1  # nothing could ever be delivered there


SECRET = "k-42"


class Broken:
    def on_event(self, event: Event) -> None:
        raise ValueError("observer bug, quoting api_key=" + SECRET)


async def test_a_failing_observer_is_logged_once_counted_always_and_never_fails_a_request(
    echo_upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(echo_upstream) as rig:
        rig.observers.add(Broken())
        with caplog.at_level(logging.ERROR, logger="cmn.events"):
            for i in range(3):
                rig.request(id=f"r{i}")
            await rig.transport.idle()
    assert [r["status"] for r in rig.replies()] == [200, 200, 200]
    assert rig.observers.failures[("Broken", "request.completed")] == 3
    logged = [r.getMessage() for r in caplog.records if "request.completed" in r.getMessage()]
    assert len(logged) == 1 and "Broken" in logged[0] and "ValueError" in logged[0]
    assert SECRET not in caplog.text  # the exception's message may quote input: never logged


def test_an_unencodable_reply_becomes_an_internal_error_reply() -> None:
    """Whatever slips through (here a lone surrogate), the requester gets an answer and the message settles."""
    raw = Pipeline._encode(Reply(id="r1", status=200, headers={"x": "\udcff"}, body=b"ok"), JSON)
    doc = orjson.loads(raw)
    assert doc["id"] == "r1" and doc["status"] == 200
    assert doc["error"]["code"] == "internal" and "could not be encoded" in doc["error"]["message"]
    assert doc["headers"] == {}


async def test_a_whole_gateway_and_its_client_run_in_memory(echo_upstream: Upstream) -> None:
    """What a user's test can do without a broker: the real Gateway on MemoryTransport, the SDK on MemoryRequester."""
    transport = MemoryTransport()
    settings = load_settings(ENABLE_METRICS=False)
    config = load_config(settings, {"upstreams": {"echo": {"endpoints": [echo_upstream.url]}}})
    async with Gateway(config, transports=[transport]), GatewayClient(MemoryRequester(transport)) as client:
        reply = await client.request("echo", "POST", "/in-memory", json={"n": 1})
    assert reply.status == 200 and reply.json_["path"] == "/in-memory" and reply.json_["body"] == '{"n":1}'
    assert len(transport.settled) == 1
    assert [kind for kind, _, _ in transport.telemetry] == ["request.completed"]
