"""What an institution must not lose when the run crashes and resumes, kept by the institution.

Flower's `context.state` lives as long as the run: a resumed run is a new run (a new Flower
run, new processes in a simulation) and starts with it empty. Two things must survive: the
record-level DP ledger (a ledger back at zero would let the institution spend its budget
again) and SCAFFOLD's c_i (without it the resumed rounds correct with zero, and the model
differs from an uninterrupted run's). The institution writes them to its own state directory
(node config `state-dir`; simulation: the run config's `institution-state-dir`), one file per
run lineage, written whole or not at all, signed with its own update-signing key, and reads
them back, verified, when its Flower state has none.

The DP ledger is written ahead: the steps of a round are recorded (and the file written)
before the round trains, so a crash after the noise was drawn cannot forget them.

What is caught on reload: an edited file (signature), another institution's or another run's
file put in its place (institution and lineage are inside what is signed), a file older than
the checkpoint the run resumed from (its round; DP refuses to train), a missing file when the
run resumed (DP refuses to train). Not caught: a rollback to the file of the round just before
(the checkpoint's round when the institution had already trained the next one): that loses at
most one round of accounting; closing it needs a counter outside the file's reach.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flwr.app import Array, ArrayRecord, ConfigRecord, Context
from pydantic import BaseModel, ValidationError

from jointcredit.federation.protocol import STATE_RECORD_DP, STATE_SCAFFOLD, NodeConfig, RoundConfig
from jointcredit.federation.settings import RunSettings
from jointcredit.trust import keys
from jointcredit.trust.canonical import canonical_json
from jointcredit.trust.files import UnsafeFile, read_regular, replace_file
from jointcredit.trust.store import check_institution_id

FORMAT = "jointcredit-institution-state"
KEEP_CONTROLS = 2  # c_i of the last rounds: a resume continues from the checkpoint's


class DurableStateError(RuntimeError):
    """The institution will not train: its durable state is missing, stale or not its own."""


class InstitutionState(BaseModel):
    """The signed content of the file."""

    format: str = FORMAT
    institution: str
    lineage: str
    round: int  # the last training round that wrote it
    record_dp: dict[str, Any] | None = None  # the DP plan and ledger (`client.record_dp`)
    # SCAFFOLD: c_i after each of the last rounds (round -> name -> .npy bytes, base64).
    controls: dict[int, dict[str, str]] = {}


class SignedState(BaseModel):
    state: InstitutionState
    key_id: str
    signature: str


def state_dir(context: Context, settings: RunSettings) -> Path | None:
    node = NodeConfig.parse(context.node_config, "node config")
    if node.state_dir:
        return Path(node.state_dir)
    if node.simulated and settings.institution_state_dir:
        return Path(settings.institution_state_dir)
    return None


def state_path(directory: Path, lineage: str, institution: str) -> Path:
    if not lineage.isalnum():
        raise DurableStateError(f"lineage {lineage!r}: not a run lineage")
    return directory / lineage / f"{check_institution_id(institution)}.json"


def _npy(array: np.ndarray) -> str:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return base64.b64encode(buf.getvalue()).decode()


def _array(text: str) -> np.ndarray:
    return np.asarray(np.load(io.BytesIO(base64.b64decode(text)), allow_pickle=False))


def read(path: Path, key: Ed25519PrivateKey, institution: str, lineage: str) -> InstitutionState:
    """The verified state in `path`; DurableStateError naming what is wrong."""
    try:
        signed = SignedState.model_validate_json(read_regular(path))
    except (ValidationError, UnsafeFile) as exc:
        raise DurableStateError(f"{path}: unreadable institution state ({exc})") from exc
    if signed.key_id != keys.key_id(key):
        raise DurableStateError(f"{path}: signed with key {signed.key_id}, not this institution's")
    try:
        key.public_key().verify(
            base64.b64decode(signed.signature), canonical_json(signed.state.model_dump())
        )
    except (InvalidSignature, ValueError) as exc:
        raise DurableStateError(f"{path}: the signature does not match (edited?)") from exc
    state = signed.state
    if state.format != FORMAT or state.institution != institution or state.lineage != lineage:
        raise DurableStateError(
            f"{path}: the state of {state.institution} in run {state.lineage}, not of "
            f"{institution} in run {lineage}"
        )
    return state


def write(path: Path, state: InstitutionState, key: Ed25519PrivateKey) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    signature = key.sign(canonical_json(state.model_dump()))
    signed = SignedState(
        state=state, key_id=keys.key_id(key), signature=base64.b64encode(signature).decode()
    )
    replace_file(path, canonical_json(signed.model_dump()))


class Durable:
    """One training message's view of the institution's durable state."""

    def __init__(
        self,
        context: Context,
        settings: RunSettings,
        institution: str,
        config: RoundConfig,
        key: Ed25519PrivateKey,
    ) -> None:
        self.context, self.settings, self.institution, self.key = (
            context,
            settings,
            institution,
            key,
        )
        self.lineage = config.lineage
        self.server_round = config.server_round or 0
        self.resumed_from = config.resumed_from or 0
        directory = state_dir(context, settings)
        self.path = (
            None
            if directory is None or self.lineage is None
            else state_path(directory, self.lineage, institution)
        )

    def restore(self) -> None:
        """Before training: put back what the node's Flower state lost (a resumed run, a
        restarted node). Under record-level DP a resumed run never trains without its
        ledger."""
        dp = self.settings.privacy == "dp-record"
        scaffold = self.settings.strategy == "scaffold"
        state = self.context.state
        lost_dp = dp and STATE_RECORD_DP not in state.config_records
        lost_control = scaffold and STATE_SCAFFOLD not in state.array_records
        if not (lost_dp or lost_control):
            return
        saved = self._saved()
        if lost_dp and self.resumed_from > 0:
            if self.path is None:
                raise DurableStateError(
                    f"{self.institution}: the run resumed after round {self.resumed_from} and "
                    "this institution keeps no durable state (state-dir): its DP ledger "
                    "would start again from zero"
                )
            if saved is None or saved.record_dp is None:
                raise DurableStateError(
                    f"{self.path}: no DP ledger, and the run resumed after round "
                    f"{self.resumed_from}: refusing to train with a ledger back at zero"
                )
            if saved.round < self.resumed_from:
                raise DurableStateError(
                    f"{self.path}: the DP ledger is of round {saved.round}, older than the "
                    f"checkpoint's round {self.resumed_from} (rolled back or lost)"
                )
        if saved is None:
            return
        if lost_dp and saved.record_dp is not None:
            state[STATE_RECORD_DP] = ConfigRecord(saved.record_dp)
        if lost_control:
            # c_i after the round the run continues from: the one an uninterrupted run used.
            before = [r for r in saved.controls if r < self.server_round]
            if before:
                arrays = saved.controls[max(before)]
                state[STATE_SCAFFOLD] = ArrayRecord(
                    {n: Array(_array(a)) for n, a in arrays.items()}
                )

    def _saved(self) -> InstitutionState | None:
        if self.path is None or self.lineage is None or not self.path.exists():
            return None
        return read(self.path, self.key, self.institution, self.lineage)

    def save(self) -> None:
        """Write what the node's Flower state holds now (DP: before the round trains)."""
        if self.path is None or self.lineage is None:
            return
        state = self.context.state
        saved = self._saved()
        controls = dict(saved.controls) if saved is not None else {}
        own = state.array_records.get(STATE_SCAFFOLD)
        if own is not None and self.settings.strategy == "scaffold":
            controls[self.server_round] = {n: _npy(own[n].numpy()) for n in own}
            controls = {r: controls[r] for r in sorted(controls)[-KEEP_CONTROLS:]}
        record = state.config_records.get(STATE_RECORD_DP)
        write(
            self.path,
            InstitutionState(
                institution=self.institution,
                lineage=self.lineage,
                round=max(self.server_round, saved.round if saved is not None else 0),
                record_dp=None if record is None else dict(record),
                controls=controls,
            ),
            self.key,
        )
