"""Re-measure the SBA facts docs/DATA.md states (needs `make sba-full`).

    python scripts/sba_leakage_check.py

Prints: pre-1989 loans and their charge-off rate among the 20 largest lenders; how often `Term`
is not a multiple of 12 months for charged-off vs paid loans; pooled logistic-regression AUC
with the approval year as a number vs as a category (the shipped choice).
"""

from __future__ import annotations

import pandas as pd
from sklearn.linear_model import LogisticRegression

from jointcredit.data import sba
from jointcredit.data.catalog import DataConfig, load_federation
from jointcredit.data.schema import FeatureSpec, Schema
from jointcredit.models.metrics import risk_metrics
from jointcredit.models.preprocessing import agree, summarize


def raw_facts() -> None:
    cols = ["Bank", "Term", "MIS_Status", "ApprovalFY"]
    raw = pd.read_csv(sba.full_csv_path(), usecols=cols, dtype=str)
    label = raw["MIS_Status"].str.replace(" ", "").str.upper().map({"CHGOFF": 1, "PIF": 0})
    raw, label = raw[label.notna()], label[label.notna()]
    top = raw["Bank"].isin(raw["Bank"].value_counts().index[:20])
    raw, label = raw[top], label[top]
    year = pd.to_numeric(raw["ApprovalFY"].str.extract(r"(\d{4})", expand=False))
    old = year < sba.MIN_APPROVAL_FY
    print(f"pre-{sba.MIN_APPROVAL_FY} loans: {int(old.sum())}, charged off {label[old].mean():.3f}")
    odd = pd.to_numeric(raw["Term"]) % 12 != 0
    print(
        f"Term not a multiple of 12: charged off {odd[label == 1].mean():.3f}, "
        f"paid {odd[label == 0].mean():.3f}"
    )


def vintage_auc() -> None:
    fed = load_federation(DataConfig(dataset="sba-full"))
    train, test = fed.pooled_train(), fed.pooled_test()
    for kind in ("numeric", "categorical"):
        features = dict(fed.schema.features)
        features["approval_year"] = FeatureSpec(type=kind)
        schema = Schema(label=fed.schema.label, positive=fed.schema.positive, features=features)
        xtr, xte = train.x.copy(), test.x.copy()
        if kind == "numeric":
            for x in (xtr, xte):
                x["approval_year"] = x["approval_year"].astype(float)
        summary = summarize(xtr, train.y, schema, max_categories=64, min_count=5)
        spec = agree([summary], schema, max_categories=64, min_count=5)
        model = LogisticRegression(max_iter=300).fit(spec.transform(xtr), train.y)
        auc = risk_metrics(test.y, model.predict_proba(spec.transform(xte))[:, 1])["auc"]
        print(f"approval year as {kind}: pooled logistic AUC {auc:.3f}")


if __name__ == "__main__":
    raw_facts()
    vintage_auc()
