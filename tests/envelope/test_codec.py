from __future__ import annotations

import base64
import contextlib
from dataclasses import replace
from typing import Any, Literal

import msgpack
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.envelope.bounds import DecodeLimits
from gateway.envelope.codec import (
    JSON,
    MSGPACK,
    DecodeError,
    OversizeError,
    Reply,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
    normalise_content_type,
)
from gateway.errors import UpstreamTimeoutError

LIMITS = DecodeLimits(max_bytes=64 * 1024, max_depth=32, max_nodes=100_000)

SURROGATES: tuple[Literal["Cs"]] = ("Cs",)  # mypy infers a bare ("Cs",) as tuple[str] here
CONTROLS = "".join(map(chr, [*range(0x09), *range(0x0A, 0x20), 0x7F]))  # all C0 controls but tab, and DEL
ids = st.text(st.characters(exclude_categories=SURROGATES), min_size=1, max_size=128)
paths = st.from_regex(r"/[a-z0-9/_.-]{0,40}(\?[a-z=&0-9]{0,20})?", fullmatch=True).filter(
    lambda p: not p.startswith("//") and not {".", ".."} & set(p.split("?")[0].split("/"))
)
header_values = st.text(st.characters(exclude_categories=SURROGATES, exclude_characters=CONTROLS), max_size=40)
headers = st.dictionaries(st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,20}", fullmatch=True), header_values)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


@given(rid=ids, path=paths, hdrs=headers, body=json_values, codec=st.sampled_from([JSON, MSGPACK]))
def test_request_round_trips_through_both_codecs(
    rid: str, path: str, hdrs: dict[str, str], body: Any, codec: str
) -> None:
    doc = {"id": rid, "upstream": "payments", "method": "post", "path": path, "headers": hdrs, "json": body}
    envelope = decode_request(encode_request(doc, codec), codec, LIMITS)
    assert (envelope.id, envelope.path, envelope.headers, envelope.method) == (rid, path, hdrs, "POST")
    assert envelope.json_ == body


@given(raw=st.binary(max_size=200), codec=st.sampled_from([JSON, MSGPACK]))
def test_garbage_never_escapes_as_anything_but_a_wire_error(raw: bytes, codec: str) -> None:
    with contextlib.suppress(DecodeError):
        decode_request(raw, codec, LIMITS)  # anything else raised fails the test


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ({"upstream": "x"}, "id: Field required"),
        ({"id": "a", "upstream": "x", "path": "http://evil.example/"}, "path"),
        ({"id": "a", "upstream": "x", "path": "//evil.example/"}, "path"),
        ({"id": "a", "upstream": "x", "path": "relative"}, "path"),
        ({"id": "a", "upstream": "x", "timeout_ms": "100"}, "timeout_ms"),
        ({"id": "a", "upstream": "x", "timeout_ms": 0}, "timeout_ms"),
        ({"id": "a", "upstream": "x", "json": {}, "body": "b"}, "at most one of json, body"),
        ({"id": "a", "upstream": "x", "headers": {"a": 1}}, "headers.a"),
        ({"id": "a", "upstream": "x", "body_b64": "***"}, "base64"),
        ({"id": "a", "upstream": "x", "surprise": 1}, "surprise"),
        ({"id": "", "upstream": "x"}, "id"),
    ],
)
def test_invalid_envelopes_name_the_field(doc: dict[str, Any], fragment: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_request(orjson.dumps(doc), JSON, LIMITS)
    assert fragment in info.value.message
    assert info.value.request_id == (doc.get("id") or None)


def test_oversize_is_payload_too_large_and_keeps_the_id() -> None:
    raw = orjson.dumps({"id": "big", "upstream": "x", "body": "x" * 2000})
    with pytest.raises(OversizeError) as info:
        decode_request(raw, JSON, replace(LIMITS, max_bytes=1000))
    assert (info.value.code, info.value.request_id) == ("payload_too_large", "big")


def test_unknown_content_type_is_invalid() -> None:
    with pytest.raises(DecodeError, match="unsupported content type"):
        decode_request(b"{}", "text/plain", LIMITS)


def test_content_type_aliases() -> None:
    assert normalise_content_type("application/x-msgpack") == MSGPACK
    assert normalise_content_type("application/json; charset=utf-8") == JSON
    assert normalise_content_type(None) == JSON


@pytest.mark.parametrize(
    ("body", "ctype", "codec", "field", "expected"),
    [
        (b'{"a": 1}', "application/json", JSON, "json", {"a": 1}),
        (b'{"a": 1}', "application/problem+json", MSGPACK, "json", {"a": 1}),
        (b"hello", "text/plain", JSON, "body", "hello"),
        (b"\xff\x00", "application/octet-stream", JSON, "body_b64", base64.b64encode(b"\xff\x00").decode()),
        (b"\xff\x00", "application/octet-stream", MSGPACK, "body", b"\xff\x00"),
        (b"not json", "application/json", JSON, "body", "not json"),
        # Integers outside 64 bits would lose digits as floats: the JSON goes out as text, exactly.
        (b'{"id": 123456789012345678901234567890}', JSON, JSON, "body", '{"id": 123456789012345678901234567890}'),
        (b"[-9223372036854775809]", JSON, MSGPACK, "body", b"[-9223372036854775809]"),  # msgpack: raw bytes
        # The 64-bit extremes still parse exactly, and long digit runs in strings are not integers.
        (b"[18446744073709551615, -9223372036854775808]", JSON, JSON, "json", [2**64 - 1, -(2**63)]),
        (b'{"card": "12345678901234567890123"}', JSON, JSON, "json", {"card": "12345678901234567890123"}),
    ],
)
def test_reply_body_field_follows_content(body: bytes, ctype: str, codec: str, field: str, expected: Any) -> None:
    raw = encode_reply(Reply(id="r", status=200, body=body, body_content_type=ctype, attempts=1), codec)
    doc = decode_reply(raw, codec)
    assert doc[field] == expected
    assert (doc["id"], doc["status"], doc["error"], doc["attempts"]) == ("r", 200, None, 1)


def test_error_reply_carries_code_and_message() -> None:
    raw = encode_reply(Reply(id="r", error=UpstreamTimeoutError("attempt took too long")), JSON)
    doc = orjson.loads(raw)
    assert doc["status"] is None
    assert doc["error"] == {"code": "timeout", "message": "attempt took too long"}


def test_msgpack_request_body_may_be_raw_bytes() -> None:
    raw = msgpack.packb({"id": "m", "upstream": "x", "body": b"\x00\x01"}, use_bin_type=True)
    assert decode_request(raw, MSGPACK, LIMITS).body_bytes() == b"\x00\x01"
