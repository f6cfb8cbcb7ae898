"""What the manager asks of every certificate source (Key Vault, files, development CA)."""

from __future__ import annotations

from typing import Protocol

from gateway.certs.bundle import CertificateBundle


class CertificateSource(Protocol):
    """Where one named certificate comes from.

    ``load`` answers the newest version, or ``None`` when that is still ``known_version`` (so a
    poll costs one cheap look-up). ``renew=True`` means the current certificate is inside its renew
    window: a source that can mint certificates (the development CA) issues a new one; the others
    answer what they have. Failures raise CertificateError subclasses.
    """

    @property
    def kind(self) -> str: ...

    async def load(self, known_version: str | None, *, renew: bool = False) -> CertificateBundle | None: ...
