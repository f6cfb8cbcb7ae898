"""The SDK components use: send a request envelope through the bus and await its reply.

    async with GatewayClient.rabbitmq("amqp://guest:guest@localhost/") as client:
        reply = await client.request("payments", "POST", "/v1/charges", json={...}, timeout=5)

Replies are correlated by request id; a reply that does not arrive within ``timeout`` raises
``ReplyTimeoutError`` (the gateway may still answer later; that late reply is dropped).
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import uuid
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import orjson
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind
from pydantic import ValidationError

from gateway.access.signature import sign
from gateway.bus.base import REQUESTS, TELEMETRY, ReplyMessage, Requester
from gateway.clock import Clock, SystemClock
from gateway.envelope.codec import JSON, decode_reply, encode_request
from gateway.envelope.models import ReplyEnvelope, RequestEnvelope, TelemetryEvent
from gateway.errors import UpstreamTimeoutError
from gateway.telemetry.messaging import messaging_span

if TYPE_CHECKING:
    from gateway.bus.kafka.security import KafkaSecurity

_MISSING: Any = object()


def gateway_budget_ms(timeout: float) -> int:
    """The gateway's budget: the caller's timeout minus room for the reply's trip back (10 %, at most
    250 ms), so a request the upstream cannot serve in time is answered ``timeout``/``deadline_exceeded``
    while the caller still waits, rather than the caller giving up first and learning nothing."""
    return max(1, int(timeout * 1000) - min(250, int(timeout * 100)))


class ReplyTimeoutError(UpstreamTimeoutError, TimeoutError):
    """No reply within the client's timeout."""


class GatewayClient:
    def __init__(
        self,
        requester: Requester,
        *,
        clock: Clock | None = None,
        codec: str = JSON,
        tracer_provider: trace.TracerProvider | None = None,
        key_id: str | None = None,
        secret: str | bytes | None = None,
    ) -> None:
        if (key_id is None) != (secret is None):
            raise ValueError("signing needs both key_id and secret")
        self._requester = requester
        self._key_id = key_id
        self._secret = secret.encode() if isinstance(secret, str) else secret
        # The SDK's public entry is a root of its own: a caller that injects no clock gets the system's
        # (the factories below hand the same one to the requester they build; below here it is required).
        self._clock = clock if clock is not None else SystemClock()
        self._codec = codec
        self._pending: dict[str, asyncio.Future[ReplyMessage]] = {}
        # The global provider by default: a component that set up OpenTelemetry gets producer spans for free.
        self._tracer = trace.get_tracer("cmn.client", tracer_provider=tracer_provider)
        self._started = False
        self.skipped_events = 0

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def rabbitmq(
        cls,
        url: str,
        *,
        queue: str = REQUESTS,
        telemetry: str = TELEMETRY,
        use_direct_reply_to: bool = True,
        ssl_context: ssl.SSLContext | None = None,
        codec: str = JSON,
        key_id: str | None = None,
        secret: str | bytes | None = None,
        clock: Clock | None = None,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> GatewayClient:
        """A client on RabbitMQ: requests to ``queue`` (CMN_REQUESTS_QUEUE of the gateways), replies on
        direct reply-to (else an exclusive queue), ``telemetry`` the stream ``telemetry()`` reads;
        ``key_id`` and ``secret`` sign every request (a key of the gateways' ``security.keys``)."""
        from gateway.bus.rabbitmq.requester import RabbitRequester

        clock = clock or SystemClock()
        requester = RabbitRequester(
            url, queue=queue, telemetry=telemetry, use_direct_reply_to=use_direct_reply_to,
            ssl_context=ssl_context, clock=clock,
        )  # fmt: skip
        return cls(requester, clock=clock, codec=codec, key_id=key_id, secret=secret, tracer_provider=tracer_provider)

    @classmethod
    def kafka(
        cls,
        bootstrap: str,
        *,
        topic: str = REQUESTS,
        reply_topic: str | None = None,
        security: KafkaSecurity | None = None,
        codec: str = JSON,
        key_id: str | None = None,
        secret: str | bytes | None = None,
        clock: Clock | None = None,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> GatewayClient:
        """A client on Kafka: requests to ``topic``, replies on ``reply_topic`` (``cmn.replies.<uuid>``,
        deleted on close, when None); ``security``: SASL and TLS for every connection
        (``gateway.bus.kafka.security``), PLAINTEXT if None; ``key_id``/``secret`` sign every request."""
        from gateway.bus.kafka.requester import KafkaRequester
        from gateway.bus.kafka.security import PLAINTEXT

        clock = clock or SystemClock()
        requester = KafkaRequester(
            bootstrap, topic=topic, reply_topic=reply_topic, security=security or PLAINTEXT, clock=clock
        )
        return cls(requester, clock=clock, codec=codec, key_id=key_id, secret=secret, tracer_provider=tracer_provider)

    async def start(self) -> GatewayClient:
        if not self._started:
            await self._requester.start(self._on_reply)
            self._started = True
        return self

    async def __aenter__(self) -> GatewayClient:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        await self._requester.aclose()

    # -- requests -------------------------------------------------------------------------
    async def request(
        self,
        upstream: str,
        method: str = "GET",
        path: str = "/",
        *,
        json: Any = _MISSING,
        body: str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        idempotency_key: str | None = None,
        tenant: str | None = None,
        request_id: str | None = None,
    ) -> ReplyEnvelope:
        """Send one request and wait for its reply; ``timeout`` (seconds) is also the gateway's budget.

        A request the gateway would refuse (an absolute path, a bad header, ``json`` with ``body``, an
        integer JSON cannot carry) raises ``ValueError`` here, before anything is published: the
        gateway would answer it ``invalid_request`` and dead-letter it."""
        if json is not _MISSING and body is not None:
            raise ValueError("give json= or body=, not both: the gateway sends one body")
        rid = request_id or uuid.uuid4().hex
        envelope = self.envelope(
            rid, upstream, method, path, json=json, body=body, headers=headers, timeout=timeout,
            idempotency_key=idempotency_key, tenant=tenant,
        )  # fmt: skip
        raw = await self.send_raw(self._checked(envelope), correlation_id=rid, timeout=timeout)
        return ReplyEnvelope.model_validate(decode_reply(raw.body, raw.content_type))

    def _checked(self, envelope: dict[str, Any]) -> bytes:
        """The request as the gateway reads it: validated by the same model, then encoded."""
        try:
            RequestEnvelope.model_validate(envelope)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"]) or "request"
            raise ValueError(f"the gateway would refuse this request: {where}: {error['msg']}") from None
        try:
            return encode_request(envelope, self._codec)
        except (TypeError, ValueError, OverflowError) as exc:  # orjson: int over 64 bits; msgpack: OverflowError
            raise ValueError(f"the request cannot be encoded as {self._codec}: {exc}") from exc

    def envelope(
        self, rid: str, upstream: str, method: str, path: str, *, json: Any = _MISSING, body: str | bytes | None = None,
        headers: Mapping[str, str] | None = None, timeout: float = 30.0, idempotency_key: str | None = None,
        tenant: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        envelope: dict[str, Any] = {
            "id": rid,
            "upstream": upstream,
            "method": method,
            "path": path,
            "timeout_ms": gateway_budget_ms(timeout),
            "sent_at": int(self._clock.time() * 1000),
        }
        if headers:
            envelope["headers"] = dict(headers)
        if json is not _MISSING:
            envelope["json"] = json
        elif isinstance(body, bytes) and self._codec == JSON:
            envelope["body_b64"] = base64.b64encode(body).decode()
        elif body is not None:
            envelope["body"] = body
        for key, value in (("idempotency_key", idempotency_key), ("tenant", tenant)):
            if value is not None:
                envelope[key] = value
        return envelope

    async def send_raw(
        self,
        payload: bytes,
        *,
        correlation_id: str,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> ReplyMessage:
        """Publish request bytes as they are and wait for the reply correlated to ``correlation_id``."""
        await self.start()
        future: asyncio.Future[ReplyMessage] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        try:
            name, attributes = messaging_span(
                "send",
                system=self._requester.name,
                destination=self._requester.destination,
                message_id=correlation_id,
                conversation_id=correlation_id,
            )
            with self._tracer.start_as_current_span(name, kind=SpanKind.PRODUCER, attributes=attributes):
                carrier = dict(headers or {})
                propagate.inject(carrier)  # W3C traceparent of the producer span
                carrier.update(self._signature(payload, correlation_id))
                await self._requester.send(
                    payload,
                    content_type=content_type or self._codec,
                    correlation_id=correlation_id,
                    headers=carrier,
                )
            try:
                return await asyncio.wait_for(future, timeout)
            except TimeoutError as exc:
                raise ReplyTimeoutError(f"no reply to {correlation_id} within {timeout:.3f} s") from exc
        finally:
            self._pending.pop(correlation_id, None)

    def _signature(self, payload: bytes, correlation_id: str) -> dict[str, str]:
        """x-cmn-key-id / x-cmn-signed-at / x-cmn-signature when this client was given a key."""
        if self._key_id is None or self._secret is None:
            return {}
        return sign(
            self._key_id,
            self._secret,
            now_ms=int(self._clock.time() * 1000),
            correlation_id=correlation_id,
            reply_to=self._requester.reply_address,
            body=payload,
        )

    def _on_reply(self, message: ReplyMessage) -> None:
        future = self._pending.get(message.correlation_id or "")
        if future is not None and not future.done():
            future.set_result(message)

    # -- telemetry ------------------------------------------------------------------------
    async def telemetry(self, *, from_beginning: bool = False) -> AsyncIterator[TelemetryEvent]:
        """Iterate the ``cmn.telemetry`` stream (new events only, unless ``from_beginning``)."""
        await self.start()
        stream = self._requester.telemetry(from_beginning=from_beginning)
        try:
            async for raw in stream:
                try:
                    event = TelemetryEvent.model_validate(orjson.loads(raw))
                except (orjson.JSONDecodeError, ValidationError):
                    self.skipped_events += 1  # the stream is shared; other producers' records are not ours
                    continue
                yield event
        finally:
            await stream.aclose()

    def __repr__(self) -> str:
        return f"<GatewayClient {self._requester.name} [{len(self._pending)} pending]>"
