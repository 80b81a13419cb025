"""A complete key set in one directory, for simulations and tests: the coordinator's key, one
key per institution and the trust store that ties them together.

Only for simulations, where every institution is played on one machine anyway; in deployment
each institution generates its own key on its own machine (`jointcredit keys new`) and only
public keys reach the coordinator.
"""

from __future__ import annotations

from pathlib import Path

from jointcredit.trust import keys, store
from jointcredit.trust.pins import record_pin
from jointcredit.trust.store import TrustStore

COORDINATOR = "coordinator"
TRUST_FILE = "trust.json"
RUN_KEYS_SUBDIR = "keys"  # simulation keys the ServerApp generates under the run directory


def private_key_path(directory: Path, institution: str) -> Path:
    return directory / f"{store.check_institution_id(institution)}.key"


def create_key_set(directory: Path, institutions: list[str], federation: str) -> TrustStore:
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    coordinator = keys.generate()
    keys.write_private_key(directory / f"{COORDINATOR}.key", coordinator)
    trust = store.create(federation, coordinator)
    for inst in institutions:
        key = keys.generate()
        keys.write_private_key(private_key_path(directory, inst), key)
        trust = store.add_key(trust, inst, key.public_key(), coordinator)
    store.save_store(directory / TRUST_FILE, trust)
    record_pin(federation, trust.coordinator.key_id)
    return trust
