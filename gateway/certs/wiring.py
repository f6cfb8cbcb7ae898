"""What app.py calls: `certificates:` + upstream TLS settings + Azure settings → a running manager.

TLS settings are ``gateway.tls.TlsSettings`` (the upstreams file's ``tls:`` blocks, converted at the
edge); the Azure settings are taken structurally, so this package imports neither gateway.settings
nor gateway.upstream (the layers are siblings).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from gateway.certs.bundle import CertificateBundle
from gateway.certs.config import CertificatesConfig
from gateway.certs.configured import build_manager
from gateway.certs.errors import UnknownCertificateError
from gateway.certs.keyvault import KeyVaultSettings
from gateway.certs.manager import CertificateManager
from gateway.certs.provider import UpstreamTlsContexts
from gateway.clock import Clock
from gateway.errors import CertificateError, ConfigError
from gateway.events import Observer
from gateway.tls import TlsSettings, client_context, present_certificate


class AzureSettings(Protocol):
    """The four AZURE_* values from gateway.settings.Settings."""

    @property
    def azure_vault_url(self) -> str | None: ...
    @property
    def azure_client_id(self) -> str | None: ...
    @property
    def azure_client_secret(self) -> str | None: ...
    @property
    def azure_tenant_id(self) -> str | None: ...


def keyvault_settings(settings: AzureSettings) -> KeyVaultSettings | None:
    if not settings.azure_vault_url:
        return None
    return KeyVaultSettings(
        vault_url=settings.azure_vault_url,
        tenant_id=settings.azure_tenant_id,
        client_id=settings.azure_client_id,
        client_secret=settings.azure_client_secret,
    )


def certificates_config(section: Mapping[str, Any] | CertificatesConfig | None) -> CertificatesConfig:
    if isinstance(section, CertificatesConfig):
        return section
    try:
        return CertificatesConfig.model_validate(dict(section or {}))
    except ValidationError as exc:
        raise ConfigError(f"certificates: {exc}") from exc


async def build_certificate_manager(
    certificates: Mapping[str, Any] | CertificatesConfig | None,
    tls_by_upstream: Mapping[str, TlsSettings],
    settings: AzureSettings,
    *,
    clock: Clock,
    observer: Observer | None = None,
) -> tuple[CertificateManager, UpstreamTlsContexts]:
    """A started manager (every certificate loaded and valid, renewal polling) and the upstream provider.

    The caller owns the manager: ``await manager.aclose()`` at shutdown. Any bad certificate or a
    client certificate that is not configured stops start-up here with a CertificateError/ConfigError.
    """
    config = certificates_config(certificates)
    manager = build_manager(config, clock=clock, observer=observer, keyvault=keyvault_settings(settings))
    try:
        provider = UpstreamTlsContexts(manager, tls_by_upstream)
        await manager.start()
        await provider.prepare()
    except BaseException:
        await manager.aclose()
        raise
    return manager, provider


async def broker_tls_context(
    certificates: Mapping[str, Any] | CertificatesConfig | None,
    *,
    ca_file: str | Path | None,
    client_certificate: str | None,
    settings: AzureSettings,
    clock: Clock,
    observer: Observer | None = None,
) -> tuple[ssl.SSLContext, CertificateManager | None]:
    """A client context for a broker (Kafka SSL): trusts ``ca_file``, else the system store, and with
    ``client_certificate`` (a name under ``certificates:``) presents that certificate. The defaults
    (minimum version, verification) are those of every other ``TlsSettings``.

    With a certificate, a started manager for it alone comes back too; the caller closes it. Each
    renewal is loaded into the same context, so connections opened afterwards present the new one.
    """
    tls = TlsSettings(ca_file=str(ca_file) if ca_file is not None else None, client_certificate=client_certificate)
    context = client_context(tls)  # a bad CA bundle stops us before any certificate source is asked
    if client_certificate is None:
        return context, None
    config = certificates_config(certificates)
    item = config.items.get(client_certificate)
    if item is None:
        raise UnknownCertificateError(
            f"the broker client certificate {client_certificate!r} is not configured under `certificates:`"
        )
    config = config.model_copy(update={"items": {client_certificate: item}})
    manager = build_manager(config, clock=clock, observer=observer, keyvault=keyvault_settings(settings))
    try:
        await manager.start()
        bundle = manager.current(client_certificate)
        assert bundle is not None  # start() loaded it or raised
        present_certificate(context, bundle)
    except BaseException:
        await manager.aclose()
        raise

    def renewed(new: CertificateBundle) -> None:
        with contextlib.suppress(CertificateError):  # keeps presenting the old one; the manager reported it
            present_certificate(context, new)

    manager.add_listener(renewed)
    return context, manager
