"""The composition root's builders: one function per optional part, each registering its own cleanup."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from gateway.access.guard import Guard
from gateway.access.identity import Identifier, SigningKey
from gateway.access.policy import AccessPolicy
from gateway.access.reply_address import ReplyAddresses
from gateway.bus.base import DEAD_LETTERS, REQUESTS, TELEMETRY, Transport
from gateway.clock import Clock
from gateway.dedupe import ResultStore
from gateway.pipeline import RequestTracer
from gateway.secrets import SecretResolver

if TYPE_CHECKING:
    from gateway.app import Gateway, GatewayConfig

log = structlog.get_logger("cmn.app")


async def build_tracer(gw: Gateway) -> RequestTracer:
    from gateway.telemetry.tracing import configure_tracing

    s = gw.settings
    handle = configure_tracing(
        s.otlp_endpoint,
        protocol=s.otlp_protocol,
        sampling_ratio=s.trace_sampling_ratio,
        service_name="cmn-gateway",
    )
    gw.resources.push_async_callback(handle.aclose)
    gw.tracing = handle
    tracer: RequestTracer = handle.tracer
    return tracer


async def build_metrics(gw: Gateway) -> None:
    """Request log always; Prometheus metrics and probes on METRICS_PORT when ENABLE_METRICS."""
    from gateway.telemetry.logging import RequestLog

    gw.observer.add(RequestLog())
    if not gw.settings.enable_metrics:
        return
    from prometheus_client import CollectorRegistry

    from gateway.telemetry.metrics import Metrics
    from gateway.telemetry.server import MetricsServer

    registry = gw.metrics_registry = CollectorRegistry()
    gw.metrics = Metrics(registry)
    gw.observer.add(gw.metrics)
    server = MetricsServer(registry, port=gw.settings.metrics_port, readiness=lambda: gw.ready)
    await server.start()
    gw.resources.push_async_callback(server.aclose)
    gw.metrics_port = server.port


async def build_certificates(gw: Gateway) -> Any:
    """A TLS context provider for the upstreams that ask for TLS settings, else None (platform default)."""
    tls_by_upstream = {n: u.tls for n, u in gw.config.upstreams.upstreams.items() if u.tls is not None}
    if not tls_by_upstream and not gw.config.certificates:
        return None
    from gateway.certs.wiring import build_certificate_manager

    manager, provider = await build_certificate_manager(
        gw.config.certificates, tls_by_upstream, gw.settings, clock=gw.clock, observer=gw.observer
    )
    if manager is not None:
        gw.resources.push_async_callback(manager.aclose)
        if gw.metrics is not None:
            gw.metrics.bind_certificate_expiries(manager.expiries)
    return provider


async def build_dedupe_store(gw: Gateway) -> ResultStore:
    from gateway.upstream.idempotency import MemoryIdempotencyStore, RedisIdempotencyStore

    if gw.settings.redis_url:
        store = RedisIdempotencyStore.from_url(gw.settings.redis_url)
        gw.resources.push_async_callback(store.aclose)
        return store
    return MemoryIdempotencyStore(gw.clock)


async def build_transports(gw: Gateway) -> list[Transport]:
    s = gw.settings
    transports: list[Transport] = []
    bootstrap = s.kafka_bootstrap_servers
    if s.embedded:
        from gateway.bus.embedded import EmbeddedBroker

        broker = EmbeddedBroker(port=s.embedded_broker_port, clock=gw.clock)
        await broker.start()
        gw.resources.push_async_callback(broker.aclose)
        bootstrap = gw.embedded_bootstrap = broker.bootstrap
        log.warning("embedded_broker_started", bootstrap=bootstrap, note="for trying CMN, not for production")
    if s.amqp_url:
        from gateway.bus.rabbitmq import RabbitTransport

        transports.append(
            RabbitTransport(
                s.amqp_url,
                max_in_flight=s.max_in_flight,
                instance=gw.instance,
                queue=s.requests_queue,
                observer=gw.observer,
            )
        )
    if bootstrap:
        from gateway.bus.kafka import KafkaTransport
        from gateway.bus.kafka_security import security_from_settings

        security = security_from_settings(s)
        if security.tls:
            from gateway.certs.wiring import broker_tls_context

            context, manager = await broker_tls_context(
                gw.config.certificates, ca_file=s.kafka_ssl_ca_file, client_certificate=s.kafka_ssl_certificate,
                settings=s, clock=gw.clock, observer=gw.observer,
            )  # fmt: skip
            if manager is not None:
                gw.resources.push_async_callback(manager.aclose)
            security = security.with_ssl_context(context)
        session_ms = s.kafka_session_timeout_ms
        if s.embedded and "kafka_session_timeout_ms" not in s.model_fields_set:
            session_ms = 1000  # Tansu joins a group in half a session: keep the embedded broker snappy

        transports.append(
            KafkaTransport(
                bootstrap,
                topic=s.requests_queue,
                group_id=s.kafka_group_id,
                max_in_flight=s.max_in_flight,
                session_timeout_ms=session_ms,
                heartbeat_interval_ms=max(100, session_ms // 4),
                fetch_max_wait_ms=s.kafka_fetch_max_wait_ms,
                security=security,
                clock=gw.clock,
            )
        )
        if gw.metrics is not None:
            kafka = transports[-1]
            gw.metrics.bind_consumer_lag(kafka.lag)  # type: ignore[attr-defined]  # KafkaTransport-only API
    return transports


async def build_secrets(gw: Gateway) -> SecretResolver:
    """Secrets named in the upstreams file: environment and files always, Key Vault when configured."""
    from gateway.certs.keyvault import KeyVault
    from gateway.certs.wiring import keyvault_settings

    vault_settings = keyvault_settings(gw.settings)
    if vault_settings is None:
        return SecretResolver()
    vault = KeyVault(vault_settings)
    gw.resources.push_async_callback(vault.aclose)
    return SecretResolver(vault=vault.secret)


async def build_guard(config: GatewayConfig, secrets: SecretResolver, clock: Clock) -> Guard:
    """Identity (signing keys resolved now), the access policy and the reply-address rules."""
    s = config.settings
    keys = {
        key_id: SigningKey(
            key.principal, (await secrets.resolve(key.secret, purpose=f"security.keys.{key_id}")).encode()
        )
        for key_id, key in config.security.keys.items()
    }
    upstreams = config.upstreams.upstreams
    policy = AccessPolicy({name: u.access for name, u in upstreams.items()}, config.security.principals)
    open_upstreams = policy.open_upstreams(sorted(upstreams))
    if open_upstreams:
        log.warning("upstreams_open_to_every_caller", upstreams=open_upstreams, fix="give each an access: block")
    if not s.require_identity:
        log.warning("identity_not_required", note="callers without a user_id or signature are served as anonymous")
    reserved = tuple(dict.fromkeys((REQUESTS, TELEMETRY, DEAD_LETTERS, s.requests_queue)))
    return Guard(
        Identifier(keys, clock=clock, max_age=s.signature_max_age, require_identity=s.require_identity),
        policy,
        ReplyAddresses(queue_pattern=s.reply_queue_pattern, topic_pattern=s.reply_topic_pattern, reserved=reserved),
    )
