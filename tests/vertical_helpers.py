"""A small vertical federation on disk for the tests (and benchmark) of scoring vertical
applicants: provisioned kits of a bank and a platform with endpoint certificates, the signed
vertical model (trained by the real exchange on the synthetic-vertical rows both hold), the
platform's data file (all its applicants) and the vertical schema."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jointcredit.client import vertical_app
from jointcredit.data.synthetic_vertical import ID_COLUMN
from jointcredit.data.vertical_datasets import vertical_frames
from jointcredit.deploy import kits
from jointcredit.federation import protocol
from jointcredit.federation import vertical as v
from jointcredit.models.scorecard import ScoreScale
from jointcredit.models.trees import BinLayout, TreeParams
from jointcredit.models.trees.bins import layout as bin_layout
from jointcredit.models.vertical.artifact import (
    FeaturePart,
    PartyEntry,
    held_out_reference,
    write_feature_part,
    write_label_part,
)
from jointcredit.models.vertical.feature_party import FeatureParty
from jointcredit.models.vertical.label_party import train
from jointcredit.models.vertical.party_bins import party_bins, party_schema
from jointcredit.privacy.paillier import HeuSecretKey, public_key
from jointcredit.trust import keys
from jointcredit.trust.keyset import TRUST_FILE, private_key_path
from jointcredit.trust.store import load_store

CREATED = "2026-12-07T00:00:00+00:00"


def sub_layout(layout: BinLayout, cols: list[int]) -> BinLayout:
    return BinLayout(
        tuple(layout.n_bins[j] for j in cols),
        tuple(layout.missing[j] for j in cols),
        tuple(layout.n_special(j) for j in cols),
        tuple(layout.is_categorical(j) for j in cols),
    )


@dataclass(frozen=True)
class Federation:
    root: Path
    kits: Path  # provision's OUT: OUT/bank, OUT/platform, OUT/coordinator
    model: Path
    schema: Path
    platform_data: Path
    bank: pd.DataFrame  # the bank's applicants: id column and its features (no label)
    platform_ids: frozenset[str]

    def kit(self, party: str) -> Path:
        return self.kits / party

    @property
    def trust(self) -> Path:
        return self.kits / "coordinator" / "trust.json"

    def applicant(self, k: int) -> tuple[str, dict[str, object]]:
        """The k-th bank applicant's id and features (JSON values; None where missing)."""
        row = self.bank.iloc[k]
        feats = {c: _json(row[c]) for c in self.bank.columns if c != ID_COLUMN}
        return str(row[ID_COLUMN]), feats

    def known(self, n: int) -> list[int]:
        """The first `n` bank applicants the platform also holds."""
        ids = self.bank[ID_COLUMN].astype(str)
        return [int(k) for k in np.flatnonzero(ids.isin(self.platform_ids).to_numpy())[:n]]

    def unknown(self, n: int) -> list[int]:
        ids = self.bank[ID_COLUMN].astype(str)
        return [int(k) for k in np.flatnonzero(~ids.isin(self.platform_ids).to_numpy())[:n]]


def _json(value: object) -> object:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, np.integer | np.floating):
        return value.item()
    return value


def vertical_federation(
    root: Path, *, rows: int = 1500, trees: int = 10, seed: int = 5
) -> Federation:
    out = root / "kits"
    kits.provision("vertical-serve-test", ["bank", "platform"], "127.0.0.1:9092", out)
    for party in ("bank", "platform"):
        kits.issue_endpoint_certificate(out, party, ["127.0.0.1", "localhost"])
    trust = load_store(out / "coordinator" / "trust.json")
    signer = {p: keys.load_private_key(out / p / "signing.key") for p in ("bank", "platform")}

    vschema, frames = vertical_frames("synthetic-vertical", seed=seed, rows=rows)
    bank, platform = frames["bank"], frames["platform"]
    joined = bank.merge(platform, on=ID_COLUMN)
    aligned = {"bank": joined[list(bank.columns)], "platform": joined[list(platform.columns)]}
    schemas = {p: party_schema(vschema, p) for p in aligned}
    bins = {
        p: party_bins(aligned[p], schemas[p], max_bins=16, max_categories=20, min_count=1)
        for p in aligned
    }
    codes = {p: bins[p].codes(aligned[p]).astype(np.int64) for p in aligned}
    y = aligned["bank"][vschema.base.label].to_numpy(dtype=float)
    secret = HeuSecretKey()
    fp = FeatureParty(
        1, codes["platform"], bin_layout(bins["platform"]), public_key(secret.public.to_bytes())
    )
    params = TreeParams(n_trees=trees, max_depth=3, learning_rate=0.3)
    ensemble = train(codes["bank"], y, bin_layout(bins["bank"]), [fp], params, secret)

    model = root / "run" / "model"
    part = FeaturePart("platform", 1, fp.table, bins["platform"], label_party="bank")
    digest = write_feature_part(
        model, part, created_at=CREATED, signer=signer["platform"], trust=trust
    )
    write_label_part(
        model, ensemble=ensemble, bins=bins["bank"], schema=schemas["bank"],
        label_party="bank",
        parties={"platform": PartyEntry(index=1, splits=len(fp.table), part_sha256=digest)},
        training={"trees": trees}, metrics={}, created_at=CREATED, signer=signer["bank"],
        trust=trust, reference=held_out_reference(ScoreScale().score(ensemble.predict_pd(
            codes["bank"], {1: fp.table.sides(codes["platform"])})), aligned["bank"],
            bins["bank"], "bank"),
    )  # fmt: skip
    schema = root / "schema.toml"
    schema.write_text(vschema.to_toml(), encoding="utf-8")
    data = root / "platform.csv"
    platform.to_csv(data, index=False)
    applicants = bank.drop(columns=[vschema.base.label, *vschema.base.protected])
    return Federation(
        root, out, model, schema, data, applicants, frozenset(platform[ID_COLUMN].astype(str))
    )


def deployed_node_config(kit: Path, party: str, data_file: Path, schema: Path) -> dict[str, str]:
    """A deployed vertical node's own node config: its institution, data file, schema, signing
    key, trust store and state directory, all under `kit` (a `create_key_set` directory)."""
    return {
        protocol.INSTITUTION: party,
        protocol.DATA_FILE: str(data_file),
        protocol.NODE_SCHEMA: str(schema),
        protocol.SIGNING_KEY: str(private_key_path(kit, party)),
        protocol.NODE_TRUST_STORE: str(kit / TRUST_FILE),
        protocol.STATE_DIR: str(kit / "state"),
    }


def hello_request(
    run_id: int, node_id: int, run_config: dict[str, Any], node: dict[str, Any]
) -> vertical_app.Request:
    """The coordinator's hello to a deployed node, as `vertical_app.handle` takes it."""
    return vertical_app.Request(
        run_id, node_id, v.HELLO, v.content(1, v.HELLO_ACTION), run_config, node
    )
