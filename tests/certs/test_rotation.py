"""Rotation under load: steady mTLS traffic while the client certificate rotates in Key Vault.

Every request takes ``provider.context_for(...)`` at the moment it starts, like the egress sender
does; pooled connections keep the context they were opened with. Nothing may fail.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from gateway.certs.devca import DevCertificateAuthority
from gateway.certs.keyvault import PEM_CONTENT_TYPE, PKCS12_CONTENT_TYPE, KeyVault, KeyVaultSource
from gateway.certs.manager import CertificateManager, ManagedCertificate
from gateway.certs.provider import UpstreamTlsContexts
from gateway.events import CertificateRenewed, RecordingObserver
from gateway.testing import FakeClock
from gateway.tls import TlsSettings
from tests.certs.fakevault import FakeKeyVault
from tests.fixtures.certs import StartTlsUpstream, TlsUpstream

POLL = 30.0
WORKERS = 8


class Traffic:
    """``WORKERS`` loops of requests (every fourth one slow, so some are in flight across a swap)."""

    def __init__(self, provider: UpstreamTlsContexts, upstream: TlsUpstream, *, slow_every: int = 4) -> None:
        self.provider, self.upstream, self.slow_every = provider, upstream, slow_every
        self.ok = 0
        self.failures: list[BaseException] = []
        self.stopping = False

    async def worker(self, session: aiohttp.ClientSession, n: int) -> None:
        i = 0
        while not self.stopping:
            i += 1
            delay = 150 if self.slow_every and (n + i) % self.slow_every == 0 else 0
            try:
                context = self.provider.context_for("partner-api")
                assert context is not None
                async with session.get(f"{self.upstream.url}/?delay_ms={delay}", ssl=context) as response:
                    response.raise_for_status()
                    await response.read()
                self.ok += 1
            except (aiohttp.ClientError, OSError) as exc:
                self.failures.append(exc)


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
    tls = {"partner-api": TlsSettings(ca_file=str(ca_file), client_certificate="partner")}

    async with KeyVault(fake_vault.settings()) as vault:
        entry = ManagedCertificate("partner", KeyVaultSource(vault, "partner"), (dev_ca.certificate,))
        async with CertificateManager([entry], clock=clock, observer=observer, poll_interval=POLL) as manager:
            provider = UpstreamTlsContexts(manager, tls)
            await provider.prepare()
            traffic = Traffic(provider, upstream)
            async with aiohttp.ClientSession() as session:
                workers = [asyncio.create_task(traffic.worker(session, n)) for n in range(WORKERS)]
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
