"""The wire contract documents parking as the code does it: the tier names and the park headers."""

from __future__ import annotations

from gateway.bus.base import REQUESTS, park_destination
from gateway.dlq.letters import headers_for_replay
from gateway.envelope.schema import PARK, asyncapi
from gateway.parking import ticket


def test_asyncapi_documents_the_park_tiers_and_every_park_header() -> None:
    doc = asyncapi()
    assert doc["channels"]["park"]["address"] == PARK
    assert PARK.format(delay=5) == park_destination(REQUESTS, 5) == "cmn.requests.park.5s"
    headers = doc["components"]["messages"]["parked"]["headers"]["properties"]
    assert set(headers) == set(ticket.HEADERS)
    assert "request.parked" in doc["components"]["messages"]["telemetry"]["description"]


def test_a_replayed_dead_letter_starts_without_its_park_headers() -> None:
    # A parked copy dead-lettered (back past its deadline, say) and replayed by an operator: its seal was
    # used, its deadline gone; the replay is a fresh request, signed by the operator or not at all.
    parked = {**dict.fromkeys(ticket.HEADERS, "x"), "x-cmn-error": "deadline_exceeded: late", "traceparent": "t"}
    assert headers_for_replay(parked) == {"traceparent": "t"}
