"""Rotation under load: steady mTLS traffic through the gateway's own forwarder while the client
certificate rotates in Key Vault.

The forwarder is built as the gateway builds it (``build_forwarder`` with the certificate provider and
the upstreams file's ``tls:`` block); its pool asks the provider for a context on every request, so
new connections present the new certificate while pooled ones keep theirs. Nothing may fail.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from gateway.certs.devca import DevCertificateAuthority
from gateway.certs.keyvault import PEM_CONTENT_TYPE, PKCS12_CONTENT_TYPE, KeyVault, KeyVaultSource
from gateway.certs.manager import CertificateManager, ManagedCertificate
from gateway.certs.provider import UpstreamTlsContexts
from gateway.clock import SystemClock
from gateway.errors import GatewayError
from gateway.events import CertificateRenewed, RecordingObserver
from gateway.testing import FakeClock
from gateway.upstream.base import UpstreamResponse
from gateway.upstream.config import UpstreamDefaults, UpstreamsFile
from gateway.upstream.forward import GatewayForwarder, build_forwarder
from gateway.upstream.policies import tls_by_upstream
from tests.certs.fakevault import FakeKeyVault
from tests.fixtures.certs import StartTlsUpstream
from tests.upstream.helpers import outbound, upstreams

POLL = 30.0
WORKERS = 8


class Traffic:
    """``WORKERS`` loops of requests (every fourth one slow, so some are in flight across a swap)."""

    def __init__(self, forwarder: GatewayForwarder, *, slow_every: int = 4) -> None:
        self.forwarder, self.slow_every = forwarder, slow_every
        self.ok = 0
        self.failures: list[UpstreamResponse | GatewayError] = []
        self.stopping = False

    async def worker(self, n: int) -> None:
        i = 0
        while not self.stopping:
            i += 1
            delay = 150 if self.slow_every and (n + i) % self.slow_every == 0 else 0
            try:
                response = await self.forwarder.forward(outbound("partner-api", path=f"/?delay_ms={delay}"))
            except GatewayError as exc:
                self.failures.append(exc)
                continue
            if response.status == 200:
                self.ok += 1
            else:
                self.failures.append(response)


def partner_api(url: str, ca_file: Path) -> UpstreamsFile:
    # One attempt: a handshake the rotation broke must show up as a failure, not hide behind a retry.
    tls = {"ca_file": str(ca_file), "client_certificate": "partner"}
    return upstreams(**{"partner-api": {"endpoints": [url], "tls": tls, "retry": {"attempts": 1}}})


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in 20 s")


async def test_rotation_under_load_fails_no_request(
    fake_vault: FakeKeyVault,
    dev_ca: DevCertificateAuthority,
    start_tls_upstream: StartTlsUpstream,
    tmp_path: Path,
) -> None:
    clock = FakeClock(wall_start=time.time())
    first = dev_ca.issue("partner", ["partner-client"], now=clock.time())
    serials = [first.certificate.serial_number]
    fake_vault.put("partner", first)
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(dev_ca.ca_pem)
    upstream = await start_tls_upstream(client_ca=dev_ca.ca_pem)
    observer = RecordingObserver()
    config = partner_api(upstream.url, ca_file)

    async with KeyVault(fake_vault.settings()) as vault:
        entry = ManagedCertificate("partner", KeyVaultSource(vault, "partner"), (dev_ca.certificate,))
        async with CertificateManager([entry], clock=clock, observer=observer, poll_interval=POLL) as manager:
            provider = UpstreamTlsContexts(manager, tls_by_upstream(config))
            await provider.prepare()
            defaults = UpstreamDefaults(pool_size=WORKERS, request_timeout=5.0, connect_timeout=2.0)
            forwarder = build_forwarder(
                config, defaults, clock=SystemClock(), observer=RecordingObserver(), tls=provider
            )
            traffic = Traffic(forwarder)
            async with forwarder:
                workers = [asyncio.create_task(traffic.worker(n)) for n in range(WORKERS)]
                for step, content_type in enumerate((PKCS12_CONTENT_TYPE, PEM_CONTENT_TYPE), start=1):
                    await _until(lambda: traffic.ok >= 100 * step)  # noqa: B023 - used before the loop moves on
                    bundle = dev_ca.issue("partner", ["partner-client"], now=clock.time())
                    serials.append(bundle.certificate.serial_number)
                    fake_vault.put("partner", bundle, content_type=content_type)
                    await _until(lambda: clock.sleepers == 1)
                    clock.advance(POLL)
                    await _until(lambda: len(observer.events) == step)  # noqa: B023
                    await _until(lambda: upstream.client_serials[-1] == serials[-1])
                await _until(lambda: upstream.client_serials[-20:] == [serials[-1]] * 20)
                traffic.stopping = True
                await asyncio.gather(*workers)

    assert traffic.failures == []
    assert all(isinstance(e, CertificateRenewed) for e in observer.events)
    assert set(upstream.client_serials) == set(serials)
    renewed = [e.version for e in observer.events if isinstance(e, CertificateRenewed)]
    assert renewed == [v.version for v in fake_vault.versions["partner"][1:]]
    assert traffic.ok == len(upstream.client_serials) >= 200
