"""Per-upstream TLS contexts that follow certificate rotation.

``UpstreamTlsContexts`` satisfies gateway.upstream.tls.TlsContextProvider structurally (this
package does not import the upstream layer). Both take ``gateway.tls.TlsSettings``, the upstreams
file's ``tls:`` block converted once at the edge, and build through ``gateway.tls.client_context``.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.certs.bundle import CertificateBundle
from gateway.certs.errors import CertificateError, UnknownCertificateError
from gateway.certs.manager import CertificateManager
from gateway.tls import DEFAULT_TLS, TlsSettings, client_context


@dataclass(frozen=True, slots=True)
class _Built:
    bundle: CertificateBundle | None
    context: ssl.SSLContext


class UpstreamTlsContexts:
    """``context_for(upstream)`` → the context to open *new* connections with, right now.

    Contexts are rebuilt as soon as the manager installs a new bundle (a listener), and again
    lazily if a call finds a stale one, so a rotation costs no request anything: pooled
    connections keep the context they were opened with, new ones get the new certificate.
    ``default`` applies to upstreams without their own settings (None: answer None for them).
    """

    def __init__(
        self,
        manager: CertificateManager,
        tls_by_upstream: Mapping[str, TlsSettings],
        *,
        default: TlsSettings | None = DEFAULT_TLS,
    ) -> None:
        self._manager = manager
        self._settings = dict(tls_by_upstream)
        self._default = default
        self._built: dict[str, _Built] = {}
        for upstream, settings in self._settings.items():
            if settings.client_certificate is not None and settings.client_certificate not in manager.names:
                raise UnknownCertificateError(
                    f"upstream {upstream!r} wants client certificate {settings.client_certificate!r}, "
                    "which is not configured under `certificates:`"
                )
        manager.add_listener(self._on_renewed)

    def context_for(self, upstream: str) -> ssl.SSLContext | None:
        settings = self._settings.get(upstream, self._default)
        if settings is None:
            return None
        bundle = self._bundle(settings)
        built = self._built.get(upstream)
        if built is None or built.bundle is not bundle:
            built = _Built(bundle, client_context(settings, certificate=bundle))
            self._built[upstream] = built
        return built.context

    async def prepare(self) -> None:
        """Load every client certificate the upstreams name and build their contexts (call at start-up)."""
        for settings in self._settings.values():
            if settings.client_certificate is not None:
                await self._manager.get_certificate(settings.client_certificate)
        for upstream in self._settings:
            self.context_for(upstream)

    def _bundle(self, settings: TlsSettings) -> CertificateBundle | None:
        name = settings.client_certificate
        if name is None:
            return None
        bundle = self._manager.current(name)
        if bundle is None:
            raise UnknownCertificateError(f"client certificate {name!r} is not loaded; call prepare() first")
        return bundle

    def _on_renewed(self, bundle: CertificateBundle) -> None:
        for upstream, settings in self._settings.items():
            if settings.client_certificate != bundle.name:
                continue
            try:
                self._built[upstream] = _Built(bundle, client_context(settings, certificate=bundle))
            except CertificateError:
                # e.g. the upstream's ca_file vanished: drop the stale context so the next call
                # rebuilds and raises the clear error instead of quietly using the old certificate.
                self._built.pop(upstream, None)

    def __repr__(self) -> str:
        mtls = sum(1 for s in self._settings.values() if s.client_certificate is not None)
        count = len(self._settings)
        return f"<UpstreamTlsContexts {count} upstreams ({mtls} mTLS), {len(self._built)} built>"
