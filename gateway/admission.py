"""Decisions made before any network I/O: the request's deadline and its outbound shape."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.clock import Clock, Deadline
from gateway.envelope.bounds import DecodeLimits
from gateway.envelope.codec import request_json_body
from gateway.envelope.models import RequestEnvelope
from gateway.errors import InvalidRequestError, PayloadTooLargeError, RequestExpiredError, UnknownUpstreamError

# RFC 9110 §7.6.1 hop-by-hop headers, plus the ones the HTTP client computes itself.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


@dataclass(frozen=True, slots=True)
class Admitted:
    deadline: Deadline
    body: bytes | None
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Admission:
    """Turns a decoded envelope into an admitted request, or refuses it with a wire error.

    It also owns the configurable bounds on decoding (``decode_limits``), which the pipeline applies
    before there is an envelope to admit.
    """

    clock: Clock
    default_timeout: float
    max_request_bytes: int
    max_timeout_ms: int = field(kw_only=True)
    max_envelope_depth: int = field(kw_only=True)
    max_envelope_nodes: int = field(kw_only=True)
    decode_limits: DecodeLimits = field(init=False, repr=False)

    def __post_init__(self) -> None:
        limits = DecodeLimits(self.max_request_bytes, self.max_envelope_depth, self.max_envelope_nodes)
        object.__setattr__(self, "decode_limits", limits)  # derived once; the dataclass is frozen

    def admit(
        self,
        envelope: RequestEnvelope,
        *,
        known: bool,
        arrived_at: float,
        broker_timestamp_ms: int | None,
        not_after_ms: int | None = None,
    ) -> Admitted:
        """``arrived_at`` is the monotonic instant the message reached the gateway; ``not_after_ms`` an
        epoch deadline carried from an earlier arrival (a parked copy's), never extended here."""
        if not known:
            raise UnknownUpstreamError(f"upstream {envelope.upstream!r} is not configured")
        if envelope.timeout_ms is not None and envelope.timeout_ms > self.max_timeout_ms:
            raise InvalidRequestError(
                f"timeout_ms {envelope.timeout_ms} is over the gateway's cap of {self.max_timeout_ms} ms"
            )
        deadline = self.deadline(envelope, arrived_at=arrived_at, broker_timestamp_ms=broker_timestamp_ms)
        if not_after_ms is not None:
            deadline = deadline.earliest(Deadline.from_epoch_ms(self.clock, not_after_ms))
        if deadline.expired(self.clock):
            late_ms = -deadline.remaining(self.clock) * 1000
            raise RequestExpiredError(f"request expired {late_ms:.0f} ms before it could be sent")
        body = request_json_body(envelope)
        if body is not None and len(body) > self.max_request_bytes:
            raise PayloadTooLargeError(f"request body is {len(body)} bytes, over {self.max_request_bytes}")
        return Admitted(deadline, body, outbound_headers(envelope.headers, json_body=envelope.has_json))

    def deadline(self, envelope: RequestEnvelope, *, arrived_at: float, broker_timestamp_ms: int | None) -> Deadline:
        """The budget counts from publication (sent_at, else broker timestamp, else arrival)."""
        budget = envelope.timeout_ms / 1000 if envelope.timeout_ms else self.default_timeout
        published_ms = envelope.sent_at if envelope.sent_at is not None else broker_timestamp_ms
        if published_ms is not None:
            # Publication can't be after arrival: a requester clock running ahead must not extend the budget.
            start = min(Deadline.from_epoch_ms(self.clock, published_ms).at, arrived_at)
        else:
            start = arrived_at
        deadline = Deadline(start + budget)
        if envelope.deadline is not None:
            deadline = deadline.earliest(Deadline.from_epoch_ms(self.clock, envelope.deadline))
        return deadline


def outbound_headers(headers: Mapping[str, str], *, json_body: bool) -> dict[str, str]:
    """The headers sent upstream: hop-by-hop ones and every header the request's ``Connection``
    names (RFC 9110 §7.6.1) are dropped."""
    dropped = HOP_BY_HOP | _connection_options(headers)
    out = {k: v for k, v in headers.items() if k.lower() not in dropped}
    if json_body and not any(k.lower() == "content-type" for k in out):
        out["Content-Type"] = "application/json"
    return out


def _connection_options(headers: Mapping[str, str]) -> frozenset[str]:
    named = (v for k, v in headers.items() if k.lower() == "connection")
    return frozenset(option.strip().lower() for value in named for option in value.split(","))
