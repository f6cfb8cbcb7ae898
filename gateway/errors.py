"""One exception tree for the whole gateway, mapped to the wire contract's error codes.

    GatewayError                      code            dead-lettered
    ├── InvalidRequestError           invalid_request      yes
    │   ├── UnknownUpstreamError      unknown_upstream     yes
    │   └── IdempotencyMismatchError  invalid_request      no  (a security refusal: the caller is told)
    ├── UnauthenticatedError          unauthenticated      no  (bad, stale or unknown signature; identity required)
    │   └── ParkedCopyReusedError     unauthenticated      no  (a park seal used before: counted, not answered)
    ├── ForbiddenError                forbidden            no  (the caller may not use this upstream/tenant)
    ├── ReplyToRefusedError           reply_to_refused     yes (nothing is sent to the refused address)
    ├── PayloadTooLargeError          payload_too_large    yes
    ├── DeadlineExceededError         deadline_exceeded    no  (ran out inside the gateway: queued, between attempts)
    │   └── RequestExpiredError       deadline_exceeded    yes (already past its deadline on arrival; never sent)
    ├── UpstreamError                                      no  (transient, the upstream's fault)
    │   ├── UpstreamTimeoutError      timeout
    │   ├── UpstreamUnavailableError  upstream_unavailable
    │   ├── CircuitOpenError          circuit_open
    │   └── PoolExhaustedError        pool_exhausted
    ├── RateLimitedError              rate_limited         no
    ├── BusError                      (the broker side; never a reply to the requester as such)
    │   ├── BusUnavailableError       broker unreachable / no confirm: retry, else leave unsettled
    │   └── MessageRejectedError      the broker refused this message for good: do not retry
    ├── ConfigError                   (start-up only, never on the wire)
    ├── UpstreamStatusError           (the SDK's raise_for_error: the upstream answered 4xx/5xx)
    ├── CertificateError              (certs; mapped to upstream_unavailable when hit on a call)
    └── InternalError                 internal             yes

Foreign exceptions never cross a layer: each boundary maps them with ``raise X(...) from exc``.
``security_kind`` names the security event a refusal raises (``security.<kind>`` on cmn.telemetry,
a log line and ``cmn_security_events_total{kind}``); None for ordinary failures.
``dead_letter`` says whether the original delivery is copied to the dead-letter queue besides
being answered: bad input (and anything we could not process at all) is, upstream trouble is not.
"""

from __future__ import annotations

from typing import ClassVar, Literal

ErrorCode = Literal[
    "invalid_request",
    "unknown_upstream",
    "payload_too_large",
    "deadline_exceeded",
    "timeout",
    "upstream_unavailable",
    "circuit_open",
    "pool_exhausted",
    "rate_limited",
    "unauthenticated",
    "forbidden",
    "reply_to_refused",
    "internal",
]

ERROR_CODES: tuple[ErrorCode, ...] = ErrorCode.__args__  # type: ignore[attr-defined]  # Literal exposes its members here


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""

    code: ClassVar[ErrorCode] = "internal"
    dead_letter: ClassVar[bool] = False
    # The security event this refusal raises; an instance may name a narrower kind (invalid_path ...).
    security_kind: str | None = None

    def __init__(self, message: str, *, attempts: int = 0, security_kind: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if security_kind is not None:
            self.security_kind = security_kind
        # HTTP attempts made before giving up (the reply's ``attempts``); set by the egress router.
        self.attempts = attempts

    def header_value(self) -> str:
        """The value of the ``x-cmn-error`` header on a dead-lettered message."""
        return f"{self.code}: {self.message}"


class InvalidRequestError(GatewayError):
    code: ClassVar[ErrorCode] = "invalid_request"
    dead_letter = True


class UnknownUpstreamError(InvalidRequestError):
    code: ClassVar[ErrorCode] = "unknown_upstream"


class IdempotencyMismatchError(InvalidRequestError):
    """The idempotency key was already used, by this caller, for a different request (Stripe's answer)."""

    dead_letter = False
    security_kind = "idempotency_mismatch"


class UnauthenticatedError(GatewayError):
    """A signature is present but bad, stale or from an unknown key; or identity is required and absent."""

    code: ClassVar[ErrorCode] = "unauthenticated"
    security_kind = "unauthenticated"


class ParkedCopyReusedError(UnauthenticatedError):
    """A parked copy whose seal was used before: a second relay of one copy, or a captured one
    published again. Not answered: its reply address is the genuine caller's, who is being (or was)
    answered by the first copy; a refusal there could beat the real answer to it."""


class ForbiddenError(GatewayError):
    """The caller's principal may not use this upstream, method, path or tenant."""

    code: ClassVar[ErrorCode] = "forbidden"
    security_kind = "forbidden"


class ReplyToRefusedError(GatewayError):
    """The reply address is not one replies may go to; nothing is sent there."""

    code: ClassVar[ErrorCode] = "reply_to_refused"
    dead_letter = True
    security_kind = "reply_to_refused"


class PayloadTooLargeError(GatewayError):
    code: ClassVar[ErrorCode] = "payload_too_large"
    dead_letter = True


class DeadlineExceededError(GatewayError):
    """The request's deadline ran out while the gateway held it (queued in a bulkhead, waiting on a
    duplicate, backing off between attempts). Not the publisher's fault: answered, never dead-lettered.
    A deadline that runs out *during* an attempt is the upstream's slowness: ``UpstreamTimeoutError``."""

    code: ClassVar[ErrorCode] = "deadline_exceeded"


class RequestExpiredError(DeadlineExceededError):
    """The request was already past its deadline when it arrived (admission): it is never sent upstream,
    and it is the publisher's problem (a backlog, a clock, a tiny timeout), so it is dead-lettered."""

    dead_letter = True


class UpstreamError(GatewayError):
    """The upstream could not give an answer; transient by nature."""

    code: ClassVar[ErrorCode] = "upstream_unavailable"


class UpstreamTimeoutError(UpstreamError):
    code: ClassVar[ErrorCode] = "timeout"


class UpstreamUnavailableError(UpstreamError):
    code: ClassVar[ErrorCode] = "upstream_unavailable"


class CircuitOpenError(UpstreamError):
    code: ClassVar[ErrorCode] = "circuit_open"


class PoolExhaustedError(UpstreamError):
    code: ClassVar[ErrorCode] = "pool_exhausted"


class RateLimitedError(GatewayError):
    code: ClassVar[ErrorCode] = "rate_limited"


class BusError(GatewayError):
    """Trouble on the broker side of the gateway."""


class BusUnavailableError(BusError):
    """The broker could not be reached or did not confirm in time; retrying may succeed."""


class MessageRejectedError(BusError):
    """The broker refused this message for good (too large, invalid or forbidden destination)."""

    code: ClassVar[ErrorCode] = "payload_too_large"


class ConfigError(GatewayError):
    """Bad configuration; stops start-up with one message naming the field."""


class CertificateError(GatewayError):
    """A certificate could not be loaded, validated or used."""

    code: ClassVar[ErrorCode] = "upstream_unavailable"


class InternalError(GatewayError):
    code: ClassVar[ErrorCode] = "internal"
    dead_letter = True


class UpstreamStatusError(GatewayError):
    """The SDK's ``ReplyEnvelope.raise_for_error`` for an upstream that answered 4xx or 5xx: a reply,
    not a gateway failure, so it has no wire code of its own (``status`` says what came back)."""

    def __init__(self, message: str, *, status: int, attempts: int = 0) -> None:
        super().__init__(message, attempts=attempts)
        self.status = status


# The class a reply's error code stands for (the SDK's ``raise_for_error``): the most general one of
# each code, since the wire does not say which narrower case it was.
ERROR_TYPES: dict[ErrorCode, type[GatewayError]] = {
    "invalid_request": InvalidRequestError,
    "unknown_upstream": UnknownUpstreamError,
    "payload_too_large": PayloadTooLargeError,
    "deadline_exceeded": DeadlineExceededError,
    "timeout": UpstreamTimeoutError,
    "upstream_unavailable": UpstreamUnavailableError,
    "circuit_open": CircuitOpenError,
    "pool_exhausted": PoolExhaustedError,
    "rate_limited": RateLimitedError,
    "unauthenticated": UnauthenticatedError,
    "forbidden": ForbiddenError,
    "reply_to_refused": ReplyToRefusedError,
    "internal": InternalError,
}
