"""`jointcredit simulate`: validate the data, run the federation, add the baselines, report.

Output directory (contract)::

    OUT/model/        the model artifact (weights, agreed preprocessing, model card)
    OUT/metrics.json  federated, centralized, local_only, per_institution, rounds, config,
                      privacy (setting, epsilon spent, membership-inference audit)
    OUT/checkpoints/  a signed checkpoint per round (with the coordinator's state)
    OUT/institutions/ each institution's signed durable state (DP ledger, c_i) by run lineage

A killed run leaves its staging directory; `simulate --resume` continues it (`resume`). A run
that stops because a round had too few institutions (`RoundFailed`) after signing a
checkpoint leaves OUT/trust.json and OUT/checkpoints/ only (`RunStopped` names the last), or,
when `--resumable`, its staging directory to resume.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path

from jointcredit.data.catalog import load_federation, pinned
from jointcredit.federation.checkpoints import latest_checkpoint
from jointcredit.federation.choices import parse_adversary
from jointcredit.federation.metrics import RunMetrics
from jointcredit.federation.settings import RunSettings, SettingsError
from jointcredit.models.artifact import load_artifact
from jointcredit.server.grid import RoundFailed
from jointcredit.simulations import baselines, tree_baselines
from jointcredit.simulations.audit import membership_audit
from jointcredit.simulations.engine import parse_ray_address, run_simulation
from jointcredit.simulations.guard import run_guard
from jointcredit.simulations.resume import INSTITUTIONS_SUBDIR, KilledRun
from jointcredit.trust.keyset import RUN_KEYS_SUBDIR, create_key_set
from jointcredit.trust.store import load_store


class OutputExists(ValueError):
    """OUT already holds something and the caller did not say to replace it."""

    @staticmethod
    def message(out: Path) -> str:
        return f"{out} is not empty: choose another --out, or --force to replace it"


def simulate(
    settings: RunSettings,
    *,
    with_baselines: bool = True,
    with_audit: bool = True,
    replace: bool = True,
    ray_address: str = "",
    cpus_per_institution: int = 0,
    resume: KilledRun | None = None,
    resumable: bool = False,
) -> RunMetrics:
    """Run everything into a staging directory beside OUT and move it into place only when the
    run succeeded: a failed run leaves the previous OUT as it was, never a half-written OUT.
    A killed run (SIGKILL, or a signal after its first checkpoint) leaves its staging
    directory `.OUT.partial-*`, which `resume` (`simulations.resume.killed_run`) continues;
    a resume that fails leaves it as it was. `replace=False` refuses an OUT that is not empty
    (`OutputExists`). `resumable`: keep the run's generated keys in its staging directory
    until it is published, so that a killed run can be resumed with them; without it no key
    outlives the run, whatever ends it. Returns the metrics also in OUT/metrics.json.

    `ray_address`: run the institutions on that Ray cluster (engine.py) instead of a private
    Ray instance; `cpus_per_institution`: the CPUs each institution's Ray actor asks for, so
    a node of C CPUs runs C // cpus_per_institution institutions at a time (0: all of this
    machine's on a private instance, one each on a cluster)."""
    if ray_address:
        parse_ray_address(ray_address)  # a bad address fails before anything is written
    cpus = cpus_per_institution or (1 if ray_address else os.cpu_count() or 1)
    if resume is None:
        out = Path(settings.out_dir)
        staging = _staging(out, replace)
        run = settings.replaced(
            out_dir=str(staging), institution_state_dir=str(staging / INSTITUTIONS_SUBDIR)
        )
    else:
        out, staging, run = resume.out, resume.staging, resume.settings
        _staging(out, replace, make=False)
    keep = False  # the staging directory, to be resumed
    try:
        metrics = _simulate(run, out, with_baselines, with_audit, ray_address, cpus, resumable)
        # The run's own keys served a possible resume; a finished run needs their public half
        # only (OUT/trust.json).
        shutil.rmtree(staging / RUN_KEYS_SUBDIR, ignore_errors=True)
        _publish(staging, out)
    except RoundFailed as exc:
        if resumable or resume is not None:
            keep = True
            raise RunStopped(
                f"{exc}. The run stopped there; continue it from its last checkpoint with "
                f"jointcredit simulate --resume {staging}"
            ) from exc
        shutil.rmtree(staging / RUN_KEYS_SUBDIR, ignore_errors=True)
        kept = _keep_stopped(staging, out)
        if kept is None:
            raise
        raise RunStopped(
            f"{exc}. The run stopped there; OUT keeps what it had signed: the last "
            f"checkpoint {kept} and the trust store {out / 'trust.json'}"
        ) from exc
    except BaseException as exc:
        # Interrupted (a signal) after a checkpoint: kept to be resumed, like a SIGKILLed run.
        interrupted = not isinstance(exc, Exception) and latest_checkpoint(staging) is not None
        keep = resume is not None or (resumable and interrupted)
        raise
    finally:
        if not keep:
            shutil.rmtree(staging, ignore_errors=True)
    return metrics


def _staging(out: Path, replace: bool, *, make: bool = True) -> Path:
    if not replace and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputExists(OutputExists.message(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    if not make:
        return out
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # what a plain mkdir of OUT would have given
    return staging


class RunStopped(RuntimeError):
    """A round had too few institutions: the run stopped, its signed checkpoints kept."""


def _keep_stopped(staging: Path, out: Path) -> Path | None:
    """A run that stopped after signing checkpoints becomes OUT (trust.json and checkpoints/,
    no model/ nor metrics.json), so it can be verified and resumed; None when it has none."""
    checkpoints = sorted((staging / "checkpoints").glob("round-*"))
    if not checkpoints:
        return None
    _publish(staging, out)
    return out / "checkpoints" / checkpoints[-1].name


def _publish(staging: Path, out: Path) -> None:
    """Replace OUT with the finished run: two renames, the old OUT removed after."""
    old = None
    if out.exists() or out.is_symlink():
        old = out.parent / f".{out.name}.old-{secrets.token_hex(4)}"
        out.rename(old)
    staging.rename(out)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def _simulate(
    settings: RunSettings,
    final_out: Path,
    with_baselines: bool,
    with_audit: bool,
    ray_address: str,
    cpus_per_institution: int,
    resumable: bool = False,
) -> RunMetrics:
    started = time.monotonic()
    # Every institution's file is validated before any training starts.
    fed = load_federation(settings.data)
    # The rules that depend on how many institutions take part, before any node starts.
    run_settings = settings.for_institutions(len(fed.ids), "the dataset's")
    unknown = sorted(set(parse_adversary(settings.adversary)) - set(fed.ids))
    if unknown:  # a typo would otherwise run without the attack the caller asked for
        raise SettingsError(
            f"adversary names {', '.join(unknown)}, not institutions of this run "
            f"({', '.join(fed.ids)})"
        )
    out = Path(settings.out_dir)
    # The in-process ServerApp's central evaluation reuses the splits validated above.
    own_keys = bool(settings.keys_dir or settings.trust_file)
    # Fresh keys per run (unless the caller brings its own); OUT/trust.json keeps the public
    # half (written by the ServerApp). They live outside OUT, gone when the run ends however
    # it ends; a resumable run needs the same keys after a crash, so they live in its staging
    # directory (0700), removed when the run is published and left only by a killed run
    # until it is resumed or deleted.
    resumable = resumable and settings.checkpoints and not own_keys
    with (
        pinned(run_settings.data, fed),
        run_guard(with_keys=not own_keys and not resumable) as keys_dir,
    ):
        if resumable:
            keys_dir = out / RUN_KEYS_SUBDIR
        if keys_dir is not None:
            # A name of its own: the run's coordinator key is pinned under it (trust/pins.py).
            name = f"simulation-{secrets.token_hex(6)}"
            create_key_set(keys_dir, list(fed.ids), federation=name)
            run_settings = run_settings.model_copy(update={"keys_dir": str(keys_dir)})
        run_simulation(
            run_settings,
            num_nodes=len(fed.ids),
            cpus_per_client=cpus_per_institution,
            ray_address=ray_address,
        )
    sim_seconds = time.monotonic() - started
    metrics_path = out / "metrics.json"
    if not metrics_path.is_file():
        raise RuntimeError(f"the federation finished without writing {metrics_path}")
    metrics = RunMetrics.read(metrics_path)
    metrics.dataset = fed.description

    final = load_artifact(out / "model", load_store(out / "trust.json"))
    if with_baselines:
        t = time.monotonic()
        if final.bins is not None:
            central, local = tree_baselines.both(fed, final.bins, run_settings)
        else:
            central, local = baselines.both(fed, final.spec, run_settings)
        metrics.centralized, metrics.local_only = central, local
        for inst, row in metrics.per_institution.items():
            row.auc_local_only = local.per_institution[inst].auc_own
        metrics.timing.baselines_seconds = round(time.monotonic() - t, 3)
    # The audit's non-members must come from the members' population; under split = time the
    # test rows are later loans (another mix, another default rate), and the attacks would
    # report that shift as leakage. No valid non-members exist then, so there is no audit.
    if with_audit and run_settings.split == "random":
        audit = membership_audit(fed, final.spec, final.model, run_settings, bins=final.bins)
        metrics.privacy.mia_auc = audit.mia_auc
        metrics.privacy.mia_tpr_at_1pct_fpr = audit.mia_tpr_at_1pct_fpr
        metrics.privacy.mia = audit.mia
        metrics.timing.audit_seconds = audit.seconds
    else:
        metrics.privacy.mia_auc = metrics.privacy.mia_tpr_at_1pct_fpr = None
    metrics.timing.simulation_seconds = round(sim_seconds, 3)
    metrics.timing.total_seconds = round(time.monotonic() - started, 3)
    metrics.config["out-dir"] = str(final_out)  # where the run is read from, not its staging
    metrics.write(metrics_path)
    return metrics
