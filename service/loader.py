"""Start-up: the service refuses to run on anything it cannot vouch for.

It loads only a verified signed artifact (`load_artifact` checks the coordinator's signature
against the trust store; with `require_promotion` also its signed promotion record,
`models/promotion.py`), and refuses, naming the reason, a model that is degenerate (non-finite
or all-zero weights, the same output for every probe applicant) or whose preprocessing does not
match its schema, and a policy whose rules name fields the model does not know.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jointcredit.models.artifact import ArtifactError, ScoringModel, load_artifact
from jointcredit.models.promotion import read_promotion
from jointcredit.service.anchors import AnchorWriter
from jointcredit.service.anchors import anchor_key as anchor_key_file
from jointcredit.service.applicants import probes
from jointcredit.service.audit import LOCK_TIMEOUT, AuditLog
from jointcredit.service.auth import Authenticator, KeyFile, load_keys
from jointcredit.service.decide import Decider
from jointcredit.service.examples import example_request
from jointcredit.service.exposure import ExposureError
from jointcredit.service.exposure_http import ExposureClient
from jointcredit.service.policy import load_policy
from jointcredit.service.registry import load_federation_key, load_registry
from jointcredit.service.schemas import ModelInfo
from jointcredit.trust.errors import TrustError
from jointcredit.trust.store import TrustStore, load_store


class StartupError(RuntimeError):
    """The service must not start; the message says why."""


@dataclass
class Service:
    """What start-up verified and built, and what the app serves."""

    decider: Decider
    audit: AuditLog
    auth: Authenticator
    model_info: ModelInfo
    example: dict[str, Any]  # a valid request (OpenAPI's example)
    exposure: ExposureClient | None = None  # None: joint limits are referred
    anchors: AnchorWriter | None = None  # signed chain-head anchors (service/anchors.py)
    monitoring_window: int = 10_000  # applicants in the stability window (service/monitoring.py)


def check_model(model: ScoringModel) -> None:
    schema = model.card.data_schema
    names = [f.name for f in model.spec.features]
    if sorted(names) != sorted(schema.features):
        raise StartupError(
            f"preprocessing features {names} do not match the model's schema "
            f"{list(schema.features)}"
        )
    # Every floating array the artifact stores: a network's parameters, a tree ensemble's
    # leaf values, covers and base margin.
    weights = [
        t.detach().numpy() for t in model.model.state_dict().values() if t.is_floating_point()
    ]
    if not all(np.isfinite(w).all() for w in weights):
        raise StartupError("the model has non-finite weights")
    if all(not w.any() for w in weights):
        raise StartupError("the model's weights are all zero")
    pds = model.predict_pd(probes(model.spec, schema.features))
    if not np.isfinite(pds).all():
        raise StartupError("the model gives non-finite outputs on probe applicants")
    if float(pds.max() - pds.min()) < 1e-6:
        raise StartupError(
            f"the model gives the same output ({pds[0]:.6f}) for every probe applicant: degenerate"
        )


def single_threaded_math() -> None:
    """One BLAS and one torch thread per service process. A request's matrices are small
    (a 1,000-applicant batch is a 1,000 x 60 product), so extra threads mostly spin-wait,
    which cost the server much of its CPU per batched applicant (docs/SERVICE.md); the service
    scales across cores with `--workers` instead."""
    import torch
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)
    torch.set_num_threads(1)


def freeze_start_up() -> None:
    """At the start of an app's lifespan: what start-up built (torch, the model, schemas, a
    party's table) lives as long as the process, so it is frozen out of the collector's
    sight; full collections stop re-scanning it on the request path."""
    gc.collect()
    gc.freeze()


def model_info(model: ScoringModel) -> ModelInfo:
    """What every decision says about the model that made it."""
    return ModelInfo(
        version=model.verified.manifest_sha256,
        signing_key=model.verified.key_id,
        kind=model.card.architecture.kind,
        trained_round=model.verified.manifest.get("round"),
        stage=model.stage,
        run_id=model.run_id,
    )


def exposure_client(
    registry: Path | None, federation_key: Path | None, trust: TrustStore
) -> ExposureClient | None:
    """The client of the federation's exposure endpoints for joint limits (the registry
    verified against the trust store); None when neither file is given."""
    if (registry is None) != (federation_key is None):
        raise StartupError("joint limits need both --exposure-registry and --federation-key")
    if registry is None or federation_key is None:
        return None
    try:
        return ExposureClient(load_registry(registry, trust), load_federation_key(federation_key))
    except ExposureError as exc:
        raise StartupError(str(exc)) from exc


def load_service(
    model_dir: Path,
    trust_file: Path,
    *,
    policy_file: Path | None = None,
    db_url: str | None = None,
    api_keys: Path | None = None,
    coordinator_key_id: str | None = None,
    exposure_registry: Path | None = None,
    federation_key: Path | None = None,
    allow_checkpoint: bool = False,
    require_promotion: bool = False,
    anchors_file: Path | None = None,
    anchor_key: Path | None = None,
    anchor_every: int = 1000,
    anchor_seconds: float = 60.0,
    audit_lock_timeout: float = LOCK_TIMEOUT,
    monitoring_window: int = 10_000,
) -> Service:
    single_threaded_math()
    try:
        trust = load_store(trust_file, pin=coordinator_key_id)
        model = load_artifact(model_dir, trust)
    except (TrustError, ArtifactError) as exc:
        raise StartupError(f"model does not verify: {exc}") from exc
    try:
        model.require_final(allow_checkpoint)
    except ArtifactError as exc:
        raise StartupError(str(exc)) from exc
    if require_promotion:
        try:
            read_promotion(model_dir, trust, model.verified.manifest_sha256)
        except TrustError as exc:
            raise StartupError(f"--require-promotion: {exc}") from exc
    check_model(model)
    try:
        policy = load_policy(policy_file)
        decider = Decider(model, policy)
    except ValueError as exc:
        raise StartupError(f"policy: {exc}") from exc
    exposure = exposure_client(exposure_registry, federation_key, trust)
    keys = load_keys(api_keys) if api_keys is not None else KeyFile()
    if not keys.keys:
        raise StartupError("no API keys: create one with `jointcredit apikey new`")
    url = db_url or f"sqlite:///{(model_dir.resolve().parent / 'decisions.sqlite')}"
    info = model_info(model)
    example = example_request(model.spec, model.card.data_schema.features, policy.context)
    audit = AuditLog(url, lock_timeout=audit_lock_timeout)
    # Anchors beside the model's run by default: move the file where the database's writers
    # cannot write (docs/SERVICE.md, "Audit anchors").
    here = model_dir.resolve().parent
    anchors = open_anchors(audit, here, anchors_file, anchor_key, anchor_every, anchor_seconds)
    return Service(
        decider=decider,
        audit=audit,
        anchors=anchors,
        auth=Authenticator(keys),
        model_info=info,
        example=example,
        monitoring_window=monitoring_window,
        exposure=exposure,
    )


def open_anchors(
    audit: AuditLog, here: Path, anchors_file: Path | None, anchor_key: Path | None,
    every: int, seconds: float,
) -> AnchorWriter:  # fmt: skip
    """The audit log's anchor writer (its key, created if absent, and its file default to
    `here`, the model's run); the log is closed when the key cannot be had."""
    try:
        signer = anchor_key_file(anchor_key or here / "audit-anchor.key")
    except (OSError, TrustError) as exc:
        audit.close()
        raise StartupError(f"audit anchor key: {exc}") from exc
    return AnchorWriter(
        anchors_file or here / "decisions.anchors.jsonl", signer, audit.head, every=every,
        seconds=seconds,
    )  # fmt: skip
