"""The spec's Certificate Manager: named certificates → current ``ssl.SSLContext``, renewed in the background.

    ssl_context = await certificate_manager.get_certificate("cert-name")

Each poll asks every source for a version newer than the one in use; a new version is validated
(chain, validity, key, SAN) *before* it replaces the old one, so a bad upload never reaches a
connection. The swap is one dict assignment on the event loop: connections opened afterwards use
the new certificate, in-flight ones finish on the context they started with.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509

from gateway.certs.bundle import CertificateBundle
from gateway.certs.errors import CertificateError, UnknownCertificateError
from gateway.certs.source import CertificateSource
from gateway.certs.validation import validate_bundle
from gateway.clock import Clock
from gateway.events import CertificateRenewalFailed, CertificateRenewed, NullObserver, Observer
from gateway.tls import DEFAULT_MIN_VERSION, TlsSettings, TlsVersion, client_context

DAY = 86400.0

BundleListener = Callable[[CertificateBundle], None]


class AsyncCloseable(Protocol):
    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ManagedCertificate:
    """A configured certificate: where it comes from and what it must satisfy."""

    name: str
    source: CertificateSource
    trusted: tuple[x509.Certificate, ...] = ()
    expected_name: str | None = None


@dataclass(frozen=True, slots=True)
class Inspection:
    """One certificate as its source has it now, and why it would be refused (if it would)."""

    name: str
    source: str
    bundle: CertificateBundle | None
    error: CertificateError | None


@dataclass(frozen=True, slots=True)
class _Active:
    bundle: CertificateBundle
    context: ssl.SSLContext


class CertificateManager:
    """Loads, validates, serves and renews named certificates.

    ``async with manager:`` (or ``start()`` / ``aclose()``) loads every certificate, failing start-up
    on the first bad one, then polls every ``poll_interval`` seconds. Inside ``renew_before`` seconds
    of expiry a source that can mint (the dev CA) is asked for a new certificate; the others are
    polled as usual and every poll that still finds no newer version emits CertificateRenewalFailed.
    """

    def __init__(
        self,
        certificates: Sequence[ManagedCertificate],
        *,
        clock: Clock,
        observer: Observer | None = None,
        poll_interval: float = 300.0,
        renew_before: float = 14 * DAY,
        min_version: TlsVersion = DEFAULT_MIN_VERSION,
        resources: Sequence[AsyncCloseable] = (),
    ) -> None:
        self._entries = {c.name: c for c in certificates}
        self._clock = clock
        self._observer: Observer = observer if observer is not None else NullObserver()
        self._poll_interval = poll_interval
        self._renew_before = renew_before
        self._min_version = min_version
        self._resources = tuple(resources)
        self._active: dict[str, _Active] = {}
        self._locks = {name: asyncio.Lock() for name in self._entries}
        self._listeners: list[BundleListener] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    async def get_certificate(self, name: str) -> ssl.SSLContext:
        """The current client context for ``name`` (system trust, this certificate presented)."""
        active = self._active.get(name)
        if active is None:
            await self._load_first(name)
            active = self._active[name]
        return active.context

    def current(self, name: str) -> CertificateBundle | None:
        """The bundle in use for ``name``, or None before its first load. Synchronous, for hot paths."""
        if name not in self._entries:
            raise UnknownCertificateError(f"no certificate named {name!r} is configured")
        active = self._active.get(name)
        return active.bundle if active is not None else None

    def expiries(self) -> dict[str, float]:
        """Expiry (epoch seconds) of every loaded certificate, for the metrics gauge."""
        return {name: active.bundle.not_after for name, active in self._active.items()}

    async def inspect(self) -> list[Inspection]:
        """Fetch and validate every certificate afresh without installing it (``cmn certs list``, health)."""
        return [await self._inspect(entry) for entry in self._entries.values()]

    async def _inspect(self, entry: ManagedCertificate) -> Inspection:
        bundle: CertificateBundle | None = None
        try:
            bundle = await entry.source.load(None)
            if bundle is None:
                raise CertificateError(f"certificate {entry.name!r}: the source returned nothing")
            validate_bundle(bundle, now=self._clock.time(), trusted=entry.trusted, expected_name=entry.expected_name)
        except CertificateError as exc:
            return Inspection(entry.name, entry.source.kind, bundle, exc)
        return Inspection(entry.name, entry.source.kind, bundle, None)

    def add_listener(self, listener: BundleListener) -> None:
        """Called with each newly installed bundle, right after the swap (must not raise or block)."""
        self._listeners.append(listener)

    async def load_all(self) -> None:
        for name in self._entries:
            await self._load_first(name)

    async def refresh_all(self) -> None:
        for name in self._entries:
            try:
                await self.refresh(name)
            except Exception as exc:  # noqa: BLE001 - one source's bug must not stop the others' renewal
                self._failed(name, f"internal error: {exc!r}")

    async def refresh(self, name: str) -> bool:
        """One poll of ``name``'s source; True when a new version was installed."""
        entry = self._entries[name]
        try:
            async with self._locks[name]:  # read the version in use under the lock: polls may overlap
                active = self._active.get(name)
                remaining = active.bundle.not_after - self._clock.time() if active is not None else 0.0
                renew = active is not None and remaining <= self._renew_before
                bundle = await entry.source.load(active.bundle.version if active else None, renew=renew)
                if bundle is not None:
                    self._install(entry, bundle)
        except CertificateError as exc:
            self._failed(name, exc.message)
            return False
        if bundle is None:
            if renew:
                self._failed(name, f"expires in {remaining / 3600:.1f} h and the source has no newer version")
            return False
        if active is not None:  # a first load is not a renewal
            self._observer.on_event(CertificateRenewed(name, entry.source.kind, bundle.version, bundle.not_after))
        return True

    async def _load_first(self, name: str) -> None:
        entry = self._entries.get(name)
        if entry is None:
            raise UnknownCertificateError(f"no certificate named {name!r} is configured")
        async with self._locks[name]:
            if name in self._active:
                return
            bundle = await entry.source.load(None)
            if bundle is None:
                raise CertificateError(f"certificate {name!r}: the source returned nothing on first load")
            self._install(entry, bundle)

    def _install(self, entry: ManagedCertificate, bundle: CertificateBundle) -> None:
        validate_bundle(bundle, now=self._clock.time(), trusted=entry.trusted, expected_name=entry.expected_name)
        context = client_context(TlsSettings(min_version=self._min_version), certificate=bundle)
        self._active[entry.name] = _Active(bundle, context)
        for listener in self._listeners:
            listener(bundle)

    def _failed(self, name: str, reason: str) -> None:
        self._observer.on_event(CertificateRenewalFailed(name, self._entries[name].source.kind, reason))

    async def start(self) -> None:
        if self._task is not None:
            return
        await self.load_all()
        self._task = asyncio.create_task(self._poll(), name="cmn-cert-renewal")

    async def _poll(self) -> None:
        while True:
            await self._clock.sleep(self._poll_interval)
            await self.refresh_all()

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for resource in self._resources:
            await resource.aclose()

    async def __aenter__(self) -> CertificateManager:
        try:
            await self.start()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        loaded = ", ".join(
            f"{n}@{a.bundle.version[:8]} exp {a.bundle.certificate.not_valid_after_utc:%Y-%m-%d}"
            for n, a in self._active.items()
        )
        state = "polling" if self._task is not None else "idle"
        return (
            f"<CertificateManager {len(self._entries)} certificates [{loaded}] "
            f"{state} every {self._poll_interval:g}s, renew {self._renew_before / DAY:g}d ahead>"
        )
