"""The stream sink: events onto ``cmn.telemetry``, one publish each, the transport owning the retry.

Metrics, the log line and traces are sinks of their own (observers wired by ``app.py``); this one
only serialises and publishes. ``request.completed`` comes from the pipeline, which waits for the
broker's confirm before it settles the request; other events (breaker changes, ejections, renewals,
security refusals) arrive through ``on_event`` from synchronous code and leave in the background,
best effort, through a bounded queue. The service never retries: each transport promises "confirmed,
or ``BusUnavailableError`` within its publish timeout", and the caller decides what a failure means.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from gateway.clock import Clock
from gateway.envelope.codec import dumps_json
from gateway.events import Event, RequestCompleted, RequestParked, SecurityRefused
from gateway.telemetry.redaction import redact_text


def _fields(event: Event, names: tuple[str, ...]) -> dict[str, Any]:
    """A flat event as a dict; cheaper than dataclasses.asdict, which deep-copies recursively."""
    fields = {name: getattr(event, name) for name in names}
    if isinstance(event, SecurityRefused):
        # The reason may quote what the caller sent (a path, a header); scrub it as the log line is.
        fields["reason"] = redact_text(event.reason)
    return fields


class TelemetryPublisher(Protocol):
    async def publish_telemetry(self, event_type: str, body: bytes, headers: Mapping[str, str]) -> None: ...


class TelemetryService:
    """Publishes events to the telemetry stream of each transport (see the module docstring)."""

    def __init__(
        self,
        *,
        clock: Clock,
        instance: str,
        publishers: Sequence[TelemetryPublisher] = (),
        queue_size: int = 10_000,
    ) -> None:
        self._clock = clock
        self._instance = instance
        self._publishers = list(publishers)
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=queue_size)
        self._pump: asyncio.Task[None] | None = None
        # Each event class's field names, found once: dataclasses.fields() builds its tuple on every call.
        self._names: dict[type, tuple[str, ...]] = {}
        self.dropped = 0

    def add_publisher(self, publisher: TelemetryPublisher) -> None:
        self._publishers.append(publisher)

    async def publish(
        self, event: RequestCompleted | RequestParked, trace_headers: Mapping[str, str], *, via: TelemetryPublisher
    ) -> None:
        """Publish one finished (or parked) request on ``via``'s stream; returns once confirmed, raises
        what ``via`` raised."""
        body, headers = self.serialise(event, trace_headers)
        await via.publish_telemetry(event.type, body, headers)

    def serialise(
        self, event: Event, trace_headers: Mapping[str, str] | None = None
    ) -> tuple[bytes, Mapping[str, str]]:
        headers = dict(trace_headers or {})
        doc: dict[str, Any] = {
            "type": event.type,
            "ts": round(self._clock.time(), 6),
            "gateway": self._instance,
            "data": _fields(event, self._field_names(event)),
            "traceparent": headers.get("traceparent"),
        }
        headers["content-type"] = "application/json"
        return dumps_json(doc), headers

    def _field_names(self, event: Event) -> tuple[str, ...]:
        names = self._names.get(type(event))
        if names is None:
            names = self._names[type(event)] = tuple(f.name for f in dataclasses.fields(event))
        return names

    # -- background events ------------------------------------------------------------------
    def on_event(self, event: Event) -> None:
        """Observer entry for events raised in synchronous code (breakers, pools, certificates)."""
        if not event.on_stream:
            return
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
