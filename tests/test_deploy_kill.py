"""SIGKILL the coordinator of a real deployment at a random round, resume it with the CLI:
3 SuperNodes (`node start`, TLS, node authentication), a `dp-record` run with checkpoints
through `jointcredit link run`, its ServerApp process (`flwr-serverapp`, below the SuperLink)
killed when the drawn round starts, then `jointcredit link run --kit KIT --resume RUN_DIR` as
an operator would type it. No round lost or repeated (against the checkpoint the kill left and
the resumed run's own log), the model verifies, every institution's DP ledger in its node's
state directory stays within epsilon by an independent accountant, and the resume stopped the
killed run at the SuperLink (its undelivered messages never reach a node). The trial is the
reliability script's (`scripts/reliability_deploy_resume.py`, which also kills the whole
coordinator host); a failing seed is printed so it can be replayed there with `--seed`."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from resume_helpers import reliability_script

pytestmark = pytest.mark.e2e
ROUNDS = 4


def test_a_deployed_dp_run_killed_at_a_random_round_resumes_within_its_budget(
    tmp_path: Path,
) -> None:
    script = reliability_script("reliability_deploy_resume")
    seed = random.SystemRandom().randrange(2**31)
    row = script.trial(tmp_path / "deploy", random.Random(seed), rounds=ROUNDS)
    print(f"seed {seed}: {row}")
    why = f"seed {seed} (replay: scripts/reliability_deploy_resume.py --seed {seed}): {row}"
    k = row["killed_in_round"]
    assert 2 <= k <= ROUNDS - 1, why
    assert row["resume_exit"] == 0, why
    # The kill came in round k: the latest signed checkpoint is round k-1's, and the resume
    # continued from it, starting round k (not k-1: repeated; not k+1: lost).
    assert row["checkpoint_left"] == f"round-{k - 1:03d}", why
    assert row["resumes_in_manifest"] == [k - 1], why
    assert row["resumed_run_started_rounds"] == list(range(k, ROUNDS + 1)), why
    assert row["rounds_seen"] == list(range(1, ROUNDS + 1)), why
    assert row["carried_rounds_unchanged"], why
    assert row["model_verifies"], why
    # The resume stopped the killed run: its undelivered messages never reach a node.
    assert row["killed_run_status"] == "finished:stopped", why
    assert row["ledgers"] == 3, why
    assert row["max_epsilon_after_resume"] <= script.EPSILON + 1e-6, why
    assert script.held(row), why
