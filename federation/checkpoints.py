"""Where a run keeps its signed per-round checkpoints (OUT/checkpoints/round-NNN/): one layout
for the coordinator that writes them and for `simulate --resume` and `link run --resume`,
which look for the latest before anything starts."""

from __future__ import annotations

import re
from pathlib import Path

CHECKPOINTS = "checkpoints"
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
