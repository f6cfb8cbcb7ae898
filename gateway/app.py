"""Composition root: builds every object from the settings and owns their lifetimes."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from importlib import metadata
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import structlog
from pydantic import ValidationError

from gateway import gc_governor
from gateway.access.config import SecurityConfig
from gateway.access.guard import Guard
from gateway.admission import Admission
from gateway.bus.base import ControlChannel, Transport
from gateway.clock import Clock, SystemClock
from gateway.config_file import ConfigDocument
from gateway.control.responder import ControlResponder
from gateway.control.shared_health import SharedHealth, build_shared_health
from gateway.control.wiring import build_control_channels, start_responders
from gateway.envelope.health import HEALTH_VERDICTS
from gateway.errors import ConfigError, InvalidRequestError, UnknownUpstreamError
from gateway.events import Observer, ObserverGroup
from gateway.idempotency import Deduplicator, IdempotencyStore
from gateway.pipeline import Pipeline, RequestTracer
from gateway.secrets import SecretResolver
from gateway.settings import Settings, describe_validation_error, principals, read_yaml
from gateway.telemetry.logging import RequestLog
from gateway.telemetry.service import TelemetryService
from gateway.upstream.base import Forwarder
from gateway.upstream.config import UpstreamDefaults, UpstreamsFile
from gateway.upstream.snapshot import InstanceSnapshot, PeersSnapshot, TransportSnapshot, UpstreamSnapshot
from gateway.wiring import (
    MetricsHandle,
    build_certificates,
    build_dedupe_store,
    build_embedded_broker,
    build_guard,
    build_kafka_security,
    build_metrics,
    build_parking,
    build_secrets,
    build_tracing,
    build_transports,
)
from gateway.worker import Lane, Worker

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from gateway.bus.kafka.security import KafkaSecurity
    from gateway.parking import Parking
    from gateway.telemetry.metrics import Metrics
    from gateway.telemetry.tracing import TracingHandle
    from gateway.upstream.forward import GatewayForwarder
    from gateway.upstream.tls import TlsContextProvider

log = structlog.get_logger("cmn.app")


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Everything start-up needs: the environment plus the upstreams file."""

    settings: Settings
    upstreams: UpstreamsFile
    certificates: dict[str, Any] = field(default_factory=dict)
    security: SecurityConfig = field(default_factory=SecurityConfig)


def load_config(settings: Settings, upstreams: dict[str, Any] | None = None) -> GatewayConfig:
    """Validate the upstreams document (from CMN_UPSTREAMS_FILE unless given); errors name the field."""
    if upstreams is None:
        if settings.upstreams_file is None:
            raise ConfigError("CMN_UPSTREAMS_FILE is not set: the gateway needs at least one upstream")
        upstreams = read_yaml(settings.upstreams_file)
    try:
        parsed = ConfigDocument.model_validate(upstreams)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, "upstreams")) from exc
    certificates = upstreams.get("certificates") or {}  # as written: the certificate layer reads it again
    return GatewayConfig(settings, parsed, dict(certificates), parsed.security)


def defaults_from(settings: Settings) -> UpstreamDefaults:
    return UpstreamDefaults(
        pool_size=settings.pool_size,
        connect_timeout=settings.connection_timeout,
        retry_attempts=settings.retry_attempts,
        request_timeout=settings.request_timeout,
        max_request_bytes=settings.max_request_bytes,
        max_response_bytes=settings.max_response_bytes,
    )


class Gateway:
    """One gateway process: transports → pipelines → forwarder, plus telemetry and certificates.

    The composition root. ``start`` calls the builders of ``gateway.wiring``, each returning a typed
    value, and assembles them; it is the only place below the CLI that makes a ``SystemClock``
    (when none is given): every component it builds takes this gateway's ``clock``.
    """

    def __init__(
        self,
        config: GatewayConfig,
        *,
        clock: Clock | None = None,
        observers: list[Observer] | None = None,
        transports: list[Transport] | None = None,
        control: list[ControlChannel] | None = None,
    ) -> None:
        """``transports`` replace the ones the settings name; ``control`` channels then come only
        from ``control`` (none by default), else one per transport built."""
        self.config = config
        self.settings = config.settings
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.instance = self.settings.instance or f"{socket.gethostname()}-{os.getpid()}"
        self.version = _package_version()
        self._started_at: float | None = None  # on this gateway's monotonic clock
        self.observer = ObserverGroup(list(observers or []))
        self._given_transports = transports
        self._given_control = control
        self.control: list[ControlResponder] = []  # one per transport: answers `cmn status` and friends
        self._learning: asyncio.Task[None] | None = None  # asking the peers for forced breaker states
        self._kafka_security: KafkaSecurity | None = None  # every Kafka client's, built once (TLS renewals)
        self.shared_health: SharedHealth | None = None  # the fleet's quorum on endpoint health, when on
        self.resources = AsyncExitStack()  # everything started; closed in reverse order by aclose()
        self.transports: list[Transport] = []
        self.worker: Worker | None = None
        self.forwarder: Forwarder | None = None
        self.telemetry: TelemetryService | None = None
        self.tracing: TracingHandle | None = None
        self.embedded_bootstrap: str | None = None  # the embedded broker's address, when no broker is configured
        self.governor: gc_governor.CollectionGovernor | None = None  # after tune_process()
        self._metrics: MetricsHandle | None = None  # when ENABLE_METRICS
        self.parking: Parking | None = None  # when some upstream has park:

    @property
    def metrics(self) -> Metrics | None:
        return self._metrics.metrics if self._metrics is not None else None

    @property
    def metrics_registry(self) -> CollectorRegistry | None:
        return self._metrics.registry if self._metrics is not None else None

    @property
    def metrics_port(self) -> int | None:
        """The operations port actually bound (METRICS_PORT=0 picks a free one)."""
        return self._metrics.port if self._metrics is not None else None

    async def __aenter__(self) -> Gateway:
        try:
            await self.start()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        config, settings, clock, stack = self.config, self.settings, self.clock, self.resources
        self._started_at = clock.monotonic()
        self.tracing = await build_tracing(settings, stack)
        tracer: RequestTracer = self.tracing.tracer
        self.observer.add(RequestLog())
        self._metrics = await build_metrics(
            settings, stack,
            readiness=lambda: self.ready, upstreams=config.upstreams.upstreams, status=self._status_json,
        )  # fmt: skip
        if self._metrics is not None:
            self.observer.add(self._metrics.metrics)
            self._metrics.metrics.bind_observer_failures(self.observer.failures_by_observer)
        tls = await build_certificates(
            config.certificates, config.upstreams, settings,
            clock=clock, observer=self.observer, resources=stack, metrics=self.metrics,
        )  # fmt: skip
        secrets = await build_secrets(settings, stack)
        guard = await build_guard(settings, config.upstreams, config.security, secrets, clock, stack)
        self.forwarder = await self._build_forwarder(tls, secrets)
        store: IdempotencyStore | None = await build_dedupe_store(settings, clock=clock, resources=stack)
        self.parking = build_parking(settings, config.upstreams, clock)
        self.transports = self._given_transports or await self._build_transports()
        self.telemetry = TelemetryService(clock=self.clock, instance=self.instance, publishers=self.transports)
        self.observer.add(self.telemetry)  # the stream sink, beside metrics and the log line
        await self.telemetry.start()
        self.resources.push_async_callback(self.telemetry.aclose)
        lanes = [Lane(t, self._pipeline(t, tracer, store, guard)) for t in self.transports]
        self.worker = Worker(lanes)
        self.resources.push_async_callback(self._close_transports)
        await self.worker.start()
        await self._start_control(guard)
        log.info("gateway_started", instance=self.instance, transports=[t.name for t in self.transports])

    async def _build_transports(self) -> list[Transport]:
        settings = self.settings
        self.embedded_bootstrap = await build_embedded_broker(settings, clock=self.clock, resources=self.resources)
        bootstrap = self.embedded_bootstrap or settings.kafka_bootstrap_servers
        if bootstrap:
            self._kafka_security = await build_kafka_security(
                settings, certificates=self.config.certificates, clock=self.clock, observer=self.observer,
                resources=self.resources,
            )  # fmt: skip
        return await build_transports(
            settings, kafka_security=self._kafka_security, bootstrap=bootstrap, instance=self.instance,
            clock=self.clock, observer=self.observer, metrics=self.metrics,
            park_delays=self.parking.delays if self.parking is not None else (),
        )  # fmt: skip

    async def _start_control(self, guard: Guard) -> None:
        settings, config = self.settings, self.config
        channels = self._given_control
        if channels is None and self._given_transports is None:
            channels = await build_control_channels(
                settings, [t.name for t in self.transports],
                bootstrap=self.embedded_bootstrap or settings.kafka_bootstrap_servers,
                kafka_security=self._kafka_security, clock=self.clock,
            )  # fmt: skip
        shared = self._build_shared_health(guard) if channels else None
        self.control = await start_responders(
            channels or [], clock=self.clock, observer=self.observer,
            status=lambda upstream: self.status(upstream).to_json(), guard=guard,
            principals=principals(settings.control_principals),
            identity_configured=bool(config.security.keys) or settings.require_identity,
            instance=self.instance, resources=self.resources,
            breakers=self.force_breakers, forced_breakers=self.forced_breakers,
            notices={HEALTH_VERDICTS: shared.receive} if shared is not None else None,
        )  # fmt: skip
        if shared is not None:
            self.observer.add(shared)  # its own verdicts are this replica's breaker and outlier events
            shared.start(channels or [])
            self.resources.push_async_callback(shared.aclose)
            self.shared_health = shared
        if channels and self._given_control is None:
            self._learning = asyncio.create_task(self._learn_forced_breakers(), name="learn-forced-breakers")
            self.resources.push_async_callback(self._stop_learning)

    def _build_shared_health(self, guard: Guard) -> SharedHealth | None:
        """Shared outlier knowledge with a quorum (gateway/control/shared_health.py), when the settings ask."""
        forwarder = self._breaker_forwarder()
        if forwarder is None:
            return None
        return build_shared_health(
            self.settings, instance=self.instance, take_out=forwarder.take_out, identifier=guard.identifier,
            observer=self.observer, clock=self.clock,
        )  # fmt: skip

    async def _learn_forced_breakers(self) -> None:
        """A late starter takes the forced breaker states its peers hold (gateway.control.peers)."""
        from gateway.control.peers import learn_forced_breakers

        try:
            await learn_forced_breakers(
                self.settings, instance=self.instance, apply=self.apply_forced_breakers, clock=self.clock,
                security=None if self.settings.amqp_url else self._kafka_security,
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - the peers' answer is an optimisation, never a start failure
            log.warning("forced_breakers_not_learned", error=type(exc).__name__)

    async def _stop_learning(self) -> None:
        if self._learning is not None:
            self._learning.cancel()
            await asyncio.gather(self._learning, return_exceptions=True)

    async def _build_forwarder(self, tls: TlsContextProvider | None, secrets: SecretResolver) -> Forwarder:
        from gateway.upstream.auth import resolve_upstream_auth
        from gateway.upstream.forward import build_forwarder

        forwarder = build_forwarder(
            self.config.upstreams,
            defaults_from(self.settings),
            clock=self.clock,
            observer=self.observer,
            tls=tls,
            redis_url=self.settings.redis_url,
            credentials=await resolve_upstream_auth(self.config.upstreams, secrets),
            attempts=self.tracing.attempts if self.tracing is not None else None,
        )
        self.resources.push_async_callback(forwarder.aclose)
        return forwarder

    def _pipeline(
        self, transport: Transport, tracer: RequestTracer, store: IdempotencyStore | None, guard: Guard
    ) -> Pipeline:
        assert self.forwarder is not None and self.telemetry is not None
        settings = self.settings
        return Pipeline(
            transport=transport,
            forwarder=self.forwarder,
            guard=guard,
            admission=Admission(
                self.clock,
                settings.request_timeout,
                settings.max_request_bytes,
                max_timeout_ms=settings.max_timeout_ms,
                max_envelope_depth=settings.max_envelope_depth,
                max_envelope_nodes=settings.max_envelope_nodes,
            ),
            telemetry=self.telemetry,
            observer=self.observer,
            tracer=tracer,
            clock=self.clock,
            dedupe=Deduplicator(store, settings.idempotency_ttl, self.clock),
            parking=self.parking,
        )

    def tune_process(self) -> gc_governor.CollectionGovernor:
        """Process-wide garbage-collector set-up, for a gateway that owns its process (`cmn serve` calls it
        once started): thresholds raised, the start-up objects frozen, and collection held off during
        bursts by a ``CollectionGovernor`` on this gateway's clock, stopped when the gateway closes.

        Not part of ``start``: the collector belongs to the interpreter, not to one gateway. An in-process
        gateway (tests, an application embedding CMN) shares it with its host, whose collector this must
        not re-tune or switch off behind its back.
        """
        if self.governor is None:
            gc_governor.tune_collector(gc)
            self.governor = gc_governor.CollectionGovernor(lambda: self.in_flight, gc, self.clock)
            task = asyncio.create_task(self.governor.run(), name="gc-governor")
            self.resources.push_async_callback(_stop, task)  # first to stop: releases any hold
        return self.governor

    async def flush_traces(self) -> None:
        """Export finished spans now (tests and shutdown; normally they leave in batches)."""
        if self.tracing is not None:
            await self.tracing.flush()

    @property
    def in_flight(self) -> int:
        """Requests being handled right now, over every transport."""
        return sum(transport.in_flight for transport in self.transports)

    @property
    def ready(self) -> bool:
        return self.worker is not None and self.worker.ready

    def status(self, upstream: str | None = None) -> InstanceSnapshot:
        """This instance's live state, every upstream's or one's (UnknownUpstreamError when not configured)."""
        started = self._started_at
        return InstanceSnapshot(
            instance=self.instance,
            version=self.version,
            time=round(self.clock.time(), 3),
            uptime=round(self.clock.monotonic() - started, 3) if started is not None else 0.0,
            transports=tuple(TransportSnapshot(t.name, t.ready, t.in_flight) for t in self.transports),
            in_flight=self.in_flight,
            drain=self.worker.phase if self.worker is not None else "starting",
            upstreams=self._with_parking(
                self._with_peers(self.forwarder.snapshot(upstream)) if self.forwarder is not None else ()
            ),
        )

    def _with_peers(self, upstreams: tuple[UpstreamSnapshot, ...]) -> tuple[UpstreamSnapshot, ...]:
        """Each endpoint some replica says is down gains the quorum's tally ("down by peers (2/3)")."""
        shared = self.shared_health
        if shared is None:
            return upstreams
        out = []
        for snap in upstreams:
            endpoints = []
            for endpoint in snap.endpoints:
                tally = shared.peers(snap.name, endpoint.url)
                peers = PeersSnapshot(tally.votes, tally.quorum, tally.live, tally.down) if tally else None
                endpoints.append(replace(endpoint, peers=peers))
            out.append(replace(snap, endpoints=tuple(endpoints)))
        return tuple(out)

    def _with_parking(self, upstreams: tuple[UpstreamSnapshot, ...]) -> tuple[UpstreamSnapshot, ...]:
        parking = self.parking
        return upstreams if parking is None else tuple(parking.snapshot(u) for u in upstreams)

    def _status_json(self, upstream: str | None) -> dict[str, Any] | None:
        """``status`` as JSON-ready data for the operations port; None for an unknown upstream."""
        try:
            return self.status(upstream).to_json()
        except UnknownUpstreamError:
            return None

    def force_breakers(
        self,
        upstream: str,
        state: str,
        *,
        principal: str,
        endpoint: str | None = None,
        duration: float = 3600.0,
    ) -> dict[str, Any]:
        """The ``breaker`` control command on this instance: force ``upstream``'s breakers (or one
        ``endpoint``'s) "open" or "closed" for ``duration`` seconds, or back to "automatic".

        JSON-ready, refusals included (unknown upstream or endpoint, no breakers, a bad state):
        ``{"instance", "ok", "affected": [{"upstream", "endpoint"}], "forced": [...]}`` or
        ``{"instance", "ok": false, "code", "error"}`` (``code`` a wire error code: unknown_upstream,
        invalid_request).
        """
        forwarder = self._breaker_forwarder()
        if forwarder is None:
            return self._refused("internal", "the gateway has no forwarder yet")
        kind = _BREAKER_STATES.get(state)
        if kind is None:
            return self._refused("invalid_request", f"unknown breaker state {state!r}")
        try:
            affected = forwarder.force_breakers(
                upstream,
                kind,
                principal=principal,
                endpoint=endpoint,
                duration=duration,
            )
        except InvalidRequestError as exc:
            return self._refused(exc.code, exc.message)
        except ValueError as exc:  # a duration that is not positive
            return self._refused("invalid_request", str(exc))
        return {
            "instance": self.instance,
            "ok": True,
            "affected": [{"upstream": u, "endpoint": e} for u, e in affected],
            "forced": [f for f in forwarder.forced_states() if f["upstream"] == upstream],
        }

    def _refused(self, code: str, error: str) -> dict[str, Any]:
        return {"instance": self.instance, "ok": False, "code": code, "error": error}

    def forced_breakers(self) -> list[dict[str, Any]]:
        """Every breaker forcing in force here, with absolute expiries (what a late starter asks peers for)."""
        forwarder = self._breaker_forwarder()
        return forwarder.forced_states() if forwarder is not None else []

    def apply_forced_breakers(self, states: list[dict[str, Any]]) -> dict[str, Any]:
        """Apply a peer's ``forced_breakers`` (expired ones and unknown upstreams/endpoints skipped)."""
        forwarder = self._breaker_forwarder()
        applied = forwarder.apply_forced_states(states) if forwarder is not None else []
        return {"instance": self.instance, "applied": [{"upstream": u, "endpoint": e} for u, e in applied]}

    def _breaker_forwarder(self) -> GatewayForwarder | None:
        from gateway.upstream.forward import GatewayForwarder  # imported late, as in _build_forwarder

        return self.forwarder if isinstance(self.forwarder, GatewayForwarder) else None

    async def drain(self) -> None:
        if self.worker is not None:
            await self.worker.drain()

    async def _close_transports(self) -> None:
        if self.worker is not None:
            await self.worker.aclose()

    async def aclose(self) -> None:
        await self.resources.aclose()

    async def serve_until(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set (SIGTERM/SIGINT in the CLI), then drain and close."""
        await stop.wait()
        log.info("draining", instance=self.instance)
        await self.drain()

    def __repr__(self) -> str:
        names = ", ".join(t.name for t in self.transports) or "none"
        return f"<Gateway {self.instance} [{names}] {'ready' if self.ready else 'not ready'}>"


_BREAKER_STATES: dict[str, Literal["open", "closed", "automatic"]] = {
    "open": "open",
    "closed": "closed",
    "automatic": "automatic",
}


def _package_version() -> str:
    try:
        return metadata.version("cmn-gateway")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.wait([task])
