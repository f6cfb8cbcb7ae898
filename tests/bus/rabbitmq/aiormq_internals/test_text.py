"""Non-UTF-8 short strings and header keys decode with replacement characters, and only on the pamqp it knows."""

from __future__ import annotations

import logging
import struct
from types import SimpleNamespace

import pytest
from pamqp import decode

from gateway.bus.rabbitmq.aiormq_internals import text
from gateway.bus.rabbitmq.aiormq_internals.text import decoder_fits, tolerate_non_utf8

NOT_UTF8 = b"\xff\xfe"


def table(key: bytes, value: bytes) -> bytes:
    entry = struct.pack(">B", len(key)) + key + b"S" + struct.pack(">I", len(value)) + value
    return struct.pack(">I", len(entry)) + entry


def test_short_strings_and_table_keys_that_are_not_utf8_are_read_with_replacements() -> None:
    assert tolerate_non_utf8()
    assert tolerate_non_utf8()  # applying twice changes nothing

    consumed, value = decode.by_type(struct.pack(">B", 3) + b"a" + NOT_UTF8, "shortstr")
    assert (consumed, value) == (4, "a\ufffd\ufffd")
    _, headers = decode.by_type(table(b"k" + NOT_UTF8, b"v"), "table")
    assert headers == {"k\ufffd\ufffd": "v"}


def test_pamqps_own_decoder_has_the_shape_that_is_patched() -> None:
    assert decoder_fits(decode)


@pytest.mark.parametrize(
    "module",
    [
        object(),
        SimpleNamespace(METHODS={"shortstr": None}, TABLE_MAPPING={b"F": None}, embedded_value=len),
        SimpleNamespace(METHODS={"shortstr": None, "table": None}, TABLE_MAPPING={}, embedded_value=len),
        SimpleNamespace(METHODS={"shortstr": None, "table": None}, TABLE_MAPPING={b"F": None}),
    ],
    ids=["nothing", "no-table-decoder", "no-nested-table", "no-embedded-value"],
)
def test_a_decoder_of_another_shape_is_left_strict(
    module: object, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    before = dict(getattr(module, "METHODS", {}))
    monkeypatch.setattr(text, "decode", module)  # what another pamqp version would look like
    with caplog.at_level(logging.WARNING, logger=text.__name__):
        assert not tolerate_non_utf8()
    assert "another shape" in caplog.text
    assert getattr(module, "METHODS", {}) == before  # nothing replaced
