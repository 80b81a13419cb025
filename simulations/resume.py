"""`jointcredit simulate --resume RUN_DIR`: find a killed simulation, check it, continue it.

A simulation runs in a staging directory beside OUT (`.OUT.partial-XXXX`) and is moved into
place only when it succeeded, so a killed run leaves its staging directory behind with what a
resume needs: `checkpoints/round-NNN/` (signed, with the coordinator's state), `institutions/`
(each institution's signed durable state) and, when the run made its own keys, `keys/` (the
run's key set, 0700: the checkpoint's trust store and the institutions' own keys must be the
same after the resume). RUN_DIR is that staging directory, or OUT itself (then the one staging
directory beside it with a checkpoint; several are refused, naming them).

Before anything starts: the latest checkpoint verifies against the run's trust store (pinned
coordinator key), and the keys given now must not differ from the settings it records.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jointcredit.federation.checkpoints import latest_checkpoint, resumed_settings
from jointcredit.federation.settings import RunSettings, SettingsError
from jointcredit.models.artifact import ArtifactError, verify_artifact
from jointcredit.trust.errors import TrustError
from jointcredit.trust.keyset import RUN_KEYS_SUBDIR, TRUST_FILE
from jointcredit.trust.pins import pinned_key
from jointcredit.trust.store import load_store

PARTIAL = ".partial-"
INSTITUTIONS_SUBDIR = "institutions"  # each institution's durable state (client.durable)


class ResumeRefused(ValueError):
    """The run cannot be resumed as asked; the message says why (exit 2)."""


@dataclass(frozen=True)
class KilledRun:
    staging: Path  # the killed run's directory, where the resumed run goes on
    out: Path  # where the finished run is published
    checkpoint: Path
    settings: RunSettings  # the recorded settings, located in `staging`


def target_of(staging: Path) -> Path:
    """OUT for a staging directory `.OUT.partial-XXXX`."""
    name = staging.name
    if not name.startswith(".") or PARTIAL not in name:
        raise ResumeRefused(f"{staging}: not a simulation's run directory")
    return staging.parent / name[1:].rsplit(PARTIAL, 1)[0]


def find_run(run_dir: Path) -> Path:
    run_dir = run_dir.resolve()
    if PARTIAL in run_dir.name:
        if latest_checkpoint(run_dir) is None:
            raise ResumeRefused(f"{run_dir}: no checkpoint to resume from")
        return run_dir
    candidates = sorted(
        p
        for p in run_dir.parent.glob(f".{run_dir.name}{PARTIAL}*")
        if p.is_dir() and latest_checkpoint(p) is not None
    )
    if not candidates:
        raise ResumeRefused(
            f"{run_dir}: no killed run of it to resume (no {run_dir.parent}/.{run_dir.name}"
            f"{PARTIAL}* with a checkpoint)"
        )
    if len(candidates) > 1:
        raise ResumeRefused(
            f"{run_dir}: several killed runs of it; name one: "
            + ", ".join(str(p) for p in candidates)
        )
    return candidates[0]


def killed_run(run_dir: Path, given: dict[str, Any]) -> KilledRun:
    """The killed run under `run_dir` and its settings: those its latest checkpoint signed,
    with `given` (the keys the caller typed) allowed only where they agree."""
    staging = find_run(run_dir)
    checkpoint = latest_checkpoint(staging)
    assert checkpoint is not None
    keys_dir = Path(given["keys-dir"]) if given.get("keys-dir") else staging / RUN_KEYS_SUBDIR
    trust_file = keys_dir / TRUST_FILE
    try:
        store = load_store(trust_file)
    except (TrustError, OSError) as exc:
        raise ResumeRefused(
            f"{trust_file}: the run's keys are not there ({exc}): only a run started with "
            "--resumable keeps its keys for a resume (one started with --keys-dir resumes "
            "with the same --keys-dir); its checkpoints still verify against its trust.json"
        ) from exc
    pin = pinned_key(store.federation)
    if pin is not None and pin != store.coordinator.key_id:
        raise ResumeRefused(
            f"{trust_file}: coordinator key {store.coordinator.key_id}, pinned {pin} for "
            f"{store.federation}"
        )
    try:
        verified = verify_artifact(checkpoint, store)
    except ArtifactError as exc:
        raise ResumeRefused(f"refusing to resume from {checkpoint}: {exc}") from exc
    recorded: dict[str, Any] = dict(verified.manifest.get("training", {}))
    resumed_settings(recorded, given, checkpoint, local={"keys-dir"})  # given keys must agree
    settings = RunSettings.from_run_config(
        {
            **recorded,
            "out-dir": str(staging),
            "keys-dir": str(keys_dir),
            "institution-state-dir": str(staging / INSTITUTIONS_SUBDIR),
            "resume": True,
        }
    )
    differ = settings.differences(recorded)
    if differ:  # a setting this version resolves otherwise than the one that signed
        raise SettingsError(f"resume: settings differ from {checkpoint}: {', '.join(differ)}")
    return KilledRun(staging, target_of(staging), checkpoint, settings)
