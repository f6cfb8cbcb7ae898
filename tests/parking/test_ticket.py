"""The park seal: a hostile publisher cannot name a principal, move replies, or reset a count or deadline."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.access.identity import Caller, Signed
from gateway.parking import ticket
from gateway.parking.ticket import ParkTicket, Sealer

SEALER = Sealer(b"0123456789abcdef0123456789abcdef")
ORIGINAL = Signed(
    user_id=None, headers={"traceparent": "00-x"}, correlation_id="c1", reply_to="cmn.replies.a", body=b"{}"
)
ALICE = Caller("alice", "signature")


def parked(headers: dict[str, str], **changes: object) -> Signed:
    fields = {
        "user_id": None,
        "headers": {**ORIGINAL.headers, **headers},
        "correlation_id": ORIGINAL.correlation_id,
        "reply_to": ORIGINAL.reply_to,
        "body": ORIGINAL.body,
        **changes,
    }
    return Signed(**fields)  # type: ignore[arg-type]  # the fields of Signed, some changed by a test


def issue(caller: Caller = ALICE, count: int = 1) -> dict[str, str]:
    return SEALER.issue(ORIGINAL, count=count, deadline_ms=1_800_000_060_000, attempts=3, caller=caller)


def test_a_sealed_copy_reads_back() -> None:
    read = SEALER.read(parked(issue()))
    assert read is not None
    assert (read.count, read.deadline_ms, read.attempts, read.caller) == (
        1,
        1_800_000_060_000,
        3,
        Caller("alice", "signature"),
    )


def test_an_anonymous_caller_stays_anonymous() -> None:
    read = SEALER.read(parked(issue(Caller(None))))
    assert read is not None and read.caller == Caller(None, "none")


def test_each_park_has_its_own_seal() -> None:
    assert issue()[ticket.SEAL] != issue()[ticket.SEAL]


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (ticket.PRINCIPAL, "mallory"),
        (ticket.VIA, "user_id"),
        (ticket.COUNT, "0"),
        (ticket.DEADLINE, "1900000000000"),
        (ticket.ATTEMPTS, "0"),
        (ticket.NONCE, "00"),
    ],
)
def test_any_changed_field_breaks_the_seal(header: str, value: str) -> None:
    headers = {**issue(), header: value}
    assert SEALER.read(parked(headers)) is None


@pytest.mark.parametrize(
    "change", [{"reply_to": "cmn.replies.mallory"}, {"correlation_id": "c2"}, {"body": b'{"x":1}'}]
)
def test_the_seal_binds_addressing_and_body(change: dict[str, object]) -> None:
    assert SEALER.read(parked(issue(), **change)) is None


def test_another_secret_does_not_verify() -> None:
    other = Sealer(b"another secret of sixteen bytes!")
    assert other.read(parked(issue())) is None


def test_a_seal_without_its_fields_or_oversized_is_refused() -> None:
    headers = issue()
    assert SEALER.read(parked({ticket.SEAL: headers[ticket.SEAL]})) is None
    assert SEALER.read(parked({**headers, ticket.PRINCIPAL: "a" * 300})) is None
    assert SEALER.read(parked({})) is None


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        Sealer(b"short")


@given(st.dictionaries(st.sampled_from(ticket.HEADERS), st.text(max_size=40)))
def test_hostile_park_headers_never_verify_or_raise(headers: dict[str, str]) -> None:
    read: ParkTicket | None = SEALER.read(parked(headers))
    assert read is None


def test_the_sealer_never_shows_its_secret() -> None:
    assert "0123" not in repr(SEALER)
