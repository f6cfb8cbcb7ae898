"""Hostile shapes through the decoder and admission (hypothesis).

Whatever arrives, the only exceptions are the gateway's own errors, and whatever is accepted keeps
the edge's promises: header names are tokens, values carry no CR/LF/NUL, paths no dot segments,
``json`` is plain JSON within the depth and node limits, timeouts within the cap.
"""

from __future__ import annotations

import json
import math
import string
from typing import Any
from urllib.parse import unquote

import msgpack
import orjson
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gateway.admission import HOP_BY_HOP, Admission
from gateway.envelope.bounds import DecodeLimits
from gateway.envelope.codec import JSON, MSGPACK, decode_request
from gateway.envelope.models import RequestEnvelope
from gateway.errors import GatewayError
from gateway.testing import FakeClock

TCHAR = frozenset("!#$%&'*+-.^_`|~" + string.digits + string.ascii_letters)  # RFC 9110 §5.6.2, written out
MAX_TIMEOUT_MS = 60_000
# Small node limits make most examples take the pre-parse count; the large one the parse-then-check path.
LIMITS = st.sampled_from(
    [DecodeLimits(max_bytes=8192, max_depth=6, max_nodes=64), DecodeLimits(max_bytes=8192, max_depth=6, max_nodes=8192)]
)
HOSTILE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

header_names = st.sampled_from(
    ["Transfer-Encoding ", "X A", "", "Connection", "Content-Length", "Host", "te", "X-Ok", "x:y", "X\r\nY"]
) | st.text(max_size=10)
header_values = st.sampled_from(["close", "X-Ok, Host", "a\r\nb", "\x00", "\t", "chunked", "\x7f"]) | st.text(
    max_size=10
)
SEGMENTS = ["a", ".", "..", "%2e", "%2E%2e", ".%2e", "%252e", "%25252e", "%2F", "%2f", "%5C", "..;", "b.c"]
segments = st.sampled_from([*SEGMENTS, "%", "%25", "?", "x=..", "\\", " ", "//", "%3F", "http:"])
paths = st.lists(segments, max_size=6).map(lambda parts: "/" + "/".join(parts)) | st.lists(segments, max_size=6).map(
    "".join
)
methods = st.sampled_from(["GET", "post", "CONNECT", "trace", "M-SEARCH", "GET\n", "G T", ""]) | st.text(max_size=6)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=6)
    | st.binary(max_size=4)
    | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=3))
    | st.builds(msgpack.Timestamp, st.integers(0, 2**32 - 1))
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=4) | st.binary(max_size=2), inner, max_size=5)
    ),
    max_leaves=40,
)


def _chain(depth: int) -> Any:
    value: Any = {}
    for _ in range(depth):
        value = [value]
    return value


# Deep chains and wide arrays, the shapes of the memory bombs, at test scale.
bombs = st.builds(_chain, st.integers(1, 40)) | st.builds(
    lambda n, item: [item] * n, st.integers(0, 3000), st.sampled_from([{}, [], 0, "", None])
)


fields = st.fixed_dictionaries(
    {"id": st.just("r1"), "upstream": st.just("payments")},
    optional={
        "method": methods,
        "path": paths,
        "headers": st.dictionaries(header_names, header_values, max_size=4),
        "json": json_values | bombs,
        "body": st.binary(max_size=8) | st.text(max_size=8),
        "timeout_ms": st.integers(-1, 10**7),
        "sent_at": st.integers(0, 2**63),
        "deadline": st.integers(0, 2**63),
    },
)


# Unknown keys too (their names end up in the error message, which may become a header).
envelopes = st.builds(
    lambda extra, known: {**extra, **known}, st.dictionaries(st.text(max_size=8), scalars, max_size=2), fields
)


def encode(doc: dict[str, Any], codec: str) -> bytes:
    if codec == MSGPACK:
        return msgpack.packb(doc, use_bin_type=True)  # type: ignore[no-any-return]  # untyped library
    try:
        return orjson.dumps(doc)
    except TypeError:  # bytes, ext values, byte keys: send their reprs (and NaN as the literal)
        return json.dumps(doc, default=repr, skipkeys=True).encode()


def decode_or_refuse(raw: bytes, codec: str, limits: DecodeLimits) -> RequestEnvelope | None:
    try:
        return decode_request(raw, codec, limits)
    except GatewayError as exc:
        refusal = exc
    assert refusal.code in ("invalid_request", "payload_too_large")
    assert not {"\r", "\n", "\x00"} & set(refusal.message)  # the message may be a header (x-cmn-error)
    return None


# -- the invariants, written independently of the code under test -------------------------------
def has_dot_segment(path: str) -> bool:
    path = path.split("?", 1)[0]
    for _ in range(6):
        if any(s.split(";")[0] in (".", "..") for s in path.replace("\\", "/").split("/")):
            return True
        path = unquote(path)
    return False


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


def nodes(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + sum(1 + nodes(v) for v in value.values())
    if isinstance(value, list):
        return 1 + sum(nodes(v) for v in value)
    return 1


def plain_json(value: Any) -> bool:
    if isinstance(value, dict):
        return all(type(k) is str and plain_json(v) for k, v in value.items())
    if isinstance(value, list):
        return all(plain_json(v) for v in value)
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, str | int | bool)


def assert_edge_invariants(envelope: RequestEnvelope, raw: bytes, codec: str, limits: DecodeLimits) -> None:
    for name, value in envelope.headers.items():
        assert name and set(name) <= TCHAR, name
        assert not {"\r", "\n", "\x00"} & set(value), value
    assert not has_dot_segment(envelope.path), envelope.path
    assert envelope.method not in ("CONNECT", "TRACE") and set(envelope.method) <= TCHAR
    decoded = orjson.loads(raw) if codec == JSON else msgpack.unpackb(raw, raw=False)
    assert depth(decoded) <= limits.max_depth
    assert nodes(decoded) <= limits.max_nodes
    assert plain_json(envelope.json_)


@HOSTILE
@given(doc=envelopes, codec=st.sampled_from([JSON, MSGPACK]), limits=LIMITS)
def test_hostile_envelopes_are_refused_or_safe(doc: dict[str, Any], codec: str, limits: DecodeLimits) -> None:
    raw = encode(doc, codec)
    envelope = decode_or_refuse(raw, codec, limits)
    event("accepted" if envelope is not None else "refused")
    if envelope is not None:
        assert_edge_invariants(envelope, raw, codec, limits)


@HOSTILE
@given(
    doc=envelopes,
    codec=st.sampled_from([JSON, MSGPACK]),
    limits=LIMITS,
    broker_ms=st.none() | st.integers(0, 2**63),
    waited=st.floats(0, 1000),
)
def test_admission_of_whatever_decodes(
    doc: dict[str, Any], codec: str, limits: DecodeLimits, broker_ms: int | None, waited: float
) -> None:
    envelope = decode_or_refuse(encode(doc, codec), codec, limits)
    if envelope is None:
        return
    clock = FakeClock()
    admission = Admission(
        clock,
        30.0,
        limits.max_bytes,
        max_timeout_ms=MAX_TIMEOUT_MS,
        max_envelope_depth=limits.max_depth,
        max_envelope_nodes=limits.max_nodes,
    )
    arrived = clock.monotonic()
    clock.advance(waited)
    try:
        admitted = admission.admit(envelope, known=True, arrived_at=arrived, broker_timestamp_ms=broker_ms)
    except GatewayError as exc:
        event(f"refused: {exc.code}")
        return
    event("admitted")
    assert envelope.timeout_ms is None or envelope.timeout_ms <= MAX_TIMEOUT_MS
    assert admitted.deadline.remaining(clock) <= MAX_TIMEOUT_MS / 1000
    named = {o.strip().lower() for k, v in envelope.headers.items() if k.lower() == "connection" for o in v.split(",")}
    for name in admitted.headers:
        assert name.lower() not in HOP_BY_HOP | named
        assert name in envelope.headers or name == "Content-Type"


msgpack_garbage = st.lists(
    st.sampled_from([0x80, 0x8F, 0x90, 0x9F, 0xA2, 0xC0, 0xC1, 0xC4, 0xC7, 0xCA, 0xD4, 0xD9, 0xDC, 0xDD, 0xDE, 0xDF])
    | st.integers(0, 255),
    max_size=300,
).map(bytes)
json_garbage = st.text(st.sampled_from('[]{}",:0\\ a-e.'), max_size=300).map(str.encode)


@HOSTILE
@given(raw=st.binary(max_size=300) | msgpack_garbage | json_garbage, codec=st.sampled_from([JSON, MSGPACK]))
def test_random_bytes_are_refused_or_safe(raw: bytes, codec: str) -> None:
    limits = DecodeLimits(max_bytes=200, max_depth=6, max_nodes=32)
    envelope = decode_or_refuse(raw, codec, limits)
    if envelope is not None:
        assert_edge_invariants(envelope, raw, codec, limits)
