"""Secrets never reach a log line or a span: redaction of keys, bearer tokens and URL query secrets.

A key is secret when it names a credential header (``Authorization``, ``Cookie``, ``X-Api-Key`` ...)
or contains ``secret``, ``password``, ``token``, ``credential`` or ``api key`` in any spelling.
Values are walked through nested dicts, lists and ``(name, value)`` pairs (how header lists
travel); strings are scrubbed of ``Bearer``/``Basic`` credentials and secret query parameters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "[REDACTED]"
MAX_DEPTH = 8  # deeper structures are replaced whole: a log line is no place for them anyway

SECRET_KEYS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "x-auth-token",
        "x-amz-security-token",
        "ocp-apim-subscription-key",
    }
)
_SECRET_PART = re.compile(r"secret|password|passwd|token|credential|api[-_]?key|private[-_]?key", re.IGNORECASE)
_NEVER_SECRET = frozenset({"event", "level", "timestamp", "logger", "trace_id", "span_id", "request_id"})

_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic|digest)\s+[A-Za-z0-9._~+/=:-]+")
_QUERY_SECRET = re.compile(
    r"(?i)([?&;][^=&;#\s]*(?:secret|password|passwd|token|credential|api_?key|apikey|signature|sig)[^=&;#\s]*=)"
    r"[^&;#\s]*"
)
_MAY_CARRY_CREDENTIAL = re.compile(r"[ ?&;@]")  # every pattern below needs one of these
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s:]+:[^/@\s]+@")


def is_secret_key(key: str) -> bool:
    lowered = key.lower()
    if lowered in _NEVER_SECRET:
        return False
    return lowered in SECRET_KEYS or _SECRET_PART.search(lowered) is not None


def redact_text(text: str) -> str:
    """Scrubs credentials embedded in free text (auth schemes, URL user-info, secret query values)."""
    if _MAY_CARRY_CREDENTIAL.search(text) is None:
        return text  # the common, cheap case
    text = _AUTH_SCHEME.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _URL_USERINFO.sub(lambda m: f"{m.group(1)}{REDACTED}@", text)
    return _QUERY_SECRET.sub(lambda m: f"{m.group(1)}{REDACTED}", text)


def redact_url(url: str) -> str:
    return redact_text(url)


class Redactor:
    """Walks values replacing secrets; remembers which keys are secret.

    Keys in log calls come from code, a small fixed set, so the answer per key is kept (up to
    ``remember`` keys, against a caller logging dicts keyed by user input).
    """

    __slots__ = ("_known", "_remember")

    def __init__(self, remember: int = 4096) -> None:
        self._known: dict[str, bool] = {}
        self._remember = remember

    def is_secret(self, key: str) -> bool:
        known = self._known.get(key)
        if known is None:
            known = is_secret_key(key)
            if len(self._known) < self._remember:
                self._known[key] = known
        return known

    def mapping(self, mapping: Mapping[Any, Any], depth: int = 0) -> dict[Any, Any]:
        """A copy of ``mapping`` with secrets replaced; inputs are never mutated."""
        return {
            key: REDACTED if isinstance(key, str) and self.is_secret(key) else self.value(item, depth + 1)
            for key, item in mapping.items()
        }

    def value(self, value: Any, depth: int = 0) -> Any:
        if isinstance(value, str):
            return redact_text(value)
        if value is None or isinstance(value, int | float):
            return value
        if depth >= MAX_DEPTH:
            return REDACTED if isinstance(value, Mapping | list | tuple) else value
        if isinstance(value, Mapping):
            return self.mapping(value, depth)
        if isinstance(value, list | tuple):
            if len(value) == 2 and isinstance(value[0], str) and self.is_secret(value[0]):
                return (value[0], REDACTED)
            return [self.value(item, depth + 1) for item in value]
        return value

    def __repr__(self) -> str:
        return f"<Redactor [{len(self._known)} keys known]>"


def redact(value: Any) -> Any:
    """A copy of ``value`` with secrets replaced; inputs are never mutated."""
    return Redactor().value(value)
