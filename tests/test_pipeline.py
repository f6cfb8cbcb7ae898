"""Pipeline pieces that need no broker."""

from __future__ import annotations

import orjson

from gateway.envelope.codec import JSON, Reply
from gateway.pipeline import Pipeline


def test_an_unencodable_reply_becomes_an_internal_error_reply() -> None:
    """Whatever slips through (here a lone surrogate), the requester gets an answer and the message settles."""
    raw = Pipeline._encode(Reply(id="r1", status=200, headers={"x": "\udcff"}, body=b"ok"), JSON)
    doc = orjson.loads(raw)
    assert doc["id"] == "r1" and doc["status"] == 200
    assert doc["error"]["code"] == "internal" and "could not be encoded" in doc["error"]["message"]
    assert doc["headers"] == {}
