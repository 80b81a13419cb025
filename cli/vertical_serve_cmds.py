"""`jointcredit vertical ...`: scoring vertical applicants. `serve` runs a feature party's
endpoint; `endpoint-cert` issues a party's certificate for the exchange's mutual TLS.
How-to: docs/VERTICAL.md ("Scoring a vertical applicant")."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from jointcredit.cli.pinning import KeyIdOption, TrustAnyOption, coordinator_pin
from jointcredit.cli.service_cmds import ConnectionsOption, HeaderKbOption, HeaderTimeoutOption

vertical_app = typer.Typer(no_args_is_help=True, help="Scoring applicants of a vertical model.")
console = Console()
err = Console(stderr=True)


@vertical_app.command("endpoint-cert")
def endpoint_cert(
    out: Annotated[Path, typer.Option(help="the provisioned federation (holds provisioner/)")],
    institution: Annotated[str, typer.Option(help="whose kit gets the certificate")],
    host: Annotated[
        list[str], typer.Option(help="a name or address its endpoint is reached at (repeat)")
    ],
) -> None:
    """Issue an institution's endpoint certificate (server and client) with the federation
    CA, into its kit: KIT/endpoint.crt and KIT/endpoint.key (0600)."""
    from jointcredit.deploy.kits import issue_endpoint_certificate
    from jointcredit.trust.errors import TrustError

    try:
        cert = issue_endpoint_certificate(out, institution, host)
    except (ValueError, OSError, TrustError) as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from exc
    console.print(f"{institution}: {cert} (valid for {', '.join(host)})", soft_wrap=True)


@vertical_app.command("serve")
def serve(
    kit: Annotated[Path, typer.Option(help="this feature party's kit (provision + endpoint-cert)")],
    model: Annotated[Path, typer.Option(help="the vertical model directory, e.g. OUT/model; "
                                        "only parties/<this party>/ is read")],
    data: Annotated[Path, typer.Option(help="this party's applicants: a CSV or Parquet file "
                                       "keyed by the schema's identifier column")],
    schema: Annotated[Path, typer.Option(help="the federation's vertical schema TOML")],
    db: Annotated[
        str | None, typer.Option(help="SQLAlchemy URL of its audit log and consent registry "
                                 "(default: SQLite beside --data)")
    ] = None,
    host: str = "127.0.0.1",
    port: int = 9443,
    coordinator_key_id: KeyIdOption = None,
    trust_any_coordinator: TrustAnyOption = False,
    max_header_kb: HeaderKbOption = 32,
    header_timeout: HeaderTimeoutOption = 5.0,
    max_connections: ConnectionsOption = 1000,
) -> None:  # fmt: skip
    """Answer signed routing queries for this party's applicants over mutual TLS: the sides
    of its splits only (a scorecard's part: its attribute, the coarse code, per feature), for
    applicants in --data with a consent registered (purpose `vertical`); every query
    audited."""
    from jointcredit.data.errors import DataValidationError
    from jointcredit.data.vertical_schema import load_vertical_schema
    from jointcredit.models.artifact import ArtifactError
    from jointcredit.service import server
    from jointcredit.service.audit import AuditLog
    from jointcredit.service.vertical_kit import KitError, load_kit
    from jointcredit.service.vertical_party import Applicants, FeaturePartyEndpoint, ServedPart
    from jointcredit.service.vertical_party_app import party_app

    pin = coordinator_pin(kit / "trust.json", coordinator_key_id, trust_any_coordinator)
    try:
        party = load_kit(kit, pin=pin)
        served = ServedPart.load(model, party.institution, party.trust)
        applicants = Applicants.load(data, served, load_vertical_schema(schema))
    except (KitError, ArtifactError, DataValidationError, OSError) as exc:
        err.print(f"[red]refusing to start:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from exc
    url = db or f"sqlite:///{data.resolve().parent / f'{party.institution}.vertical.sqlite'}"
    endpoint = FeaturePartyEndpoint(served, applicants, AuditLog(url))
    what = (
        f"{len(served.part.table)} splits"
        if served.part.model == "gbdt"
        else f"the coarse codes of {len(served.part.bins.names)} features (a scorecard)"
    )
    console.print(
        f"{party.institution}: {what} of model {served.model_id[:16]}, "
        f"{len(applicants.rows)} applicants, audit {url}",
        soft_wrap=True,
    )
    limits = server.ServerLimits(
        max_header_bytes=max_header_kb * 2**10, header_timeout=header_timeout,
        max_connections=max_connections,
    )  # fmt: skip
    server.run(
        party_app(endpoint, party), limits, host=host, port=port,
        announce=lambda u: console.print(
            f"answering vertical queries on {u.replace('http://', 'https://', 1)} (mutual TLS; "
            "Ctrl+C stops)"
        ),
        log_level="warning", ssl_certfile=str(party.certificate), ssl_keyfile=str(party.key),
        ssl_ca_certs=str(party.ca), ssl_cert_reqs=ssl.CERT_REQUIRED,
    )  # fmt: skip
