"""SIGKILL the coordinator of a real `jointcredit simulate` at a random round, resume it:
no round lost or repeated, the model verifies, the DP budgets hold (checked with an accountant
independent of the institutions'). The trial is the reliability script's
(`scripts/reliability_resume.py`); a failing seed is printed so it can be replayed."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from resume_helpers import reliability_script

pytestmark = pytest.mark.e2e


def test_a_dp_run_killed_at_a_random_round_resumes_within_its_budget(tmp_path: Path) -> None:
    script = reliability_script()
    seed = random.SystemRandom().randrange(2**31)
    row = script.trial("dp-record", tmp_path, random.Random(seed))
    print(f"seed {seed}: {row}")
    assert row["rounds_lost"] == 0 and row["rounds_repeated"] == 0, (seed, row)
    assert row["model_verifies"], (seed, row)
    assert [r["from_round"] for r in row["resumes_in_manifest"]] == [row["killed_after_round"]]
    assert row["ledgers"] == 3
    assert row["max_epsilon_after_resume"] <= script.EPSILON + 1e-6, (seed, row)
