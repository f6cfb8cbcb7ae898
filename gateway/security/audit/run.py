"""One audit: read the configuration as ``cmn serve`` would, then run the static checks (and the live
ones when asked). Configuration errors are ConfigError, one line, as at start-up."""

from __future__ import annotations

from pathlib import Path

from gateway.app import load_config
from gateway.clock import SystemClock
from gateway.errors import ConfigError
from gateway.security.audit.certificates import dev_findings, source_findings
from gateway.security.audit.context import AuditContext, MemoryLimit
from gateway.security.audit.environment import environment_findings
from gateway.security.audit.findings import Finding
from gateway.security.audit.live import broker_findings, tls_findings
from gateway.security.audit.locate import YamlLocator
from gateway.security.audit.static import secret_findings, static_findings
from gateway.settings import Settings, read_yaml


class RefusedConfig(ConfigError):
    """The gateway would not start on this file; ``secrets`` are those written in it all the same."""

    def __init__(self, message: str, secrets: list[Finding]) -> None:
        super().__init__(message)
        self.secrets = secrets


def audit_context(settings: Settings, memory: MemoryLimit, now: float | None = None) -> AuditContext:
    """Settings (with ``upstreams_file`` set) → everything the checks read."""
    path = settings.upstreams_file
    if path is None:
        raise ConfigError("CMN_UPSTREAMS_FILE is not set: give --config PATH or set CMN_UPSTREAMS_FILE")
    document = read_yaml(path)
    locator = YamlLocator(_display(path), path.read_text())
    try:
        config = load_config(settings, document)
    except ConfigError as exc:
        raise RefusedConfig(exc.message, list(secret_findings(locator, document))) from exc
    return AuditContext(settings, config, document, locator, memory, SystemClock().time() if now is None else now)


async def run_audit(ctx: AuditContext, *, live: bool = False) -> list[Finding]:
    found = [*static_findings(ctx), *environment_findings(ctx), *dev_findings(ctx)]
    found += await source_findings(ctx, "file")
    if live:
        found += await tls_findings(ctx)
        found += await source_findings(ctx, "keyvault")
        found += await broker_findings(ctx)
    return found


def _display(path: Path) -> str:
    """The path as the user would write it: relative to the working directory when inside it."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)
