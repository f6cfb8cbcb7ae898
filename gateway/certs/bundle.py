"""A certificate with its private key and chain, parsed from PEM or PKCS#12; pure, no I/O."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from gateway.certs.errors import CertificateFormatError

_PEM_KEY_MARKER = b"PRIVATE KEY-----"
_PEM_CERT_MARKER = b"-----BEGIN CERTIFICATE-----"


@dataclass(frozen=True, slots=True)
class CertificateBundle:
    """One version of a named certificate: the leaf, its intermediates and (for client use) the key."""

    name: str
    source: str
    version: str
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()
    private_key: PrivateKeyTypes | None = None

    @property
    def not_before(self) -> float:
        return self.certificate.not_valid_before_utc.timestamp()

    @property
    def not_after(self) -> float:
        return self.certificate.not_valid_after_utc.timestamp()

    @property
    def subject(self) -> str:
        return self.certificate.subject.rfc4514_string()

    @property
    def common_name(self) -> str | None:
        names = self.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(names[0].value) if names else None

    @property
    def sans(self) -> tuple[str, ...]:
        return subject_alt_names(self.certificate)

    @property
    def fingerprint(self) -> str:
        return self.certificate.fingerprint(hashes.SHA256()).hex()

    def chain_pem(self) -> bytes:
        """Leaf first, then intermediates: the order TLS sends them in."""
        certs = (self.certificate, *self.chain)
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)

    def key_pem(self, password: bytes | None = None) -> bytes:
        if self.private_key is None:
            raise CertificateFormatError(f"certificate {self.name!r} has no private key")
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
        )
        return self.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)

    def __repr__(self) -> str:
        key = "key" if self.private_key is not None else "no key"
        return f"<CertificateBundle {self.name} {self.source}@{self.version} {self.subject!r} {key}>"


def subject_alt_names(certificate: x509.Certificate) -> tuple[str, ...]:
    """DNS names and IP addresses from the SAN extension, as text."""
    try:
        ext = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ()
    dns = ext.value.get_values_for_type(x509.DNSName)
    ips = [str(ip) for ip in ext.value.get_values_for_type(x509.IPAddress)]
    return (*dns, *ips)


def content_version(*parts: bytes) -> str:
    """A short stable version for sources without their own (files, dev CA): a hash of the content."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()[:16]


def parse_pem(name: str, source: str, version: str, data: bytes, password: bytes | None = None) -> CertificateBundle:
    """PEM with certificates (leaf first) and optionally one private key, in any order."""
    if _PEM_CERT_MARKER not in data:
        raise CertificateFormatError(f"certificate {name!r}: no PEM certificate found")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise CertificateFormatError(f"certificate {name!r}: unreadable PEM certificate: {exc}") from exc
    key = _load_pem_key(name, data, password) if _PEM_KEY_MARKER in data else None
    return CertificateBundle(name, source, version, certs[0], tuple(certs[1:]), key)


def _load_pem_key(name: str, data: bytes, password: bytes | None) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(data, password=password)
    except (ValueError, TypeError) as exc:
        raise CertificateFormatError(f"certificate {name!r}: unreadable private key: {exc}") from exc


def parse_pkcs12(name: str, source: str, version: str, data: bytes, password: bytes | None = None) -> CertificateBundle:
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, password)
    except ValueError as exc:
        raise CertificateFormatError(f"certificate {name!r}: unreadable PKCS#12: {exc}") from exc
    if cert is None:
        raise CertificateFormatError(f"certificate {name!r}: PKCS#12 holds no certificate")
    return CertificateBundle(name, source, version, cert, tuple(extra), key)


def with_key(bundle: CertificateBundle, key_pem: bytes, password: bytes | None = None) -> CertificateBundle:
    """The bundle with its key taken from a separate PEM file."""
    key = _load_pem_key(bundle.name, key_pem, password)
    return CertificateBundle(bundle.name, bundle.source, bundle.version, bundle.certificate, bundle.chain, key)
