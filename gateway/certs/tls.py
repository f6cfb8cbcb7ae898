"""Serving TLS and reading CA bundles; client contexts come from ``gateway.tls.client_context``.

``server_context`` is for the development servers and tests that stand in for upstreams and brokers;
it applies the same version names and default as the client side.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from cryptography import x509

from gateway.certs.bundle import CertificateBundle
from gateway.certs.errors import CertificateFormatError, CertificateSourceError
from gateway.tls import DEFAULT_MIN_VERSION, TLS_VERSIONS, TlsVersion, present_certificate


def server_context(
    bundle: CertificateBundle,
    *,
    client_ca_pem: bytes | None = None,
    min_version: TlsVersion = DEFAULT_MIN_VERSION,
    max_version: TlsVersion | None = None,
) -> ssl.SSLContext:
    """A context for serving TLS (dev servers, tests); with ``client_ca_pem`` clients must present a cert."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[min_version]
    if max_version is not None:
        context.maximum_version = TLS_VERSIONS[max_version]
    present_certificate(context, bundle)
    if client_ca_pem is not None:
        context.load_verify_locations(cadata=client_ca_pem.decode("ascii"))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def load_ca_file(path: str | Path) -> tuple[x509.Certificate, ...]:
    """Every certificate in a PEM CA bundle, for validating chains before use."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CertificateSourceError(f"cannot read CA bundle {path}: {exc}") from exc
    try:
        return tuple(x509.load_pem_x509_certificates(data))
    except ValueError as exc:
        raise CertificateFormatError(f"CA bundle {path} holds no readable PEM certificate: {exc}") from exc
