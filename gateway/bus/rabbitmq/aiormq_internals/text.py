"""AMQP short strings that are not UTF-8 are read with replacement characters, not refused.

pamqp decodes header-table keys and short-string properties (correlation_id, reply_to, user_id ...)
as strict UTF-8, and a failure there is a frame error: aiormq closes the whole connection. Any
publisher can send such bytes (RabbitMQ passes them on), and the message, unacknowledged, goes
back to the queue and breaks every connection it is delivered to, so one message would stop the
gateway. ``tolerate_non_utf8`` swaps pamqp's two decoders for ones that replace bad bytes (what
the gateway already does for header values); the pipeline then judges the message like any other.
It changes pamqp for the whole process, once; only input pamqp would have refused reads differently.
``decoder_fits`` checks pamqp's dispatch tables first; when they differ (another pamqp), nothing
is changed and pamqp stays strict (a warning says so).
"""

from __future__ import annotations

import logging
import struct
from typing import Any

from pamqp import common, decode

log = logging.getLogger(__name__)


def _short_str(value: bytes) -> tuple[int, str]:
    try:
        length = common.Struct.byte.unpack(value[0:1])[0]
    except (struct.error, TypeError) as err:
        raise ValueError("Could not unpack short string value") from err
    return length + 1, value[1 : length + 1].decode("utf-8", "replace")


def _field_table(value: bytes) -> tuple[int, common.FieldTable]:
    try:
        length = common.Struct.integer.unpack(value[0:4])[0]
        offset, end = 4, 4 + length
        if end > len(value):
            raise ValueError("Field table length exceeds available data")
        data: dict[str, Any] = {}
        while offset < end:
            key_length = common.Struct.byte.unpack_from(value, offset)[0]
            offset += 1
            if offset + key_length > end:
                raise ValueError("Field table key length exceeds data")
            key = value[offset : offset + key_length].decode("utf-8", "replace")
            offset += key_length
            consumed, data[key] = decode.embedded_value(value[offset:])
            offset += consumed
        return end, data
    except (struct.error, TypeError) as err:
        raise ValueError("Could not unpack data") from err


def decoder_fits(module: object) -> bool:
    """Has ``module`` pamqp's decoder dispatch tables (3.x/4.x), holding the entries replaced here?"""
    methods = getattr(module, "METHODS", None)
    mapping = getattr(module, "TABLE_MAPPING", None)
    return (
        isinstance(methods, dict)
        and isinstance(mapping, dict)
        and "shortstr" in methods
        and "table" in methods
        and b"F" in mapping
        and callable(getattr(module, "embedded_value", None))
    )


def tolerate_non_utf8() -> bool:
    """Install the replacing decoders in pamqp's dispatch tables (idempotent); False if they differ."""
    if not decoder_fits(decode):
        log.warning("pamqp's decoder has another shape here; a non-UTF-8 short string closes its connection")
        return False
    decode.METHODS["shortstr"] = _short_str
    decode.METHODS["table"] = _field_table
    decode.TABLE_MAPPING[b"F"] = _field_table  # a table nested in a table or an array
    return True
