"""`jointcredit provision`, `jointcredit link ...` (coordinator) and `jointcredit node ...`
(institution): deployment across partner machines. How-to: docs/DEPLOYMENT.md."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from jointcredit.cli.options import RUN_CONFIG_HELP, parse_run_config
from jointcredit.cli.run_cmds import progress_bar
from jointcredit.deploy import kits, link, node, processes
from jointcredit.deploy.resume import check_resume, resume_config, superseded_run
from jointcredit.federation.metrics import RunMetrics
from jointcredit.federation.settings import SettingsError
from jointcredit.trust import keys
from jointcredit.trust.keyset import TRUST_FILE

link_app = typer.Typer(no_args_is_help=True, help="The coordinator's SuperLink and runs.")
node_app = typer.Typer(no_args_is_help=True, help="An institution's SuperNode.")
console = Console()
err = Console(stderr=True)

Kit = Annotated[Path, typer.Option("--kit", help="this party's kit directory (from provision)")]
FlwrHome = Annotated[
    Path, typer.Option(help="the flwr CLI's home (its connections file is written there)")
]
CONNECTION = "jointcredit"


def _fail(exc: Exception, code: int = 2) -> typer.Exit:
    err.print(f"[red]error:[/red] {exc}", soft_wrap=True)
    return typer.Exit(code)


def provision(
    out: Annotated[Path, typer.Option(help="new directory for every party's kit")],
    federation: Annotated[str | None, typer.Option(help="federation name")] = None,
    institutions: Annotated[
        str | None, typer.Option(help="comma-separated institution ids")
    ] = None,
    superlink: Annotated[
        str | None, typer.Option(help="HOST:PORT the nodes reach the SuperLink at")
    ] = None,
    extra_host: Annotated[
        list[str] | None, typer.Option(help="another name or address in the TLS certificate")
    ] = None,
    add: Annotated[
        str | None,
        typer.Option(help="add this institution to the federation already provisioned in --out"),
    ] = None,
    coordinator_key_passphrase_env: Annotated[
        str | None, typer.Option(help="with --add: env variable holding the key's passphrase")
    ] = None,
) -> None:
    """Create the federation's CA, the SuperLink's TLS certificate, each institution's kit
    (node-authentication key, update-signing key, trust store, CA) and the coordinator's; or,
    with --add, one more institution's kit in an existing federation."""
    if add is not None:
        if federation or institutions or superlink or extra_host:
            raise _fail(ValueError("--add takes only --out (the existing federation)"))
        try:
            passphrase = keys.passphrase_from_env(coordinator_key_passphrase_env)
            kit = kits.add_institution(out, add, passphrase=passphrase)
        except (ValueError, OSError) as exc:
            raise _fail(exc) from exc
        coord = out / kits.COORDINATOR_DIR
        console.print(f"{add}: {kit}")
        console.print(
            f"  register its node key: jointcredit link register --kit {coord} --institution {add}"
        )
        console.print(
            f"  hand {coord / TRUST_FILE} and {coord / kits.FEDERATION_FILE} to every party "
            "(their kits under --out are updated)"
        )
        return
    missing = [
        name
        for name, value in (("--federation", federation), ("--institutions", institutions),
                            ("--superlink", superlink))
        if not value
    ]  # fmt: skip
    if missing:
        raise _fail(ValueError(f"a new federation needs {', '.join(missing)}"))
    assert federation and institutions and superlink
    ids = [i.strip() for i in institutions.split(",") if i.strip()]
    try:
        done = kits.provision(federation, ids, superlink, out, extra_hosts=extra_host or [])
    except (ValueError, OSError) as exc:
        raise _fail(exc) from exc
    console.print(f"Federation {federation!r}: CA sha256 {done.federation.ca_sha256[:16]}...")
    console.print(f"  coordinator kit: {done.coordinator}")
    for inst in ids:
        console.print(f"  {inst}: {done.kit(inst)}")
    console.print(f"  CA key (keep offline): {out / kits.PROVISIONER_DIR / kits.CA_KEY}")


@link_app.command("start")
def link_start(
    kit: Kit,
    state: Annotated[Path, typer.Option(help="directory for the SuperLink's state")] = Path(
        "superlink-state"
    ),
    listen: Annotated[
        str | None, typer.Option(help="address to listen on [default: 0.0.0.0]")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="print the commands instead")] = False,
) -> None:
    """Run the SuperLink (TLS, node authentication) until SIGTERM, with the long-lived
    ServerApp worker that runs this machine's installed ServerApp for each run, both
    supervised here."""
    try:
        if dry_run:
            secret = Path("PRIVATE-DIR") / node.SECRET_NAME  # made fresh at each start
            cmds = link.link_commands(kit, state, secret, listen)
            console.print(processes.shell_line(cmds.supernode), soft_wrap=True)
            console.print(processes.shell_line(cmds.clientapp), soft_wrap=True)
            return
        code = link.run_link(kit, state, processes.flower_env(), listen)
    except (ValueError, OSError) as exc:
        raise _fail(exc) from exc
    raise typer.Exit(code)


@link_app.command("register")
def link_register(
    kit: Kit,
    flwr_home: FlwrHome = Path("flwr-home"),
    address: Annotated[str | None, typer.Option(help="SuperLink address if not the kit's")] = None,
    institution: Annotated[
        list[str] | None, typer.Option(help="register only these (default: all)")
    ] = None,
) -> None:
    """Register every institution's node key with the SuperLink (`flwr supernode register`)."""
    try:
        processes.write_connection(kit, flwr_home, CONNECTION, address)
        done = processes.register_nodes(kit, flwr_home, CONNECTION, institution)
    except (ValueError, RuntimeError) as exc:
        raise _fail(exc, 1) from exc
    for inst in done:
        console.print(f"registered {inst}")


@link_app.command("run")
def link_run(
    kit: Kit,
    app_dir: Annotated[Path, typer.Option("--app", help="the jointcredit app directory")] = Path(
        "."
    ),
    out: Annotated[Path, typer.Option(help="where the ServerApp writes model and metrics")] = Path(
        "runs/deployed"
    ),
    rounds: Annotated[
        int | None, typer.Option(min=1, help="training rounds (default: the app's config, 20)")
    ] = None,
    run_config: Annotated[list[str] | None, typer.Option(help=RUN_CONFIG_HELP)] = None,
    flwr_home: FlwrHome = Path("flwr-home"),
    address: Annotated[str | None, typer.Option(help="SuperLink address if not the kit's")] = None,
    timeout: Annotated[float, typer.Option(help="seconds before giving up")] = 3600.0,
    resume: Annotated[
        Path | None,
        typer.Option(
            help="continue the run in this directory from its last signed checkpoint, with "
            "the settings it signed (keys given must agree; it becomes --out)"
        ),
    ] = None,
) -> None:
    """Start a training run on the registered nodes, show its rounds and wait for its real
    final status. The settings are resolved and checked here first, as the coordinator will
    resolve them: a run that could not work is refused (exit 2) before anything starts."""
    try:
        extra = parse_run_config(run_config)
        if rounds is not None:
            if "rounds" in extra:
                raise SettingsError("rounds: given as an option and in --run-config")
            extra["rounds"] = rounds
        if resume is not None:
            # The run's settings come from its signed checkpoint (the keys given must agree).
            out, extra = resume, {**resume_config(resume, kit, extra), "resume": True}
        config = processes.run_config(kit, out, extra)
        settings = processes.resolved_settings(app_dir, kit, config)
        if settings.layout == "vertical":
            if resume is not None:
                raise SettingsError("--resume: vertical runs have no checkpoints to resume")
            processes.resolved_vertical(app_dir, config)
        if resume is not None:
            check_resume(resume, kit, settings)
    except (SettingsError, ValueError) as exc:
        raise _fail(exc) from exc
    progress = progress_bar()
    task = progress.add_task("federation", total=None, status="starting the run")

    def on_line(line: str) -> None:
        started = processes.round_started(line)
        if started is not None:
            done, total = started[0] - 1, started[1]
            progress.update(task, total=total, completed=done, status=f"round {started[0]}")
        elif (auc := processes.reported_auc(line)) is not None:
            progress.update(task, status=f"AUC (institutions) {auc:.4f}")

    try:
        processes.write_connection(kit, flwr_home, CONNECTION, address)
        killed = None if resume is None else superseded_run(resume, kit)
        if killed is not None and processes.stop_run(flwr_home, CONNECTION, killed):
            # Its undelivered messages would otherwise still reach the nodes, where the
            # killed run's tasks and the resumed run's would write the same DP ledgers.
            console.print(f"stopped run {killed}, which this resume supersedes")
        with progress:
            run_id, status = processes.start_run(
                app_dir, flwr_home, CONNECTION, config, timeout, on_line=on_line
            )
            if status == "finished:completed" and progress.tasks[0].total is not None:
                progress.update(task, completed=progress.tasks[0].total)
    except (ValueError, RuntimeError, OSError, subprocess.SubprocessError) as exc:
        raise _fail(exc, 1) from exc
    console.print(f"run {run_id}: {status}")
    if status != "finished:completed":
        err.print(f"the ServerApp's log: {flwr_home / f'run-{run_id}.log'}")
        raise typer.Exit(1)
    if settings.layout == "vertical":
        vertical = json.loads((out / "metrics.json").read_text())
        facts = vertical["vertical"]
        console.print(
            f"model: {out / 'model'}  AUC (label party's test rows): "
            f"{vertical['federated']['auc']:.4f}  parties: {', '.join(facts['parties'])}  "
            f"aligned: {facts['intersection_size']}"
        )
        return
    auc = RunMetrics.read(out / "metrics.json").federated.auc
    shown = "-" if auc is None else f"{auc:.4f}"
    console.print(f"model: {out / 'model'}  AUC (institutions): {shown}")


@node_app.command("start")
def node_start(
    kit: Kit,
    data: Annotated[Path, typer.Option(help="this institution's data file (CSV or Parquet)")],
    schema: Annotated[Path | None, typer.Option(help="schema.toml of the federation")] = None,
    port: Annotated[int, typer.Option(help="this SuperNode's local runtime port")] = 9094,
    superlink: Annotated[str | None, typer.Option(help="override the kit's address")] = None,
    poll_interval: Annotated[
        float,
        typer.Option(
            min=0.01,
            max=3.0,
            help="seconds an idle SuperNode waits between polls of the SuperLink (Flower's "
            "own: 3 s; each idle node polls about 1/this times a second: keep 0.5 or more "
            "for large federations); during a run it polls every 0.2 s at most (unless this "
            "is above 0.5), and checks for its ClientApp's reply every 20 ms",
        ),
    ] = 0.5,
    node_config: Annotated[
        list[str] | None,
        typer.Option(
            "--node-config",
            help="KEY=VALUE, repeatable: a setting this institution gives its own node, never "
            "the coordinator's to set: pair-min-rows=N (a vertical platform's pair-table "
            "floor), allow-time-split=true (a vertical bank takes split = time), "
            "share-fairness=true (a vertical bank sends its fairness figures)",
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="print the commands instead")] = False,
) -> None:
    """Run this institution's node until SIGTERM: its SuperNode (TLS to the federation's
    SuperLink, authenticated with the kit's node key, reading only --data) and the
    long-lived ClientApp worker that handles its messages, both supervised here."""
    try:
        options = processes.node_options(node_config or [])
        if dry_run:
            secret = Path("PRIVATE-DIR") / node.SECRET_NAME  # made fresh at each start
            cmds = node.node_commands(kit, data, secret, schema=schema, port=port,
                                      superlink=superlink, poll_interval=poll_interval,
                                      options=options)  # fmt: skip
            console.print(processes.shell_line(cmds.supernode), soft_wrap=True)
            console.print(processes.shell_line(cmds.clientapp), soft_wrap=True)
            return
        code = node.run_node(
            kit, data, processes.flower_env(), schema=schema, port=port, superlink=superlink,
            poll_interval=poll_interval, options=options,
        )  # fmt: skip
    except ValueError as exc:
        raise _fail(exc) from exc
    raise typer.Exit(code)
