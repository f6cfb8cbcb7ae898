"""Where an upstream's TLS context comes from.

The certificate manager (gateway.certs) implements ``TlsContextProvider`` structurally and swaps the
context it returns on rotation. The pool asks for it on every request, so new connections use the
current certificate while connections already open finish with the old one.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Protocol

from gateway.errors import CertificateError
from gateway.tls import DEFAULT_TLS, TlsSettings, client_context


class TlsContextProvider(Protocol):
    def context_for(self, upstream: str) -> ssl.SSLContext | None:
        """The current client context for ``upstream``; None means the platform default."""
        ...


class StaticTlsContexts:
    """Contexts built once from the upstreams file, for upstreams that need no client certificate.

    Used when no certificate manager is wired in: a private CA, a minimum TLS version, hostname
    checking. A ``client_certificate`` needs the certificate manager, so it is refused here.
    Upstreams without settings get ``TlsSettings()``, as they do from the certificate manager.
    """

    def __init__(self, tls_by_upstream: Mapping[str, TlsSettings]) -> None:
        self._contexts = {name: _context(name, tls) for name, tls in tls_by_upstream.items()}
        self._default = _context("default", DEFAULT_TLS)

    def context_for(self, upstream: str) -> ssl.SSLContext | None:
        return self._contexts.get(upstream, self._default)

    def __repr__(self) -> str:
        return f"<StaticTlsContexts {sorted(self._contexts)}>"


def _context(upstream: str, tls: TlsSettings) -> ssl.SSLContext:
    if tls.client_certificate is not None:
        raise CertificateError(
            f"upstream {upstream}: client_certificate {tls.client_certificate!r} needs the certificate manager"
        )
    try:
        return client_context(tls)
    except CertificateError as exc:
        raise CertificateError(f"upstream {upstream}: {exc.message}") from exc
