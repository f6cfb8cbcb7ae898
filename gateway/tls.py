"""TLS settings and the one builder of client contexts: every outbound TLS connection starts here.

Upstream HTTPS (requests and health checks), Kafka ``SSL``/``SASL_SSL`` and RabbitMQ ``amqps://`` all
take their ``ssl.SSLContext`` from ``client_context``, so the defaults are written once: TLS 1.3
minimum, the peer's certificate always verified, its name checked. TLS 1.2 only when configured
(and the security audit flags it).

    context = client_context(TlsSettings(ca_file="/etc/cmn/ca.pem"), certificate=bundle)

This module sits below ``gateway.certs`` and ``gateway.upstream`` (siblings that may not import each
other): the upstreams file's pydantic ``TlsConfig`` converts into ``TlsSettings`` at the edge, and
the certificate manager hands its bundles in through the ``ClientCertificate`` protocol.
"""

from __future__ import annotations

import secrets
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from gateway.errors import CertificateError

TlsVersion = Literal["1.2", "1.3"]

DEFAULT_MIN_VERSION: TlsVersion = "1.3"

TLS_VERSIONS: dict[TlsVersion, ssl.TLSVersion] = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """How to connect out over TLS: whom to trust, which certificate to show, how strict to be.

    ``ca_file`` None trusts the system store. ``client_certificate`` names a certificate the
    certificate manager holds (mTLS); the builder itself takes the loaded certificate.
    ``verify_hostname=False`` skips only the name check: the chain is always verified.
    """

    ca_file: str | None = None
    client_certificate: str | None = None
    min_version: TlsVersion = DEFAULT_MIN_VERSION
    verify_hostname: bool = True


DEFAULT_TLS = TlsSettings()


class ClientCertificate(Protocol):
    """A certificate with its key, as ``gateway.certs.bundle.CertificateBundle`` provides it."""

    @property
    def name(self) -> str: ...
    def chain_pem(self) -> bytes: ...
    def key_pem(self, password: bytes | None = None) -> bytes: ...


def client_context(
    settings: TlsSettings = DEFAULT_TLS,
    *,
    certificate: ClientCertificate | None = None,
    ca_pem: bytes | None = None,
) -> ssl.SSLContext:
    """A context for connecting out with ``settings``, presenting ``certificate`` when given.

    ``ca_pem`` trusts PEM bytes (a development CA) in addition to ``settings.ca_file``; with neither,
    the system store. Raises ``CertificateError`` for a CA bundle or certificate that cannot be used.
    """
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH,
            cafile=settings.ca_file,
            cadata=ca_pem.decode("ascii") if ca_pem is not None else None,
        )
    except (OSError, ssl.SSLError, UnicodeDecodeError) as exc:
        raise CertificateError(f"cannot load CA bundle {settings.ca_file or 'from PEM'}: {exc}") from exc
    context.minimum_version = TLS_VERSIONS[settings.min_version]
    context.check_hostname = settings.verify_hostname
    context.verify_mode = ssl.CERT_REQUIRED
    if certificate is not None:
        present_certificate(context, certificate)
    return context


def present_certificate(context: ssl.SSLContext, certificate: ClientCertificate) -> None:
    """Load ``certificate``'s chain and key into ``context`` (again on renewal: new handshakes show it).

    ``SSLContext`` only loads from files, so the chain and key go through a private temporary
    directory; the key is written encrypted under a one-time password, so its plain form never
    touches the disk.
    """
    password = secrets.token_bytes(24).hex().encode()
    key = certificate.key_pem(password)
    with tempfile.TemporaryDirectory(prefix="cmn-tls-") as tmp:
        cert_path, key_path = Path(tmp, "chain.pem"), Path(tmp, "key.pem")
        cert_path.write_bytes(certificate.chain_pem())
        key_path.touch(mode=0o600)
        key_path.write_bytes(key)
        try:
            context.load_cert_chain(cert_path, key_path, password=password)
        except ssl.SSLError as exc:
            raise CertificateError(f"certificate {certificate.name!r} cannot be used for TLS: {exc}") from exc
