"""How one attempt ended, in the terms the breaker, outlier detector and retry policy decide on.

The sender maps aiohttp's exceptions onto these ``gateway.errors`` subclasses, so the layers above
never see a foreign exception and can still tell a refused connect (never sent, always safe to
retry) from a reset mid-response (maybe processed) from a timeout.
"""

from __future__ import annotations

from typing import ClassVar

from gateway.errors import UpstreamTimeoutError, UpstreamUnavailableError
from gateway.upstream.kinds import FailureKind


class ConnectFailedError(UpstreamUnavailableError):
    """No connection could be made; the request was never sent."""

    kind: ClassVar[FailureKind] = "connect_error"


class TlsVerificationFailedError(ConnectFailedError):
    """The upstream's certificate did not verify (unknown CA, wrong name, expired): the request was never sent.

    A security event (``tls_verification_failed``) is raised by the router on every such attempt,
    even one a retry elsewhere recovers from, so ``security_kind`` stays None here: the reply path
    must not count it a second time.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ConnectionDroppedError(UpstreamUnavailableError):
    """The connection broke after the request was (maybe) sent: reset, disconnect, truncated body."""

    kind: ClassVar[FailureKind] = "reset"


class AttemptTimeoutError(UpstreamTimeoutError):
    """One attempt ran past its own timeout (``sent`` False when it was the connect that timed out)."""

    kind: ClassVar[FailureKind] = "timeout"

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


AttemptError = ConnectFailedError | ConnectionDroppedError | AttemptTimeoutError


def failure_kind(status: int | None, error: Exception | None) -> FailureKind | None:
    """The failure an attempt counts as, or None for a success (any status below 500)."""
    if isinstance(error, ConnectFailedError | ConnectionDroppedError | AttemptTimeoutError):
        return error.kind
    if status is not None and status >= 500:
        return "5xx"
    return None


def never_sent(error: Exception) -> bool:
    """True when the upstream cannot have seen the request, so any method may be retried."""
    return isinstance(error, ConnectFailedError) or (isinstance(error, AttemptTimeoutError) and not error.sent)
