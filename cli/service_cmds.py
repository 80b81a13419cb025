"""`jointcredit serve`, `jointcredit apikey new`, `jointcredit audit verify`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

apikey_app = typer.Typer(no_args_is_help=True, help="API keys of the calling institutions.")
audit_app = typer.Typer(no_args_is_help=True, help="The decision audit log.")
console = Console()
err = Console(stderr=True)


def serve(
    model: Annotated[Path, typer.Option(help="signed model directory, e.g. OUT/model")],
    trust: Annotated[Path, typer.Option(help="trust store, e.g. OUT/trust.json")],
    policy: Annotated[Path | None, typer.Option(help="policy TOML (default: shipped)")] = None,
    db: Annotated[
        str | None, typer.Option(help="SQLAlchemy URL (default: SQLite beside the model)")
    ] = None,
    api_keys: Annotated[Path | None, typer.Option(help="API keys file (apikey new)")] = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    coordinator_key_id: Annotated[
        str | None, typer.Option(help="pin: the coordinator key id you expect")
    ] = None,
) -> None:
    """Serve eligibility decisions from a verified signed model."""
    import uvicorn

    from jointcredit.service.app import create_app
    from jointcredit.service.auth import AuthError
    from jointcredit.service.loader import StartupError, load_service

    try:
        service = load_service(
            model,
            trust,
            policy_file=policy,
            db_url=db,
            api_keys=api_keys,
            coordinator_key_id=coordinator_key_id,
        )
    except (StartupError, AuthError) as exc:
        err.print(f"[red]refusing to start:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from exc
    info = service.model_info
    console.print(
        f"model {info.version[:16]} ({info.kind}, signed by {info.signing_key}), "
        f"policy {service.decider.policy.version}, audit {service.audit.url}",
        soft_wrap=True,
    )
    uvicorn.run(create_app(service), host=host, port=port, log_level="warning")


@apikey_app.command("new")
def apikey_new(
    institution: Annotated[str, typer.Option(help="the calling institution's id")],
    keys: Annotated[Path, typer.Option(help="API keys file (created 0600 if absent)")],
) -> None:
    """Create an API key; it is printed once, only its hash is stored."""
    from jointcredit.service.auth import AuthError, new_key
    from jointcredit.trust.errors import TrustError

    try:
        token = new_key(keys, institution)
    except (AuthError, TrustError) as exc:
        err.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from exc
    err.print(f"API key for {institution} (shown once; {keys} keeps only its hash):")
    print(token)


@audit_app.command("verify")
def audit_verify(
    db: Annotated[str, typer.Option(help="SQLAlchemy URL of the decision log")],
) -> None:
    """Walk the hash chain; exit 1 naming the first broken row."""
    from jointcredit.service.audit import AuditError, AuditLog

    try:
        seq, head = AuditLog(db, create=False).verify()
    except AuditError as exc:
        err.print(f"[red]FAILED[/red] {exc}", soft_wrap=True)
        raise typer.Exit(1) from exc
    console.print(f"OK: {seq} entries, head sha256 {head}", soft_wrap=True)
