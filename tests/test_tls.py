"""One TLS type, one builder: every context the gateway makes matches ``client_context`` for the same settings.

Each consumer (upstream HTTPS with and without the certificate manager, the manager's own contexts,
Kafka broker TLS from the gateway and the SDK, RabbitMQ amqps) is asked for a context; its security
properties must equal those ``gateway.tls.client_context`` builds from the same ``TlsSettings``, and a
setting changed there must show in the consumer's context. A consumer that wrote its own default
(``ssl.create_default_context()`` allows TLS 1.2) or dropped a setting fails here.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from gateway.bus.kafka.security import KafkaSecurity
from gateway.bus.rabbitmq.connection import amqps_context
from gateway.certs.config import CertificatesConfig
from gateway.certs.configured import build_manager
from gateway.certs.devca import DevCertificateAuthority
from gateway.certs.manager import CertificateManager
from gateway.certs.provider import UpstreamTlsContexts
from gateway.certs.wiring import broker_tls_context
from gateway.settings import Settings
from gateway.testing import FakeClock
from gateway.tls import DEFAULT_TLS, TlsSettings, client_context
from gateway.upstream.config import TlsConfig, UpstreamsFile
from gateway.upstream.policies import derive, tls_by_upstream
from gateway.upstream.tls import StaticTlsContexts

Fingerprint = tuple[Any, ...]
Consumer = Callable[[TlsSettings, Path], Awaitable[ssl.SSLContext]]


def fingerprint(context: ssl.SSLContext) -> Fingerprint:
    """What decides whom a context trusts and how strictly (not which certificate it presents)."""
    return (
        context.minimum_version,
        context.maximum_version,
        context.verify_mode,
        context.check_hostname,
        context.verify_flags,
        context.options,
        sorted(repr(ca["subject"]) for ca in context.get_ca_certs()),
    )


async def upstream_static(tls: TlsSettings, _: Path) -> ssl.SSLContext:
    context = StaticTlsContexts({"api": tls}).context_for("api")
    assert context is not None
    return context


async def upstream_static_unconfigured(tls: TlsSettings, _: Path) -> ssl.SSLContext:
    assert tls == DEFAULT_TLS
    context = StaticTlsContexts({}).context_for("api")
    assert context is not None
    return context


async def upstream_managed(tls: TlsSettings, tmp: Path) -> ssl.SSLContext:
    manager = CertificateManager([], clock=FakeClock())
    context = UpstreamTlsContexts(manager, {"api": tls}).context_for("api")
    assert context is not None
    return context


async def upstream_managed_unconfigured(tls: TlsSettings, tmp: Path) -> ssl.SSLContext:
    assert tls == DEFAULT_TLS
    context = UpstreamTlsContexts(CertificateManager([], clock=FakeClock()), {}).context_for("api")
    assert context is not None
    return context


async def upstream_from_the_file(tls: TlsSettings, _: Path) -> ssl.SSLContext:
    block = {f.name: getattr(tls, f.name) for f in fields(TlsSettings)}
    upstreams = UpstreamsFile.model_validate({"upstreams": {"api": {"endpoints": ["https://a.test"], "tls": block}}})
    context = StaticTlsContexts(tls_by_upstream(upstreams)).context_for("api")
    assert context is not None
    return context


async def manager_certificate(tls: TlsSettings, tmp: Path) -> ssl.SSLContext:
    assert tls.ca_file is None and tls.verify_hostname  # the manager's contexts trust the system store
    config = CertificatesConfig.model_validate(
        {"min_version": tls.min_version, "dev_dir": str(tmp / "dev"), "items": {"c": {"source": "dev"}}}
    )
    manager = build_manager(config, clock=FakeClock(wall_start=time.time()))
    return await manager.get_certificate("c")


async def kafka_broker(tls: TlsSettings, _: Path) -> ssl.SSLContext:
    assert tls.min_version == DEFAULT_TLS.min_version and tls.verify_hostname  # KAFKA_SSL_CA_FILE only
    context, manager = await broker_tls_context(
        None, ca_file=tls.ca_file, client_certificate=None, settings=Settings.model_validate({}), clock=FakeClock()
    )
    assert manager is None
    return context


async def kafka_sdk_default(tls: TlsSettings, _: Path) -> ssl.SSLContext:
    assert tls == DEFAULT_TLS
    context = KafkaSecurity("SSL").ssl_context
    assert context is not None
    return context


async def rabbitmq_amqps(tls: TlsSettings, _: Path) -> ssl.SSLContext:
    assert tls.min_version == DEFAULT_TLS.min_version and tls.verify_hostname  # the URL's cafile only
    query = f"?cafile={tls.ca_file}" if tls.ca_file is not None else ""
    context = amqps_context(f"amqps://guest:guest@rabbit.test:5671/{query}")
    assert context is not None
    return context


CONSUMERS: dict[str, Consumer] = {
    "upstream": upstream_static,
    "upstream-unconfigured": upstream_static_unconfigured,
    "upstream-managed": upstream_managed,
    "upstream-managed-unconfigured": upstream_managed_unconfigured,
    "upstreams-file": upstream_from_the_file,
    "certificate-manager": manager_certificate,
    "kafka-broker": kafka_broker,
    "kafka-sdk-default": kafka_sdk_default,
    "rabbitmq-amqps": rabbitmq_amqps,
}

# The settings each consumer can be given (the rest of its settings are the defaults).
CHANGES: dict[str, tuple[str, ...]] = {
    "upstream": ("ca_file", "min_version", "verify_hostname"),
    "upstream-managed": ("ca_file", "min_version", "verify_hostname"),
    "upstreams-file": ("ca_file", "min_version", "verify_hostname"),
    "certificate-manager": ("min_version",),
    "kafka-broker": ("ca_file",),
    "rabbitmq-amqps": ("ca_file",),
}


def changed(field: str, ca_file: Path) -> TlsSettings:
    value: dict[str, Any] = {"ca_file": str(ca_file), "min_version": "1.2", "verify_hostname": False}
    return TlsSettings(**{field: value[field]})


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    path.write_bytes(DevCertificateAuthority.create(now=time.time()).ca_pem)
    return path


@pytest.mark.parametrize("consumer", CONSUMERS)
async def test_the_default_settings_give_every_consumer_the_same_context(consumer: str, tmp_path: Path) -> None:
    context = await CONSUMERS[consumer](DEFAULT_TLS, tmp_path)
    assert fingerprint(context) == fingerprint(client_context())
    assert context.minimum_version is ssl.TLSVersion.TLSv1_3
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname


@pytest.mark.parametrize(
    ("consumer", "field"), [(consumer, field) for consumer, names in CHANGES.items() for field in names]
)
async def test_a_setting_changed_in_the_one_type_reaches_the_consumer(
    consumer: str, field: str, ca_file: Path, tmp_path: Path
) -> None:
    settings = changed(field, ca_file)
    context = await CONSUMERS[consumer](settings, tmp_path)
    assert fingerprint(context) == fingerprint(client_context(settings))
    assert fingerprint(context) != fingerprint(client_context())  # the change shows


def test_the_upstreams_file_block_is_the_one_type_with_the_same_defaults() -> None:
    assert set(TlsConfig.model_fields) == {f.name for f in fields(TlsSettings)}
    assert derive(TlsSettings, TlsConfig()) == TlsSettings()
    block = TlsConfig(ca_file="/ca.pem", client_certificate="c", min_version="1.2", verify_hostname=False)
    assert derive(TlsSettings, block) == TlsSettings("/ca.pem", "c", "1.2", False)


def test_amqps_options_the_builder_cannot_honour_are_refused() -> None:
    assert amqps_context("amqp://guest:guest@127.0.0.1/") is None
    with pytest.raises(Exception, match="no_verify_ssl is not supported"):
        amqps_context("amqps://guest:guest@rabbit.test/?no_verify_ssl=1")
