"""What a dead letter says (summary, principal, filters, redaction), the replay plan, its headers
and the 80-column table: pure functions over letters as the brokers hand them out."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import msgpack
import orjson
from hypothesis import given
from hypothesis import strategies as st

from gateway.access import signature
from gateway.access.config import SecurityConfig
from gateway.bus.dead_letters import DeadLetter
from gateway.dlq.cli import WIDTH, age, parse_duration, table
from gateway.dlq.letters import Filters, Summary, headers_for_replay, redacted, summarise
from gateway.dlq.replay import Signer, _headers, plan
from gateway.testing import FakeClock

NOW = 1_800_000_000.0
KEYS = SecurityConfig.model_validate({"keys": {"billing-2026": {"principal": "billing", "secret": {"env": "X"}}}})


def letter(envelope: dict[str, Any] | bytes | None = None, *, ref: str = "m-1", lane: str | None = None,
           headers: dict[str, str] | None = None, **kwargs: Any) -> DeadLetter:  # fmt: skip
    body = envelope if isinstance(envelope, bytes) else orjson.dumps(envelope or {})
    return DeadLetter(
        ref=ref, body=body, content_type=kwargs.pop("content_type", "application/json"), correlation_id="c-1",
        reply_to="cmn.replies.a", headers={"x-cmn-error": "unknown_upstream: no upstream 'p'", **(headers or {})},
        timestamp_ms=int((NOW - 90) * 1000), lane=lane, **kwargs,
    )  # fmt: skip


def test_a_decoded_letter_is_summarised_from_its_envelope_and_error_header() -> None:
    s = summarise(letter({"id": "r-1", "upstream": "p", "method": "GET", "path": "/"}), now=NOW)
    assert (s.id, s.code, s.reason, s.upstream, s.method, s.age) == ("r-1", "unknown_upstream", "no upstream 'p'", "p",
                                                                    "GET", 90.0)  # fmt: skip
    assert s.idempotent and s.principal is None


def test_an_undecodable_letter_keeps_the_broker_ref_and_is_not_idempotent() -> None:
    s = summarise(letter(b"{not json", ref="3:17"), now=NOW)
    assert s.id == "3:17" and s.upstream is None and not s.idempotent


def test_msgpack_letters_are_read_too() -> None:
    body = msgpack.packb({"id": "r-9", "upstream": "p", "method": "PUT"})
    s = summarise(letter(body, content_type="application/msgpack"), now=NOW)
    assert (s.id, s.method, s.idempotent) == ("r-9", "PUT", True)


def test_post_and_patch_are_idempotent_only_with_an_idempotency_key() -> None:
    for method in ("POST", "PATCH", "post"):
        assert not summarise(letter({"id": "r", "method": method}), now=NOW).idempotent
        assert summarise(letter({"id": "r", "method": method, "idempotency_key": "k"}), now=NOW).idempotent
    assert summarise(letter({"id": "r", "method": "DELETE"}), now=NOW).idempotent


def test_the_principal_is_the_brokers_user_id_or_the_claimed_keys_principal() -> None:
    signed = {signature.KEY_ID: "billing-2026", signature.SIGNATURE: "v1=ab"}
    assert summarise(letter({}, user_id="svc-a", headers=signed), now=NOW, security=KEYS).principal == "svc-a"
    assert summarise(letter({}, headers=signed), now=NOW, security=KEYS).principal == "billing (claimed)"
    unknown = {signature.KEY_ID: "old-key"}
    assert summarise(letter({}, headers=unknown), now=NOW, security=KEYS).principal == "key old-key (claimed)"
    assert summarise(letter({}, headers=signed), now=NOW).principal == "key billing-2026 (claimed)"


def test_filters_by_code_upstream_and_age() -> None:
    s = summarise(letter({"id": "r", "upstream": "p"}), now=NOW)
    assert Filters(code="unknown_upstream", upstream="p", since=120).match(s)
    assert not Filters(code="invalid_request").match(s)
    assert not Filters(upstream="q").match(s)
    assert not Filters(since=60).match(s)


def test_show_redacts_credentials_in_envelope_and_message_headers() -> None:
    envelope = {"id": "r", "upstream": "p", "headers": {"Authorization": "Bearer s3cr3t", "X-Trace": "t"},
                "path": "/x?api_key=k3y"}  # fmt: skip
    headers = {signature.KEY_ID: "billing-2026", signature.SIGNATURE: "v1=deadbeef", "Authorization": "Basic dXNlcg=="}
    item = letter(envelope, headers=headers)
    shown = orjson.dumps(redacted(item, summarise(item, now=NOW))).decode()
    for secret in ("s3cr3t", "deadbeef", "dXNlcg==", "k3y"):
        assert secret not in shown
    document = orjson.loads(shown)
    assert document["body"]["headers"]["X-Trace"] == "t"
    assert document["headers"][signature.KEY_ID] == "billing-2026"


def test_replayed_headers_lose_the_error_and_the_old_signature_and_carry_the_operators() -> None:
    old = {signature.KEY_ID: "billing-2026", signature.SIGNED_AT: "1", signature.SIGNATURE: "v1=ab", "traceparent": "t"}
    item = letter({"id": "r"}, headers=old)
    assert headers_for_replay(item.headers) == {"traceparent": "t"}
    signed = _headers(item, FakeClock(start=NOW), Signer("ops-1", b"ops-secret"))
    assert signed[signature.KEY_ID] == "ops-1" and signed[signature.SIGNED_AT] == str(int(NOW * 1000))
    assert signature.matches(
        b"ops-secret", signed[signature.SIGNATURE], signed_at=int(NOW * 1000), key_id="ops-1",
        correlation_id="c-1", reply_to="cmn.replies.a", body=item.body,
    )  # fmt: skip


def test_the_plan_skips_what_is_not_idempotent_unless_forced_and_keeps_what_precedes_in_a_lane() -> None:
    get = letter({"id": "g", "method": "GET", "upstream": "p"}, ref="0:1", lane="0")
    post = letter({"id": "p", "method": "POST", "upstream": "p"}, ref="0:0", lane="0")
    other = letter({"id": "o", "method": "GET", "upstream": "q"}, ref="1:0", lane="1")
    letters = [(x, summarise(x, now=NOW)) for x in (post, get, other)]
    chosen = plan(letters, Filters(upstream="p"), force=False)
    assert chosen.chosen == {"0:1"} and chosen.not_idempotent == ("p",)
    assert [chosen.must_keep(i) for i in range(3)] == [True, False, False]  # post precedes get in lane 0
    forced = plan(letters, Filters(upstream="p"), force=True)
    assert forced.chosen == {"0:0", "0:1"} and [forced.must_keep(i) for i in range(3)] == [False, False, False]


def test_durations_and_ages() -> None:
    assert [parse_duration(t) for t in ("30s", "10m", "2h", "1d", "1.5h")] == [30, 600, 7200, 86400, 5400]
    assert [age(s) for s in (None, 5, 61, 7300, 90000)] == ["-", "5s", "1m", "2h", "1d"]


_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=300)


@given(st.lists(st.tuples(_text, _text, _text, st.none() | _text, st.none() | st.floats(0, 1e9), st.none() | _text),
                max_size=5))  # fmt: skip
def test_the_table_fits_80_columns_whatever_the_letters_say(rows: list[tuple[Any, ...]]) -> None:
    summaries = [Summary(i, c, r, u, "GET", None, a, p) for i, c, r, u, a, p in rows]
    lines = table(summaries).splitlines()
    assert len(lines) == len(rows) + 1
    assert all(len(line) <= WIDTH for line in lines)


def test_the_plan_leaves_letters_from_another_requests_topic_and_keeps_its_place_in_the_lane() -> None:
    theirs = replace(letter({"id": "t", "method": "GET", "upstream": "p"}, ref="0:0", lane="0"), source="b.requests")
    ours = replace(letter({"id": "o", "method": "GET", "upstream": "p"}, ref="0:1", lane="0"), source="a.requests")
    legacy = letter({"id": "l", "method": "GET", "upstream": "p"}, ref="0:2", lane="0")  # no source recorded
    letters = [(x, summarise(x, now=NOW)) for x in (theirs, ours, legacy)]
    the_plan = plan(letters, Filters(), force=True, requests="a.requests")
    assert the_plan.chosen == {"0:1", "0:2"} and the_plan.elsewhere == {"0:0"}
    assert the_plan.must_keep(0)  # copied to the tail before ours is committed past it
    assert plan(letters, Filters(), force=True).chosen == {"0:0", "0:1", "0:2"}  # no requests topic: all


def test_replayed_headers_lose_the_source_topic() -> None:
    assert headers_for_replay({"x-cmn-topic": "b.requests", "x-trace": "1"}) == {"x-trace": "1"}
