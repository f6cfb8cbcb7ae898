from __future__ import annotations

import pytest

from gateway.admission import Admission, outbound_headers
from gateway.envelope.bounds import DecodeLimits
from gateway.envelope.models import RequestEnvelope
from gateway.errors import DeadlineExceededError, InvalidRequestError, PayloadTooLargeError, UnknownUpstreamError
from gateway.testing import FakeClock


def envelope(**fields: object) -> RequestEnvelope:
    return RequestEnvelope.model_validate({"id": "r1", "upstream": "payments", **fields})


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def admission(clock: FakeClock) -> Admission:
    return Admission(
        clock,
        default_timeout=30.0,
        max_request_bytes=1000,
        max_timeout_ms=60_000,
        max_envelope_depth=32,
        max_envelope_nodes=100_000,
    )


def now_ms(clock: FakeClock) -> int:
    return int(clock.time() * 1000)


def test_budget_counts_from_sent_at(clock: FakeClock, admission: Admission) -> None:
    env = envelope(timeout_ms=2000, sent_at=now_ms(clock) - 500)
    admitted = admission.admit(env, known=True, arrived_at=clock.monotonic(), broker_timestamp_ms=None)
    assert admitted.deadline.remaining(clock) == pytest.approx(1.5, abs=0.002)


def test_broker_timestamp_used_when_no_sent_at(clock: FakeClock, admission: Admission) -> None:
    env = envelope(timeout_ms=1000)
    admitted = admission.admit(env, known=True, arrived_at=clock.monotonic(), broker_timestamp_ms=now_ms(clock) - 400)
    assert admitted.deadline.remaining(clock) == pytest.approx(0.6, abs=0.002)


def test_arrival_when_nothing_else(clock: FakeClock, admission: Admission) -> None:
    arrived = clock.monotonic()
    clock.advance(0.25)
    admitted = admission.admit(envelope(timeout_ms=1000), known=True, arrived_at=arrived, broker_timestamp_ms=None)
    assert admitted.deadline.remaining(clock) == pytest.approx(0.75)


def test_requester_clock_ahead_cannot_extend_budget(clock: FakeClock, admission: Admission) -> None:
    env = envelope(timeout_ms=1000, sent_at=now_ms(clock) + 60_000)
    admitted = admission.admit(env, known=True, arrived_at=clock.monotonic(), broker_timestamp_ms=None)
    assert admitted.deadline.remaining(clock) == pytest.approx(1.0)


def test_waited_past_budget_is_deadline_exceeded(clock: FakeClock, admission: Admission) -> None:
    env = envelope(timeout_ms=100, sent_at=now_ms(clock) - 5000)
    with pytest.raises(DeadlineExceededError, match="expired"):
        admission.admit(env, known=True, arrived_at=clock.monotonic(), broker_timestamp_ms=None)


def test_absolute_deadline_wins_when_earlier(clock: FakeClock, admission: Admission) -> None:
    env = envelope(timeout_ms=10_000, deadline=now_ms(clock) + 300)
    admitted = admission.admit(env, known=True, arrived_at=clock.monotonic(), broker_timestamp_ms=None)
    assert admitted.deadline.remaining(clock) == pytest.approx(0.3, abs=0.002)
    with pytest.raises(DeadlineExceededError):
        admission.admit(
            envelope(deadline=now_ms(clock) - 1),
            known=True,
            arrived_at=clock.monotonic(),
            broker_timestamp_ms=None,
        )


def test_unknown_upstream(clock: FakeClock, admission: Admission) -> None:
    with pytest.raises(UnknownUpstreamError, match="'payments' is not configured"):
        admission.admit(envelope(), known=False, arrived_at=clock.monotonic(), broker_timestamp_ms=None)


def test_body_over_limit(clock: FakeClock, admission: Admission) -> None:
    with pytest.raises(PayloadTooLargeError):
        admission.admit(envelope(body="x" * 1001), known=True, arrived_at=clock.monotonic(), broker_timestamp_ms=None)


def test_hop_by_hop_headers_dropped_and_json_typed() -> None:
    out = outbound_headers({"Connection": "close", "Host": "evil", "X-Ok": "1", "TE": "trailers"}, json_body=True)
    assert out == {"X-Ok": "1", "Content-Type": "application/json"}
    assert outbound_headers({"content-type": "text/plain"}, json_body=True) == {"content-type": "text/plain"}


def test_timeout_over_the_cap_is_invalid_and_names_the_cap(clock: FakeClock, admission: Admission) -> None:
    with pytest.raises(InvalidRequestError) as info:
        admission.admit(envelope(timeout_ms=60_001), known=True, arrived_at=clock.monotonic(), broker_timestamp_ms=None)
    assert info.value.code == "invalid_request"
    assert info.value.message == "timeout_ms 60001 is over the gateway's cap of 60000 ms"


def test_timeout_at_the_cap_is_admitted(clock: FakeClock, admission: Admission) -> None:
    admitted = admission.admit(
        envelope(timeout_ms=60_000), known=True, arrived_at=clock.monotonic(), broker_timestamp_ms=None
    )
    assert admitted.deadline.remaining(clock) == pytest.approx(60.0)


def test_decode_limits_come_from_the_admission(admission: Admission) -> None:
    assert admission.decode_limits == DecodeLimits(max_bytes=1000, max_depth=32, max_nodes=100_000)


def test_headers_named_in_connection_are_dropped() -> None:
    headers = {"Connection": "keep-alive, X-Secret ,x-other", "X-Secret": "s", "X-Other": "o", "X-Kept": "k"}
    assert outbound_headers(headers, json_body=False) == {"X-Kept": "k"}
    # Every Connection header counts, whatever its case.
    headers = {"connection": "X-A", "CONNECTION": "X-B", "X-A": "a", "X-B": "b", "X-C": "c"}
    assert outbound_headers(headers, json_body=False) == {"X-C": "c"}
