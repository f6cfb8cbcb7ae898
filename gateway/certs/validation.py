"""Checks a certificate bundle must pass before any connection uses it; pure, the time is passed in."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from gateway.certs.bundle import CertificateBundle
from gateway.certs.errors import (
    CertificateChainError,
    CertificateExpiredError,
    CertificateFormatError,
    CertificateKeyMismatchError,
    CertificateNameError,
    CertificateNotYetValidError,
)

_MAX_CHAIN_DEPTH = 8


def validate_bundle(
    bundle: CertificateBundle,
    *,
    now: float,
    trusted: Sequence[x509.Certificate] = (),
    expected_name: str | None = None,
    require_key: bool = True,
) -> None:
    """Raise the CertificateValidationError that names the first problem, or return quietly.

    ``trusted`` empty skips the chain check (the peer's trust store decides); ``expected_name``
    None skips the SAN check.
    """
    check_validity(bundle.name, bundle.certificate, now)
    if require_key:
        check_key(bundle)
    if trusted:
        check_chain(bundle, trusted, now)
    if expected_name is not None:
        check_name(bundle.name, bundle.certificate, expected_name)


def check_validity(name: str, certificate: x509.Certificate, now: float) -> None:
    start = certificate.not_valid_before_utc
    end = certificate.not_valid_after_utc
    moment = datetime.fromtimestamp(now, UTC)
    if moment < start:
        raise CertificateNotYetValidError(f"certificate {name!r} is not valid before {start.isoformat()}")
    if moment >= end:
        raise CertificateExpiredError(f"certificate {name!r} expired at {end.isoformat()}")


def check_key(bundle: CertificateBundle) -> None:
    if bundle.private_key is None:
        raise CertificateFormatError(f"certificate {bundle.name!r} has no private key")
    if _public_der(bundle.private_key.public_key()) != _public_der(bundle.certificate.public_key()):
        raise CertificateKeyMismatchError(
            f"certificate {bundle.name!r}: the private key does not match the certificate's public key"
        )


def _public_der(key: object) -> bytes:
    public_bytes = getattr(key, "public_bytes", None)
    if public_bytes is None:
        return b""
    der: bytes = public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return der


def check_chain(bundle: CertificateBundle, trusted: Sequence[x509.Certificate], now: float) -> None:
    """Walk leaf → intermediates → a trusted CA, checking each signature and each issuer's validity."""
    current = bundle.certificate
    pool = list(bundle.chain)
    for _ in range(_MAX_CHAIN_DEPTH):
        if current in trusted:
            return
        anchor = _issuer_in(current, trusted)
        if anchor is not None:
            check_validity(f"{bundle.name} CA {anchor.subject.rfc4514_string()}", anchor, now)
            return
        issuer = _issuer_in(current, pool)
        if issuer is None:
            break
        check_validity(f"{bundle.name} intermediate {issuer.subject.rfc4514_string()}", issuer, now)
        pool.remove(issuer)
        current = issuer
    raise CertificateChainError(
        f"certificate {bundle.name!r} ({bundle.subject}) is not issued by the configured CA "
        f"(issuer {current.issuer.rfc4514_string()!r}; trusted: "
        f"{', '.join(repr(t.subject.rfc4514_string()) for t in trusted)})"
    )


def _issuer_in(certificate: x509.Certificate, candidates: Sequence[x509.Certificate]) -> x509.Certificate | None:
    for candidate in candidates:
        try:
            certificate.verify_directly_issued_by(candidate)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return candidate
    return None


def check_name(name: str, certificate: x509.Certificate, expected: str) -> None:
    if not names_match(certificate, expected):
        raise CertificateNameError(f"certificate {name!r}: no subject alternative name covers {expected!r}")


def names_match(certificate: x509.Certificate, expected: str) -> bool:
    """RFC 6125 matching: exact DNS name, a left-most ``*`` label, or an exact IP address."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    try:
        address = ipaddress.ip_address(expected)
    except ValueError:
        return any(_dns_match(pattern, expected) for pattern in san.get_values_for_type(x509.DNSName))
    return address in san.get_values_for_type(x509.IPAddress)


def _dns_match(pattern: str, host: str) -> bool:
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if not pattern.startswith("*."):
        return pattern == host
    label, _, rest = host.partition(".")
    return bool(label) and rest == pattern[2:]
