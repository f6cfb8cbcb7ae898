"""Load balancers: pick one host among the available ones, in O(1) per pick (weighted: O(hosts)).

``least_request`` is Envoy's default: sample two hosts at random and take the one with fewer
requests in flight relative to its weight, which avoids herding onto one "least loaded" host
while costing two random draws instead of a scan.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Sequence
from typing import Protocol

from gateway.upstream.host import Host
from gateway.upstream.kinds import LoadBalancer


class Balancer(Protocol):
    def pick(self, hosts: Sequence[Host]) -> Host:
        """One of ``hosts``, which is never empty."""
        ...


class LeastRequest:
    __slots__ = ("_rng",)

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def pick(self, hosts: Sequence[Host]) -> Host:
        if len(hosts) == 1:
            return hosts[0]
        a, b = self._rng.sample(range(len(hosts)), 2)
        first, second = hosts[a], hosts[b]
        # Compare active/weight without dividing: a*wb <= b*wa.
        return first if first.active * second.weight <= second.active * first.weight else second

    def __repr__(self) -> str:
        return "<LeastRequest p2c>"


class RoundRobin:
    __slots__ = ("_counter",)

    def __init__(self) -> None:
        self._counter = itertools.count()

    def pick(self, hosts: Sequence[Host]) -> Host:
        return hosts[next(self._counter) % len(hosts)]

    def __repr__(self) -> str:
        return "<RoundRobin>"


class UniformRandom:
    """Random, ignoring weights (Envoy's RANDOM)."""

    __slots__ = ("_rng",)

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def pick(self, hosts: Sequence[Host]) -> Host:
        return hosts[self._rng.randrange(len(hosts))]

    def __repr__(self) -> str:
        return "<UniformRandom>"


class WeightedRandom:
    """Random, proportional to weight (O(hosts) per pick; upstreams have a handful)."""

    __slots__ = ("_rng",)

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def pick(self, hosts: Sequence[Host]) -> Host:
        if len(hosts) == 1:
            return hosts[0]
        cumulative = list(itertools.accumulate(h.weight for h in hosts))
        return hosts[bisect.bisect_right(cumulative, self._rng.random() * cumulative[-1])]

    def __repr__(self) -> str:
        return "<WeightedRandom>"


def make_balancer(kind: LoadBalancer, rng: random.Random) -> Balancer:
    if kind == "least_request":
        return LeastRequest(rng)
    if kind == "round_robin":
        return RoundRobin()
    if kind == "random":
        return UniformRandom(rng)
    return WeightedRandom(rng)
