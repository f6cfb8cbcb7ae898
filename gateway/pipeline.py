"""handle(delivery): decode → guard → admit → forward → encode → publish reply + telemetry → settle.

The guard answers three questions before any network I/O: may a reply go to this address
(else nothing is sent there and the request is dead-lettered), who sent it (AMQP user_id or a
signature), and may they use this upstream, and for which tenant. Every refusal is answered with
its error code and raises a ``security.<kind>`` event.

The one function that owns processing order. Every input gets an answer: bad input is answered
with an error reply (when a reply address is known) and copied to the dead-letter queue; the
request is settled only after its reply and telemetry event are confirmed by the broker, so a
crash anywhere before that means redelivery, never loss. Publishing is not retried here: the
transport answers "confirmed, or ``BusUnavailableError`` within its publish timeout", and this
module decides what follows (leave the request unsettled: it comes again).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Protocol

import structlog

from gateway.access.guard import Guard
from gateway.access.identity import ANONYMOUS_CALLER, Caller
from gateway.admission import Admission, Admitted
from gateway.bus.base import REQUESTS, Delivery, OutboundMessage, Transport
from gateway.clock import Clock, Deadline
from gateway.envelope.codec import (
    JSON,
    MSGPACK,
    DecodeError,
    OversizeError,
    Reply,
    decode_request,
    encode_reply,
    normalise_content_type,
)
from gateway.envelope.models import RequestEnvelope
from gateway.errors import (
    GatewayError,
    InternalError,
    MessageRejectedError,
    ParkedCopyReusedError,
    ReplyToRefusedError,
)
from gateway.events import (
    MessageDeadLettered,
    Observer,
    RequestCompleted,
    RequestParked,
    RequestReceived,
    SecurityRefused,
)
from gateway.idempotency import Deduplicator, IdempotencyKey
from gateway.parking import Parking, ParkPlan, ParkTicket
from gateway.telemetry.service import TelemetryService
from gateway.together import together
from gateway.upstream.base import Forwarder, OutboundRequest, UpstreamResponse

log = structlog.get_logger("cmn.pipeline")

TRACE_HEADERS = ("traceparent", "tracestate")


class RequestTracer(Protocol):
    def request_span(
        self, headers: Mapping[str, str], *, transport: str, destination: str, correlation_id: str | None
    ) -> AbstractContextManager[None]: ...

    def inject(self, carrier: dict[str, str]) -> None: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    reply: Reply
    envelope: RequestEnvelope | None
    reply_to: str | None  # checked by the guard; None when absent or refused
    caller: Caller = ANONYMOUS_CALLER
    tenant: str | None = None
    endpoint: str | None = None
    upstream_duration: float | None = None
    deadline: Deadline | None = None  # once admitted
    ticket: ParkTicket | None = None  # a returning parked copy's, verified


class Pipeline:
    """Processes deliveries from one transport. Safe to run many ``handle`` calls concurrently."""

    def __init__(
        self,
        *,
        transport: Transport,
        forwarder: Forwarder,
        admission: Admission,
        guard: Guard,
        telemetry: TelemetryService,
        observer: Observer,
        tracer: RequestTracer,
        clock: Clock,
        dedupe: Deduplicator,
        parking: Parking | None = None,
    ) -> None:
        self._transport = transport
        self._forwarder = forwarder
        self._admission = admission
        self._guard = guard
        self._telemetry = telemetry
        self._observer = observer
        self._tracer = tracer
        self._clock = clock
        self._dedupe = dedupe
        self._parking = parking

    async def handle(self, delivery: Delivery) -> None:
        arrived = self._clock.monotonic()
        self._observer.on_event(RequestReceived(delivery.transport))
        span = self._tracer.request_span(
            delivery.headers,
            transport=delivery.transport,
            destination=delivery.source or REQUESTS,
            correlation_id=delivery.correlation_id,
        )
        with span:
            outcome = await self._answer(delivery, arrived)
            try:
                if not await self._park(delivery, outcome):
                    await self._deliver(delivery, outcome, arrived)
            except Exception as exc:  # noqa: BLE001 - broker trouble: leave unsettled, it comes again
                log.error("reply_not_confirmed", request_id=outcome.reply.id, error=repr(exc))
                return
        await self._transport.settle(delivery)

    # -- answering ------------------------------------------------------------------------
    async def _answer(self, delivery: Delivery, arrived: float) -> Outcome:
        try:
            envelope = decode_request(delivery.body, delivery.content_type, self._admission.decode_limits)
        except (DecodeError, OversizeError) as exc:
            return await self._undecodable(delivery, exc, arrived)
        try:
            reply_to = self._reply_to(delivery, envelope)
        except ReplyToRefusedError as exc:
            return self._failed(envelope, exc, arrived, None)
        caller = ANONYMOUS_CALLER
        ticket = None
        if self._parking is not None and (ticket := self._parking.ticket(delivery)) is not None:
            self._parking.returning(envelope.upstream)
        prior = ticket.attempts if ticket is not None else 0  # tries made before parking, counted in the reply
        deadline: Deadline | None = None
        try:
            caller = await self._identify(delivery, ticket)
            tenant = self._guard.authorize(caller, envelope)
            admitted = self._admission.admit(
                envelope,
                known=self._forwarder.knows(envelope.upstream),
                arrived_at=arrived,
                broker_timestamp_ms=delivery.timestamp_ms,
                not_after_ms=ticket.deadline_ms if ticket is not None else None,
            )
            deadline = admitted.deadline
            if self._parking is not None:  # a try that may park holds its slot no longer than its budget
                admitted = replace(admitted, deadline=self._parking.try_deadline(delivery, envelope, deadline, ticket))
            response = await self._execute(envelope, admitted, caller, tenant)
        except ParkedCopyReusedError as exc:
            return self._failed(envelope, exc, arrived, None, caller)  # recorded, not answered (errors.py)
        except GatewayError as exc:
            exc.attempts += prior
            return replace(self._failed(envelope, exc, arrived, reply_to, caller), deadline=deadline, ticket=ticket)
        except Exception as exc:
            log.exception("internal_error", request_id=envelope.id, upstream=envelope.upstream)
            error = InternalError(f"internal error: {type(exc).__name__}", attempts=prior)
            return self._failed(envelope, error, arrived, reply_to, caller)
        reply = Reply(
            id=envelope.id,
            status=response.status,
            headers=response.headers,
            body=response.body,
            body_content_type=response.headers.get("Content-Type") or response.headers.get("content-type"),
            attempts=response.attempts + prior,
            duration_ms=self._ms_since(arrived),
            upstream=envelope.upstream,
        )
        return Outcome(
            reply, envelope, reply_to, caller, tenant, response.endpoint, response.upstream_duration, deadline, ticket
        )

    async def _undecodable(self, delivery: Delivery, exc: DecodeError | OversizeError, arrived: float) -> Outcome:
        """The answer to an envelope that did not decode: its error, or reply_to_refused. A refusal that
        raises a security event (a path or header attack) names who sent it and the configured upstream
        it aimed at, as every other security event does; the answer stays the refusal either way."""
        rid = exc.request_id or delivery.correlation_id or ""
        error: GatewayError = exc
        try:
            reply_to = self._reply_to(delivery, None)
        except ReplyToRefusedError as refused:
            error, reply_to = refused, None
        caller, upstream = ANONYMOUS_CALLER, None
        if error.security_kind is not None:
            caller = await self._attributed(delivery)
            claimed = exc.upstream if isinstance(exc, DecodeError) else None
            upstream = claimed if claimed is not None and self._forwarder.knows(claimed) else None
        reply = Reply(id=rid, error=error, duration_ms=self._ms_since(arrived), upstream=upstream)
        return Outcome(reply, None, reply_to, caller)

    async def _attributed(self, delivery: Delivery) -> Caller:
        """The sender of a message already refused, for its security event only."""
        try:
            return await self._guard.identify(delivery)
        except GatewayError:
            return ANONYMOUS_CALLER  # no proof, or a bad one: the refusal already answers it

    async def _identify(self, delivery: Delivery, ticket: ParkTicket | None) -> Caller:
        """The caller: a returning parked copy's from its seal (established on first arrival), else the guard's."""
        if ticket is None or self._parking is None:
            return await self._guard.identify(delivery)
        return await self._guard.resume(delivery, ticket.caller, ticket.seal, self._parking.seal_ttl)

    def _reply_to(self, delivery: Delivery, envelope: RequestEnvelope | None) -> str | None:
        """The checked reply address: the transport's, else the envelope's; ReplyToRefusedError if barred."""
        reply_to = delivery.reply_to or (envelope.reply_to if envelope is not None else None)
        if reply_to:
            self._guard.reply_to(delivery.transport, reply_to)
        return reply_to

    async def _execute(
        self, envelope: RequestEnvelope, admitted: Admitted, caller: Caller, tenant: str
    ) -> UpstreamResponse:
        trace: dict[str, str] = {}
        self._tracer.inject(trace)
        request = OutboundRequest(envelope, admitted.body, admitted.headers, admitted.deadline, trace, tenant=tenant)
        idem = None
        if envelope.idempotency_key is not None and self._dedupe.enabled:
            idem = IdempotencyKey.of(
                principal=caller.name,
                upstream=envelope.upstream,
                key=envelope.idempotency_key,
                method=envelope.method,
                path=envelope.path,
                body=admitted.body,
                headers=admitted.headers,
            )
        if idem is None:  # nothing to deduplicate: the forwarder's coroutine, without the deduplicator's frame
            return await self._forwarder.forward(request)
        keep = self._parking.keeps(envelope.upstream) if self._parking is not None else None
        return await self._dedupe.run(idem, admitted.deadline, lambda: self._forwarder.forward(request), keep=keep)

    def _failed(
        self,
        envelope: RequestEnvelope,
        exc: GatewayError,
        arrived: float,
        reply_to: str | None,
        caller: Caller = ANONYMOUS_CALLER,
    ) -> Outcome:
        reply = Reply(
            id=envelope.id,
            error=exc,
            attempts=exc.attempts,
            duration_ms=self._ms_since(arrived),
            upstream=envelope.upstream,
        )
        return Outcome(reply, envelope, reply_to, caller)

    # -- parking --------------------------------------------------------------------------
    async def _park(self, delivery: Delivery, outcome: Outcome) -> bool:
        """Park a failed try on its tier instead of answering it (gateway.parking); True once the
        broker confirmed the parked copy, so the original may be settled. A copy the broker refuses
        for good is answered as usual; no confirm raises, leaving the original unsettled."""
        parking, envelope, deadline = self._parking, outcome.envelope, outcome.deadline
        if parking is None or envelope is None or deadline is None:
            return False
        plan = parking.plan(
            delivery, source=delivery.source or REQUESTS, envelope=envelope, reply=outcome.reply,
            deadline=deadline, caller=outcome.caller, ticket=outcome.ticket,
        )  # fmt: skip
        if plan is None:
            return False
        try:
            await self._transport.park(delivery, plan.destination, plan.headers)
        except MessageRejectedError as exc:
            log.warning("park_refused", request_id=envelope.id, tier=plan.destination, reason=exc.message)
            return False
        event = self._parked(delivery, outcome, envelope, plan, deadline)
        self._observer.on_event(event)
        headers = {k: delivery.headers[k] for k in TRACE_HEADERS if k in delivery.headers}
        try:
            await self._telemetry.publish(event, headers, via=self._transport)
        except Exception as exc:  # noqa: BLE001 - the copy is safe on its tier: settle the original regardless
            log.warning("park_event_not_published", request_id=envelope.id, error=repr(exc))
        return True

    def _parked(
        self, delivery: Delivery, outcome: Outcome, envelope: RequestEnvelope, plan: ParkPlan, deadline: Deadline
    ) -> RequestParked:
        reply = outcome.reply
        return RequestParked(
            request_id=envelope.id,
            upstream=envelope.upstream,
            method=envelope.method,
            tier=plan.tier,
            delay=plan.delay,
            park_count=plan.count,
            attempts=plan.attempts,
            reason=reply.error.code if reply.error is not None else f"status_{reply.status}",
            remaining=round(deadline.remaining(self._clock), 3),
            transport=delivery.transport,
            principal=outcome.caller.principal,
        )

    # -- delivering -----------------------------------------------------------------------
    async def _deliver(self, delivery: Delivery, outcome: Outcome, arrived: float) -> None:
        """Reply, telemetry event and dead-letter copy, at once; each publish once.

        The transport owns retrying a publish: it returns once the broker confirmed, or raises
        ``BusUnavailableError`` within its publish timeout. A raise here leaves the request unsettled
        (``handle``): RabbitMQ redelivers it when the channel closes, Kafka's transport hands it over
        again; either way it is answered again, never lost.
        """
        reply, envelope = outcome.reply, outcome.envelope
        codec = normalise_content_type(delivery.content_type)
        codec = codec if codec in (JSON, MSGPACK) else JSON
        headers = {k: delivery.headers[k] for k in TRACE_HEADERS if k in delivery.headers}
        self._tracer.inject(headers)
        error = reply.error
        dead_letter = error is not None and error.dead_letter
        completed = self._completed(delivery, outcome, arrived, dead_letter)
        self._observer.on_event(completed)  # metrics and the log line
        if error is not None and error.security_kind is not None:
            # Raised with request.completed, once the refusal is decided: its reply may reach the caller
            # before the publishes below return, and whoever reads the event must not see it later.
            self._observer.on_event(
                SecurityRefused(
                    kind=error.security_kind,
                    reason=error.message,
                    principal=outcome.caller.principal,
                    upstream=envelope.upstream if envelope is not None else reply.upstream,
                    transport=delivery.transport,
                    request_id=reply.id or None,
                )
            )
        jobs = [self._telemetry.publish(completed, headers, via=self._transport)]
        reply_to = outcome.reply_to
        if reply_to:
            message = OutboundMessage(
                destination=reply_to,
                body=self._encode(reply, codec),
                content_type=codec,
                correlation_id=delivery.correlation_id or reply.id,
                headers=headers,
                key=(delivery.correlation_id or reply.id).encode(),
            )
            jobs.append(self._publish_reply(message, reply, codec))
        if dead_letter and error is not None:
            jobs.append(self._transport.dead_letter(delivery, error.header_value()))
        await together(jobs)
        if dead_letter and error is not None:
            self._observer.on_event(MessageDeadLettered(delivery.transport, error.code, error.message))

    def _completed(self, delivery: Delivery, outcome: Outcome, arrived: float, dead: bool) -> RequestCompleted:
        """The one ``request.completed`` event of this request, for every sink."""
        envelope, reply = outcome.envelope, outcome.reply
        upstream = envelope.upstream if envelope is not None else "-"
        return RequestCompleted(
            request_id=reply.id,
            upstream=upstream,
            method=envelope.method if envelope is not None else "-",
            status_code=reply.status,
            duration=self._clock.monotonic() - arrived,
            error_code=reply.error_code,
            attempts=reply.attempts,
            upstream_duration=outcome.upstream_duration,
            transport=delivery.transport,
            tenant=outcome.tenant,
            endpoint=outcome.endpoint or upstream,
            dead_lettered=dead,
            principal=outcome.caller.principal,
        )

    @staticmethod
    def _encode(reply: Reply, codec: str) -> bytes:
        try:
            return encode_reply(reply, codec)
        except Exception as exc:  # noqa: BLE001 - an unencodable reply must not become a poison message
            log.error("reply_not_encodable", request_id=reply.id, error=repr(exc))
            fallback = InternalError(f"the upstream's answer could not be encoded as {codec}: {type(exc).__name__}")
            return encode_reply(replace(reply, headers=None, body=None, error=fallback), codec)

    async def _publish_reply(self, message: OutboundMessage, reply: Reply, codec: str) -> None:
        try:
            await self._transport.publish(message)
        except MessageRejectedError as exc:
            # Refused for good (a reply too large for the bus, say): answer with the reason instead.
            log.warning("reply_rejected", request_id=reply.id, reason=exc.message)
            fallback = replace(reply, status=None, headers=None, body=None, error=exc)
            with contextlib.suppress(MessageRejectedError):  # the destination itself is refused: nothing to deliver
                await self._transport.publish(replace(message, body=encode_reply(fallback, codec)))

    def _ms_since(self, start: float) -> float:
        return (self._clock.monotonic() - start) * 1000

    def __repr__(self) -> str:
        return f"<Pipeline {self._transport.name}>"
