"""The ``health.verdicts`` notice (gateway/envelope/health.py): bounded, validated, hostile input refused."""

from __future__ import annotations

import orjson
import pytest

from gateway.envelope.health import MAX_NOTICE_BYTES, MAX_VERDICTS, Verdict, parse_verdicts


def notice(**fields: object) -> bytes:
    base: dict[str, object] = {
        "type": "health.verdicts",
        "instance": "gw-1",
        "fleet": "cmn.requests",
        "sent_at": 1_800_000_000.5,
        "verdicts": [{"upstream": "payments", "endpoint": "http://10.0.0.2:8080", "down": True, "since": 1.0}],
    }
    return orjson.dumps({**base, **fields})


def test_a_notice_round_trips() -> None:
    parsed = parse_verdicts(notice())
    assert parsed.verdicts == (Verdict(upstream="payments", endpoint="http://10.0.0.2:8080", down=True, since=1.0),)
    assert parse_verdicts(parsed.encode()) == parsed


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe not json",
        b"[1, 2, 3]",
        notice(type="status"),
        notice(instance="../etc/passwd"),
        notice(fleet=""),
        notice(sent_at=-1),
        notice(extra=True),
        notice(verdicts=[{"upstream": "payments", "endpoint": "", "down": True, "since": 1.0}]),
        notice(verdicts=[{"upstream": "a b", "endpoint": "http://x", "down": True, "since": 1.0}]),
        notice(verdicts=[{"upstream": "p", "endpoint": "http://x", "down": "maybe", "since": 1.0}]),
        notice(verdicts=[{"upstream": "p", "endpoint": "http://x", "down": True, "since": 1, "more": 1}]),
        notice(
            verdicts=[
                {"upstream": "p", "endpoint": f"http://x/{i}", "down": True, "since": 1}
                for i in range(MAX_VERDICTS + 1)
            ]
        ),
    ],
)
def test_hostile_notices_are_refused(body: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011  # each case fails its own way; refused is what counts
        parse_verdicts(body)


def test_the_size_is_checked_before_parsing() -> None:
    with pytest.raises(ValueError, match="at most"):
        parse_verdicts(b" " * (MAX_NOTICE_BYTES + 1))
