"""The upstreams file's JSON Schema: current, deterministic, and what editors need to accept our examples."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml

from gateway.cli.contract import documents
from gateway.config_file import SCHEMA_FILE, schema

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = [REPO / "deploy" / "upstreams.example.yaml", REPO / "deploy" / "k8s" / "upstreams.yaml"]


def test_every_committed_schema_is_current() -> None:
    for name, data in documents().items():
        assert (REPO / "schemas" / name).read_bytes() == data, f"schemas/{name} is stale: run `cmn schemas`"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_the_examples_validate_and_point_editors_at_the_schema(example: Path) -> None:
    text = example.read_text()
    first = text.splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema=")
    assert (example.parent / first.split("=", 1)[1]).resolve() == REPO / "schemas" / SCHEMA_FILE
    jsonschema.Draft202012Validator(schema()).validate(yaml.safe_load(text))


def test_the_schema_refuses_a_misspelled_key_as_the_gateway_does() -> None:
    document = {"upstreams": {"p": {"endpoints": ["https://p.example.com"], "brekaer": {}}}}
    with pytest.raises(jsonschema.ValidationError, match="brekaer"):
        jsonschema.Draft202012Validator(schema()).validate(document)
    short_form = {"upstreams": {}, "certificates": {"api": {"source": "dev"}}}
    jsonschema.Draft202012Validator(schema()).validate(short_form)  # as CertificatesConfig accepts it
