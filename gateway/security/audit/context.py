"""What every check reads: the settings and upstreams file ``cmn serve`` would use, plus the raw YAML
(to say where a finding is) and the memory limit the pod runs under."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.app import GatewayConfig
from gateway.security.audit.locate import YamlLocator
from gateway.settings import Settings

MIB = 1024 * 1024
DEFAULT_MEMORY_LIMIT = 512 * MIB  # deploy/k8s/deployment.yaml's limit
CGROUP_MEMORY_MAX = Path("/sys/fs/cgroup/memory.max")


@dataclass(frozen=True, slots=True)
class MemoryLimit:
    bytes: int
    source: str  # "--memory-limit", "cgroup" or "default"


@dataclass(frozen=True, slots=True)
class AuditContext:
    settings: Settings
    config: GatewayConfig
    document: Mapping[str, Any]
    locator: YamlLocator
    memory: MemoryLimit
    now: float

    def __repr__(self) -> str:
        return f"<AuditContext {self.locator.file} {len(self.config.upstreams.upstreams)} upstreams>"


def memory_limit(given: int | None, cgroup_file: Path = CGROUP_MEMORY_MAX) -> MemoryLimit:
    """The option when given, else the cgroup v2 limit when there is one, else the deployment's 512 MiB."""
    if given is not None:
        return MemoryLimit(given, "--memory-limit")
    try:
        text = cgroup_file.read_text().strip()
    except OSError:
        return MemoryLimit(DEFAULT_MEMORY_LIMIT, "default")
    if text.isdigit():
        return MemoryLimit(int(text), "cgroup")
    return MemoryLimit(DEFAULT_MEMORY_LIMIT, "default")  # "max": no limit set on this cgroup


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
