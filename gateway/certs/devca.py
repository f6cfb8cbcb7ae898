"""A local development CA that issues leaf certificates, cached on disk. Never used unless configured."""

from __future__ import annotations

import asyncio
import ipaddress
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.certs.bundle import CertificateBundle, content_version, parse_pem, with_key
from gateway.certs.errors import CertificateError
from gateway.certs.validation import check_validity
from gateway.clock import Clock

DAY = 86400.0
_SKEW = 300.0  # back-date not_before a little so a peer with a slow clock accepts the certificate
CA_FILE, CA_KEY_FILE = "ca.pem", "ca-key.pem"


def _when(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "CMN development"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _general_name(san: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(san))
    except ValueError:
        return x509.DNSName(san)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


class DevCertificateAuthority:
    """Signs development leaf certificates (server and client use) with an EC P-256 key."""

    def __init__(self, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.certificate = certificate
        self._key = key

    @classmethod
    def create(
        cls, *, now: float, common_name: str = "CMN Development CA", days: float = 3650
    ) -> DevCertificateAuthority:
        key = _new_key()
        public = key.public_key()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(_when(now - _SKEW))
            .not_valid_after(_when(now + days * DAY))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(certificate, key)

    @classmethod
    def load_or_create(cls, directory: Path, *, now: float) -> DevCertificateAuthority:
        """The CA cached in ``directory`` (``ca.pem`` + ``ca-key.pem``), created on first use."""
        cert_path, key_path = directory / CA_FILE, directory / CA_KEY_FILE
        if cert_path.exists() and key_path.exists():
            bundle = with_key(parse_pem("dev-ca", "dev", "ca", cert_path.read_bytes()), key_path.read_bytes())
            check_validity("dev-ca", bundle.certificate, now)
            if not isinstance(bundle.private_key, ec.EllipticCurvePrivateKey):
                raise CertificateError(f"{key_path} is not an EC key written by `cmn certs dev`")
            return cls(bundle.certificate, bundle.private_key)
        authority = cls.create(now=now)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        cert_path.write_bytes(authority.ca_pem)
        _write_private(key_path, authority.key_pem())
        return authority

    @property
    def key(self) -> ec.EllipticCurvePrivateKey:
        """The signing key (a development CA's key is no secret worth hiding from its own tests)."""
        return self._key

    @property
    def ca_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def issue(
        self,
        name: str,
        sans: Sequence[str],
        *,
        now: float,
        days: float = 90,
        not_before: float | None = None,
        common_name: str | None = None,
    ) -> CertificateBundle:
        """A leaf for ``name`` valid from ``not_before`` (default: now) for ``days``."""
        key = _new_key()
        start = now - _SKEW if not_before is None else not_before
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name or name))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_when(start))
            .not_valid_after(_when(start + days * DAY))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_leaf_key_usage(), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
        )
        if sans:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_general_name(s) for s in sans]), critical=False
            )
        certificate = builder.sign(self._key, hashes.SHA256())
        version = content_version(certificate.public_bytes(serialization.Encoding.DER))
        return CertificateBundle(name, "dev", version, certificate, (), key)

    def __repr__(self) -> str:
        return f"<DevCertificateAuthority {self.certificate.subject.rfc4514_string()!r}>"


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(False, False, False, False, False, True, True, False, False)


def _leaf_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(True, False, False, False, False, False, False, False, False)


def leaf_paths(directory: Path, name: str) -> tuple[Path, Path]:
    return directory / f"{name}.pem", directory / f"{name}-key.pem"


def write_leaf(directory: Path, bundle: CertificateBundle) -> tuple[Path, Path]:
    cert_path, key_path = leaf_paths(directory, bundle.name)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write_private(key_path, bundle.key_pem())
    cert_path.write_bytes(bundle.chain_pem())
    return cert_path, key_path


def read_leaf(directory: Path, name: str) -> CertificateBundle | None:
    cert_path, key_path = leaf_paths(directory, name)
    if not (cert_path.exists() and key_path.exists()):
        return None
    cert_pem = cert_path.read_bytes()
    version = content_version(parse_pem(name, "dev", "", cert_pem).certificate.public_bytes(serialization.Encoding.DER))
    return with_key(parse_pem(name, "dev", version, cert_pem), key_path.read_bytes())


def issue_cached(
    authority: DevCertificateAuthority,
    directory: Path,
    name: str,
    sans: Sequence[str],
    *,
    now: float,
    renew_before: float,
    days: float = 90,
) -> CertificateBundle:
    """The cached leaf if it has the SANs and over ``renew_before`` seconds left; else a new one."""
    cached = read_leaf(directory, name)
    if cached is not None and cached.not_after - now > renew_before and set(cached.sans) == set(sans):
        return cached
    bundle = authority.issue(name, sans, now=now, days=days)
    write_leaf(directory, bundle)
    return bundle


class DevSource:
    """One development certificate: issued by the local CA, cached under ``directory``, re-issued when due."""

    kind = "dev"

    def __init__(
        self,
        name: str,
        sans: Sequence[str],
        directory: Path,
        clock: Clock,
        *,
        days: float = 90,
        renew_before: float = 14 * DAY,
    ) -> None:
        self._name, self._sans, self._dir = name, tuple(sans), directory
        self._clock, self._days, self._renew_before = clock, days, renew_before

    async def load(self, known_version: str | None, *, renew: bool = False) -> CertificateBundle | None:
        bundle = await asyncio.to_thread(self._load, renew)
        return None if bundle.version == known_version else bundle

    def _load(self, renew: bool) -> CertificateBundle:
        now = self._clock.time()
        authority = DevCertificateAuthority.load_or_create(self._dir, now=now)
        # Forcing renewal = asking for more remaining life than any leaf can have.
        window = self._days * DAY + _SKEW if renew else self._renew_before
        return issue_cached(authority, self._dir, self._name, self._sans, now=now, renew_before=window, days=self._days)

    def __repr__(self) -> str:
        return f"<DevSource {self._name} {list(self._sans)} in {self._dir}>"
