"""Parsing certificates and keys from PEM and PKCS#12, and the files source that watches them."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from gateway.certs.bundle import parse_pem, parse_pkcs12
from gateway.certs.devca import DevCertificateAuthority
from gateway.certs.errors import CertificateFormatError, CertificateSourceError
from gateway.certs.files import CertificateFiles, FileSource

NOW = time.time()


def test_pem_with_key_and_chain_in_any_order(dev_ca: DevCertificateAuthority) -> None:
    issued = dev_ca.issue("api", ["api.example", "10.1.2.3"], now=NOW)
    data = issued.chain_pem() + dev_ca.ca_pem + issued.key_pem()
    bundle = parse_pem("api", "file", "v1", data)
    assert bundle.certificate == issued.certificate
    assert bundle.chain == (dev_ca.certificate,)
    assert bundle.sans == ("api.example", "10.1.2.3")
    assert bundle.common_name == "api"
    assert bundle.private_key is not None


def test_encrypted_pem_key_needs_its_password(dev_ca: DevCertificateAuthority) -> None:
    issued = dev_ca.issue("api", ["api"], now=NOW)
    data = issued.chain_pem() + issued.key_pem(b"s3cret")
    assert parse_pem("api", "file", "v1", data, b"s3cret").private_key is not None
    with pytest.raises(CertificateFormatError, match="unreadable private key"):
        parse_pem("api", "file", "v1", data)


def test_pkcs12_round_trip(dev_ca: DevCertificateAuthority) -> None:
    issued = dev_ca.issue("api", ["api"], now=NOW)
    data = pkcs12.serialize_key_and_certificates(
        b"api",
        issued.private_key,  # type: ignore[arg-type]  # an EC key, which PKCS#12 takes
        issued.certificate,
        [dev_ca.certificate],
        serialization.BestAvailableEncryption(b"pw"),
    )
    bundle = parse_pkcs12("api", "file", "v1", data, b"pw")
    assert bundle.certificate == issued.certificate
    assert bundle.chain == (dev_ca.certificate,)
    with pytest.raises(CertificateFormatError, match="unreadable PKCS#12"):
        parse_pkcs12("api", "file", "v1", data, b"wrong")


@pytest.mark.parametrize(
    "data", [b"", b"hello", b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"]
)
def test_garbage_is_a_format_error(data: bytes) -> None:
    with pytest.raises(CertificateFormatError, match="certificate 'x'"):
        parse_pem("x", "file", "v1", data)


async def test_file_source_notices_replacement(dev_ca: DevCertificateAuthority, tmp_path: Path) -> None:
    cert, key = tmp_path / "api.pem", tmp_path / "api-key.pem"
    first = dev_ca.issue("api", ["api"], now=NOW)
    cert.write_bytes(first.chain_pem())
    key.write_bytes(first.key_pem())
    source = FileSource("api", CertificateFiles(cert=cert, key=key))

    loaded = await source.load(None)
    assert loaded is not None
    assert loaded.certificate == first.certificate
    assert await source.load(loaded.version) is None

    second = dev_ca.issue("api", ["api"], now=NOW)
    cert.write_bytes(second.chain_pem())
    key.write_bytes(second.key_pem())
    os.utime(cert, ns=(1, 1))  # a distinct mtime even on coarse-timestamp filesystems
    renewed = await source.load(loaded.version)
    assert renewed is not None
    assert renewed.certificate == second.certificate
    assert renewed.version != loaded.version


async def test_file_source_reads_pkcs12(dev_ca: DevCertificateAuthority, tmp_path: Path) -> None:
    issued = dev_ca.issue("api", ["api"], now=NOW)
    path = tmp_path / "api.p12"
    path.write_bytes(
        pkcs12.serialize_key_and_certificates(
            None,
            issued.private_key,  # type: ignore[arg-type]  # an EC key, which PKCS#12 takes
            issued.certificate,
            None,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    bundle = await FileSource("api", CertificateFiles(pkcs12=path, password=b"pw")).load(None)
    assert bundle is not None
    assert bundle.certificate == issued.certificate


async def test_missing_file_is_a_source_error(tmp_path: Path) -> None:
    source = FileSource("api", CertificateFiles(cert=tmp_path / "nope.pem"))
    with pytest.raises(CertificateSourceError, match=r"nope\.pem"):
        await source.load(None)
