"""The audit's outputs: a table for people (readable at 80 columns), JSON, and SARIF 2.1.0 for
code-scanning UIs. All three list the same findings in the same order (most severe first)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from gateway.security.audit.findings import RULES, Finding, Location, Severity

SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
TOOL = "cmn audit"
_LEVEL = {Severity.HIGH: "error", Severity.MEDIUM: "warning", Severity.LOW: "note"}
_SECURITY_SEVERITY = {Severity.HIGH: "8.0", Severity.MEDIUM: "5.0", Severity.LOW: "2.0"}
_COLOUR = {Severity.HIGH: "red", Severity.MEDIUM: "yellow", Severity.LOW: "cyan"}


def ordered(findings: Sequence[Finding]) -> list[Finding]:
    def key(f: Finding) -> tuple[int, str, str, int, str]:
        where = f.location
        return (-f.severity, f.id, where.file or where.env or "", where.line or 0, where.key or "")

    return sorted(findings, key=key)


def summary(findings: Sequence[Finding]) -> dict[str, int]:
    counts = Counter(f.severity for f in findings)
    return {s.label: counts.get(s, 0) for s in sorted(Severity, reverse=True)}


def summary_line(findings: Sequence[Finding]) -> str:
    counts = summary(findings)
    return f"{len(findings)} findings: " + ", ".join(f"{n} {label}" for label, n in counts.items())


def table(findings: Sequence[Finding], source: str) -> Group:
    grid = Table("sev", "id", "finding", title=f"cmn audit: {escape(source)}", show_lines=True, expand=False)
    for item in ordered(findings):
        colour = _COLOUR[item.severity]
        body = (
            f"[bold]{escape(item.title)}[/bold]\n{escape(item.message)}\n"
            f"[dim]{escape(str(item.location))}[/dim]\n[green]fix:[/green] {escape(item.fix)}"
        )
        grid.add_row(f"[{colour}]{item.severity.label}[/{colour}]", item.id, body)
    return Group(grid, Text(summary_line(findings)))


def as_json(findings: Sequence[Finding], source: str, live: bool) -> dict[str, Any]:
    return {
        "tool": TOOL,
        "config": source,
        "live": live,
        "summary": summary(findings),
        "findings": [
            {
                "id": f.id,
                "severity": f.severity.label,
                "title": f.title,
                "message": f.message,
                "location": _location_json(f.location),
                "fix": f.fix,
            }
            for f in ordered(findings)
        ],
    }


def _location_json(location: Location) -> dict[str, Any]:
    if location.env is not None:
        return {"env": location.env}
    return {"file": location.file, "key": location.key, "line": location.line}


def as_sarif(findings: Sequence[Finding]) -> dict[str, Any]:
    index = {rule.id: i for i, rule in enumerate(RULES)}
    rules = [
        {
            "id": rule.id,
            "name": rule.title,
            "shortDescription": {"text": rule.title},
            "help": {"text": rule.fix},
            "defaultConfiguration": {"level": _LEVEL[rule.severity]},
            "properties": {"security-severity": _SECURITY_SEVERITY[rule.severity], "tags": ["security"]},
        }
        for rule in RULES
    ]
    results = [
        {
            "ruleId": f.id,
            "ruleIndex": index[f.id],
            "level": _LEVEL[f.severity],
            "message": {"text": f"{f.message}. Fix: {f.fix}"},
            "locations": [_sarif_location(f.location)],
            "properties": {"severity": f.severity.label},
        }
        for f in ordered(findings)
    ]
    driver = {"name": TOOL, "rules": rules}
    return {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [{"tool": {"driver": driver}, "results": results}]}


def _sarif_location(location: Location) -> dict[str, Any]:
    if location.env is not None:
        return {
            "logicalLocations": [
                {"name": location.env, "fullyQualifiedName": f"env.{location.env}", "kind": "variable"}
            ]
        }
    physical: dict[str, Any] = {"artifactLocation": {"uri": _uri(location.file or "")}}
    if location.line:
        physical["region"] = {"startLine": location.line}
    logical = [{"fullyQualifiedName": location.key, "kind": "member"}] if location.key else []
    return {"physicalLocation": physical, **({"logicalLocations": logical} if logical else {})}


def _uri(file: str) -> str:
    path = Path(file)
    return path.as_uri() if path.is_absolute() else path.as_posix()
