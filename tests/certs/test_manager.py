"""CertificateManager: loading, validation on load, background renewal driven by a fake clock."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.certs.bundle import CertificateBundle
from gateway.certs.devca import DAY, DevCertificateAuthority, DevSource
from gateway.certs.errors import CertificateChainError, CertificateNameError, UnknownCertificateError
from gateway.certs.files import CertificateFiles, FileSource
from gateway.certs.keyvault import KeyVault, KeyVaultSource
from gateway.certs.manager import CertificateManager, ManagedCertificate
from gateway.events import CertificateRenewalFailed, CertificateRenewed, RecordingObserver
from gateway.testing import FakeClock
from tests.certs.fakevault import FakeKeyVault

POLL = 60.0


async def until(condition: Callable[[], bool]) -> None:
    """Wait (really, up to 10 s) for the background poll's network I/O to finish."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(wall_start=time.time())


def _manager(
    entries: list[ManagedCertificate],
    clock: FakeClock,
    observer: RecordingObserver,
    *,
    renew_before: float = 14 * DAY,
) -> CertificateManager:
    return CertificateManager(entries, clock=clock, observer=observer, poll_interval=POLL, renew_before=renew_before)


async def advance(clock: FakeClock, seconds: float) -> None:
    """Move time once the poll loop is asleep (advancing earlier would push its wake-up later)."""
    await until(lambda: clock.sleepers == 1)
    clock.advance(seconds)


async def _poll_once(clock: FakeClock, observer: RecordingObserver) -> None:
    before = len(observer.events)
    await advance(clock, POLL)
    await until(lambda: clock.sleepers == 1 and len(observer.events) > before)


async def test_renews_when_a_new_version_appears_in_key_vault(
    fake_vault: FakeKeyVault, dev_ca: DevCertificateAuthority, clock: FakeClock
) -> None:
    fake_vault.put("partner", dev_ca.issue("partner", ["partner"], now=clock.time(), days=30))
    observer = RecordingObserver()
    installed: list[CertificateBundle] = []
    async with KeyVault(fake_vault.settings()) as vault:
        entry = ManagedCertificate("partner", KeyVaultSource(vault, "partner"), (dev_ca.certificate,))
        async with _manager([entry], clock, observer) as manager:
            manager.add_listener(installed.append)
            first_context = await manager.get_certificate("partner")
            first_expiry = manager.expiries()["partner"]

            newer = dev_ca.issue("partner", ["partner"], now=clock.time(), days=90)
            version = fake_vault.put("partner", newer)
            await _poll_once(clock, observer)

            assert observer.events == [CertificateRenewed("partner", "keyvault", version, newer.not_after)]
            assert manager.expiries()["partner"] == newer.not_after > first_expiry
            current = manager.current("partner")
            assert current is not None
            assert current.certificate == newer.certificate
            assert installed == [current]
            second_context = await manager.get_certificate("partner")
            assert isinstance(second_context, ssl.SSLContext)
            assert second_context is not first_context
            assert "polling every 60s" in repr(manager)
    assert fake_vault.count("/certificates/partner/") == 2


async def test_a_bad_new_version_is_refused_and_the_old_one_kept(
    fake_vault: FakeKeyVault, dev_ca: DevCertificateAuthority, clock: FakeClock
) -> None:
    good = dev_ca.issue("partner", ["partner"], now=clock.time())
    fake_vault.put("partner", good)
    observer = RecordingObserver()
    async with KeyVault(fake_vault.settings()) as vault:
        entry = ManagedCertificate("partner", KeyVaultSource(vault, "partner"), (dev_ca.certificate,))
        async with _manager([entry], clock, observer) as manager:
            stranger = DevCertificateAuthority.create(now=clock.time(), common_name="Stranger CA")
            fake_vault.put("partner", stranger.issue("partner", ["partner"], now=clock.time()))
            await _poll_once(clock, observer)
            fake_vault.put("partner", dev_ca.issue("partner", ["p"], now=clock.time(), not_before=0, days=1))
            await _poll_once(clock, observer)

            current = manager.current("partner")
            assert current is not None
            assert current.certificate == good.certificate
    reasons = [e.reason for e in observer.events if isinstance(e, CertificateRenewalFailed)]
    assert len(reasons) == 2
    assert "not issued by the configured CA" in reasons[0]
    assert "expired at 1970-01-02" in reasons[1]


async def test_inside_the_renew_window_without_a_new_version_is_reported(
    dev_ca: DevCertificateAuthority, clock: FakeClock, tmp_path: Path
) -> None:
    cert = tmp_path / "c.pem"
    cert.write_bytes((b := dev_ca.issue("billing", ["billing"], now=clock.time(), days=20)).chain_pem() + b.key_pem())
    observer = RecordingObserver()
    entry = ManagedCertificate("billing", FileSource("billing", CertificateFiles(cert=cert)))
    async with _manager([entry], clock, observer, renew_before=14 * DAY):
        await advance(clock, 7 * DAY)  # 13 days left: inside the window
        await until(lambda: len(observer.events) == 1)
    (event,) = observer.events
    assert isinstance(event, CertificateRenewalFailed)
    assert (event.name, event.source) == ("billing", "file")
    assert "expires in 311.9 h" in event.reason
    assert "no newer version" in event.reason


async def test_dev_certificates_are_reissued_inside_the_renew_window(clock: FakeClock, tmp_path: Path) -> None:
    observer = RecordingObserver()
    source = DevSource("local", ["localhost"], tmp_path, clock, days=30, renew_before=7 * DAY)
    async with _manager([ManagedCertificate("local", source)], clock, observer, renew_before=7 * DAY) as manager:
        first = manager.current("local")
        assert first is not None
        await advance(clock, 24 * DAY)
        await until(lambda: len(observer.events) == 1)
        renewed = manager.current("local")
    assert renewed is not None
    assert isinstance(observer.events[0], CertificateRenewed)
    assert renewed.not_after > first.not_after + 20 * DAY
    assert (tmp_path / "local.pem").read_bytes() == renewed.chain_pem()


async def test_start_fails_on_the_first_unfit_certificate(
    dev_ca: DevCertificateAuthority, clock: FakeClock, tmp_path: Path
) -> None:
    stranger = DevCertificateAuthority.create(now=clock.time())
    manager = _manager(
        [
            ManagedCertificate("dev", DevSource("dev", ["localhost"], tmp_path, clock), expected_name="localhost"),
            ManagedCertificate("bad", DevSource("bad", ["x"], tmp_path / "x", clock), (stranger.certificate,)),
        ],
        clock,
        RecordingObserver(),
    )
    with pytest.raises(CertificateChainError, match="'bad'"):
        await manager.start()
    assert "idle" in repr(manager)
    await manager.aclose()

    wrong_name = ManagedCertificate("dev", DevSource("dev", ["localhost"], tmp_path, clock), expected_name="api")
    with pytest.raises(CertificateNameError):
        async with _manager([wrong_name], clock, RecordingObserver()):
            pass


async def test_unknown_names_are_refused(clock: FakeClock) -> None:
    manager = _manager([], clock, RecordingObserver())
    with pytest.raises(UnknownCertificateError, match="'partner'"):
        await manager.get_certificate("partner")
    with pytest.raises(UnknownCertificateError):
        manager.current("partner")


class _Exploding:
    kind = "exploding"

    def __init__(self, inner: DevSource) -> None:
        self.inner, self.calls = inner, 0

    async def load(self, known_version: str | None, *, renew: bool = False) -> CertificateBundle | None:
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("bug in a source")
        return await self.inner.load(known_version, renew=renew)


async def test_a_crashing_source_does_not_stop_the_others(clock: FakeClock, tmp_path: Path) -> None:
    observer = RecordingObserver()
    boom = _Exploding(DevSource("boom", ["b"], tmp_path, clock))
    fine = DevSource("fine", ["f"], tmp_path, clock, days=30)
    entries = [ManagedCertificate("boom", boom), ManagedCertificate("fine", fine)]
    async with _manager(entries, clock, observer, renew_before=7 * DAY):
        await advance(clock, 24 * DAY)
        await until(lambda: len(observer.events) == 2)
        await advance(clock, POLL)
        await until(lambda: len(observer.events) == 3)
    failed, renewed, failed_again = observer.events
    assert isinstance(failed, CertificateRenewalFailed)
    assert "RuntimeError('bug in a source')" in failed.reason
    assert isinstance(renewed, CertificateRenewed)
    assert renewed.name == "fine"
    assert isinstance(failed_again, CertificateRenewalFailed)


async def test_overlapping_polls_install_a_version_once(
    fake_vault: FakeKeyVault, dev_ca: DevCertificateAuthority, clock: FakeClock
) -> None:
    fake_vault.put("partner", dev_ca.issue("partner", ["partner"], now=clock.time()))
    observer = RecordingObserver()
    async with KeyVault(fake_vault.settings()) as vault:
        manager = _manager([ManagedCertificate("partner", KeyVaultSource(vault, "partner"))], clock, observer)
        await manager.load_all()
        fake_vault.put("partner", dev_ca.issue("partner", ["partner"], now=clock.time()))
        results = await asyncio.gather(*(manager.refresh("partner") for _ in range(3)))
        await manager.aclose()
    assert sorted(results) == [False, False, True]
    assert len(observer.of_type(CertificateRenewed)) == 1
    assert fake_vault.count("/secrets/") == 2
