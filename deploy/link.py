"""`jointcredit link start`: the coordinator's SuperLink and its long-lived ServerApp worker,
started together and supervised (`deploy/node.py`'s `Supervisor`).

`flower-superlink --isolation process` (TLS, node authentication) starts nothing itself;
`deploy/serverapp_worker.py` takes each run, with the app imported once. They share a
per-start random secret (`node.private_secret`: a 0600 file in a private directory, removed on
exit) so that only this worker can take the SuperLink's runs. The worker reaches the
SuperLink's Runtime API over TLS with the kit's CA, at an address the SuperLink listens on and
its certificate names (`runtime_address`): loopback when it can, else the federation's address
or the `--listen` address; `link start` refuses to start when there is none.
"""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

from cryptography import x509

from jointcredit.deploy import serverapp_worker
from jointcredit.deploy.kits import CA_CERT, SUPERLINK_CERT, load_federation
from jointcredit.deploy.node import NodeCommands, Supervisor, private_secret
from jointcredit.deploy.processes import superlink_command

LOOPBACK = "127.0.0.1"
WORKER_NAME = "ServerApp worker"


def _certificate_names(kit: Path) -> set[str]:
    """The names and addresses the SuperLink's TLS certificate is valid for."""
    cert = x509.load_pem_x509_certificate((kit / SUPERLINK_CERT).read_bytes())
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    ips = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    return ips | {name.lower() for name in sans.get_values_for_type(x509.DNSName)}


def _canonical(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return host.lower()


def runtime_address(kit: Path, listen: str | None) -> str:
    """Where the worker reaches the SuperLink's Runtime API (its one HTTPS port): an address
    the SuperLink listens on that its certificate names. Raises ValueError when there is
    none (the worker could never connect, and runs would wait without an error)."""
    fed = load_federation(kit)
    names = _certificate_names(kit)
    host = None if listen is None else _canonical(listen)
    if host in (None, "0.0.0.0", "::"):  # every interface: loopback, or the federation name
        if LOOPBACK in names:
            return f"{LOOPBACK}:{fed.port}"
        return fed.superlink
    assert host is not None
    if host in names:
        return f"[{host}]:{fed.port}" if ":" in host else f"{host}:{fed.port}"
    raise ValueError(
        f"the SuperLink's certificate does not name --listen {listen}, so its ServerApp worker "
        "could not reach it over TLS: listen on all interfaces, or provision the federation "
        f"with --extra-host {listen}"
    )


def link_commands(kit: Path, state: Path, secret: Path, listen: str | None = None) -> NodeCommands:
    """The two processes of the coordinator's SuperLink (raises ValueError on a bad kit)."""
    link = superlink_command(kit, state, listen, serverapp_secret=secret)
    worker = [
        sys.executable,
        "-m",
        serverapp_worker.__name__,
        "--runtime-api-address",
        runtime_address(kit, listen),
        "--root-certificates",
        str((kit / CA_CERT).resolve()),
        "--superexec-auth-secret-file",
        str(secret),
    ]
    return NodeCommands(link, worker)


def run_link(kit: Path, state: Path, env: dict[str, str], listen: str | None = None) -> int:
    """Run the SuperLink until SIGTERM/SIGINT or until it exits; its exit code."""
    with private_secret() as secret:
        commands = link_commands(kit, state, secret, listen)
        return Supervisor(commands, env, worker_name=WORKER_NAME).run()


def link_start_command(kit: Path, state: Path, listen: str | None = None) -> list[str]:
    """`jointcredit link start ...` as a command line (for demos, tests and scripts that run
    the SuperLink as its own process, the way a coordinator does)."""
    from jointcredit.deploy.processes import flower_bin

    cmd = [flower_bin("jointcredit"), "link", "start", "--kit", str(kit), "--state", str(state)]
    return cmd if listen is None else [*cmd, "--listen", listen]
