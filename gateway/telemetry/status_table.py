"""The instance state documents (``/admin/upstreams``, ``cmn status``) as a table an 80-column terminal holds.

    gw-a 0.1.0  up 1h02m  consuming  in flight 3
      transports: rabbitmq ready, kafka NOT READY
    UPSTREAM / ENDPOINT         BREAKER   FAIL% SLOW%  EJECTED POOL u/i/w HEALTH
    payments  rate 7/10 shared, local view  tenants 3, emptiest acme 0.5/3
        bulkhead 2/10 +0/5
      http://10.0.0.5:8080      open       66.7   0.0      12s      3/2/0 ok 4
      http://10.0.0.6:8080      open*       0.0   0.0        -      0/1/0 ok 9
        forced open by ops, 59m12s left

Rates are percent of the breaker's window, EJECTED is how long the outlier ejection still lasts,
POOL is slots in use / idle keep-alive connections / requests waiting, HEALTH the last active check
and how many in a row gave it. A breaker an operator forced (``cmn breaker open|close``) shows the
forced state with a ``*`` and a line under its endpoint naming who forced it and for how long still.

It reads the JSON-ready documents (the wire form), not the upstream layer's types: telemetry and
upstream are siblings, and ``cmn status`` renders documents gathered from other replicas. Every line
is at most ``width`` characters: long URLs keep their end (host and port tell endpoints apart),
other text wraps.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

# (title, width, right-aligned): 27 + 9 + 5 + 5 + 8 + 10 + 7 and six spaces make 77 columns.
_COLUMNS = (
    ("UPSTREAM / ENDPOINT", 27, False),
    ("BREAKER", 9, False),
    ("FAIL%", 5, True),
    ("SLOW%", 5, True),
    ("EJECTED", 8, True),
    ("POOL u/i/w", 10, True),
    ("HEALTH", 7, False),
)

Document = Mapping[str, Any]


def render_status(documents: Sequence[Document], width: int = 80) -> str:
    """One block per instance, blank lines between them."""
    return "\n\n".join("\n".join(_instance(doc, width)) for doc in documents) + "\n"


def _instance(doc: Document, width: int) -> list[str]:
    up = duration(doc["uptime"])
    head = f"{doc['instance']} {doc['version']}  up {up}  {doc['drain']}  in flight {doc['in_flight']}"
    transports = ", ".join(f"{t['name']} {'ready' if t['ready'] else 'NOT READY'}" for t in doc["transports"])
    lines = _wrap(head, width) + _wrap(f"transports: {transports or 'none'}", width, first="  ")
    lines.append(_row([title for title, _, _ in _COLUMNS]))
    for upstream in doc["upstreams"]:
        lines += _flow(_upstream_parts(upstream), width)
        for endpoint in upstream["endpoints"]:
            lines.append(_row(_endpoint_cells(endpoint, now=doc["time"])))
            if (forced := _forced(endpoint)) is not None:
                left = duration(forced["until"] - doc["time"])
                lines += _wrap(f"forced {forced['state']} by {forced['by']}, {left} left", width, first="    ")
            if (peers := endpoint.get("peers")) is not None:  # absent from replicas without shared health
                lines += _wrap(_peers(peers), width, first="    ")
    return lines


def _peers(peers: Document) -> str:
    """Shared health's tally: "down by peers (2/3, quorum 2)", or "1/3 replicas say down (quorum 2)"."""
    count, quorum = f"{peers['votes']}/{peers['live']}", peers["quorum"]
    return (
        f"down by peers ({count}, quorum {quorum})" if peers["down"] else f"{count} replicas say down (quorum {quorum})"
    )


def _upstream_parts(upstream: Document) -> list[str]:
    parts = [upstream["name"]]
    if (limit := upstream.get("rate_limit")) is not None:
        parts += _rate_limit(limit)
    if (b := upstream.get("bulkhead")) is not None:
        parts.append(f"bulkhead {b['in_flight']}/{b['max_concurrent']} +{b['queued']}/{b['max_queued']}")
    if (p := upstream.get("parking")) is not None:
        parts.append(f"parked {p['parked']} back {p['returned']}")
    return parts


def _rate_limit(limit: Document) -> list[str]:
    scope = limit["scope"] + (" (redis down)" if limit["degraded"] else "")
    if limit["scope"] == "shared":
        scope += ", local view"
    parts = [f"rate {_bucket(limit['upstream'])} {scope}" if limit["upstream"] is not None else f"rate {scope}"]
    if limit["tenant_buckets"]:
        emptiest = limit["tenants"][0]
        parts.append(f"tenants {limit['tenant_buckets']}, emptiest {emptiest['tenant']} {_bucket(emptiest)}")
    return parts


def _bucket(bucket: Document) -> str:
    return f"{bucket['tokens']:.4g}/{bucket['burst']:g}"


def _endpoint_cells(endpoint: Document, *, now: float) -> list[str]:
    breaker, outlier, health, pool = (endpoint.get(k) for k in ("breaker", "outlier", "health", "pool"))
    ejected_until = outlier["ejected_until"] if outlier is not None else None
    return [
        "  " + keep_end(endpoint["url"], _COLUMNS[0][1] - 2),
        _breaker(breaker),
        _percent(breaker["failure_rate"] if breaker is not None else None),
        _percent(breaker["slow_call_rate"] if breaker is not None else None),
        duration(ejected_until - now) if ejected_until is not None else "-",
        f"{pool['in_use']}/{pool['idle']}/{pool['waiting']}" if pool is not None else "-",
        _health(health),
    ]


def _breaker(breaker: Document | None) -> str:
    if breaker is None:
        return "-"
    forced = breaker.get("forced")  # absent in documents from replicas older than forcing
    return f"{forced['state']}*" if forced is not None else str(breaker["state"])


def _forced(endpoint: Document) -> Document | None:
    breaker = endpoint.get("breaker")
    return breaker.get("forced") if breaker is not None else None


def _health(health: Document | None) -> str:
    if health is None or health["last"] is None:
        return "-"
    if health["last"] == "passed":
        return f"ok {health['consecutive_passes']}"
    return f"fail {health['consecutive_failures']}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _row(cells: Sequence[str]) -> str:
    out = []
    for (_, width, right), cell in zip(_COLUMNS, cells, strict=True):
        text = cell if len(cell) <= width else cell[: width - 1] + "…"
        out.append(text.rjust(width) if right else text.ljust(width))
    return " ".join(out).rstrip()


def _flow(parts: Sequence[str], width: int, rest: str = "    ") -> list[str]:
    """The parts two spaces apart, a part moved whole to the next line when it would overflow."""
    lines: list[str] = []
    for part in parts:
        if lines and len(lines[-1]) + 2 + len(part) <= width:
            lines[-1] += "  " + part
        else:
            lines += _wrap(part, width, first=rest if lines else "", rest="  ")
    return lines


def _wrap(text: str, width: int, first: str = "", rest: str = "  ") -> list[str]:
    return textwrap.wrap(text, width, initial_indent=first, subsequent_indent=first + rest, break_on_hyphens=False)


def keep_end(text: str, width: int) -> str:
    """``text``, or its last characters behind an ellipsis when it is longer than ``width``."""
    return text if len(text) <= width else "…" + text[len(text) - width + 1 :]


def duration(seconds: float) -> str:
    """A short duration: 45s, 4m05s, 2h03m, 3d04h."""
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"
