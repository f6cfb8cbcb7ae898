"""Builds a CertificateManager from the ``certificates:`` config; used by app.py and ``cmn certs list``."""

from __future__ import annotations

from gateway.certs.config import CertificateItem, CertificatesConfig, DevItem, FileItem, KeyVaultItem
from gateway.certs.devca import DevSource
from gateway.certs.files import CertificateFiles, FileSource
from gateway.certs.keyvault import KeyVault, KeyVaultSettings, KeyVaultSource
from gateway.certs.manager import AsyncCloseable, CertificateManager, ManagedCertificate
from gateway.certs.source import CertificateSource
from gateway.certs.tls import load_ca_file
from gateway.clock import Clock
from gateway.errors import ConfigError
from gateway.events import Observer


def build_manager(
    config: CertificatesConfig,
    *,
    clock: Clock,
    observer: Observer | None = None,
    keyvault: KeyVaultSettings | None = None,
) -> CertificateManager:
    """A manager owning every source ``config`` names (and the Key Vault clients, when any are used)."""
    vault = _vault(config, keyvault)
    certificates = [_managed(name, item, config, clock, vault) for name, item in config.items.items()]
    resources: list[AsyncCloseable] = [vault] if vault is not None else []
    return CertificateManager(
        certificates,
        clock=clock,
        observer=observer,
        poll_interval=config.poll_interval,
        renew_before=config.renew_before,
        min_version=config.min_version,
        resources=resources,
    )


def _vault(config: CertificatesConfig, settings: KeyVaultSettings | None) -> KeyVault | None:
    if not config.uses_keyvault():
        return None
    if settings is None or not settings.vault_url:
        names = [n for n, i in config.items.items() if isinstance(i, KeyVaultItem)]
        raise ConfigError(f"certificates {names} use Key Vault but AZURE_VAULT_URL is not set")
    return KeyVault(settings)


def _managed(
    name: str, item: CertificateItem, config: CertificatesConfig, clock: Clock, vault: KeyVault | None
) -> ManagedCertificate:
    trusted = load_ca_file(item.ca_file) if item.ca_file is not None else ()
    return ManagedCertificate(name, _source(name, item, config, clock, vault), trusted, item.expected_name)


def _source(
    name: str, item: CertificateItem, config: CertificatesConfig, clock: Clock, vault: KeyVault | None
) -> CertificateSource:
    if isinstance(item, KeyVaultItem):
        assert vault is not None  # _vault() built one because this item exists
        return KeyVaultSource(vault, name, item.vault_name)
    if isinstance(item, FileItem):
        password = item.password.get_secret_value().encode() if item.password is not None else None
        return FileSource(name, CertificateFiles(item.cert, item.key, item.pkcs12, password))
    if isinstance(item, DevItem):
        return DevSource(name, item.sans, config.dev_dir, clock, days=item.days, renew_before=config.renew_before)
    raise ConfigError(f"certificate {name!r}: unknown source")
