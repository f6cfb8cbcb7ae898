"""Each way a certificate can be unfit gives its own error class and a message naming the cause."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.certs.bundle import CertificateBundle
from gateway.certs.devca import DAY, DevCertificateAuthority
from gateway.certs.errors import (
    CertificateChainError,
    CertificateExpiredError,
    CertificateFormatError,
    CertificateKeyMismatchError,
    CertificateNameError,
    CertificateNotYetValidError,
    CertificateValidationError,
)
from gateway.certs.validation import names_match, validate_bundle
from gateway.errors import CertificateError

NOW = time.time()


def test_a_good_certificate_passes_every_check(dev_ca: DevCertificateAuthority) -> None:
    bundle = dev_ca.issue("api", ["api.example.com", "127.0.0.1"], now=NOW)
    validate_bundle(bundle, now=NOW, trusted=[dev_ca.certificate], expected_name="api.example.com")
    validate_bundle(bundle, now=NOW, trusted=[dev_ca.certificate], expected_name="127.0.0.1")


def test_expired(dev_ca: DevCertificateAuthority) -> None:
    bundle = dev_ca.issue("old", ["old.example"], now=NOW, not_before=NOW - 10 * DAY, days=5)
    with pytest.raises(CertificateExpiredError, match=r"certificate 'old' expired at 20"):
        validate_bundle(bundle, now=NOW)


def test_not_yet_valid(dev_ca: DevCertificateAuthority) -> None:
    bundle = dev_ca.issue("early", ["early.example"], now=NOW, not_before=NOW + DAY)
    with pytest.raises(CertificateNotYetValidError, match=r"certificate 'early' is not valid before 20"):
        validate_bundle(bundle, now=NOW)


def test_expiry_is_judged_by_the_time_passed_in(dev_ca: DevCertificateAuthority) -> None:
    bundle = dev_ca.issue("api", ["api"], now=NOW, days=1)
    validate_bundle(bundle, now=NOW + DAY - 400)
    with pytest.raises(CertificateExpiredError):
        validate_bundle(bundle, now=NOW + DAY)


def test_wrong_key(dev_ca: DevCertificateAuthority) -> None:
    bundle = dev_ca.issue("api", ["api"], now=NOW)
    other_key = dev_ca.issue("other", ["other"], now=NOW).private_key
    with pytest.raises(CertificateKeyMismatchError, match="private key does not match"):
        validate_bundle(dataclasses.replace(bundle, private_key=other_key), now=NOW)


def test_missing_key_is_refused_for_client_use_but_fine_for_trust_only(
    dev_ca: DevCertificateAuthority,
) -> None:
    bundle = dataclasses.replace(dev_ca.issue("api", ["api"], now=NOW), private_key=None)
    with pytest.raises(CertificateFormatError, match="no private key"):
        validate_bundle(bundle, now=NOW)
    validate_bundle(bundle, now=NOW, require_key=False)


def test_wrong_ca(dev_ca: DevCertificateAuthority) -> None:
    stranger = DevCertificateAuthority.create(now=NOW, common_name="Someone Else CA")
    bundle = stranger.issue("api", ["api"], now=NOW)
    with pytest.raises(CertificateChainError, match=r"'api'.*not issued by the configured CA.*Someone Else CA"):
        validate_bundle(bundle, now=NOW, trusted=[dev_ca.certificate])


def test_same_name_different_key_ca_is_still_the_wrong_ca(dev_ca: DevCertificateAuthority) -> None:
    impostor = DevCertificateAuthority.create(now=NOW)  # same subject as dev_ca, other key
    with pytest.raises(CertificateChainError):
        validate_bundle(impostor.issue("api", ["api"], now=NOW), now=NOW, trusted=[dev_ca.certificate])


def test_san_mismatch(dev_ca: DevCertificateAuthority) -> None:
    bundle = dev_ca.issue("api", ["api.example.com"], now=NOW)
    with pytest.raises(CertificateNameError, match=r"no subject alternative name covers 'billing\.example\.com'"):
        validate_bundle(bundle, now=NOW, expected_name="billing.example.com")


def test_every_failure_is_a_certificate_error() -> None:
    for cls in (CertificateExpiredError, CertificateNotYetValidError, CertificateKeyMismatchError):
        assert issubclass(cls, CertificateValidationError)
    assert issubclass(CertificateValidationError, CertificateError)
    assert CertificateChainError("x").code == "upstream_unavailable"


@pytest.mark.parametrize(
    ("pattern", "host", "matches"),
    [
        ("api.example.com", "API.example.com.", True),
        ("*.example.com", "api.example.com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "a.b.example.com", False),
        ("api.example.com", "api.example.org", False),
    ],
)
def test_dns_matching(dev_ca: DevCertificateAuthority, pattern: str, host: str, matches: bool) -> None:
    assert names_match(dev_ca.issue("x", [pattern], now=NOW).certificate, host) is matches


def test_ip_matching_is_exact(dev_ca: DevCertificateAuthority) -> None:
    cert = dev_ca.issue("x", ["10.0.0.1", "::1"], now=NOW).certificate
    assert names_match(cert, "10.0.0.1")
    assert names_match(cert, "0:0::1")
    assert not names_match(cert, "10.0.0.2")


def _intermediate(
    root: DevCertificateAuthority, *, expired: bool = False
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    start = datetime.fromtimestamp(NOW, UTC) - timedelta(days=30)
    end = start + timedelta(days=1 if expired else 365)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CMN Issuing CA")]))
        .issuer_name(root.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(root.key, hashes.SHA256())
    )
    return cert, key


def _leaf_under(issuer: x509.Certificate, issuer_key: ec.EllipticCurvePrivateKey) -> CertificateBundle:
    key = ec.generate_private_key(ec.SECP256R1())
    start = datetime.fromtimestamp(NOW, UTC) - timedelta(hours=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "leaf")]))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=30))
        .sign(issuer_key, hashes.SHA256())
    )
    return CertificateBundle("leaf", "test", "1", cert, (issuer,), key)


def test_chain_through_an_intermediate(dev_ca: DevCertificateAuthority) -> None:
    intermediate, key = _intermediate(dev_ca)
    bundle = _leaf_under(intermediate, key)
    validate_bundle(bundle, now=NOW, trusted=[dev_ca.certificate])
    with pytest.raises(CertificateChainError):
        validate_bundle(dataclasses.replace(bundle, chain=()), now=NOW, trusted=[dev_ca.certificate])


def test_an_expired_intermediate_breaks_the_chain(dev_ca: DevCertificateAuthority) -> None:
    intermediate, key = _intermediate(dev_ca, expired=True)
    with pytest.raises(CertificateExpiredError, match="intermediate CN=CMN Issuing CA"):
        validate_bundle(_leaf_under(intermediate, key), now=NOW, trusted=[dev_ca.certificate])
