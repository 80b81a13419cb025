"""The coordinator key a command expects of a trust store (trust/pins.py): the one given, else
the one recorded when the federation was created; refusing, with how to fix it, otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from jointcredit.trust.errors import TrustError
from jointcredit.trust.pins import expected_key

err = Console(stderr=True)

KeyIdOption = Annotated[
    str | None,
    typer.Option(help="pin: the coordinator key id you expect (default: the one recorded when "
                 "the federation was created, in ~/.jointcredit/pins.json)"),
]  # fmt: skip
TrustAnyOption = Annotated[
    bool,
    typer.Option(
        "--trust-any-coordinator",
        help="UNSAFE: accept whatever coordinator key the trust store names (no pin)",
    ),
]


def coordinator_pin(trust_file: Path, key_id: str | None, trust_any: bool) -> str | None:
    """The key id to pin, or None when the caller opted out (said loudly); exit 2 when no pin
    is known and the caller did not opt out."""
    try:
        pin = expected_key(trust_file, key_id=key_id, trust_any=trust_any)
    except TrustError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from exc
    if pin is None:
        err.print(
            f"[bold yellow]WARNING[/bold yellow]: --trust-any-coordinator: accepting whatever "
            f"coordinator key {escape(str(trust_file))} names; anyone who can write it can "
            "re-sign a model",
            soft_wrap=True,
        )
    return pin
