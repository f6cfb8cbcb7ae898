"""Certificate failures, one class per cause so callers and operators can tell them apart.

CertificateError (gateway.errors)
├── CertificateSourceError        the source could not be read (vault unreachable, file missing, 404)
├── CertificateFormatError        the bytes are not a usable PEM / PKCS#12 certificate and key
├── UnknownCertificateError       a name that is not configured, or not loaded yet
└── CertificateValidationError    loaded, but not fit for use
    ├── CertificateExpiredError
    ├── CertificateNotYetValidError
    ├── CertificateKeyMismatchError
    ├── CertificateChainError     not issued by the configured CA
    └── CertificateNameError      no SAN covers the expected name
"""

from __future__ import annotations

from gateway.errors import CertificateError

__all__ = [
    "CertificateChainError",
    "CertificateError",
    "CertificateExpiredError",
    "CertificateFormatError",
    "CertificateKeyMismatchError",
    "CertificateNameError",
    "CertificateNotYetValidError",
    "CertificateSourceError",
    "CertificateValidationError",
    "UnknownCertificateError",
]


class CertificateSourceError(CertificateError):
    """The certificate's source could not be read."""


class CertificateFormatError(CertificateError):
    """The source answered, but not with a usable certificate and key."""


class CertificateValidationError(CertificateError):
    """The certificate loaded but must not be used."""


class CertificateExpiredError(CertificateValidationError):
    pass


class CertificateNotYetValidError(CertificateValidationError):
    pass


class CertificateKeyMismatchError(CertificateValidationError):
    pass


class CertificateChainError(CertificateValidationError):
    pass


class CertificateNameError(CertificateValidationError):
    pass


class UnknownCertificateError(CertificateError):
    """A name that is not in the certificates configuration (or not loaded yet)."""
