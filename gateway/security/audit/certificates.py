"""Certificates named in the ``certificates:`` section, read through the certificate manager.

Offline (every run) the audit reads ``file`` certificates and flags ``dev`` ones; ``keyvault``
certificates need the vault, so they are read with ``--live``. A ``dev`` certificate is not read:
its source would mint one, and it renews itself anyway.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import ValidationError

from gateway.certs.config import CertificatesConfig, DevItem, FileItem, KeyVaultItem
from gateway.certs.configured import build_manager
from gateway.certs.errors import CertificateError
from gateway.certs.wiring import keyvault_settings
from gateway.clock import SystemClock
from gateway.errors import ConfigError
from gateway.security.audit import findings as r
from gateway.security.audit.context import AuditContext
from gateway.security.audit.findings import Finding, Location, finding
from gateway.settings import describe_validation_error

DAY = 86400.0
Kind = Literal["file", "keyvault"]


def certificates_config(ctx: AuditContext) -> CertificatesConfig:
    try:
        return CertificatesConfig.model_validate(ctx.config.certificates)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, "certificates")) from exc


def dev_findings(ctx: AuditContext) -> list[Finding]:
    config = certificates_config(ctx)
    return [
        finding(r.DEV_CERT, f"certificate {name} is issued by the local development CA", _where(ctx, name))
        for name, item in config.items.items()
        if isinstance(item, DevItem)
    ]


async def source_findings(ctx: AuditContext, kind: Kind) -> list[Finding]:
    """Load every ``kind`` certificate from its source, as the gateway would, and judge it."""
    config = certificates_config(ctx)
    wanted = FileItem if kind == "file" else KeyVaultItem
    items = {name: item for name, item in config.items.items() if isinstance(item, wanted)}
    if not items:
        return []
    subset = config.model_copy(update={"items": items})
    try:
        manager = build_manager(subset, clock=SystemClock(), keyvault=keyvault_settings(ctx.settings))
    except (ConfigError, CertificateError) as exc:
        return [finding(r.CERT_UNUSABLE, exc.message, _where(ctx, name)) for name in items]
    try:
        inspections = await manager.inspect()
    finally:
        await manager.aclose()
    found = []
    for row in inspections:
        if row.error is not None:
            found.append(finding(r.CERT_UNUSABLE, row.error.message, _where(ctx, row.name)))
        elif row.bundle is not None and row.bundle.not_after - ctx.now <= config.renew_before:
            days = (row.bundle.not_after - ctx.now) / DAY
            message = (
                f"certificate {row.name} ({row.source}) expires in {days:.1f} days, "
                f"within renew_before ({config.renew_before / DAY:g} days)"
            )
            found.append(finding(r.CERT_EXPIRING, message, _where(ctx, row.name)))
    return found


def _where(ctx: AuditContext, name: str) -> Location:
    section = ctx.document.get("certificates")
    if isinstance(section, Mapping) and "items" in section:
        return ctx.locator.at("certificates", "items", name)
    return ctx.locator.at("certificates", name)
