from __future__ import annotations

from pathlib import Path

from gateway.envelope.schema import asyncapi, render

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def test_published_schemas_are_current() -> None:
    """schemas/ is generated from the models; regenerate with `cmn schemas` when this fails."""
    for name, data in render().items():
        path = SCHEMAS / name
        assert path.exists(), f"schemas/{name} missing: run `cmn schemas`"
        assert path.read_bytes() == data, f"schemas/{name} is stale: run `cmn schemas`"


def test_asyncapi_names_the_public_channels() -> None:
    doc = asyncapi()
    addresses = {c["address"] for c in doc["channels"].values()}
    assert {"cmn.requests", "cmn.telemetry", "cmn.requests.dlq"} <= addresses
    assert doc["asyncapi"] == "3.0.0"


def test_asyncapi_documents_the_control_channel_and_its_answers() -> None:
    doc = asyncapi()
    control = doc["channels"]["control"]
    assert control["address"] == "cmn.control"
    assert control["bindings"]["amqp"]["exchange"] == {"name": "cmn.control", "type": "topic", "durable": True}
    assert doc["operations"]["sendControlCommand"]["reply"]["channel"] == {"$ref": "#/channels/controlAnswers"}
    status = render()["control-status.schema.json"].decode()
    assert '"additionalProperties": false' in status and '"const": "status"' in status
    assert "CONTROL_PRINCIPALS" in control["description"]
