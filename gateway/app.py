"""Composition root: builds every object from the settings and owns their lifetimes."""

from __future__ import annotations

import asyncio
import os
import socket
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import structlog
from pydantic import ValidationError

from gateway.access.config import SecurityConfig
from gateway.access.guard import Guard
from gateway.admission import Admission
from gateway.bus.base import Transport
from gateway.clock import Clock, SystemClock
from gateway.dedupe import Deduplicator, ResultStore
from gateway.errors import ConfigError
from gateway.events import Observer, ObserverGroup
from gateway.pipeline import Pipeline, RequestTracer
from gateway.secrets import SecretResolver
from gateway.settings import Settings, describe_validation_error, read_yaml
from gateway.telemetry.service import TelemetryService
from gateway.upstream.base import Forwarder
from gateway.upstream.config import UpstreamDefaults, UpstreamsFile
from gateway.wiring import (
    build_certificates,
    build_dedupe_store,
    build_guard,
    build_metrics,
    build_secrets,
    build_tracer,
    build_transports,
)
from gateway.worker import Lane, Worker

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
    document = dict(upstreams)
    certificates = document.pop("certificates", None) or {}
    security_section = document.pop("security", None) or {}
    try:
        parsed = UpstreamsFile.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, "upstreams")) from exc
    try:
        security = SecurityConfig.model_validate(security_section)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, "security")) from exc
    return GatewayConfig(settings, parsed, dict(certificates), security)


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
    """One gateway process: transports → pipelines → forwarder, plus telemetry and certificates."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        clock: Clock | None = None,
        observers: list[Observer] | None = None,
        transports: list[Transport] | None = None,
    ) -> None:
        self.config = config
        self.settings = config.settings
        self.clock = clock or SystemClock()
        self.instance = self.settings.instance or f"{socket.gethostname()}-{os.getpid()}"
        self.observer = ObserverGroup(list(observers or []))
        self._given_transports = transports
        self.resources = AsyncExitStack()  # everything started; closed in reverse order by aclose()
        self.transports: list[Transport] = []
        self.worker: Worker | None = None
        self.forwarder: Forwarder | None = None
        self.telemetry: TelemetryService | None = None
        self.metrics: Any = None  # gateway.telemetry.metrics.Metrics when ENABLE_METRICS
        self.tracing: Any = None  # gateway.telemetry.tracing.TracingHandle
        self.metrics_registry: Any = None  # prometheus_client.CollectorRegistry when ENABLE_METRICS
        self.metrics_port: int | None = None
        self.embedded_bootstrap: str | None = None

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
        tracer: RequestTracer = await build_tracer(self)
        await build_metrics(self)
        tls = await build_certificates(self)
        secrets = await build_secrets(self)
        guard = await build_guard(self.config, secrets, self.clock)
        self.forwarder = await self._build_forwarder(tls, secrets)
        store: ResultStore | None = await build_dedupe_store(self)
        self.transports = self._given_transports or await build_transports(self)
        self.telemetry = TelemetryService(clock=self.clock, instance=self.instance, publishers=self.transports)
        self.observer.add(self.telemetry)  # the stream sink, beside metrics and the log line
        await self.telemetry.start()
        self.resources.push_async_callback(self.telemetry.aclose)
        lanes = [Lane(t, self._pipeline(t, tracer, store, guard)) for t in self.transports]
        self.worker = Worker(lanes)
        self.resources.push_async_callback(self._close_transports)
        await self.worker.start()
        log.info("gateway_started", instance=self.instance, transports=[t.name for t in self.transports])

    async def _build_forwarder(self, tls: Any, secrets: SecretResolver) -> Forwarder:
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
        )
        self.resources.push_async_callback(forwarder.aclose)
        return forwarder

    def _pipeline(
        self, transport: Transport, tracer: RequestTracer, store: ResultStore | None, guard: Guard
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
        )

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
