"""The composition root's builders: one function per optional part.

Each builder takes what it needs (settings, clock, observer, the root's ``AsyncExitStack`` for its
cleanup) and returns a typed value; ``Gateway.start`` (app.py) assembles them. Nothing here reaches
into the ``Gateway``, and this module does not import app.py.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from gateway.access.config import PrincipalConfig, SecurityConfig
from gateway.access.guard import Guard
from gateway.access.identity import Identifier, SigningKey
from gateway.access.policy import AccessPolicy
from gateway.access.replay import MemoryReplayRecord, RedisReplayRecord, ReplayRecord
from gateway.access.reply_address import ReplyAddresses
from gateway.bus.base import DEAD_LETTERS, REQUESTS, TELEMETRY, Transport
from gateway.clock import Clock
from gateway.errors import ConfigError
from gateway.events import Observer
from gateway.idempotency import IdempotencyStore, MemoryIdempotencyStore, RedisIdempotencyStore
from gateway.secrets import SecretResolver
from gateway.settings import Settings
from gateway.upstream.config import UpstreamsFile

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from gateway.bus.kafka.security import KafkaSecurity
    from gateway.parking import Parking
    from gateway.telemetry.metrics import Metrics
    from gateway.telemetry.server import StatusSource
    from gateway.telemetry.tracing import TracingHandle
    from gateway.upstream.tls import TlsContextProvider

log = structlog.get_logger("cmn.app")


@dataclass(frozen=True, slots=True)
class MetricsHandle:
    """Prometheus metrics (an observer), the registry they live on, and the operations port serving them."""

    metrics: Metrics
    registry: CollectorRegistry
    port: int


async def build_tracing(settings: Settings, resources: AsyncExitStack) -> TracingHandle:
    """OTLP tracing when OTLP_ENDPOINT is set, else a no-op tracer; the handle flushes on close."""
    from gateway.telemetry.tracing import configure_tracing

    handle = configure_tracing(
        settings.otlp_endpoint,
        protocol=settings.otlp_protocol,
        sampling_ratio=settings.trace_sampling_ratio,
        service_name="cmn-gateway",
    )
    resources.push_async_callback(handle.aclose)
    return handle


async def build_metrics(
    settings: Settings,
    resources: AsyncExitStack,
    *,
    readiness: Callable[[], bool],
    upstreams: Iterable[str] = (),
    status: StatusSource | None = None,
) -> MetricsHandle | None:
    """Prometheus metrics, the probes and ``/admin/upstreams`` on METRICS_PORT when ENABLE_METRICS, else None."""
    if not settings.enable_metrics:
        return None
    from prometheus_client import CollectorRegistry

    from gateway.telemetry.metrics import Metrics
    from gateway.telemetry.server import MetricsServer

    registry = CollectorRegistry()
    server = MetricsServer(registry, port=settings.metrics_port, readiness=readiness, status=status)
    await server.start()
    resources.push_async_callback(server.aclose)
    return MetricsHandle(Metrics(registry, upstreams=upstreams), registry, server.port)


async def build_certificates(
    certificates: Mapping[str, Any],
    upstreams: UpstreamsFile,
    settings: Settings,
    *,
    clock: Clock,
    observer: Observer,
    resources: AsyncExitStack,
    metrics: Metrics | None,
) -> TlsContextProvider | None:
    """A TLS context provider for the upstreams that ask for TLS settings, else None (platform default)."""
    from gateway.upstream import policies

    tls_by_upstream = policies.tls_by_upstream(upstreams)
    if not tls_by_upstream and not certificates:
        return None
    from gateway.certs.wiring import build_certificate_manager

    manager, provider = await build_certificate_manager(
        certificates, tls_by_upstream, settings, clock=clock, observer=observer
    )
    if manager is not None:
        resources.push_async_callback(manager.aclose)
        if metrics is not None:
            metrics.bind_certificate_expiries(manager.expiries)
    return provider


async def build_dedupe_store(settings: Settings, *, clock: Clock, resources: AsyncExitStack) -> IdempotencyStore:
    """Redis when REDIS_URL is set (shared by every replica), else this process's memory."""
    if settings.redis_url:
        store = RedisIdempotencyStore.from_url(settings.redis_url)
        resources.push_async_callback(store.aclose)
        return store
    return MemoryIdempotencyStore(clock)


async def build_embedded_broker(settings: Settings, *, clock: Clock, resources: AsyncExitStack) -> str | None:
    """The embedded Kafka-protocol broker when no broker is configured: its bootstrap address, else None."""
    if not settings.embedded:
        return None
    from gateway.bus.embedded import EmbeddedBroker

    broker = EmbeddedBroker(port=settings.embedded_broker_port, clock=clock)
    await broker.start()
    resources.push_async_callback(broker.aclose)
    log.warning("embedded_broker_started", bootstrap=broker.bootstrap, note="for trying CMN, not for production")
    return broker.bootstrap


async def build_kafka_security(
    settings: Settings,
    *,
    certificates: Mapping[str, Any] | None,
    clock: Clock,
    observer: Observer | None = None,
    resources: AsyncExitStack | None = None,
) -> KafkaSecurity:
    """KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_* and KAFKA_SSL_* as every Kafka client of one process uses
    them: the gateway's transport, its control channel and the requester a late starter asks its peers
    with, and the CLI. With a client certificate (a name under ``certificates:``) its manager renews
    it into the one context for as long as ``resources`` lives; without ``resources`` (a one-shot CLI
    run) the manager is closed at once and the context keeps the certificate it loaded."""
    from gateway.bus.kafka.security import security_from_settings

    security = security_from_settings(settings)
    if not security.tls:
        return security
    from gateway.certs.wiring import broker_tls_context

    context, manager = await broker_tls_context(
        certificates, ca_file=settings.kafka_ssl_ca_file, client_certificate=settings.kafka_ssl_certificate,
        settings=settings, clock=clock, observer=observer,
    )  # fmt: skip
    if manager is not None:
        if resources is not None:
            resources.push_async_callback(manager.aclose)
        else:
            await manager.aclose()
    return security.with_ssl_context(context)


async def build_transports(
    settings: Settings,
    *,
    kafka_security: KafkaSecurity | None,
    bootstrap: str | None,
    instance: str,
    clock: Clock,
    observer: Observer,
    metrics: Metrics | None,
    park_delays: tuple[int, ...] = (),
) -> list[Transport]:
    """RabbitMQ when AMQP_URL is set, Kafka when ``bootstrap`` is (with ``kafka_security``, from
    ``build_kafka_security``); each takes the gateway's clock and declares (or relays) a park tier per
    delay in ``park_delays``."""
    transports: list[Transport] = []
    if settings.amqp_url:
        from gateway.bus.rabbitmq.transport import RabbitTransport

        transports.append(
            RabbitTransport(
                settings.amqp_url,
                max_in_flight=settings.max_in_flight,
                instance=instance,
                queue=settings.requests_queue,
                observer=observer,
                park_delays=park_delays,
                clock=clock,
            )
        )
    if bootstrap:
        if kafka_security is None:
            raise ConfigError("a Kafka transport needs its security settings (build_kafka_security)")
        kafka = _kafka_transport(
            settings, bootstrap, kafka_security, clock=clock, metrics=metrics, park_delays=park_delays
        )
        transports.append(kafka)
    return transports


def _kafka_transport(
    s: Settings,
    bootstrap: str,
    security: KafkaSecurity,
    *,
    clock: Clock,
    metrics: Metrics | None,
    park_delays: tuple[int, ...] = (),
) -> Transport:
    from gateway.bus.kafka.transport import KafkaTransport

    session_ms = s.kafka_session_timeout_ms
    if s.embedded and "kafka_session_timeout_ms" not in s.model_fields_set:
        session_ms = 1000  # Tansu joins a group in half a session: keep the embedded broker snappy
    transport = KafkaTransport(
        bootstrap,
        topic=s.requests_queue,
        group_id=s.kafka_group_id,
        max_in_flight=s.max_in_flight,
        session_timeout_ms=session_ms,
        heartbeat_interval_ms=max(100, session_ms // 4),
        fetch_max_wait_ms=s.kafka_fetch_max_wait_ms,
        security=security,
        park_delays=park_delays,
        clock=clock,
    )
    if metrics is not None:
        metrics.bind_consumer_lag(transport.lag)
    return transport


async def build_secrets(settings: Settings, resources: AsyncExitStack) -> SecretResolver:
    """Secrets named in the upstreams file: environment and files always, Key Vault when configured."""
    from gateway.certs.keyvault import KeyVault
    from gateway.certs.wiring import keyvault_settings

    vault_settings = keyvault_settings(settings)
    if vault_settings is None:
        return SecretResolver()
    vault = KeyVault(vault_settings)
    resources.push_async_callback(vault.aclose)
    return SecretResolver(vault=vault.secret)


async def build_guard(
    settings: Settings,
    upstreams: UpstreamsFile,
    security: SecurityConfig,
    secrets: SecretResolver,
    clock: Clock,
    resources: AsyncExitStack,
) -> Guard:
    """Identity (signing keys resolved now, each signature accepted once: shared through Redis when
    REDIS_URL is set), the access policy and the reply-address rules."""
    s = settings
    keys = {
        key_id: SigningKey(
            key.principal, (await secrets.resolve(key.secret, purpose=f"security.keys.{key_id}")).encode()
        )
        for key_id, key in security.keys.items()
    }
    by_name = upstreams.upstreams
    # A signing key's principal is a principal too: its name is a tenant anonymous callers may not spend.
    principals = {**{key.principal: PrincipalConfig() for key in security.keys.values()}, **security.principals}
    policy = AccessPolicy({name: u.access for name, u in by_name.items()}, principals)
    open_upstreams = policy.open_upstreams(sorted(by_name))
    if open_upstreams:
        log.warning("upstreams_open_to_every_caller", upstreams=open_upstreams, fix="give each an access: block")
    if not s.require_identity:
        log.warning("identity_not_required", note="callers without a user_id or signature are served as anonymous")
    reserved = tuple(dict.fromkeys((REQUESTS, TELEMETRY, DEAD_LETTERS, s.requests_queue)))
    return Guard(
        Identifier(keys, clock=clock, max_age=s.signature_max_age, require_identity=s.require_identity),
        policy,
        ReplyAddresses(queue_pattern=s.reply_queue_pattern, topic_pattern=s.reply_topic_pattern, reserved=reserved),
        _replay_record(s, clock, resources),
    )


def build_parking(settings: Settings, upstreams: UpstreamsFile, clock: Clock) -> Parking | None:
    """Parking when some upstream has ``park:``, sealed with PARK_SECRET (gateway.parking.ticket)."""
    from gateway.parking import Parking, ParkPolicy, Sealer

    policies = {
        name: ParkPolicy(tuple(u.park.delays), u.retry.max_retry_after, u.park.try_budget)
        for name, u in upstreams.upstreams.items()
        if u.park is not None
    }
    if not policies:
        return None
    secret = settings.park_secret
    if secret is None:
        # A copy parked here then verifies only in this process: after a restart, or on another
        # replica, its park headers are ignored and its caller established anew (a signed request is
        # then refused as a replay). Set the same PARK_SECRET on every replica.
        log.warning("park_secret_not_set", note="parked copies verify only in this process; set PARK_SECRET")
        secret = secrets.token_hex(32)
    return Parking(policies, sealer=Sealer(secret.encode()), clock=clock, seal_ttl=settings.max_timeout_ms / 1000)


def _replay_record(settings: Settings, clock: Clock, resources: AsyncExitStack) -> ReplayRecord:
    memory = MemoryReplayRecord(clock)
    if not settings.redis_url:
        return memory
    shared = RedisReplayRecord.from_url(settings.redis_url, memory)
    resources.push_async_callback(shared.aclose)
    return shared
