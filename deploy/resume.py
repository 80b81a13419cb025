"""`link run --resume RUN_DIR`: before anything starts, the run directory's latest checkpoint
must verify against the kit's trust store and record the settings the run is resumed with
(else exit 2 naming the keys). The ServerApp checks it all again (`server.resume`) and
continues in RUN_DIR; each institution brings back its own durable state (`state-dir` in its
node config, KIT/state by default)."""

from __future__ import annotations

from pathlib import Path

from jointcredit.federation.checkpoints import latest_checkpoint
from jointcredit.federation.settings import RunSettings, SettingsError
from jointcredit.trust.errors import TrustError
from jointcredit.trust.keyset import TRUST_FILE
from jointcredit.trust.manifest import verify_directory
from jointcredit.trust.store import load_store


def check_resume(run_dir: Path, kit: Path, settings: RunSettings) -> Path:
    """The checkpoint a resume of `run_dir` continues from; ValueError/SettingsError why not."""
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise ValueError(f"{run_dir}: no checkpoint to resume from")
    try:
        manifest = verify_directory(checkpoint, load_store(kit / TRUST_FILE)).manifest
    except TrustError as exc:
        raise ValueError(f"refusing to resume from {checkpoint}: {exc}") from exc
    differ = settings.differences(manifest.get("training", {}))
    if differ:
        raise SettingsError(
            f"resume: settings differ from the signed checkpoint {checkpoint}: " + ", ".join(differ)
        )
    return checkpoint
