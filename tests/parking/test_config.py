"""The ``park:`` block of an upstream, and the parking desk the gateway builds from it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.settings import load_settings
from gateway.testing import FakeClock
from gateway.upstream.config import UpstreamsFile
from gateway.wiring import build_parking


def upstreams(**payments: object) -> UpstreamsFile:
    return UpstreamsFile.model_validate(
        {
            "upstreams": {
                "payments": {"endpoints": ["http://127.0.0.1:1"], **payments},
                "other": {"endpoints": ["http://127.0.0.1:2"]},
            }
        }
    )


def test_parking_is_off_when_no_upstream_asks() -> None:
    assert upstreams().upstreams["payments"].park is None
    assert build_parking(load_settings(), upstreams(), FakeClock()) is None


def test_the_tiers_of_every_upstream_are_declared_once_each() -> None:
    parking = build_parking(load_settings(PARK_SECRET="s" * 32), upstreams(park={"delays": [5, 1, 30, 5]}), FakeClock())
    assert parking is not None and parking.delays == (1, 5, 30)


@pytest.mark.parametrize("delays", [[], [0], [1.5], [3601], list(range(1, 12))])
def test_bad_delays_are_refused(delays: list[object]) -> None:
    with pytest.raises(ValidationError):
        upstreams(park={"delays": delays})


def test_a_short_park_secret_is_refused() -> None:
    with pytest.raises(Exception, match="PARK_SECRET"):
        load_settings(PARK_SECRET="short")
