"""`cmn config check`: the environment and the upstreams file, every problem at once, no broker.

Errors are what would stop ``cmn serve`` (a setting or a field it refuses); warnings are what it
would accept but is probably a mistake: an empty upstream list, an unknown variable that looks like
one of ours, a timeout the cap cuts, a retry count that multiplies load. Each finding names where
it is (``AMQP_URL``, ``upstreams.payments.brekaer``) and, for a misspelled name, what was meant.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from gateway.config_file import ConfigDocument, schema
from gateway.errors import ConfigError
from gateway.settings import KNOWN_ENV_VARS, Settings, read_yaml

Level = Literal["error", "warning"]
ENV_PREFIXES = ("CMN_", "AMQP_", "KAFKA_", "REDIS_", "AZURE_", "OTLP_", "METRICS_", "LOG_", "SHARED_", "CONTROL_")
MANY_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class Finding:
    level: Level
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.where}: {self.message}"


@dataclass(frozen=True, slots=True)
class Report:
    findings: tuple[Finding, ...]
    upstreams_file: Path | None

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "warning"]

    def exit_code(self, *, strict: bool) -> int:
        """0 clean; 2 on errors; 1 on warnings alone when ``strict``."""
        if self.errors:
            return 2
        return 1 if strict and self.warnings else 0


def check(environ: Mapping[str, str], upstreams_file: Path | None = None) -> Report:
    """Check ``environ`` as ``Settings`` reads it and the upstreams file (``upstreams_file``, else
    CMN_UPSTREAMS_FILE); nothing is started and no broker is asked."""
    findings: list[Finding] = list(_unknown_variables(environ))
    settings = None
    try:
        # What Settings would read from this environment, and nothing else (no process environment).
        settings = Settings.model_validate({k.upper(): v for k, v in environ.items() if k.upper() in KNOWN_ENV_VARS})
    except ValidationError as exc:
        findings += [_setting_error(error) for error in exc.errors()]
    path = upstreams_file or (settings.upstreams_file if settings is not None else None)
    if path is None and upstreams_file is None and "CMN_UPSTREAMS_FILE" in environ:
        path = Path(environ["CMN_UPSTREAMS_FILE"])
    document = None
    if path is None:
        findings.append(Finding("error", "CMN_UPSTREAMS_FILE", "not set: `cmn serve` needs an upstreams file"))
    else:
        try:
            raw = read_yaml(path)
            document = ConfigDocument.model_validate(raw)
        except ConfigError as exc:
            findings.append(Finding("error", str(path), exc.message.removeprefix("CMN_UPSTREAMS_FILE: ")))
        except ValidationError as exc:
            findings += [_document_error(error) for error in exc.errors()]
    if settings is not None:
        findings += _unusual_settings(settings)
    if document is not None:
        findings += _unusual_document(document)
    if settings is not None and document is not None:
        findings += _park_secret(settings, document)
    return Report(tuple(findings), path)


# -- errors -------------------------------------------------------------------------------------------
def _setting_error(error: ErrorDetails) -> Finding:
    name = str(error["loc"][0]) if error["loc"] else "environment"
    return Finding("error", name, _message(error))


def _document_error(error: ErrorDetails) -> Finding:
    loc = [str(part) for part in error["loc"]]
    where = ".".join(loc) or "(the file)"
    message = _message(error)
    if error["type"] == "extra_forbidden" and loc:
        known = _keys_at(loc[:-1])
        guess = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.6)
        message = f"unknown key{f' (did you mean {guess[0]!r}?)' if guess else ''}"
        if known and not guess:
            message += f"; known here: {', '.join(sorted(known))}"
    return Finding("error", where, message)


def _message(error: ErrorDetails) -> str:
    # pydantic's own words, never the rejected input (a URL may carry a password).
    return str(error["msg"]).removeprefix("Value error, ")


def _keys_at(loc: Sequence[str]) -> list[str]:
    """The property names the schema allows at ``loc`` (dict keys are names, not properties)."""
    root = schema()
    node: dict[str, Any] = root
    for part in loc:
        node = _resolve(root, node)
        if part in node.get("properties", {}):
            node = node["properties"][part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return []
    node = _resolve(root, node)
    return list(node.get("properties", {}))


def _resolve(root: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow ``$ref``; of ``anyOf``/``oneOf``, the branch that is an object (``X | None``)."""
    for _ in range(8):
        if "$ref" in node:
            node = root["$defs"][node["$ref"].rsplit("/", 1)[-1]]
            continue
        branches = node.get("anyOf") or node.get("oneOf")
        if branches:
            objects = [b for b in branches if b.get("type") != "null"]
            if len(objects) == 1:
                node = objects[0]
                continue
        break
    return node


# -- warnings -----------------------------------------------------------------------------------------
def _unknown_variables(environ: Mapping[str, str]) -> Iterator[Finding]:
    """A variable that looks like one of ours but is not (AMQP_ULR): ``Settings`` ignores it silently."""
    for name in sorted(environ):
        upper = name.upper()
        if upper in KNOWN_ENV_VARS or not upper.startswith(ENV_PREFIXES) or upper == "CMN_DEBUG":
            continue
        guess = difflib.get_close_matches(upper, sorted(KNOWN_ENV_VARS), n=1, cutoff=0.75)
        hint = f"did you mean {guess[0]}?" if guess else "CMN does not read it"
        yield Finding("warning", name, f"not a CMN setting: {hint}")


def _unusual_settings(s: Settings) -> Iterator[Finding]:
    if not s.amqp_url and not s.kafka_bootstrap_servers:
        yield Finding(
            "warning", "AMQP_URL", "no broker set: `cmn serve` starts the embedded broker (for development only)"
        )
    if s.request_timeout * 1000 > s.max_timeout_ms:
        yield Finding(
            "warning",
            "REQUEST_TIMEOUT",
            f"{s.request_timeout:g} s is above MAX_TIMEOUT_MS ({s.max_timeout_ms} ms): requests are cut to the cap",
        )
    if s.retry_attempts > MANY_ATTEMPTS:
        yield Finding(
            "warning",
            "RETRY_ATTEMPTS",
            f"{s.retry_attempts} attempts per request multiply the load on an upstream that is already failing",
        )
    if s.otlp_endpoint and s.trace_sampling_ratio >= 1.0:
        yield Finding(
            "warning", "TRACE_SAMPLING_RATIO", "every request is traced: at high rates sample less (e.g. 0.05)"
        )


def _unusual_document(document: ConfigDocument) -> Iterator[Finding]:
    if not document.upstreams:
        yield Finding("warning", "upstreams", "empty: every request will be answered unknown_upstream")


def _park_secret(s: Settings, document: ConfigDocument) -> Iterator[Finding]:
    parking = document.parking()
    if parking and s.park_secret is None:
        yield Finding(
            "warning",
            "PARK_SECRET",
            f"not set while {', '.join(parking)} may park: each replica draws its own, so a parked copy coming back"
            " to another replica (or after a restart) loses its caller and is answered instead of parking again;"
            " set the same PARK_SECRET on every replica",
        )
