"""Decoding is bounded: size before parsing, node count and depth before anything large is built."""

from __future__ import annotations

from typing import Any

import msgpack
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.envelope.bounds import DecodeLimits, json_nodes_exceeded, msgpack_shape_exceeded
from gateway.envelope.codec import JSON, MSGPACK, DecodeError, OversizeError, decode_request, leading_id

LIMITS = DecodeLimits(max_bytes=64 * 1024, max_depth=8, max_nodes=200)
CODECS = [JSON, MSGPACK]


def pack(doc: Any, codec: str) -> bytes:
    if codec == MSGPACK:
        return msgpack.packb(doc, use_bin_type=True)  # type: ignore[no-any-return]  # untyped library
    return orjson.dumps(doc)


def nodes(value: Any) -> int:
    """The reference count: every value, map keys included."""
    if isinstance(value, dict):
        return 1 + sum(1 + nodes(v) for v in value.values())
    if isinstance(value, list):
        return 1 + sum(nodes(v) for v in value)
    return 1


def nested(depth: int) -> Any:
    """``depth`` levels of containers (lists and maps in turn)."""
    value: Any = []
    for level in range(depth - 1):
        value = {"k": value} if level % 2 else [value]
    return value


def envelope(json_value: Any, **fields: Any) -> dict[str, Any]:
    return {"id": "r1", "upstream": "payments", "json": json_value, **fields}


# -- size -------------------------------------------------------------------------------------
@pytest.mark.parametrize("codec", CODECS)
def test_size_is_checked_before_parsing(codec: str) -> None:
    # Not JSON nor msgpack at all: only a check made before parsing can call it too large.
    raw = b"\xc1" * (LIMITS.max_bytes + 1)
    with pytest.raises(OversizeError, match="over the 65536-byte limit") as info:
        decode_request(raw, codec, LIMITS)
    assert (info.value.code, info.value.request_id) == ("payload_too_large", None)


@pytest.mark.parametrize("codec", CODECS)
def test_oversize_keeps_a_leading_id_without_parsing(codec: str) -> None:
    raw = pack({"id": "big-1", "upstream": "x", "body": "x" * LIMITS.max_bytes}, codec)
    with pytest.raises(OversizeError) as info:
        decode_request(raw, codec, LIMITS)
    assert info.value.request_id == "big-1"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b' {\n "id" : "abc", "upstream": "x"}', "abc"),
        (b'{"upstream": "x", "id": "abc"}', None),  # not first: a nested "id" could match too
        (b'{"json": {"id": "inner"}}', None),
        (b'{"id": "a\\"b"}', None),  # escapes are not decoded: no id rather than a wrong one
        (msgpack.packb({"id": "m" * 40, "x": 1}), "m" * 40),  # str8
        (msgpack.packb({"id": "m", "x": 1}), "m"),
        (msgpack.packb({"id": 5}), None),
        (msgpack.packb({f"k{i}": i for i in range(20)} | {"id": "late"}), None),
        (b"\x81\xa2id", None),  # truncated
        (b"", None),
    ],
)
def test_leading_id(raw: bytes, expected: str | None) -> None:
    assert leading_id(raw) == expected


# -- node count -------------------------------------------------------------------------------
@pytest.mark.parametrize("codec", CODECS)
def test_too_many_values_refused_before_parsing(codec: str) -> None:
    raw = pack(envelope([{}] * 2000), codec)
    with pytest.raises(DecodeError, match=r"more than 200 values \(MAX_ENVELOPE_NODES\)") as info:
        decode_request(raw, codec, LIMITS)
    assert (info.value.code, info.value.request_id) == ("invalid_request", "r1")


@pytest.mark.parametrize("codec", CODECS)
def test_count_is_exact_at_the_limit(codec: str) -> None:
    # Long strings make the message larger than max_nodes bytes, so the count runs.
    filler = "x, y: [z] {w}" * 20
    for size in (40, 60):
        doc = envelope([filler] * size)
        exact = DecodeLimits(LIMITS.max_bytes, LIMITS.max_depth, nodes(doc))
        assert decode_request(pack(doc, codec), codec, exact).json_ == [filler] * size
        fewer = DecodeLimits(LIMITS.max_bytes, LIMITS.max_depth, nodes(doc) - 1)
        with pytest.raises(DecodeError, match="MAX_ENVELOPE_NODES"):
            decode_request(pack(doc, codec), codec, fewer)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    # Strings full of the punctuation the JSON count looks at, and escapes.
    | st.text(st.sampled_from('ab,:[]{}"\\ \n\t'), max_size=12),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=6), inner, max_size=6),
    max_leaves=60,
)


@settings(max_examples=150, deadline=None)
@given(value=json_values, codec=st.sampled_from(CODECS))
def test_pre_parse_counts_agree_with_the_values(value: Any, codec: str) -> None:
    raw, count = pack(value, codec), nodes(value)
    scan = json_nodes_exceeded if codec == JSON else msgpack_shape_exceeded
    assert scan(raw, DecodeLimits(len(raw), 300, count)) is None
    assert scan(raw, DecodeLimits(len(raw), 300, count - 1)) is not None


def test_json_count_with_spaces_never_undercounts() -> None:
    raw = b'[ [ ], { }, "[]", "{}" ]'  # 5 values, counted as 7: a spaced empty container counts one value
    assert json_nodes_exceeded(raw, DecodeLimits(100, 8, 7)) is None
    assert json_nodes_exceeded(raw, DecodeLimits(100, 8, 4)) is not None


def test_msgpack_walk_stops_at_malformed_input() -> None:
    limits = DecodeLimits(100, 8, 2)
    assert msgpack_shape_exceeded(b"\xdd\xff\xff\xff\xff\x80", limits) is None  # truncated: the parser says so
    assert msgpack_shape_exceeded(b"\x93\xc1\x80\x80", limits) is None  # 0xc1 is never used
    assert msgpack_shape_exceeded(b"\x93\x80\x80\x80", limits) is not None


# -- depth ------------------------------------------------------------------------------------
@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("padding", [0, 2000], ids=["small", "large"])
def test_depth_limit_is_exact(codec: str, padding: int) -> None:
    """The envelope is level 1. Messages larger than max_nodes bytes are walked before parsing
    (msgpack), the others checked right after."""
    limits = DecodeLimits(LIMITS.max_bytes, LIMITS.max_depth, 1000)
    at_limit = envelope([nested(LIMITS.max_depth - 2), "z" * padding])
    assert decode_request(pack(at_limit, codec), codec, limits).json_ == at_limit["json"]
    too_deep = envelope([nested(LIMITS.max_depth - 1), "z" * padding])
    with pytest.raises(DecodeError, match=r"deeper than 8 levels \(MAX_ENVELOPE_DEPTH\)") as info:
        decode_request(pack(too_deep, codec), codec, limits)
    assert info.value.request_id == "r1"


@pytest.mark.parametrize("codec", CODECS)
def test_nesting_beyond_the_parsers_own_stack_is_invalid_not_internal(codec: str) -> None:
    raw = (b"[" * 5000 + b"]" * 5000) if codec == JSON else b"\x91" * 5000 + b"\x90"
    with pytest.raises(DecodeError) as info:
        decode_request(raw, codec, DecodeLimits(LIMITS.max_bytes, 32, 100_000))
    assert info.value.code == "invalid_request"


# -- types inside json ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (b"\x00", "msgpack bin"),
        ({"a": [1, {"b": b"x"}]}, "msgpack bin"),
        (msgpack.ExtType(5, b"x"), "msgpack ext"),
        ([msgpack.Timestamp(1, 0)], "msgpack timestamp"),
        ({b"key": 1}, "map keys must be strings, not bytes"),
        ({"a": float("nan")}, "NaN and infinity"),
        ([float("-inf")], "NaN and infinity"),
    ],
)
def test_msgpack_values_that_are_not_json_are_invalid(value: Any, fragment: str) -> None:
    with pytest.raises(DecodeError, match=fragment) as info:
        decode_request(pack(envelope(value), MSGPACK), MSGPACK, LIMITS)
    assert (info.value.code, info.value.request_id) == ("invalid_request", "r1")


def test_non_string_keys_in_msgpack_are_invalid() -> None:
    with pytest.raises(DecodeError, match="msgpack"):
        decode_request(pack(envelope({1: "a"}), MSGPACK), MSGPACK, LIMITS)
