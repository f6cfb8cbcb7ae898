"""The names upstream components and the upstreams file share: plain literals, below the pydantic edge.

``config.py`` (pydantic, the edge) and the components that act on these names (breaker, outlier,
outcome, cluster, balancer) all import them from here, so no component depends on the edge model.
"""

from __future__ import annotations

from typing import Literal, get_args

FailureKind = Literal["connect_error", "timeout", "reset", "5xx"]
"""How an attempt failed, as the breaker and outlier detection count it."""

FAILURE_KINDS: frozenset[FailureKind] = frozenset(get_args(FailureKind))

LoadBalancer = Literal["least_request", "round_robin", "weighted", "random"]

WindowType = Literal["count", "time"]
"""A breaker's window: the last N calls, or the calls of the last N seconds."""
