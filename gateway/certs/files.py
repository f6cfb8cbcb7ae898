"""Certificates from files (PEM or PKCS#12), watched for changes by polling their stat."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path

from gateway.certs.bundle import CertificateBundle, content_version, parse_pem, parse_pkcs12, with_key
from gateway.certs.errors import CertificateSourceError

_Stamp = tuple[tuple[int, int, int], ...]


@dataclass(frozen=True, slots=True)
class CertificateFiles:
    """Either ``pkcs12``, or ``cert`` (PEM, leaf first, may include the key) with an optional ``key``."""

    cert: Path | None = None
    key: Path | None = None
    pkcs12: Path | None = None
    password: bytes | None = field(default=None, repr=False)

    def paths(self) -> tuple[Path, ...]:
        return tuple(p for p in (self.pkcs12, self.cert, self.key) if p is not None)


class FileSource:
    """One certificate read from disk.

    A changed file is noticed at the next poll through its (inode, size, mtime); its version is a
    hash of the content. When cert and key are replaced one after the other, a poll in between
    sees a mismatched pair, fails validation and keeps the old context until the pair is whole.
    """

    kind = "file"

    def __init__(self, name: str, files: CertificateFiles) -> None:
        if files.pkcs12 is None and files.cert is None:
            raise CertificateSourceError(f"certificate {name!r}: a file source needs `cert` or `pkcs12`")
        self._name, self._files = name, files
        self._stamp: _Stamp | None = None
        self._version: str | None = None

    async def load(self, known_version: str | None, *, renew: bool = False) -> CertificateBundle | None:
        stamp = await asyncio.to_thread(self._stat)
        if stamp == self._stamp and self._version == known_version:
            return None
        bundle = await asyncio.to_thread(self._read)
        self._stamp, self._version = stamp, bundle.version
        return None if bundle.version == known_version else bundle

    def _stat(self) -> _Stamp:
        try:
            stats = [os.stat(p) for p in self._files.paths()]
        except OSError as exc:
            raise CertificateSourceError(f"certificate {self._name!r}: {exc}") from exc
        return tuple((s.st_ino, s.st_size, s.st_mtime_ns) for s in stats)

    def _read(self) -> CertificateBundle:
        files = self._files
        try:
            contents = [p.read_bytes() for p in files.paths()]
        except OSError as exc:
            raise CertificateSourceError(f"certificate {self._name!r}: {exc}") from exc
        version = content_version(*contents)
        if files.pkcs12 is not None:
            return parse_pkcs12(self._name, self.kind, version, contents[0], files.password)
        bundle = parse_pem(self._name, self.kind, version, contents[0], files.password)
        if files.key is not None:
            bundle = with_key(bundle, contents[-1], files.password)
        return bundle

    def __repr__(self) -> str:
        return f"<FileSource {self._name} {[str(p) for p in self._files.paths()]} version={self._version}>"
