"""The Certificate Manager: sources (Key Vault, files, development CA), validation, renewal, TLS contexts.

manager = build_manager(config.certificates, clock=clock, observer=observer, keyvault=vault_settings)
async with manager:
    ssl_context = await manager.get_certificate("cert-name")
    tls = UpstreamTlsContexts(manager, {"partner": TlsSettings(client_certificate="cert-name")})

``TlsSettings`` and the one client-context builder live in ``gateway.tls``, below this package.
"""

from gateway.certs.bundle import CertificateBundle
from gateway.certs.config import CertificatesConfig
from gateway.certs.configured import build_manager
from gateway.certs.keyvault import KeyVaultSettings
from gateway.certs.manager import CertificateManager, ManagedCertificate
from gateway.certs.provider import UpstreamTlsContexts
from gateway.certs.tls import server_context

__all__ = [
    "CertificateBundle",
    "CertificateManager",
    "CertificatesConfig",
    "KeyVaultSettings",
    "ManagedCertificate",
    "UpstreamTlsContexts",
    "build_manager",
    "server_context",
]
