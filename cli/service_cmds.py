"""`jointcredit serve`, `jointcredit apikey new`, `jointcredit audit verify`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from jointcredit.cli.pinning import KeyIdOption, TrustAnyOption, coordinator_pin

if TYPE_CHECKING:
    from jointcredit.service.audit import AuditLog

apikey_app = typer.Typer(no_args_is_help=True, help="API keys of the calling institutions.")
exposure_app = typer.Typer(
    no_args_is_help=True, help="Secure-sum exposure endpoints of the institutions."
)
audit_app = typer.Typer(no_args_is_help=True, help="The decision audit log.")
console = Console()
err = Console(stderr=True)


# The service reads no client addresses: uvicorn's proxy-header middleware would parse the
# peer's address on every request for nothing.
UVICORN: dict[str, Any] = {"log_level": "warning", "proxy_headers": False}

# The HTTP server's own limits (service/server.py), for `serve` and `exposure serve`.
HeaderKbOption = Annotated[
    int, typer.Option(min=1, help="largest request line and headers in KiB (431 beyond)")
]
HeaderTimeoutOption = Annotated[
    float, typer.Option(min=0.1, help="seconds a client has to send a request's headers")
]
ConnectionsOption = Annotated[
    int, typer.Option(min=1, help="open connections before requests get 503")
]


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
    coordinator_key_id: KeyIdOption = None,
    trust_any_coordinator: TrustAnyOption = False,
    exposure_registry: Annotated[
        Path | None,
        typer.Option(help="signed registry of the institutions' exposure endpoints"),
    ] = None,
    federation_key: Annotated[
        Path | None, typer.Option(help="federation HMAC key file (applicant pseudonyms)")
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="worker processes (they share the audit log safely)")
    ] = 1,
    allow_checkpoint: Annotated[
        bool, typer.Option(help="serve a round's checkpoint, not only a run's final model")
    ] = False,
    require_promotion: Annotated[
        bool, typer.Option(help="refuse a model without its signed promotion record "
                           "(`jointcredit promote`)")
    ] = False,
    anchors: Annotated[
        Path | None,
        typer.Option(help="signed audit-head anchors, appended (default: "
                     "decisions.anchors.jsonl beside the model's run); keep it where the "
                     "database's writers cannot write"),
    ] = None,
    anchor_key: Annotated[
        Path | None,
        typer.Option(help="the service's anchor signing key, created if absent with its .pub "
                     "(default: audit-anchor.key beside the model's run)"),
    ] = None,
    anchor_every: Annotated[int, typer.Option(min=1, help="anchor every N log entries")] = 1000,
    anchor_seconds: Annotated[
        float, typer.Option(min=1, help="anchor at least every S seconds of activity")
    ] = 60.0,
    max_body_mb: Annotated[
        float | None, typer.Option(min=0.01, help="largest request body in MiB (413 beyond; "
                                   "default 16, for a vertical model 2: its batches hold 1,000 "
                                   "applicants); a 10,000-applicant batch is ~5 MiB as rows, "
                                   "~1 MiB as columns")
    ] = None,
    audit_lock_timeout: Annotated[
        float, typer.Option(min=0.1, help="seconds a decision waits for the audit log's write "
                            "lock held elsewhere before it fails with 503")
    ] = 5.0,
    max_header_kb: HeaderKbOption = 32,
    header_timeout: HeaderTimeoutOption = 5.0,
    max_connections: ConnectionsOption = 1000,
    monitoring_window: Annotated[
        int, typer.Option(min=1, help="stability monitoring: the last N applicants decided "
                          "(single, batch and columnar alike) against the training reference")
    ] = 10_000,
    vertical_kit: Annotated[
        Path | None, typer.Option(help="a vertical model: the bank's kit (signing key, trust "
                                  "store, endpoint certificate for mutual TLS)")
    ] = None,
    party: Annotated[
        list[str] | None, typer.Option(help="a vertical model: NAME=URL of each feature "
                                       "party's endpoint (repeat)")
    ] = None,
    party_timeout: Annotated[
        float, typer.Option(min=0.01, help="a vertical model: seconds a feature party has to "
                            "answer (then the applicant is referred)")
    ] = 0.5,
) -> None:  # fmt: skip
    """Serve eligibility decisions from a verified signed model. Behind a reverse proxy in
    production (docs/DEPLOYMENT.md)."""
    from jointcredit.service import server
    from jointcredit.service.app import create_app
    from jointcredit.service.auth import AuthError
    from jointcredit.service.loader import StartupError, load_service

    pin = coordinator_pin(trust, coordinator_key_id, trust_any_coordinator)
    from jointcredit.models.vertical.artifact import is_vertical

    if is_vertical(model) or vertical_kit is not None or party:
        # Refused, not ignored: an operator asking for a promotion check must not get none.
        horizontal_only = [name for name, given in (
            ("--require-promotion", require_promotion), ("--allow-checkpoint", allow_checkpoint),
        ) if given]  # fmt: skip
        if horizontal_only:
            err.print(f"[red]refusing to start:[/red] not supported for a vertical model: "
                      f"{', '.join(horizontal_only)}", soft_wrap=True)  # fmt: skip
            raise typer.Exit(2)
        _serve_vertical(
            model, trust, vertical_kit, party or [], party_timeout, pin, policy=policy, db=db,
            api_keys=api_keys, host=host, port=port, workers=workers,
            limits=(max_header_kb, header_timeout, max_connections),
            exposure=(exposure_registry, federation_key),
            max_body=int((2.0 if max_body_mb is None else max_body_mb) * 2**20),
            options=dict(audit_lock_timeout=audit_lock_timeout, anchors_file=anchors,
                       anchor_key=anchor_key, anchor_every=anchor_every,
                       anchor_seconds=anchor_seconds, monitoring_window=monitoring_window),
        )  # fmt: skip
        return
    args: dict[str, Any] = {
        "policy_file": policy,
        "db_url": db,
        "api_keys": api_keys,
        "coordinator_key_id": pin,
        "exposure_registry": exposure_registry,
        "federation_key": federation_key,
        "allow_checkpoint": allow_checkpoint,
        "require_promotion": require_promotion,
        "anchors_file": anchors,
        "anchor_key": anchor_key,
        "anchor_every": anchor_every,
        "anchor_seconds": anchor_seconds,
        "audit_lock_timeout": audit_lock_timeout,
        "monitoring_window": monitoring_window,
    }
    from sqlalchemy.exc import SQLAlchemyError

    try:
        service = load_service(model, trust, **args)
    except (StartupError, AuthError) as exc:
        err.print(f"[red]refusing to start:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from exc
    except (SQLAlchemyError, ImportError, OSError) as exc:  # the audit database
        problem = _db_problem(db, exc) if db else str(exc)
        err.print(f"[red]refusing to start:[/red] {escape(problem)}", soft_wrap=True)
        raise typer.Exit(2) from exc
    if exposure_registry is not None and not exposure_registry.is_dir():
        err.print(UNSIGNED_REGISTRY.format(path=exposure_registry), soft_wrap=True)
    info = service.model_info
    run = "an unnamed run" if info.run_id is None else f"run {info.run_id}"
    console.print(f"serving the {info.stage} model of {run}, round {info.trained_round}")
    console.print(
        f"model {info.version[:16]} ({info.kind}, signed by {info.signing_key}), "
        f"policy {service.decider.policy.version}, audit {_hide_password(service.audit.url)}",
        soft_wrap=True,
    )
    for code, fields in service.decider.rules.absent.items():
        console.print(
            f"rule {code} not evaluated: this model has no {', '.join(fields)}", soft_wrap=True
        )
    untranslated = service.decider.policy.missing_chinese()
    if untranslated:
        console.print(
            "policy answers in English only; texts without Chinese: " + ", ".join(untranslated),
            soft_wrap=True,
        )
    limits = server.ServerLimits(
        max_header_bytes=max_header_kb * 2**10, header_timeout=header_timeout,
        max_connections=max_connections,
    )  # fmt: skip
    max_body = int((16.0 if max_body_mb is None else max_body_mb) * 2**20)
    if workers == 1:
        app = create_app(service, max_body=max_body)
        server.run(app, limits, host=host, port=port, announce=_listening, **UVICORN)
        return
    from jointcredit.service.workers import export_args, multiprocess_metrics

    # Checked once here so a bad model fails before any worker starts; every worker then
    # loads and checks it again, with the same audit log (its URL, now resolved).
    export_args({"model_dir": model, "trust_file": trust, **args, "db_url": service.audit.url,
                 "max_body": max_body})  # fmt: skip
    with multiprocess_metrics():
        server.run(
            "jointcredit.service.workers:app_from_env",
            limits,
            factory=True,
            workers=workers,
            host=host,
            port=port,
            announce=_listening,
            **UVICORN,
        )


def _serve_vertical(
    model: Path, trust: Path, kit: Path | None, parties: list[str], timeout: float,
    pin: str | None, *, policy: Path | None, db: str | None, api_keys: Path | None, host: str,
    port: int, workers: int, limits: tuple[int, float, int],
    exposure: tuple[Path | None, Path | None], max_body: int, options: dict[str, Any],
) -> None:  # fmt: skip
    """`serve` of a vertical model: the bank's part, asking each feature party per applicant
    (service/vertical_service.py)."""
    from jointcredit.service import server
    from jointcredit.service.auth import AuthError
    from jointcredit.service.loader import StartupError
    from jointcredit.service.vertical_service import create_vertical_app, load_vertical_service

    def refuse(problem: str) -> typer.Exit:
        err.print(f"[red]refusing to start:[/red] {escape(problem)}", soft_wrap=True)
        return typer.Exit(2)

    if kit is None or not parties:
        raise refuse("a vertical model needs --vertical-kit and a --party NAME=URL per feature "
                     "party")  # fmt: skip
    from jointcredit.service.vertical_decisions import ROUTING_AT_ONCE

    if workers > ROUTING_AT_ONCE:
        raise refuse(
            f"a vertical model is served by at most {ROUTING_AT_ONCE} workers: they share the "
            f"bound of {ROUTING_AT_ONCE} applicants asked about at once"
        )
    endpoints: dict[str, str] = {}
    for item in parties:
        name, sep, url = item.partition("=")
        if not sep or not name or not url.startswith("https://") or name in endpoints:
            raise refuse(f"--party {item!r}: expected NAME=https://HOST:PORT, once per party")
        endpoints[name] = url
    try:
        service = load_vertical_service(
            model, trust, kit, endpoints, policy_file=policy, db_url=db, api_keys=api_keys,
            coordinator_key_id=pin, timeout=timeout, exposure_registry=exposure[0],
            federation_key=exposure[1], workers=workers, **options,
        )  # fmt: skip
    except (StartupError, AuthError, OSError) as exc:
        raise refuse(str(exc)) from exc
    if exposure[0] is not None and not exposure[0].is_dir():
        err.print(UNSIGNED_REGISTRY.format(path=exposure[0]), soft_wrap=True)
    info = service.model_info
    console.print(
        f"serving the vertical model {info.version[:16]} (signed by {info.signing_key}), "
        f"feature parties {', '.join(sorted(endpoints))}, audit "
        f"{_hide_password(service.audit.url)}",
        soft_wrap=True,
    )
    max_header_kb, header_timeout, max_connections = limits
    server_limits = server.ServerLimits(
        max_header_bytes=max_header_kb * 2**10, header_timeout=header_timeout,
        max_connections=max_connections,
    )  # fmt: skip
    if workers == 1:
        app = create_vertical_app(service, max_body=max_body)
        server.run(app, server_limits, host=host, port=port, announce=_listening, **UVICORN)
        return
    from jointcredit.service.workers import export_args, multiprocess_metrics

    # Checked once here; every worker loads and checks it again, with the same audit log.
    export_args({
        "model_dir": model, "trust_file": trust, "kit_dir": kit, "endpoints": endpoints,
        "policy_file": policy, "db_url": service.audit.url, "api_keys": api_keys,
        "coordinator_key_id": pin, "timeout": timeout, "exposure_registry": exposure[0],
        "federation_key": exposure[1], "workers": workers, "max_body": max_body, **options,
    })  # fmt: skip
    with multiprocess_metrics():
        server.run(
            "jointcredit.service.workers:vertical_app_from_env", server_limits, factory=True,
            workers=workers, host=host, port=port, announce=_listening, **UVICORN,
        )  # fmt: skip


def _listening(url: str) -> None:
    console.print(f"listening on {url} (API documentation: {url}/docs; Ctrl+C stops)")


def _answering(url: str) -> None:
    console.print(f"answering exposure queries on {url} (Ctrl+C stops)")


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
    except (AuthError, TrustError, OSError) as exc:
        err.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from exc
    err.print(f"API key for {institution} (shown once; {keys} keeps only its hash):")
    print(token)


@audit_app.command("verify")
def audit_verify(
    db: Annotated[str, typer.Option(help="SQLAlchemy URL of the decision log")],
    anchors: Annotated[
        Path | None, typer.Option(help="the service's signed anchors file: detects truncation")
    ] = None,
    anchor_public_key: Annotated[
        Path | None, typer.Option(help="the anchor key's public half (audit-anchor.key.pub)")
    ] = None,
) -> None:
    """Walk the hash chain; exit 1 naming the first broken row. With --anchors, also check
    that every row the service anchored is still there, unchanged."""
    from sqlalchemy.exc import SQLAlchemyError

    from jointcredit.service.anchors import check_anchors, read_anchors
    from jointcredit.service.audit import AuditError
    from jointcredit.service.consent import check_consents
    from jointcredit.service.records import derive_views
    from jointcredit.trust.errors import TrustError
    from jointcredit.trust.keys import load_public_key

    if (anchors is None) != (anchor_public_key is None):
        err.print("[red]error:[/red] --anchors and --anchor-public-key go together")
        raise typer.Exit(2)
    log = open_audit_log(db)
    try:
        seq, head = log.verify(derive_views)
        check_consents(log)  # the consent registry against its chained changes
        if anchors is not None and anchor_public_key is not None:
            found = read_anchors(anchors, load_public_key(anchor_public_key))
            check_anchors(found, log.row_hash)
            console.print(f"anchors: {len(found)} verified, the log holds every anchored row")
    except AuditError as exc:
        err.print(f"[red]FAILED[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(1) from exc
    except SQLAlchemyError as exc:  # e.g. a table dropped or a file that is no database
        err.print(f"[red]FAILED[/red] {escape(_db_problem(db, exc))}", soft_wrap=True)
        raise typer.Exit(1) from exc
    except TrustError as exc:  # the anchor public key file
        err.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from exc
    finally:
        log.close()
    console.print(f"OK: {seq} entries, head sha256 {head}", soft_wrap=True)


def open_audit_log(db: str) -> AuditLog:
    """The existing audit log at `db`, or exit 2 with one line that names the problem and the
    URL without its password (no traceback: it would print the URL's secrets)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from jointcredit.service.audit import AuditError, AuditLog

    try:
        make_url(db)
    except ArgumentError as exc:
        err.print(
            f"[red]error:[/red] --db {escape(repr(db[:200]))} is not a database URL "
            "(e.g. sqlite:///decisions.sqlite or postgresql+psycopg://user@host/db)",
            soft_wrap=True,
        )
        raise typer.Exit(2) from exc
    try:
        return AuditLog(db, create=False)
    except AuditError as exc:
        err.print(f"[red]error:[/red] {escape(_hide_password(str(exc), db))}", soft_wrap=True)
        raise typer.Exit(2) from exc
    except ImportError as exc:
        shown = _hide_password(db)
        err.print(
            f"[red]error:[/red] no database driver installed for {escape(shown)} "
            f"({escape(str(exc))}); PostgreSQL: pip install 'jointcredit\\[postgres]'",
            soft_wrap=True,
        )
        raise typer.Exit(2) from exc
    except (SQLAlchemyError, OSError) as exc:
        err.print(f"[red]error:[/red] {escape(_db_problem(db, exc))}", soft_wrap=True)
        raise typer.Exit(2) from exc


def _hide_password(text: str, db: str | None = None) -> str:
    """`text` with the URL `db` (default: `text` itself is the URL) shown without password."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    db = text if db is None else db
    try:
        url = make_url(db)
    except ArgumentError:
        return text
    shown = url.render_as_string(hide_password=True)
    return text.replace(url.render_as_string(hide_password=False), shown).replace(db, shown)


def _db_problem(db: str, exc: BaseException) -> str:
    """One line: which database (password hidden) and the driver's first line of why."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    cause = getattr(exc, "orig", None) or exc
    first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    try:
        password = make_url(db).password
    except ArgumentError:
        return f"--db {db[:200]!r} is not a database URL"
    if password:
        first = first.replace(str(password), "***")
    return _hide_password(f"cannot use the audit log at {db}: {first}", db)


@exposure_app.command("federation-key")
def exposure_federation_key(
    out: Annotated[Path, typer.Option(help="file for the federation's HMAC key (0600)")],
) -> None:
    """Create the key the service and every institution use for applicant pseudonyms."""
    import os

    from jointcredit.service.registry import new_federation_key

    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        err.print(f"[red]error:[/red] {out} exists")
        raise typer.Exit(2) from exc
    with os.fdopen(fd, "w") as f:
        f.write(new_federation_key() + "\n")
    console.print(f"wrote {out}")


@exposure_app.command("keygen")
def exposure_keygen(
    institution: Annotated[str, typer.Option(help="institution id")],
    out: Annotated[Path, typer.Option(help="directory for ID.exposure.key (0600)")],
    url: Annotated[str, typer.Option(help="where its exposure endpoint will answer")],
) -> None:
    """Create an institution's X25519 exposure key; prints its registry entry."""
    import json

    from jointcredit.service.registry import public_b64, write_exposure_key
    from jointcredit.trust.errors import TrustError
    from jointcredit.trust.store import check_institution_id

    try:
        check_institution_id(institution)
    except TrustError as exc:
        err.print(f"[red]error:[/red] --institution: {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from exc
    out.mkdir(parents=True, exist_ok=True)
    try:
        public = write_exposure_key(out / f"{institution}.exposure.key")
    except FileExistsError as exc:
        err.print(f"[red]error:[/red] {out / f'{institution}.exposure.key'} exists")
        raise typer.Exit(2) from exc
    entry = {institution: {"url": url, "x25519_public": public_b64(public)}}
    print(json.dumps(entry))


UNSIGNED_REGISTRY = (
    "[yellow]warning:[/yellow] {path} is an unsigned exposure registry: whoever can edit it can "
    "swap an institution's listed keys and read its figures. Sign it with `jointcredit exposure "
    "registry-sign` and pass the signed directory."
)


@exposure_app.command("registry-sign")
def exposure_registry_sign(
    registry: Annotated[Path, typer.Option(help="registry.json to sign")],
    trust: Annotated[Path, typer.Option(help="the federation's trust store")],
    coordinator_key: Annotated[Path, typer.Option(help="the coordinator's private key")],
    out: Annotated[Path, typer.Option(help="directory for the signed registry")],
    passphrase_env: Annotated[
        str | None, typer.Option(help="environment variable holding the key's passphrase")
    ] = None,
) -> None:
    """Sign the exposure registry with the coordinator key (verified by every party)."""
    from jointcredit.service.exposure import ExposureError
    from jointcredit.service.registry import sign_registry
    from jointcredit.trust import keys
    from jointcredit.trust.errors import TrustError
    from jointcredit.trust.store import load_store

    try:
        key = keys.load_private_key(coordinator_key, keys.passphrase_from_env(passphrase_env))
        signed = sign_registry(registry, out, key, load_store(trust))
    except (ExposureError, TrustError) as exc:
        err.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from exc
    console.print(
        f"signed {out} ({len(signed.institutions)} institutions of {signed.federation})",
        soft_wrap=True,
    )


@exposure_app.command("serve")
def exposure_serve(
    institution: Annotated[str, typer.Option(help="this institution's id")],
    key: Annotated[Path, typer.Option(help="its ID.exposure.key")],
    registry: Annotated[
        Path, typer.Option(help="the signed registry directory (or, unsigned, registry.json)")
    ],
    ledger: Annotated[Path, typer.Option(help="JSON {applicant id: outstanding amount}")],
    federation_key: Annotated[Path, typer.Option(help="federation HMAC key file")],
    host: str = "127.0.0.1",
    port: int = 9000,
    trust: Annotated[
        Path | None, typer.Option(help="trust store that verifies a signed registry")
    ] = None,
    max_header_kb: HeaderKbOption = 32,
    header_timeout: HeaderTimeoutOption = 5.0,
    max_connections: ConnectionsOption = 1000,
) -> None:
    """Answer secure-sum exposure queries with masked shares of this institution's figures."""
    from jointcredit.service import server
    from jointcredit.service.exposure import ExposureError, Institution, Ledger
    from jointcredit.service.exposure_http import institution_app
    from jointcredit.service.registry import (
        load_exposure_key,
        load_federation_key,
        load_registry,
        registry_is_signed,
    )
    from jointcredit.trust.errors import TrustError
    from jointcredit.trust.store import load_store

    try:
        fed_key = load_federation_key(federation_key)
        node = Institution(
            institution,
            load_exposure_key(key),
            load_registry(registry, load_store(trust) if trust else None),
            Ledger.load(ledger, fed_key),
        )
    except (ExposureError, TrustError) as exc:
        err.print(f"[red]refusing to start:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from exc
    if not registry_is_signed(registry):
        err.print(UNSIGNED_REGISTRY.format(path=registry), soft_wrap=True)
    limits = server.ServerLimits(
        max_header_bytes=max_header_kb * 2**10, header_timeout=header_timeout,
        max_connections=max_connections,
    )  # fmt: skip
    server.run(
        institution_app(node, fed_key), limits, host=host, port=port, announce=_answering,
        log_level="warning",
    )  # fmt: skip
