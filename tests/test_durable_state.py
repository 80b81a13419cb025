"""An institution's durable state (DP ledger, SCAFFOLD's c_i): written signed, read back
verified, refused when edited, swapped, rolled back or missing where DP needs it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, RecordDict

from jointcredit.client.durable import Durable, DurableStateError, state_path
from jointcredit.federation.protocol import STATE_RECORD_DP, STATE_SCAFFOLD, RoundConfig
from jointcredit.federation.settings import RunSettings
from jointcredit.trust import keys

LINEAGE = "0123abcd"


def _context(state_dir: Path, settings: dict[str, object]) -> Context:
    config = RunSettings.from_run_config(
        {**settings, "institution-state-dir": str(state_dir)}
    ).to_run_config()
    return Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config=config)


def _durable(context: Context, server_round: int, resumed_from: int = 0, key=None) -> Durable:  # type: ignore[no-untyped-def]
    config = RoundConfig(
        preprocessing="{}", server_round=server_round, lineage=LINEAGE, resumed_from=resumed_from
    )
    settings = RunSettings.from_run_config(context.run_config)
    return Durable(context, settings, "bank-a", config, key or KEY)


KEY = keys.generate()
DP = {"privacy": "dp-record", "epsilon": 2.0}
SCAFFOLD = {"strategy": "scaffold"}


def _ledger(steps: int) -> ConfigRecord:
    return ConfigRecord({"noise_multiplier": 1.1, "history": json.dumps([[1.1, 0.05, steps]])})


def test_dp_ledger_survives_and_the_right_c_i_comes_back(tmp_path: Path) -> None:
    before = _context(tmp_path, SCAFFOLD)
    for r in (1, 2, 3):  # c_i after each round, the last round's written before a crash
        before.state[STATE_SCAFFOLD] = ArrayRecord({"w": Array(np.full(3, r, dtype=np.float32))})
        _durable(before, r).save()
    after = _context(tmp_path, SCAFFOLD)  # a resumed run: empty Flower state
    _durable(after, 3, resumed_from=2).restore()
    # Round 3 again continues from c_i after round 2, as the uninterrupted run did.
    assert after.state[STATE_SCAFFOLD]["w"].numpy().tolist() == [2.0, 2.0, 2.0]

    dp = _context(tmp_path / "dp", DP)
    dp.state[STATE_RECORD_DP] = _ledger(40)
    _durable(dp, 3).save()
    resumed = _context(tmp_path / "dp", DP)
    _durable(resumed, 3, resumed_from=2).restore()
    assert dict(resumed.state[STATE_RECORD_DP]) == dict(_ledger(40))
    mode = state_path(tmp_path / "dp", LINEAGE, "bank-a").stat().st_mode & 0o777
    assert mode == 0o600


def test_edited_swapped_or_foreign_state_is_refused(tmp_path: Path) -> None:
    ctx = _context(tmp_path, DP)
    ctx.state[STATE_RECORD_DP] = _ledger(40)
    _durable(ctx, 2).save()
    path = state_path(tmp_path, LINEAGE, "bank-a")
    original = path.read_bytes()

    path.write_bytes(original.replace(b"40]]", b"4]]"))  # fewer steps spent: a cheaper ledger
    with pytest.raises(DurableStateError, match="signature"):
        _durable(_context(tmp_path, DP), 3, resumed_from=2).restore()

    path.write_bytes(original)
    with pytest.raises(DurableStateError, match="not this institution's"):
        _durable(_context(tmp_path, DP), 3, resumed_from=2, key=keys.generate()).restore()

    # Another institution's (validly signed) file in its place.
    other = _context(tmp_path / "b", DP)
    other.state[STATE_RECORD_DP] = _ledger(1)
    config = RoundConfig(preprocessing="{}", server_round=2, lineage=LINEAGE, resumed_from=0)
    Durable(other, RunSettings.from_run_config(other.run_config), "bank-b", config, KEY).save()
    shutil.copy(state_path(tmp_path / "b", LINEAGE, "bank-b"), path)
    with pytest.raises(DurableStateError, match="bank-b"):
        _durable(_context(tmp_path, DP), 3, resumed_from=2).restore()


def test_dp_refuses_to_train_without_its_ledger_or_with_an_older_one(tmp_path: Path) -> None:
    with pytest.raises(DurableStateError, match="no DP ledger"):
        _durable(_context(tmp_path, DP), 3, resumed_from=2).restore()
    ctx = _context(tmp_path, DP)
    ctx.state[STATE_RECORD_DP] = _ledger(20)
    _durable(ctx, 1).save()  # the ledger of round 1: the checkpoint is of round 2
    with pytest.raises(DurableStateError, match="older than the checkpoint"):
        _durable(_context(tmp_path, DP), 3, resumed_from=2).restore()
    no_dir = Context(
        run_id=1,
        node_id=1,
        node_config={},
        state=RecordDict(),
        run_config=RunSettings.from_run_config(DP).to_run_config(),
    )
    with pytest.raises(DurableStateError, match="keeps no durable state"):
        _durable(no_dir, 3, resumed_from=2).restore()
    # A run that never resumed starts its ledger at round 1 as always.
    _durable(_context(tmp_path / "fresh", DP), 1).restore()
