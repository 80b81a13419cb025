"""The forgery of issue 19, item 4, shared by `test_unpinned_trust.py` and `scripts/attack.py`:
a model re-signed, with friendlier weights, by a forger's key, beside a forged trust.json under
the genuine federation's name."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from jointcredit.trust import keys, store
from jointcredit.trust.manifest import MANIFEST, sign_directory


def forge(model: Path, federation: str, out: Path) -> str:
    """`out/model` (a copy of `model`, its biases scaled down, re-signed) and `out/trust.json`
    (the forger's, naming `federation`); returns the forger's key id."""
    shutil.copytree(model, out / "model")
    weights = out / "model" / "weights.npz"
    with np.load(weights) as npz:
        state = {k: npz[k] * (0.1 if k.endswith("bias") else 1.0) for k in npz.files}
    np.savez(weights, **state)  # a friendlier model
    forger = keys.generate()
    trust = store.create(federation, forger)
    store.save_store(out / "trust.json", trust)
    manifest = json.loads((out / "model" / MANIFEST).read_bytes())
    body = {k: v for k, v in manifest.items()
            if k not in ("format", "files", "trust_store_sha256", "signed_by")}  # fmt: skip
    card = json.loads((out / "model" / "model.json").read_bytes())
    card["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    (out / "model" / "model.json").write_text(json.dumps(card))
    sign_directory(out / "model", list(manifest["files"]), body, forger, trust)
    return keys.key_id(forger)
