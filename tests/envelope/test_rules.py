"""RFC rules at the edge: header names and values, paths, methods. Each refusal is invalid_request,
names what was wrong, and carries the security kind of an attack where it is one."""

from __future__ import annotations

from typing import Any

import msgpack
import orjson
import pytest

from gateway.envelope.bounds import DecodeLimits
from gateway.envelope.codec import JSON, MSGPACK, DecodeError, decode_request

LIMITS = DecodeLimits(max_bytes=64 * 1024, max_depth=32, max_nodes=100_000)
CODECS = [JSON, MSGPACK]


def decode(codec: str, **fields: Any) -> Any:
    doc = {"id": "r1", "upstream": "payments", **fields}
    raw = orjson.dumps(doc) if codec == JSON else msgpack.packb(doc, use_bin_type=True)
    return decode_request(raw, codec, LIMITS)


def refused(codec: str, **fields: Any) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        decode(codec, **fields)
    assert (info.value.code, info.value.request_id) == ("invalid_request", "r1")
    return info.value


# -- headers ----------------------------------------------------------------------------------
@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("Transfer-Encoding ", "'Transfer-Encoding '"),
        ("X A", "'X A'"),
        ("", "''"),
        ("X:A", "'X:A'"),
        ("X-\u00e9", "'X-\\xe9'"),
        ("X\r\nInjected: 1", "'X\\r\\nInjected: 1'"),
        ("X\x00", "'X\\x00'"),
        ("(comment)", "'(comment)'"),
        ("N" * 300 + " ", "'" + "N" * 64 + "'..."),
    ],
)
def test_header_names_must_be_tokens(codec: str, name: str, shown: str) -> None:
    error = refused(codec, headers={"X-Ok": "1", name: "v"})
    assert error.message == f"headers: header name {shown} is not an RFC 9110 token"
    assert error.security_kind == "invalid_header"


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("value", ["a\rb", "a\nb", "a\x00b", "\x01", "a\x1fb", "del\x7f", "a\r\n\r\nGET / HTTP/1.1"])
def test_header_values_free_of_controls(codec: str, value: str) -> None:
    error = refused(codec, headers={"X-Evil": value})
    assert error.message == "headers: header 'X-Evil' has a control character (CR, LF, NUL ...) in its value"
    assert error.security_kind == "invalid_header"
    assert value not in error.message


@pytest.mark.parametrize("codec", CODECS)
def test_good_headers_pass(codec: str) -> None:
    headers = {"X-Tab": "a\tb", "!#$%&'*+-.^_`|~09AZaz": "x", "Accept": "", "X-Utf8": "caf\u00e9"}
    assert decode(codec, headers=headers).headers == headers


@pytest.mark.parametrize("codec", CODECS)
def test_a_header_of_the_wrong_type_is_not_an_attack(codec: str) -> None:
    assert refused(codec, headers={"a": 1}).security_kind is None


# -- paths ------------------------------------------------------------------------------------
@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(
    "path",
    [
        "/../../admin",
        "/a/./b",
        "/a/..",
        "/a/.",
        "/%2e%2e/admin",
        "/%2E%2E/admin",
        "/%2e%2E/admin",
        "/.%2e/admin",
        "/a%2F..%2Fb",
        "/a%2f..%2fb",
        "/a%5C..%5Cadmin",
        "/%252e%252e/admin",
        "/%25252e%25252e/admin",
        "/a/..;/admin",
        "/a/%2e%2e%3b/admin",
    ],
)
def test_dot_segments_are_refused(codec: str, path: str) -> None:
    error = refused(codec, path=path)
    assert error.message == "path: path must not hold '.' or '..' segments (raw or percent-encoded)"
    assert error.security_kind == "invalid_path"


@pytest.mark.parametrize("codec", CODECS)
def test_endless_encoding_is_refused(codec: str) -> None:
    error = refused(codec, path="/%" + "25" * 6 + "2e")  # seven layers
    assert "percent-encoded more than 4 times" in error.message
    assert error.security_kind == "invalid_path"


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("path", ["http://evil.example/", "//evil.example/x", "/a b", "/a\\b", "/a\r\nHost: x"])
def test_other_path_attacks_are_invalid_path(codec: str, path: str) -> None:
    assert refused(codec, path=path).security_kind == "invalid_path"


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(
    "path",
    ["/", "/v1/file.json", "/.well-known/jwks", "/a/...", "/a..b/c.", "/search?next=../../x", "/q?p=%2e%2e", "/100%25"],
)
def test_ordinary_paths_pass(codec: str, path: str) -> None:
    assert decode(codec, path=path).path == path


# -- methods ----------------------------------------------------------------------------------
@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("method", ["CONNECT", "connect", "TRACE", "Trace"])
def test_connect_and_trace_are_refused(codec: str, method: str) -> None:
    error = refused(codec, method=method)
    assert error.message == f"method: method {method.upper()} is not forwarded"


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("method", ["", "GE T", "GET\n", "G\u00c9T", "GET/1", "A" * 17, "\u017fEARCH"])
def test_methods_must_be_tokens(codec: str, method: str) -> None:
    error = refused(codec, method=method)
    assert error.message == "method: method must be an RFC 9110 token of at most 16 characters"
    assert error.security_kind is None


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(("method", "expected"), [("get", "GET"), ("M-SEARCH", "M-SEARCH"), ("PROPFIND", "PROPFIND")])
def test_token_methods_pass_upper_cased(codec: str, method: str, expected: str) -> None:
    assert decode(codec, method=method).method == expected


@pytest.mark.parametrize("codec", CODECS)
def test_unknown_keys_are_named_safely(codec: str) -> None:
    error = refused(codec, **{"\r\nX-Injected: 1": 1})
    assert error.message == "'\\r\\nX-Injected: 1': Extra inputs are not permitted"
