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
from gateway.upstream.config import TlsConfig


class TlsContextProvider(Protocol):
    def context_for(self, upstream: str) -> ssl.SSLContext | None:
        """The current client context for ``upstream``; None means the platform default."""
        ...


class StaticTlsContexts:
    """Contexts built once from the upstreams file, for upstreams that need no client certificate.

    Used when no certificate manager is wired in: a private CA, a minimum TLS version, hostname
    checking. A ``client_certificate`` needs the certificate manager, so it is refused here.
    """

    def __init__(self, tls_by_upstream: Mapping[str, TlsConfig]) -> None:
        self._contexts = {name: build_context(name, tls) for name, tls in tls_by_upstream.items()}
        # Upstreams without a tls block still get TLS 1.3 minimum and hostname checks, not the
        # platform default (which allows TLS 1.2): the same default the certificate manager applies.
        self._default = build_context("default", TlsConfig())

    def context_for(self, upstream: str) -> ssl.SSLContext | None:
        return self._contexts.get(upstream, self._default)

    def __repr__(self) -> str:
        return f"<StaticTlsContexts {sorted(self._contexts)}>"


def build_context(upstream: str, tls: TlsConfig) -> ssl.SSLContext:
    if tls.client_certificate is not None:
        raise CertificateError(
            f"upstream {upstream}: client_certificate {tls.client_certificate!r} needs the certificate manager"
        )
    try:
        context = ssl.create_default_context(cafile=tls.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise CertificateError(f"upstream {upstream}: cannot load ca_file {tls.ca_file}: {exc}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_3 if tls.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    context.check_hostname = tls.verify_hostname
    return context
