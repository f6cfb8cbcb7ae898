"""Certificate rotation under load, side by side: mTLS throughput with and without rotations.

    .venv/bin/pytest tests/performance/benchmark_certs.py -m benchmark -s

CONCURRENCY loops send requests to a loopback mTLS upstream, each taking the provider's current
context as it starts. "steady" runs WINDOW seconds with no rotation; "rotating" publishes a new
version to the fake Key Vault and drives a poll every ROTATE_EVERY seconds (each new context opens
new connections, so it costs handshakes). Trials alternate; medians are compared, never asserted.
Failed requests are counted and must be zero. Also printed: context build time and the cost of a
no-change Key Vault poll.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import aiohttp
import pytest

from gateway.certs.bundle import CertificateBundle
from gateway.certs.devca import DevCertificateAuthority
from gateway.certs.keyvault import KeyVault, KeyVaultSource
from gateway.certs.manager import CertificateManager, ManagedCertificate
from gateway.certs.provider import UpstreamTlsContexts
from gateway.events import RecordingObserver
from gateway.testing import FakeClock
from gateway.tls import TlsSettings, client_context
from tests.certs.fakevault import FakeKeyVault
from tests.fixtures.certs import StartTlsUpstream, TlsUpstream

CONCURRENCY = 32
WINDOW = 2.0
ROTATE_EVERY = 0.25
TRIALS = 3


class Traffic:
    """Request loops on one aiohttp session, each request with the provider's context of the moment
    (what the gateway's pool does per request); tests/certs/test_rotation.py drives the pool itself."""

    def __init__(self, provider: UpstreamTlsContexts, upstream: TlsUpstream) -> None:
        self.provider, self.upstream = provider, upstream
        self.ok = 0
        self.failures: list[BaseException] = []
        self.stopping = False

    async def worker(self, session: aiohttp.ClientSession, n: int) -> None:
        while not self.stopping:
            try:
                context = self.provider.context_for("partner-api")
                assert context is not None
                async with session.get(f"{self.upstream.url}/?delay_ms=0", ssl=context) as response:
                    response.raise_for_status()
                    await response.read()
                self.ok += 1
            except (aiohttp.ClientError, OSError) as exc:
                self.failures.append(exc)


async def _window(
    traffic: Traffic,
    rotate: bool,
    vault: FakeKeyVault,
    ca: DevCertificateAuthority,
    manager: CertificateManager,
    clock: FakeClock,
) -> tuple[float, int]:
    start_ok, started = traffic.ok, time.perf_counter()
    rotations = 0
    while time.perf_counter() - started < WINDOW:
        await asyncio.sleep(ROTATE_EVERY)
        if rotate:
            vault.put("partner", ca.issue("partner", ["partner-client"], now=clock.time()))
            rotations += await manager.refresh("partner")
    return (traffic.ok - start_ok) / (time.perf_counter() - started), rotations


@pytest.mark.benchmark
async def test_rotation_throughput(
    fake_vault: FakeKeyVault, dev_ca: DevCertificateAuthority, start_tls_upstream: StartTlsUpstream, tmp_path: Path
) -> None:
    clock = FakeClock(wall_start=time.time())
    fake_vault.put("partner", dev_ca.issue("partner", ["partner-client"], now=clock.time()))
    (tmp_path / "ca.pem").write_bytes(dev_ca.ca_pem)
    upstream = await start_tls_upstream(client_ca=dev_ca.ca_pem)
    tls = {"partner-api": TlsSettings(ca_file=str(tmp_path / "ca.pem"), client_certificate="partner")}
    results: dict[bool, list[float]] = {False: [], True: []}
    rotations = 0
    async with KeyVault(fake_vault.settings()) as vault:
        entry = ManagedCertificate("partner", KeyVaultSource(vault, "partner"), (dev_ca.certificate,))
        manager = CertificateManager([entry], clock=clock, observer=RecordingObserver())
        await manager.load_all()
        provider = UpstreamTlsContexts(manager, tls)
        traffic = Traffic(provider, upstream)
        connector = aiohttp.TCPConnector(limit=CONCURRENCY)
        async with aiohttp.ClientSession(connector=connector) as session:
            workers = [asyncio.create_task(traffic.worker(session, n)) for n in range(CONCURRENCY)]
            for _ in range(TRIALS):
                for rotate in (False, True):
                    rate, done = await _window(traffic, rotate, fake_vault, dev_ca, manager, clock)
                    results[rotate].append(rate)
                    rotations += done
            traffic.stopping = True
            await asyncio.gather(*workers)
            polls = await _time_polls(manager, 20)
        await manager.aclose()
    bundle = manager.current("partner")
    assert bundle is not None
    build = _time_builds(bundle, dev_ca.ca_pem, 50)

    steady, rotating = statistics.median(results[False]), statistics.median(results[True])
    print(f"\nsteady   {steady:8.0f} req/s  trials {[round(r) for r in results[False]]}")
    print(f"rotating {rotating:8.0f} req/s  trials {[round(r) for r in results[True]]}  ({rotations} rotations)")
    print(f"ratio rotating/steady {rotating / steady:.2f}; failed requests {len(traffic.failures)}")
    print(f"client_context build median {build * 1000:.1f} ms; no-change Key Vault poll median {polls * 1000:.1f} ms")
    assert traffic.failures == []
    assert rotations >= TRIALS


async def _time_polls(manager: CertificateManager, n: int) -> float:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        assert not await manager.refresh("partner")
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def _time_builds(bundle: CertificateBundle, ca_pem: bytes, n: int) -> float:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        client_context(certificate=bundle, ca_pem=ca_pem)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)
