"""`jointcredit consent add/revoke/show`: an institution's register of its applicants' consents
to cross-party use of their data (service/consent.py), kept in the service's audit database;
every add and revoke is a chained audit entry."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from jointcredit.cli.service_cmds import open_audit_log

if TYPE_CHECKING:
    from jointcredit.service.consent import Consent, ConsentRegistry

consent_app = typer.Typer(
    no_args_is_help=True,
    help="Applicants' consents to cross-party use of their data (the exposure query).",
)
console = Console()
err = Console(stderr=True)

DbOption = Annotated[
    str, typer.Option(help="SQLAlchemy URL of the service's audit log (serve's --db)")
]
InstitutionOption = Annotated[
    str, typer.Option(help="the institution whose register this is (its API keys' institution)")
]


def _registry(db: str) -> ConsentRegistry:
    from jointcredit.service.consent import ConsentRegistry

    return ConsentRegistry(open_audit_log(db))


def _expires(value: str | None) -> str | None:
    """An ISO 8601 date or time (UTC when it names no zone), as the log writes times."""
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError as exc:
        err.print(f"[red]error:[/red] --expires {escape(value)!r} is not an ISO 8601 date or time")
        raise typer.Exit(2) from exc
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def _change(db: str, done: str, change: Callable[[ConsentRegistry], Consent]) -> None:
    """One audited change to the registry in `db`, said as `done` with the consent after it;
    a refused one (`ConsentError`) exits 2 naming why."""
    from jointcredit.service.consent import ConsentError

    registry = _registry(db)
    try:
        changed = change(registry)
    except ConsentError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from exc
    finally:
        registry.audit.close()
    console.print(f"{done} {escape(_show(changed))}", soft_wrap=True)


def _show(c: Consent) -> str:
    from jointcredit.service.chain import now

    expires = c.expires_at or "never"
    return (f"{c.consent_id}  {c.state(now())}  applicant {c.applicant_ref}  purpose {c.purpose}"
            f"  added {c.created_at}  expires {expires}"
            + (f"  revoked {c.revoked_at}" if c.revoked_at else ""))  # fmt: skip


def _check_text(name: str, value: str, limit: int) -> None:
    import re

    from jointcredit.service.fields import TEXT

    if not value or len(value) > limit or not re.fullmatch(TEXT, value):
        err.print(
            f"[red]error:[/red] {name} must be 1-{limit} printable characters", soft_wrap=True
        )
        raise typer.Exit(2)


@consent_app.command("add")
def consent_add(
    db: DbOption,
    institution: InstitutionOption,
    applicant_ref: Annotated[
        str, typer.Option(help="the applicant as decision requests name it (joint.applicant_id)")
    ],
    consent_id: Annotated[
        str, typer.Option("--id", help="the consent's reference (requests' joint.consent_id)")
    ],
    purpose: Annotated[
        str, typer.Option(help="what the consent allows: exposure, vertical")
    ] = "exposure",
    expires: Annotated[
        str | None, typer.Option(help="ISO 8601 date or time it lapses (UTC unless given)")
    ] = None,
) -> None:
    """Register an applicant's consent (audited)."""
    from jointcredit.service.consent import PURPOSES

    if purpose not in PURPOSES:
        err.print(f"[red]error:[/red] --purpose must be one of: {', '.join(PURPOSES)}")
        raise typer.Exit(2)
    _check_text("--id", consent_id, 64)
    _check_text("--applicant-ref", applicant_ref, 128)
    _check_text("--institution", institution, 128)
    _change(
        db,
        "added",
        lambda r: r.add(institution, consent_id, applicant_ref, purpose, _expires(expires)),
    )


@consent_app.command("revoke")
def consent_revoke(
    consent_id: Annotated[str, typer.Argument(help="the consent's reference")],
    db: DbOption,
    institution: InstitutionOption,
) -> None:
    """Revoke a consent (audited): the next exposure query that names it is refused."""
    _change(db, "revoked", lambda r: r.revoke(institution, consent_id))


@consent_app.command("show")
def consent_show(
    db: DbOption,
    institution: InstitutionOption,
    consent_id: Annotated[str | None, typer.Argument(help="one consent (default: all)")] = None,
) -> None:
    """Show the institution's consents, or one (exit 1 when it has no such consent)."""
    registry = _registry(db)
    try:
        if consent_id is None:
            found = registry.all(institution)
        else:
            one = registry.get(institution, consent_id)
            if one is None:
                err.print(f"[red]error:[/red] {escape(institution)} has no consent "
                          f"{escape(consent_id)}")  # fmt: skip
                raise typer.Exit(1)
            found = [one]
    finally:
        registry.audit.close()
    for c in found:
        console.print(escape(_show(c)), soft_wrap=True)
    if not found:
        console.print(f"{escape(institution)} has no consents")
