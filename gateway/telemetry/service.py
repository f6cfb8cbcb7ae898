"""The spec's TelemetryService: one path for request telemetry, into observers and onto ``cmn.telemetry``."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from gateway.clock import Clock
from gateway.envelope.codec import dumps_json
from gateway.events import Event, Observer, RequestCompleted, SecurityRefused
from gateway.telemetry.redaction import redact_text


def _fields(event: Event) -> dict[str, Any]:
    """A flat event as a dict; cheaper than dataclasses.asdict, which deep-copies recursively."""
    fields = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
    if isinstance(event, SecurityRefused):
        # The reason may quote what the caller sent (a path, a header); scrub it as the log line is.
        fields["reason"] = redact_text(event.reason)
    return fields


class TelemetryPublisher(Protocol):
    async def publish_telemetry(self, event_type: str, body: bytes, headers: Mapping[str, str]) -> None: ...


class TelemetryService:
    """Feeds metrics/log observers and publishes events to the telemetry stream.

    ``record_request`` awaits the broker's confirmation of the event: the pipeline acknowledges a
    request only after its reply *and* its telemetry event are safely on the bus. Other events
    (breaker changes, ejections, renewals) arrive through ``on_event`` from synchronous code and are
    published in the background, best effort, through a bounded queue.
    """

    def __init__(
        self,
        *,
        observer: Observer,
        clock: Clock,
        instance: str,
        publishers: Sequence[TelemetryPublisher] = (),
        queue_size: int = 10_000,
        publish_attempts: int = 5,
    ) -> None:
        self._publish_attempts = publish_attempts
        self._observer = observer
        self._clock = clock
        self._instance = instance
        self._publishers = list(publishers)
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=queue_size)
        self._pump: asyncio.Task[None] | None = None
        self.dropped = 0

    def add_publisher(self, publisher: TelemetryPublisher) -> None:
        self._publishers.append(publisher)

    async def record_request(
        self,
        *,
        endpoint: str,
        method: str,
        status_code: int | None,
        duration: float,
        upstream: str | None = None,
        request_id: str = "",
        error_code: str | None = None,
        attempts: int = 0,
        upstream_duration: float | None = None,
        transport: str | None = None,
        tenant: str | None = None,
        principal: str | None = None,
        dead_lettered: bool = False,
        trace_headers: Mapping[str, str] | None = None,
        via: TelemetryPublisher | None = None,
    ) -> RequestCompleted:
        """Record one finished request (``duration`` in seconds); publish via ``via`` or every publisher."""
        event = RequestCompleted(
            request_id=request_id,
            upstream=upstream or endpoint,
            method=method,
            status_code=status_code,
            duration=duration,
            error_code=error_code,
            attempts=attempts,
            upstream_duration=upstream_duration,
            transport=transport,
            tenant=tenant,
            principal=principal,
            endpoint=endpoint,
            dead_lettered=dead_lettered,
        )
        self._observer.on_event(event)
        body, headers = self.serialise(event, trace_headers)
        targets = [via] if via is not None else self._publishers
        await asyncio.gather(*(self._publish_confirmed(p, event.type, body, headers) for p in targets))
        return event

    async def _publish_confirmed(
        self, publisher: TelemetryPublisher, event_type: str, body: bytes, headers: Mapping[str, str]
    ) -> None:
        """Retried briefly: a broker reconnect is usually under way when a confirm fails."""
        for attempt in range(self._publish_attempts):
            try:
                await publisher.publish_telemetry(event_type, body, headers)
                return
            except Exception:
                if attempt + 1 == self._publish_attempts:
                    raise
                await self._clock.sleep(min(0.1 * 2**attempt, 2.0))

    def serialise(
        self, event: Event, trace_headers: Mapping[str, str] | None = None
    ) -> tuple[bytes, Mapping[str, str]]:
        headers = dict(trace_headers or {})
        doc: dict[str, Any] = {
            "type": event.type,
            "ts": round(self._clock.time(), 6),
            "gateway": self._instance,
            "data": _fields(event),
            "traceparent": headers.get("traceparent"),
        }
        headers["content-type"] = "application/json"
        return dumps_json(doc), headers

    # -- background events ------------------------------------------------------------------
    def on_event(self, event: Event) -> None:
        """Observer entry for events raised in synchronous code (breakers, pools, certificates)."""
        if isinstance(event, RequestCompleted) or event.type == "request.received" or event.type == "pool.stats":
            return  # request events go through record_request; pool stats are for metrics only
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1

    async def start(self) -> None:
        if self._pump is None:
            self._pump = asyncio.create_task(self._run(), name="telemetry-pump")

    async def _run(self) -> None:
        while True:
            event = await self._queue.get()
            body, headers = self.serialise(event)
            results = await asyncio.gather(
                *(p.publish_telemetry(event.type, body, headers) for p in self._publishers),
                return_exceptions=True,
            )
            self.dropped += sum(1 for r in results if isinstance(r, BaseException))

    async def aclose(self) -> None:
        if self._pump is not None:
            # Give queued events a moment to leave before shutting the pump.
            for _ in range(50):
                if self._queue.empty():
                    break
                await self._clock.sleep(0.01)
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
            self._pump = None

    def __repr__(self) -> str:
        return (
            f"<TelemetryService {self._instance} [{len(self._publishers)} publishers, "
            f"{self._queue.qsize()} queued, {self.dropped} dropped]>"
        )
