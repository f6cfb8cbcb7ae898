"""Identity: the AMQP user_id wins, else a signature by a known key within its window, else anonymous."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from gateway.access import signature
from gateway.access.identity import Caller, Identifier, Signed, SigningKey
from gateway.errors import UnauthenticatedError
from gateway.testing import FakeClock

SECRET = b"s3cret-billing"
NOW_MS = 1_800_000_000_000


def identifier(*, require: bool = False, max_age: float = 300) -> Identifier:
    clock = FakeClock(wall_start=NOW_MS / 1000)
    return Identifier(
        {"billing-2026": SigningKey("billing", SECRET)}, clock=clock, max_age=max_age, require_identity=require
    )


def signed(
    body: bytes = b'{"id":"1"}',
    *,
    key_id: str = "billing-2026",
    secret: bytes = SECRET,
    at: int = NOW_MS,
    correlation_id: str | None = "c-1",
    reply_to: str | None = "cmn.replies.x",
    user_id: str | None = None,
    sent_reply_to: str | None = None,
) -> Signed:
    headers = signature.sign(key_id, secret, now_ms=at, correlation_id=correlation_id, reply_to=reply_to, body=body)
    return Signed(user_id, headers, correlation_id, sent_reply_to or reply_to, body)


def test_the_scheme_is_exactly_the_documented_hmac() -> None:
    """What a foreign client computes with nothing but the standard library."""
    body = b'{"id":"1","upstream":"payments"}'
    message = f"{NOW_MS}\nbilling-2026\nc-1\ncmn.replies.x\n".encode() + body
    expected = "v1=" + hmac.new(SECRET, message, hashlib.sha256).hexdigest()
    headers = signature.sign(
        "billing-2026", SECRET, now_ms=NOW_MS, correlation_id="c-1", reply_to="cmn.replies.x", body=body
    )
    assert headers == {"x-cmn-key-id": "billing-2026", "x-cmn-signed-at": str(NOW_MS), "x-cmn-signature": expected}


def test_a_good_signature_names_the_keys_principal() -> None:
    assert identifier().identify(signed()) == Caller("billing", "signature")


def test_user_id_takes_precedence_over_a_signature() -> None:
    proof = signed(secret=b"wrong", user_id="reports")
    assert identifier().identify(proof) == Caller("reports", "user_id")


@pytest.mark.parametrize(
    ("proof", "reason"),
    [
        (signed(secret=b"wrong"), "does not match"),
        (signed(key_id="unknown-key"), "not known"),
        (signed(at=NOW_MS - 301_000), "outside the accepted window"),
        (signed(at=NOW_MS + 60_000), "outside the accepted window"),
    ],
    ids=["bad-secret", "unknown-key", "stale", "future"],
)
def test_a_bad_stale_or_unknown_signature_is_unauthenticated(proof: Signed, reason: str) -> None:
    with pytest.raises(UnauthenticatedError, match=reason) as refused:
        identifier().identify(proof)
    assert (refused.value.code, refused.value.security_kind) == ("unauthenticated", "unauthenticated")


@pytest.mark.parametrize("field", ["body", "correlation_id", "reply_to"])
def test_the_signature_binds_the_body_and_the_addressing(field: str) -> None:
    proof = signed()
    tampered = {
        "body": Signed(None, proof.headers, proof.correlation_id, proof.reply_to, proof.body + b" "),
        "correlation_id": Signed(None, proof.headers, "c-2", proof.reply_to, proof.body),
        "reply_to": Signed(None, proof.headers, proof.correlation_id, "cmn.replies.attacker", proof.body),
    }[field]
    with pytest.raises(UnauthenticatedError):
        identifier().identify(tampered)


def test_a_partial_or_malformed_signature_is_unauthenticated() -> None:
    proof = signed()
    for drop in signature.HEADERS:
        headers = {k: v for k, v in proof.headers.items() if k != drop}
        with pytest.raises(UnauthenticatedError):
            identifier().identify(Signed(None, headers, "c-1", "cmn.replies.x", proof.body))
    junk = {**proof.headers, "x-cmn-signed-at": "1e12"}
    with pytest.raises(UnauthenticatedError):
        identifier().identify(Signed(None, junk, "c-1", "cmn.replies.x", proof.body))


def test_direct_reply_to_is_verified_as_the_name_the_requester_published() -> None:
    """RabbitMQ rewrites amq.rabbitmq.reply-to into a per-channel name on the way to the gateway."""
    proof = signed(reply_to="amq.rabbitmq.reply-to", sent_reply_to="amq.rabbitmq.reply-to.g1h2AA5yZXBseQ==.abc")
    assert identifier().identify(proof).principal == "billing"


def test_no_proof_is_anonymous_unless_identity_is_required() -> None:
    bare = Signed(None, {}, "c-1", "cmn.replies.x", b"{}")
    assert identifier().identify(bare) == Caller(None, "none")
    assert identifier().identify(bare).name == "anonymous"
    with pytest.raises(UnauthenticatedError, match="requires a principal"):
        identifier(require=True).identify(bare)


def test_keys_never_show_their_secret() -> None:
    assert "s3cret" not in repr(SigningKey("billing", SECRET))
    assert "s3cret" not in repr(identifier())


def test_the_anonymous_name_cannot_be_a_principal() -> None:
    """It would share the idempotency scope and tenant of every caller without one."""
    with pytest.raises(UnauthenticatedError, match="reserved"):
        identifier().identify(Signed("anonymous", {}, None, None, b"{}"))
