"""Which institution this node is, and its rows (cached for the life of the process).

Simulation: `partition-id` in the node config indexes the dataset's institutions.
Deployment: the node config names its own file, e.g.
`flower-supernode --node-config "data-file='/srv/bank0.parquet' schema='/srv/schema.toml'
institution='bank0'"`. A node never opens another institution's file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord
from sklearn.model_selection import train_test_split

from jointcredit.data.catalog import (
    DataConfig,
    load_institution,
    load_institution_file,
    preload_institution_file,
    resolve,
)
from jointcredit.data.frames import InstitutionData
from jointcredit.data.schema import Schema, load_schema, read_schema_toml
from jointcredit.federation import control
from jointcredit.federation.protocol import ModelMessage, NodeConfig
from jointcredit.federation.settings import RunSettings
from jointcredit.models.binning import BinningSpec
from jointcredit.models.learners import architecture, build_model
from jointcredit.models.preprocessing import PreprocessingSpec
from jointcredit.models.trees import histogram
from jointcredit.models.trees.bins import layout as bin_layout
from jointcredit.models.trees.boost import Routing


@dataclass
class NodeData:
    data: InstitutionData
    schema: Schema
    # Design matrices per preprocessing digest: the spec is fixed for a run, so transform once.
    _matrices: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    _specs: dict[str, PreprocessingSpec] = field(default_factory=dict)
    # Trees: gradients and hessians of the training rows at the margins of one ensemble
    # (keyed by bins and ensemble digests; every level of a tree needs the same ones).
    tree_gradients: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    # ...and where its rows are in the tree being grown on top of that ensemble.
    tree_routing: dict[str, Routing] = field(default_factory=dict)

    @property
    def institution(self) -> str:
        return self.data.institution

    def spec(self, ins: ModelMessage) -> PreprocessingSpec:
        """The agreed preprocessing a message carries (parsed once per run)."""
        text = ins.config.preprocessing
        if text not in self._specs:
            self._specs[text] = PreprocessingSpec.model_validate_json(text)
        return self._specs[text]

    def model(
        self, ins: ModelMessage, settings: RunSettings
    ) -> tuple[torch.nn.Module, ArrayRecord]:
        """The global model a message carries, and the federation's SCAFFOLD control variate
        (empty unless the strategy is `scaffold`)."""
        spec = self.spec(ins)
        model = build_model(architecture(settings.model, spec.n_outputs))
        weights, federation_control = control.split(ins.arrays)
        model.load_state_dict(weights.to_torch_state_dict(), strict=True)
        return model, federation_control

    def matrix(self, spec: PreprocessingSpec, part: str) -> np.ndarray:
        key = (spec.digest(), part)
        if key not in self._matrices:
            split = self.data.train if part == "train" else self.data.test
            self._matrices[key] = spec.transform(split.x)
        return self._matrices[key]

    def codes(self, bins: BinningSpec, part: str) -> np.ndarray:
        """Bin codes of the train or test rows (the bins are fixed for a run: code once)."""
        key = (f"bins:{bins.digest()}", part)
        if key not in self._matrices:
            split = self.data.train if part == "train" else self.data.test
            self._matrices[key] = bins.codes(split.x)
        return self._matrices[key]

    def flat_codes(self, bins: BinningSpec) -> np.ndarray:
        """The training rows' codes as positions on a histogram's bin axis."""
        key = (f"flat-bins:{bins.digest()}", "train")
        if key not in self._matrices:
            self._matrices[key] = histogram.flat_bins(self.codes(bins, "train"), bin_layout(bins))
        return self._matrices[key]

    def validation_split(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices (fit, validation) inside the training split, for choosing personalisation."""
        return validation_split(self.data.train.y, seed)


def validation_split(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (fit, validation) of labels `y`: 20 %, stratified when both classes allow."""
    idx = np.arange(len(y))
    stratify = y if np.bincount(y, minlength=2).min() >= 2 else None
    fit, val = train_test_split(idx, test_size=0.2, random_state=seed, stratify=stratify)
    return np.sort(fit), np.sort(val)


# In simulation one process (a Ray actor) plays every simulated node in turn, so the cache holds
# each node's rows for the current data config and is dropped when a new config arrives.
_CACHE: dict[tuple[object, ...], NodeData] = {}
_CACHE_CONFIG: list[DataConfig] = []


def node_data(node_config: dict[str, object], settings: RunSettings) -> NodeData:
    key = tuple(sorted(node_config.items()))
    if [settings.data] != _CACHE_CONFIG:
        _CACHE.clear()
        _CACHE_CONFIG[:] = [settings.data]
    if key in _CACHE:
        return _CACHE[key]
    cfg = settings.data
    node = NodeConfig.parse(node_config, "node config")
    if node.data_file is not None:
        schema_path = node.schema_file or settings.schema_file
        if not schema_path:
            raise ValueError("node config has data-file but no schema (node config or run config)")
        schema = load_schema(Path(schema_path))
        data = load_institution_file(
            Path(node.data_file), schema, cfg, institution=node.institution or None
        )
    else:
        source = resolve(cfg)
        if node.partition_id is None:
            raise ValueError("node config names neither a data file nor a simulated partition")
        pid = node.partition_id
        if pid >= len(source.ids):
            raise ValueError(f"partition {pid} but the dataset has {len(source.ids)} institutions")
        data = load_institution(cfg, source.ids[pid])
        schema = source.schema
    _CACHE[key] = NodeData(data=data, schema=schema)
    return _CACHE[key]


def preload_node_file(data_file: str, schema_file: str) -> None:
    """Deployment: validate the node's own file before its first message. The node's
    long-lived ClientApp worker calls this once; the fork that runs each message then finds
    the rows already read (`read_institution_file`: only while the file is unchanged). A
    vertical schema (`[parties.*]`) is left alone: a party's rows are read by its session."""
    if "parties" in read_schema_toml(schema_file):
        return
    preload_institution_file(
        Path(data_file), load_schema(Path(schema_file)), max_mb=DataConfig().max_file_mb
    )


def simulated_institutions(settings: RunSettings, node_config: NodeConfig) -> list[str]:
    """Every institution of a simulated run (partition ids index this list). Simulated attacks
    are drawn from it; a deployed node knows only itself, so it refuses."""
    if not node_config.simulated:
        raise ValueError("simulated attacks (--attack) run only in simulation")
    return resolve(settings.data).ids
