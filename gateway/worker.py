"""The consuming side's lifecycle: start every transport on its pipeline, drain on shutdown.

Bounded concurrency lives in each transport (RabbitMQ prefetch, Kafka pause/resume), because
that is where back-pressure can reach the broker; the worker only starts, drains and closes.
It also owns the one fallback for a handler that crashes (``guarded``): the transports only
call the handler, and leave a delivery unsettled if it still raises.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from gateway.bus.base import Delivery, Handler, Transport
from gateway.pipeline import Pipeline
from gateway.upstream.snapshot import DrainState

log = structlog.get_logger("cmn.worker")


def guarded(transport: Transport, handle: Handler) -> Handler:
    """``handle``, with a crash parked in the dead-letter queue and settled.

    The pipeline answers every input itself, so a raise is a bug; redelivering the message would
    crash again forever (and on Kafka hold its partition's commits), so it goes to the dead letters
    and is settled. If the dead-lettering fails too (the broker is away) it stays unsettled and comes again.
    """

    async def run(delivery: Delivery) -> None:
        try:
            await handle(delivery)
        except Exception as exc:
            log.exception("handler_crashed", transport=transport.name, correlation_id=delivery.correlation_id)
            try:
                await transport.dead_letter(delivery, f"internal: handler crashed: {type(exc).__name__}")
            except Exception:
                log.exception("dead_letter_after_crash_failed", transport=transport.name)
                return
            await transport.settle(delivery)

    return run


@dataclass(frozen=True, slots=True)
class Lane:
    transport: Transport
    pipeline: Pipeline


class Worker:
    def __init__(self, lanes: Sequence[Lane], *, drain_timeout: float = 30.0) -> None:
        self._lanes = list(lanes)
        self._drain_timeout = drain_timeout
        self._started = False
        self._phase: DrainState = "starting"

    async def start(self) -> None:
        for lane in self._lanes:
            await lane.transport.start(guarded(lane.transport, lane.pipeline.handle))
            log.info("consuming", transport=lane.transport.name)
        self._started = True
        self._phase = "consuming"

    @property
    def phase(self) -> DrainState:
        """Where the worker is in its life: starting, consuming, draining (finishing what it holds), stopped."""
        return self._phase

    @property
    def ready(self) -> bool:
        return self._started and all(lane.transport.ready for lane in self._lanes)

    async def drain(self) -> None:
        """Stop taking new requests and finish the ones in flight (bounded by ``drain_timeout``)."""
        if not self._started:
            return
        self._started = False
        self._phase = "draining"
        drains = [lane.transport.drain() for lane in self._lanes]
        try:
            await asyncio.wait_for(asyncio.gather(*drains), self._drain_timeout)
        except TimeoutError:
            # Unsettled requests are redelivered to another worker: slow, but nothing is lost.
            log.warning("drain_timeout", seconds=self._drain_timeout)
        finally:
            self._phase = "stopped"

    async def aclose(self) -> None:
        await self.drain()
        for lane in self._lanes:
            await lane.transport.aclose()

    def __repr__(self) -> str:
        names = ", ".join(lane.transport.name for lane in self._lanes)
        return f"<Worker [{names}] {'consuming' if self._started else 'stopped'}>"
