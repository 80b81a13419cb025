"""A vertical scorecard of a bank and two platforms decided over HTTP with each platform as
its own process: the model fitted by the exchange with both (each pair's cross table
included), two `jointcredit vertical serve` processes (mutual TLS with the federation's
certificates) and the bank's `jointcredit serve` asking both, all on loopback. A decision
carries one reason group per platform; once one platform is killed, the same applicant is
referred naming that platform, and the other still answers."""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from test_vertical_serve_e2e import _started, _stop
from typer.testing import CliRunner
from vertical_helpers import CREATED

from jointcredit.cli.main import app
from jointcredit.data.synthetic_vertical import ID_COLUMN
from jointcredit.data.vertical_datasets import vertical_frames
from jointcredit.data.vertical_schema import PartySpec, VerticalSchema
from jointcredit.deploy import kits
from jointcredit.models.binning.table import Classing
from jointcredit.models.trees.bins import layout as bin_layout
from jointcredit.models.vertical.artifact import FeaturePart, PartyEntry, write_feature_part
from jointcredit.models.vertical.feature_party import SplitTable
from jointcredit.models.vertical.party_bins import party_bins, party_schema
from jointcredit.models.vertical.scorecard import artifact
from jointcredit.models.vertical.scorecard.feature_party import ScorecardFeatureParty
from jointcredit.models.vertical.scorecard.label_party import train
from jointcredit.privacy.paillier import HeuSecretKey, public_key
from jointcredit.service.auth import new_key
from jointcredit.trust import keys
from jointcredit.trust.store import load_store

pytestmark = pytest.mark.e2e

PLATFORMS = ("pay", "shop")
SCORED = 4  # applicants decided (seeded data: the 2nd and 3rd have reasons of both platforms)


@dataclass(frozen=True)
class Two:
    kits: Path
    model: Path
    schema: Path
    data: dict[str, Path]  # each platform's data file: its applicants, its features
    bank: pd.DataFrame  # the bank's applicants, no label
    known: list[int]  # bank rows both platforms hold

    @property
    def trust(self) -> Path:
        return self.kits / "coordinator" / "trust.json"

    def applicant(self, k: int) -> tuple[str, dict[str, object]]:
        row = self.bank.iloc[k]
        feats = {c: (None if pd.isna(row[c]) else row[c].item() if hasattr(row[c], "item")
                     else row[c]) for c in self.bank.columns if c != ID_COLUMN}  # fmt: skip
        return str(row[ID_COLUMN]), feats


def two_platforms(root: Path, rows: int = 1500, seed: int = 5) -> Two:
    """Kits of a bank and two platforms (synthetic-vertical's platform features split between
    them, as `test_vertical_scorecard_simulation`'s three-party schema does), and a
    scorecard fitted by the in-process exchange on the rows all three hold, each party's
    part signed by its own kit's key."""
    out = root / "kits"
    parties = ["bank", *PLATFORMS]
    kits.provision("vertical-two-test", parties, "127.0.0.1:9092", out)
    for party in parties:
        kits.issue_endpoint_certificate(out, party, ["127.0.0.1", "localhost"])
    trust = load_store(out / "coordinator" / "trust.json")
    signer = {p: keys.load_private_key(out / p / "signing.key") for p in parties}
    base, frames = vertical_frames("synthetic-vertical", seed=seed, rows=rows)
    cols = list(base.parties["platform"].features)
    features = {"pay": cols[:5], "shop": cols[5:]}
    specs = {p: PartySpec(features=tuple(features[p])) for p in PLATFORMS}
    vschema = VerticalSchema(base.base, {"bank": base.parties["bank"], **specs})
    bank, platform = frames["bank"], frames["platform"]
    held = {"pay": platform[[ID_COLUMN, *features["pay"]]].iloc[30:],
            "shop": platform[[ID_COLUMN, *features["shop"]]].iloc[60:]}  # fmt: skip
    joined = bank.merge(held["pay"], on=ID_COLUMN).merge(held["shop"], on=ID_COLUMN)
    aligned = {p: joined[list(f.columns)] for p, f in (("bank", bank), *held.items())}
    bins = {p: party_bins(aligned[p], party_schema(vschema, p), max_bins=16, max_categories=20,
                          min_count=5) for p in parties}  # fmt: skip
    secret = HeuSecretKey()
    links = [ScorecardFeatureParty(aligned[p], bins[p], public_key(secret.public.to_bytes()))
             for p in PLATFORMS]  # fmt: skip
    y = aligned["bank"][vschema.base.label].to_numpy()
    fitted = train(aligned["bank"], y, bins["bank"], vschema.base, links, secret,
                   classing=Classing(fine_bins=16))  # fmt: skip
    model = root / "run" / "model"
    entries, at = {}, 0
    for index, p in enumerate(PLATFORMS, start=1):
        mine = fitted.platform[at : at + len(features[p])]
        at += len(features[p])
        part = FeaturePart(p, index, SplitTable(bin_layout(bins[p]).missing), bins[p],
                           "scorecard", tuple(f.merge for f in mine), "bank")  # fmt: skip
        digest = write_feature_part(model, part, created_at=CREATED, signer=signer[p],
                                    trust=trust)  # fmt: skip
        entries[p] = PartyEntry(index=index, splits=0, part_sha256=digest)
    artifact.write_label_part(
        model, model=artifact.ScorecardModel.of(fitted, "lda"),
        schema=party_schema(vschema, "bank"), label_party="bank", parties=entries,
        holders={p: bins[p].names for p in PLATFORMS}, training={}, metrics={},
        created_at=CREATED, signer=signer["bank"], trust=trust,
    )  # fmt: skip
    schema = root / "schema.toml"
    schema.write_text(vschema.to_toml(), encoding="utf-8")
    data = {p: root / f"{p}.csv" for p in PLATFORMS}
    for p in PLATFORMS:
        held[p].to_csv(data[p], index=False)
    both = set(joined[ID_COLUMN].astype(str))
    known = [int(k) for k in np.flatnonzero(bank[ID_COLUMN].astype(str).isin(both))[:SCORED]]
    applicants = bank.drop(columns=[vschema.base.label, *vschema.base.protected])
    return Two(out, model, schema, data, applicants, known)


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Two:
    return two_platforms(tmp_path_factory.mktemp("vtwo-e2e"))


@pytest.fixture
def platforms(fed: Two, tmp_path: Path) -> Iterator[dict[str, tuple[subprocess.Popen[str], str]]]:
    running: dict[str, tuple[subprocess.Popen[str], str]] = {}
    applicants = [fed.applicant(k)[0] for k in fed.known]
    try:
        for p in PLATFORMS:
            db = f"sqlite:///{tmp_path / f'{p}.sqlite'}"
            running[p] = _started(
                ["vertical", "serve", "--kit", str(fed.kits / p), "--model", str(fed.model),
                 "--data", str(fed.data[p]), "--schema", str(fed.schema), "--db", db],
                "answering vertical queries on ",
            )  # fmt: skip
            for n, applicant in enumerate(applicants):
                added = CliRunner().invoke(app, [
                    "consent", "add", "--db", db, "--institution", "bank", "--applicant-ref",
                    applicant, "--id", f"c-two-{n}", "--purpose", "vertical",
                ])  # fmt: skip
                assert added.exit_code == 0, added.output
        yield running
    finally:
        for proc, _ in running.values():
            _stop(proc)


def _queries(db: Path) -> int:
    """The vertical queries a platform answered, from its audit log."""
    with sqlite3.connect(db) as conn:
        (n,) = conn.execute(
            "SELECT count(*) FROM audit_log WHERE kind = 'vertical-query'"
        ).fetchone()
    return int(n)


def test_two_platforms_decide_over_http_and_one_killed_is_named(
    fed: Two, platforms: dict[str, tuple[subprocess.Popen[str], str]], tmp_path: Path
) -> None:
    keys_file = tmp_path / "keys.json"
    token = new_key(keys_file, "bank")
    bank, base = _started(
        ["serve", "--model", str(fed.model), "--trust", str(fed.trust),
         "--vertical-kit", str(fed.kits / "bank"),
         *[a for p in PLATFORMS for a in ("--party", f"{p}={platforms[p][1]}")],
         "--api-keys", str(keys_file), "--db", f"sqlite:///{tmp_path / 'bank.sqlite'}",
         "--party-timeout", "2.0"],
        "listening on ",
    )  # fmt: skip
    try:
        auth = {"Authorization": f"Bearer {token}"}
        decided = []
        for n, k in enumerate(fed.known):
            applicant_id, features = fed.applicant(k)
            consent = {"applicant_id": applicant_id, "consent_id": f"c-two-{n}"}
            body = {"applicant": features, "vertical": consent}
            r = httpx.post(f"{base}/v1/decisions", json=body, headers=auth, timeout=30)
            assert r.status_code == 200, r.text
            decided.append(r.json())
            assert isinstance(decided[-1]["probability_of_default"], float), decided[-1]
            for reason in decided[-1]["reasons"]:
                if reason["kind"] == "model":
                    assert reason["feature"] in [*features, "party:pay", "party:shop"], reason
        groups = [{r["feature"] for r in d["reasons"]} & {"party:pay", "party:shop"}
                  for d in decided]  # fmt: skip
        assert {"party:pay", "party:shop"} in groups, [d["reasons"] for d in decided]
        codes = {r["code"] for d in decided for r in d["reasons"]}
        assert {"VERTICAL_PARTY_PAY", "VERTICAL_PARTY_SHOP"} <= codes
        assert [_queries(tmp_path / f"{p}.sqlite") for p in PLATFORMS] == [SCORED, SCORED]

        pay = platforms["pay"][0]
        pay.kill()
        pay.wait(10)
        r = httpx.post(f"{base}/v1/decisions", json=body, headers=auth, timeout=30)
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["decision"] == "refer" and got["probability_of_default"] is None
        first = got["reasons"][0]
        assert first["code"] == "VERTICAL_PARTY_UNAVAILABLE" and "pay" in first["text"]
        assert first["feature"] == "party:pay" and "shop" not in first["text"]
        assert platforms["shop"][0].poll() is None
        assert _queries(tmp_path / "shop.sqlite") == SCORED + 1  # the other still answered
    finally:
        _stop(bank)
