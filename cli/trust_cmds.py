"""`jointcredit keys ...`, `jointcredit trust ...` and `jointcredit verify`.

Passphrases are read from an environment variable named by `--passphrase-env` (never from the
command line, which other users can read in the process list).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from jointcredit.cli.output import WideOption, show_table
from jointcredit.cli.pinning import KeyIdOption, TrustAnyOption, coordinator_pin
from jointcredit.trust import keys, store
from jointcredit.trust.errors import TrustError
from jointcredit.trust.keyset import COORDINATOR
from jointcredit.trust.pins import record_pin

keys_app = typer.Typer(no_args_is_help=True, help="Update-signing keys (Ed25519).")
trust_app = typer.Typer(no_args_is_help=True, help="The federation trust store.")
console = Console()
err = Console(stderr=True)

PassphraseEnv = Annotated[
    str | None,
    typer.Option(help="environment variable holding the private key's passphrase"),
]
CoordinatorKey = Annotated[
    Path, typer.Option("--coordinator-key", help="the coordinator's private key (signs the store)")
]
TrustFile = Annotated[Path, typer.Option("--trust", help="trust store file (trust.json)")]


def _fail(exc: Exception) -> typer.Exit:
    err.print(f"[red]error:[/red] {exc}", soft_wrap=True)  # paths must stay copyable
    return typer.Exit(2)


def _not_verified(artifact: Path, exc: Exception, as_json: bool) -> typer.Exit:
    """`verify`'s failure, either layout: as JSON or a red line, exit status 1."""
    if as_json:
        typer.echo(json.dumps({"verified": False, "artifact": str(artifact), "error": str(exc)}))
    else:
        err.print(f"[red]FAILED[/red] {escape(str(exc))}", soft_wrap=True)
    return typer.Exit(1)


@keys_app.command("new")
def keys_new(
    out: Annotated[Path, typer.Option(help="directory for ID.key (0600) and ID.pub")],
    institution: Annotated[str | None, typer.Option(help="institution id")] = None,
    coordinator: Annotated[bool, typer.Option(help="the coordinator's key instead")] = False,
    passphrase_env: PassphraseEnv = None,
) -> None:
    """Generate an Ed25519 key pair for an institution (or the coordinator)."""
    if (institution is None) == (not coordinator):
        raise _fail(ValueError("give exactly one of --institution ID or --coordinator"))
    name = COORDINATOR if coordinator else str(institution)
    try:
        store.check_institution_id(name)
        passphrase = keys.passphrase_from_env(passphrase_env)
        key = keys.generate()
        keys.write_private_key(out / f"{name}.key", key, passphrase)
        keys.write_public_key(out / f"{name}.pub", key.public_key())
    except TrustError as exc:
        raise _fail(exc) from exc
    console.print(
        f"{name}: key id {keys.key_id(key)}\n  private {out / f'{name}.key'} (0600"
        f"{', encrypted' if passphrase else ''})\n  public  {out / f'{name}.pub'}"
    )


def _coordinator(path: Path, passphrase_env: str | None) -> Ed25519PrivateKey:
    return keys.load_private_key(path, keys.passphrase_from_env(passphrase_env))


@trust_app.command("init")
def trust_init(
    out: Annotated[Path, typer.Option(help="trust store file to create")],
    coordinator_key: CoordinatorKey,
    federation: Annotated[str, typer.Option(help="federation name")] = "jointcredit",
    passphrase_env: PassphraseEnv = None,
) -> None:
    """Start an empty trust store signed by the coordinator."""
    if out.exists():
        raise _fail(TrustError(f"{out}: already exists"))
    try:
        trust = store.create(federation, _coordinator(coordinator_key, passphrase_env))
        store.save_store(out, trust)
        record_pin(federation, trust.coordinator.key_id)
    except TrustError as exc:
        raise _fail(exc) from exc
    console.print(f"{out}: federation {federation}, coordinator key {trust.coordinator.key_id}")


@trust_app.command("add")
def trust_add(
    trust_file: TrustFile,
    institution: Annotated[str, typer.Option(help="institution id")],
    public_key: Annotated[Path, typer.Option(help="the institution's ID.pub")],
    coordinator_key: CoordinatorKey,
    passphrase_env: PassphraseEnv = None,
) -> None:
    """Register an institution's public key (an institution may hold several, for rotation)."""
    try:
        trust = store.load_store(trust_file)
        pub = keys.load_public_key(public_key)
        trust = store.add_key(
            trust, institution, pub, _coordinator(coordinator_key, passphrase_env)
        )
        store.save_store(trust_file, trust)
    except TrustError as exc:
        raise _fail(exc) from exc
    console.print(f"{trust_file}: added {institution} key {keys.key_id(pub)} (v{trust.version})")


@trust_app.command("revoke")
def trust_revoke(
    trust_file: TrustFile,
    coordinator_key: CoordinatorKey,
    key_id: Annotated[str | None, typer.Option(help="revoke this key")] = None,
    institution: Annotated[str | None, typer.Option(help="revoke all its keys")] = None,
    reason: Annotated[str, typer.Option(help="recorded in the store")] = "",
    passphrase_env: PassphraseEnv = None,
) -> None:
    """Revoke a key (or every key of an institution); its updates are rejected from then on."""
    try:
        trust = store.load_store(trust_file)
        trust, revoked = store.revoke(
            trust,
            _coordinator(coordinator_key, passphrase_env),
            key_id=key_id,
            institution=institution,
            reason=reason,
        )
        store.save_store(trust_file, trust)
    except TrustError as exc:
        raise _fail(exc) from exc
    console.print(f"{trust_file}: revoked {', '.join(revoked)} (v{trust.version})")


@trust_app.command("show")
def trust_show(
    trust_file: Annotated[Path, typer.Argument(help="trust store file")],
    coordinator_key_id: Annotated[
        str | None, typer.Option(help="pin: the coordinator key id you expect")
    ] = None,
    wide: WideOption = False,
) -> None:
    """Verify a trust store and list its keys."""
    try:
        trust = store.load_store(trust_file, pin=coordinator_key_id)
    except TrustError as exc:
        raise _fail(exc) from exc
    table = Table(
        title=f"{trust.federation} v{trust.version} (coordinator {trust.coordinator.key_id}; "
        f"signature OK)"
    )
    for col in ("institution", "key id", "added", "status"):
        table.add_column(col)
    for inst, entries in sorted(trust.institutions.items()):
        for e in entries:
            status = f"revoked {e.revoked_at}" if e.revoked else "active"
            if e.revoked and e.revoked_reason:
                status += f" ({e.revoked_reason})"
            table.add_row(inst, e.key_id, e.added_at, status)
    show_table(console, table, wide)
    console.print(f"sha256 {trust.digest()}")


def verify(
    artifact: Annotated[Path, typer.Argument(help="a model directory, e.g. OUT/model")],
    trust_file: TrustFile,
    coordinator_key_id: KeyIdOption = None,
    trust_any_coordinator: TrustAnyOption = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="print JSON (the same facts) instead; exit codes stay")
    ] = False,
    label_party: Annotated[
        str | None,
        typer.Option(
            help="a vertical model: the institution that must be its label party (the check "
            "for feature parts written before they named the label party they trained for)"
        ),
    ] = None,
) -> None:
    """Verify a signed model artifact: trust store, coordinator signature (the pinned
    coordinator key), every digest."""
    from jointcredit.models.artifact import ArtifactError, load_artifact
    from jointcredit.models.vertical.artifact import is_vertical

    pin = coordinator_pin(trust_file, coordinator_key_id, trust_any_coordinator)
    if is_vertical(artifact):
        _verify_vertical(artifact, trust_file, pin, as_json, label_party)
        return
    if label_party is not None:
        err.print(f"[red]error:[/red] --label-party: {artifact} is not a vertical model")
        raise typer.Exit(2)
    try:
        trust = store.load_store(trust_file, pin=pin)
        model = load_artifact(artifact, trust)
    except (TrustError, ArtifactError) as exc:
        raise _not_verified(artifact, exc, as_json) from exc
    manifest = model.verified.manifest
    updates = manifest.get("updates", [])
    accepted = sum(len(u["accepted"]) for u in updates)
    if as_json:
        facts = {
            "verified": True, "artifact": str(artifact), "model": model.describe(),
            "coordinator_key_id": model.verified.key_id, "federation": trust.federation,
            "manifest_sha256": model.verified.manifest_sha256, "files": manifest["files"],
            "round": manifest.get("round"), "institutions": manifest.get("institutions", []),
            "updates_accepted": accepted, "rounds_with_updates": len({u["round"] for u in updates}),
            "same_trust_store": model.verified.same_trust_store,
            "trust_store_sha256": manifest.get("trust_store_sha256"),
        }  # fmt: skip
        typer.echo(json.dumps(facts, indent=2))
        return
    console.print(f"[green]OK[/green] {artifact}: {model.describe()}", soft_wrap=True)
    console.print(f"  signed by coordinator key {model.verified.key_id} ({trust.federation})")
    for name, digest in manifest["files"].items():
        console.print(f"  {name}: sha256 {digest}", soft_wrap=True)
    console.print(
        f"  round {manifest.get('round')}, {len(manifest.get('institutions', []))} institutions,"
        f" {accepted} signed updates accepted over {len({u['round'] for u in updates})} rounds"
    )
    if not model.verified.same_trust_store:
        console.print(
            "  [yellow]note[/yellow]: signed under another version of the trust store "
            f"({manifest.get('trust_store_sha256')}); the coordinator key is the same"
        )


def _verify_vertical(
    artifact: Path, trust_file: Path, pin: str | None, as_json: bool, label_party: str | None
) -> None:
    """A vertical model: the label party's part and every feature party's, each signed by an
    active key of its own party in the trust store (whose coordinator key is pinned); its
    label party the one expected, when given."""
    from jointcredit.models.artifact import ArtifactError
    from jointcredit.models.vertical.artifact import load_vertical_model
    from jointcredit.models.vertical.scorecard.artifact import is_scorecard

    if is_scorecard(artifact):
        _verify_vertical_scorecard(artifact, trust_file, pin, as_json, label_party)
        return
    try:
        trust = store.load_store(trust_file, pin=pin)
        model = load_vertical_model(artifact, trust)
        named = model.label.card.label_party
        if label_party is not None and named != label_party:
            raise ArtifactError(f"its label party is {named!r}, not {label_party!r}")
    except (TrustError, ArtifactError) as exc:
        raise _not_verified(artifact, exc, as_json) from exc
    card = model.label.card
    parts: dict[str, dict[str, Any]] = {
        name: {
            "splits": entry.splits, "manifest_sha256": entry.part_sha256,
            "names_label_party": model.parties[name].label_party is not None,
        }
        for name, entry in card.parties.items()
    }  # fmt: skip
    if as_json:
        facts = {
            "verified": True, "artifact": str(artifact), "layout": "vertical",
            "federation": trust.federation, "label_party": card.label_party,
            "label_party_key_id": model.label.verified.key_id,
            "label_party_splits": card.label_party_splits,
            "manifest_sha256": model.label.verified.manifest_sha256, "parties": parts,
        }  # fmt: skip
        typer.echo(json.dumps(facts, indent=2))
        return
    console.print(
        f"[green]OK[/green] {artifact}: a vertical model of {len(model.label.ensemble.trees)} "
        f"trees ({trust.federation})",
        soft_wrap=True,
    )
    console.print(
        f"  {card.label_party} (label party): {card.label_party_splits} splits, signed by its "
        f"key {model.label.verified.key_id}",
        soft_wrap=True,
    )
    for name, part in parts.items():
        console.print(
            f"  {name}: {part['splits']} splits, its part signed by its own key "
            f"(manifest sha256 {part['manifest_sha256']})",
            soft_wrap=True,
        )
    _label_party_note(card.label_party, parts, label_party)


def _verify_vertical_scorecard(
    artifact: Path, trust_file: Path, pin: str | None, as_json: bool, label_party: str | None
) -> None:
    """A vertical scorecard: the label party's part (points, WOE, merge maps) and the feature
    party's (its fine bins and merge maps), each signed by an active key of its own party."""
    from jointcredit.models.artifact import ArtifactError
    from jointcredit.models.vertical.scorecard.artifact import load_vertical_scorecard

    try:
        trust = store.load_store(trust_file, pin=pin)
        model = load_vertical_scorecard(artifact, trust)
        card = model.card
        if label_party is not None and card.label_party != label_party:
            raise ArtifactError(f"its label party is {card.label_party!r}, not {label_party!r}")
    except (TrustError, ArtifactError) as exc:
        raise _not_verified(artifact, exc, as_json) from exc
    parts: dict[str, dict[str, Any]] = {
        name: {
            "features": card.holders[name], "manifest_sha256": entry.part_sha256,
            "names_label_party": model.parties[name].label_party is not None,
        }
        for name, entry in card.parties.items()
    }  # fmt: skip
    if as_json:
        facts = {
            "verified": True, "artifact": str(artifact), "layout": "vertical",
            "model": "scorecard", "federation": trust.federation,
            "label_party": card.label_party, "label_party_key_id": model.verified.key_id,
            "label_party_features": card.holders[card.label_party],
            "manifest_sha256": model.verified.manifest_sha256, "parties": parts,
        }  # fmt: skip
        typer.echo(json.dumps(facts, indent=2))
        return
    console.print(
        f"[green]OK[/green] {artifact}: a vertical scorecard of "
        f"{sum(len(f) for f in card.holders.values())} features ({trust.federation})",
        soft_wrap=True,
    )
    console.print(
        f"  {card.label_party} (label party): the points table, signed by its key "
        f"{model.verified.key_id}",
        soft_wrap=True,
    )
    for name, part in parts.items():
        console.print(
            f"  {name}: the fine bins and merge maps of {len(part['features'])} features, its "
            "part signed by "
            f"its own key (manifest sha256 {part['manifest_sha256']})",
            soft_wrap=True,
        )
    _label_party_note(card.label_party, parts, label_party)


def _label_party_note(named: str, parts: dict[str, dict[str, Any]], expected: str | None) -> None:
    """Who vouches for the label party: a feature part records, under its own party's
    signature, the label party it trained for (checked equal when the model loaded)."""
    vouching = [name for name, part in parts.items() if part["names_label_party"]]
    silent = [name for name in parts if name not in vouching]
    if vouching:
        console.print(f"  {named} is the label party its feature parties trained for "
                      f"({', '.join(vouching)})", soft_wrap=True)  # fmt: skip
    if silent and expected is None:
        console.print(
            f"  [yellow]note[/yellow]: {', '.join(silent)}'s part names no label party "
            f"(written before parts did): any member can sign a label part naming itself; "
            f"pass --label-party to check it is {named}",
            soft_wrap=True,
        )
