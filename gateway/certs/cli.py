"""``cmn certs``: create development certificates and list what the gateway would load."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from gateway.certs.config import DEFAULT_DEV_DIR, CertificatesConfig
from gateway.certs.configured import build_manager
from gateway.certs.devca import CA_FILE, DevCertificateAuthority, issue_cached, read_leaf
from gateway.certs.errors import CertificateError
from gateway.certs.keyvault import KeyVaultSettings
from gateway.certs.manager import Inspection
from gateway.clock import SystemClock
from gateway.errors import ConfigError

DAY = 86400.0

certs_app = typer.Typer(
    help="Certificates: development CA, and what the configured sources hold.", no_args_is_help=True
)

DirOption = Annotated[Path, typer.Option("--dir", help="Where development certificates are kept.")]


@certs_app.command("dev")
def dev(
    names: Annotated[list[str] | None, typer.Option("--name", help="Leaf certificate names (repeatable).")] = None,
    sans: Annotated[list[str] | None, typer.Option("--san", help="Subject alternative names (repeatable).")] = None,
    directory: DirOption = DEFAULT_DEV_DIR,
    days: Annotated[float, typer.Option(help="Leaf validity in days.")] = 90,
    force: Annotated[bool, typer.Option(help="Issue new leaves even if cached ones are still good.")] = False,
) -> None:
    """Create (or reuse) the development CA and leaf certificates; never used unless configured."""
    directory = directory.expanduser()
    now = SystemClock().time()
    authority = DevCertificateAuthority.load_or_create(directory, now=now)
    alt_names = sans or ["localhost", "127.0.0.1"]
    console = Console()
    console.print(f"CA: {directory / CA_FILE}  ({authority.certificate.subject.rfc4514_string()})")
    for name in names or ["localhost"]:
        window = days * DAY + 1 if force else 14 * DAY
        bundle = issue_cached(authority, directory, name, alt_names, now=now, renew_before=window, days=days)
        console.print(f"{name}: {directory / (name + '.pem')} + {name}-key.pem  SANs {', '.join(bundle.sans)}")


@certs_app.command("list")
def list_certificates(
    config: Annotated[Path | None, typer.Option(help="YAML with a `certificates:` section.")] = None,
    directory: DirOption = DEFAULT_DEV_DIR,
    vault_url: Annotated[str | None, typer.Option(envvar="AZURE_VAULT_URL")] = None,
    tenant_id: Annotated[str | None, typer.Option(envvar="AZURE_TENANT_ID")] = None,
    client_id: Annotated[str | None, typer.Option(envvar="AZURE_CLIENT_ID")] = None,
    client_secret: Annotated[str | None, typer.Option(envvar="AZURE_CLIENT_SECRET", show_default=False)] = None,
) -> None:
    """Name, source, version, subject, SANs and days to expiry of each certificate."""
    if config is None:
        rows = _dev_rows(directory.expanduser())
    else:
        vault = KeyVaultSettings(vault_url, tenant_id, client_id, client_secret) if vault_url else None
        rows = asyncio.run(_configured_rows(read_config(config), vault))  # errors: one line (gateway.cli)
    if not rows:
        Console(stderr=True).print("cmn: no certificates configured", highlight=False)
        return
    Console().print(render_table(rows, SystemClock().time()))


def read_config(path: Path) -> CertificatesConfig:
    """The ``certificates:`` section of an upstreams YAML (or a file holding only that section); an
    upstreams file without one has no certificates. Every problem is a ConfigError naming the file."""
    try:
        data: Any = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"--config: cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config: {path} is not valid YAML") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"--config: {path} must hold a mapping")
    if "upstreams" in data:
        data = data.get("certificates") or {}
    elif "certificates" in data:
        data = data["certificates"] or {}
    try:
        return CertificatesConfig.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in ("certificates", *error["loc"]))
        raise ConfigError(f"--config: {path}: {where}: {error['msg']}") from exc


async def _configured_rows(config: CertificatesConfig, vault: KeyVaultSettings | None) -> list[Inspection]:
    # Not ``async with``: starting would stop at the first bad certificate, and the listing shows them all.
    manager = build_manager(config, clock=SystemClock(), keyvault=vault)
    try:
        return await manager.inspect()
    finally:
        await manager.aclose()


def _dev_rows(directory: Path) -> list[Inspection]:
    names = sorted(p.stem for p in directory.glob("*.pem") if not p.stem.endswith("-key") and p.name != CA_FILE)
    rows = []
    for name in names:
        try:
            rows.append(Inspection(name, "dev", read_leaf(directory, name), None))
        except CertificateError as exc:
            rows.append(Inspection(name, "dev", None, exc))
    return rows


def render_table(rows: list[Inspection], now: float) -> Table:
    table = Table("name", "source", "version", "subject", "SANs", "days to expiry", "status")
    for row in rows:
        bundle = row.bundle
        status = f"[red]{row.error.message}[/red]" if row.error else "[green]ok[/green]"
        if bundle is None:
            table.add_row(row.name, row.source, "-", "-", "-", "-", status)
            continue
        days = (bundle.not_after - now) / DAY
        colour = "red" if days < 7 else "yellow" if days < 30 else "green"
        table.add_row(
            row.name,
            row.source,
            bundle.version,
            bundle.subject,
            ", ".join(bundle.sans),
            f"[{colour}]{days:.1f}[/{colour}]",
            status,
        )
    return table
