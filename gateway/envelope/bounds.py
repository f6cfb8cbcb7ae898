"""Bounds on what decoding a hostile envelope may cost. Pure functions over bytes and decoded values.

A message of n bytes holds at most n values, so the node count only needs checking when a message is
larger than ``max_nodes`` bytes; those are scanned *before* parsing, with C-speed byte counts for
JSON and a header walk (no values built) for msgpack. Depth is checked on every message: orjson
and msgpack stop at their own stack limits (1024), and the decoded ``json`` value is then walked,
which costs nothing for a typical request (the walk starts only when there are enough brackets).

Depth counts containers: the envelope map itself is depth 1, its ``json`` object depth 2.
Nodes count every decoded value, map keys included: ``{"a": [1]}`` holds 4.
Each check returns ``None`` when the input is within bounds, else what was exceeded.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import msgpack


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """How big, how deep and how many values a request envelope may be (MAX_REQUEST_BYTES,
    MAX_ENVELOPE_DEPTH, MAX_ENVELOPE_NODES)."""

    max_bytes: int
    max_depth: int
    max_nodes: int

    def too_deep(self) -> str:
        return f"envelope nests deeper than {self.max_depth} levels (MAX_ENVELOPE_DEPTH)"

    def too_many(self) -> str:
        return f"envelope holds more than {self.max_nodes} values (MAX_ENVELOPE_NODES)"


# -- JSON, before parsing ---------------------------------------------------------------------
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_STRUCTURAL = re.compile(rb"[,:\[{]")
_COUNTED = (b",", b":", b"[", b"{")
_EMPTIES = (b"[]", b"{}")


def json_nodes_exceeded(raw: bytes, limits: DecodeLimits) -> str | None:
    """Count the values in a JSON text without parsing it: 1 + commas + colons + non-empty containers.

    The punctuation inside string literals is subtracted; each string is itself a value, so no more
    than ``max_nodes`` of them are visited. An empty container written with spaces (``[ ]``) counts
    as holding one value: the count never falls below the truth.
    """
    total = 1 + sum(raw.count(c) for c in _COUNTED) - sum(raw.count(e) for e in _EMPTIES)
    if total <= limits.max_nodes:
        return None
    for seen, match in enumerate(_STRING.finditer(raw)):
        if seen >= limits.max_nodes:
            return limits.too_many()
        start, end = match.span()
        if _STRUCTURAL.search(raw, start, end) is not None:
            total -= sum(raw.count(c, start, end) for c in _COUNTED)
            total += sum(raw.count(e, start, end) for e in _EMPTIES)
    return limits.too_many() if total > limits.max_nodes else None


def json_may_be_deep(raw: bytes, limits: DecodeLimits) -> bool:
    """Fewer opening brackets than the depth limit cannot nest beyond it (brackets in strings count too)."""
    return raw.count(b"[") + raw.count(b"{") > limits.max_depth


# -- msgpack, before parsing ------------------------------------------------------------------
# First bytes 0xc0-0xdf → (kind, width): a scalar of `width` bytes in all; str/bin/ext with a length
# of `width` bytes (ext adds a type byte); array/map with a count of `width` bytes. None: never used.
_SCALAR, _SIZED, _EXT, _ARRAY, _MAP = range(5)
_HEADERS: tuple[tuple[int, int] | None, ...] = (
    (_SCALAR, 1), None, (_SCALAR, 1), (_SCALAR, 1),  # nil, (unused), false, true
    (_SIZED, 1), (_SIZED, 2), (_SIZED, 4),  # bin 8/16/32
    (_EXT, 1), (_EXT, 2), (_EXT, 4),  # ext 8/16/32
    (_SCALAR, 5), (_SCALAR, 9),  # float 32/64
    (_SCALAR, 2), (_SCALAR, 3), (_SCALAR, 5), (_SCALAR, 9),  # uint 8..64
    (_SCALAR, 2), (_SCALAR, 3), (_SCALAR, 5), (_SCALAR, 9),  # int 8..64
    (_SCALAR, 3), (_SCALAR, 4), (_SCALAR, 6), (_SCALAR, 10), (_SCALAR, 18),  # fixext 1..16
    (_SIZED, 1), (_SIZED, 2), (_SIZED, 4),  # str 8/16/32
    (_ARRAY, 2), (_ARRAY, 4), (_MAP, 2), (_MAP, 4),  # array 16/32, map 16/32
)  # fmt: skip


def msgpack_shape_exceeded(raw: bytes, limits: DecodeLimits) -> str | None:
    """Walk the msgpack headers of the first object, building nothing, until ``max_nodes`` values or
    ``max_depth`` levels are exceeded. Malformed input stops the walk; the parser reports it."""
    end, pos, nodes = len(raw), 0, 0
    pending = [1]  # values still to read at each open level; the first entry is the top level
    while pending:
        if pending[-1] == 0:
            pending.pop()
            continue
        if pos >= end:
            return None
        pending[-1] -= 1
        nodes += 1
        if nodes > limits.max_nodes:
            return limits.too_many()
        first = raw[pos]
        children = 0
        if first <= 0x7F or first >= 0xE0:  # fixint
            pos += 1
            continue
        if first <= 0x8F:  # fixmap
            children, pos = 2 * (first & 0x0F), pos + 1
        elif first <= 0x9F:  # fixarray
            children, pos = first & 0x0F, pos + 1
        elif first <= 0xBF:  # fixstr
            pos += 1 + (first & 0x1F)
            continue
        else:
            header = _HEADERS[first - 0xC0]
            if header is None:
                return None
            kind, width = header
            if kind == _SCALAR:
                pos += width
                continue
            count = int.from_bytes(raw[pos + 1 : pos + 1 + width], "big")
            pos += 1 + width
            if kind in (_SIZED, _EXT):
                pos += count + (kind == _EXT)
                continue
            children = count * 2 if kind == _MAP else count
        if len(pending) > limits.max_depth:
            return limits.too_deep()
        if children:
            pending.append(children)
    return None


# -- the decoded ``json`` value -----------------------------------------------------------------
_JSON_SCALARS = (str, int, bool, type(None))
_FOREIGN = {
    bytes: "a msgpack bin value (send bytes in body)",
    msgpack.ExtType: "a msgpack ext value",
    msgpack.Timestamp: "a msgpack timestamp",
}


def json_value_problem(value: object, limits: DecodeLimits) -> str | None:
    """Is ``value`` (the envelope's ``json``) plain JSON within the depth limit? Refuses msgpack
    bin/ext/timestamp values, non-string keys and NaN/infinity."""
    return _problem(value, limits.max_depth - 1, limits)


def _problem(value: object, levels: int, limits: DecodeLimits) -> str | None:
    if isinstance(value, _JSON_SCALARS):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else "json: NaN and infinity are not JSON"
    if isinstance(value, dict):
        if levels <= 0:
            return limits.too_deep()
        for key, item in value.items():
            if type(key) is not str:
                return f"json: map keys must be strings, not {type(key).__name__}"
            if type(item) not in _JSON_SCALARS and (problem := _problem(item, levels - 1, limits)):
                return problem
        return None
    if isinstance(value, list):
        if levels <= 0:
            return limits.too_deep()
        for item in value:
            if type(item) not in _JSON_SCALARS and (problem := _problem(item, levels - 1, limits)):
                return problem
        return None
    return f"json: {_FOREIGN.get(type(value)) or type(value).__name__} is not JSON"
