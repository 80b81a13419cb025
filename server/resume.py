"""Continue a run from its latest signed checkpoint (`resume = true`).

What the coordinator carries between rounds besides the model goes into each checkpoint as two
more files the signed manifest covers: `server-state.json` (the lineage, the rounds' records,
accepted update digests and timings so far, the privacy spent, earlier resumes, institution-
level DP's releases) and `server-state.npz` (the strategy's arrays: FedAvgM's momentum,
SCAFFOLD's c). A resume verifies the checkpoint against the run's trust store before it reads
any of it, refuses settings that differ from the signed ones (naming the keys) and restores
all of it; what each institution must not lose (its DP ledger, its c_i) it keeps itself
(`client.durable`).
"""

from __future__ import annotations

import io
import secrets
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from logging import INFO
from pathlib import Path
from typing import Any, cast

import numpy as np
from flwr.app import Array, ArrayRecord
from flwr.common.logger import log
from flwr.serverapp.strategy import FedAvgM
from flwr.supercore.privacy_accounting import GaussianPrivacyEvent
from pydantic import BaseModel, ConfigDict, Field

from jointcredit.federation.checkpoints import latest_checkpoint
from jointcredit.federation.metrics import RecordDP, RoundRecord
from jointcredit.federation.settings import RunSettings, SettingsError
from jointcredit.models.artifact import PREPROCESSING, WEIGHTS, ArtifactError, verify_artifact
from jointcredit.models.preprocessing import PreprocessingSpec
from jointcredit.server.errors import FederationError
from jointcredit.server.scaffold import Scaffold
from jointcredit.server.tracker import RoundTracker
from jointcredit.trust.canonical import canonical_json
from jointcredit.trust.store import TrustStore

STATE_JSON = "server-state.json"
STATE_ARRAYS = "server-state.npz"
_MOMENTUM, _CONTROL = "momentum.", "control."


class ServerState(BaseModel):
    """What the coordinator carries from round to round, besides the model."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    lineage: str
    round: int
    rounds: list[dict[str, Any]] = Field(default_factory=list)  # metrics.json's rounds[]
    updates: list[dict[str, Any]] = Field(default_factory=list)  # accepted update digests
    round_seconds: list[float] = Field(default_factory=list)
    central_by_round: dict[int, dict[str, Any]] = Field(default_factory=dict)
    central_epsilon: dict[int, float] = Field(default_factory=dict)
    spent: dict[str, Any] = Field(default_factory=dict)  # the privacy spent so far
    releases: int = 0  # institution-level DP: aggregates released so far
    resumes: list[dict[str, Any]] = Field(default_factory=list)  # from which round, when
    arrays: dict[str, np.ndarray] = Field(default_factory=dict, exclude=True)  # the strategy's

    @staticmethod
    def new_lineage() -> str:
        return secrets.token_hex(8)

    def files(self) -> dict[str, bytes]:
        buf = io.BytesIO()
        cast(Any, np.savez)(buf, **self.arrays)
        body = canonical_json(self.model_dump(mode="json"))
        return {STATE_JSON: body, STATE_ARRAYS: buf.getvalue()}

    @classmethod
    def from_files(cls, data: bytes, arrays: bytes) -> ServerState:
        state = cls.model_validate_json(data)
        with np.load(io.BytesIO(arrays), allow_pickle=False) as npz:
            state.arrays = {k: npz[k].copy() for k in npz.files}
        return state


@dataclass(frozen=True)
class ResumePoint:
    """A verified checkpoint: the model after `state.round` and everything carried with it."""

    path: Path
    model: ArrayRecord
    preprocessing: bytes  # the agreed spec's signed bytes, to check the joined nodes agree
    institutions: list[str]
    state: ServerState


def load_resume_point(run_dir: Path, trust: TrustStore, recorded_check: Any) -> ResumePoint:
    """Verify the latest checkpoint under `run_dir` with `trust` (the run's coordinator must
    have signed it) and read it; `recorded_check(training)` raises when the settings differ."""
    path = latest_checkpoint(run_dir)
    if path is None:
        raise FederationError(f"{run_dir}: no checkpoint to resume from")
    try:
        verified = verify_artifact(path, trust)
    except ArtifactError as exc:
        raise FederationError(f"refusing to resume from {path}: {exc}") from exc
    recorded_check(verified.manifest.get("training", {}))
    if STATE_JSON not in verified.contents or STATE_ARRAYS not in verified.contents:
        raise FederationError(f"{path}: the checkpoint carries no coordinator state to resume")
    state = ServerState.from_files(verified.contents[STATE_JSON], verified.contents[STATE_ARRAYS])
    with np.load(io.BytesIO(verified.contents[WEIGHTS]), allow_pickle=False) as npz:
        model = ArrayRecord({k: Array(npz[k].copy()) for k in npz.files})
    return ResumePoint(
        path=path,
        model=model,
        preprocessing=verified.contents[PREPROCESSING],
        institutions=list(verified.manifest.get("institutions", [])),
        state=state,
    )


def resume_point(run_dir: Path, trust: TrustStore, settings: RunSettings) -> ResumePoint:
    """The verified checkpoint a run with these settings continues from, this resume
    recorded in its state (for the next checkpoints and the final manifest)."""
    point = load_resume_point(
        run_dir,
        trust,
        lambda training: require_same_settings(settings.differences(training), run_dir),
    )
    log(INFO, "Resuming after round %s from %s", point.state.round, point.path)
    at = datetime.now(UTC).isoformat(timespec="seconds")
    point.state.resumes.append({"from_round": point.state.round, "at": at})
    return point


def check_joined(point: ResumePoint, institutions: list[str], spec: PreprocessingSpec) -> None:
    """The nodes that joined must be the checkpoint's institutions and agree the same
    preprocessing (their data unchanged), or the rounds would continue another model."""
    if institutions != sorted(point.institutions):
        raise FederationError(
            f"resume: institutions {institutions} joined, the checkpoint was trained by "
            f"{sorted(point.institutions)}"
        )
    if canonical_json(spec.model_dump(mode="json")) != point.preprocessing:
        raise FederationError(
            "resume: the institutions agreed other preprocessing than the checkpoint's "
            "(has their data changed?)"
        )


def restore_tracker(tracker: RoundTracker, state: ServerState, model: ArrayRecord) -> None:
    tracker.latest = {state.round: model}
    tracker.central_by_round.update(state.central_by_round)
    tracker.central_epsilon.update(state.central_epsilon)
    tracker.round_seconds.extend(state.round_seconds)


def server_state(
    lineage: str,
    server_round: int,
    prior: ServerState | None,
    new_rounds: list[RoundRecord],
    new_updates: list[dict[str, Any]],
    tracker: RoundTracker,
    spent: dict[str, Any],
    strategy: object,
) -> ServerState:
    """What a resume after `server_round` needs besides the model."""
    return ServerState(
        lineage=lineage,
        round=server_round,
        rounds=(prior.rounds if prior else [])
        + [r.model_dump(mode="json", exclude_unset=True) for r in new_rounds],
        updates=(prior.updates if prior else []) + new_updates,
        round_seconds=list(tracker.round_seconds),
        central_by_round=dict(tracker.central_by_round),
        central_epsilon=dict(tracker.central_epsilon),
        spent=spent_json(spent),
        releases=releases(strategy),
        resumes=prior.resumes if prior else [],
        arrays=strategy_arrays(strategy),
    )


def merged_rounds(prior: ServerState | None, new: list[RoundRecord]) -> list[RoundRecord]:
    """metrics.json's rounds[]: those before the resume, then this start's."""
    before = [RoundRecord.model_validate(r) for r in prior.rounds] if prior else []
    return before + new


def merged_spent(prior: ServerState | None, spent: dict[str, Any]) -> dict[str, Any]:
    """`privacy_record` of this start's rounds, with what was spent before a resume."""
    if prior is None:
        return spent
    merged = merge_spent(prior.spent, spent_json(spent))
    if merged.get("record_dp") is not None:
        merged["record_dp"] = RecordDP.model_validate(merged["record_dp"])
    # Institution-level DP: the restored accountant already holds the releases before.
    return {**spent, **{k: merged[k] for k in spent if k != "institution_dp"}}


def require_same_settings(differences: list[str], where: Path) -> None:
    if differences:
        raise SettingsError(
            f"resume: settings differ from the signed checkpoint in {where}: "
            + ", ".join(differences)
            + " (a resumed run keeps the settings it started with)"
        )


def strategy_arrays(strategy: object) -> dict[str, np.ndarray]:
    """The strategy's own arrays that a resumed run needs (the model aside)."""
    inner = getattr(strategy, "strategy", strategy)  # Flower's DP wrappers hold the FedAvg
    if isinstance(inner, FedAvgM) and inner.momentum_vector is not None:
        return {f"{_MOMENTUM}{i:04d}": np.asarray(v) for i, v in enumerate(inner.momentum_vector)}
    if isinstance(inner, Scaffold) and inner.control is not None:
        return {f"{_CONTROL}{k}": inner.control[k].numpy() for k in inner.control}
    return {}


def releases(strategy: object) -> int:
    spent = getattr(strategy, "privacy_spent", lambda: None)()
    return 0 if spent is None else int(spent.num_releases)


def restore_strategy(strategy: object, point: ResumePoint, model: ArrayRecord) -> None:
    """Put the strategy where it stood after the checkpoint's round (`model`: the
    checkpoint's model, its arrays in the order the strategy pairs them)."""
    state, inner = point.state, getattr(strategy, "strategy", strategy)
    if isinstance(inner, FedAvgM):
        inner.current_arrays = model
        momentum = sorted(k for k in state.arrays if k.startswith(_MOMENTUM))
        inner.momentum_vector = [state.arrays[k] for k in momentum] or None
    if isinstance(inner, Scaffold):
        names = [k.removeprefix(_CONTROL) for k in state.arrays if k.startswith(_CONTROL)]
        if names:
            inner.control = ArrayRecord({n: Array(state.arrays[_CONTROL + n]) for n in names})
    accountant = getattr(strategy, "accountant", None)
    if accountant is not None and state.releases:
        # Flower's accountant is the composition of identical releases: composing as many as
        # were released before the crash restores what was spent.
        event = GaussianPrivacyEvent(
            noise_multiplier=strategy.noise_multiplier,  # type: ignore[attr-defined]
            sample_size=strategy.num_sampled_clients,  # type: ignore[attr-defined]
            population_size=accountant.config.population_size,
        )
        accountant.compose(event, count=state.releases)


def spent_json(spent: dict[str, Any]) -> dict[str, Any]:
    """`privacy_record`'s dict as JSON values (its sections are pydantic models)."""
    return {
        k: v.model_dump(mode="json") if isinstance(v, BaseModel) else v for k, v in spent.items()
    }


def merge_spent(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Record-level DP's spending over the rounds before and after a resume: each
    institution's reported epsilon is cumulative (its ledger survived), steps add up."""
    if not before.get("record_dp") or not after.get("record_dp"):
        return after or before
    merged = dict(after)
    merged["epsilon_per_institution"] = {
        **(before.get("epsilon_per_institution") or {}),
        **(after.get("epsilon_per_institution") or {}),
    }
    spent = [e for e in merged["epsilon_per_institution"].values() if e is not None]
    if after.get("epsilon_spent") is not None or spent:
        merged["epsilon_spent"] = max(spent) if spent else None
    old, new = before["record_dp"], dict(after["record_dp"])
    new["steps"] = {
        i: old.get("steps", {}).get(i, 0) + new.get("steps", {}).get(i, 0)
        for i in sorted(set(old.get("steps", {})) | set(new.get("steps", {})))
    }
    new["budget_exhausted_round"] = {
        **new.get("budget_exhausted_round", {}),
        **old.get("budget_exhausted_round", {}),
    }
    for key in ("noise_multiplier", "sample_rate"):
        new[key] = {**old.get(key, {}), **new.get(key, {})}
    merged["record_dp"] = new
    return merged


def write_atomically(path: Path, write: Any) -> None:
    """`write(tmp)` fills a directory beside `path`, which then replaces `path` in one rename:
    a crash leaves the previous checkpoint and at worst a `.partial` directory, never a
    half-written checkpoint a resume would take for the latest."""
    tmp = path.parent / f".{path.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
