"""Where a run keeps its signed per-round checkpoints (OUT/checkpoints/round-NNN/): one layout
for the coordinator that writes them and for `simulate --resume` and `link run --resume`,
which look for the latest before anything starts and continue with the settings it signed."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jointcredit.federation.settings import SettingsError

CHECKPOINTS = "checkpoints"
# The Flower run that signed a model or checkpoint (a manifest key, not a wire-protocol name).
MANIFEST_RUN_ID = "run-id"
_ROUND_DIR = re.compile(r"round-(\d{3,})")


def checkpoint_dir(run_dir: Path, server_round: int) -> Path:
    return run_dir / CHECKPOINTS / f"round-{server_round:03d}"


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint of the highest round (each is written whole or not at all)."""
    found = [
        (int(m.group(1)), p)
        for p in (run_dir / CHECKPOINTS).glob("round-*")
        if (m := _ROUND_DIR.fullmatch(p.name)) and p.is_dir()
    ]
    return max(found)[1] if found else None


def resumed_settings(
    recorded: Mapping[str, Any], given: Mapping[str, Any], checkpoint: Path, local: set[str]
) -> dict[str, Any]:
    """The run config a resume continues with: the settings the checkpoint signed
    (`recorded`, its manifest's `training`), with the keys the caller gave (`given`) allowed
    only where they agree, and `local` (where this machine keeps the run) taken as given.
    SettingsError names the keys that differ."""
    conflicting = sorted(k for k, v in given.items() if k in recorded and recorded[k] != v)
    unknown = sorted(k for k in given if k not in recorded and k not in local)
    if conflicting or unknown:
        raise SettingsError(
            f"resume: settings differ from the signed checkpoint {checkpoint}: "
            f"{', '.join(conflicting + unknown)} (a resumed run keeps the settings it started "
            "with)"
        )
    return {**recorded, **{k: v for k, v in given.items() if k in local}}


def signed_run_id(manifest: Mapping[str, Any]) -> int | None:
    """The Flower run id a verified manifest records (None: not recorded)."""
    value = manifest.get(MANIFEST_RUN_ID)
    return value if isinstance(value, int) and not isinstance(value, bool) else None
