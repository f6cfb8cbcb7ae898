"""TLS through the whole gateway: mTLS with a managed client certificate, TLS 1.3 by default."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from gateway.certs.devca import DevCertificateAuthority, write_leaf
from tests.fixtures.certs import StartTlsUpstream
from tests.integration.harness import StackFactory

pytestmark = pytest.mark.parametrize("broker", ["rabbitmq"], indirect=True)  # TLS is broker-independent


async def test_mtls_upstream_through_the_bus(
    make_stack: StackFactory, start_tls_upstream: StartTlsUpstream, dev_ca: DevCertificateAuthority, tmp_path: Path
) -> None:
    upstream = await start_tls_upstream(client_ca=dev_ca.ca_pem)
    old_tls = await start_tls_upstream(max_version="1.2")
    client = dev_ca.issue("partner", ("cmn-gateway",), now=time.time())
    cert, key = write_leaf(tmp_path / "certs", client)
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(dev_ca.ca_pem)
    trust = {"ca_file": str(ca_file)}
    single_try = {"retry": {"attempts": 1}}
    stack = await make_stack(
        {
            "partner": {"endpoints": [upstream.url], "tls": {**trust, "client_certificate": "partner"}},
            "anonymous": {"endpoints": [upstream.url], "tls": trust, **single_try},
            "legacy": {"endpoints": [old_tls.url], "tls": trust, **single_try},
        },
        certificates={"items": {"partner": {"source": "file", "cert": str(cert), "key": str(key)}}},
    )
    ok = await stack.client.request("partner", "GET", "/mtls")
    assert ok.status == 200 and ok.error is None
    # The upstream's JSON holds the certificate's serial, an integer of about 160 bits: a JSON parser
    # would make it a float, so the reply carries the exact text in `body` instead of `json`.
    assert ok.json_ is None and isinstance(ok.body, str)
    answer = json.loads(ok.body)
    assert answer["tls"] == "TLSv1.3"
    assert answer["client_serial"] == client.certificate.serial_number  # every digit survived
    assert upstream.client_serials == [client.certificate.serial_number]  # our managed client certificate

    refused = await stack.client.request("anonymous", "GET", "/mtls")
    assert refused.status is None and refused.error is not None
    assert refused.error.code == "upstream_unavailable"

    too_old = await stack.client.request("legacy", "GET", "/")
    assert too_old.error is not None and too_old.error.code == "upstream_unavailable"
    assert old_tls.versions == []  # the TLS 1.2 handshake never completed


async def test_upstream_without_tls_settings_still_requires_tls13(
    make_stack: StackFactory, start_tls_upstream: StartTlsUpstream
) -> None:
    """No tls block and no certificate manager: the default is TLS 1.3 minimum with verification."""
    legacy = await start_tls_upstream(max_version="1.2")
    stack = await make_stack({"legacy": {"endpoints": [legacy.url], "retry": {"attempts": 1}}})
    reply = await stack.client.request("legacy", "GET", "/")
    assert reply.error is not None and reply.error.code == "upstream_unavailable"
    assert legacy.versions == []
