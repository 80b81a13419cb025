"""`link run --resume RUN_DIR`: before anything starts, the run directory's latest checkpoint
must verify against the kit's trust store; the run continues with the settings it signed (the
keys given now allowed only where they agree, else exit 2 naming the keys). The ServerApp
checks it all again (`server.resume`) and continues in RUN_DIR; each institution brings back
its own durable state (`state-dir` in its node config, KIT/state by default)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jointcredit.federation.checkpoints import latest_checkpoint, resumed_settings, signed_run_id
from jointcredit.federation.settings import MACHINE_LOCAL, RunSettings, SettingsError
from jointcredit.trust.errors import TrustError
from jointcredit.trust.keyset import TRUST_FILE
from jointcredit.trust.manifest import verify_directory
from jointcredit.trust.store import load_store


def _verified(run_dir: Path, kit: Path) -> tuple[Path, dict[str, Any]]:
    """The latest checkpoint of `run_dir`, verified, and its signed manifest."""
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise ValueError(f"{run_dir}: no checkpoint to resume from")
    try:
        manifest = verify_directory(checkpoint, load_store(kit / TRUST_FILE)).manifest
    except TrustError as exc:
        raise ValueError(f"refusing to resume from {checkpoint}: {exc}") from exc
    return checkpoint, manifest


def resume_config(run_dir: Path, kit: Path, given: dict[str, Any]) -> dict[str, Any]:
    """The run config that continues `run_dir`: the settings its latest checkpoint signed,
    with `given` (the keys the operator typed) allowed only where they agree."""
    checkpoint, manifest = _verified(run_dir, kit)
    recorded = dict(manifest.get("training", {}))
    return resumed_settings(recorded, given, checkpoint, local=set(MACHINE_LOCAL))


def superseded_run(run_dir: Path, kit: Path) -> int | None:
    """The Flower run that signed the checkpoint a resume continues from: the resume
    supersedes it (its ServerApp is gone, or must not go on writing to `run_dir`)."""
    return signed_run_id(_verified(run_dir, kit)[1])


def check_resume(run_dir: Path, kit: Path, settings: RunSettings) -> Path:
    """The checkpoint a resume of `run_dir` continues from; ValueError/SettingsError why not."""
    checkpoint, manifest = _verified(run_dir, kit)
    differ = settings.differences(manifest.get("training", {}))
    if differ:
        raise SettingsError(
            f"resume: settings differ from the signed checkpoint {checkpoint}: " + ", ".join(differ)
        )
    return checkpoint
