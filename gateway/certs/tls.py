"""Certificate bundles → ``ssl.SSLContext`` for upstream HTTP, brokers (amqps, Kafka SSL) and test servers.

Defaults are strict: TLS 1.3 minimum, certificate and hostname verification on. TLS 1.2 only
when configured (and the security audit flags it).
"""

from __future__ import annotations

import secrets
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509

from gateway.certs.bundle import CertificateBundle
from gateway.certs.errors import CertificateFormatError, CertificateSourceError

TlsVersion = Literal["1.2", "1.3"]

_VERSIONS: dict[TlsVersion, ssl.TLSVersion] = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """TLS for one upstream; mirrors gateway.upstream.config.TlsConfig field for field."""

    ca_file: str | None = None
    client_certificate: str | None = None
    min_version: TlsVersion = "1.3"
    verify_hostname: bool = True


def client_context(
    *,
    bundle: CertificateBundle | None = None,
    ca_file: str | Path | None = None,
    ca_pem: bytes | None = None,
    min_version: TlsVersion = "1.3",
    verify_hostname: bool = True,
) -> ssl.SSLContext:
    """A context for connecting out: trusts ``ca_file``/``ca_pem`` (else the system store), shows ``bundle``.

    Peer certificates are always verified; ``verify_hostname=False`` only skips the name check.
    """
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH,
            cafile=str(ca_file) if ca_file is not None else None,
            cadata=ca_pem.decode("ascii") if ca_pem is not None else None,
        )
    except (OSError, ssl.SSLError) as exc:
        raise CertificateSourceError(f"cannot load CA bundle {ca_file or 'from PEM'}: {exc}") from exc
    context.minimum_version = _VERSIONS[min_version]
    context.check_hostname = verify_hostname
    context.verify_mode = ssl.CERT_REQUIRED
    if bundle is not None:
        load_bundle(context, bundle)
    return context


def server_context(
    bundle: CertificateBundle,
    *,
    client_ca_pem: bytes | None = None,
    min_version: TlsVersion = "1.3",
    max_version: TlsVersion | None = None,
) -> ssl.SSLContext:
    """A context for serving TLS (dev servers, tests); with ``client_ca_pem`` clients must present a cert."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[min_version]
    if max_version is not None:
        context.maximum_version = _VERSIONS[max_version]
    load_bundle(context, bundle)
    if client_ca_pem is not None:
        context.load_verify_locations(cadata=client_ca_pem.decode("ascii"))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def load_bundle(context: ssl.SSLContext, bundle: CertificateBundle) -> None:
    """Load certificate chain and key into ``context``.

    ``SSLContext`` only loads from files, so the chain and key go through a private temporary
    directory; the key is written encrypted under a one-time password, so its plain form never
    touches the disk.
    """
    password = secrets.token_bytes(24).hex().encode()
    key = bundle.key_pem(password)
    with tempfile.TemporaryDirectory(prefix="cmn-tls-") as tmp:
        cert_path, key_path = Path(tmp, "chain.pem"), Path(tmp, "key.pem")
        cert_path.write_bytes(bundle.chain_pem())
        key_path.touch(mode=0o600)
        key_path.write_bytes(key)
        try:
            context.load_cert_chain(cert_path, key_path, password=password)
        except ssl.SSLError as exc:
            raise CertificateFormatError(f"certificate {bundle.name!r} cannot be used for TLS: {exc}") from exc


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
