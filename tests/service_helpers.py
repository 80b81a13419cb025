"""Helpers shared by the service tests: a signed model artifact, free loopback ports, the CLI in
process."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from click.testing import Result
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from jointcredit.data.catalog import DataConfig, load_federation
from jointcredit.models.artifact import Stage, load_artifact, save_artifact, state_to_numpy
from jointcredit.models.binning import Classing, binning_from_rows, merge_histograms
from jointcredit.models.binning.grid import grid_histogram
from jointcredit.models.binning.grid import spans as training_spans
from jointcredit.models.learners import architecture, build_model
from jointcredit.models.preprocessing import CategoricalFeature, agree, summarize
from jointcredit.models.reference import REFERENCE, Reference, count_rows, reference_bins
from jointcredit.models.scorecard import woe_preprocessing
from jointcredit.models.training import TrainConfig, train
from jointcredit.models.trees import TreeEnsemble, TreeParams
from jointcredit.models.trees import train as grow
from jointcredit.models.trees.bins import bins_from_rows
from jointcredit.models.trees.bins import layout as bin_layout
from jointcredit.service.loader import Service
from jointcredit.trust import keys, store
from jointcredit.trust.keyset import create_key_set


def signed_artifact(
    root: Path,
    *,
    zero: bool = False,
    dataset: str = "sba",
    kind: str = "logreg",
    spans: bool = False,
    stage: Stage = "final",
    reference: bool = False,
) -> Path:
    """A signed model (default: a logistic scorecard; `scorecard`: the binned one, on bins
    agreed from the institutions' rows; `gbdt`: trees over the federation's agreed bins)
    trained on four institutions of a dataset (default: the shipped sample; a few seconds).
    `zero`: all-zero weights (trees: no tree). `spans`: trees record their training spans (as
    the coordinator does; without, as trees written before spans were recorded). `reference`:
    with the training reference distribution (`reference.json`) of the pooled training rows,
    which is what the federation's summed counts equal."""
    fed = load_federation(DataConfig(dataset=dataset, institutions=4, synthetic_rows=800))
    schema = fed.schema
    summaries = [
        summarize(d.train.x, d.train.y, schema, max_categories=64, min_count=5)
        for d in fed.institutions.values()
    ]
    spec = agree(summaries, schema, max_categories=64, min_count=5, standardize_indicators=True)
    pooled = fed.pooled_train()
    bins = binning = None
    recorded = None
    if kind == "scorecard":  # WOE over bins agreed from the institutions' own rows
        vocabularies = {
            f.name: f.categories for f in spec.features if isinstance(f, CategoricalFeature)
        }
        parts = [(d.train.x, d.train.y) for d in fed.institutions.values()]
        binning = binning_from_rows(parts, schema, vocabularies, Classing())
        spec = woe_preprocessing(binning)
    if kind == "gbdt":  # 10 trees of depth 3 on the pooled rows' codes over the agreed bins
        parts = [d.train.x for d in fed.institutions.values()]
        bins = bins_from_rows(parts, schema, spec, 16)
        if spans:
            recorded = training_spans(merge_histograms([grid_histogram(x, schema) for x in parts]))
        arch = architecture(kind, len(bins.features))
        layout = bin_layout(bins)
        ensemble = (
            TreeEnsemble(0.0, layout.missing, ())
            if zero
            else grow(bins.codes(pooled.x), pooled.y, layout, TreeParams(n_trees=10, max_depth=3))
        )
        state = ensemble.to_arrays()
    else:
        arch = architecture(kind, spec.n_outputs)
        model = build_model(arch, seed=0)
        if not zero:
            train(
                model, spec.transform(pooled.x), pooled.y, TrainConfig(epochs=2, learning_rate=0.05)
            )
        state = state_to_numpy(model)
        if zero:
            state = {k: np.zeros_like(v) for k, v in state.items()}
    trust = create_key_set(root / "keys", fed.ids, federation=f"svc-{root.name}")
    store.save_store(root / "trust.json", trust)

    def save(extra: dict[str, bytes] | None = None) -> None:
        save_artifact(
            root / "model", state=state, spec=spec, architecture=arch, schema=schema,
            stage=stage, run_id=7,
            institutions=fed.ids, training={}, metrics={}, created_at="2026-11-30T00:00:00+00:00",
            signer=keys.load_private_key(root / "keys" / "coordinator.key"), trust=trust,
            provenance={"round": 2}, bins=bins, binning=binning, spans=recorded, extra=extra,
        )  # fmt: skip

    save()
    if reference:
        scores = load_artifact(root / "model", trust).score(pooled.x)
        layout = reference_bins(spec, binning, bins)
        counts = count_rows(scores, pooled.x, layout)
        save({REFERENCE: Reference.from_vector(counts, layout, fed.ids).to_bytes()})
    return root / "model"


class Api:
    """A service over HTTP in process, called with one institution's key; `example`: the valid
    request its OpenAPI shows."""

    def __init__(self, client: TestClient, token: str, service: Service) -> None:
        self.client, self.service = client, service
        self.headers = {"Authorization": f"Bearer {token}"}
        schemas = client.get("/openapi.json").json()["components"]["schemas"]
        self.example: dict[str, Any] = schemas["DecisionRequest"]["examples"][0]

    def post(self, path: str, body: dict[str, Any], **headers: str) -> Any:
        return self.client.post(path, json=body, headers={**self.headers, **headers})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_process(args: list[str], port: int) -> subprocess.Popen[str]:
    """`jointcredit serve ARGS` on 127.0.0.1:`port`, as its own process."""
    cmd = [sys.executable, "-m", "jointcredit.cli", "serve", *args, "--port", str(port)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def announced(
    args: list[str], marker: str, seconds: float = 90, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str | None]:
    """`jointcredit ARGS --host 127.0.0.1 --port 0` as its own process, and the URL on the
    line of its output starting `marker` (None: its output ended first; a start that hangs
    is killed after `seconds`)."""
    cmd = [sys.executable, "-m", "jointcredit.cli", *args, "--host", "127.0.0.1", "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    timer = threading.Timer(seconds, proc.kill)  # a start that hangs ends the read below
    timer.start()
    try:
        for line in proc.stdout:
            if line.startswith(marker):
                return proc, line[len(marker) :].split()[0]
    finally:
        timer.cancel()
    return proc, None


def serve_announced(args: list[str], seconds: float = 90) -> tuple[subprocess.Popen[str], str]:
    """`jointcredit serve ARGS --port 0`: the process and the URL it says it listens on."""
    proc, url = announced(["serve", *args], "listening on ", seconds)
    if url is None:
        raise AssertionError(
            f"serve never said where it listens: {proc.stderr and proc.stderr.read()}"
        )
    return proc, url


def wait_ready(base: str, proc: subprocess.Popen[str], seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "exited"
        assert time.monotonic() < deadline, "the service did not start"
        time.sleep(0.3)


def audit_verify(db: str) -> Result:
    """`jointcredit audit verify --db DB`, in process."""
    from jointcredit.cli.main import app

    return CliRunner().invoke(app, ["audit", "verify", "--db", db])
