"""The coordinator's signing key and the federation trust store for this run.

Deployment: `trust-file` and `coordinator-key` (optionally passphrase-protected) in the run
config, paths on the coordinator's machine. Simulation: `keys-dir` (a key set made by
`jointcredit simulate`), or nothing, and then this ServerApp generates a key set for the
dataset's institutions under the run directory, where the simulated nodes on this machine find
their keys; the private keys are deleted when the run ends (`discard_generated`).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from jointcredit.federation.settings import RunSettings
from jointcredit.server.errors import FederationError
from jointcredit.trust import keys
from jointcredit.trust.errors import TrustError
from jointcredit.trust.keyset import COORDINATOR, RUN_KEYS_SUBDIR, TRUST_FILE, create_key_set
from jointcredit.trust.store import TrustStore, load_store


@dataclass(frozen=True)
class CoordinatorIdentity:
    key: Ed25519PrivateKey
    trust: TrustStore
    generated: Path | None  # a key set this ServerApp made (simulation), removed at the end


def _load(trust_file: Path, key_file: Path, passphrase_env: str) -> CoordinatorIdentity:
    try:
        trust = load_store(trust_file)
        key = keys.load_private_key(key_file, keys.passphrase_from_env(passphrase_env or None))
    except TrustError as exc:
        raise FederationError(str(exc)) from exc
    if keys.key_id(key) != trust.coordinator.key_id:
        raise FederationError(
            f"{key_file} (key {keys.key_id(key)}) is not the coordinator key of {trust_file} "
            f"({trust.coordinator.key_id})"
        )
    return CoordinatorIdentity(key=key, trust=trust, generated=None)


def coordinator_identity(settings: RunSettings, run_id: int) -> CoordinatorIdentity:
    if settings.trust_file or settings.coordinator_key:
        if not (settings.trust_file and settings.coordinator_key):
            raise FederationError("set both trust-file and coordinator-key in the run config")
        return _load(
            Path(settings.trust_file),
            Path(settings.coordinator_key),
            settings.coordinator_key_passphrase_env,
        )
    if settings.keys_dir:
        directory = Path(settings.keys_dir)
        return _load(directory / TRUST_FILE, directory / f"{COORDINATOR}.key", "")
    # A simulation started without keys (`flwr run .`): generate them for this run.
    from jointcredit.data.catalog import resolve

    directory = settings.run_dir(run_id) / RUN_KEYS_SUBDIR
    shutil.rmtree(directory, ignore_errors=True)  # a previous run's keys in a reused out-dir
    institutions = resolve(settings.data).ids
    trust = create_key_set(directory, institutions, federation=f"simulation-{run_id}")
    key = keys.load_private_key(directory / f"{COORDINATOR}.key")
    return CoordinatorIdentity(key=key, trust=trust, generated=directory)


def discard_generated(identity: CoordinatorIdentity) -> None:
    if identity.generated is not None:
        shutil.rmtree(identity.generated, ignore_errors=True)
