"""Redaction rules on their own: which keys are secret, and what is scrubbed from free text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.telemetry.redaction import REDACTED, Redactor, is_secret_key, redact, redact_text


@pytest.mark.parametrize(
    "key",
    [
        "Authorization",
        "proxy-authorization",
        "COOKIE",
        "Set-Cookie",
        "X-Api-Key",
        "client_secret",
        "AZURE_CLIENT_SECRET",
        "db_password",
        "refresh_token",
        "access-token",
        "credentials",
        "apikey",
    ],
)
def test_secret_keys(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["event", "request_id", "trace_id", "upstream", "content-type", "idempotency_key"])
def test_ordinary_keys(key: str) -> None:
    assert not is_secret_key(key)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Bearer abc.def-ghi", f"Bearer {REDACTED}"),
        ("auth Basic dXNlcjpwYXNz done", f"auth Basic {REDACTED} done"),
        ("https://u:p@h.example/x", f"https://{REDACTED}@h.example/x"),
        ("/pay?api_key=1&x=2&client_secret=3", f"/pay?api_key={REDACTED}&x=2&client_secret={REDACTED}"),
        ("plain words, nothing to hide", "plain words, nothing to hide"),
    ],
)
def test_text_scrubbing(text: str, expected: str) -> None:
    assert redact_text(text) == expected


def test_inputs_are_never_mutated() -> None:
    headers = {"Authorization": "Bearer x", "nested": {"password": "p"}}
    redacted = redact(headers)
    assert headers == {"Authorization": "Bearer x", "nested": {"password": "p"}}
    assert redacted == {"Authorization": REDACTED, "nested": {"password": REDACTED}}


def test_very_deep_structures_are_cut_off() -> None:
    deep: dict[str, object] = {"token": "t"}
    for _ in range(20):
        deep = {"level": deep}
    assert "'t'" not in repr(redact(deep))


@given(st.recursive(st.text(max_size=5), lambda inner: st.dictionaries(st.sampled_from(["a", "token", "b"]), inner)))
def test_no_value_under_a_secret_key_survives(value: object) -> None:
    def secrets_shown(node: object) -> bool:
        if isinstance(node, dict):
            return any((k == "token" and v != REDACTED) or secrets_shown(v) for k, v in node.items())
        return False

    assert not secrets_shown(redact(value))


def test_the_redactor_remembers_a_bounded_number_of_keys() -> None:
    redactor = Redactor(remember=2)
    assert redactor.mapping({"a": 1, "password": "p", "c": 3, "token": "t"}) == {
        "a": 1,
        "password": REDACTED,
        "c": 3,
        "token": REDACTED,
    }
    assert repr(redactor) == "<Redactor [2 keys known]>"
