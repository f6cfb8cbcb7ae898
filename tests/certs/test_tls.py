"""Real TLS handshakes against local aiohttp upstreams with the contexts gateway.tls.client_context builds."""

from __future__ import annotations

import ssl
import time
from pathlib import Path

import aiohttp
import pytest

from gateway.certs.devca import DevCertificateAuthority
from gateway.certs.tls import load_ca_file
from gateway.errors import CertificateError
from gateway.tls import TlsSettings, client_context
from tests.fixtures.certs import StartTlsUpstream

NOW = time.time()


async def _get(url: str, context: ssl.SSLContext) -> dict[str, object]:
    async with aiohttp.ClientSession() as session, session.get(url, ssl=context) as response:
        response.raise_for_status()
        body: dict[str, object] = await response.json()
        return body


async def test_tls13_is_negotiated_by_default(
    start_tls_upstream: StartTlsUpstream, dev_ca: DevCertificateAuthority
) -> None:
    upstream = await start_tls_upstream()
    context = client_context(ca_pem=dev_ca.ca_pem)
    assert context.minimum_version is ssl.TLSVersion.TLSv1_3
    assert (await _get(upstream.url, context))["tls"] == "TLSv1.3"


async def test_tls12_only_upstream_is_refused_unless_configured(
    start_tls_upstream: StartTlsUpstream, dev_ca: DevCertificateAuthority
) -> None:
    upstream = await start_tls_upstream(max_version="1.2")
    with pytest.raises(aiohttp.ClientConnectorError) as caught:
        await _get(upstream.url, client_context(ca_pem=dev_ca.ca_pem))
    # The server answers a 1.3-only hello with a protocol_version alert and closes; which of the two
    # the client reports first depends on timing.
    assert isinstance(caught.value.os_error, ssl.SSLError | ConnectionResetError)
    assert upstream.versions == []

    body = await _get(upstream.url, client_context(TlsSettings(min_version="1.2"), ca_pem=dev_ca.ca_pem))
    assert body["tls"] == "TLSv1.2"


async def test_mtls_accepts_the_right_client_certificate(
    start_tls_upstream: StartTlsUpstream, dev_ca: DevCertificateAuthority
) -> None:
    upstream = await start_tls_upstream(client_ca=dev_ca.ca_pem)
    client = dev_ca.issue("partner-client", ["partner-client"], now=NOW)
    body = await _get(upstream.url, client_context(certificate=client, ca_pem=dev_ca.ca_pem))
    assert body["client_serial"] == client.certificate.serial_number


async def test_mtls_rejects_a_missing_client_certificate(
    start_tls_upstream: StartTlsUpstream, dev_ca: DevCertificateAuthority
) -> None:
    upstream = await start_tls_upstream(client_ca=dev_ca.ca_pem)
    with pytest.raises(aiohttp.ClientError):
        await _get(upstream.url, client_context(ca_pem=dev_ca.ca_pem))
    assert upstream.client_serials == []


async def test_mtls_rejects_a_client_certificate_from_another_ca(
    start_tls_upstream: StartTlsUpstream, dev_ca: DevCertificateAuthority
) -> None:
    upstream = await start_tls_upstream(client_ca=dev_ca.ca_pem)
    stranger = DevCertificateAuthority.create(now=NOW, common_name="Stranger CA")
    wrong = stranger.issue("partner-client", ["partner-client"], now=NOW)
    with pytest.raises(aiohttp.ClientError):
        await _get(upstream.url, client_context(certificate=wrong, ca_pem=dev_ca.ca_pem))
    assert upstream.client_serials == []


async def test_hostname_is_verified_unless_turned_off(
    start_tls_upstream: StartTlsUpstream, dev_ca: DevCertificateAuthority
) -> None:
    upstream = await start_tls_upstream(sans=("other.example",))
    with pytest.raises(aiohttp.ClientConnectorCertificateError, match=r"(?i)hostname|IP address mismatch"):
        await _get(upstream.url, client_context(ca_pem=dev_ca.ca_pem))
    body = await _get(upstream.url, client_context(TlsSettings(verify_hostname=False), ca_pem=dev_ca.ca_pem))
    assert body["tls"] == "TLSv1.3"


async def test_custom_ca_bundle_file_is_the_only_trust(
    start_tls_upstream: StartTlsUpstream, dev_ca: DevCertificateAuthority, tmp_path: Path
) -> None:
    upstream = await start_tls_upstream()
    other = tmp_path / "other-ca.pem"
    other.write_bytes(DevCertificateAuthority.create(now=NOW).ca_pem)
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await _get(upstream.url, client_context(TlsSettings(ca_file=str(other))))
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await _get(upstream.url, client_context())  # the system store does not know the dev CA
    mine = tmp_path / "ca.pem"
    mine.write_bytes(other.read_bytes() + dev_ca.ca_pem)
    assert len(load_ca_file(mine)) == 2
    assert (await _get(upstream.url, client_context(TlsSettings(ca_file=str(mine)))))["tls"] == "TLSv1.3"


def test_unreadable_ca_bundle_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match="cannot load CA bundle"):
        client_context(TlsSettings(ca_file=str(tmp_path / "missing.pem")))
