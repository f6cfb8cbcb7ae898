"""The wire contract documents parking as the code does it: the tier names and the park headers."""

from __future__ import annotations

from gateway.bus.base import REQUESTS, park_destination
from gateway.envelope.schema import PARK, asyncapi
from gateway.parking import ticket


def test_asyncapi_documents_the_park_tiers_and_every_park_header() -> None:
    doc = asyncapi()
    assert doc["channels"]["park"]["address"] == PARK
    assert PARK.format(delay=5) == park_destination(REQUESTS, 5) == "cmn.requests.park.5s"
    headers = doc["components"]["messages"]["parked"]["headers"]["properties"]
    assert set(headers) == set(ticket.HEADERS)
    assert "request.parked" in doc["components"]["messages"]["telemetry"]["description"]
